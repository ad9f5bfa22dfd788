// A process family for --follow-forks. The parent leaks 100 bytes (parent_leak), forks a child
// that leaks 200 bytes (child_leak) and exits 4, then forks a child that allocates 50 bytes
// and execs the program named by argv[1] (whose own leaks then count for that child; the 50
// bytes die with the old image). The parent waits for both and exits 0.
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

NOINLINE void parent_leak(void) { sink = malloc(100); }
NOINLINE void child_leak(void) { sink = malloc(200); }
NOINLINE void before_exec(void) { sink = malloc(50); }

int main(int argc, char **argv) {
    parent_leak();
    pid_t leaker = fork();
    if (leaker == 0) {
        child_leak();
        _exit(4);
    }
    pid_t execer = fork();
    if (execer == 0) {
        before_exec();
        execv(argv[1], &argv[1]);
        _exit(127);
    }
    int status;
    waitpid(leaker, &status, 0);
    waitpid(execer, &status, 0);
    return 0;
}
