// Reads FILE through mmap after evicting it from the page cache, so that the reads fault the
// pages in from disk (major faults) in read_mapped(). Prints its own count of major faults
// (getrusage's ru_majflt delta) and how many pages were resident before the read.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

__attribute__((noinline)) static unsigned long read_mapped(const volatile unsigned char *data, long size, long page) {
    unsigned long sum = 0;
    for (long offset = 0; offset < size; offset += page) {
        sum += data[offset];
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: read_mapped FILE\n");
        return 2;
    }
    long page = sysconf(_SC_PAGESIZE);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    struct stat st;
    fstat(fd, &st);
    // The file's pages must be clean to be dropped: written back first, then evicted.
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    unsigned char *data = mmap(NULL, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    long pages = (st.st_size + page - 1) / page;
    unsigned char *resident = malloc(pages);
    mincore(data, st.st_size, resident);
    long cached = 0;
    for (long i = 0; i < pages; i++) cached += resident[i] & 1;
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    unsigned long sum = read_mapped(data, st.st_size, page);
    getrusage(RUSAGE_SELF, &after);
    printf("majflt %ld cached %ld sum %lu\n", after.ru_majflt - before.ru_majflt, cached, sum);
    return 0;
}
