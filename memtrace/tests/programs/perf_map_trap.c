// Leaves a trap where memtrace looks for a JIT's perf map, /tmp/perf-PID.map, as a hostile user
// could: a FIFO (a blocking open never returns), a symbolic link to /dev/zero (a read never
// ends), a map owned by another user, or one too large to read. Then leaks 3333 bytes and exits.
// It prints its pid first, so that the test can remove the trap whatever memtrace did.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void *volatile sink;

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    char path[64];
    snprintf(path, sizeof path, "/tmp/perf-%d.map", getpid());
    printf("%d\n", getpid());
    fflush(stdout);
    const char *mode = argv[1];
    if (strcmp(mode, "fifo") == 0) {
        if (mkfifo(path, 0644) != 0) return 3;
    } else if (strcmp(mode, "zero") == 0) {
        if (symlink("/dev/zero", path) != 0) return 3;
    } else {
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
        if (fd < 0) return 3;
        const char line[] = "7f0000001000 40 jitted\n";
        if (write(fd, line, sizeof line - 1) != sizeof line - 1) return 4;
        if (strcmp(mode, "foreign") == 0 && fchown(fd, 12345, 12345) != 0) return 5;
        // Sparse: a file of 64 MiB and a byte costs nothing to make.
        if (strcmp(mode, "large") == 0 && ftruncate(fd, (64 << 20) + 1) != 0) return 5;
        close(fd);
    }
    sink = malloc(3333);
    return 0;
}
