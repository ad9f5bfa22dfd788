// Known allocation behaviour for memtrace's sampling tests (--sample-bytes): at exit it holds
//   hold_small: 200,000 blocks x 64 bytes     = 12,800,000 bytes
//   hold_large:     100 blocks x 65,536 bytes =  6,553,600 bytes
// and churn has allocated and freed 100,000 blocks of 256 bytes (nothing outstanding).
#include <stdlib.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *small[200000];
static void *large[100];

NOINLINE void hold_small(void) {
    for (int i = 0; i < 200000; i++) small[i] = malloc(64);
}

NOINLINE void hold_large(void) {
    for (int i = 0; i < 100; i++) large[i] = malloc(65536);
}

NOINLINE void churn(void) {
    for (int i = 0; i < 100000; i++) {
        void *volatile block = malloc(256);
        free(block);
    }
}

int main(void) {
    hold_small();
    churn();
    hold_large();
    static const char done[] = "sampled: done\n";
    write(1, done, sizeof done - 1);
    return 0;
}
