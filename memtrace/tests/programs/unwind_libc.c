// Leaks made inside libc on the program's behalf, from functions built without frame
// pointers: strdup's copy and getline's line buffer. The program's own caller must be found
// below libc's frames (libc is built without frame pointers too).
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *volatile kept;

__attribute__((noipa)) size_t duplicate_name(const char *name) {
    char *copy = strdup(name);
    size_t length = strlen(copy);
    copy = NULL; // lost
    return length;
}

__attribute__((noipa)) size_t read_first_line(void) {
    static char text[] = "first line of the text\nsecond line\n";
    FILE *stream = fmemopen(text, sizeof text - 1, "r");
    if (!stream) return 0;
    char *line = NULL;
    size_t capacity = 0;
    ssize_t read = getline(&line, &capacity, stream);
    fclose(stream);
    line = NULL; // lost
    return read > 0 ? (size_t)read : 0;
}

int main(void) {
    size_t total = duplicate_name("a name worth copying, long enough to be seen");
    total += read_first_line();
    return total == 0;
}
