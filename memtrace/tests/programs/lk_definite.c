// Definitely lost: 3 blocks of 48 bytes whose only pointer is overwritten = 144 bytes in 3
// blocks; and malloc(0), lost too (0 bytes in 1 block). Nothing else is outstanding.
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

NOINLINE void lose_blocks(void) {
    for (int i = 0; i < 3; i++) {
        char *block = malloc(48);
        memset(block, 7, 48);
        block = NULL; // the only pointer is gone
    }
}

NOINLINE void lose_empty_block(void) {
    void *volatile empty = malloc(0);
    empty = NULL;
}

int main(void) {
    lose_blocks();
    lose_empty_block();
    return 0;
}
