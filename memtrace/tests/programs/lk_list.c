// A lost linked list: the head (32 bytes) is definitely lost, its 4 nodes (32 bytes each, 128
// bytes) only reachable from it are indirectly lost.
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

struct node { struct node *next; long value[3]; };

NOINLINE void build_and_lose(void) {
    struct node *head = NULL;
    for (int i = 0; i < 5; i++) {
        struct node *node = calloc(1, sizeof *node);
        node->next = head;
        head = node;
    }
    head = NULL;
}

int main(void) {
    build_and_lose();
    return 0;
}
