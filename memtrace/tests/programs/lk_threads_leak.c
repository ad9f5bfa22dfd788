// Leaks in threads: 4 threads each lose 5 blocks of 200 bytes (definitely lost, 4000 bytes in
// 20 blocks) and each hand one block of 300 bytes to a global array (still reachable, 1200
// bytes in 4 blocks); all are joined before main returns.
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void *results[4];

static void *work(void *arg) {
    long index = (long)arg;
    for (int i = 0; i < 5; i++) {
        char *lost = malloc(200);
        memset(lost, 1, 200);
    }
    results[index] = malloc(300);
    return NULL;
}

int main(void) {
    pthread_t threads[4];
    for (long i = 0; i < 4; i++) pthread_create(&threads[i], NULL, work, (void *)i);
    for (int i = 0; i < 4; i++) pthread_join(threads[i], NULL);
    return 0;
}
