// A pointer only in another thread's register: built with -O2, a thread allocates 96 bytes and
// spins with the pointer in a register (never stored to memory) while main exits. valgrind
// scans the registers of threads that exit_group killed, and so does memtrace: still
// reachable. A block (112 bytes) whose pointer the thread dropped is definitely lost.
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static volatile int ready;

__attribute__((noinline)) static void drop(void) {
    void *lost = malloc(112);
    __asm__ volatile("" : : "r"(lost) : "memory");
}

static void *spin(void *unused) {
    drop();
    void *kept = malloc(96);
    ready = 1;
    for (;;) __asm__ volatile("" : "+r"(kept));
    return NULL;
}

int main(void) {
    pthread_t thread;
    pthread_create(&thread, NULL, spin, NULL);
    while (!ready) usleep(1000);
    usleep(20000);
    return 0;
}
