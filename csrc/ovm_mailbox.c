#include "ovm_mailbox.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif

#include <stdlib.h>

/* A bounded per-thread cache of nodes: a message node is usually allocated
 * by the sender's thread and freed by the receiver's, so the cache is capped
 * to keep one-way floods from hoarding memory on the receiving thread. */
#define OVM_NODE_CACHE_MAX 4096
static _Thread_local ovm_node *node_cache;
static _Thread_local size_t node_cache_len;
static _Thread_local int node_cache_registered;

/* The cache must not outlive its thread: a pthread key's destructor empties
 * it when a thread that cached nodes exits (the main thread's cache stays
 * reachable until the process ends). */
static pthread_key_t node_cache_key;
static pthread_once_t node_cache_once = PTHREAD_ONCE_INIT;
static int node_cache_key_ok;

void ovm_node_cache_clear(void) {
    ovm_node *node = node_cache;
    node_cache = NULL;
    node_cache_len = 0;
    while (node != NULL) {
        ovm_node *next = node->next;
        free(node);
        node = next;
    }
}

static void node_cache_at_exit(void *unused) {
    (void)unused;
    ovm_node_cache_clear();
}

static void node_cache_key_init(void) {
    node_cache_key_ok = pthread_key_create(&node_cache_key, node_cache_at_exit) == 0;
}

/* Arranges for this thread's cache to be freed when it exits; 0 if that
 * cannot be arranged (then nodes are not cached). */
static int node_cache_register(void) {
    pthread_once(&node_cache_once, node_cache_key_init);
    if (!node_cache_key_ok || pthread_setspecific(node_cache_key, (void *)1) != 0)
        return 0;
    node_cache_registered = 1;
    return 1;
}

ovm_node *ovm_node_new(void *payload, int kind) {
    ovm_node *node = node_cache;
    if (node != NULL) {
        node_cache = node->next;
        node_cache_len--;
    } else {
        node = malloc(sizeof(*node));
        if (node == NULL)
            return NULL;
    }
    node->next = NULL;
    node->payload = payload;
    node->kind = kind;
    return node;
}

void ovm_node_free(ovm_node *node) {
    if (node_cache_len < OVM_NODE_CACHE_MAX &&
        (node_cache_registered || node_cache_register())) {
        node->next = node_cache;
        node_cache = node;
        node_cache_len++;
    } else {
        free(node);
    }
}

int ovm_inbox_init(ovm_inbox *box) {
    box->head = box->tail = NULL;
    atomic_init(&box->len, 0);
    atomic_init(&box->signals, 0);
    box->closed = 0;
    return pthread_mutex_init(&box->lock, NULL);
}

void ovm_inbox_destroy(ovm_inbox *box) {
    pthread_mutex_destroy(&box->lock);
}

int ovm_inbox_push(ovm_inbox *box, ovm_node *node) {
    node->next = NULL;
    pthread_mutex_lock(&box->lock);
    if (box->closed) {
        pthread_mutex_unlock(&box->lock);
        return -1;
    }
    if (box->tail != NULL)
        box->tail->next = node;
    else
        box->head = node;
    box->tail = node;
    if (!ovm_sig_is_message(node->kind))
        atomic_fetch_add_explicit(&box->signals, 1, memory_order_release);
    atomic_fetch_add_explicit(&box->len, 1, memory_order_release);
    pthread_mutex_unlock(&box->lock);
    return 0;
}

ovm_node *ovm_inbox_take(ovm_inbox *box) {
    ovm_node *head;
    if (atomic_load_explicit(&box->len, memory_order_acquire) == 0)
        return NULL;
    pthread_mutex_lock(&box->lock);
    head = box->head;
    box->head = box->tail = NULL;
    atomic_store_explicit(&box->len, 0, memory_order_relaxed);
    atomic_store_explicit(&box->signals, 0, memory_order_relaxed);
    pthread_mutex_unlock(&box->lock);
    return head;
}

void ovm_inbox_visit(ovm_inbox *box, ovm_visit_fn fn, void *ctx) {
    ovm_node *node;
    pthread_mutex_lock(&box->lock);
    for (node = box->head; node != NULL; node = node->next)
        fn(ctx, node->kind, node->payload);
    pthread_mutex_unlock(&box->lock);
}

ovm_node *ovm_inbox_close(ovm_inbox *box) {
    ovm_node *head;
    pthread_mutex_lock(&box->lock);
    box->closed = 1;
    head = box->head;
    box->head = box->tail = NULL;
    atomic_store_explicit(&box->len, 0, memory_order_relaxed);
    atomic_store_explicit(&box->signals, 0, memory_order_relaxed);
    pthread_mutex_unlock(&box->lock);
    return head;
}

void ovm_queue_init(ovm_queue *q) {
    q->head = q->tail = q->marker = NULL;
    q->len = 0;
    q->marked = 0;
}

void ovm_queue_append(ovm_queue *q, ovm_node *node) {
    node->next = NULL;
    if (q->tail != NULL)
        q->tail->next = node;
    else
        q->head = node;
    q->tail = node;
    q->len++;
}

void ovm_queue_unlink(ovm_queue *q, ovm_node *prev, ovm_node *node) {
    if (prev != NULL)
        prev->next = node->next;
    else
        q->head = node->next;
    if (q->tail == node)
        q->tail = prev;
    /* The marker must keep pointing into the queue. */
    if (q->marked && q->marker == node)
        q->marker = prev;
    node->next = NULL;
    q->len--;
}

void ovm_queue_mark(ovm_queue *q) {
    q->marker = q->tail;
    q->marked = 1;
}

ovm_node *ovm_queue_marked_start(ovm_queue *q, ovm_node **prev) {
    if (!q->marked || q->marker == NULL) {
        *prev = NULL;
        return q->head;
    }
    *prev = q->marker;
    return q->marker->next;
}

ovm_node *ovm_queue_take_all(ovm_queue *q) {
    ovm_node *head = q->head;
    ovm_queue_init(q);
    return head;
}

void ovm_trim_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}
