/* Tests of the monitor's judgement in csrc/ovm_sched.c: what counts as an
 * overrun, what is reported, and what is only handed over.
 *
 * One run queue, two workers (one spare), a slice limit of 10 ms, CPython's
 * default switch interval (5 ms), so the hold limit is 100 ms.  The test
 * thread plays the reporter (ovm_sched_next_incident).  Each scenario runs
 * one slow process and a few quick ones queued behind it; checked:
 *   - a slice that spins on the CPU: one RUNNING incident naming its pid,
 *     its run queue handed over, the quick ones done before it ends, then
 *     one END (and a STILL in between when still_after_ns is short);
 *   - a slice asleep in nanosleep: one BLOCKED incident naming the sleep;
 *   - a slice blocked on a mutex held elsewhere (a futex wait that never
 *     wakes): one BLOCKED incident naming the futex;
 *   - a slice that waits like a thread waiting for the GIL (a futex wait
 *     that wakes every switch interval), for less than the hold limit:
 *     neither reported nor handed over; for longer: handed over, still not
 *     reported;
 *   - a slice that spends 3 limits of CPU in housekeeping (garbage
 *     collection): not reported;
 *   - a worker that never registered its CPU clock: judged by wall clock;
 *   - more processes stuck at once than spares: the monitor asks for a
 *     thread per stuck run queue (ovm_sched_take_start), and the extra
 *     threads retire once their slices are over.
 */
#include "test_util.h"

#include <errno.h>

#include "ovm_proc.h"
#include "ovm_sched.h"

#define MS 1000000LL
#define LIMIT (10 * MS)
#define NQUICK 5

enum { QUICK, SPIN, SLEEP, GIL_WAIT, LOCK_WAIT, HOUSEKEEPING, BLOCKING, BLOCKING_THEN_SPIN };

typedef struct {
    ovm_proc p;
    int body;
    int64_t ns;                     /* how long the body takes */
    _Atomic int started, done;
    _Atomic int64_t started_at, done_at;
} tproc;

typedef struct {
    ovm_sched s;
    int reg;                        /* workers register their CPU clock */
    pthread_mutex_t held;           /* LOCK_WAIT blocks on it */
    _Atomic int quick_done;
    _Atomic int64_t first_quick_at; /* when the first quick one ran */
    uint32_t max_workers;           /* worker slots (0: the two started) */
    _Atomic int retired;            /* workers told OVM_NEXT_RETIRE */
} ctx;

typedef struct {
    ctx *c;
    uint32_t id;
} warg;

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* What CPython's take_gil does while another thread holds the GIL: a timed
 * wait of one switch interval, again and again. */
static void gil_like_wait(int64_t ns) {
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t cv;
    pthread_condattr_t attr;
    int64_t end = ovm_now_ns() + ns;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&cv, &attr);
    pthread_condattr_destroy(&attr);
    pthread_mutex_lock(&m);
    while (ovm_now_ns() < end) {
        int64_t t = ovm_now_ns() + 5 * MS;
        struct timespec ts = {t / 1000000000LL, t % 1000000000LL};
        int err = pthread_cond_timedwait(&cv, &m, &ts);
        CHECK(err == 0 || err == ETIMEDOUT);
    }
    pthread_mutex_unlock(&m);
    pthread_cond_destroy(&cv);
}

/* At least ns of CPU, and on until the quick ones ran. */
static void spin(ctx *c, int64_t ns) {
    int64_t start = thread_cpu_ns(), deadline = ovm_now_ns() + 5000 * MS;
    while (thread_cpu_ns() - start < ns ||
           (atomic_load(&c->quick_done) < NQUICK && ovm_now_ns() < deadline))
        ;
}

static void run_body(ctx *c, tproc *t) {
    atomic_store(&t->started_at, ovm_now_ns());
    atomic_store(&t->started, 1);
    switch (t->body) {
    case SPIN:
        spin(c, t->ns);
        break;
    case BLOCKING:
    case BLOCKING_THEN_SPIN:
        /* A wait the process announces, nested as a library's might be. */
        ovm_blocking(1);
        ovm_blocking(1);
        sleep_ns(t->ns);
        ovm_blocking(0);
        ovm_blocking(0);
        if (t->body == BLOCKING_THEN_SPIN)
            spin(c, t->ns);
        break;
    case SLEEP:
        sleep_ns(t->ns);
        break;
    case GIL_WAIT:
        gil_like_wait(t->ns);
        break;
    case LOCK_WAIT:
        pthread_mutex_lock(&c->held);
        pthread_mutex_unlock(&c->held);
        break;
    case HOUSEKEEPING: {
        /* CPU time the VM's housekeeping takes, nested as a collection
         * during a table's growth would be. */
        int64_t start = thread_cpu_ns();
        ovm_housekeeping(1);
        ovm_housekeeping(1);
        while (thread_cpu_ns() - start < t->ns)
            ;
        ovm_housekeeping(0);
        ovm_housekeeping(0);
        break;
    }
    default: {
        int64_t none = 0;
        atomic_compare_exchange_strong(&c->first_quick_at, &none, ovm_now_ns());
        atomic_fetch_add(&c->quick_done, 1);
    }
    }
    atomic_store(&t->done_at, ovm_now_ns());
}

static void *worker_main(void *arg) {
    warg *a = arg;
    ctx *c = a->c;
    ovm_sched *s = &c->s;
    if (c->reg)
        CHECK_EQ(ovm_worker_register(s, a->id), 0);
    for (;;) {
        ovm_proc *p = NULL;
        tproc *t;
        int r = ovm_worker_next(s, a->id, &p);
        if (r == OVM_NEXT_STOP)
            return NULL;
        if (r == OVM_NEXT_RETIRE) {
            atomic_fetch_add(&c->retired, 1);
            return NULL;
        }
        CHECK_EQ(r, OVM_NEXT_PROC);
        t = p->owner;
        CHECK(ovm_proc_begin(p));
        ovm_worker_slice_begin(s, a->id, (uint64_t)(uintptr_t)t);
        run_body(c, t);
        CHECK(ovm_proc_try_wait(p));
        atomic_store(&t->done, 1);      /* `t` is the test's again from here */
        ovm_worker_slice_end(s, a->id);
    }
}

static void start_with(ctx *c, pthread_t *th, warg *wa, int reg, uint32_t max_workers,
                       int64_t gil_interval) {
    memset(c, 0, sizeof(*c));
    c->reg = reg;
    CHECK_EQ(pthread_mutex_init(&c->held, NULL), 0);
    CHECK_EQ(ovm_sched_init(&c->s, 1, 2, max_workers, LIMIT, 0), 0);
    ovm_sched_set_gil_interval(&c->s, gil_interval);
    CHECK_EQ(c->s.hold_limit_ns, 100 * MS);
    CHECK_EQ(ovm_sched_start_monitor(&c->s), 0);
    for (uint32_t i = 0; i < 2; i++) {
        wa[i] = (warg){c, i};
        spawn(&th[i], worker_main, &wa[i]);
    }
}

static void start(ctx *c, pthread_t *th, warg *wa, int reg) {
    start_with(c, th, wa, reg, 2, 5 * MS);
}

static void finish(ctx *c, pthread_t *th) {
    ovm_incident inc;
    ovm_sched_stop(&c->s);
    join(th[0]);
    join(th[1]);
    while (ovm_sched_next_incident(&c->s, &inc, 0) == 1)
        ;
    CHECK_EQ(ovm_sched_next_incident(&c->s, &inc, -1), -1);
    ovm_sched_destroy(&c->s);
    pthread_mutex_destroy(&c->held);
}

static void push(ctx *c, tproc *t) {
    CHECK_EQ(ovm_proc_wake(&t->p), 1);
    ovm_runq_push(&c->s, 0, &t->p);
}

/* Runs `slow` with NQUICK quick processes queued behind it; returns the
 * incidents queued until its slice was over and the monitor had a few more
 * looks (at most `max`).  *overtaken: the quick ones were all done before
 * the slow one (they did not wait for its slice to end). */
static int scenario(ctx *c, tproc *slow, ovm_incident *got, int max, int *overtaken) {
    tproc quick[NQUICK];
    int n = 0;
    int64_t deadline;
    ovm_incident inc;
    ovm_proc_init(&slow->p, slow, 0);
    push(c, slow);
    while (!atomic_load(&slow->started))
        sleep_ns(MS / 10);
    for (int i = 0; i < NQUICK; i++) {
        memset(&quick[i], 0, sizeof(quick[i]));
        ovm_proc_init(&quick[i].p, &quick[i], 0);
        push(c, &quick[i]);
    }
    deadline = ovm_now_ns() + 10000 * MS;
    while (!atomic_load(&slow->done)) {
        CHECKF(ovm_now_ns() < deadline, "the slow process never finished");
        if (ovm_sched_next_incident(&c->s, &inc, MS) == 1) {
            CHECK(n < max);
            got[n++] = inc;
        }
    }
    for (int i = 0; i < NQUICK; i++)
        while (!atomic_load(&quick[i].done)) {
            CHECKF(ovm_now_ns() < deadline, "quick process %d never ran", i);
            sleep_ns(MS / 10);
        }
    /* The monitor closes its view of a slice at its next look. */
    deadline = ovm_now_ns() + 30 * MS;
    while (ovm_now_ns() < deadline)
        if (ovm_sched_next_incident(&c->s, &inc, MS) == 1) {
            CHECK(n < max);
            got[n++] = inc;
        }
    *overtaken = 1;
    for (int i = 0; i < NQUICK; i++)
        if (atomic_load(&quick[i].done_at) >= atomic_load(&slow->done_at))
            *overtaken = 0;
    return n;
}

static void check_overrun(ctx *c, tproc *t, ovm_incident *got, int n, int kind,
                          int overtaken) {
    CHECKF(n == 2, "%d incidents for one overrun", n);
    CHECK_EQ(got[0].kind, kind);
    CHECK_EQ(got[0].pid, (uint64_t)(uintptr_t)t);
    CHECK_EQ(got[0].handed_over, 1);
    CHECK(got[0].cpu_ns >= 0);
    CHECK(got[0].cpu_ns + got[0].blocked_ns >= LIMIT);
    CHECK_EQ(got[1].kind, OVM_LS_END);
    CHECK_EQ(got[1].slice, got[0].slice);
    CHECK(got[1].wall_ns >= got[0].wall_ns);
    CHECK(!ovm_sched_in_slice(&c->s, &got[1]));
    CHECK_EQ(atomic_load(&c->s.overruns), 1);
    CHECK_EQ(atomic_load(&c->s.handoffs), 1);
    CHECKF(overtaken, "the processes behind it waited for its slice to end");
}

static void test_monitor_spin(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = SPIN, .ns = 30 * MS};
    ovm_incident got[8];
    int n, overtaken;
    start(&c, th, wa, 1);
    n = scenario(&c, &t, got, 8, &overtaken);
    check_overrun(&c, &t, got, n, OVM_LS_RUNNING, overtaken);
    CHECK(got[0].cpu_ns < 30 * MS);             /* reported while it ran */
    /* The end's figure is the monitor's last reading before the slice ended:
     * at least the report's, and more unless a loaded machine kept the
     * monitor thread off the CPU for the rest of the spin. */
    CHECK(got[1].cpu_ns >= got[0].cpu_ns);
    finish(&c, th);
    printf(" [reported at %.1f ms of CPU, %.1f ms in; %.1f ms of CPU in all]",
           got[0].cpu_ns / 1e6, got[0].wall_ns / 1e6, got[1].cpu_ns / 1e6);
}

static void test_monitor_sleep(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = SLEEP, .ns = 80 * MS};
    ovm_incident got[8];
    const char *name;
    int n, overtaken;
    start(&c, th, wa, 1);
    n = scenario(&c, &t, got, 8, &overtaken);
    check_overrun(&c, &t, got, n, OVM_LS_BLOCKED, overtaken);
    name = ovm_syscall_name(got[0].syscall);
    CHECKF(name != NULL && strstr(name, "nanosleep") != NULL, "blocked in %ld (%s)",
           got[0].syscall, name ? name : "?");
    CHECK(got[0].blocked_ns < 80 * MS);         /* reported while it slept */
    CHECK(got[0].cpu_ns < LIMIT);
    finish(&c, th);
    printf(" [reported after %.1f ms blocked in %s]", got[0].blocked_ns / 1e6, name);
}

static void test_monitor_lock_wait(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = LOCK_WAIT};
    ovm_incident got[8], inc;
    int n = 0;
    start(&c, th, wa, 1);
    pthread_mutex_lock(&c.held);
    ovm_proc_init(&t.p, &t, 0);
    push(&c, &t);
    /* Wait for the report, then let it go: a futex wait counts only once it
     * has not woken up for three switch intervals (it could be the GIL). */
    while (n == 0)
        if (ovm_sched_next_incident(&c.s, &inc, 1000 * MS) == 1)
            got[n++] = inc;
    CHECK_EQ(got[0].kind, OVM_LS_BLOCKED);
    CHECK(got[0].wall_ns >= 15 * MS);
    CHECK(ovm_syscall_name(got[0].syscall) != NULL);
    CHECK(strcmp(ovm_syscall_name(got[0].syscall), "futex") == 0);
    CHECK(ovm_sched_in_slice(&c.s, &got[0]));
    pthread_mutex_unlock(&c.held);
    while (n < 2)
        if (ovm_sched_next_incident(&c.s, &inc, 1000 * MS) == 1)
            got[n++] = inc;
    CHECK_EQ(got[1].kind, OVM_LS_END);
    CHECK_EQ(atomic_load(&c.s.overruns), 1);
    finish(&c, th);
    printf(" [reported %.1f ms in]", got[0].wall_ns / 1e6);
}

static void test_monitor_more_stuck_than_spares(void) {
    ctx c;
    pthread_t th[4];
    warg wa[4];
    tproc t[3];
    ovm_incident inc;
    int blocked = 0, ends = 0, started = 2, i;
    int64_t deadline;
    start_with(&c, th, wa, 1, 4, 5 * MS);
    pthread_mutex_lock(&c.held);
    for (i = 0; i < 3; i++) {
        memset(&t[i], 0, sizeof(t[i]));
        t[i].body = LOCK_WAIT;
        ovm_proc_init(&t[i].p, &t[i], 0);
        push(&c, &t[i]);
    }
    /* The first is rescued by the spare, the next two each by a new thread
     * the test starts when asked (the last one then serves the run queue). */
    deadline = ovm_now_ns() + 10000 * MS;
    while (blocked < 3 || started < 4) {
        int got = ovm_sched_next_incident(&c.s, &inc, 100 * MS);
        CHECKF(ovm_now_ns() < deadline, "stuck: %d reported, %d threads", blocked, started);
        if (got == 2) {
            int w;
            while ((w = ovm_sched_take_start(&c.s)) >= 0) {
                CHECK(started < 4);
                CHECK_EQ(w, started);
                wa[w] = (warg){&c, (uint32_t)w};
                spawn(&th[w], worker_main, &wa[w]);
                started++;
            }
        } else if (got == 1) {
            CHECK_EQ(inc.kind, OVM_LS_BLOCKED);
            CHECK(inc.handed_over);
            blocked++;
        }
    }
    CHECK_EQ(atomic_load(&c.s.threads), 4);
    CHECK_EQ(ovm_sched_take_start(&c.s), -1);
    pthread_mutex_unlock(&c.held);
    while (ends < 3 || atomic_load(&c.retired) < 2) {
        CHECKF(ovm_now_ns() < deadline, "%d ended, %d retired", ends, atomic_load(&c.retired));
        if (ovm_sched_next_incident(&c.s, &inc, 10 * MS) == 1) {
            CHECK_EQ(inc.kind, OVM_LS_END);
            ends++;
        }
    }
    /* One spare is kept, and one thread serves the run queue. */
    CHECK_EQ(atomic_load(&c.s.threads), 2);
    for (i = 0; i < 3; i++)
        CHECK(atomic_load(&t[i].done));
    ovm_sched_stop(&c.s);
    for (i = 0; i < 4; i++)
        join(th[i]);
    while (ovm_sched_next_incident(&c.s, &inc, 0) > 0)
        ;
    ovm_sched_destroy(&c.s);
    pthread_mutex_destroy(&c.held);
}

static void test_monitor_gil_wait(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = GIL_WAIT, .ns = 60 * MS};
    ovm_incident got[8];
    int n, overtaken;
    /* The wait wakes every 5 ms, as a GIL waiter does; the monitor is told
     * 10 ms, so that a wake-up delayed by a loaded machine (CI runs this
     * beside a test suite) by up to 25 ms is still not taken for the
     * process's own wait.  The hold limit stays 100 ms. */
    start_with(&c, th, wa, 1, 2, 10 * MS);
    /* Six times the limit, under the hold limit: not the process's doing. */
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 0, "a GIL-like wait was reported (kind %d)", got[0].kind);
    CHECK_EQ(atomic_load(&c.s.handoffs), 0);
    /* Past the hold limit: handed over, still not reported. */
    t = (tproc){.body = GIL_WAIT, .ns = 250 * MS};
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 0, "a GIL-like wait was reported (kind %d)", got[0].kind);
    CHECK_EQ(atomic_load(&c.s.handoffs), 1);
    CHECK_EQ(atomic_load(&c.s.overruns), 0);
    CHECKF(overtaken, "the processes behind it waited for its slice to end");
    finish(&c, th);
}

static void test_monitor_housekeeping(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = HOUSEKEEPING, .ns = 3 * LIMIT};
    ovm_incident got[8];
    int n, overtaken;
    start(&c, th, wa, 1);
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 0, "housekeeping was reported (kind %d, %.1f ms of CPU, %.1f ms excused)",
           got[0].kind, got[0].cpu_ns / 1e6, got[0].house_ns / 1e6);
    CHECK_EQ(atomic_load(&c.s.overruns), 0);
    /* The same CPU time, not marked: an overrun. */
    t = (tproc){.body = SPIN, .ns = 3 * LIMIT};
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECK(n == 2 && got[0].kind == OVM_LS_RUNNING);
    finish(&c, th);
}

/* A blocking section loses its run queue at once, unreported; the slice's
 * own CPU time after it is still judged. */
static void test_monitor_blocking(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = BLOCKING, .ns = 3 * LIMIT};
    ovm_incident got[8];
    int n, overtaken;
    int64_t handed_after;
    start(&c, th, wa, 1);
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 0, "a blocking section was reported (kind %d)", got[0].kind);
    CHECK_EQ(atomic_load(&c.s.handoffs), 1);
    CHECK_EQ(atomic_load(&c.s.overruns), 0);
    CHECKF(overtaken, "the processes behind it waited for its slice to end");
    /* Handed over at once, not after a slice limit of judging: the first
     * quick one ran well inside that limit. */
    handed_after = atomic_load(&c.first_quick_at) - atomic_load(&t.started_at);
    CHECKF(handed_after < LIMIT, "the run queue was handed over after %.1f ms",
           handed_after / 1e6);
    finish(&c, th);
    printf(" [handed over after %.2f ms]", handed_after / 1e6);
    /* Blocked, then 3 limits of CPU in the same slice: one overrun. */
    start(&c, th, wa, 1);
    t = (tproc){.body = BLOCKING_THEN_SPIN, .ns = 3 * LIMIT};
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 2 && got[0].kind == OVM_LS_RUNNING, "%d incidents, the first of kind %d", n,
           n ? got[0].kind : 0);
    CHECK(got[0].cpu_ns >= LIMIT && got[0].blocked_ns < LIMIT);
    CHECK_EQ(atomic_load(&c.s.handoffs), 1);
    finish(&c, th);
}

static void test_monitor_still(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = SPIN, .ns = 100 * MS};
    ovm_incident got[8];
    int n, overtaken;
    start(&c, th, wa, 1);
    c.s.still_after_ns = 40 * MS;   /* then 400 ms, which a busy machine may reach */
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 3 || n == 4, "%d incidents", n);
    CHECK_EQ(got[0].kind, OVM_LS_RUNNING);
    for (int i = 1; i < n - 1; i++) {
        CHECK_EQ(got[i].kind, OVM_LS_STILL);
        CHECK(got[i].wall_ns >= (i == 1 ? 40 : 400) * MS);
    }
    CHECK_EQ(got[n - 1].kind, OVM_LS_END);
    CHECK(got[n - 1].wall_ns < (n == 3 ? 400 : 4000) * MS + 100 * MS);
    finish(&c, th);
}

static void test_monitor_unregistered(void) {
    ctx c;
    pthread_t th[2];
    warg wa[2];
    tproc t = {.body = SLEEP, .ns = 40 * MS};
    ovm_incident got[8];
    int n, overtaken;
    start(&c, th, wa, 0);
    n = scenario(&c, &t, got, 8, &overtaken);
    CHECKF(n == 2, "%d incidents", n);
    CHECK_EQ(got[0].kind, OVM_LS_RUNNING);
    CHECK_EQ(got[0].cpu_ns, -1);
    CHECK(got[0].wall_ns >= LIMIT);
    finish(&c, th);
}

/* The worker side's own clock: a slice is told to end after a quarter of the limit
 * from its first question, asked again sooner the slower its reductions
 * are, and a new slice starts afresh. */
static void test_monitor_slice_overdue(void) {
    /* A limit of 400 ms: 100 ms to the answer, margins for a busy machine. */
    ovm_sched s;
    ovm_worker *w;
    int next = 0;
    CHECK_EQ(ovm_sched_init(&s, 1, 1, 1, 400 * MS, 0), 0);
    w = ovm_sched_worker(&s, 0);
    CHECK_EQ(ovm_slice_overdue(NULL, 0, &next), 0);
    ovm_worker_slice_begin(&s, 0, 1);
    CHECK_EQ(ovm_slice_overdue(w, 0, &next), 0);    /* the first question starts the clock */
    CHECK_EQ(next, 4);
    CHECK_EQ(ovm_slice_overdue(w, 100000, &next), 0);
    CHECK_EQ(next, 16);                             /* quick reductions: every 16 */
    sleep_ns(40 * MS);
    CHECK_EQ(ovm_slice_overdue(w, 100001, &next), 0);
    CHECK_EQ(next, 1);                              /* a slow one: ask at each */
    sleep_ns(70 * MS);
    CHECK_EQ(ovm_slice_overdue(w, 100002, &next), 1);
    CHECK_EQ(ovm_worker_slice_end(&s, 0), 0);
    ovm_worker_slice_begin(&s, 0, 2);
    CHECK_EQ(ovm_slice_overdue(w, 0, &next), 0);    /* a new slice, a new clock */
    CHECK_EQ(ovm_worker_slice_end(&s, 0), 0);
    ovm_sched_stop(&s);
    ovm_sched_destroy(&s);
}

int main(int argc, char **argv) {
    int64_t t0 = ovm_now_ns();
    test_filter = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_monitor (slice limit %lld ms)\n", LIMIT / MS);
    RUN(test_monitor_slice_overdue);
    RUN(test_monitor_spin);
    RUN(test_monitor_sleep);
    RUN(test_monitor_lock_wait);
    RUN(test_monitor_gil_wait);
    RUN(test_monitor_more_stuck_than_spares);
    RUN(test_monitor_housekeeping);
    RUN(test_monitor_blocking);
    RUN(test_monitor_still);
    RUN(test_monitor_unregistered);
    printf("test_monitor: all passed in %.2f s\n", (double)(ovm_now_ns() - t0) / 1e9);
    return 0;
}
