// The stack-walking benchmark's target: deep_stack DEPTH PAIRS calls down DEPTH frames of a
// function built as the benchmark chooses (with or without frame pointers), then mallocs and
// frees PAIRS 64-byte blocks there, and prints "ns_per_pair <float>" (wall time of the loop
// over PAIRS). Every malloc's stack is DEPTH + 5 frames (DEPTH + 1 of down, main, libc's two
// start frames, _start): `--program-stats` on `alloc_exit` at two depths gives the walk's cost
// per frame; `cargo xtask bench` runs it at depth 7 (allocations made 8 calls deep).
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

void *volatile sink;

static double now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1e9 + (double)now.tv_nsec;
}

__attribute__((noipa)) long down(int depth, long pairs) {
    volatile char pad[24];
    pad[0] = (char)depth;
    if (depth > 0) return down(depth - 1, pairs) + pad[0];
    double start = now_ns();
    for (long pair = 0; pair < pairs; pair++) {
        sink = malloc(64);
        free(sink);
    }
    printf("ns_per_pair %.1f\n", (now_ns() - start) / (double)(pairs > 0 ? pairs : 1));
    return 0;
}

int main(int argc, char **argv) {
    int depth = argc > 1 ? atoi(argv[1]) : 0;
    long pairs = argc > 2 ? atol(argv[2]) : 1000;
    return (int)down(depth, pairs) & 1;
}
