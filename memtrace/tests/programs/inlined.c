// Built with -O2: grab() is inlined into build_table(), so one return address stands for two
// source frames. Leaks 777 bytes from grab, inlined in build_table.
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;
volatile int built;

static inline __attribute__((always_inline)) void *grab(size_t size) {
    return malloc(size);
}

NOINLINE void build_table(void) {
    sink = grab(777);
    built++; // keeps the malloc call from becoming a tail call
}

int main(void) {
    build_table();
    return 0;
}
