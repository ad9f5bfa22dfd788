// Calls into a library without frame pointers twice: the one it is linked with (DT_NEEDED,
// loaded before main) and the one named by its argument, opened with dlopen and called after
// dlopen has returned. Each leaks three calls deep inside the library.
#include <dlfcn.h>
#include <stdio.h>

int shlib_entry(int n);

__attribute__((noipa)) int use_needed(int n) {
    return shlib_entry(n) + 1;
}

__attribute__((noipa)) int use_opened(const char *path, int n) {
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        fprintf(stderr, "%s\n", dlerror());
        return -1;
    }
    int (*entry)(int) = (int (*)(int))dlsym(handle, "shlib_entry");
    if (!entry) return -1;
    return entry(n) + 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int total = use_needed(4);
    int opened = use_opened(argv[1], 5);
    return opened < 0 || total == 12345;
}
