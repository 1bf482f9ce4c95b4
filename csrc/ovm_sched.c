#include "ovm_sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static _Atomic uint64_t id_counter = 1;

uint64_t ovm_next_id(void) {
    return atomic_fetch_add_explicit(&id_counter, 1, memory_order_relaxed);
}

#define MONITOR_PERIOD_NS 1000000LL     /* 1 ms between looks at the slices */

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

int ovm_sched_init(ovm_sched *s, uint32_t nrunqs, uint32_t nworkers,
                   int64_t slice_limit_ns, int steal) {
    uint32_t i;
    int err;
    memset(s, 0, sizeof(*s));
    if (nrunqs == 0 || nworkers < nrunqs)
        return EINVAL;
    s->runqs = calloc(nrunqs, sizeof(*s->runqs));
    s->workers = calloc(nworkers, sizeof(*s->workers));
    if (s->runqs == NULL || s->workers == NULL) {
        free(s->runqs);
        free(s->workers);
        return ENOMEM;
    }
    s->nrunqs = nrunqs;
    s->nworkers = nworkers;
    s->steal = steal;
    s->slice_limit_ns = slice_limit_ns;
    if ((err = ovm_timers_init(&s->timers)) || (err = ovm_poller_init(&s->io)) ||
        (err = pthread_mutex_init(&s->lock, NULL)) ||
        (err = pthread_mutex_init(&s->mon_lock, NULL)) || (err = init_cond(&s->mon_cond)))
        return err;
    for (i = 0; i < nrunqs; i++) {
        if ((err = pthread_mutex_init(&s->runqs[i].lock, NULL)) ||
            (err = init_cond(&s->runqs[i].cond)))
            return err;
        atomic_init(&s->runqs[i].slice, 0);
    }
    for (i = 0; i < nworkers; i++) {
        if ((err = init_cond(&s->workers[i].cond)))
            return err;
        /* The first nrunqs workers each serve a run queue; the rest are spares. */
        atomic_init(&s->workers[i].runq, i < nrunqs ? i : OVM_NO_RUNQ);
    }
    atomic_init(&s->awake, (int)nrunqs);
    return 0;
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

void ovm_sched_stop(ovm_sched *s) {
    atomic_store(&s->stopping, 1);
    wake_all(s);
    ovm_poller_stop(&s->io);
    if (s->monitor_started) {
        pthread_join(s->monitor, NULL);
        s->monitor_started = 0;
    }
}

void ovm_sched_destroy(ovm_sched *s) {
    uint32_t i;
    if (s->runqs == NULL)
        return;
    for (i = 0; i < s->nrunqs; i++) {
        pthread_mutex_destroy(&s->runqs[i].lock);
        pthread_cond_destroy(&s->runqs[i].cond);
    }
    for (i = 0; i < s->nworkers; i++)
        pthread_cond_destroy(&s->workers[i].cond);
    pthread_mutex_destroy(&s->lock);
    pthread_mutex_destroy(&s->mon_lock);
    pthread_cond_destroy(&s->mon_cond);
    ovm_timers_destroy(&s->timers);
    ovm_poller_destroy(&s->io);
    free(s->runqs);
    free(s->workers);
    s->runqs = NULL;
    s->workers = NULL;
}

void ovm_runq_push(ovm_sched *s, uint32_t q, ovm_proc *p) {
    ovm_runq *rq = &s->runqs[q % s->nrunqs];
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
    pthread_mutex_unlock(&rq->lock);
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

/* Takes a process from a busy run queue other than `mine` (free-threaded
 * builds only: with a GIL, moving work between threads only adds GIL
 * hand-offs). */
static ovm_proc *steal(ovm_sched *s, uint32_t mine) {
    uint32_t k;
    for (k = 1; k < s->nrunqs; k++) {
        ovm_runq *rq = &s->runqs[(mine + k) % s->nrunqs];
        ovm_proc *p = NULL;
        pthread_mutex_lock(&rq->lock);
        if (rq->len >= 2)
            p = pop_locked(rq);
        pthread_mutex_unlock(&rq->lock);
        if (p != NULL)
            return p;
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

static void park(ovm_sched *s, ovm_worker *w) {
    pthread_mutex_lock(&s->lock);
    while (atomic_load(&w->runq) == OVM_NO_RUNQ && !atomic_load(&s->stopping))
        pthread_cond_wait(&w->cond, &s->lock);
    pthread_mutex_unlock(&s->lock);
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

int ovm_worker_next(ovm_sched *s, uint32_t wi, ovm_proc **out) {
    ovm_worker *w = &s->workers[wi];
    for (;;) {
        uint32_t q;
        ovm_runq *rq;
        int64_t deadline;
        if (atomic_load(&s->stopping))
            return OVM_NEXT_STOP;
        q = atomic_load(&w->runq);
        if (q == OVM_NO_RUNQ) {
            park(s, w);
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
            pthread_mutex_unlock(&rq->lock);
            if ((*out = steal(s, q)) != NULL)
                return OVM_NEXT_PROC;
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
        pthread_mutex_unlock(&rq->lock);
        set_awake(s, +1);
    }
}

void ovm_worker_slice_begin(ovm_sched *s, uint32_t wi) {
    ovm_worker *w = &s->workers[wi];
    ovm_runq *rq = &s->runqs[atomic_load(&w->runq)];
    uint64_t base = atomic_load(&rq->slice) & ~OVM_SLICE_LOST;
    /* Only the owner moves an even word; an odd one left behind by a rescued
     * slice counts as ended. */
    if (base & 1)
        base++;
    w->slice = base + 1;
    w->slice_start = ovm_now_ns();
    atomic_store_explicit(&rq->slice, w->slice, memory_order_release);
}

int64_t ovm_worker_slice_end(ovm_sched *s, uint32_t wi, int *lost) {
    ovm_worker *w = &s->workers[wi];
    uint32_t q = atomic_load(&w->runq);
    uint64_t expected = w->slice;
    int64_t took = ovm_now_ns() - w->slice_start;
    *lost = 0;
    if (q != OVM_NO_RUNQ &&
        atomic_compare_exchange_strong(&s->runqs[q].slice, &expected, w->slice + 1))
        return took;
    /* The monitor handed our run queue to a spare worker: become a spare. */
    *lost = 1;
    atomic_store(&w->runq, OVM_NO_RUNQ);
    return took;
}

/* Hands run queue q, stuck in slice v, to a parked worker. */
static void rescue(ovm_sched *s, uint32_t q, uint64_t v) {
    uint32_t i;
    ovm_worker *spare = NULL;
    pthread_mutex_lock(&s->lock);
    for (i = 0; i < s->nworkers && spare == NULL; i++)
        if (atomic_load(&s->workers[i].runq) == OVM_NO_RUNQ)
            spare = &s->workers[i];
    if (spare == NULL) {
        atomic_fetch_add(&s->no_spare, 1);
    } else if (atomic_compare_exchange_strong(&s->runqs[q].slice, &v, v | OVM_SLICE_LOST)) {
        atomic_store(&spare->runq, q);
        atomic_fetch_add(&s->handoffs, 1);
        pthread_cond_signal(&spare->cond);
    }
    pthread_mutex_unlock(&s->lock);
}

static void *monitor_main(void *arg) {
    ovm_sched *s = arg;
    uint64_t *seen = calloc(s->nrunqs, sizeof(*seen));
    int64_t *since = calloc(s->nrunqs, sizeof(*since));
    if (seen == NULL || since == NULL) {
        free(seen);
        free(since);
        return NULL;
    }
    pthread_mutex_lock(&s->mon_lock);
    while (!atomic_load(&s->stopping)) {
        int64_t now;
        uint32_t q;
        struct timespec ts;
        if (atomic_load(&s->awake) <= 0) {
            pthread_cond_wait(&s->mon_cond, &s->mon_lock);
            continue;
        }
        ts = to_timespec(ovm_now_ns() + MONITOR_PERIOD_NS);
        pthread_cond_timedwait(&s->mon_cond, &s->mon_lock, &ts);
        now = ovm_now_ns();
        for (q = 0; q < s->nrunqs; q++) {
            uint64_t v = atomic_load(&s->runqs[q].slice);
            if (!(v & 1) || (v & OVM_SLICE_LOST) || v != seen[q]) {
                seen[q] = v;
                since[q] = now;
            } else if (now - since[q] >= s->slice_limit_ns) {
                pthread_mutex_unlock(&s->mon_lock);
                rescue(s, q, v);
                pthread_mutex_lock(&s->mon_lock);
            }
        }
    }
    pthread_mutex_unlock(&s->mon_lock);
    free(seen);
    free(since);
    return NULL;
}

int ovm_sched_start_monitor(ovm_sched *s) {
    int err = pthread_create(&s->monitor, NULL, monitor_main, s);
    if (!err)
        s->monitor_started = 1;
    return err;
}
