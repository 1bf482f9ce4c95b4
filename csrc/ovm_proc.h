/* The C half of a process: its run-queue link and its atomic state word.
 *
 * The state word guarantees that one scheduler thread at a time runs a
 * process and that no wake-up is ever lost:
 *   RUNQ     the process sits in a run queue;
 *   RUNNING  a scheduler thread is running it;
 *   ACTIVE   something arrived (message, signal, timeout) since it last
 *            looked at its mailbox;
 *   EXITED   it is gone; wakes are ignored.
 * A waiting process has none of the bits set.
 *
 * Four more bits are about killing (see "killing a stuck process" in
 * otpvm/_core/process.pxi):
 *   KILL         an untrappable exit signal is on its way: the process is
 *                dead to observers already (is_alive), as in Erlang;
 *   TAKEN        another thread ended the process while its own thread was
 *                still running its code (a stuck process was killed): that
 *                thread only cleans up once it gets out of it;
 *   LEFT         that thread got out: it must not be interrupted any more;
 *   INTERRUPTING another thread is raising an exception in that thread. */
#ifndef OVM_PROC_H
#define OVM_PROC_H

#include <stdint.h>
#include "ovm_atomic.h"

enum {
    OVM_RUNQ = 1u,
    OVM_RUNNING = 2u,
    OVM_ACTIVE = 4u,
    OVM_EXITED = 8u,
    OVM_KILL = 16u,
    OVM_TAKEN = 32u,
    OVM_LEFT = 64u,
    OVM_INTERRUPTING = 128u
};

typedef struct ovm_proc {
    struct ovm_proc *rq_next;   /* intrusive run-queue link */
    _Atomic uint32_t state;
    _Atomic uint32_t home;      /* index of the run queue it last ran from */
    void *owner;                /* the object of the layer above */
    _Atomic uint64_t timeout_fired; /* generation of the last receive timeout */
} ovm_proc;

static inline void ovm_proc_init(ovm_proc *p, void *owner, uint32_t home) {
    p->rq_next = NULL;
    atomic_init(&p->state, 0);
    atomic_init(&p->home, home);
    p->owner = owner;
    atomic_init(&p->timeout_fired, 0);
}

/* Where to queue the process when it wakes (any thread may ask). */
static inline uint32_t ovm_proc_home(ovm_proc *p) {
    return atomic_load_explicit(&p->home, memory_order_relaxed);
}

static inline void ovm_proc_set_home(ovm_proc *p, uint32_t q) {
    atomic_store_explicit(&p->home, q, memory_order_relaxed);
}

/* A receive timeout of generation `gen` fired (called by a timer thread). */
static inline void ovm_proc_fire_timeout(ovm_proc *p, uint64_t gen) {
    atomic_store_explicit(&p->timeout_fired, gen, memory_order_release);
}

static inline uint64_t ovm_proc_timeout_fired(ovm_proc *p) {
    return atomic_load_explicit(&p->timeout_fired, memory_order_acquire);
}

/* Marks the process active.  Returns 1 when the caller must enqueue it (it
 * was waiting and now carries RUNQ), 0 when it is already queued, running
 * (it will look again before waiting) or exited. */
static inline int ovm_proc_wake(ovm_proc *p) {
    uint32_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
    uint32_t new;
    do {
        if (old & OVM_EXITED)
            return 0;
        new = old | OVM_ACTIVE;
        if (!(old & (OVM_RUNQ | OVM_RUNNING)))
            new |= OVM_RUNQ;
    } while (!atomic_compare_exchange_weak_explicit(
        &p->state, &old, new, memory_order_acq_rel, memory_order_relaxed));
    return (new & OVM_RUNQ) && !(old & OVM_RUNQ);
}

/* An untrappable exit signal was sent to it (any thread). */
static inline void ovm_proc_mark_kill(ovm_proc *p) {
    atomic_fetch_or_explicit(&p->state, OVM_KILL, memory_order_acq_rel);
}

/* Ends a running process from another thread: RUNNING -> EXITED | TAKEN.
 * Returns 0 when it is not running or has exited (its own thread ends it
 * then, or already did). */
static inline int ovm_proc_take(ovm_proc *p) {
    uint32_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
    do {
        if ((old & OVM_EXITED) || !(old & OVM_RUNNING))
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(
        &p->state, &old, old | OVM_EXITED | OVM_TAKEN, memory_order_acq_rel,
        memory_order_relaxed));
    return 1;
}

static inline int ovm_proc_taken(ovm_proc *p) {
    return (atomic_load_explicit(&p->state, memory_order_acquire) & OVM_TAKEN) != 0;
}

/* The taker is about to raise an exception in the process's thread:
 * returns 1 unless that thread has left its code (then it must not). */
static inline int ovm_proc_interrupt_begin(ovm_proc *p) {
    uint32_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
    do {
        if (old & OVM_LEFT)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(
        &p->state, &old, old | OVM_INTERRUPTING, memory_order_acq_rel,
        memory_order_relaxed));
    return 1;
}

static inline void ovm_proc_interrupt_end(ovm_proc *p) {
    atomic_fetch_and_explicit(&p->state, ~OVM_INTERRUPTING, memory_order_acq_rel);
}

/* The process's own thread got out of its code after a take: no interrupt
 * begins from now on.  Returns 1 while one is still in progress (the caller
 * waits for it to end before clearing what it raised). */
static inline int ovm_proc_leave(ovm_proc *p) {
    uint32_t old = atomic_fetch_or_explicit(&p->state, OVM_LEFT, memory_order_acq_rel);
    return (old & OVM_INTERRUPTING) != 0;
}

static inline int ovm_proc_interrupting(ovm_proc *p) {
    return (atomic_load_explicit(&p->state, memory_order_acquire) & OVM_INTERRUPTING) != 0;
}

/* A scheduler took the process out of a run queue: RUNQ -> RUNNING, and
 * ACTIVE is consumed because the process is about to look at its mailbox.
 * Returns 0 if the process exited meanwhile (then it must not run). */
static inline int ovm_proc_begin(ovm_proc *p) {
    uint32_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
    uint32_t new;
    do {
        if (old & OVM_EXITED)
            return 0;
        new = (old & ~(OVM_RUNQ | OVM_ACTIVE)) | OVM_RUNNING;
    } while (!atomic_compare_exchange_weak_explicit(
        &p->state, &old, new, memory_order_acq_rel, memory_order_relaxed));
    return 1;
}

/* The process has nothing to do.  RUNNING -> waiting, unless something
 * arrived since it looked: then ACTIVE is consumed and it stays RUNNING, and
 * the caller must look at the mailbox again (returns 0).  Only a live
 * process waits: once EXITED is set this keeps returning 0. */
static inline int ovm_proc_try_wait(ovm_proc *p) {
    uint32_t expected = OVM_RUNNING;
    if (atomic_compare_exchange_strong_explicit(
            &p->state, &expected, 0, memory_order_acq_rel, memory_order_acquire))
        return 1;
    atomic_fetch_and_explicit(&p->state, ~OVM_ACTIVE, memory_order_acq_rel);
    return 0;
}

/* The process used up its slice but can go on: RUNNING -> RUNQ. */
static inline void ovm_proc_requeue(ovm_proc *p) {
    uint32_t old = atomic_load_explicit(&p->state, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(
        &p->state, &old, (old & ~OVM_RUNNING) | OVM_RUNQ,
        memory_order_acq_rel, memory_order_relaxed))
        ;
}

/* The process is gone for good.  Returns the previous state. */
static inline uint32_t ovm_proc_exit(ovm_proc *p) {
    return atomic_fetch_or_explicit(&p->state, OVM_EXITED, memory_order_acq_rel);
}

static inline uint32_t ovm_proc_state(ovm_proc *p) {
    return atomic_load_explicit(&p->state, memory_order_acquire);
}

static inline int ovm_proc_exited(ovm_proc *p) {
    return (atomic_load_explicit(&p->state, memory_order_acquire) & OVM_EXITED) != 0;
}

#endif
