// A tree of 7 nodes (48 bytes each) under a global root: still reachable, 336 bytes in 7 blocks.
// Its left subtree (3 nodes) is then cut off: 48 bytes definitely lost (its root) and 96 bytes
// in 2 blocks indirectly lost; 192 bytes in 4 blocks still reachable.
#include <stdlib.h>

struct tree { struct tree *left, *right; long pad[4]; };

struct tree *root;

static struct tree *grow(int depth) {
    if (depth == 0) return NULL;
    struct tree *node = calloc(1, sizeof *node);
    node->left = grow(depth - 1);
    node->right = grow(depth - 1);
    return node;
}

int main(void) {
    root = grow(3);
    root->left = NULL;
    return 0;
}
