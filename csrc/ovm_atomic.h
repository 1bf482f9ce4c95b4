/* Thin C11 atomics and clock helpers shared by the C primitives.
 *
 * Everything in csrc/ is plain C with no Python objects: payloads are opaque
 * `void *` owned by the layer above.  These helpers keep the memory orderings
 * explicit so that the code stays correct on free-threaded CPython, where the
 * GIL no longer serialises anything. */
#ifndef OVM_ATOMIC_H
#define OVM_ATOMIC_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1   /* clock_gettime, pthread_condattr_setclock */
#endif

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds. */
static inline int64_t ovm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* A process-wide unique, never reused identifier (pids, refs, timers). */
uint64_t ovm_next_id(void);

#endif
