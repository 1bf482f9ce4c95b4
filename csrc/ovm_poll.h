/* I/O readiness: one epoll instance and the thread that waits on it.
 *
 * Erlang's check_io in our shape.  Sockets register their fd with a token
 * (an id chosen by the layer above, never reused) and arm it for reading
 * and/or writing.  Every registration is one-shot: an fd reports readiness
 * once, then stays quiet until its owner arms it again, so a socket nobody
 * reads from costs nothing and can never flood the scheduler.
 *
 * The poll thread only collects (token, events) pairs into a ready list and
 * calls `notify`; a scheduler thread takes the list and does the actual
 * reads and writes with the interpreter.  Nothing here touches Python.  A
 * token is an id, not a pointer: an event for a socket closed meanwhile is
 * harmless, because its id no longer names anything. */
#ifndef OVM_POLL_H
#define OVM_POLL_H

#include "ovm_atomic.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Interest and readiness bits (independent of epoll's values). */
enum { OVM_IO_IN = 1u, OVM_IO_OUT = 2u, OVM_IO_ERR = 4u, OVM_IO_HUP = 8u };

typedef struct {
    uint64_t token;
    uint32_t events;
} ovm_io_event;

typedef void (*ovm_poll_notify_fn)(void *ctx);

typedef struct {
    int epfd;                   /* -1 until started */
    int wakefd;                 /* an eventfd that interrupts epoll_wait */
    pthread_mutex_t lock;       /* guards the ready list */
    ovm_io_event *ready;
    size_t len, cap;
    _Atomic int pending;        /* the ready list is not empty */
    _Atomic int stopping;
    int started;
    pthread_t thread;
    ovm_poll_notify_fn notify;
    void *notify_ctx;
} ovm_poller;

/* Sets the poller up without any fd or thread (cheap; a VM that never
 * opens a socket never pays for more). */
int ovm_poller_init(ovm_poller *p);
/* Creates the epoll instance and starts the poll thread; `notify` is called
 * from it, without any lock held, whenever the ready list became non-empty.
 * Returns 0 or an errno.  Idempotent. */
int ovm_poller_start(ovm_poller *p, ovm_poll_notify_fn notify, void *ctx);
/* Stops and joins the poll thread (events still queued stay queued). */
void ovm_poller_stop(ovm_poller *p);
/* Closes the fds and frees the ready list; after ovm_poller_stop. */
void ovm_poller_destroy(ovm_poller *p);

/* Registers fd under token, armed for `interest` (0: registered, quiet).
 * Returns 0 or an errno (EEXIST, EBADF, ENOMEM, EPERM for regular files). */
int ovm_poller_add(ovm_poller *p, int fd, uint64_t token, uint32_t interest);
/* Re-arms a registered fd for `interest` (one more report). */
int ovm_poller_arm(ovm_poller *p, int fd, uint64_t token, uint32_t interest);
/* Forgets fd; call before closing it.  Returns 0 or an errno. */
int ovm_poller_remove(ovm_poller *p, int fd);

/* Moves up to `max` ready events into `out`; returns how many. */
size_t ovm_poller_take(ovm_poller *p, ovm_io_event *out, size_t max);
static inline int ovm_poller_pending(ovm_poller *p) {
    return atomic_load_explicit(&p->pending, memory_order_acquire);
}

#endif
