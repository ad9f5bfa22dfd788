// Blocks larger than memtrace's 1 MiB read window, and small blocks over several windows:
//   still reachable: a global holds a 3 MiB block whose only pointer, 2.5 MiB in, is to a
//       40-byte block: 3,145,768 bytes in 2 blocks;
//   definitely lost: a 2 MiB block nothing points to, and the head of a lost list:
//       2,097,152 + 32 = 2,097,184 bytes in 2 blocks;
//   indirectly lost: the 24-byte block the lost 2 MiB block points to 1.5 MiB in, and the
//       list's other 29,999 nodes of 32 bytes (about 1.4 MiB of heap): 959,992 bytes in
//       30,000 blocks.
#include <stdlib.h>
#include <string.h>

#define MIB (1024 * 1024)
#define NODES 30000

void *holder;

struct node {
    struct node *next;
    char payload[24];
};

static void lose_a_list(void) {
    struct node *head = NULL;
    for (int i = 0; i < NODES; i++) {
        struct node *node = malloc(sizeof *node);
        memset(node, 0, sizeof *node);
        node->next = head;
        head = node;
    }
    head = NULL;
}

int main(void) {
    char *kept = malloc(3 * MIB);
    memset(kept, 0, 3 * MIB);
    *(void **)(kept + 5 * MIB / 2) = malloc(40);
    holder = kept;

    char *lost = malloc(2 * MIB);
    memset(lost, 0, 2 * MIB);
    *(void **)(lost + 3 * MIB / 2) = malloc(24);
    lost = NULL;

    lose_a_list();
    return 0;
}
