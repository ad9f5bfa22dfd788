// Replaces its own executable on disk while running: deletes it and writes a file that is not
// an ELF at the same path, then leaks 4321 bytes from leak_after_replacing. memtrace must still
// name the frames, reading the binary through /proc/PID/map_files, not by its path.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

void *volatile sink;

__attribute__((noinline)) void leak_after_replacing(void) { sink = malloc(4321); }

int main(int argc, char **argv) {
    (void)argc;
    if (unlink(argv[0]) != 0) return 2;
    int fd = open(argv[0], O_CREAT | O_WRONLY | O_TRUNC, 0755);
    if (fd < 0) return 3;
    static const char garbage[] = "not an ELF file any more\n";
    if (write(fd, garbage, sizeof garbage - 1) < 0) return 4;
    close(fd);
    leak_after_replacing();
    return 0;
}
