// Leak kinds in a threaded program whose blocks are handed out again and again: 4 threads each
// malloc 50,000 blocks of 16 to 128 bytes and pass them to the next thread, which frees them
// (cross-thread frees: glibc's tcache, fastbins and unsorted bins all take part). Along the way
// each thread loses 100 nodes of 32 bytes, 25 of them with a child node of 32 bytes only they
// point to: definitely lost 12,800 bytes in 400 blocks, indirectly lost 3,200 bytes in 100
// blocks. A lost node's program writes only its id (and its child's pointer, if it has one): its
// other words are never written, and hold whatever the allocator left in them (valgrind does not
// scan them: they are undefined).
#include <pthread.h>
#include <stdlib.h>

#define THREADS 4
#define ROUNDS 50000
#define LOSE_EVERY 500 // 100 lost nodes per thread
#define CHILD_EVERY 4  // one lost node in 4 has a child
#define QUEUE 1024

struct node {
    struct node *child;
    long id;
    long payload[2];
};

struct queue {
    pthread_mutex_t lock;
    void *items[QUEUE];
    unsigned head, tail;
};

static struct queue queues[THREADS];

// Returns 0 when the queue is full.
static int push(struct queue *queue, void *item) {
    pthread_mutex_lock(&queue->lock);
    int pushed = queue->tail - queue->head < QUEUE;
    if (pushed) queue->items[queue->tail++ % QUEUE] = item;
    pthread_mutex_unlock(&queue->lock);
    return pushed;
}

static void *pop(struct queue *queue) {
    void *item = NULL;
    pthread_mutex_lock(&queue->lock);
    if (queue->head != queue->tail) {
        // The slot is cleared: a stale pointer there would hold the next block given out at
        // that address.
        item = queue->items[queue->head % QUEUE];
        queue->items[queue->head++ % QUEUE] = NULL;
    }
    pthread_mutex_unlock(&queue->lock);
    return item;
}

static void drain(struct queue *queue) {
    void *item;
    while ((item = pop(queue))) free(item);
}

// Only the id is written (and the child pointer when it has one): the rest stays as malloc
// handed it out.
static __attribute__((noinline)) void lose(long id) {
    struct node *node = malloc(sizeof *node);
    node->id = id;
    if (id / LOSE_EVERY % CHILD_EVERY == 0) {
        node->child = malloc(sizeof *node);
        node->child->id = -id;
    }
}

static void *work(void *arg) {
    long index = (long)arg;
    struct queue *next = &queues[(index + 1) % THREADS];
    for (long round = 0; round < ROUNDS; round++) {
        size_t size = 16 + (size_t)(round * 7 % 8) * 16;
        long *block = malloc(size);
        block[0] = round;
        if (!push(next, block)) { // the next thread is behind (or done): free it here
            drain(&queues[index]);
            free(block);
        }
        if (round % 3 == 0) drain(&queues[index]);
        if (round % LOSE_EVERY == 0) lose(round);
    }
    return NULL;
}

int main(void) {
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++) pthread_mutex_init(&queues[i].lock, NULL);
    for (long i = 0; i < THREADS; i++) pthread_create(&threads[i], NULL, work, (void *)i);
    for (int i = 0; i < THREADS; i++) pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++) drain(&queues[i]);
    return 0;
}
