// Memory outside malloc, each piece from its own function. Held at exit:
//   private mappings (mmap_bytes = 61440):
//     map_private 3 pages; map_then_punch 5 pages less 1 unmapped in the middle = 4;
//     map_then_grow 1 page grown by mremap to 4; map_then_shrink 4 pages shrunk to 2;
//     map_file 2 pages of a file
//   shared memory (shm_bytes = 32288):
//     map_posix_shm 3 pages (shm_open + mmap MAP_SHARED); attach_sysv 20000 bytes (shmat)
//   break growth (brk_bytes = 8192): grow_break, sbrk of 2 pages
//   heap: big_malloc 1 MiB, which glibc maps with its own mmap: counted once, as heap.
// and gives back what map_and_unmap and attach_and_detach take.
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define PAGE 4096

void *volatile sink;

NOINLINE void map_private(void) {
    sink = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

NOINLINE void map_then_punch(void) {
    char *area = mmap(NULL, 5 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(area + 2 * PAGE, PAGE);
    sink = area;
}

NOINLINE void map_then_grow(void) {
    void *area = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sink = mremap(area, PAGE, 4 * PAGE, MREMAP_MAYMOVE);
}

NOINLINE void map_then_shrink(void) {
    void *area = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sink = mremap(area, 4 * PAGE, 2 * PAGE, 0);
}

NOINLINE void map_file(void) {
    char path[] = "/tmp/memtrace-outside-XXXXXX";
    int fd = mkstemp(path);
    ftruncate(fd, 2 * PAGE);
    sink = mmap(NULL, 2 * PAGE, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    unlink(path);
}

NOINLINE void map_posix_shm(void) {
    char name[64] = "/memtrace-outside-";
    int length = 18;
    for (int pid = getpid(); pid > 0; pid /= 10) name[length++] = (char)('0' + pid % 10);
    name[length] = 0;
    int fd = shm_open(name, O_CREAT | O_RDWR, 0600);
    ftruncate(fd, 3 * PAGE);
    sink = mmap(NULL, 3 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    shm_unlink(name);
}

NOINLINE void attach_sysv(void) {
    int id = shmget(IPC_PRIVATE, 20000, IPC_CREAT | 0600);
    sink = shmat(id, NULL, 0);
}

NOINLINE void attach_and_detach(void) {
    int id = shmget(IPC_PRIVATE, 8000, IPC_CREAT | 0600);
    void *area = shmat(id, NULL, 0);
    shmdt(area);
    shmctl(id, IPC_RMID, NULL);
}

NOINLINE void map_and_unmap(void) {
    void *area = mmap(NULL, 7 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    munmap(area, 7 * PAGE);
}

NOINLINE void grow_break(void) { sink = sbrk(2 * PAGE); }

NOINLINE void big_malloc(void) { sink = malloc(1 << 20); }

int main(void) {
    grow_break();
    map_private();
    map_then_punch();
    map_then_grow();
    map_then_shrink();
    map_file();
    map_posix_shm();
    attach_sysv();
    attach_and_detach();
    map_and_unmap();
    big_malloc();
    return 0;
}
