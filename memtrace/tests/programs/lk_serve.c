// For `record --scan`: a long-running process that, every 20 ms, loses a block of 100 bytes
// and keeps a block of 200 bytes in a global array (for its first 10,000 rounds). It prints
// its pid, then runs until killed. Whatever the window, memtrace must find as many lost blocks
// of 100 bytes as kept blocks of 200 bytes (one round may straddle the window's edge).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *kept[10000];

NOINLINE void lose_in_round(void) {
    void *volatile lost = malloc(100);
    memset(lost, 0, 100);
    lost = NULL;
}

NOINLINE void keep_in_round(int round) { kept[round] = malloc(200); }

int main(void) {
    printf("%d\n", getpid());
    fflush(stdout);
    for (int round = 0;; round++) {
        lose_in_round();
        if (round < 10000) keep_in_round(round);
        usleep(20000);
    }
}
