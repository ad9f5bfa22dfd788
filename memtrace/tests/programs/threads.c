// 8 threads x 100,000 operations on a shared pool: each operation either allocates a block
// (16..527 bytes) into the pool or frees a random block from it, often one another thread
// allocated. At the end it prints what it holds, "outstanding <blocks> <bytes>", and what it
// did, "allocations <n> frees <n>", and exits without freeing the pool.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))
#define THREADS 8
#define OPERATIONS 100000
#define POOL 4096

static void *pool[POOL];
static size_t sizes[POOL];
static int filled;
static long allocations, frees;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

NOINLINE static void *allocate_block(size_t size) { return malloc(size); }

NOINLINE static void *worker(void *argument) {
    unsigned int seed = (unsigned int)(size_t)argument * 7919u + 17u;
    for (int i = 0; i < OPERATIONS; i++) {
        int allocate = rand_r(&seed) % 2 == 0;
        if (allocate) {
            size_t size = 16 + (size_t)(rand_r(&seed) % 512);
            void *block = allocate_block(size);
            pthread_mutex_lock(&lock);
            if (filled < POOL) {
                pool[filled] = block;
                sizes[filled] = size;
                filled++;
                allocations++;
                block = NULL;
            }
            pthread_mutex_unlock(&lock);
            if (block != NULL) { // the pool is full: give it back at once
                free(block);
                pthread_mutex_lock(&lock);
                allocations++;
                frees++;
                pthread_mutex_unlock(&lock);
            }
        } else {
            void *block = NULL;
            pthread_mutex_lock(&lock);
            if (filled > 0) {
                int victim = rand_r(&seed) % filled;
                block = pool[victim];
                filled--;
                pool[victim] = pool[filled];
                sizes[victim] = sizes[filled];
                frees++;
            }
            pthread_mutex_unlock(&lock);
            free(block);
        }
    }
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    for (long t = 0; t < THREADS; t++) {
        pthread_create(&threads[t], NULL, worker, (void *)t);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
    }
    size_t bytes = 0;
    for (int i = 0; i < filled; i++) {
        bytes += sizes[i];
    }
    printf("outstanding %d %zu\nallocations %ld frees %ld\n", filled, bytes, allocations, frees);
    return 0;
}
