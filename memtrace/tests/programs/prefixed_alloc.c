// A tiny allocator with prefixed names (my_malloc, my_free, ...), the way jemalloc is when built
// with a prefix, for --allocator-lib and --symbol-prefix. A bump allocator over a static arena;
// it never calls libc's malloc.
#include <stddef.h>
#include <string.h>

static _Alignas(16) unsigned char arena[1 << 20];
static size_t used;

void *my_malloc(size_t size) {
    size_t rounded = (size + 15) & ~(size_t)15;
    if (used + rounded > sizeof arena) {
        return NULL;
    }
    void *block = arena + used;
    used += rounded;
    return block;
}

void *my_calloc(size_t count, size_t size) {
    void *block = my_malloc(count * size);
    if (block != NULL) {
        memset(block, 0, count * size);
    }
    return block;
}

void *my_realloc(void *old, size_t size) {
    void *block = my_malloc(size);
    if (block != NULL && old != NULL) {
        memmove(block, old, size); // the arena is large enough that this stays in bounds
    }
    return block;
}

void my_free(void *block) { (void)block; }
