// The stack-walking benchmark's target: deep_stack DEPTH PAIRS calls down DEPTH frames of a
// function built as the benchmark chooses (with or without frame pointers), then mallocs and
// frees PAIRS 64-byte blocks there. Every malloc's stack is DEPTH + 5 frames (the function,
// main, libc's two start frames, _start): `--program-stats` on `alloc_exit` at two depths gives
// the walk's cost per frame.
#include <stdlib.h>

void *volatile sink;

__attribute__((noipa)) long down(int depth, long pairs) {
    volatile char pad[24];
    pad[0] = (char)depth;
    if (depth > 0) return down(depth - 1, pairs) + pad[0];
    for (long pair = 0; pair < pairs; pair++) {
        sink = malloc(64);
        free(sink);
    }
    return 0;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 0;
    long pairs = argc > 2 ? atol(argv[2]) : 1000;
    return (int)down(depth, pairs) & 1;
}
