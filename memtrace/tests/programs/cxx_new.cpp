// Every form of operator new and delete. Leaks, by function:
//   make_int 4 (new), make_array 40 (new[]), make_nothrow 33 (nothrow new[]),
//   make_aligned 64 (aligned new), make_aligned_array 256 (aligned new[])
// = 397 bytes in 5 blocks; and releases 6 more blocks with delete, delete[], sized delete,
// nothrow-allocated delete[], aligned delete and aligned delete[]: 11 allocations, 6 frees.
#include <new>

#define NOINLINE __attribute__((noinline))

struct alignas(64) Line {
    char bytes[64];
};

struct Pair {
    long a, b;
};

void *volatile sink;

NOINLINE void make_int() { sink = new int(7); }
NOINLINE void make_array() { sink = new int[10]; }
NOINLINE void make_nothrow() { sink = new (std::nothrow) char[33]; }
NOINLINE void make_aligned() { sink = new Line; }
NOINLINE void make_aligned_array() { sink = new Line[4]; }

NOINLINE void churn() {
    int *one = new int(1);
    delete one; // sized delete for a complete type
    int *many = new int[5];
    delete[] many;
    Pair *pair = new Pair{1, 2};
    delete pair;
    char *quiet = new (std::nothrow) char[9];
    delete[] quiet;
    Line *line = new Line;
    delete line; // aligned delete
    Line *lines = new Line[2];
    delete[] lines; // aligned delete[]
}

int main() {
    make_int();
    make_array();
    make_nothrow();
    make_aligned();
    make_aligned_array();
    churn();
    return 0;
}
