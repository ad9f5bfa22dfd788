// Page faults from threads and a child: two threads each touch THREAD_PAGES fresh pages in
// thread_touch(), then a forked child touches CHILD_PAGES in child_touch().
#include <pthread.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define THREAD_PAGES 1000
#define CHILD_PAGES 700

static long page;

static char *fresh(long pages) {
    char *region = mmap(NULL, pages * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(region, pages * page, MADV_NOHUGEPAGE);
    return region;
}

__attribute__((noinline)) static void thread_touch(volatile char *region, long pages) {
    for (long i = 0; i < pages; i++) region[i * page] = 1;
}

__attribute__((noinline)) static void child_touch(volatile char *region, long pages) {
    for (long i = 0; i < pages; i++) region[i * page] = 2;
}

static void *thread_main(void *region) {
    thread_touch(region, THREAD_PAGES);
    return NULL;
}

int main(void) {
    page = sysconf(_SC_PAGESIZE);
    char *regions[2] = {fresh(THREAD_PAGES), fresh(THREAD_PAGES)};
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) pthread_create(&threads[i], NULL, thread_main, regions[i]);
    for (int i = 0; i < 2; i++) pthread_join(threads[i], NULL);
    char *for_child = fresh(CHILD_PAGES);
    pid_t child = fork();
    if (child == 0) {
        child_touch(for_child, CHILD_PAGES);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("child %d\n", child);
    return 0;
}
