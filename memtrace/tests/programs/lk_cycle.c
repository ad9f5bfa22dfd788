// A lost cycle of 3 blocks of 40 bytes (a -> b -> c -> a): valgrind counts one definitely lost
// (the block at the lowest address) and two indirectly lost. And a kept cycle of 2 blocks of
// 16 bytes, reachable from a global: still reachable.
#include <stdlib.h>

#define NOINLINE __attribute__((noinline))

struct ring { struct ring *next; long pad[4]; };
struct pair { struct pair *other; long pad; };

struct pair *kept;

NOINLINE void lose_ring(void) {
    struct ring *a = malloc(sizeof *a), *b = malloc(sizeof *b), *c = malloc(sizeof *c);
    a->next = b;
    b->next = c;
    c->next = a;
    a = b = c = NULL;
}

int main(void) {
    lose_ring();
    kept = malloc(sizeof *kept);
    kept->other = malloc(sizeof *kept);
    kept->other->other = kept;
    return 0;
}
