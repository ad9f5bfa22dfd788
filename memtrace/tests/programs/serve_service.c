// For `serve`: a service that allocates on command, so that a test knows exactly what it holds.
// It prints its pid, then reads commands from stdin, one per line, answering "done" after each:
//   leak N SIZE    N blocks of SIZE bytes from leak_request, never freed
//   churn N SIZE   N blocks of SIZE bytes from churn_request, each freed at once
// It exits with 0 at the end of its input. Its stdio buffers are static, so that nothing but
// the commands allocates: a test that attaches at any moment knows what the service holds.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void **held;
static size_t held_count;

NOINLINE void leak_request(size_t size) {
    void *block = malloc(size);
    memset(block, 1, size);
    // Kept reachable from a global list, so every block stays outstanding.
    held = realloc(held, (held_count + 1) * sizeof *held);
    held[held_count++] = block;
}

NOINLINE void churn_request(size_t size) {
    void *volatile block = malloc(size);
    memset(block, 2, size);
    free(block);
}

static char in_buffer[4096], out_buffer[4096];

int main(void) {
    setvbuf(stdin, in_buffer, _IOFBF, sizeof in_buffer);
    setvbuf(stdout, out_buffer, _IOFBF, sizeof out_buffer);
    printf("%d\n", getpid());
    fflush(stdout);
    char line[128];
    while (fgets(line, sizeof line, stdin)) {
        char command[16];
        unsigned long count, size;
        if (sscanf(line, "%15s %lu %lu", command, &count, &size) == 3) {
            for (unsigned long i = 0; i < count; i++) {
                if (strcmp(command, "leak") == 0) leak_request(size);
                else churn_request(size);
            }
        }
        printf("done\n");
        fflush(stdout);
    }
    return 0;
}
