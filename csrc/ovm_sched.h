/* Scheduling: run queues, the threads that serve them, and the monitor.
 *
 * The shape is Go's P/M split.  A run queue (the "P") is a slot of the
 * scheduler with its own queue of runnable processes; a worker (the "M") is
 * an OS thread that serves at most one run queue at a time.  There are more
 * workers than run queues: the spare ones are parked.
 *
 * Python code cannot be interrupted between two awaits, so a process can
 * hold its worker for as long as it likes.  The monitor thread (Go's sysmon,
 * Erlang's long_schedule watchdog) notices a slice that overran and hands
 * that worker's run queue to a parked worker, so every other process on it
 * keeps running.  The stuck worker finds out when its slice ends, and parks
 * as a spare.
 *
 * However many processes get stuck at once, each run queue keeps a worker:
 * when no spare is parked, the monitor gives the run queue to a free worker
 * slot and asks the layer above to start a thread for it
 * (ovm_sched_take_start).  The slots are allocated up front (max_workers),
 * which bounds how many threads there can be; threads started this way
 * retire when their stuck slice is over and enough spares are parked.
 *
 * Where processes run.  A process is queued on the run queue it last ran
 * from, and one woken by a message goes to its sender's run queue (the layer
 * above passes that queue), so processes that talk to each other gather on
 * one queue and a reply needs no other thread.  With a GIL that is all: one
 * queue at a time runs Python anyway, and spreading work would only add GIL
 * hand-offs.  On free-threaded builds (`steal`) the work spreads as on the
 * BEAM and in Go: a push that leaves a busy queue with a process waiting
 * while some queue's worker sleeps wakes one sleeper (one at a time: the
 * `searching` count), which steals half of a busy queue; a thief that found
 * work wakes the next sleeper if work is left, so N idle workers join in
 * log N rounds instead of never.
 *
 * Ownership of a run queue is decided by one atomic word, `slice`: even while
 * no slice runs, odd during a slice, with OVM_SLICE_LOST set by the monitor
 * when it took the queue away.  Both sides change it by compare-and-swap, so
 * exactly one of "the slice ended in time" and "the queue was handed off"
 * wins.  Nothing here touches Python: it is driven by the layer above and
 * never holds a lock while running a process.
 *
 * What counts as an overrun.  A slice is charged only for what the process
 * itself did: the CPU time its worker thread used in the slice, plus the time
 * it sat blocked in a call that does not await (time.sleep, a blocking
 * recv, waiting on a lock).  It is not charged for waiting for the GIL
 * (CPython's switch interval, 5 ms, is longer than the 2 ms limit) nor for
 * being descheduled by the OS: on a busy machine those are what made
 * wall-clock timing blame innocent slices.  The judgement costs the workers'
 * hot path nothing: the monitor reads each worker's CPU clock itself
 * (pthread_getcpuclockid) and, for a slice that is off the CPU, samples which
 * system call the thread sits in (/proc/self/task/TID/syscall on Linux).
 * The rules are spelled out above the monitor in ovm_sched.c.  Separately,
 * a process that does get to reduction checks ends its slice by itself
 * after a quarter of the limit (ovm_slice_overdue), so that what overruns
 * is code that does not await.
 *
 * An overrun is an incident: the monitor queues one record when it finds it
 * (OVM_LS_RUNNING or OVM_LS_BLOCKED), an occasional OVM_LS_STILL while it
 * lasts, and OVM_LS_END when the slice is over.  The layer above takes them
 * with ovm_sched_next_incident() on a thread of its own and writes the log. */
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
/* Incidents the reporter may fall behind by before the monitor drops some
 * (and counts them: ovm_sched_take_dropped). */
#define OVM_INCIDENTS 64
/* A blocking section shorter than this is left its run queue (a hand-over
 * wakes a spare thread: not worth it for a lock taken at once). */
#define OVM_BLOCKING_GRACE_NS 200000LL
/* What a non-blocking socket send may take on its own (ovm_kernel_io). */
#define OVM_IO_ALLOWANCE_NS 100000LL

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ovm_proc *head, *tail;
    size_t len;
    int sleeping;                   /* its worker waits on cond */
    int thief;                      /* ... and was woken to steal (wake_thief) */
    _Atomic uint64_t slice;
    _Atomic uint64_t taken;         /* processes taken from it to run (statistics) */
} ovm_runq;

typedef struct {
    pthread_cond_t cond;            /* parked on this, with sched->lock */
    _Atomic uint32_t runq;          /* OVM_NO_RUNQ while parked */
    _Atomic int slot;               /* OVM_SLOT_*: whether a thread serves it */
    int parked;                     /* counted in sched->parked (under its lock) */
    uint64_t slice;                 /* value of runq->slice in our slice */
    int io_turn_done;               /* took I/O last: a process goes next */
    int searching;                  /* woken to steal, counted in sched->searching */
    /* What the monitor reads about this worker (it never writes to them but
     * `stuck`). */
    _Atomic uint64_t pid;           /* id of the process of the current slice */
    _Atomic uint64_t stuck;         /* the monitor took our run queue in this
                                       slice (its word, with OVM_SLICE_LOST);
                                       cleared when that slice ends */
    _Atomic int registered;         /* cpu_clock and tid are set */
    clockid_t cpu_clock;            /* this thread's CPU-time clock */
    int32_t tid;                    /* its kernel thread id (Linux), else 0 */
    _Atomic int syscall_fd;         /* its /proc/.../syscall, open while the
                                       VM runs, or -1 (see worker_syscall) */
    /* Housekeeping on this thread (ovm_housekeeping): how long it took in
     * all, and when the one in progress began (0: none), monotonic ns. */
    _Atomic int64_t house_ns;
    _Atomic int64_t house_since_ns;
    _Atomic int64_t house_allow_ns; /* ... of which this much is not excused */
    int house_depth;                /* the thread's own: nesting */
    /* A blocking section (ovm_blocking) in progress: its depth, and when
     * the outermost began (monotonic ns). */
    _Atomic int blocking;
    _Atomic int64_t blocking_since_ns;
    int64_t yield_after_ns;         /* ovm_slice_overdue: a quarter of the limit */
    int64_t checked_since;          /* ... its first look in this slice, or 0 */
    int64_t checked_last;           /* ... its last look */
    int checked_used;               /* ... and the reductions used then */
} ovm_worker;

/* A worker slot's thread: none, asked for (ovm_sched_take_start), running. */
enum { OVM_SLOT_FREE = 0, OVM_SLOT_STARTING = 1, OVM_SLOT_LIVE = 2 };

/* What an incident record is about. */
enum {
    OVM_LS_RUNNING = 1,     /* a slice overran, mostly running on the CPU */
    OVM_LS_BLOCKED = 2,     /* a slice overran, mostly blocked in a call */
    OVM_LS_STILL = 3,       /* a reported slice still goes on (10 s, 100 s...) */
    OVM_LS_END = 4          /* a reported slice ended */
};

typedef struct {
    int kind;                       /* OVM_LS_* */
    uint32_t worker, runq;
    uint64_t slice;                 /* with worker, names the incident */
    uint64_t pid;                   /* id of the process */
    int64_t wall_ns;                /* since the monitor first saw the slice */
    int64_t cpu_ns;                 /* CPU time used in it; -1: not measurable */
    int64_t blocked_ns;             /* time blocked in calls that do not await */
    int64_t house_ns;               /* VM housekeeping in it, not counted */
    long syscall;                   /* the call it was last seen blocked in, or -1 */
    int handed_over;                /* its run queue went to a spare worker */
    uint64_t queued;                /* processes waiting in its run queue then */
} ovm_incident;

typedef struct {
    uint32_t nrunqs;
    uint32_t nworkers;              /* worker slots, with a thread or not */
    uint32_t keep_spares;           /* parked spares kept; more retire */
    uint32_t parked;                /* spares parked now (under lock) */
    _Atomic uint32_t start_requests;    /* slots waiting for a thread */
    _Atomic uint32_t threads;       /* slots with a thread (or asked for one) */
    ovm_runq *runqs;
    ovm_worker *workers;
    int steal;                      /* idle workers steal (free-threaded) */
    /* Workers woken to steal that have not found work yet: at most one is
     * woken at a time (see wake_thief in ovm_sched.c). */
    _Atomic uint32_t searching;
    _Atomic uint64_t stolen;        /* processes moved by stealing */
    _Atomic uint64_t thief_wakeups; /* sleeping workers woken to steal */
    int64_t slice_limit_ns;         /* CPU + blocked time a slice may take */
    /* Wall-clock time after which a run queue is handed over whatever the
     * reason, without blaming the process (see monitor_judge). */
    int64_t hold_limit_ns;
    /* CPython's switch interval: a thread waiting for the GIL wakes at least
     * this often (5 ms unless sys.setswitchinterval changed it). */
    int64_t gil_interval_ns;
    /* A reported slice that goes on gets OVM_LS_STILL after this long (10 s),
     * then after ten times as long, and so on. */
    int64_t still_after_ns;
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

    /* Incidents, from the monitor to the reporter (a ring under rep_lock). */
    pthread_mutex_t rep_lock;
    pthread_cond_t rep_cond;
    ovm_incident incidents[OVM_INCIDENTS];
    unsigned inc_head, inc_len;
    int monitor_done;               /* stopped: nothing more will be queued */
    int poked;                      /* ovm_sched_poke_reporter */
    _Atomic uint64_t inc_dropped;
    _Atomic uint64_t overruns;      /* slices found overrunning (incidents opened) */
} ovm_sched;

enum { OVM_NEXT_PROC = 0, OVM_NEXT_TIMERS = 1, OVM_NEXT_STOP = 2, OVM_NEXT_NONE = 3,
       OVM_NEXT_IO = 4, OVM_NEXT_RETIRE = 5 };

/* nworkers threads to start now (nrunqs of them serve the run queues, the
 * rest are parked spares, which are kept), up to max_workers in all. */
int ovm_sched_init(ovm_sched *s, uint32_t nrunqs, uint32_t nworkers, uint32_t max_workers,
                   int64_t slice_limit_ns, int steal);
/* A worker slot the monitor gave a run queue to and that needs a thread
 * now (the caller starts one that calls ovm_worker_next for it), or -1. */
int ovm_sched_take_start(ovm_sched *s);
/* Tells the monitor CPython's switch interval (sys.getswitchinterval()),
 * which bounds how long a thread waits for the GIL between two wake-ups.
 * Call before ovm_sched_start_monitor; the default is 5 ms. */
void ovm_sched_set_gil_interval(ovm_sched *s, int64_t ns);
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
 * ready, or the scheduler stops.  OVM_NEXT_RETIRE: the worker is a spare
 * beyond those kept; its thread must end (its slot may be reused at once). */
int ovm_worker_next(ovm_sched *s, uint32_t w, ovm_proc **out);
/* The same without blocking: OVM_NEXT_NONE when there is nothing to do now
 * (the caller then releases the GIL and calls ovm_worker_next). */
int ovm_worker_poll(ovm_sched *s, uint32_t w, ovm_proc **out);
/* How many processes were taken from run queue q to run (stolen ones count
 * for the thief's queue), and how many were moved by stealing in all. */
static inline uint64_t ovm_runq_taken(ovm_sched *s, uint32_t q) {
    return atomic_load_explicit(&s->runqs[q].taken, memory_order_relaxed);
}
static inline uint64_t ovm_sched_stolen(ovm_sched *s) {
    return atomic_load_explicit(&s->stolen, memory_order_relaxed);
}
/* The run queue the worker serves now, or OVM_NO_RUNQ. */
static inline uint32_t ovm_worker_runq(ovm_sched *s, uint32_t w) {
    return atomic_load_explicit(&s->workers[w].runq, memory_order_acquire);
}
/* Whether the slice running on worker `w` should end now, for time; `used`
 * is how many reductions it has used.  The first question in a slice starts
 * its clock; the answer is yes once a quarter of the slice limit has passed
 * since (leaving the rest for the step in progress when it is asked).
 * Otherwise *next says after how many more reductions to ask again: half of
 * what should fit in the time left at the rate since the last question, 1
 * to 16, so a process whose reductions are slow (a handler doing 200 us of
 * work) asks at each one and still ends in time, and one whose reductions
 * are quick reads the clock every 16.  Reductions count messages, awaits and
 * signals, and 4,000 of them (Erlang's budget) take from about 1 ms (a
 * flood of messages) to over 50 ms (the uptime demo's connection
 * supervisor, at 16 us a message) of Python, so without this a process that
 * awaits between short steps would run past the limit; with it, only code
 * that does not get to an await can.  Wall-clock time is right here, unlike
 * for the monitor's judgement: ending a slice early blames nobody.  One
 * monotonic clock read (vDSO) per question; one per slice for most slices.
 * Only the worker's own thread calls it. */
static inline int ovm_slice_overdue(ovm_worker *w, int used, int *next) {
    int64_t now, took;
    double left;
    int done;
    *next = 16;
    if (w == NULL)
        return 0;
    now = ovm_now_ns();
    if (w->checked_since == 0) {
        w->checked_since = w->checked_last = now;
        w->checked_used = used;
        *next = 4;
        return 0;
    }
    if (now - w->checked_since >= w->yield_after_ns)
        return 1;
    took = now - w->checked_last;
    done = used - w->checked_used;
    w->checked_last = now;
    w->checked_used = used;
    if (took > 0 && done > 0) {
        /* Reductions that fit in the time left, at the latest rate. */
        left = (double)(w->yield_after_ns - (now - w->checked_since)) * done / (double)took;
        *next = left < 2 ? 1 : left > 32 ? 16 : (int)(left / 2);
    }
    return 0;
}

static inline ovm_worker *ovm_sched_worker(ovm_sched *s, uint32_t w) {
    return &s->workers[w];
}
/* Call once on the worker's own thread before it runs anything: lets the
 * monitor read its CPU clock.  Without it the monitor falls back on wall-clock
 * time for that worker.  Returns 0 or an errno value. */
int ovm_worker_register(ovm_sched *s, uint32_t w);
/* VM housekeeping begins (starting=1) or ends (0) on the calling thread:
 * work that runs inside whichever slice happens to trigger it, and costs in
 * proportion to the whole VM, not to what the process did.  Garbage
 * collection (from a gc.callbacks hook: a full collection of a big heap
 * takes tens of milliseconds) and the growth of a big process table (a
 * dict resize, 4 ms at 87,000 processes) are; a slice is not charged for
 * them.  Nests.  Costs two reads of the monotonic clock (vDSO, no system
 * call) on a worker thread, nothing on other threads. */
void ovm_housekeeping(int starting);
/* A socket send on a non-blocking socket begins (1) or ends (0) on the
 * calling thread: what it takes beyond OVM_IO_ALLOWANCE_NS is not charged
 * to the slice.  Such a call never waits, and its own work is copying at
 * most a socket buffer; on kernels built without CONFIG_IRQ_TIME_ACCOUNTING
 * the kernel also processes other connections' packets on its time,
 * milliseconds of it under load (ovm_sched.c).  Two monotonic clock reads
 * (vDSO) per send. */
void ovm_kernel_io(int starting);
/* A blocking section begins (1) or ends (0) on the calling thread: a call
 * the process makes knowing it may wait (a lock, a file, a thread's result),
 * like a call on Erlang's dirty schedulers.  Once such a section has lasted
 * OVM_BLOCKING_GRACE_NS the monitor hands the worker's run queue to a spare
 * at its next look (within a millisecond), and the section's time is not
 * charged to the slice: nothing is reported.  Nests.  Two clock reads and a
 * few atomic stores on a worker thread, nothing on other threads. */
void ovm_blocking(int starting);
/* Whether the process `pid` (as given to ovm_worker_slice_begin) is inside
 * a blocking section now; any thread.  An exit signal that kills it need
 * not wait for the call to return (the layer above ends it at once). */
int ovm_sched_in_blocking(ovm_sched *s, uint64_t pid);
/* Opens a slice for the process with id `pid` (named in incident reports). */
void ovm_worker_slice_begin(ovm_sched *s, uint32_t w, uint64_t pid);
/* Ends the slice.  Returns 1 when the monitor handed the run queue to
 * another worker meanwhile (this worker is a spare from now on), else 0. */
int ovm_worker_slice_end(ovm_sched *s, uint32_t w);

/* Reporter side.  Waits up to timeout_ns (< 0: without limit) for the next
 * incident: 1 when *out holds one, 2 when a worker slot needs a thread
 * (ovm_sched_take_start), 0 on timeout, -1 once the scheduler stops and
 * every queued incident was taken. */
int ovm_sched_next_incident(ovm_sched *s, ovm_incident *out, int64_t timeout_ns);
/* Makes the reporter's ovm_sched_next_incident return (0) now. */
void ovm_sched_poke_reporter(ovm_sched *s);
/* Incidents dropped because the reporter fell behind, since the last call. */
uint64_t ovm_sched_take_dropped(ovm_sched *s);
/* Whether the worker of `inc` is still inside the slice it is about. */
int ovm_sched_in_slice(ovm_sched *s, const ovm_incident *inc);
/* A short name for system call `nr` ("sleep", "recv", ...), or NULL. */
const char *ovm_syscall_name(long nr);

#endif
