// For outside_malloc.rs: three threads with 1 MiB stacks run at once and end; glibc keeps
// their stacks mapped for reuse (its cache holds up to 40 MiB). The program also maps 2 pages
// itself (own_mapping), which stay its own. Prints the size of each stack mapping glibc made
// (stack size plus guard).
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

static void *work(void *arg) {
    (void)arg;
    usleep(20000);
    return NULL;
}

NOINLINE void own_mapping(void) {
    sink = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

int main(void) {
    own_mapping();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    size_t guard = 0;
    pthread_attr_getguardsize(&attr, &guard);
    pthread_t threads[3];
    for (int i = 0; i < 3; i++) {
        pthread_create(&threads[i], &attr, work, NULL);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(threads[i], NULL);
    }
    printf("stack mapping %zu\n", (size_t)(1 << 20) + guard);
    return 0;
}
