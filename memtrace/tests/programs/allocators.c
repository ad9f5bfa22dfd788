// Every C allocator entry point, each leaking one block of a distinct size from its own
// function, plus realloc's four cases. Outstanding at exit, by function:
//   use_malloc 100, use_calloc 210, use_realloc_null 300, use_realloc_grow 2000,
//   use_realloc_fail 40 (the failed realloc keeps it), use_reallocarray 360,
//   use_posix_memalign 500, use_aligned_alloc 1024, use_memalign 700, use_valloc 4000,
//   use_pvalloc 5000 (requested size)
// = 14234 bytes in 11 blocks. use_realloc_zero frees its block through realloc(p, 0).
#define _GNU_SOURCE
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

NOINLINE void use_malloc(void) { sink = malloc(100); }
NOINLINE void use_calloc(void) { sink = calloc(3, 70); }
NOINLINE void use_realloc_null(void) { sink = realloc(NULL, 300); }

NOINLINE void use_realloc_grow(void) {
    char *block = malloc(16);
    sink = realloc(block, 2000);
}

NOINLINE void use_realloc_zero(void) {
    char *block = malloc(24);
    sink = realloc(block, 0);
}

NOINLINE void use_realloc_fail(void) {
    char *block = malloc(40);
    volatile size_t huge = SIZE_MAX / 2;
    if (realloc(block, huge) == NULL) {
        sink = block; // still ours, still outstanding
    }
}

NOINLINE void use_reallocarray(void) { sink = reallocarray(NULL, 6, 60); }

NOINLINE void use_posix_memalign(void) {
    void *block = NULL;
    if (posix_memalign(&block, 64, 500) == 0) {
        sink = block;
    }
}

NOINLINE void use_aligned_alloc(void) { sink = aligned_alloc(128, 1024); }
NOINLINE void use_memalign(void) { sink = memalign(256, 700); }
NOINLINE void use_valloc(void) { sink = valloc(4000); }
NOINLINE void use_pvalloc(void) { sink = pvalloc(5000); }

int main(void) {
    use_malloc();
    use_calloc();
    use_realloc_null();
    use_realloc_grow();
    use_realloc_zero();
    use_realloc_fail();
    use_reallocarray();
    use_posix_memalign();
    use_aligned_alloc();
    use_memalign();
    use_valloc();
    use_pvalloc();
    void *volatile nothing = NULL;
    free(nothing);
    return 0;
}
