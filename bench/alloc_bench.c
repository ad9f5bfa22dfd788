// memtrace's benchmark target. Two modes:
//   alloc_bench churn THREADS PAIRS  each thread keeps a ring of 1024 live blocks and replaces
//       one per step: free the oldest, allocate a new one (16 B to 4 KiB; every 8th step calloc,
//       every 16th a realloc of the new block). Prints "ns_per_pair <float>" over all threads.
//   alloc_bench hold BLOCKS          allocates BLOCKS 16-byte blocks and exits holding them all
//       (memtrace's memory per outstanding allocation).
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 1024

static long pairs_per_thread;

static double now_ns(void) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)now.tv_sec * 1e9 + (double)now.tv_nsec;
}

static void *churn(void *argument) {
    unsigned int seed = (unsigned int)(size_t)argument * 2654435761u + 1u;
    void *ring[RING] = {0};
    for (long step = 0; step < pairs_per_thread; step++) {
        int slot = (int)(step % RING);
        free(ring[slot]);
        size_t size = 16 + (size_t)(rand_r(&seed) % 4081);
        void *block;
        if (step % 8 == 7) {
            block = calloc(1, size);
        } else {
            block = malloc(size);
        }
        if (step % 16 == 15 && block != NULL) {
            block = realloc(block, size + 64);
        }
        ring[slot] = block;
    }
    for (int slot = 0; slot < RING; slot++) {
        free(ring[slot]);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "hold") == 0) {
        long blocks = atol(argv[2]);
        void *volatile keep;
        for (long i = 0; i < blocks; i++) {
            keep = malloc(16);
        }
        (void)keep;
        return 0;
    }
    if (argc != 4 || strcmp(argv[1], "churn") != 0) {
        fprintf(stderr, "usage: alloc_bench churn THREADS PAIRS | alloc_bench hold BLOCKS\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    pairs_per_thread = atol(argv[3]);
    pthread_t ids[64];
    double start = now_ns();
    for (long t = 0; t < threads; t++) {
        pthread_create(&ids[t], NULL, churn, (void *)t);
    }
    for (int t = 0; t < threads; t++) {
        pthread_join(ids[t], NULL);
    }
    double elapsed = now_ns() - start;
    // Per pair as one thread experiences it: wall time over the pairs each thread made.
    printf("ns_per_pair %.1f\n", elapsed / (double)pairs_per_thread);
    return 0;
}
