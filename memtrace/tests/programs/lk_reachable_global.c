// Still reachable: blocks held by a global in .data (200 bytes) and one in .bss (56 bytes), and
// a block reached only from another reachable block (24 bytes): 280 bytes in 3 blocks.
#include <stdlib.h>

struct holder { void *next; long pad[2]; };

void *initialized_global = (void *)1; // .data
struct holder *bss_global;            // .bss

int main(void) {
    initialized_global = malloc(200);
    bss_global = malloc(56);
    bss_global->next = malloc(24);
    return 0;
}
