// A pointer in another thread's stack: a thread keeps a 128-byte block in a local and sleeps
// in pause() while main exits: still reachable (the thread's stack from its stack pointer up
// is a root). A 64-byte block it lost before is definitely lost.
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static volatile int ready;

NOINLINE void lose(void) {
    void *volatile lost = malloc(64);
    lost = NULL;
}

static void *hold(void *unused) {
    void *volatile kept = malloc(128);
    lose();
    ready = 1;
    for (;;) pause();
    return (void *)kept;
}

int main(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, hold, NULL);
    while (!ready) usleep(1000);
    usleep(20000);
    return 0;
}
