/* Scheduling: run queues, the threads that serve them, and the monitor.
 *
 * The shape is Go's P/M split.  A run queue (the "P") is a slot of the
 * scheduler with its own queue of runnable processes; a worker (the "M") is
 * an OS thread that serves at most one run queue at a time.  There are more
 * workers than run queues: the spare ones are parked.
 *
 * Python code cannot be interrupted between two awaits, so a process can
 * hold its worker for as long as it likes.  The monitor thread (Go's sysmon,
 * Erlang's long_schedule watchdog) notices a slice that has lasted longer
 * than the limit and hands that worker's run queue to a parked worker, so
 * every other process on it keeps running.  The stuck worker finds out when
 * its slice ends, and parks as a spare.
 *
 * Ownership of a run queue is decided by one atomic word, `slice`: even while
 * no slice runs, odd during a slice, with OVM_SLICE_LOST set by the monitor
 * when it took the queue away.  Both sides change it by compare-and-swap, so
 * exactly one of "the slice ended in time" and "the queue was handed off"
 * wins.  Nothing here touches Python: it is driven by the layer above and
 * never holds a lock while running a process. */
#ifndef OVM_SCHED_H
#define OVM_SCHED_H

#include "ovm_atomic.h"

#include <pthread.h>
#include <stdint.h>

#include "ovm_poll.h"
#include "ovm_proc.h"
#include "ovm_timer.h"

#define OVM_SLICE_LOST (1ull << 63)
/* A busy worker looks for ready I/O at most this often (between slices). */
#define OVM_IO_LOOK_NS 200000LL
#define OVM_NO_RUNQ UINT32_MAX

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ovm_proc *head, *tail;
    size_t len;
    int sleeping;                   /* its worker waits on cond */
    _Atomic uint64_t slice;
} ovm_runq;

typedef struct {
    pthread_cond_t cond;            /* parked on this, with sched->lock */
    _Atomic uint32_t runq;          /* OVM_NO_RUNQ while parked */
    uint64_t slice;                 /* value of runq->slice in our slice */
    int io_turn_done;               /* took I/O last: a process goes next */
    int64_t slice_start;
} ovm_worker;

typedef struct {
    uint32_t nrunqs, nworkers;
    ovm_runq *runqs;
    ovm_worker *workers;
    int steal;                      /* idle workers steal (free-threaded) */
    int64_t slice_limit_ns;
    ovm_timers timers;
    ovm_poller io;                  /* started by the first socket */

    pthread_mutex_t lock;           /* worker parking and hand-offs */
    _Atomic int stopping;
    _Atomic uint64_t handoffs;      /* how many run queues were rescued */
    _Atomic uint64_t no_spare;      /* rescues that found no parked worker */

    /* The monitor sleeps while no worker is awake: an idle VM burns nothing. */
    pthread_mutex_t mon_lock;
    pthread_cond_t mon_cond;
    _Atomic int awake;
    int monitor_started;
    pthread_t monitor;
} ovm_sched;

enum { OVM_NEXT_PROC = 0, OVM_NEXT_TIMERS = 1, OVM_NEXT_STOP = 2, OVM_NEXT_NONE = 3,
       OVM_NEXT_IO = 4 };

int ovm_sched_init(ovm_sched *s, uint32_t nrunqs, uint32_t nworkers,
                   int64_t slice_limit_ns, int steal);
int ovm_sched_start_monitor(ovm_sched *s);
/* Starts the I/O poller (idempotent): from then on workers also return
 * OVM_NEXT_IO when sockets are ready, and take the events with
 * ovm_poller_take(&s->io, ...). */
int ovm_sched_start_io(ovm_sched *s);
/* Asks every worker, the monitor and the poller to stop, and joins the
 * monitor and the poller. */
void ovm_sched_stop(ovm_sched *s);
/* Frees everything; call after every worker has returned. */
void ovm_sched_destroy(ovm_sched *s);

/* Appends a runnable process (it must carry OVM_RUNQ) to run queue q. */
void ovm_runq_push(ovm_sched *s, uint32_t q, ovm_proc *p);
/* Tells sleeping workers that the earliest timer deadline moved. */
void ovm_sched_timers_changed(ovm_sched *s);

/* Worker side.  `w` is the worker's index.  Blocks (call it without the
 * GIL) until there is a process to run (*out), timers are due, sockets are
 * ready, or the scheduler stops. */
int ovm_worker_next(ovm_sched *s, uint32_t w, ovm_proc **out);
/* The same without blocking: OVM_NEXT_NONE when there is nothing to do now
 * (the caller then releases the GIL and calls ovm_worker_next). */
int ovm_worker_poll(ovm_sched *s, uint32_t w, ovm_proc **out);
/* The run queue the worker serves now, or OVM_NO_RUNQ. */
static inline uint32_t ovm_worker_runq(ovm_sched *s, uint32_t w) {
    return atomic_load_explicit(&s->workers[w].runq, memory_order_acquire);
}
void ovm_worker_slice_begin(ovm_sched *s, uint32_t w);
/* Ends the slice.  Returns its length in ns; *lost is set when the monitor
 * handed the run queue to another worker meanwhile. */
int64_t ovm_worker_slice_end(ovm_sched *s, uint32_t w, int *lost);

#endif
