// Every kind at once, through the whole allocator API:
//   definitely lost: realloc'ed block (grown from 10 to 500) lost = 500 bytes, 1 block
//   indirectly lost: a calloc'ed 8x8 block only the lost realloc'ed block points to = 64 bytes
//   possibly lost:   an aligned_alloc(64, 256) block reached only 64 bytes in = 256 bytes
//   still reachable: a posix_memalign(32, 512) block held by a global = 512 bytes
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

void *held;
char *inside;

NOINLINE void lose_grown(void) {
    void **grown = malloc(10);
    grown = realloc(grown, 500);
    memset(grown, 0, 500);
    grown[0] = calloc(8, 8);
    grown = NULL;
}

int main(void) {
    lose_grown();
    char *aligned = aligned_alloc(64, 256);
    memset(aligned, 0, 256);
    inside = aligned + 64;
    aligned = NULL;
    posix_memalign(&held, 32, 512);
    return 0;
}
