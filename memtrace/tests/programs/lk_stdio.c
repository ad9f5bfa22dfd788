// stdio's buffer: printf to stdout allocates its buffer (4096 bytes when stdout is a pipe or a
// file) that glibc keeps for the life of the process, reachable from the stdout FILE in libc's
// data. valgrind frees it at exit through __libc_freeres unless --run-libc-freeres=no; with
// that, both say still reachable. And one definitely lost block of 17 bytes.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
    printf("hello from lk_stdio\n");
    void *volatile lost = malloc(17);
    lost = NULL;
    return 0;
}
