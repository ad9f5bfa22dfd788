// An unrelated process for probe_links.rs: calls malloc and free for 1.5 s, as fast as it can,
// then prints how many calls it made.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(void) {
    void *volatile sink;
    long calls = 0;
    double end = now() + 1.5;
    while (now() < end) {
        for (int i = 0; i < 1000; i++) {
            sink = malloc(64);
            free(sink);
        }
        calls += 2000;
    }
    printf("churn: %ld calls\n", calls);
    return 0;
}
