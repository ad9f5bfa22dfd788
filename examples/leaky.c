// memtrace's demo: a toy request handler with a classic leak. Every request gets a session and
// a response buffer; requests that fail validation return early and forget to free the session.
// `cargo xtask demo` runs it under `memtrace run`, which points at handle_request's early return.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

struct session {
    int id;
    char user[56];
};

NOINLINE static struct session *open_session(int id) {
    struct session *session = malloc(sizeof *session);
    session->id = id;
    snprintf(session->user, sizeof session->user, "user-%d", id);
    return session;
}

NOINLINE static char *render_response(const struct session *session) {
    char *body = malloc(256);
    snprintf(body, 256, "hello %s", session->user);
    return body;
}

NOINLINE static int handle_request(int id) {
    struct session *session = open_session(id);
    if (id % 10 == 0) {
        return -1; // invalid request: the session leaks here
    }
    char *body = render_response(session);
    int length = (int)strlen(body);
    free(body);
    free(session);
    return length;
}

int main(void) {
    int failed = 0;
    for (int id = 1; id <= 1000; id++) {
        if (handle_request(id) < 0) {
            failed++;
        }
    }
    printf("served 1000 requests, %d rejected\n", failed);
    return 0;
}
