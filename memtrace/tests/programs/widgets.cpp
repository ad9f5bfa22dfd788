// C++ names for the symbolizer to demangle: a member function of a class template in a
// namespace, calling malloc directly. Leaks 100 longs (800 bytes).
#include <cstdlib>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

namespace inventory {
template <typename T> struct Store {
    NOINLINE T *reserve(std::size_t count) {
        T *items = static_cast<T *>(std::malloc(count * sizeof(T)));
        sink = items;
        return items;
    }
};
} // namespace inventory

int main() {
    inventory::Store<long> store;
    store.reserve(100);
    return 0;
}
