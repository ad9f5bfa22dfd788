// Leaks one block of 4242 bytes through six functions that keep no frame pointer: built with
// -O2 -fomit-frame-pointer, the kernel's frame-pointer walk stops at the first of them. Each
// level keeps something on its stack and uses the result of its call (so that none is a tail
// call), and level3 allocates a variable-length array, which makes GCC address its frame from
// RBP: the walk meets both kinds of CFA rule.
#include <stdlib.h>
#include <string.h>

void *volatile sink;

__attribute__((noipa)) int leaf_alloc(int n) {
    volatile char scratch[32];
    scratch[0] = (char)n;
    sink = malloc(4242);
    sink = NULL; // the only pointer to the block is gone: definitely lost
    return scratch[0] + 1;
}

__attribute__((noipa)) int level5(int n) {
    volatile long scratch[4] = {n, n, n, n};
    return leaf_alloc(n + 1) + (int)scratch[1];
}

__attribute__((noipa)) int level4(int n) {
    int total = level5(n + 1);
    return total * 3 + n;
}

__attribute__((noipa)) int level3(int n) {
    volatile char variable[n + 16]; // a VLA: GCC keeps this frame on RBP
    memset((char *)variable, n, sizeof variable);
    return level4(n + 1) + variable[n];
}

__attribute__((noipa)) int level2(int n) {
    volatile int scratch[64];
    scratch[n % 64] = n;
    return level3(n + 1) - scratch[n % 64];
}

__attribute__((noipa)) int level1(int n) {
    return level2(n + 1) ^ n;
}

int main(int argc, char **argv) {
    (void)argv;
    return level1(argc) == 12345 ? 1 : 0;
}
