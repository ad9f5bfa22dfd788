// The kernel's block table under pressure (`--combined --live-blocks 1`: two slots and room
// for one more block past them). crowd holds 300 16-byte blocks at once, disperse frees them
// all, keep_two then allocates 2 x 100 bytes and keeps them: 200 bytes in 2 blocks outstanding.
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define CROWD 300

static void *volatile blocks[CROWD];

NOINLINE void crowd(void) {
    for (int i = 0; i < CROWD; i++) {
        blocks[i] = malloc(16);
    }
}

NOINLINE void disperse(void) {
    for (int i = 0; i < CROWD; i++) {
        free(blocks[i]);
    }
}

NOINLINE void keep_two(void) {
    blocks[0] = malloc(100);
    blocks[1] = malloc(100);
}

int main(void) {
    crowd();
    disperse();
    keep_two();
    write(1, "crowd: done\n", 12);
    return 0;
}
