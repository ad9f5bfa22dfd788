// A library built without frame pointers whose constructor leaks: it runs inside dlopen, right
// after the loader maps the library, before the program has called anything in it. The stack
// must go from the constructor through the loader's dlopen frames to the program.
#include <stdlib.h>

void *volatile lib_sink;

__attribute__((noipa)) static int constructor_alloc(int n) {
    volatile char scratch[8];
    scratch[0] = (char)n;
    lib_sink = malloc(777);
    lib_sink = NULL; // lost
    return scratch[0];
}

__attribute__((constructor)) static void at_load(void) {
    constructor_alloc(3);
}

__attribute__((noipa)) int library_inner(int n) {
    volatile char scratch[40];
    scratch[1] = (char)n;
    lib_sink = malloc(888);
    lib_sink = NULL; // lost
    return scratch[1];
}

__attribute__((noipa)) int library_leak(int n) {
    return library_inner(n + 1) + 1;
}
