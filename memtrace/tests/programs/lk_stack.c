// A pointer held in a live stack frame: main keeps two blocks (70 and 90 bytes) in locals and
// calls exit() from a nested function, so main's frame is still on the stack at exit: still
// reachable, 160 bytes in 2 blocks. A block lost in a returned frame (33 bytes) is definitely
// lost.
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

NOINLINE void finish(void) { exit(0); }

NOINLINE void lose(void) {
    void *volatile lost = malloc(33);
    lost = NULL;
}

int main(void) {
    void *volatile first = malloc(70);
    void *volatile second = malloc(90);
    lose();
    finish();
    return first == second;
}
