// Maps a System V segment of SYSV_BYTES and a POSIX shared memory object of POSIX_BYTES and
// touches every page of both.
//   shared_memory once NAME   touches them, then exits.
//   shared_memory pair NAME   forks; parent and child both touch them, print "ready PARENT
//                             CHILD" and sleep until killed (the child dies with its parent).
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/shm.h>
#include <sys/wait.h>
#include <unistd.h>

#define SYSV_BYTES (3L * 1024 * 1024)
#define POSIX_BYTES (5L * 1024 * 1024)

__attribute__((noinline)) static void touch(volatile char *memory, long bytes, long page) {
    for (long offset = 0; offset < bytes; offset += page) {
        memory[offset] += 1;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: shared_memory once|pair NAME\n");
        return 2;
    }
    long page = sysconf(_SC_PAGESIZE);
    int segment = shmget(IPC_PRIVATE, SYSV_BYTES, IPC_CREAT | 0600);
    if (segment < 0) {
        perror("shmget");
        return 1;
    }
    char *sysv = shmat(segment, NULL, 0);
    // Removed once the last process detaches: nothing is left behind, even if killed.
    shmctl(segment, IPC_RMID, NULL);
    int fd = shm_open(argv[2], O_CREAT | O_RDWR | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, POSIX_BYTES) != 0) {
        perror("shm_open");
        return 1;
    }
    char *posix = mmap(NULL, POSIX_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    shm_unlink(argv[2]);
    if (sysv == (void *)-1 || posix == MAP_FAILED) {
        perror("mapping");
        return 1;
    }
    if (strcmp(argv[1], "pair") == 0) {
        pid_t parent = getpid();
        pid_t child = fork();
        if (child == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            touch(sysv, SYSV_BYTES, page);
            touch(posix, POSIX_BYTES, page);
            for (;;) pause();
        }
        touch(sysv, SYSV_BYTES, page);
        touch(posix, POSIX_BYTES, page);
        // The child has touched both when its page tables map them: wait until its RSS shows it.
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/smaps_rollup", child);
        for (int tries = 0; tries < 500; tries++) {
            FILE *rollup = fopen(path, "r");
            char line[256];
            long rss_kb = 0;
            while (rollup && fgets(line, sizeof line, rollup)) {
                if (sscanf(line, "Rss: %ld kB", &rss_kb) == 1) break;
            }
            if (rollup) fclose(rollup);
            if (rss_kb * 1024 >= SYSV_BYTES + POSIX_BYTES) break;
            usleep(10000);
        }
        printf("ready %d %d\n", parent, child);
        fflush(stdout);
        for (;;) pause();
    }
    touch(sysv, SYSV_BYTES, page);
    touch(posix, POSIX_BYTES, page);
    return 0;
}
