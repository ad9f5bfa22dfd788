// Much memory in few blocks: 64 blocks of 4 MiB, written to and held by a global array until
// exit: 268,435,456 bytes still reachable. memtrace's scan reads them a megabyte at a time and
// must not need that much memory itself.
#include <stdlib.h>
#include <string.h>

#define BLOCKS 64
#define SIZE (4 << 20)

void *held[BLOCKS];

int main(void) {
    for (int i = 0; i < BLOCKS; i++) {
        held[i] = malloc(SIZE);
        memset(held[i], i + 1, SIZE);
    }
    return 0;
}
