// Leak kinds per process: the parent loses 72 bytes and keeps 16 in a global; its forked child
// loses 88 bytes and keeps 24 in the global. Each process is scanned at its own exit.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *kept;

NOINLINE void lose(size_t size) {
    void *volatile lost = malloc(size);
    lost = NULL;
}

int main(void) {
    pid_t child = fork();
    if (child == 0) {
        lose(88);
        kept = malloc(24);
        _exit(0);
    }
    lose(72);
    kept = malloc(16);
    waitpid(child, NULL, 0);
    return 0;
}
