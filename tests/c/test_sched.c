/* Tests of csrc/ovm_sched.c: run queues, workers, spare-worker parking and
 * the monitor that rescues a run queue whose slice overran.
 *
 * An ovm_sched with 2 run queues and 4 workers (pthreads); each worker loops
 * ovm_worker_next / slice_begin / (proc protocol) / slice_end.  Producers
 * follow the protocol of ovm_proc.h: bump a message counter, ovm_proc_wake(),
 * and push only when the wake says so.  Checked:
 *   - every pushed process runs exactly once per push, never on two workers
 *     at once, only from the run queue it was pushed to (no stealing), and no
 *     message is left unread once it waits;
 *   - a process spinning 50 ms in its slice gets its run queue handed to a
 *     parked worker (s->handoffs grows, its slice_end reports `lost`), and the
 *     other processes of that run queue complete before the spinner ends;
 *     the same when the rescuing worker itself gets stuck, and on both run
 *     queues at once; with no spare worker the monitor counts no_spare;
 *   - timers: due timers come back as OVM_NEXT_TIMERS, sleeping workers wake
 *     for them, cancelled ones never fire;
 *   - ovm_sched_stop() stops every worker (parked, sleeping, spinning) and the
 *     monitor, under load, without leaks or races. */
#include "test_util.h"

#include <sched.h>
#include <string.h>

#include "ovm_proc.h"
#include "ovm_sched.h"
#include "ovm_timer.h"

#define NRUNQS 2
#define NWORKERS 4
#define MS 1000000LL
#define SLICE_LIMIT (10 * MS)
#define SPIN (50 * MS)
/* A spinner spins at least its spin_ns, and on until what it waits for
 * happened (the processes queued behind it ran), at most SPIN_CAP: the
 * checks then hold on a loaded machine too, and a broken hand-off shows up
 * as processes that only ran after the spin. */
#define SPIN_CAP (3000 * MS)

typedef struct tproc {
    ovm_proc p;
    _Atomic uint64_t sent;          /* messages: bumped before each wake */
    _Atomic uint64_t consumed;      /* last `sent` value a run looked at */
    _Atomic uint64_t pushes, runs;
    _Atomic int running;
    _Atomic int64_t done_ns;        /* when its last run finished */
    int64_t spin_ns;                /* > 0: spin at least that long in its first run */
    _Atomic uint64_t *until;        /* spinner: and until *until >= until_val */
    uint64_t until_val;
    _Atomic uint64_t *notify;       /* bumped when a run ends (for spinners: the spin) */
    _Atomic int spin_started;
    _Atomic int64_t spin_start_ns, spin_end_ns;
    _Atomic int slice_lost;         /* spinner: slice_end said `lost` */
    _Atomic int slice_ended;        /* spinner: its worker is done with it */
    _Atomic int64_t timer_deadline; /* > 0: woken by a timer with this deadline */
    _Atomic int64_t fired_ns;
} tproc;

typedef struct {
    ovm_sched s;
    int steal;
    _Atomic uint64_t slices, lost_slices, timers_fired, timer_calls, stolen, polled;
    _Atomic uint64_t worker_runs[NWORKERS];
} ctx;

typedef struct {
    ctx *c;
    uint32_t id;
} warg;

static void tproc_init(tproc *t, uint32_t home) {
    memset(t, 0, sizeof(*t));
    ovm_proc_init(&t->p, t, home);
}

/* Producer side: a message, then a wake, then a push if asked to. */
static int send_msg(ctx *c, tproc *t) {
    atomic_fetch_add(&t->sent, 1);
    if (ovm_proc_wake(&t->p)) {
        uint32_t st = atomic_load(&t->p.state);
        CHECKF((st & OVM_RUNQ) && !(st & OVM_RUNNING), "pushing with state %#x", st);
        atomic_fetch_add(&t->pushes, 1);
        ovm_runq_push(&c->s, t->p.home, &t->p);
        return 1;
    }
    return 0;
}

static void fire_timers(ctx *c) {
    ovm_timer *tm;
    atomic_fetch_add(&c->timer_calls, 1);
    while ((tm = ovm_timers_pop_due(&c->s.timers, ovm_now_ns())) != NULL) {
        tproc *t = tm->payload;
        int64_t now = ovm_now_ns();
        CHECK(tm->deadline <= now);
        CHECK(atomic_load(&t->timer_deadline) == tm->deadline);
        atomic_store(&t->fired_ns, now);
        send_msg(c, t);
        /* Counted once its wake is sent: a test that saw the count and then
         * found the process idle with nothing sent took it for done. */
        atomic_fetch_add(&c->timers_fired, 1);
    }
}

static void *worker_main(void *arg) {
    warg *a = arg;
    ctx *c = a->c;
    ovm_sched *s = &c->s;
    uint32_t w = a->id;
    CHECK_EQ(ovm_worker_register(s, w), 0);
    for (;;) {
        ovm_proc *p = NULL;
        tproc *t;
        uint32_t q;
        int r, lost = -1, spinner;
        if (w & 1) {
            /* As the layer above does: poll (GIL held), block only if idle. */
            r = ovm_worker_poll(s, w, &p);
            CHECK(r == OVM_NEXT_PROC || r == OVM_NEXT_TIMERS || r == OVM_NEXT_NONE);
            if (r == OVM_NEXT_PROC)
                atomic_fetch_add(&c->polled, 1);
            if (r == OVM_NEXT_NONE)
                r = ovm_worker_next(s, w, &p);
        } else {
            r = ovm_worker_next(s, w, &p);
        }
        if (r == OVM_NEXT_STOP)
            break;
        if (r == OVM_NEXT_TIMERS) {
            fire_timers(c);
            continue;
        }
        CHECK_EQ(r, OVM_NEXT_PROC);
        CHECK(p != NULL);
        q = ovm_worker_runq(s, w);
        CHECKF(q < s->nrunqs, "worker %u got a process while serving no run queue", w);
        if (p->home != q) {
            CHECKF(c->steal, "worker %u on run queue %u popped a process of run queue %u", w, q,
                   p->home);
            atomic_fetch_add(&c->stolen, 1);
        }
        t = p->owner;
        spinner = t->spin_ns > 0;
        if (w & 1) {
            /* The layer above's order: begin, then open the slice. */
            if (!ovm_proc_begin(p))
                continue;
            ovm_worker_slice_begin(s, w, (uint64_t)(uintptr_t)t);
        } else {
            ovm_worker_slice_begin(s, w, (uint64_t)(uintptr_t)t);
            if (!ovm_proc_begin(p)) {
                lost = ovm_worker_slice_end(s, w);
                if (lost)
                    atomic_fetch_add(&c->lost_slices, 1);
                continue;
            }
        }
        atomic_fetch_add(&c->slices, 1);
        CHECKF(atomic_exchange(&t->running, 1) == 0, "a process runs on two workers at once");
        atomic_fetch_add(&t->runs, 1);
        atomic_fetch_add(&c->worker_runs[w], 1);
        for (;;) {
            atomic_store(&t->consumed, atomic_load(&t->sent));
            if (spinner && !atomic_load(&t->spin_started)) {
                /* Hold the worker, as Python code between two awaits would. */
                int64_t start = ovm_now_ns(), now;
                atomic_store(&t->spin_start_ns, start);
                atomic_store(&t->spin_started, 1);
                do
                    now = ovm_now_ns();
                while (now < start + t->spin_ns ||
                       (t->until != NULL && atomic_load(t->until) < t->until_val &&
                        now < start + SPIN_CAP));
                /* Read again: the spinner may have been descheduled between
                 * its last clock read and its look at `until`, while what it
                 * waited for happened. */
                atomic_store(&t->spin_end_ns, ovm_now_ns());
                if (t->notify != NULL)
                    atomic_fetch_add(t->notify, 1);
            }
            atomic_store(&t->done_ns, ovm_now_ns());
            if (!spinner && t->notify != NULL)
                atomic_fetch_add(t->notify, 1);
            CHECK_EQ(atomic_exchange(&t->running, 0), 1);
            if (ovm_proc_try_wait(p))
                break;
            CHECK_EQ(atomic_exchange(&t->running, 1), 0);
        }
        /* `t` may be running elsewhere, or be gone, once it waits: only a
         * spinner's owner waits for `slice_ended` before letting it go. */
        lost = ovm_worker_slice_end(s, w);
        CHECK(lost == 0 || lost == 1);
        if (lost) {
            atomic_fetch_add(&c->lost_slices, 1);
            CHECK_EQ(ovm_worker_runq(s, w), OVM_NO_RUNQ);
        } else {
            CHECK_EQ(ovm_worker_runq(s, w), q);
        }
        if (spinner) {
            atomic_store(&t->slice_lost, lost);
            atomic_store(&t->slice_ended, 1);
        }
    }
    return NULL;
}

static void sched_start(ctx *c, pthread_t *threads, warg *args, uint32_t nrunqs,
                        uint32_t nworkers, int64_t limit, int steal) {
    memset(c, 0, sizeof(*c));
    c->steal = steal;
    CHECK_EQ(ovm_sched_init(&c->s, nrunqs, nworkers, nworkers, limit, steal), 0);
    CHECK_EQ(ovm_sched_start_monitor(&c->s), 0);
    for (uint32_t i = 0; i < nworkers; i++) {
        args[i] = (warg){c, i};
        spawn(&threads[i], worker_main, &args[i]);
    }
}

static void sched_finish(ctx *c, pthread_t *threads, uint32_t nworkers) {
    ovm_timer *tm;
    ovm_sched_stop(&c->s);
    for (uint32_t i = 0; i < nworkers; i++)
        join(threads[i]);
    while ((tm = ovm_timers_pop_any(&c->s.timers)) != NULL)
        ;
    ovm_sched_destroy(&c->s);
}

/* Waits until every process waits with its messages read and one run per
 * push; fails after a while with what is wrong. */
static void wait_quiescent(tproc *ts, size_t n, const char *what) {
    int64_t deadline = ovm_now_ns() + 10LL * 1000 * MS;
    size_t i = 0;
    while (i < n) {
        tproc *t = &ts[i];
        uint32_t st = atomic_load(&t->p.state);
        if (st == 0 && atomic_load(&t->consumed) == atomic_load(&t->sent) &&
            atomic_load(&t->runs) == atomic_load(&t->pushes)) {
            i++;
            continue;
        }
        CHECKF(ovm_now_ns() < deadline,
               "%s: process %zu stuck: state %#x, %llu/%llu messages read, %llu runs for "
               "%llu pushes",
               what, i, st, (unsigned long long)atomic_load(&t->consumed),
               (unsigned long long)atomic_load(&t->sent),
               (unsigned long long)atomic_load(&t->runs),
               (unsigned long long)atomic_load(&t->pushes));
        sleep_ns(100000);
    }
}

static void wait_flag(_Atomic int *flag, const char *what) {
    int64_t deadline = ovm_now_ns() + 10LL * 1000 * MS;
    while (!atomic_load(flag)) {
        CHECKF(ovm_now_ns() < deadline, "timed out waiting for %s", what);
        sleep_ns(50000);
    }
}

/* ------------------------------------------------------------------ */

typedef struct {
    ctx *c;
    tproc *ts;
    size_t n;
    int id, nprod;
    int sends;          /* 0: wake each of my processes once */
} parg;

static void *producer_main(void *arg) {
    parg *a = arg;
    uint64_t rng = 0x51ed + (uint64_t)a->id;
    if (a->sends == 0) {
        for (size_t i = (size_t)a->id; i < a->n; i += (size_t)a->nprod)
            CHECKF(send_msg(a->c, &a->ts[i]) == 1, "a waiting process did not ask for a push");
    } else {
        for (int k = 0; k < a->sends; k++) {
            send_msg(a->c, &a->ts[rng_below(&rng, a->n)]);
            if ((k & 63) == 0)
                sched_yield();
        }
    }
    return NULL;
}

static void run_producers(ctx *c, tproc *ts, size_t n, int nprod, int sends) {
    pthread_t th[8];
    parg pa[8];
    CHECK(nprod <= 8);
    for (int i = 0; i < nprod; i++) {
        pa[i] = (parg){c, ts, n, i, nprod, sends};
        spawn(&th[i], producer_main, &pa[i]);
    }
    for (int i = 0; i < nprod; i++)
        join(th[i]);
}

/* Every process woken once runs exactly once. */
static void phase_one_wake_each(ctx *c) {
    enum { N = 3000 };
    tproc *ts = calloc(N, sizeof(*ts));
    CHECK(ts != NULL);
    for (size_t i = 0; i < N; i++)
        tproc_init(&ts[i], (uint32_t)(i % NRUNQS));
    run_producers(c, ts, N, 4, 0);
    wait_quiescent(ts, N, "one wake each");
    sleep_ns(2 * MS);
    for (size_t i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&ts[i].pushes), 1);
        CHECK_EQ(atomic_load(&ts[i].runs), 1);
        CHECK_EQ(atomic_load(&ts[i].p.state), 0);
    }
    free(ts);
}

/* Many concurrent wakes of few processes: one run per push, none lost. */
static void phase_many_wakes(ctx *c) {
    enum { N = 48, SENDS = 6000 };
    tproc *ts = calloc(N, sizeof(*ts));
    uint64_t pushes = 0, sent = 0;
    CHECK(ts != NULL);
    for (size_t i = 0; i < N; i++)
        tproc_init(&ts[i], (uint32_t)(i % NRUNQS));
    run_producers(c, ts, N, 4, SENDS);
    wait_quiescent(ts, N, "many wakes");
    for (size_t i = 0; i < N; i++) {
        pushes += atomic_load(&ts[i].pushes);
        sent += atomic_load(&ts[i].sent);
    }
    CHECK_EQ(sent, 4 * SENDS);
    CHECK(pushes >= N / 2 && pushes <= sent);
    printf(" [%llu msgs, %llu pushes]", (unsigned long long)sent, (unsigned long long)pushes);
    free(ts);
}

/* Spinners on run queue `q`: spinner[0] starts first; each next one is woken
 * once the previous one spins (so it runs on the worker that rescued the run
 * queue); then `nquick` quick processes are woken on q; all must complete
 * before the last spinner ends. */
static void spin_scenario(ctx *c, uint32_t q, int nspin, const int64_t *spin, int nquick,
                          tproc *sp, tproc *quick, _Atomic uint64_t *counters) {
    /* counters[i] counts what spinner i waits for: spinner i+1's spin, or
     * for the last one, the quick processes. */
    for (int i = 0; i < nspin; i++) {
        tproc_init(&sp[i], q);
        sp[i].spin_ns = spin[i];
        atomic_store(&counters[i], 0);
        sp[i].until = &counters[i];
        sp[i].until_val = i + 1 < nspin ? 1 : (uint64_t)nquick;
        if (i > 0)
            sp[i].notify = &counters[i - 1];
    }
    for (int i = 0; i < nquick; i++) {
        tproc_init(&quick[i], q);
        quick[i].notify = &counters[nspin - 1];
    }
    for (int i = 0; i < nspin; i++) {
        CHECK_EQ(send_msg(c, &sp[i]), 1);
        wait_flag(&sp[i].spin_started, "a spinner to start");
    }
    for (int i = 0; i < nquick; i++)
        CHECK_EQ(send_msg(c, &quick[i]), 1);
}

static void check_spin_scenario(int nspin, int nquick, tproc *sp, tproc *quick) {
    int64_t last_end;
    for (int i = 0; i < nspin; i++)
        wait_flag(&sp[i].slice_ended, "a spinner's slice to end");
    wait_quiescent(sp, (size_t)nspin, "spinners");
    wait_quiescent(quick, (size_t)nquick, "processes behind a spinner");
    last_end = atomic_load(&sp[nspin - 1].spin_end_ns);
    for (int i = 0; i < nspin; i++) {
        CHECK_EQ(atomic_load(&sp[i].runs), 1);
        CHECKF(atomic_load(&sp[i].slice_lost) == 1,
               "spinner %d: its slice_end did not report the hand-off", i);
    }
    for (int i = 0; i < nquick; i++) {
        CHECK_EQ(atomic_load(&quick[i].runs), 1);
        CHECKF(atomic_load(&quick[i].done_ns) < last_end,
               "process %d behind the spinner finished %.1f ms after the spin ended", i,
               (double)(atomic_load(&quick[i].done_ns) - last_end) / 1e6);
    }
}

static void phase_spinner(ctx *c) {
    enum { Q = 20 };
    const int64_t spin[1] = {SPIN};
    tproc sp[1], quick[Q];
    _Atomic uint64_t counters[1];
    uint64_t before = atomic_load(&c->s.handoffs);
    int64_t first_done = INT64_MAX, last_done = 0;
    spin_scenario(c, 0, 1, spin, Q, sp, quick, counters);
    check_spin_scenario(1, Q, sp, quick);
    CHECKF(atomic_load(&c->s.handoffs) >= before + 1, "handoffs %llu -> %llu",
           (unsigned long long)before, (unsigned long long)atomic_load(&c->s.handoffs));
    for (int i = 0; i < Q; i++) {
        int64_t d = atomic_load(&quick[i].done_ns);
        first_done = d < first_done ? d : first_done;
        last_done = d > last_done ? d : last_done;
    }
    printf(" [spun %.1f ms; the %d others ran %.1f-%.1f ms into it]",
           (double)(atomic_load(&sp[0].spin_end_ns) - atomic_load(&sp[0].spin_start_ns)) / 1e6,
           Q, (double)(first_done - atomic_load(&sp[0].spin_start_ns)) / 1e6,
           (double)(last_done - atomic_load(&sp[0].spin_start_ns)) / 1e6);
}

/* The worker that rescued run queue 0 gets stuck too: a third one takes over. */
static void phase_rescuer_stuck(ctx *c) {
    enum { Q = 10 };
    const int64_t spin[2] = {SPIN, SPIN};
    tproc sp[2], quick[Q];
    _Atomic uint64_t counters[2];
    uint64_t before = atomic_load(&c->s.handoffs);
    spin_scenario(c, 0, 2, spin, Q, sp, quick, counters);
    check_spin_scenario(2, Q, sp, quick);
    CHECK(atomic_load(&c->s.handoffs) >= before + 2);
}

/* Both run queues stuck at once: both spares are used. */
static void phase_both_stuck(ctx *c) {
    enum { Q = 10 };
    tproc sp0[1], sp1[1], q0[Q], q1[Q];
    _Atomic uint64_t done0 = 0, done1 = 0;
    uint64_t before = atomic_load(&c->s.handoffs);
    tproc_init(&sp0[0], 0);
    tproc_init(&sp1[0], 1);
    sp0[0].spin_ns = sp1[0].spin_ns = SPIN;
    sp0[0].until = &done0;
    sp1[0].until = &done1;
    sp0[0].until_val = sp1[0].until_val = Q;
    for (int i = 0; i < Q; i++) {
        tproc_init(&q0[i], 0);
        tproc_init(&q1[i], 1);
        q0[i].notify = &done0;
        q1[i].notify = &done1;
    }
    CHECK_EQ(send_msg(c, &sp0[0]), 1);
    CHECK_EQ(send_msg(c, &sp1[0]), 1);
    wait_flag(&sp0[0].spin_started, "spinner 0");
    wait_flag(&sp1[0].spin_started, "spinner 1");
    for (int i = 0; i < Q; i++) {
        CHECK_EQ(send_msg(c, &q0[i]), 1);
        CHECK_EQ(send_msg(c, &q1[i]), 1);
    }
    check_spin_scenario(1, Q, sp0, q0);
    check_spin_scenario(1, Q, sp1, q1);
    CHECK(atomic_load(&c->s.handoffs) >= before + 2);
}

/* Timers wake processes; cancelled ones never fire. */
static void phase_timers(ctx *c) {
    enum { N = 30, NC = 10 };
    tproc ts[N], tc[NC];
    ovm_timer tm[N], tmc[NC];
    uint64_t fired0 = atomic_load(&c->timers_fired);
    int64_t now = ovm_now_ns();
    int earliest;
    for (int i = 0; i < NC; i++) {
        tproc_init(&tc[i], (uint32_t)i % NRUNQS);
        tmc[i] = (ovm_timer){now + 1000 * MS + i * MS, ovm_next_id(), SIZE_MAX, &tc[i]};
        atomic_store(&tc[i].timer_deadline, tmc[i].deadline);
        CHECK_EQ(ovm_timers_add(&c->s.timers, &tmc[i], &earliest), 0);
        if (earliest)
            ovm_sched_timers_changed(&c->s);
    }
    /* Latest first, so that several adds move the earliest deadline. */
    for (int i = N - 1; i >= 0; i--) {
        tproc_init(&ts[i], (uint32_t)i % NRUNQS);
        tm[i] = (ovm_timer){now + 1 * MS + (i % 15) * MS, ovm_next_id(), SIZE_MAX, &ts[i]};
        atomic_store(&ts[i].timer_deadline, tm[i].deadline);
        CHECK_EQ(ovm_timers_add(&c->s.timers, &tm[i], &earliest), 0);
        if (earliest)
            ovm_sched_timers_changed(&c->s);
    }
    for (int i = 0; i < NC; i++)
        CHECK_EQ(ovm_timers_cancel(&c->s.timers, &tmc[i]), 1);
    {
        int64_t deadline = ovm_now_ns() + 10LL * 1000 * MS;
        while (atomic_load(&c->timers_fired) < fired0 + N) {
            CHECKF(ovm_now_ns() < deadline, "only %llu of %d timers fired",
                   (unsigned long long)(atomic_load(&c->timers_fired) - fired0), N);
            sleep_ns(200000);
        }
    }
    wait_quiescent(ts, N, "timer wakes");
    for (int i = 0; i < N; i++) {
        CHECK_EQ(atomic_load(&ts[i].runs), 1);
        CHECK(atomic_load(&ts[i].fired_ns) >= tm[i].deadline);
        CHECK(tm[i].index == SIZE_MAX);
        CHECK_EQ(ovm_timers_cancel(&c->s.timers, &tm[i]), 0);   /* fired: too late */
    }
    sleep_ns(3 * MS);
    CHECK_EQ(atomic_load(&c->timers_fired), fired0 + N);
    for (int i = 0; i < NC; i++)
        CHECK_EQ(atomic_load(&tc[i].runs), 0);
    CHECK_EQ(ovm_timers_next(&c->s.timers), OVM_NEVER);
}

static void test_sched_2_runqs_4_workers(void) {
    ctx *c = calloc(1, sizeof(*c));
    pthread_t th[NWORKERS];
    warg wa[NWORKERS];
    int64_t t;
    CHECK(c != NULL);
    sched_start(c, th, wa, NRUNQS, NWORKERS, SLICE_LIMIT, 0);
    printf("\n");
#define PHASE(fn)                                                            \
    do {                                                                     \
        t = ovm_now_ns();                                                    \
        printf("    %-30s", #fn);                                            \
        fn(c);                                                               \
        printf(" ok (%.0f ms)\n", (double)(ovm_now_ns() - t) / 1e6);         \
    } while (0)
    PHASE(phase_one_wake_each);
    PHASE(phase_many_wakes);
    PHASE(phase_spinner);
    PHASE(phase_rescuer_stuck);
    PHASE(phase_both_stuck);
    PHASE(phase_timers);
    PHASE(phase_one_wake_each);
    printf("    [%llu slices (%llu from poll), %llu hand-offs, %llu lost slices, %llu without "
           "spare, runs per worker %llu/%llu/%llu/%llu]\n",
           (unsigned long long)atomic_load(&c->slices),
           (unsigned long long)atomic_load(&c->polled),
           (unsigned long long)atomic_load(&c->s.handoffs),
           (unsigned long long)atomic_load(&c->lost_slices),
           (unsigned long long)atomic_load(&c->s.no_spare),
           (unsigned long long)atomic_load(&c->worker_runs[0]),
           (unsigned long long)atomic_load(&c->worker_runs[1]),
           (unsigned long long)atomic_load(&c->worker_runs[2]),
           (unsigned long long)atomic_load(&c->worker_runs[3]));
    /* Each run queue is served by exactly one worker; the rest are spares. */
    {
        int serving[NRUNQS] = {0}, spares = 0;
        sleep_ns(5 * MS);
        /* Every hand-off took a slice from a worker that then noticed. */
        CHECK_EQ(atomic_load(&c->lost_slices), atomic_load(&c->s.handoffs));
        for (uint32_t w = 0; w < NWORKERS; w++) {
            uint32_t q = ovm_worker_runq(&c->s, w);
            if (q == OVM_NO_RUNQ)
                spares++;
            else
                serving[q]++;
        }
        CHECK_EQ(serving[0], 1);
        CHECK_EQ(serving[1], 1);
        CHECK_EQ(spares, NWORKERS - NRUNQS);
    }
    sched_finish(c, th, NWORKERS);
    printf("    %-30s", "stopped; whole test");
    free(c);
}

/* Idle workers steal from a busy run queue (free-threaded builds). */
static void test_sched_steal(void) {
    enum { N = 64, SENDS = 4000 };
    ctx *c = calloc(1, sizeof(*c));
    tproc *ts = calloc(N, sizeof(*ts));
    pthread_t th[NWORKERS];
    warg wa[NWORKERS];
    CHECK(c != NULL && ts != NULL);
    sched_start(c, th, wa, NRUNQS, NWORKERS, SLICE_LIMIT, 1);
    /* Mostly run queue 0: run queue 1's worker has little of its own. */
    for (size_t i = 0; i < N; i++)
        tproc_init(&ts[i], i % 8 == 0 ? 1 : 0);
    run_producers(c, ts, N, 4, SENDS);
    wait_quiescent(ts, N, "steal");
    printf(" [%llu of %llu runs stolen]", (unsigned long long)atomic_load(&c->stolen),
           (unsigned long long)(atomic_load(&c->worker_runs[0]) + atomic_load(&c->worker_runs[1]) +
                                atomic_load(&c->worker_runs[2]) +
                                atomic_load(&c->worker_runs[3])));
    sched_finish(c, th, NWORKERS);
    free(ts);
    free(c);
}

/* Once every worker sleeps, pushes n processes on run queue 0, each
 * spinning 1 ms (keeping that queue's worker busy), and waits until all ran. */
static void burst_while_asleep(ctx *c, tproc *ts, size_t n) {
    for (int i = 0; i < 2000 && atomic_load(&c->s.awake) > 0; i++)
        sleep_ns(MS);
    CHECKF(atomic_load(&c->s.awake) == 0, "the workers never went to sleep");
    for (size_t i = 0; i < n; i++) {
        tproc_init(&ts[i], 0);
        ts[i].spin_ns = MS;
    }
    for (size_t i = 0; i < n; i++)
        CHECK_EQ(send_msg(c, &ts[i]), 1);
    wait_quiescent(ts, n, "burst");
}

/* A burst of processes pushed on one run queue while the other's worker
 * sleeps wakes that worker to steal (free-threaded builds): without the
 * wake, it would sleep until something was pushed on its own queue. */
static void test_sched_sleeper_woken_to_steal(void) {
    enum { N = 32 };
    ctx *c = calloc(1, sizeof(*c));
    tproc *ts = calloc(N, sizeof(*ts));
    pthread_t th[NWORKERS];
    warg wa[NWORKERS];
    uint64_t off_home;
    CHECK(c != NULL && ts != NULL);
    sched_start(c, th, wa, NRUNQS, NWORKERS, SLICE_LIMIT, 1);
    burst_while_asleep(c, ts, N);
    off_home = atomic_load(&c->stolen);
    printf(" [%llu of %d stolen, %llu thief wake-ups]", (unsigned long long)off_home, N,
           (unsigned long long)atomic_load(&c->s.thief_wakeups));
    CHECK(atomic_load(&c->s.thief_wakeups) >= 1);
    /* A stolen process may be stolen back before it runs: moves >= runs away. */
    CHECK(off_home >= 1 && atomic_load(&c->s.stolen) >= off_home);
    sched_finish(c, th, NWORKERS);
    CHECK_EQ(atomic_load(&c->s.searching), 0);     /* every search ended */
    free(ts);
    free(c);
}

/* With four run queues, the first thief that leaves work behind wakes the
 * next sleeper, and so on: every worker ends up running some of a burst
 * pushed on one queue (without the chain, one thief at most would). */
static void test_sched_thieves_wake_each_other(void) {
    enum { N = 64, Q = 4 };
    ctx *c = calloc(1, sizeof(*c));
    tproc *ts = calloc(N, sizeof(*ts));
    pthread_t th[Q];
    warg wa[Q];
    CHECK(c != NULL && ts != NULL);
    sched_start(c, th, wa, Q, Q, SLICE_LIMIT, 1);
    burst_while_asleep(c, ts, N);
    printf(" [runs per worker %llu/%llu/%llu/%llu, %llu thief wake-ups]",
           (unsigned long long)atomic_load(&c->worker_runs[0]),
           (unsigned long long)atomic_load(&c->worker_runs[1]),
           (unsigned long long)atomic_load(&c->worker_runs[2]),
           (unsigned long long)atomic_load(&c->worker_runs[3]),
           (unsigned long long)atomic_load(&c->s.thief_wakeups));
    for (int w = 0; w < Q; w++)
        CHECKF(atomic_load(&c->worker_runs[w]) >= 1, "worker %d ran none of the burst", w);
    CHECK(atomic_load(&c->s.thief_wakeups) >= Q - 1);
    sched_finish(c, th, Q);
    CHECK_EQ(atomic_load(&c->s.searching), 0);
    free(ts);
    free(c);
}

/* No spare worker: the monitor notices but cannot hand anything off. */
static void test_sched_no_spare(void) {
    ctx *c = calloc(1, sizeof(*c));
    pthread_t th[1];
    warg wa[1];
    tproc sp, quick;
    CHECK(c != NULL);
    sched_start(c, th, wa, 1, 1, 5 * MS, 0);
    tproc_init(&sp, 0);
    tproc_init(&quick, 0);
    sp.spin_ns = 25 * MS;
    sp.until = &c->s.no_spare;     /* and until the monitor tried */
    sp.until_val = 1;
    CHECK_EQ(send_msg(c, &sp), 1);
    wait_flag(&sp.spin_started, "the spinner");
    CHECK_EQ(send_msg(c, &quick), 1);
    wait_flag(&sp.slice_ended, "the spinner's slice to end");
    wait_quiescent(&sp, 1, "spinner");
    wait_quiescent(&quick, 1, "process behind it");
    CHECK(atomic_load(&c->s.no_spare) >= 1);
    CHECK_EQ(atomic_load(&c->s.handoffs), 0);
    CHECK_EQ(atomic_load(&sp.slice_lost), 0);
    CHECK(atomic_load(&quick.done_ns) > atomic_load(&sp.spin_end_ns));   /* had to wait */
    sched_finish(c, th, 1);
    free(c);
}

/* Stop while producers push, a spinner spins, and timers are pending. */
typedef struct {
    ctx *c;
    tproc *ts;
    size_t n;
    _Atomic int *stop;
    int id;
} larg;

static void *load_producer(void *arg) {
    larg *a = arg;
    uint64_t rng = 0x10ad + (uint64_t)a->id;
    while (!atomic_load(a->stop)) {
        send_msg(a->c, &a->ts[rng_below(&rng, a->n)]);
        if (rng_below(&rng, 32) == 0)
            sched_yield();
    }
    return NULL;
}

static void test_sched_stop_under_load(void) {
    enum { N = 32, NP = 3 };
    ctx *c = calloc(1, sizeof(*c));
    tproc *ts = calloc(N, sizeof(*ts)), sp;
    ovm_timer tm[4];
    pthread_t th[NWORKERS], prod[NP];
    warg wa[NWORKERS];
    larg la[NP];
    _Atomic int stop = 0;
    int earliest;
    CHECK(c != NULL && ts != NULL);
    sched_start(c, th, wa, NRUNQS, NWORKERS, 5 * MS, 0);
    for (size_t i = 0; i < N; i++)
        tproc_init(&ts[i], (uint32_t)(i % NRUNQS));
    tproc_init(&sp, 1);
    sp.spin_ns = 30 * MS;
    for (int i = 0; i < 4; i++) {
        /* Far in the future: still pending at stop. */
        tm[i] = (ovm_timer){ovm_now_ns() + 60LL * 1000 * MS, ovm_next_id(), SIZE_MAX, &ts[i]};
        CHECK_EQ(ovm_timers_add(&c->s.timers, &tm[i], &earliest), 0);
    }
    ovm_sched_timers_changed(&c->s);
    for (int i = 0; i < NP; i++) {
        la[i] = (larg){c, ts, N, &stop, i};
        spawn(&prod[i], load_producer, &la[i]);
    }
    sleep_ns(20 * MS);
    CHECK_EQ(send_msg(c, &sp), 1);
    wait_flag(&sp.spin_started, "the spinner");
    sleep_ns(10 * MS);
    /* Stop the workers first; the producers go on pushing meanwhile. */
    ovm_sched_stop(&c->s);
    for (int i = 0; i < NWORKERS; i++)
        join(th[i]);
    atomic_store(&stop, 1);
    for (int i = 0; i < NP; i++)
        join(prod[i]);
    CHECK(atomic_load(&sp.spin_end_ns) > 0);   /* the spinning worker finished its slice */
    for (int i = 0; i < 4; i++)
        CHECK_EQ(ovm_timers_cancel(&c->s.timers, &tm[i]), 1);
    ovm_sched_destroy(&c->s);
    ovm_sched_destroy(&c->s);                   /* idempotent */
    printf(" [%llu runs before stop]",
           (unsigned long long)(atomic_load(&c->worker_runs[0]) +
                                atomic_load(&c->worker_runs[1]) +
                                atomic_load(&c->worker_runs[2]) +
                                atomic_load(&c->worker_runs[3])));
    free(ts);
    free(c);
}

static void test_sched_init_errors(void) {
    ovm_sched s;
    CHECK(ovm_sched_init(&s, 0, 4, 4, SLICE_LIMIT, 0) != 0);
    CHECK(ovm_sched_init(&s, 3, 2, 2, SLICE_LIMIT, 0) != 0);
    ovm_sched_destroy(&s);      /* safe after a failed init */
    /* Init, no threads, stop, destroy. */
    CHECK_EQ(ovm_sched_init(&s, 2, 2, 2, SLICE_LIMIT, 1), 0);
    ovm_sched_stop(&s);
    ovm_sched_destroy(&s);
    /* With the monitor, but no worker ever runs; polls only. */
    CHECK_EQ(ovm_sched_init(&s, 1, 3, 3, SLICE_LIMIT, 0), 0);
    CHECK_EQ(ovm_sched_start_monitor(&s), 0);
    {
        ovm_proc *out = NULL, p;
        ovm_timer tm = {ovm_now_ns() - 1, ovm_next_id(), SIZE_MAX, NULL};
        int earliest;
        CHECK_EQ(ovm_worker_poll(&s, 0, &out), OVM_NEXT_NONE);     /* nothing queued */
        CHECK_EQ(ovm_worker_poll(&s, 1, &out), OVM_NEXT_NONE);     /* a spare */
        ovm_proc_init(&p, NULL, 0);
        CHECK_EQ(ovm_proc_wake(&p), 1);
        ovm_runq_push(&s, 0, &p);
        CHECK_EQ(ovm_worker_poll(&s, 2, &out), OVM_NEXT_NONE);     /* a spare */
        CHECK_EQ(ovm_worker_poll(&s, 0, &out), OVM_NEXT_PROC);
        CHECK(out == &p);
        CHECK_EQ(ovm_worker_poll(&s, 0, &out), OVM_NEXT_NONE);
        CHECK_EQ(ovm_timers_add(&s.timers, &tm, &earliest), 0);    /* already due */
        CHECK_EQ(ovm_worker_poll(&s, 0, &out), OVM_NEXT_TIMERS);
        CHECK_EQ(ovm_worker_next(&s, 0, &out), OVM_NEXT_TIMERS);
        CHECK(ovm_timers_pop_due(&s.timers, ovm_now_ns()) == &tm);
        ovm_runq_push(&s, 0, &p);
        sleep_ns(3 * MS);
        ovm_sched_stop(&s);
        CHECK_EQ(ovm_worker_poll(&s, 0, &out), OVM_NEXT_NONE);     /* stopping */
        CHECK_EQ(ovm_worker_next(&s, 0, &out), OVM_NEXT_STOP);
        CHECK_EQ(ovm_worker_next(&s, 1, &out), OVM_NEXT_STOP);
    }
    ovm_sched_destroy(&s);
}

int main(int argc, char **argv) {
    int64_t t0 = ovm_now_ns();
    test_filter = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_sched (%d run queues, %d workers, slice limit %lld ms)\n", NRUNQS, NWORKERS,
           SLICE_LIMIT / MS);
    RUN(test_sched_init_errors);
    RUN(test_sched_2_runqs_4_workers);
    RUN(test_sched_steal);
    RUN(test_sched_sleeper_woken_to_steal);
    RUN(test_sched_thieves_wake_each_other);
    RUN(test_sched_no_spare);
    RUN(test_sched_stop_under_load);
    printf("test_sched: all passed in %.2f s\n", (double)(ovm_now_ns() - t0) / 1e9);
    return 0;
}
