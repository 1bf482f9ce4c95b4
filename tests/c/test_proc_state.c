/* Tests of csrc/ovm_proc.h: the atomic process state word.
 *
 * Many "waker" threads send a message (bump a counter) and call
 * ovm_proc_wake(), pushing the process onto a run queue when it says so,
 * while "scheduler" threads run the begin / look / try_wait / requeue
 * protocol.  Checked:
 *   - the process is never in the run queue twice, never run by two
 *     schedulers at once, and is always pushed with RUNQ set;
 *   - no wake is lost: the wakers work in rounds; after each round, once the
 *     process is waiting (state 0, not queued) and no waker is active, nobody
 *     can ever wake it again, so the last value of the message counter a
 *     scheduler observed before try_wait succeeded must equal the number of
 *     messages sent.  A lost wake shows up as a waiting process with unread
 *     messages;
 *   - runs == pushes (each push, by a waker or by a requeue, is run once);
 *   - exit: wakes are ignored afterwards and begin refuses to run it. */
#include "test_util.h"

#include <sched.h>
#include <string.h>

#include "ovm_proc.h"

#ifndef NWAKERS
#define NWAKERS 8
#endif

typedef struct {
    ovm_proc p;
    _Atomic uint64_t sent;      /* messages sent (bumped before each wake) */
    _Atomic uint64_t consumed;  /* last `sent` value a scheduler looked at */
    _Atomic int queued;         /* in our run queue */
    _Atomic int running;        /* a scheduler is between begin and wait/requeue */
    _Atomic uint64_t wake_pushes, requeues, runs, waits, refused;
    _Atomic int exited;         /* set after ovm_proc_exit() returned */
} tproc;

/* A run queue for one process: a counter under a mutex. */
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int count;
    int stop;
} runq;

static void rq_init(runq *q) {
    CHECK_EQ(pthread_mutex_init(&q->lock, NULL), 0);
    CHECK_EQ(pthread_cond_init(&q->cond, NULL), 0);
    q->count = 0;
    q->stop = 0;
}

static void rq_destroy(runq *q) {
    pthread_mutex_destroy(&q->lock);
    pthread_cond_destroy(&q->cond);
}

static void rq_push(runq *q, tproc *t) {
    uint32_t st = atomic_load(&t->p.state);
    CHECKF((st & OVM_RUNQ) && !(st & OVM_RUNNING), "pushed with state %#x", st);
    CHECKF(atomic_exchange(&t->queued, 1) == 0, "process queued twice");
    pthread_mutex_lock(&q->lock);
    q->count++;
    CHECK_EQ(q->count, 1);
    pthread_cond_signal(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

/* Returns 1 with the process taken out of the queue, 0 when stopping. */
static int rq_pop(runq *q, tproc *t) {
    pthread_mutex_lock(&q->lock);
    while (q->count == 0 && !q->stop)
        pthread_cond_wait(&q->cond, &q->lock);
    if (q->count == 0) {
        pthread_mutex_unlock(&q->lock);
        return 0;
    }
    q->count--;
    pthread_mutex_unlock(&q->lock);
    CHECK_EQ(atomic_exchange(&t->queued, 0), 1);
    return 1;
}

static int rq_len(runq *q) {
    int n;
    pthread_mutex_lock(&q->lock);
    n = q->count;
    pthread_mutex_unlock(&q->lock);
    return n;
}

static void rq_stop(runq *q) {
    pthread_mutex_lock(&q->lock);
    q->stop = 1;
    pthread_cond_broadcast(&q->cond);
    pthread_mutex_unlock(&q->lock);
}

typedef struct {
    tproc *t;
    runq *q;
    pthread_barrier_t *start, *done;
    _Atomic int *quit;
    _Atomic int *round_size;    /* wakes per waker this round */
    int requeue_one_in;         /* requeue after a look, 1 in N (0: never) */
    uint64_t seed;
} targ;

static void spin_a_little(uint64_t *rng) {
    volatile int k, n = (int)rng_below(rng, 64);
    for (k = 0; k < n; k++)
        ;
}

/* Sends a message and wakes; returns whether it pushed. */
static int send_and_wake(tproc *t, runq *q) {
    atomic_fetch_add(&t->sent, 1);
    if (ovm_proc_wake(&t->p)) {
        atomic_fetch_add(&t->wake_pushes, 1);
        rq_push(q, t);
        return 1;
    }
    return 0;
}

static void *waker_main(void *arg) {
    targ *a = arg;
    uint64_t rng = a->seed;
    for (;;) {
        int n, i;
        pthread_barrier_wait(a->start);
        if (atomic_load(a->quit))
            break;
        n = atomic_load(a->round_size);
        spin_a_little(&rng);
        for (i = 0; i < n; i++) {
            send_and_wake(a->t, a->q);
            if (rng_below(&rng, 4) == 0)
                spin_a_little(&rng);
        }
        pthread_barrier_wait(a->done);
    }
    return NULL;
}

static void *sched_main(void *arg) {
    targ *a = arg;
    tproc *t = a->t;
    uint64_t rng = a->seed;
    while (rq_pop(a->q, t)) {
        uint32_t st;
        if (!ovm_proc_begin(&t->p)) {
            CHECK(ovm_proc_exited(&t->p));
            continue;
        }
        CHECKF(atomic_exchange(&t->running, 1) == 0, "run by two schedulers at once");
        atomic_fetch_add(&t->runs, 1);
        for (;;) {
            /* Look at the mailbox. */
            uint64_t seen = atomic_load(&t->sent);
            CHECK(seen >= atomic_load(&t->consumed));
            atomic_store(&t->consumed, seen);
            st = atomic_load(&t->p.state);
            CHECKF((st & OVM_RUNNING) && !(st & OVM_RUNQ), "running with state %#x", st);
            if (rng_below(&rng, 4) == 0)
                spin_a_little(&rng);
            CHECK_EQ(atomic_exchange(&t->running, 0), 1);
            if (a->requeue_one_in && rng_below(&rng, (uint64_t)a->requeue_one_in) == 0) {
                /* Slice used up: back to the run queue. */
                ovm_proc_requeue(&t->p);
                atomic_fetch_add(&t->requeues, 1);
                rq_push(a->q, t);
                break;
            }
            if (ovm_proc_try_wait(&t->p)) {
                atomic_fetch_add(&t->waits, 1);
                break;
            }
            /* Something arrived meanwhile: still ours, look again. */
            atomic_fetch_add(&t->refused, 1);
            CHECKF(atomic_exchange(&t->running, 1) == 0, "run by two schedulers at once");
            st = atomic_load(&t->p.state);
            CHECKF((st & OVM_RUNNING) && !(st & OVM_RUNQ), "try_wait failed, state %#x", st);
        }
    }
    return NULL;
}

/* Waits until the process is waiting with nothing queued, then checks that
 * every message was looked at. */
static void wait_quiescent(tproc *t, runq *q, int round) {
    int64_t deadline = ovm_now_ns() + 10LL * 1000000000LL;
    uint64_t sent = atomic_load(&t->sent);
    for (;;) {
        uint32_t st = atomic_load(&t->p.state);
        if (st == 0 && !atomic_load(&t->queued) && rq_len(q) == 0 &&
            !atomic_load(&t->running)) {
            /* Waiting, and no waker is active: nobody will ever wake it, so
             * `consumed` is final. */
            uint64_t consumed = atomic_load(&t->consumed);
            CHECKF(consumed == sent,
                   "round %d: lost wake: process waits with %llu of %llu messages read", round,
                   (unsigned long long)consumed, (unsigned long long)sent);
            CHECK_EQ(atomic_load(&t->runs),
                     atomic_load(&t->wake_pushes) + atomic_load(&t->requeues));
            return;
        }
        CHECKF(ovm_now_ns() < deadline, "round %d: stuck, state %#x, queued %d", round, st,
               atomic_load(&t->queued));
        sched_yield();
    }
}

static void stress(int nsched, int requeue_one_in, int64_t budget_ns, int min_rounds) {
    tproc t;
    runq q;
    pthread_barrier_t start, done;
    _Atomic int quit = 0, round_size = 0;
    pthread_t wakers[NWAKERS], scheds[4];
    targ wa[NWAKERS], sa[4];
    int64_t t0 = ovm_now_ns();
    int round, i;
    uint64_t rng = 12345 + (uint64_t)nsched * 77 + (uint64_t)requeue_one_in;

    memset(&t, 0, sizeof(t));
    ovm_proc_init(&t.p, &t, 0);
    rq_init(&q);
    CHECK_EQ(pthread_barrier_init(&start, NULL, NWAKERS + 1), 0);
    CHECK_EQ(pthread_barrier_init(&done, NULL, NWAKERS + 1), 0);
    for (i = 0; i < NWAKERS; i++) {
        wa[i] = (targ){&t, &q, &start, &done, &quit, &round_size, 0, 0x1000u + (uint64_t)i};
        spawn(&wakers[i], waker_main, &wa[i]);
    }
    for (i = 0; i < nsched; i++) {
        sa[i] = (targ){&t, &q, &start, &done, &quit, &round_size, requeue_one_in,
                       0x2000u + (uint64_t)i};
        spawn(&scheds[i], sched_main, &sa[i]);
    }
    for (round = 0; round < min_rounds || ovm_now_ns() - t0 < budget_ns; round++) {
        /* Mostly tiny rounds (races around the transition to waiting), some
         * long ones (wakes while running, requeues). */
        uint64_t r = rng_below(&rng, 8);
        atomic_store(&round_size, r < 5 ? 1 + (int)r : 20 + (int)rng_below(&rng, 200));
        pthread_barrier_wait(&start);
        pthread_barrier_wait(&done);
        wait_quiescent(&t, &q, round);
    }
    atomic_store(&quit, 1);
    pthread_barrier_wait(&start);
    for (i = 0; i < NWAKERS; i++)
        join(wakers[i]);
    rq_stop(&q);
    for (i = 0; i < nsched; i++)
        join(scheds[i]);
    CHECK(atomic_load(&t.wake_pushes) >= (uint64_t)round);
    if (requeue_one_in)
        CHECK(atomic_load(&t.requeues) > 0);
    printf(" [%d rounds, %llu msgs, %llu runs, %llu requeues, %llu re-looks]", round,
           (unsigned long long)atomic_load(&t.sent), (unsigned long long)atomic_load(&t.runs),
           (unsigned long long)atomic_load(&t.requeues),
           (unsigned long long)atomic_load(&t.refused));
    pthread_barrier_destroy(&start);
    pthread_barrier_destroy(&done);
    rq_destroy(&q);
}

static void test_wake_one_scheduler(void) { stress(1, 0, 400000000LL, 100); }
static void test_wake_one_scheduler_requeue(void) { stress(1, 8, 400000000LL, 100); }
static void test_wake_two_schedulers_requeue(void) { stress(2, 4, 400000000LL, 100); }

/* Single-threaded walk through every transition. */
static void test_transitions(void) {
    ovm_proc p;
    int owner;
    ovm_proc_init(&p, &owner, 3);
    CHECK(p.owner == &owner && p.home == 3 && p.rq_next == NULL);
    CHECK_EQ(atomic_load(&p.state), 0);
    CHECK_EQ(ovm_proc_state(&p), 0);
    CHECK_EQ(ovm_proc_timeout_fired(&p), 0);
    ovm_proc_fire_timeout(&p, 7);
    CHECK_EQ(ovm_proc_timeout_fired(&p), 7);
    CHECK_EQ(ovm_proc_state(&p), 0);            /* firing does not wake by itself */

    CHECK_EQ(ovm_proc_wake(&p), 1);                          /* waiting -> queued */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNQ | OVM_ACTIVE);
    CHECK_EQ(ovm_proc_wake(&p), 0);                          /* already queued */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNQ | OVM_ACTIVE);

    CHECK_EQ(ovm_proc_begin(&p), 1);                         /* ACTIVE consumed */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNNING);
    CHECK_EQ(ovm_proc_wake(&p), 0);                          /* running: just ACTIVE */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNNING | OVM_ACTIVE);
    CHECK_EQ(ovm_proc_try_wait(&p), 0);                      /* must look again */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNNING);
    CHECK_EQ(ovm_proc_try_wait(&p), 1);
    CHECK_EQ(atomic_load(&p.state), 0);

    CHECK_EQ(ovm_proc_wake(&p), 1);
    CHECK_EQ(ovm_proc_begin(&p), 1);
    ovm_proc_requeue(&p);                                    /* slice used up */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNQ);
    CHECK_EQ(ovm_proc_wake(&p), 0);                          /* queued already */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNQ | OVM_ACTIVE);
    CHECK_EQ(ovm_proc_begin(&p), 1);
    CHECK_EQ(ovm_proc_wake(&p), 0);
    ovm_proc_requeue(&p);                                    /* keeps ACTIVE */
    CHECK_EQ(atomic_load(&p.state), OVM_RUNQ | OVM_ACTIVE);
    CHECK_EQ(ovm_proc_begin(&p), 1);
    CHECK_EQ(ovm_proc_try_wait(&p), 1);

    /* Exit while waiting. */
    CHECK(!ovm_proc_exited(&p));
    CHECK_EQ(ovm_proc_exit(&p), 0);
    CHECK(ovm_proc_exited(&p));
    CHECK_EQ(ovm_proc_wake(&p), 0);
    CHECK_EQ(atomic_load(&p.state), OVM_EXITED);
    CHECK_EQ(ovm_proc_begin(&p), 0);
    CHECK_EQ(ovm_proc_exit(&p), OVM_EXITED);

    /* Exit while queued: the scheduler that pops it must not run it. */
    ovm_proc_init(&p, &owner, 0);
    CHECK_EQ(ovm_proc_wake(&p), 1);
    CHECK_EQ(ovm_proc_exit(&p), OVM_RUNQ | OVM_ACTIVE);
    CHECK_EQ(ovm_proc_wake(&p), 0);
    CHECK_EQ(ovm_proc_begin(&p), 0);
    CHECK(atomic_load(&p.state) & OVM_EXITED);

    /* Exit while running: later wakes are ignored, EXITED stays. */
    ovm_proc_init(&p, &owner, 0);
    CHECK_EQ(ovm_proc_wake(&p), 1);
    CHECK_EQ(ovm_proc_begin(&p), 1);
    CHECK_EQ(ovm_proc_exit(&p), OVM_RUNNING);
    CHECK_EQ(ovm_proc_wake(&p), 0);
    CHECK_EQ(atomic_load(&p.state), OVM_RUNNING | OVM_EXITED);
    CHECK_EQ(ovm_proc_try_wait(&p), 0);      /* never "waiting" once exited */
    CHECK(ovm_proc_exited(&p));
}

/* Exit races with wakers and a scheduler: after ovm_proc_exit() returned,
 * no wake may ask for a push and no begin may succeed. */
typedef struct {
    tproc *t;
    runq *q;
    _Atomic int *stop;
} exarg;

static void *exit_waker(void *arg) {
    exarg *a = arg;
    while (!atomic_load(a->stop)) {
        int exited_before = atomic_load(&a->t->exited);
        atomic_fetch_add(&a->t->sent, 1);
        if (ovm_proc_wake(&a->t->p)) {
            CHECKF(!exited_before, "wake asked for a push after exit");
            atomic_fetch_add(&a->t->wake_pushes, 1);
            rq_push(a->q, a->t);
        }
    }
    return NULL;
}

static void *exit_sched(void *arg) {
    exarg *a = arg;
    tproc *t = a->t;
    while (rq_pop(a->q, t)) {
        int exited_before = atomic_load(&t->exited);
        if (!ovm_proc_begin(&t->p)) {
            CHECK(ovm_proc_exited(&t->p));
            continue;
        }
        CHECKF(!exited_before, "begin succeeded after exit");
        atomic_fetch_add(&t->runs, 1);
        for (;;) {
            atomic_store(&t->consumed, atomic_load(&t->sent));
            if (ovm_proc_try_wait(&t->p))
                break;
            if (ovm_proc_exited(&t->p))
                break;          /* killed while running: it is gone */
        }
    }
    return NULL;
}

/* A stuck process killed from another thread (process.pxi, "killing a
 * stuck process"): only a running one can be taken, once; interrupts stop
 * once its thread has left, and leaving says whether one is in progress. */
static void test_take_over(void) {
    ovm_proc p;
    ovm_proc_init(&p, NULL, 0);
    CHECK(!ovm_proc_take(&p));                  /* waiting: its thread ends it */
    CHECK_EQ(ovm_proc_wake(&p), 1);
    CHECK(!ovm_proc_take(&p));                  /* queued: likewise */
    CHECK(ovm_proc_begin(&p));
    ovm_proc_mark_kill(&p);
    CHECK(!ovm_proc_exited(&p));                /* a kill on its way is not an exit */
    CHECK(ovm_proc_take(&p));
    CHECK(!ovm_proc_take(&p));                  /* once */
    CHECK(ovm_proc_exited(&p) && ovm_proc_taken(&p));
    CHECK_EQ(ovm_proc_wake(&p), 0);             /* nothing wakes it */
    CHECK(!ovm_proc_try_wait(&p));              /* its thread cannot make it wait */
    CHECK(ovm_proc_interrupt_begin(&p));
    CHECK(ovm_proc_leave(&p));                  /* an interrupt is in progress */
    CHECK(ovm_proc_interrupting(&p));
    ovm_proc_interrupt_end(&p);
    CHECK(!ovm_proc_interrupting(&p));
    CHECK(!ovm_proc_interrupt_begin(&p));       /* left: no more */
    CHECK(ovm_proc_exit(&p) & OVM_TAKEN);       /* terminate sees it was taken */
}

static void test_exit_races(void) {
    enum { N = 4, REPS = 40 };
    for (int rep = 0; rep < REPS; rep++) {
        tproc t;
        runq q;
        _Atomic int stop = 0;
        pthread_t w[N], sc;
        exarg a;
        memset(&t, 0, sizeof(t));
        ovm_proc_init(&t.p, &t, 0);
        rq_init(&q);
        a = (exarg){&t, &q, &stop};
        spawn(&sc, exit_sched, &a);
        for (int i = 0; i < N; i++)
            spawn(&w[i], exit_waker, &a);
        sleep_ns(200000 + 50000 * (rep % 8));
        ovm_proc_exit(&t.p);
        atomic_store(&t.exited, 1);
        sleep_ns(200000);
        atomic_store(&stop, 1);
        for (int i = 0; i < N; i++)
            join(w[i]);
        rq_stop(&q);
        join(sc);
        CHECK(ovm_proc_exited(&t.p));
        CHECK_EQ(ovm_proc_wake(&t.p), 0);
        rq_destroy(&q);
    }
}

int main(int argc, char **argv) {
    int64_t t0 = ovm_now_ns();
    test_filter = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_proc_state (%d wakers)\n", NWAKERS);
    RUN(test_transitions);
    RUN(test_wake_one_scheduler);
    RUN(test_wake_one_scheduler_requeue);
    RUN(test_wake_two_schedulers_requeue);
    RUN(test_exit_races);
    RUN(test_take_over);
    printf("test_proc_state: all passed in %.2f s\n", (double)(ovm_now_ns() - t0) / 1e9);
    return 0;
}
