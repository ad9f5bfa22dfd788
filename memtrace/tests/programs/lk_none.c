// Leaks nothing: every block is freed before exit. Every leak kind is 0.
#include <stdlib.h>
#include <string.h>

int main(void) {
    char *blocks[10];
    for (int i = 0; i < 10; i++) {
        blocks[i] = malloc(100 + i);
        memset(blocks[i], 0, 100 + i);
    }
    for (int i = 0; i < 10; i++) free(blocks[i]);
    return 0;
}
