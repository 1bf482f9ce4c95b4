#include "ovm_sched.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __linux__
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

static _Atomic uint64_t id_counter = 1;

uint64_t ovm_next_id(void) {
    return atomic_fetch_add_explicit(&id_counter, 1, memory_order_relaxed);
}

#define MONITOR_PERIOD_NS 1000000LL     /* 1 ms between looks at the slices */
#define DEFAULT_GIL_INTERVAL_NS 5000000LL   /* CPython's default switch interval */

static int init_cond(pthread_cond_t *cond) {
    pthread_condattr_t attr;
    int err = pthread_condattr_init(&attr);
    if (err)
        return err;
    err = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (!err)
        err = pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
    return err;
}

static struct timespec to_timespec(int64_t ns) {
    struct timespec ts;
    ts.tv_sec = ns / 1000000000LL;
    ts.tv_nsec = ns % 1000000000LL;
    return ts;
}

int ovm_sched_init(ovm_sched *s, uint32_t nrunqs, uint32_t nworkers, uint32_t max_workers,
                   int64_t slice_limit_ns, int steal) {
    uint32_t i;
    int err;
    memset(s, 0, sizeof(*s));
    if (nrunqs == 0 || nworkers < nrunqs || max_workers < nworkers)
        return EINVAL;
    s->runqs = calloc(nrunqs, sizeof(*s->runqs));
    s->workers = calloc(max_workers, sizeof(*s->workers));
    if (s->runqs == NULL || s->workers == NULL) {
        free(s->runqs);
        free(s->workers);
        return ENOMEM;
    }
    s->nrunqs = nrunqs;
    s->nworkers = max_workers;
    s->keep_spares = nworkers - nrunqs;
    atomic_init(&s->threads, nworkers);
    s->steal = steal;
    s->slice_limit_ns = slice_limit_ns;
    s->still_after_ns = 10000000000LL;
    ovm_sched_set_gil_interval(s, DEFAULT_GIL_INTERVAL_NS);
    if ((err = ovm_timers_init(&s->timers)) || (err = ovm_poller_init(&s->io)) ||
        (err = pthread_mutex_init(&s->lock, NULL)) ||
        (err = pthread_mutex_init(&s->mon_lock, NULL)) || (err = init_cond(&s->mon_cond)) ||
        (err = pthread_mutex_init(&s->rep_lock, NULL)) || (err = init_cond(&s->rep_cond)))
        return err;
    for (i = 0; i < nrunqs; i++) {
        if ((err = pthread_mutex_init(&s->runqs[i].lock, NULL)) ||
            (err = init_cond(&s->runqs[i].cond)))
            return err;
        atomic_init(&s->runqs[i].slice, 0);
    }
    for (i = 0; i < max_workers; i++) {
        if ((err = init_cond(&s->workers[i].cond)))
            return err;
        /* The first nrunqs workers each serve a run queue; the rest of the
         * first nworkers are spares; the other slots wait for a rescue. */
        atomic_init(&s->workers[i].runq, i < nrunqs ? i : OVM_NO_RUNQ);
        atomic_init(&s->workers[i].slot, i < nworkers ? OVM_SLOT_LIVE : OVM_SLOT_FREE);
        atomic_init(&s->workers[i].syscall_fd, -1);
        s->workers[i].yield_after_ns = slice_limit_ns / 4;
    }
    atomic_init(&s->awake, (int)nrunqs);
    return 0;
}

/* The wall-clock bound for a hand-over (see monitor_judge): ten slice
 * limits, and at least four GIL switch intervals, so that a slice that only
 * waits its turn for the GIL is not handed over for that alone. */
void ovm_sched_set_gil_interval(ovm_sched *s, int64_t ns) {
    int64_t hold;
    s->gil_interval_ns = ns > 0 ? ns : DEFAULT_GIL_INTERVAL_NS;
    hold = s->slice_limit_ns > INT64_MAX / 10 ? INT64_MAX : 10 * s->slice_limit_ns;
    if (hold < 4 * s->gil_interval_ns)
        hold = 4 * s->gil_interval_ns;
    s->hold_limit_ns = hold;
}

static void wake_all(ovm_sched *s) {
    uint32_t i;
    for (i = 0; i < s->nrunqs; i++) {
        pthread_mutex_lock(&s->runqs[i].lock);
        pthread_cond_broadcast(&s->runqs[i].cond);
        pthread_mutex_unlock(&s->runqs[i].lock);
    }
    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->nworkers; i++)
        pthread_cond_broadcast(&s->workers[i].cond);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&s->mon_lock);
    pthread_cond_broadcast(&s->mon_cond);
    pthread_mutex_unlock(&s->mon_lock);
}

static void close_syscall_fds(ovm_sched *s) {
    uint32_t i;
    int fd;
    for (i = 0; i < s->nworkers; i++)
        if ((fd = atomic_exchange(&s->workers[i].syscall_fd, -1)) >= 0)
            close(fd);
}

void ovm_sched_stop(ovm_sched *s) {
    atomic_store(&s->stopping, 1);
    wake_all(s);
    ovm_poller_stop(&s->io);
    if (s->monitor_started) {
        pthread_join(s->monitor, NULL);
        s->monitor_started = 0;
    }
    close_syscall_fds(s);
    /* The monitor queues nothing more: the reporter may finish once it has
     * taken what is queued. */
    pthread_mutex_lock(&s->rep_lock);
    s->monitor_done = 1;
    pthread_cond_broadcast(&s->rep_cond);
    pthread_mutex_unlock(&s->rep_lock);
}

void ovm_sched_destroy(ovm_sched *s) {
    uint32_t i;
    if (s->runqs == NULL)
        return;
    close_syscall_fds(s);   /* a worker that registered after the stop */
    for (i = 0; i < s->nrunqs; i++) {
        pthread_mutex_destroy(&s->runqs[i].lock);
        pthread_cond_destroy(&s->runqs[i].cond);
    }
    for (i = 0; i < s->nworkers; i++)
        pthread_cond_destroy(&s->workers[i].cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->mon_lock);
    pthread_cond_destroy(&s->mon_cond);
    pthread_mutex_destroy(&s->rep_lock);
    pthread_cond_destroy(&s->rep_cond);
    ovm_timers_destroy(&s->timers);
    ovm_poller_destroy(&s->io);
    free(s->runqs);
    free(s->workers);
    s->runqs = NULL;
    s->workers = NULL;
}

static void wake_thief(ovm_sched *s, uint32_t busy);

void ovm_runq_push(ovm_sched *s, uint32_t q, ovm_proc *p) {
    ovm_runq *rq = &s->runqs[q % s->nrunqs];
    int waiting;
    p->rq_next = NULL;
    pthread_mutex_lock(&rq->lock);
    if (rq->tail != NULL)
        rq->tail->rq_next = p;
    else
        rq->head = p;
    rq->tail = p;
    rq->len++;
    if (rq->sleeping)
        pthread_cond_signal(&rq->cond);
    /* More than its worker can start on now (woken or not): a sleeper of
     * another queue could take some. */
    waiting = s->steal && rq->len >= 2;
    pthread_mutex_unlock(&rq->lock);
    if (waiting)
        wake_thief(s, q % s->nrunqs);
}

/* Pops the head of rq; the caller holds rq->lock. */
static ovm_proc *pop_locked(ovm_runq *rq) {
    ovm_proc *p = rq->head;
    if (p != NULL) {
        rq->head = p->rq_next;
        if (rq->head == NULL)
            rq->tail = NULL;
        rq->len--;
        p->rq_next = NULL;
        atomic_fetch_add_explicit(&rq->taken, 1, memory_order_relaxed);
    }
    return p;
}

/* Wakes the workers sleeping on their run queue.  They look at the timers
 * and the poller after setting `sleeping` under the run queue's lock, so a
 * caller that changed either before calling this cannot be missed. */
static void wake_sleepers(ovm_sched *s) {
    uint32_t i;
    for (i = 0; i < s->nrunqs; i++) {
        ovm_runq *rq = &s->runqs[i];
        pthread_mutex_lock(&rq->lock);
        if (rq->sleeping)
            pthread_cond_signal(&rq->cond);
        pthread_mutex_unlock(&rq->lock);
    }
}

void ovm_sched_timers_changed(ovm_sched *s) {
    wake_sleepers(s);
}

static void io_ready(void *ctx) {
    wake_sleepers(ctx);
}

int ovm_sched_start_io(ovm_sched *s) {
    int err = ovm_poller_start(&s->io, io_ready, s);
    if (err == 0)
        ovm_poller_watch(&s->io, &s->awake);   /* set_awake skipped it until now */
    return err;
}

/* Wakes one worker sleeping on an idle run queue, other than `busy`, to
 * steal (free-threaded builds only: with a GIL, moving work between threads
 * only adds GIL hand-offs).  At most one such thief searches at a time, as
 * Go's spinning Ms: a burst of pushes wakes one worker, not all of them, and
 * costs one atomic load while every worker is awake. */
static void wake_thief(ovm_sched *s, uint32_t busy) {
    uint32_t k, none = 0;
    if (atomic_load_explicit(&s->awake, memory_order_relaxed) >= (int)s->nrunqs ||
        atomic_load_explicit(&s->searching, memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong(&s->searching, &none, 1))
        return;
    for (k = 1; k < s->nrunqs; k++) {
        ovm_runq *rq = &s->runqs[(busy + k) % s->nrunqs];
        pthread_mutex_lock(&rq->lock);
        if (rq->sleeping && !rq->thief) {
            rq->thief = 1;          /* its worker takes over the search count */
            pthread_cond_signal(&rq->cond);
            pthread_mutex_unlock(&rq->lock);
            atomic_fetch_add_explicit(&s->thief_wakeups, 1, memory_order_relaxed);
            return;
        }
        pthread_mutex_unlock(&rq->lock);
    }
    atomic_fetch_sub(&s->searching, 1);    /* every worker woke meanwhile */
}

/* A worker woken to steal stops searching: it found work, or found none. */
static void stop_searching(ovm_sched *s, ovm_worker *w) {
    if (w->searching) {
        w->searching = 0;
        atomic_fetch_sub(&s->searching, 1);
    }
}

/* Takes half of the processes waiting on a busy run queue other than `mine`
 * (only from a queue with two or more waiting: a lone one is likely its
 * worker's next) and queues them on `mine`; returns the first, to run now,
 * with the queue it came from (*victim) and how many are left there. */
static ovm_proc *steal(ovm_sched *s, uint32_t mine, uint32_t *victim_out, size_t *left_out) {
    uint32_t k;
    for (k = 1; k < s->nrunqs; k++) {
        uint32_t victim = (mine + k) % s->nrunqs;
        ovm_runq *rq = &s->runqs[victim], *own = &s->runqs[mine];
        ovm_proc *first, *last;
        size_t n, i, left;
        pthread_mutex_lock(&rq->lock);
        n = rq->len >= 2 ? rq->len / 2 : 0;
        first = last = rq->head;
        for (i = 1; i < n; i++)
            last = last->rq_next;
        if (n > 0) {
            rq->head = last->rq_next;
            if (rq->head == NULL)
                rq->tail = NULL;
            rq->len -= n;
            last->rq_next = NULL;
        }
        left = rq->len;
        pthread_mutex_unlock(&rq->lock);
        if (n == 0)
            continue;
        atomic_fetch_add_explicit(&s->stolen, n, memory_order_relaxed);
        atomic_fetch_add_explicit(&own->taken, 1, memory_order_relaxed);    /* `first` */
        if (n > 1) {
            pthread_mutex_lock(&own->lock);
            if (own->tail != NULL)
                own->tail->rq_next = first->rq_next;
            else
                own->head = first->rq_next;
            own->tail = last;
            own->len += n - 1;
            pthread_mutex_unlock(&own->lock);
            first->rq_next = NULL;
        }
        *victim_out = victim;
        *left_out = left;
        return first;
    }
    return NULL;
}

/* Ready I/O and runnable processes take turns, so that neither a storm of
 * socket events nor a busy run queue can starve the other.  A busy worker
 * looks for new events itself, at most every OVM_IO_LOOK_NS (see
 * ovm_poll.h for why the poll thread does not). */
static int io_turn(ovm_sched *s, ovm_worker *w) {
    if (w->io_turn_done)
        return 0;
    ovm_poller_poll(&s->io, OVM_IO_LOOK_NS);
    if (!ovm_poller_pending(&s->io))
        return 0;
    w->io_turn_done = 1;
    return 1;
}

static void set_awake(ovm_sched *s, int delta) {
    int before = atomic_fetch_add(&s->awake, delta);
    if (before == 0 && delta > 0) {
        pthread_mutex_lock(&s->mon_lock);
        pthread_cond_signal(&s->mon_cond);
        pthread_mutex_unlock(&s->mon_lock);
    }
    if (((before == 0 && delta > 0) || before + delta == 0) && ovm_poller_started(&s->io))
        ovm_poller_watch(&s->io, &s->awake);
}

static void forget_thread(ovm_worker *w);

/* A spare waits for a run queue.  Returns 1 when it retires instead: enough
 * spares are parked already (it was started for a rescue, or its slice was
 * rescued), so its slot is freed for the next rescue that finds none. */
static int park(ovm_sched *s, ovm_worker *w) {
    int retire = 0;
    pthread_mutex_lock(&s->lock);
    if (atomic_load(&w->runq) == OVM_NO_RUNQ && !atomic_load(&s->stopping) &&
        s->parked >= s->keep_spares) {
        forget_thread(w);
        atomic_store(&w->slot, OVM_SLOT_FREE);
        atomic_fetch_sub(&s->threads, 1);
        retire = 1;
    } else {
        /* Counted until a rescue picks it (which uncounts it then, so that
         * a spare parking meanwhile does not count it as still there). */
        s->parked++;
        w->parked = 1;
        while (atomic_load(&w->runq) == OVM_NO_RUNQ && !atomic_load(&s->stopping))
            pthread_cond_wait(&w->cond, &s->lock);
        if (w->parked) {
            w->parked = 0;
            s->parked--;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return retire;
}

int ovm_worker_poll(ovm_sched *s, uint32_t wi, ovm_proc **out) {
    uint32_t q = atomic_load(&s->workers[wi].runq);
    int64_t deadline;
    ovm_runq *rq;
    if (q == OVM_NO_RUNQ || atomic_load(&s->stopping))
        return OVM_NEXT_NONE;
    deadline = ovm_timers_next(&s->timers);
    if (deadline != OVM_NEVER && deadline <= ovm_now_ns())
        return OVM_NEXT_TIMERS;
    if (io_turn(s, &s->workers[wi]))
        return OVM_NEXT_IO;
    rq = &s->runqs[q];
    pthread_mutex_lock(&rq->lock);
    *out = pop_locked(rq);
    pthread_mutex_unlock(&rq->lock);
    if (*out != NULL) {
        s->workers[wi].io_turn_done = 0;
        return OVM_NEXT_PROC;
    }
    if (ovm_poller_pending(&s->io))
        return OVM_NEXT_IO;
    return OVM_NEXT_NONE;
}

/* ovm_worker_next, which also ends the search of a worker woken to steal
 * however it returns. */
static int worker_next(ovm_sched *s, ovm_worker *w, ovm_proc **out) {
    for (;;) {
        uint32_t q;
        ovm_runq *rq;
        int64_t deadline;
        if (atomic_load(&s->stopping))
            return OVM_NEXT_STOP;
        q = atomic_load(&w->runq);
        if (q == OVM_NO_RUNQ) {
            if (park(s, w))
                return OVM_NEXT_RETIRE;
            continue;
        }
        deadline = ovm_timers_next(&s->timers);
        if (deadline != OVM_NEVER && deadline <= ovm_now_ns())
            return OVM_NEXT_TIMERS;
        if (io_turn(s, w))
            return OVM_NEXT_IO;
        rq = &s->runqs[q];
        pthread_mutex_lock(&rq->lock);
        *out = pop_locked(rq);
        if (*out != NULL) {
            pthread_mutex_unlock(&rq->lock);
            w->io_turn_done = 0;
            return OVM_NEXT_PROC;
        }
        /* Nothing to run: one last look for I/O before sleeping (a
         * non-blocking epoll_wait; the poller's lock nests inside ours). */
        if (ovm_poller_pending(&s->io) || ovm_poller_poll(&s->io, 0) > 0) {
            pthread_mutex_unlock(&rq->lock);
            return OVM_NEXT_IO;
        }
        if (s->steal) {
            uint32_t victim;
            size_t left;
            pthread_mutex_unlock(&rq->lock);
            if ((*out = steal(s, q, &victim, &left)) != NULL) {
                w->io_turn_done = 0;
                /* Work is left there: the next sleeper joins in. */
                stop_searching(s, w);
                if (left >= 2)
                    wake_thief(s, victim);
                return OVM_NEXT_PROC;
            }
            stop_searching(s, w);       /* before sleeping: the next push may wake another */
            pthread_mutex_lock(&rq->lock);
            if (rq->head != NULL) {
                pthread_mutex_unlock(&rq->lock);
                continue;
            }
        }
        /* Idle: sleep until a push, the next timer, ready I/O or stop. */
        rq->sleeping = 1;
        set_awake(s, -1);
        if (!atomic_load(&s->stopping) && !ovm_poller_pending(&s->io)) {
            deadline = ovm_timers_next(&s->timers);
            if (deadline == OVM_NEVER) {
                pthread_cond_wait(&rq->cond, &rq->lock);
            } else {
                struct timespec ts = to_timespec(deadline);
                pthread_cond_timedwait(&rq->cond, &rq->lock, &ts);
            }
        }
        rq->sleeping = 0;
        if (rq->thief) {
            rq->thief = 0;
            w->searching = 1;
        }
        pthread_mutex_unlock(&rq->lock);
        set_awake(s, +1);
    }
}

int ovm_worker_next(ovm_sched *s, uint32_t wi, ovm_proc **out) {
    ovm_worker *w = &s->workers[wi];
    int next = worker_next(s, w, out);
    stop_searching(s, w);
    return next;
}

/* The worker the calling thread is, for ovm_housekeeping. */
static _Thread_local ovm_worker *this_worker;
/* Housekeeping in progress, on any thread. */
static _Atomic int house_running;

int ovm_worker_register(ovm_sched *s, uint32_t wi) {
    ovm_worker *w = &s->workers[wi];
    int err = pthread_getcpuclockid(pthread_self(), &w->cpu_clock);
    if (err)
        return err;
#ifdef __linux__
    {
        char path[64];
        int fd;
        w->tid = (int32_t)syscall(SYS_gettid);
        snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)w->tid);
        fd = open(path, O_RDONLY | O_CLOEXEC);  /* -1 without /proc: judged without */
        if (fd >= 0 && (fd = atomic_exchange(&w->syscall_fd, fd)) >= 0)
            close(fd);
        /* A thread that starts only once the VM stops (a short-lived VM)
         * must not leave its file open: ovm_sched_stop may have closed the
         * others before this one was stored. */
        if (atomic_load(&s->stopping) && (fd = atomic_exchange(&w->syscall_fd, -1)) >= 0)
            close(fd);
    }
#endif
    this_worker = w;
    atomic_store_explicit(&w->registered, 1, memory_order_release);
    return 0;
}

/* The worker's thread retires: the monitor stops reading its clock and
 * its /proc file, and a thread started later for the slot registers anew. */
static void forget_thread(ovm_worker *w) {
    int fd;
    atomic_store_explicit(&w->registered, 0, memory_order_release);
    if ((fd = atomic_exchange(&w->syscall_fd, -1)) >= 0)
        close(fd);
    this_worker = NULL;
}

/* Timed with the monotonic clock, not the CPU clock (a system call): the
 * work is CPU-bound, and a thread descheduled meanwhile is excused for a
 * little more than it used, which errs towards not blaming.  Only the part
 * beyond `allowance` is excused. */
static void excuse_begin(int64_t allowance) {
    ovm_worker *w = this_worker;
    if (w != NULL && w->house_depth++ == 0) {
        atomic_store(&w->house_allow_ns, allowance);
        atomic_store(&w->house_since_ns, ovm_now_ns());
    }
}

static void excuse_end(void) {
    ovm_worker *w = this_worker;
    if (w != NULL && w->house_depth > 0 && --w->house_depth == 0) {
        int64_t took = ovm_now_ns() - atomic_load(&w->house_since_ns) -
                       atomic_load(&w->house_allow_ns);
        /* Added before the start is cleared: a monitor that reads them in
         * the other order (worker_house_ns) never undercounts. */
        if (took > 0)
            atomic_fetch_add(&w->house_ns, took);
        atomic_store(&w->house_since_ns, 0);
    }
}

void ovm_housekeeping(int starting) {
    if (starting) {
        atomic_fetch_add(&house_running, 1);
        excuse_begin(0);
        return;
    }
    excuse_end();
    if (atomic_fetch_sub(&house_running, 1) <= 0)
        atomic_fetch_add(&house_running, 1);    /* the hook came in mid-collection */
}

void ovm_kernel_io(int starting) {
    if (starting)
        excuse_begin(OVM_IO_ALLOWANCE_NS);
    else
        excuse_end();
}

void ovm_blocking(int starting) {
    ovm_worker *w = this_worker;
    if (w == NULL)
        return;                 /* not a worker: nothing to hand over */
    if (starting) {
        if (atomic_fetch_add(&w->blocking, 1) == 0)
            atomic_store(&w->blocking_since_ns, ovm_now_ns());
    } else if (atomic_load(&w->blocking) > 0 && atomic_fetch_sub(&w->blocking, 1) == 1) {
        atomic_store(&w->blocking_since_ns, 0);
    }
}

int ovm_sched_in_blocking(ovm_sched *s, uint64_t pid) {
    uint32_t i;
    for (i = 0; i < s->nworkers; i++)
        if (atomic_load(&s->workers[i].blocking) > 0 &&
            atomic_load_explicit(&s->workers[i].pid, memory_order_acquire) == pid)
            return 1;
    return 0;
}

/* The hot path: a slice can be a few hundred nanoseconds, so this reads no
 * clock (the monitor times slices with the worker's CPU clock, from its own
 * thread).  The process id is stored before the slice word, with release, so
 * that a monitor that saw the word also sees whose slice it is. */
void ovm_worker_slice_begin(ovm_sched *s, uint32_t wi, uint64_t pid) {
    ovm_worker *w = &s->workers[wi];
    ovm_runq *rq = &s->runqs[atomic_load(&w->runq)];
    uint64_t base = atomic_load(&rq->slice) & ~OVM_SLICE_LOST;
    /* Only the owner moves an even word; an odd one left behind by a rescued
     * slice counts as ended. */
    if (base & 1)
        base++;
    w->slice = base + 1;
    w->checked_since = 0;
    atomic_store_explicit(&w->pid, pid, memory_order_release);
    atomic_store_explicit(&rq->slice, w->slice, memory_order_release);
}

int ovm_worker_slice_end(ovm_sched *s, uint32_t wi) {
    ovm_worker *w = &s->workers[wi];
    uint32_t q = atomic_load(&w->runq);
    uint64_t expected = w->slice;
    if (q != OVM_NO_RUNQ &&
        atomic_compare_exchange_strong(&s->runqs[q].slice, &expected, w->slice + 1))
        return 0;
    /* The monitor handed our run queue to a spare worker: become a spare.
     * Clearing `stuck` tells the monitor (and the reporter) that the slice
     * it took the queue from is over. */
    atomic_store(&w->stuck, 0);
    atomic_store(&w->runq, OVM_NO_RUNQ);
    return 1;
}

/* ------------------------------------------------------------------------
 * The monitor.
 *
 * Every millisecond (while some worker is awake) it looks at each run
 * queue's slice word and at the worker running that slice:
 *
 *   CPU time.  It reads the worker's CPU clock when it first sees a slice
 *   and on every later look at the same slice; the difference is CPU time
 *   the slice used (from first sight: up to one period of it goes uncounted,
 *   so a slice is judged at most a millisecond late and never early).  A
 *   reading counts only if the slice still ran after it was taken: the
 *   monitor may be descheduled between seeing a slice and reading the
 *   clock, while the worker goes on to others.
 *
 *   Blocked time.  When the CPU clock moved by less than the time between
 *   two looks, the thread was off the CPU for the rest, for one of three
 *   reasons: it waited for the GIL, the OS gave its CPU to another thread,
 *   or the process called something that blocks without awaiting.  Only the
 *   last is the process's doing.  The monitor asks the kernel which system
 *   call the thread sits in (/proc/self/task/TID/syscall): "running" means
 *   on a CPU or waiting for one (the OS's doing: not charged); a futex wait
 *   is how both the GIL and Python's locks wait, and CPython's GIL wait wakes
 *   up every switch interval, so a futex wait is charged only once the CPU
 *   clock has not moved for three switch intervals (then it is a lock, a
 *   queue, an event: the process's own wait); any other call (a sleep, a
 *   recv, a select...) is charged for the off-CPU time.  That charge is
 *   exact when the CPU clock did not move at all since the last look: a
 *   thread that did not run cannot have entered a new call, so it sat in the
 *   call it is found in all along.  Otherwise at most one period is charged.
 *   Without /proc (not Linux) every wait is judged like a futex wait.
 *
 *   Housekeeping.  CPython collects garbage in whichever slice allocates
 *   when a threshold is crossed (a full collection with the ring demo's
 *   100,000 processes takes 48 ms), and the process table grows in
 *   whichever spawn fills it (4 ms at 87,000 processes): the VM's cost, not
 *   the process's.  The worker marks such work (ovm_housekeeping) and the
 *   monitor subtracts its duration; while any runs, futex waits are not
 *   charged (a free-threaded build stops the world to collect, and a big
 *   dict's resize holds its lock).  Likewise what a socket send takes
 *   beyond 0.1 ms (ovm_kernel_io): on kernels built without
 *   CONFIG_IRQ_TIME_ACCOUNTING the kernel processes network packets on the
 *   time of whichever thread runs (up to netdev_budget_usecs, 2 to 8 ms, at
 *   a time), mostly inside a send on loopback, and those are other
 *   connections' packets.  The uptime demo showed it: its connection
 *   processes, whose Python takes under 1 ms a slice, were charged 2-9 ms
 *   inside sock.send unless the load generator ran on another CPU.  Time off
 *   the CPU inside either is not charged as blocked: such a call never
 *   waits, so the thread was preempted (an accept storm on a busy machine
 *   had acceptors charged 2 ms "blocked in accept4").
 *
 *   Blocking sections.  A process that calls something it knows may wait
 *   says so (ovm_blocking; otpvm.blocking() in Python): once the section has
 *   lasted OVM_BLOCKING_GRACE_NS the monitor hands the run queue over at its
 *   next look, without judging, and the looks that find the worker inside
 *   the section count neither its CPU nor its wall-clock time.  Erlang runs
 *   such calls on dirty schedulers; here the worker itself becomes the
 *   dirty one, and a spare takes its run queue.
 *
 *   (A process that awaits between short steps ends its slice by itself
 *   after a quarter of the limit: ovm_slice_overdue in ovm_sched.h.  What the
 *   monitor finds overrunning is code that does not get to an await.)
 *
 *   Overrun.  A slice whose CPU time plus blocked time reaches slice_limit
 *   overran: the monitor hands its run queue to a parked worker and queues
 *   one incident (RUNNING or BLOCKED, whichever share is larger).  A worker
 *   whose CPU clock cannot be read is judged by wall-clock time instead.
 *
 *   Hold.  A slice that has held its run queue for hold_limit of wall-clock
 *   time (10 slice limits, at least 4 switch intervals) loses the queue too,
 *   whatever the reason, but is not reported unless it overruns: the other
 *   processes should not wait that long for anything, even the GIL or an
 *   overloaded machine, and a spare worker costs only a wake-up.
 *
 * A rescued slice stays watched until it ends (the monitor keeps ticking for
 * it even when every other worker sleeps): a slice handed over for holding
 * may still overrun and be reported, a reported one gets OVM_LS_STILL after
 * 10 s, 100 s, ... and OVM_LS_END when it is over.  The monitor keeps its
 * own view of each worker's slice (watch) and of who serves each run queue
 * (owner); nothing here blocks on the layer above.
 * ------------------------------------------------------------------------ */

#define SC_RUNNING (-2L)                  /* on a CPU, or waiting for one */
#define SC_UNKNOWN (-3L)                  /* /proc cannot tell */

typedef struct {
    uint64_t slice;             /* the run queue word of the slice; 0: none */
    uint32_t runq;
    int rescued;                /* its run queue was handed to a spare */
    int reported;               /* an incident was queued */
    uint64_t pid;
    int64_t first_seen, last_seen;  /* monotonic clock at the first and last look
                                       (first_seen moved on past blocking sections) */
    int64_t cpu0, cpu;          /* the worker's CPU clock then; -1: unreadable */
    int64_t house0, house;      /* its housekeeping time by then */
    int64_t cpu_moved;          /* when its CPU clock was last seen moving */
    int64_t futex_ns;           /* off-CPU time in a futex wait, not charged yet */
    int64_t blocked_ns;         /* time charged as blocked in a call */
    long syscall;               /* the call it was last charged for, or -1 */
    int64_t next_still;         /* age of the next OVM_LS_STILL */
} watch;

typedef struct {
    ovm_sched *s;
    uint32_t *owner;            /* run queue -> the worker whose slices it runs */
    watch *watches;             /* worker -> the slice it runs */
    uint32_t stuck;             /* open watches of rescued slices */
} monitor;

static int64_t worker_cpu_ns(ovm_worker *w) {
    struct timespec ts;
    if (!atomic_load_explicit(&w->registered, memory_order_acquire) ||
        clock_gettime(w->cpu_clock, &ts) != 0)
        return -1;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The worker's housekeeping time until `now`.  The start is read before the
 * total: either order of events then errs towards excusing more, never
 * towards blaming a slice for housekeeping. */
static int64_t worker_house_ns(ovm_worker *w, int64_t now) {
    int64_t since = atomic_load(&w->house_since_ns);
    int64_t allow = atomic_load(&w->house_allow_ns);
    int64_t total = atomic_load(&w->house_ns);
    return total + (since > 0 && now - since > allow ? now - since - allow : 0);
}

/* The system call the worker's thread is blocked in: its number, -1 when
 * it is blocked outside any (a page fault), SC_RUNNING, or SC_UNKNOWN.
 * The worker opened the file when it registered: reading it again from
 * offset 0 makes the kernel describe the thread anew, and the monitor opens
 * no descriptor of its own, which a program listing its descriptors (a
 * leak check) would see come and go. */
static long worker_syscall(ovm_worker *w) {
#ifdef __linux__
    char buf[32];
    ssize_t n;
    int fd = atomic_load(&w->syscall_fd);
    if (fd < 0)
        return SC_UNKNOWN;
    n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return SC_UNKNOWN;
    buf[n] = '\0';
    if (strncmp(buf, "running", 7) == 0)
        return SC_RUNNING;
    return strtol(buf, NULL, 10);
#else
    (void)w;
    return SC_UNKNOWN;
#endif
}

static int is_futex(long nr) {
#ifdef SYS_futex
    if (nr == SYS_futex)
        return 1;
#endif
#ifdef SYS_futex_time64
    if (nr == SYS_futex_time64)
        return 1;
#endif
#ifdef SYS_futex_waitv
    if (nr == SYS_futex_waitv)
        return 1;
#endif
    (void)nr;
    return 0;
}

/* Charges the watched slice for `off`, the off-CPU part of the time since
 * the last look, if the thread sits in a call of its own (see above).
 * `still`: its CPU clock did not move at all meanwhile. */
static void charge_blocked(ovm_sched *s, watch *ws, ovm_worker *w, int64_t now, int64_t off,
                           int still) {
    long sc;
    if (atomic_load(&w->house_since_ns) > 0) {
        /* Inside housekeeping or a non-blocking socket call (ovm_kernel_io):
         * off the CPU there means preempted by the OS, not waiting by
         * choice (an accept4 storm on a busy machine showed it). */
        ws->futex_ns = 0;
        return;
    }
    sc = worker_syscall(w);
    if (sc == SC_RUNNING || sc == -1)
        return;
    if (!still && off > MONITOR_PERIOD_NS)
        off = MONITOR_PERIOD_NS;
    if (sc == SC_UNKNOWN || is_futex(sc)) {
        if (atomic_load(&house_running) > 0) {
            /* Housekeeping may be what it waits for (the GIL or a dict lock
             * it holds, a free-threaded build's stop-the-world pause). */
            ws->futex_ns = 0;
            return;
        }
        ws->futex_ns += off;
        if (now - ws->cpu_moved < 3 * s->gil_interval_ns)
            return;                     /* could be the GIL: not yet */
        off = ws->futex_ns;
        ws->futex_ns = 0;
    }
    ws->blocked_ns += off;
    ws->syscall = sc == SC_UNKNOWN ? -1 : sc;
}

/* CPU time the watched slice used, less housekeeping. */
static int64_t own_cpu(const watch *ws) {
    int64_t used = (ws->cpu - ws->cpu0) - (ws->house - ws->house0);
    return used > 0 ? used : 0;
}

static void push_incident(ovm_sched *s, const ovm_incident *inc) {
    pthread_mutex_lock(&s->rep_lock);
    if (s->inc_len == OVM_INCIDENTS) {
        atomic_fetch_add(&s->inc_dropped, 1);
    } else {
        s->incidents[(s->inc_head + s->inc_len) % OVM_INCIDENTS] = *inc;
        s->inc_len++;
        pthread_cond_signal(&s->rep_cond);
    }
    pthread_mutex_unlock(&s->rep_lock);
}

static void queue_incident(monitor *m, uint32_t wi, int kind, int64_t now, uint64_t queued) {
    watch *ws = &m->watches[wi];
    ovm_incident inc;
    memset(&inc, 0, sizeof(inc));
    inc.kind = kind;
    inc.worker = wi;
    inc.runq = ws->runq;
    inc.slice = ws->slice;
    inc.pid = ws->pid;
    inc.wall_ns = now - ws->first_seen;
    inc.cpu_ns = ws->cpu0 >= 0 ? own_cpu(ws) : -1;
    inc.house_ns = ws->house - ws->house0;
    inc.blocked_ns = ws->blocked_ns;
    inc.syscall = ws->syscall;
    inc.handed_over = ws->rescued;
    inc.queued = queued;
    push_incident(m->s, &inc);
}

/* A worker to hand a run queue to, with s->lock held: a live spare (parked,
 * or about to park), else a free slot (*fresh is set: it needs a thread),
 * else OVM_NO_RUNQ (every slot is taken: max_workers). */
static uint32_t find_spare(ovm_sched *s, int *fresh) {
    uint32_t i, free_slot = OVM_NO_RUNQ;
    *fresh = 0;
    for (i = 0; i < s->nworkers; i++) {
        int slot = atomic_load(&s->workers[i].slot);
        if (slot == OVM_SLOT_LIVE && atomic_load(&s->workers[i].runq) == OVM_NO_RUNQ)
            return i;
        if (slot == OVM_SLOT_FREE && free_slot == OVM_NO_RUNQ)
            free_slot = i;
    }
    *fresh = free_slot != OVM_NO_RUNQ;
    return free_slot;
}

/* Asks the reporter thread to start a thread for slot `wi`. */
static void request_thread(ovm_sched *s, uint32_t wi) {
    atomic_store(&s->workers[wi].slot, OVM_SLOT_STARTING);
    atomic_fetch_add(&s->threads, 1);
    pthread_mutex_lock(&s->rep_lock);
    atomic_fetch_add(&s->start_requests, 1);
    pthread_cond_signal(&s->rep_cond);
    pthread_mutex_unlock(&s->rep_lock);
}

int ovm_sched_take_start(ovm_sched *s) {
    uint32_t i;
    for (i = 0; i < s->nworkers; i++) {
        int expected = OVM_SLOT_STARTING;
        if (atomic_compare_exchange_strong(&s->workers[i].slot, &expected, OVM_SLOT_LIVE)) {
            atomic_fetch_sub(&s->start_requests, 1);
            return (int)i;
        }
    }
    return -1;
}

/* Hands run queue q, in slice v on its owner, to a spare worker, or to a
 * new thread when none is parked.  Returns 1 when it did (0: the slice
 * ended meanwhile, or every worker slot is taken). */
static int rescue(monitor *m, uint32_t q, uint64_t v) {
    ovm_sched *s = m->s;
    ovm_worker *from = &s->workers[m->owner[q]];
    uint32_t spare;
    int done = 0, fresh;
    pthread_mutex_lock(&s->lock);
    spare = find_spare(s, &fresh);
    if (spare == OVM_NO_RUNQ) {
        atomic_fetch_add(&s->no_spare, 1);
    } else {
        /* Set before the hand-off can be seen, so that the stuck worker's
         * clear (after its compare-and-swap fails) comes after it. */
        atomic_store(&from->stuck, v | OVM_SLICE_LOST);
        if (atomic_compare_exchange_strong(&s->runqs[q].slice, &v, v | OVM_SLICE_LOST)) {
            atomic_store(&s->workers[spare].runq, q);
            if (s->workers[spare].parked) {
                s->workers[spare].parked = 0;
                s->parked--;
            }
            atomic_fetch_add(&s->handoffs, 1);
            if (fresh)
                request_thread(s, spare);
            else
                pthread_cond_signal(&s->workers[spare].cond);
            m->owner[q] = spare;
            done = 1;
        } else {
            atomic_store(&from->stuck, 0);      /* it ended in time */
        }
    }
    pthread_mutex_unlock(&s->lock);
    return done;
}

static uint64_t runq_len(ovm_runq *rq) {
    uint64_t n;
    pthread_mutex_lock(&rq->lock);
    n = rq->len;
    pthread_mutex_unlock(&rq->lock);
    return n;
}

static void open_watch(monitor *m, uint32_t wi, uint32_t q, uint64_t v, int64_t now) {
    watch *ws = &m->watches[wi];
    memset(ws, 0, sizeof(*ws));
    ws->slice = v;
    ws->runq = q;
    ws->pid = atomic_load_explicit(&m->s->workers[wi].pid, memory_order_acquire);
    ws->first_seen = ws->last_seen = ws->cpu_moved = now;
    ws->cpu0 = ws->cpu = worker_cpu_ns(&m->s->workers[wi]);
    /* Until `now`, before the CPU clock was read: a reading that contains
     * more housekeeping than this only excuses more later. */
    ws->house0 = ws->house = worker_house_ns(&m->s->workers[wi], now);
    ws->syscall = -1;
}

static void close_watch(monitor *m, uint32_t wi, int64_t now) {
    watch *ws = &m->watches[wi];
    if (ws->reported)
        queue_incident(m, wi, OVM_LS_END, now, 0);
    if (ws->rescued)
        m->stuck--;
    ws->slice = 0;
}

/* Whether worker wi is still in the slice its watch is about. */
static int still_in_slice(ovm_sched *s, const watch *ws, uint32_t wi) {
    if (ws->rescued)
        return atomic_load(&s->workers[wi].stuck) == (ws->slice | OVM_SLICE_LOST);
    return atomic_load(&s->runqs[ws->runq].slice) == ws->slice;
}

/* A look that finds the worker in a blocking section (ovm_blocking): the
 * time since the last look is not the slice's (neither its CPU time nor its
 * wall-clock time), so the watch moves its starting points by as much.
 * What the slice did before the section, and does after it, still counts;
 * the part of one period just before the section is forgiven with it. */
static void skip_blocking_section(watch *ws, ovm_worker *w, int64_t now) {
    int64_t house = worker_house_ns(w, now);
    if (ws->cpu0 >= 0) {
        int64_t cpu = worker_cpu_ns(w);
        if (cpu >= 0) {
            ws->cpu0 += cpu - ws->cpu;
            ws->cpu = cpu;
        }
    }
    ws->house0 += house - ws->house;
    ws->house = house;
    ws->first_seen += now - ws->last_seen;
    ws->last_seen = ws->cpu_moved = now;
    ws->futex_ns = 0;
}

/* Another look at the slice worker wi runs (see the rules above). */
static void monitor_judge(monitor *m, uint32_t wi, int64_t now) {
    ovm_sched *s = m->s;
    watch *ws = &m->watches[wi];
    ovm_worker *w = &s->workers[wi];
    int64_t since = now - ws->last_seen, used, wall = now - ws->first_seen;
    int kind = 0;
    if (since <= 0)
        return;                         /* looked at already in this tick */
    if (atomic_load(&w->blocking) > 0) {
        skip_blocking_section(ws, w, now);
        return;
    }
    ws->last_seen = now;
    if (ws->cpu0 >= 0) {
        int64_t cpu = worker_cpu_ns(w), step;
        if (cpu < 0)
            return;                     /* the thread is gone (stopping) */
        /* The reading counts only if the slice was still running after it:
         * this thread may have been descheduled since it saw the slice
         * word, while the worker went on to other slices. */
        if (!still_in_slice(m->s, ws, wi))
            return;
        step = cpu - ws->cpu;
        ws->cpu = cpu;
        /* Housekeeping until a moment after the CPU clock was read (this
         * thread may have been descheduled since `now`): excusing more,
         * never less, than the reading contains. */
        ws->house = worker_house_ns(w, ovm_now_ns());
        if (step > 0) {
            ws->cpu_moved = now;
            ws->futex_ns = 0;
        }
        if (!ws->reported && since - step > 0)
            charge_blocked(s, ws, w, now, since - step, step == 0);
        used = own_cpu(ws);
    } else {
        used = wall;                    /* no CPU clock: wall-clock judgement */
    }
    if (!ws->reported) {
        uint64_t queued = 0;
        if (used + ws->blocked_ns >= s->slice_limit_ns) {
            kind = used >= ws->blocked_ns ? OVM_LS_RUNNING : OVM_LS_BLOCKED;
            queued = runq_len(&s->runqs[ws->runq]);
        }
        if (!ws->rescued && (kind || wall >= s->hold_limit_ns) && rescue(m, ws->runq, ws->slice)) {
            ws->rescued = 1;
            m->stuck++;
        }
        if (kind) {
            ws->reported = 1;
            ws->next_still = s->still_after_ns;
            atomic_fetch_add(&s->overruns, 1);
            queue_incident(m, wi, kind, now, queued);
        }
        return;
    }
    if (!ws->rescued && rescue(m, ws->runq, ws->slice)) {   /* no spare was free before */
        ws->rescued = 1;
        m->stuck++;
    }
    if (wall >= ws->next_still) {
        queue_incident(m, wi, OVM_LS_STILL, now, 0);
        ws->next_still = ws->next_still > INT64_MAX / 10 ? INT64_MAX : ws->next_still * 10;
    }
}

/* Whether the worker has been in a blocking section for the grace time
 * (ovm_blocking): its run queue goes to a spare at once, unreported. */
static int in_blocking_section(ovm_worker *w, int64_t now) {
    int64_t since = atomic_load(&w->blocking_since_ns);
    return since > 0 && now - since >= OVM_BLOCKING_GRACE_NS;
}

static void monitor_tick(monitor *m, int64_t now) {
    ovm_sched *s = m->s;
    uint32_t q, wi;
    for (q = 0; q < s->nrunqs; q++) {
        uint64_t v = atomic_load(&s->runqs[q].slice);
        watch *ws;
        wi = m->owner[q];
        ws = &m->watches[wi];
        if (!(v & 1) || (v & OVM_SLICE_LOST)) {
            if (ws->slice != 0 && !ws->rescued)
                close_watch(m, wi, now);        /* ended since the last look */
        } else if (ws->slice != v) {
            if (ws->slice != 0)
                close_watch(m, wi, now);
            open_watch(m, wi, q, v, now);
        } else {
            monitor_judge(m, wi, now);
        }
        if (ws->slice == v && !ws->rescued && in_blocking_section(&s->workers[wi], now) &&
            rescue(m, q, v)) {
            ws->rescued = 1;
            m->stuck++;
        }
    }
    /* Rescued slices: their workers no longer own a run queue. */
    for (wi = 0; m->stuck > 0 && wi < s->nworkers; wi++) {
        watch *ws = &m->watches[wi];
        if (ws->slice == 0 || !ws->rescued)
            continue;
        if (atomic_load(&s->workers[wi].stuck) != (ws->slice | OVM_SLICE_LOST))
            close_watch(m, wi, now);
        else
            monitor_judge(m, wi, now);
    }
}

static void *monitor_main(void *arg) {
    ovm_sched *s = arg;
    monitor m;
    uint32_t q;
    m.s = s;
    m.stuck = 0;
    m.owner = calloc(s->nrunqs, sizeof(*m.owner));
    m.watches = calloc(s->nworkers, sizeof(*m.watches));
    if (m.owner == NULL || m.watches == NULL) {
        free(m.owner);
        free(m.watches);
        return NULL;
    }
    for (q = 0; q < s->nrunqs; q++)
        m.owner[q] = q;             /* the first nrunqs workers serve them */
    for (;;) {
        struct timespec ts;
        pthread_mutex_lock(&s->mon_lock);
        while (!atomic_load(&s->stopping) && atomic_load(&s->awake) <= 0 && m.stuck == 0)
            pthread_cond_wait(&s->mon_cond, &s->mon_lock);
        if (!atomic_load(&s->stopping)) {
            ts = to_timespec(ovm_now_ns() + MONITOR_PERIOD_NS);
            pthread_cond_timedwait(&s->mon_cond, &s->mon_lock, &ts);
        }
        pthread_mutex_unlock(&s->mon_lock);
        if (atomic_load(&s->stopping))
            break;
        /* No lock held: rescue() takes s->lock, runq_len() a run queue's. */
        monitor_tick(&m, ovm_now_ns());
    }
    free(m.owner);
    free(m.watches);
    return NULL;
}

int ovm_sched_start_monitor(ovm_sched *s) {
    int err = pthread_create(&s->monitor, NULL, monitor_main, s);
    if (!err)
        s->monitor_started = 1;
    return err;
}

/* ---- the reporter's side ---------------------------------------------- */

int ovm_sched_next_incident(ovm_sched *s, ovm_incident *out, int64_t timeout_ns) {
    int64_t deadline = timeout_ns >= 0 ? ovm_now_ns() + timeout_ns : -1;
    int got = 0;
    pthread_mutex_lock(&s->rep_lock);
    for (;;) {
        if (atomic_load(&s->start_requests) > 0 && !atomic_load(&s->stopping)) {
            got = 2;
            break;
        }
        if (s->poked) {
            s->poked = 0;
            break;
        }
        if (s->inc_len > 0) {
            *out = s->incidents[s->inc_head];
            s->inc_head = (s->inc_head + 1) % OVM_INCIDENTS;
            s->inc_len--;
            got = 1;
            break;
        }
        if (s->monitor_done) {
            got = -1;
            break;
        }
        if (deadline < 0) {
            pthread_cond_wait(&s->rep_cond, &s->rep_lock);
        } else {
            struct timespec ts;
            if (ovm_now_ns() >= deadline)
                break;
            ts = to_timespec(deadline);
            pthread_cond_timedwait(&s->rep_cond, &s->rep_lock, &ts);
        }
    }
    pthread_mutex_unlock(&s->rep_lock);
    return got;
}

void ovm_sched_poke_reporter(ovm_sched *s) {
    pthread_mutex_lock(&s->rep_lock);
    s->poked = 1;
    pthread_cond_signal(&s->rep_cond);
    pthread_mutex_unlock(&s->rep_lock);
}

uint64_t ovm_sched_take_dropped(ovm_sched *s) {
    return atomic_exchange(&s->inc_dropped, 0);
}

int ovm_sched_in_slice(ovm_sched *s, const ovm_incident *inc) {
    return atomic_load(&s->runqs[inc->runq].slice) == inc->slice ||
           atomic_load(&s->workers[inc->worker].stuck) == (inc->slice | OVM_SLICE_LOST);
}

const char *ovm_syscall_name(long nr) {
#define NAME(sys)                                                            \
    if (nr == SYS_##sys)                                                     \
        return #sys;
#ifdef __linux__
#ifdef SYS_nanosleep
    NAME(nanosleep)
#endif
#ifdef SYS_clock_nanosleep
    NAME(clock_nanosleep)
#endif
#ifdef SYS_read
    NAME(read)
#endif
#ifdef SYS_readv
    NAME(readv)
#endif
#ifdef SYS_pread64
    NAME(pread64)
#endif
#ifdef SYS_write
    NAME(write)
#endif
#ifdef SYS_writev
    NAME(writev)
#endif
#ifdef SYS_recvfrom
    NAME(recvfrom)
#endif
#ifdef SYS_recvmsg
    NAME(recvmsg)
#endif
#ifdef SYS_sendto
    NAME(sendto)
#endif
#ifdef SYS_sendmsg
    NAME(sendmsg)
#endif
#ifdef SYS_connect
    NAME(connect)
#endif
#ifdef SYS_accept
    NAME(accept)
#endif
#ifdef SYS_accept4
    NAME(accept4)
#endif
#ifdef SYS_poll
    NAME(poll)
#endif
#ifdef SYS_ppoll
    NAME(ppoll)
#endif
#ifdef SYS_select
    NAME(select)
#endif
#ifdef SYS_pselect6
    NAME(pselect6)
#endif
#ifdef SYS_epoll_wait
    NAME(epoll_wait)
#endif
#ifdef SYS_epoll_pwait
    NAME(epoll_pwait)
#endif
#ifdef SYS_futex
    NAME(futex)
#endif
#ifdef SYS_wait4
    NAME(wait4)
#endif
#ifdef SYS_waitid
    NAME(waitid)
#endif
#ifdef SYS_flock
    NAME(flock)
#endif
#ifdef SYS_fcntl
    NAME(fcntl)
#endif
#ifdef SYS_openat
    NAME(openat)
#endif
#ifdef SYS_fsync
    NAME(fsync)
#endif
#ifdef SYS_pause
    NAME(pause)
#endif
#ifdef SYS_rt_sigtimedwait
    NAME(rt_sigtimedwait)
#endif
#endif
#undef NAME
    (void)nr;
    return NULL;
}
