// Touches PAGES fresh pages of an anonymous mapping, one write each, in touch_pages(), and
// prints its own count of the minor faults that took (getrusage's ru_minflt delta).
//   touch_pages        touches them at once.
//   touch_pages wait   prints "waiting", and touches them once a line arrives on stdin.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#define PAGES 3000

__attribute__((noinline)) static void touch_pages(volatile char *region, long pages, long page) {
    for (long i = 0; i < pages; i++) {
        region[i * page] = 1;
    }
}

int main(int argc, char **argv) {
    long page = sysconf(_SC_PAGESIZE);
    char *region = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    // One fault per page: no transparent huge pages.
    madvise(region, PAGES * page, MADV_NOHUGEPAGE);
    if (argc > 1 && strcmp(argv[1], "wait") == 0) {
        printf("waiting\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
    }
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    touch_pages(region, PAGES, page);
    getrusage(RUSAGE_SELF, &after);
    printf("minflt %ld\n", after.ru_minflt - before.ru_minflt);
    return 0;
}
