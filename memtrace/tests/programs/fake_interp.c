// A stand-in for a dynamic loader that a hostile user could name in PT_INTERP: whoever runs it
// appends its own pid to the file named by $MEMTRACE_TEST_MARKER. Run by the kernel as the
// interpreter of a program, that pid is the program's; run by anyone else (memtrace asking it to
// list libraries, as it once did), another. No libc: the kernel starts it with the program's
// stack, which libc's static start-up code would misread.
#define SYS_write 1
#define SYS_open 2
#define SYS_close 3
#define SYS_getpid 39
#define SYS_exit_group 231

static long call(long number, long a, long b, long c) {
    long result;
    __asm__ volatile("syscall" : "=a"(result) : "a"(number), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return result;
}

static int starts_with(const char *text, const char *prefix) {
    while (*prefix)
        if (*text++ != *prefix++) return 0;
    return 1;
}

void entry(long *stack) {
    long argc = stack[0];
    char **envp = (char **)(stack + argc + 2);
    const char *marker = 0;
    for (char **env = envp; *env; env++)
        if (starts_with(*env, "MEMTRACE_TEST_MARKER=")) marker = *env + 21;
    if (marker) {
        char line[24];
        int length = 0;
        char digits[20];
        int count = 0;
        for (long pid = call(SYS_getpid, 0, 0, 0); pid > 0 || count == 0; pid /= 10) digits[count++] = '0' + pid % 10;
        while (count > 0) line[length++] = digits[--count];
        line[length++] = '\n';
        long fd = call(SYS_open, (long)marker, 02000 | 01 | 0100, 0644); // O_APPEND | O_WRONLY | O_CREAT
        if (fd >= 0) {
            call(SYS_write, fd, (long)line, length);
            call(SYS_close, fd, 0, 0);
        }
    }
    call(SYS_exit_group, 0, 0, 0);
}

__asm__(".globl _start\n_start:\n mov %rsp, %rdi\n and $-16, %rsp\n call entry\n hlt\n");
