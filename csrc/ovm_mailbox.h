/* Mailboxes: a many-writer inbox plus the owner's private, ordered queue.
 *
 * Senders append signals (messages, exit/link/monitor signals) to the inbox
 * under a short mutex.  The owning process detaches the whole inbox at once
 * (`ovm_inbox_take`) and moves messages into its private queue, where
 * selective receive scans them without any lock.  Once a process has exited
 * the inbox is closed: a push fails, which tells the sender that the target
 * is dead (links and monitors then answer `noproc`).
 *
 * The private queue supports OTP's receive-marker optimisation: a marker
 * remembers the last message present when a fresh reference was made, so a
 * receive that matches on that reference skips everything before it. */
#ifndef OVM_MAILBOX_H
#define OVM_MAILBOX_H

#include "ovm_atomic.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* What a node carries; the payload's meaning depends on the kind. */
enum {
    OVM_SIG_MESSAGE = 0,
    OVM_SIG_EXIT = 1,       /* exit/2: payload = (from, reason) */
    OVM_SIG_EXIT_LINKED = 2,/* a linked process ended: (from, reason) */
    OVM_SIG_LINK = 3,       /* payload = from */
    OVM_SIG_UNLINK = 4,     /* payload = from */
    OVM_SIG_MONITOR = 5,    /* payload = (ref, from) */
    OVM_SIG_DEMONITOR = 6,  /* payload = ref */
    OVM_SIG_DOWN = 7,       /* a monitor fired: payload = Down message */
    OVM_SIG_ALIAS = 8       /* a message to an alias: payload = (ref, message) */
};

typedef struct ovm_node {
    struct ovm_node *next;
    void *payload;          /* owned reference, opaque to C */
    int kind;
} ovm_node;

/* Nodes are recycled through a small per-thread free list. */
ovm_node *ovm_node_new(void *payload, int kind);   /* NULL on out of memory */
void ovm_node_free(ovm_node *node);
/* Frees the calling thread's cache of nodes (done automatically when a
 * thread that cached nodes exits). */
void ovm_node_cache_clear(void);

typedef struct {
    pthread_mutex_t lock;
    ovm_node *head;
    ovm_node *tail;
    _Atomic size_t len;     /* readable without the lock */
    _Atomic size_t signals; /* ... of which not messages (ovm_sig_is_message) */
    int closed;
} ovm_inbox;

/* What process_info counts in a message queue: messages, Downs, and
 * messages sent to an alias; the other kinds change links or end the
 * process. */
static inline int ovm_sig_is_message(int kind) {
    return kind == OVM_SIG_MESSAGE || kind == OVM_SIG_DOWN || kind == OVM_SIG_ALIAS;
}

int ovm_inbox_init(ovm_inbox *box);                 /* 0 or an errno */
void ovm_inbox_destroy(ovm_inbox *box);
/* Appends node; returns 0, or -1 when the inbox is closed (the node still
 * belongs to the caller, its next pointer cleared). */
int ovm_inbox_push(ovm_inbox *box, ovm_node *node);
/* Detaches and returns every queued node in order (NULL when empty). */
ovm_node *ovm_inbox_take(ovm_inbox *box);
/* Closes the inbox for good and returns what was still queued. */
ovm_node *ovm_inbox_close(ovm_inbox *box);
/* Calls fn on every queued node, in order, under the inbox lock: another
 * process can see the signals on their way (Erlang orders process_info and
 * is_process_alive after the signals already sent). */
typedef void (*ovm_visit_fn)(void *ctx, int kind, void *payload);
void ovm_inbox_visit(ovm_inbox *box, ovm_visit_fn fn, void *ctx);
static inline size_t ovm_inbox_len(ovm_inbox *box) {
    return atomic_load_explicit(&box->len, memory_order_relaxed);
}
/* How many queued nodes are not messages: when none, a reader of the inbox
 * (process_info) need not walk it. */
static inline size_t ovm_inbox_signals(ovm_inbox *box) {
    return atomic_load_explicit(&box->signals, memory_order_acquire);
}
/* Gives memory freed by the process back to the operating system where the
 * C library keeps it (glibc's malloc_trim), after a big mailbox was freed. */
void ovm_trim_memory(void);

/* The owner's private queue: single-threaded, no lock. */
typedef struct {
    ovm_node *head;
    ovm_node *tail;
    size_t len;
    ovm_node *marker;       /* last node before the marked ref was made */
    int marked;             /* whether marker is in use */
} ovm_queue;

void ovm_queue_init(ovm_queue *q);
void ovm_queue_append(ovm_queue *q, ovm_node *node);
/* Removes `node`, whose predecessor is `prev` (NULL for the head). */
void ovm_queue_unlink(ovm_queue *q, ovm_node *prev, ovm_node *node);
/* Sets the marker at the current tail. */
void ovm_queue_mark(ovm_queue *q);
/* Where a scan for the marked ref starts: the node after the marker. */
ovm_node *ovm_queue_marked_start(ovm_queue *q, ovm_node **prev);
/* Detaches every node (for teardown). */
ovm_node *ovm_queue_take_all(ovm_queue *q);

#endif
