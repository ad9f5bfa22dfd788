// memtrace's symbolization benchmark target: leaks one 16-byte block from each of 10,000
// distinct call stacks (four levels of ten distinct call sites each), so a report of it holds
// 10,000 stacks to name. With `--wait` (the serve soak) it first prints its pid and waits for a
// line on stdin, so that memtrace serve attaches before it allocates.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

void *volatile sink;

NOINLINE void leaf(void) { sink = malloc(16); }

// Each case is its own call site, so each path through the levels is its own stack. The
// statement after each call keeps it from becoming a tail call.
NOINLINE void level(int path, int depth) {
    if (depth == 0) {
        leaf();
        return;
    }
    int digit = path % 10, rest = path / 10;
    switch (digit) {
    case 0: level(rest, depth - 1); break;
    case 1: level(rest, depth - 1); break;
    case 2: level(rest, depth - 1); break;
    case 3: level(rest, depth - 1); break;
    case 4: level(rest, depth - 1); break;
    case 5: level(rest, depth - 1); break;
    case 6: level(rest, depth - 1); break;
    case 7: level(rest, depth - 1); break;
    case 8: level(rest, depth - 1); break;
    default: level(rest, depth - 1); break;
    }
    sink = (void *)sink;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--wait") == 0) {
        static char in_buffer[256], out_buffer[256];
        setvbuf(stdin, in_buffer, _IOFBF, sizeof in_buffer);
        setvbuf(stdout, out_buffer, _IOLBF, sizeof out_buffer);
        printf("%d\n", getpid());
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
    }
    for (int path = 0; path < 10000; path++) level(path, 4);
    return 0;
}
