// For --check's exit codes: `lk_crash leak` loses 64 bytes and exits 0; `lk_crash clean` frees
// everything and exits 0; `lk_crash fail` leaks and exits 3; `lk_crash abort` leaks and is
// killed by SIGABRT.
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

NOINLINE void leak_for_check(void) {
    void *volatile lost = malloc(64);
    lost = NULL;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "leak";
    if (strcmp(mode, "clean") == 0) {
        free(malloc(10));
        return 0;
    }
    leak_for_check();
    if (strcmp(mode, "fail") == 0) return 3;
    if (strcmp(mode, "abort") == 0) abort();
    return 0;
}
