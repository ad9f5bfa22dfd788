// C++ at -O2 without frame pointers: leaks through the standard library's containers, whose
// allocations happen inside libstdc++ (std::string's constructor) or in its templates
// instantiated here (std::vector's growth, std::make_shared's control block).
#include <memory>
#include <string>
#include <vector>

// Each leaked object is reachable from nothing once the pointer below is overwritten.
void *volatile cxx_sink;

// A std::string too long for its inline buffer: its characters live on the heap, allocated by
// the constructor in libstdc++ (an explicit instantiation there).
__attribute__((noipa)) std::string *make_long_string(const char *text) {
    return new std::string(text);
}

__attribute__((noipa)) void leak_string() {
    std::string *text = make_long_string("a string far too long for the small-string buffer: 61 chars");
    cxx_sink = text;
    cxx_sink = nullptr; // lost: the std::string object, and its characters with it
}

// A vector grown past its capacity, never destroyed.
__attribute__((noipa)) std::vector<long> *grow_vector(int count) {
    auto *values = new std::vector<long>();
    for (int i = 0; i < count; i++) values->push_back(i);
    return values;
}

__attribute__((noipa)) void leak_vector() {
    cxx_sink = grow_vector(300);
    cxx_sink = nullptr;
}

struct Widget {
    long parts[37];
};

// make_shared's one block (control block and Widget), kept alive by a shared_ptr that is
// never destroyed.
__attribute__((noipa)) void leak_shared() {
    auto *holder = new std::shared_ptr<Widget>(std::make_shared<Widget>());
    cxx_sink = holder;
    cxx_sink = nullptr;
}

int main() {
    leak_string();
    leak_vector();
    leak_shared();
    return 0;
}
