/* Tests of csrc/ovm_timer.c: the min-heap of deadlines.
 *   - random add / cancel / pop_due against a reference model: deadlines come
 *     out in order, only due ones, each once; cancel returns 1 exactly once
 *     and never for a fired timer; `earliest` and ovm_timers_next() agree
 *     with the model; heap shape and back-indices stay consistent;
 *   - a large heap (growth past the first allocation) drained in order;
 *   - several threads adding and cancelling while another pops due timers:
 *     every timer ends exactly once, either cancelled or fired. */
#include "test_util.h"

#include <sched.h>
#include <string.h>

#include "ovm_timer.h"

static void timer_init(ovm_timer *t, int64_t deadline, void *payload) {
    t->deadline = deadline;
    t->id = ovm_next_id();
    t->index = SIZE_MAX;
    t->payload = payload;
}

/* Heap property and back-indices (single-threaded use only). */
static void check_heap(ovm_timers *t) {
    for (size_t i = 0; i < t->len; i++) {
        CHECK(t->heap[i]->index == i);
        if (i > 0)
            CHECK(t->heap[(i - 1) / 2]->deadline <= t->heap[i]->deadline);
    }
    CHECK_EQ(ovm_timers_next(t), t->len ? t->heap[0]->deadline : OVM_NEVER);
}

enum { M = 256 };

typedef struct {
    ovm_timer tm[M];
    int in[M];          /* model: in the heap */
    int count;
} model;

static int64_t model_min(model *m) {
    int64_t best = OVM_NEVER;
    for (int i = 0; i < M; i++)
        if (m->in[i] && m->tm[i].deadline < best)
            best = m->tm[i].deadline;
    return best;
}

static void test_timers_random_model(void) {
    static model m;
    ovm_timers t;
    uint64_t rng = 0xfeedface;
    int64_t now = 1000, last_popped = INT64_MIN;
    uint64_t adds = 0, cancels = 0, pops = 0;
    memset(&m, 0, sizeof(m));
    for (int i = 0; i < M; i++)
        timer_init(&m.tm[i], 0, &m.tm[i]);
    CHECK_EQ(ovm_timers_init(&t), 0);
    CHECK_EQ(ovm_timers_next(&t), OVM_NEVER);
    CHECK(ovm_timers_pop_due(&t, INT64_MAX - 1) == NULL);
    CHECK(ovm_timers_pop_any(&t) == NULL);
    CHECK_EQ(ovm_timers_cancel(&t, &m.tm[0]), 0);        /* never added */

    for (int op = 0; op < 60000; op++) {
        uint64_t r = rng_below(&rng, 100);
        int k = (int)rng_below(&rng, M);
        if (r < 45) {
            if (!m.in[k]) {
                int64_t min = model_min(&m);
                int earliest = -1;
                /* Small range: many equal deadlines. */
                m.tm[k].deadline = now + (int64_t)rng_below(&rng, 600);
                CHECK_EQ(ovm_timers_add(&t, &m.tm[k], &earliest), 0);
                CHECK_EQ(earliest, min == OVM_NEVER || m.tm[k].deadline < min);
                m.in[k] = 1;
                m.count++;
                adds++;
            }
        } else if (r < 70) {
            int was_in, tries;
            for (tries = 0; tries < 4 && !m.in[k]; tries++)   /* mostly hit live ones */
                k = (int)rng_below(&rng, M);
            was_in = m.in[k];
            CHECK_EQ(ovm_timers_cancel(&t, &m.tm[k]), was_in);
            CHECK_EQ(ovm_timers_cancel(&t, &m.tm[k]), 0);  /* only once */
            CHECK(m.tm[k].index == SIZE_MAX);
            if (was_in) {
                m.in[k] = 0;
                m.count--;
                cancels++;
            }
        } else {
            ovm_timer *x;
            now += (int64_t)rng_below(&rng, 40);
            while ((x = ovm_timers_pop_due(&t, now)) != NULL) {
                int i = (int)(x - m.tm);
                CHECK(i >= 0 && i < M && x == &m.tm[i]);
                CHECKF(m.in[i], "popped a timer that is not in (cancelled or popped)");
                CHECK(x->deadline <= now);
                CHECK_EQ(x->deadline, model_min(&m));      /* the earliest */
                CHECK(x->deadline >= last_popped);         /* in order */
                CHECK(x->index == SIZE_MAX);
                CHECK(x->payload == x);
                last_popped = x->deadline;
                m.in[i] = 0;
                m.count--;
                pops++;
                CHECK_EQ(ovm_timers_cancel(&t, x), 0);     /* fired: too late */
            }
            CHECK(model_min(&m) > now);                    /* nothing due left */
        }
        CHECK_EQ(t.len, m.count);
        CHECK_EQ(ovm_timers_len(&t), m.count);
        CHECK_EQ(ovm_timers_next(&t), model_min(&m));
        if ((op & 15) == 0)
            check_heap(&t);
    }
    /* Teardown: pop_any drains in order, then destroy. */
    {
        ovm_timer *x;
        int64_t prev = INT64_MIN;
        int n = 0;
        while ((x = ovm_timers_pop_any(&t)) != NULL) {
            int i = (int)(x - m.tm);
            CHECK(m.in[i]);
            CHECK(x->deadline >= prev);
            prev = x->deadline;
            m.in[i] = 0;
            n++;
        }
        CHECK_EQ(n, m.count);
        CHECK_EQ(ovm_timers_next(&t), OVM_NEVER);
    }
    ovm_timers_destroy(&t);
    CHECK(adds > 10000 && cancels > 3000 && pops > 10000);
    printf(" [%llu adds, %llu cancels, %llu fired]", (unsigned long long)adds,
           (unsigned long long)cancels, (unsigned long long)pops);
}

static void test_timers_large_heap(void) {
    enum { N = 20000 };
    ovm_timer *tm = calloc(N, sizeof(*tm));
    char *cancelled = calloc(N, 1), *fired = calloc(N, 1);
    ovm_timers t;
    uint64_t rng = 42;
    int64_t prev = INT64_MIN;
    int ncancel = 0, nfired = 0, earliest;
    CHECK(tm && cancelled && fired);
    CHECK_EQ(ovm_timers_init(&t), 0);
    for (int i = 0; i < N; i++) {
        timer_init(&tm[i], (int64_t)rng_below(&rng, 1000000), NULL);
        CHECK_EQ(ovm_timers_add(&t, &tm[i], &earliest), 0);
    }
    check_heap(&t);
    for (int i = 0; i < N; i += 3) {
        CHECK_EQ(ovm_timers_cancel(&t, &tm[i]), 1);
        cancelled[i] = 1;
        ncancel++;
    }
    check_heap(&t);
    /* Half way, then the rest. */
    for (int64_t now = 500000;; now = INT64_MAX - 1) {
        ovm_timer *x;
        while ((x = ovm_timers_pop_due(&t, now)) != NULL) {
            int i = (int)(x - tm);
            CHECK(!cancelled[i] && !fired[i]);
            CHECK(x->deadline <= now && x->deadline >= prev);
            prev = x->deadline;
            fired[i] = 1;
            nfired++;
        }
        if (now == INT64_MAX - 1)
            break;
        CHECK(ovm_timers_next(&t) > now);
        check_heap(&t);
    }
    CHECK_EQ(nfired + ncancel, N);
    CHECK_EQ(t.len, 0);
    for (int i = 0; i < N; i++)
        CHECK_EQ(ovm_timers_cancel(&t, &tm[i]), 0);
    /* Re-adding a fired timer works. */
    CHECK_EQ(ovm_timers_add(&t, &tm[1], &earliest), 0);
    CHECK_EQ(earliest, 1);
    CHECK_EQ(ovm_timers_cancel(&t, &tm[1]), 1);
    ovm_timers_destroy(&t);
    free(tm);
    free(cancelled);
    free(fired);
}

/* Concurrent adders/cancellers and a popper. */
enum { CT = 4, PER = 1500 };

typedef struct {
    ovm_timers t;
    ovm_timer tm[CT][PER];
    _Atomic int ended[CT][PER];     /* cancelled or fired: must reach exactly 1 */
    _Atomic int adders_done;
    _Atomic uint64_t fired, cancelled;
} cctx;

typedef struct {
    cctx *c;
    int id;
} carg;

static void *adder_main(void *arg) {
    carg *a = arg;
    cctx *c = a->c;
    uint64_t rng = 0xabc + (uint64_t)a->id;
    for (int i = 0; i < PER; i++) {
        ovm_timer *x = &c->tm[a->id][i];
        int earliest;
        timer_init(x, ovm_now_ns() + (int64_t)rng_below(&rng, 3000000), x);
        CHECK_EQ(ovm_timers_add(&c->t, x, &earliest), 0);
        /* Cancel an earlier one of ours now and then. */
        if (rng_below(&rng, 3) == 0) {
            int j = (int)rng_below(&rng, (uint64_t)i + 1);
            if (ovm_timers_cancel(&c->t, &c->tm[a->id][j])) {
                CHECKF(atomic_fetch_add(&c->ended[a->id][j], 1) == 0,
                       "cancelled a timer that had already ended");
                atomic_fetch_add(&c->cancelled, 1);
            }
        }
    }
    atomic_fetch_add(&c->adders_done, 1);
    return NULL;
}

static void *popper_main(void *arg) {
    cctx *c = arg;
    for (;;) {
        int done = atomic_load(&c->adders_done) == CT;
        ovm_timer *x;
        int any = 0;
        while ((x = ovm_timers_pop_due(&c->t, ovm_now_ns())) != NULL) {
            ovm_timer *base = &c->tm[0][0];
            long i = x - base;
            CHECK(i >= 0 && i < CT * PER && x->payload == x);
            CHECK(x->deadline <= ovm_now_ns());
            CHECKF(atomic_fetch_add(&c->ended[i / PER][i % PER], 1) == 0,
                   "fired a timer that had already ended");
            atomic_fetch_add(&c->fired, 1);
            any = 1;
        }
        if (done && ovm_timers_next(&c->t) == OVM_NEVER)
            break;
        if (!any) {
            CHECK(ovm_timers_len(&c->t) <= (size_t)CT * PER);
            sleep_ns(50000);
        }
    }
    return NULL;
}

static void test_timers_concurrent(void) {
    cctx *c = calloc(1, sizeof(*c));
    pthread_t adders[CT], popper;
    carg args[CT];
    CHECK(c != NULL);
    CHECK_EQ(ovm_timers_init(&c->t), 0);
    spawn(&popper, popper_main, c);
    for (int i = 0; i < CT; i++) {
        args[i] = (carg){c, i};
        spawn(&adders[i], adder_main, &args[i]);
    }
    for (int i = 0; i < CT; i++)
        join(adders[i]);
    join(popper);
    for (int i = 0; i < CT; i++)
        for (int j = 0; j < PER; j++)
            CHECKF(atomic_load(&c->ended[i][j]) == 1, "timer %d/%d ended %d times", i, j,
                   atomic_load(&c->ended[i][j]));
    CHECK_EQ(atomic_load(&c->fired) + atomic_load(&c->cancelled), CT * PER);
    CHECK(ovm_timers_pop_any(&c->t) == NULL);
    CHECK_EQ(ovm_timers_len(&c->t), 0);
    printf(" [%llu fired, %llu cancelled]", (unsigned long long)atomic_load(&c->fired),
           (unsigned long long)atomic_load(&c->cancelled));
    ovm_timers_destroy(&c->t);
    free(c);
}

int main(int argc, char **argv) {
    int64_t t0 = ovm_now_ns();
    test_filter = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_timers\n");
    RUN(test_timers_random_model);
    RUN(test_timers_large_heap);
    RUN(test_timers_concurrent);
    printf("test_timers: all passed in %.2f s\n", (double)(ovm_now_ns() - t0) / 1e9);
    return 0;
}
