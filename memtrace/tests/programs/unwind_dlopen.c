// Opens the library named by its argument (unwind_ctor_lib.c) and calls into it.
#include <dlfcn.h>
#include <stdio.h>

__attribute__((noipa)) int load_and_call(const char *path) {
    void *handle = dlopen(path, RTLD_NOW);
    if (!handle) {
        fprintf(stderr, "%s\n", dlerror());
        return 1;
    }
    int (*leak)(int) = (int (*)(int))dlsym(handle, "library_leak");
    int result = leak(5);
    return result == 12345;
}

int main(int argc, char **argv) {
    int failed = argc < 2 || load_and_call(argv[1]);
    return failed;
}
