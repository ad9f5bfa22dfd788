// One test binary of a small test suite (tests/suites.rs builds it five times under different
// names): it allocates and frees a scratch block, and loses LEAKED_BLOCKS blocks of 64 bytes
// (none unless built with -DLEAKED_BLOCKS=N).
#include <stdlib.h>
#include <string.h>

#ifndef LEAKED_BLOCKS
#define LEAKED_BLOCKS 0
#endif

__attribute__((noinline)) void leak_case(void) {
    for (int i = 0; i < LEAKED_BLOCKS; i++) {
        char *block = malloc(64);
        memset(block, 1, 64);
        block = NULL; // the only pointer is gone
    }
}

int main(void) {
    char *scratch = malloc(100);
    memset(scratch, 0, 100);
    free(scratch);
    leak_case();
    return 0;
}
