// Allocates with every traced function and frees everything: 0 bytes outstanding at exit.
// 50 x (malloc + calloc + realloc-grown block) = 150 allocations, 150 frees reported by memtrace
// (a realloc that moves or grows counts as one free and one allocation).
#include <stdlib.h>
#include <unistd.h>

void *volatile sink;

int main(void) {
    for (int i = 0; i < 50; i++) {
        char *a = malloc(100 + i);
        char *b = calloc(4, 25);
        char *c = realloc(NULL, 10);
        c = realloc(c, 4000);
        sink = a;
        free(a);
        free(b);
        free(c);
    }
    static const char done[] = "clean: done\n";
    write(1, done, sizeof done - 1);
    return 0;
}
