/* The soak's target (`cargo xtask soak`): a service-like process that churns memory and
 * processes for a long time while staying the same size, so that anything memtrace's agent
 * keeps per event, per thread or per process shows as growth of its RSS.
 *
 *   soak PAIRS FORKS
 *
 * Waits for a line on stdin (sent once memtrace is attached), then:
 * - worker threads, two at a time, each born, doing PAIRS/WORKERS malloc+free pairs over a ring
 *   of 512 live blocks through eight distinct call stacks, freeing its ring and exiting: thread
 *   churn with a bounded working set and a bounded set of stacks;
 * - a forking thread that forks and execs /bin/true FORKS times: process churn beside it (the
 *   children are not traced; their forks, execs and exits still pass memtrace's tracepoints).
 * Prints "pairs N", "threads N" and "forks N" at the end, then stays until stdin closes (so
 * that memtrace, not the process's exit, ends the trace), and exits 0.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 400
#define RING 512

static long pairs_per_worker;
static long forks;

typedef void *(*alloc_fn)(size_t);

/* Eight call stacks: each of three levels picks one of two callees from a bit of the step. */
__attribute__((noinline)) static void *leaf_a(size_t size) { return malloc(size); }
__attribute__((noinline)) static void *leaf_b(size_t size) { return calloc(1, size); }
__attribute__((noinline)) static void *mid_a(size_t size, unsigned bits) { return (bits & 1) ? leaf_a(size) : leaf_b(size); }
__attribute__((noinline)) static void *mid_b(size_t size, unsigned bits) { return (bits & 1) ? leaf_b(size) : leaf_a(size); }
__attribute__((noinline)) static void *top_a(size_t size, unsigned bits) { return (bits & 2) ? mid_a(size, bits) : mid_b(size, bits); }
__attribute__((noinline)) static void *top_b(size_t size, unsigned bits) { return (bits & 2) ? mid_b(size, bits) : mid_a(size, bits); }
__attribute__((noinline)) static void *allocate(size_t size, unsigned bits) {
    return (bits & 4) ? top_a(size, bits) : top_b(size, bits);
}

static void *worker(void *arg) {
    uint64_t state = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *ring[RING] = {0};
    for (long step = 0; step < pairs_per_worker; step++) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        unsigned slot = (unsigned)(state % RING);
        free(ring[slot]);
        size_t size = 16 + (size_t)((state >> 16) % 2048);
        ring[slot] = allocate(size, (unsigned)(state >> 40));
    }
    for (unsigned slot = 0; slot < RING; slot++) {
        free(ring[slot]);
    }
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    for (long i = 0; i < forks; i++) {
        pid_t child = fork();
        if (child == 0) {
            execl("/bin/true", "true", (char *)NULL);
            _exit(127);
        }
        if (child > 0) {
            waitpid(child, NULL, 0);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: soak PAIRS FORKS\n");
        return 2;
    }
    long pairs = atol(argv[1]);
    forks = atol(argv[2]);
    pairs_per_worker = pairs / WORKERS;
    char line[16];
    if (!fgets(line, sizeof line, stdin)) {
        return 2;
    }
    pthread_t forking;
    pthread_create(&forking, NULL, forker, NULL);
    long threads = 0;
    for (long i = 0; i < WORKERS; i += 2) {
        pthread_t first, second;
        pthread_create(&first, NULL, worker, (void *)(uintptr_t)(i + 1));
        pthread_create(&second, NULL, worker, (void *)(uintptr_t)(i + 2));
        pthread_join(first, NULL);
        pthread_join(second, NULL);
        threads += 2;
    }
    pthread_join(forking, NULL);
    printf("pairs %ld\nthreads %ld\nforks %ld\n", pairs_per_worker * WORKERS, threads, forks);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
