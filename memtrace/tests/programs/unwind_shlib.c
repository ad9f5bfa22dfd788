// A shared library built without frame pointers (-O2 -fomit-frame-pointer): shlib_entry leaks
// LEAK_SIZE bytes three noinline calls deep inside the library. The test builds it twice with
// different sizes: once linked into the program (DT_NEEDED), once opened with dlopen.
#include <stdlib.h>

#ifndef LEAK_SIZE
#define LEAK_SIZE 1000
#endif

void *volatile shlib_sink;

__attribute__((noipa)) static int leak_deep(int n) {
    volatile char scratch[24];
    scratch[0] = (char)n;
    shlib_sink = malloc(LEAK_SIZE);
    shlib_sink = NULL; // lost
    return scratch[0];
}

__attribute__((noipa)) static int leak_middle(int n) {
    return leak_deep(n * 3) + 1;
}

__attribute__((noipa)) static int leak_outer(int n) {
    return leak_middle(n + 2) + 1;
}

__attribute__((noipa)) int shlib_entry(int n) {
    return leak_outer(n) + 1;
}
