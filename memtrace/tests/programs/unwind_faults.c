// Page faults in code built without frame pointers: touch_fresh_pages, three noinline calls
// below main, writes one byte to each of PAGES fresh pages of an anonymous mapping. Then it
// copies /proc/self/maps to stdout, so that the test can check every frame memtrace reports
// against the mappings of the process as they were at its end.
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGES 512

__attribute__((noipa)) long touch_fresh_pages(volatile char *region, long pages, long page) {
    for (long i = 0; i < pages; i++) region[i * page] = (char)i;
    return pages;
}

__attribute__((noipa)) long fault_middle(volatile char *region, long page) {
    return touch_fresh_pages(region, PAGES, page) + 1;
}

__attribute__((noipa)) long fault_outer(long page) {
    char *region = mmap(NULL, PAGES * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (region == MAP_FAILED) return -1;
    madvise(region, PAGES * page, MADV_NOHUGEPAGE);
    return fault_middle(region, page) + 1;
}

int main(void) {
    long touched = fault_outer(sysconf(_SC_PAGESIZE));
    if (touched < 0) return 1;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 1;
    char line[4096];
    while (fgets(line, sizeof line, maps)) fputs(line, stdout);
    return 0;
}
