// A worker thread leaks a block through a function built without frame pointers: its stack
// must end at the thread's start (start_thread, then clone3, the outermost frame).
#include <pthread.h>
#include <stdlib.h>

void *volatile sink;

__attribute__((noipa)) int make_block(int n) {
    volatile char scratch[16];
    scratch[0] = (char)n;
    sink = malloc(3131);
    sink = NULL; // lost
    return scratch[0];
}

__attribute__((noipa)) void *worker(void *argument) {
    int result = make_block((int)(long)argument);
    return (void *)(long)(result + 1);
}

int main(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, worker, (void *)7L) != 0) return 2;
    void *result;
    pthread_join(thread, &result);
    return result == NULL;
}
