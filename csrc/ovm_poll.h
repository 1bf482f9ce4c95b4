/* I/O readiness: one epoll instance and the thread that waits on it.
 *
 * Erlang's check_io in our shape.  Sockets register their fd with a token
 * (an id chosen by the layer above, never reused) and arm it for reading
 * and/or writing.  Every registration is one-shot: an fd reports readiness
 * once, then stays quiet until its owner arms it again, so a socket nobody
 * reads from costs nothing and can never flood the scheduler.
 *
 * Events are collected as (token, events) pairs into a ready list; a
 * scheduler thread takes the list and does the actual reads and writes with
 * the interpreter.  Nothing here touches Python.  A token is an id, not a
 * pointer: an event for a socket closed meanwhile is harmless, because its
 * id no longer names anything.
 *
 * Two kinds of thread collect.  While some scheduler thread is awake, the
 * schedulers themselves look (`ovm_poller_poll`, which never blocks) between
 * slices, and the poll thread stays out of epoll_wait: a thread blocked
 * there would be woken by the kernel for every event, a context switch per
 * packet that costs more than the packet.  When they all go to sleep (see
 * `ovm_poller_watch`), the poll thread waits in epoll_wait and calls
 * `notify` to wake them.  It also looks on its own, without blocking, when
 * nobody has for OVM_POLL_STALE_NS, so that a scheduler stuck in a long
 * slice delays I/O by that much at most. */
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

/* How old the last look may be before the poll thread takes one itself. */
#define OVM_POLL_STALE_NS 10000000LL

typedef struct {
    /* The epoll instance: -1 until started and again once stopped.  Its
     * users (epoll_ctl and epoll_wait callers, any thread) count themselves
     * in `users` around each use, so that stop closes it only once nobody
     * is inside a syscall on it: an fd number is reused by the OS at once,
     * and a late epoll_ctl on a reused number would act on someone else's
     * descriptor. */
    _Atomic int epfd;
    _Atomic int users;
    int wakefd;                 /* an eventfd that interrupts epoll_wait */
    pthread_mutex_t lock;       /* guards the ready list, `watch` changes,
                                   and starting against stopping */
    pthread_cond_t gate;        /* the poll thread waits here while not watching */
    ovm_io_event *ready;
    size_t len, cap;
    _Atomic int pending;        /* the ready list is not empty */
    _Atomic int stopping;
    _Atomic int watch;          /* the poll thread should block in epoll_wait */
    _Atomic int polling;        /* a scheduler is in ovm_poller_poll */
    _Atomic int64_t last_look;  /* when events were last collected (ovm_now_ns) */
    _Atomic int started;        /* read by ovm_poller_poll on any thread */
    pthread_t thread;
    ovm_poll_notify_fn notify;
    void *notify_ctx;
} ovm_poller;

/* Sets the poller up without any fd or thread (cheap; a VM that never
 * opens a socket never pays for more). */
int ovm_poller_init(ovm_poller *p);
/* Creates the epoll instance and starts the poll thread; `notify` is called
 * from it, without any lock held, whenever the ready list became non-empty.
 * Returns 0 or an errno (ECANCELED once stopped).  Idempotent. */
int ovm_poller_start(ovm_poller *p, ovm_poll_notify_fn notify, void *ctx);
/* Stops and joins the poll thread and closes the epoll instance and the
 * eventfd, waiting for callers still inside a syscall on it; later calls
 * fail with EBADF (or find nothing), and the poller cannot be started
 * again.  Events still queued stay queued.  Idempotent, any thread. */
void ovm_poller_stop(ovm_poller *p);
/* Frees the ready list (and closes the fds if stop was never called);
 * after every other thread is done with the poller. */
void ovm_poller_destroy(ovm_poller *p);

/* Registers fd under token, armed for `interest` (0: registered, quiet).
 * Returns 0 or an errno (EEXIST, EBADF, ENOMEM, EPERM for regular files). */
int ovm_poller_add(ovm_poller *p, int fd, uint64_t token, uint32_t interest);
/* Re-arms a registered fd for `interest` (one more report). */
int ovm_poller_arm(ovm_poller *p, int fd, uint64_t token, uint32_t interest);
/* Forgets fd; call before closing it.  Returns 0 or an errno. */
int ovm_poller_remove(ovm_poller *p, int fd);

/* Called after every change of `*awake`, the number of scheduler threads
 * awake, once the poller is started: the poll thread blocks in epoll_wait
 * while it is zero (and before the first call) and leaves the looking to
 * the schedulers otherwise.  The
 * count is read under the poller's lock, so whichever of two racing changes
 * calls last leaves the right setting. */
void ovm_poller_watch(ovm_poller *p, _Atomic int *awake);
/* Collects ready events without blocking, unless the last look is younger
 * than `min_age_ns` or another thread is looking now; returns how many it
 * added to the ready list.  `notify` is not called (the caller will take
 * them). */
size_t ovm_poller_poll(ovm_poller *p, int64_t min_age_ns);

/* Moves up to `max` ready events into `out`; returns how many. */
size_t ovm_poller_take(ovm_poller *p, ovm_io_event *out, size_t max);
static inline int ovm_poller_started(ovm_poller *p) {
    return atomic_load_explicit(&p->started, memory_order_acquire);
}
static inline int ovm_poller_pending(ovm_poller *p) {
    return atomic_load_explicit(&p->pending, memory_order_acquire);
}

#endif
