// A tiny JIT: writes a function into anonymous executable memory that calls malloc(4444) and
// keeps the block, names it jit_leaker in /tmp/perf-PID.map as JITs do for perf, and calls it.
// The code keeps the frame-pointer chain (push rbp; mov rbp, rsp) so the stack walks through it.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void *volatile sink;

int main(void) {
    unsigned char code[] = {
        0x55,                               // push rbp
        0x48, 0x89, 0xe5,                   // mov rbp, rsp
        0xbf, 0x5c, 0x11, 0x00, 0x00,       // mov edi, 4444
        0x48, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, // movabs rax, malloc
        0xff, 0xd0,                         // call rax
        0x5d,                               // pop rbp
        0xc3,                               // ret
    };
    void *(*allocate)(size_t) = malloc;
    memcpy(&code[11], &allocate, sizeof allocate);
    unsigned char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) return 2;
    memcpy(page, code, sizeof code);

    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    FILE *map = fopen(path, "w");
    if (!map) return 3;
    fprintf(map, "%lx %zx jit_leaker\n", (unsigned long)page, sizeof code);
    fclose(map);

    void *(*jitted)(void) = (void *(*)(void))page;
    sink = jitted();
    return 0;
}
