// Possibly lost: a global points 40 bytes into a 100-byte block (no pointer to its start), and
// that block points to the start of a 60-byte block, which is possibly lost too (reached only
// through a possibly lost block): 160 bytes in 2 blocks. A second global points to the start
// of a 30-byte block: still reachable.
#include <stdlib.h>
#include <string.h>

char *middle;
void *start;

int main(void) {
    char *block = malloc(100);
    memset(block, 0, 100);
    *(void **)block = malloc(60);
    memset(*(void **)block, 0, 60);
    middle = block + 40;
    block = NULL;
    start = malloc(30);
    return 0;
}
