// C++: a lost object (new, 40 bytes) owning a vector's array of 10 ints (40 bytes) and a child
// object (new, 24 bytes): 40 bytes definitely lost, 64 bytes in 2 blocks indirectly lost. A
// global unique_ptr's object (24 bytes) is freed by its destructor at exit: not outstanding.
// libstdc++'s emergency pool for exceptions (allocated at start-up, kept for life) is the one
// still reachable block, in both tools when valgrind runs with --run-cxx-freeres=no.
#include <memory>
#include <vector>

struct Child { long a, b, c; };
struct Owner {
    std::vector<int> numbers;
    Child *child;
    long pad[1];
};

std::unique_ptr<Child> kept;

__attribute__((noinline)) void lose() {
    Owner *owner = new Owner;
    owner->numbers.assign(10, 1);
    owner->child = new Child();
    owner = nullptr;
}

int main() {
    lose();
    kept.reset(new Child());
    return 0;
}
