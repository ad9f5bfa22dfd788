// Uses prefixed_alloc's my_malloc/my_free: leaks 3 x 128 bytes from keep_some, frees 5 blocks.
#include <stddef.h>

#define NOINLINE __attribute__((noinline))

void *my_malloc(size_t size);
void my_free(void *block);

void *volatile sink;

NOINLINE void keep_some(void) {
    for (int i = 0; i < 3; i++) {
        sink = my_malloc(128);
    }
}

NOINLINE void release_some(void) {
    for (int i = 0; i < 5; i++) {
        void *block = my_malloc(64);
        sink = block;
        my_free(block);
    }
}

int main(void) {
    keep_some();
    release_some();
    return 0;
}
