/* Timers: a binary min-heap of deadlines, guarded by one mutex.
 *
 * Each timer is a small heap-allocated record that remembers its position in
 * the heap, so cancelling is O(log n) and a receive that got its message
 * before its timeout leaves nothing behind.  The earliest deadline is also
 * published in an atomic so that scheduler threads can test "is anything
 * due?" without taking the lock. */
#ifndef OVM_TIMER_H
#define OVM_TIMER_H

#include "ovm_atomic.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define OVM_NEVER INT64_MAX

typedef struct ovm_timer {
    int64_t deadline;       /* monotonic ns */
    uint64_t id;
    size_t index;           /* position in the heap, or SIZE_MAX when out */
    void *payload;          /* owned by the layer above */
} ovm_timer;

typedef struct {
    pthread_mutex_t lock;
    ovm_timer **heap;
    size_t len, cap;
    _Atomic int64_t next_deadline;  /* OVM_NEVER when empty */
} ovm_timers;

int ovm_timers_init(ovm_timers *t);
/* Prepares a timer record before its first ovm_timers_add. */
static inline void ovm_timer_init(ovm_timer *timer, int64_t deadline, uint64_t id, void *payload) {
    timer->deadline = deadline;
    timer->id = id;
    timer->index = SIZE_MAX;
    timer->payload = payload;
}
/* Frees the heap.  Empty it with ovm_timers_pop_any() first: the timers
 * still in it belong to the caller. */
void ovm_timers_destroy(ovm_timers *t);
/* Inserts a timer; returns 0, -1 on out of memory.  *earliest is set when
 * it became the earliest deadline (sleeping schedulers must recompute). */
int ovm_timers_add(ovm_timers *t, ovm_timer *timer, int *earliest);
/* Removes a timer still in the heap; returns 1 if it was removed, 0 if it
 * had already fired or been removed. */
int ovm_timers_cancel(ovm_timers *t, ovm_timer *timer);
/* Pops one timer whose deadline is <= now, or NULL. */
ovm_timer *ovm_timers_pop_due(ovm_timers *t, int64_t now);
/* Pops any timer (teardown), or NULL. */
ovm_timer *ovm_timers_pop_any(ovm_timers *t);
static inline int64_t ovm_timers_next(ovm_timers *t) {
    return atomic_load_explicit(&t->next_deadline, memory_order_acquire);
}

/* How many timers are armed (a snapshot). */
size_t ovm_timers_len(ovm_timers *t);

#endif
