// A service with a slow leak and a steady cache, for leak-suspect detection. Every 20 ms:
// refresh_cache() replaces one of 4 cached 1000-byte blocks (free + malloc: the cache holds
// 4000 bytes once its blocks have all been replaced, then stays there), and leak_slowly()
// leaks 64 bytes (grows for ever).
#include <stdlib.h>
#include <time.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;
static void *cache[4];

NOINLINE void refresh_cache(int slot) {
    free(cache[slot]);
    cache[slot] = malloc(1000);
}

NOINLINE void leak_slowly(void) { sink = malloc(64); }

int main(void) {
    const struct timespec period = {0, 20 * 1000 * 1000};
    for (int i = 0;; i++) {
        refresh_cache(i % 4);
        leak_slowly();
        nanosleep(&period, NULL);
    }
}
