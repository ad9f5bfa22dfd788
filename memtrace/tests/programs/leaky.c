// Known allocation behaviour for memtrace's tests. Leaks, from distinct functions:
//   leak_with_malloc:  4 blocks x 1000 bytes = 4000 bytes
//   leak_with_calloc:  1 block of 10 x 30    =  300 bytes
//   leak_with_realloc: 1 block of 5000 bytes (grown from 50 by realloc)
// and frees everything else: 9300 bytes in 6 blocks outstanding at exit.
// It writes with write(2), not stdio, so that stdio's own buffer is not part of the numbers.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

NOINLINE void leak_with_malloc(void) {
    for (int i = 0; i < 4; i++) {
        char *block = malloc(1000);
        memset(block, 1, 1000);
        sink = block;
    }
}

NOINLINE void leak_with_calloc(void) { sink = calloc(10, 30); }

NOINLINE void leak_with_realloc(void) {
    char *block = malloc(50);
    block = realloc(block, 5000);
    sink = block;
}

NOINLINE void churn(void) {
    for (int i = 0; i < 100; i++) {
        void *block = malloc(64 + i);
        sink = block;
        free(block);
    }
    void *volatile nothing = NULL;
    free(nothing);
}

int main(void) {
    leak_with_malloc();
    leak_with_calloc();
    leak_with_realloc();
    churn();
    static const char done[] = "leaky: done\n";
    write(1, done, sizeof done - 1);
    return 0;
}
