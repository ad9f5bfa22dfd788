// Calls into libleak.so, which leaks 2468 bytes.
void *leak_in_library(void);

void *volatile sink;

int main(void) {
    sink = leak_in_library();
    return 0;
}
