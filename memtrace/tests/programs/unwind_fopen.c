// Leaks libc makes on the program's behalf when a stream is never closed: fopen's FILE (with
// its lock and wide-character state) and, at the first write, the stream's buffer. Both stay
// reachable from libc's list of open streams. libc and this program are built without frame
// pointers: the program's functions must be found below libc's frames.
#include <stdio.h>

// Counted after each call, so that no call is a tail call (a jump leaves no frame).
volatile int calls;

__attribute__((noipa)) FILE *open_log(const char *path) {
    FILE *log = fopen(path, "w");
    calls++;
    return log;
}

__attribute__((noipa)) int write_log(FILE *log, int value) {
    int written = fprintf(log, "value %d\n", value);
    calls++;
    return written;
}

int main(int argc, char **argv) {
    FILE *log = open_log(argc > 1 ? argv[1] : "/dev/null");
    if (!log) return 1;
    return write_log(log, 42) < 0; // never closed
}
