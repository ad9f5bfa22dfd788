// A long-running process that leaks one 128-byte block every 20 ms from leak_one(), and
// writes each leak's CLOCK_MONOTONIC time as "leak <ns>" on stdout, so that a test can count
// the leaks inside memtrace's recording window.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

NOINLINE void leak_one(void) {
    char *block = malloc(128);
    memset(block, 7, 128);
    sink = block;
}

int main(void) {
    const struct timespec period = {0, 20 * 1000 * 1000};
    for (;;) {
        leak_one();
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        char line[64];
        int length = snprintf(line, sizeof line, "leak %lld\n",
                              (long long)now.tv_sec * 1000000000LL + now.tv_nsec);
        if (write(1, line, length) != length) {
            return 1;
        }
        nanosleep(&period, NULL);
    }
}
