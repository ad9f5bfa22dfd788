// A process of known shape: HEAP_BYTES of break heap (sbrk), STACK_BYTES of stack, and an
// anonymous mapping of MAPPING_BYTES with MAPPING_TOUCHED bytes touched; then malloc blocks
// it never frees (LEAKED_BYTES in all). Prints where the heap starts and ends and where the
// mapping is, with write(2) so that stdio allocates nothing.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HEAP_BYTES (1L << 20)
#define STACK_BYTES (2L << 20)
#define MAPPING_BYTES (4L << 20)
#define MAPPING_TOUCHED (3L << 20)

__attribute__((noinline)) static void use_stack(void) {
    volatile char buffer[STACK_BYTES];
    memset((char *)buffer, 1, sizeof buffer);
}

int main(void) {
    char *heap = sbrk(HEAP_BYTES);
    memset(heap, 1, HEAP_BYTES);
    use_stack();
    char *mapping = mmap(NULL, MAPPING_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    madvise(mapping, MAPPING_BYTES, MADV_NOHUGEPAGE);
    memset(mapping, 1, MAPPING_TOUCHED);
    // 200,000 bytes (above the mmap threshold: a mapping of its own) and 10 x 1,000 from the heap.
    volatile void *keep = malloc(200000);
    for (int i = 0; i < 10; i++) keep = malloc(1000);
    (void)keep;
    char line[128];
    int length = snprintf(line, sizeof line, "heap %p %p mapping %p\n", (void *)heap, sbrk(0), (void *)mapping);
    write(1, line, length);
    return 0;
}
