// Ends the way its argument says: `exit N` exits with code N, `signal N` raises signal N.
// It allocates a little first, so that memtrace has something to report.
#include <signal.h>
#include <stdlib.h>
#include <string.h>

void *volatile sink;

int main(int argc, char **argv) {
    sink = malloc(64);
    if (argc == 3 && strcmp(argv[1], "signal") == 0) {
        raise(atoi(argv[2]));
    }
    return argc == 3 ? atoi(argv[2]) : 0;
}
