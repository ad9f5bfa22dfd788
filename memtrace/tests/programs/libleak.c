// A shared library that leaks 2468 bytes from leak_in_library(), for symbolizing frames in a
// library the test builds (position-independent, loaded at a random address).
#include <stdlib.h>

void *leak_in_library(void) { return malloc(2468); }
