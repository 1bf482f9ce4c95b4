/* Tests of csrc/ovm_mailbox.c: the many-writer inbox (push / take / close)
 * and the owner's private queue (unlink, receive marker). */
#include "test_util.h"

#include <sched.h>
#include <string.h>

#include "ovm_mailbox.h"

#ifndef NPROD
#define NPROD 8
#endif
#ifndef NPER
#define NPER 100000
#endif

/* A payload names its producer and its sequence number. */
static void *tag(uint32_t prod, uint32_t seq) {
    return (void *)(uintptr_t)(((uint64_t)prod << 32) | seq);
}
static uint32_t tag_prod(void *p) { return (uint32_t)((uint64_t)(uintptr_t)p >> 32); }
static uint32_t tag_seq(void *p) { return (uint32_t)(uintptr_t)p; }

/* ------------------------------------------------------------------ */
/* 8 producers x 100k nodes into one inbox, one owner taking batches. */

typedef struct {
    ovm_inbox box;
    pthread_barrier_t go;
    /* close test */
    _Atomic int closed;          /* set by main once ovm_inbox_close returned */
    _Atomic int owner_stop;
    _Atomic uint64_t owner_received;
    uint64_t accepted[NPROD];    /* written by producer i, read after join */
    uint32_t owner_next[NPROD];  /* owner's expected next seq; read after join */
    uint64_t batches;
} mb_ctx;

typedef struct {
    mb_ctx *c;
    uint32_t id;
} prod_arg;

static void *fifo_producer(void *arg) {
    prod_arg *a = arg;
    uint32_t seq;
    pthread_barrier_wait(&a->c->go);
    for (seq = 0; seq < NPER; seq++) {
        ovm_node *n = ovm_node_new(tag(a->id, seq), (int)(seq % 7));
        CHECK(n != NULL);
        CHECK_EQ(ovm_inbox_push(&a->c->box, n), 0);
        if ((seq & 1023) == 1023)
            sched_yield();      /* let the owner interleave its takes */
    }
    drain_node_cache();
    return NULL;
}

/* Checks that `n` is the next node expected from its producer. */
static void expect_next(uint32_t *next, ovm_node *n) {
    uint32_t prod = tag_prod(n->payload), seq = tag_seq(n->payload);
    CHECKF(prod < NPROD, "bad producer %u", prod);
    CHECKF(seq == next[prod], "producer %u: got seq %u, expected %u (%s)", prod, seq,
           next[prod], seq < next[prod] ? "duplicate/reordered" : "lost/reordered");
    CHECK_EQ(n->kind, (int)(seq % 7));
    next[prod]++;
}

static void *fifo_owner(void *arg) {
    mb_ctx *c = arg;
    const uint64_t total = (uint64_t)NPROD * NPER;
    uint64_t received = 0;
    uint32_t next[NPROD] = {0};
    ovm_queue q;
    ovm_queue_init(&q);
    pthread_barrier_wait(&c->go);
    while (received < total) {
        ovm_node *batch = ovm_inbox_take(&c->box), *n, *prev, *nx;
        size_t nbatch = 0, odd = 0;
        if (batch == NULL) {
            sched_yield();
            continue;
        }
        c->batches++;
        for (n = batch; n != NULL; n = nx) {
            nx = n->next;
            ovm_queue_append(&q, n);
            nbatch++;
            odd += tag_prod(n->payload) & 1;
        }
        received += nbatch;
        CHECKF(received <= total, "received %llu > %llu", (unsigned long long)received,
               (unsigned long long)total);
        CHECK_EQ(q.len, nbatch);
        /* Selective receive, first pass: take the odd producers' nodes out of
         * the middle of the queue. */
        prev = NULL;
        for (n = q.head; n != NULL; n = nx) {
            nx = n->next;
            if (tag_prod(n->payload) & 1) {
                ovm_queue_unlink(&q, prev, n);
                CHECK(n->next == NULL);
                expect_next(next, n);
                ovm_node_free(n);
            } else {
                prev = n;
            }
        }
        CHECK_EQ(q.len, nbatch - odd);
        CHECK(q.tail == prev);
        /* Second pass: the rest, from the head. */
        while ((n = q.head) != NULL) {
            ovm_queue_unlink(&q, NULL, n);
            expect_next(next, n);
            ovm_node_free(n);
        }
        CHECK_EQ(q.len, 0);
        CHECK(q.tail == NULL);
    }
    for (uint32_t i = 0; i < NPROD; i++)
        CHECK_EQ(next[i], NPER);
    CHECK(ovm_inbox_take(&c->box) == NULL);
    drain_node_cache();
    return NULL;
}

static void test_inbox_many_producers_fifo(void) {
    mb_ctx c;
    pthread_t prod[NPROD], owner;
    prod_arg args[NPROD];
    memset(&c, 0, sizeof(c));
    CHECK_EQ(ovm_inbox_init(&c.box), 0);
    CHECK_EQ(pthread_barrier_init(&c.go, NULL, NPROD + 1), 0);
    spawn(&owner, fifo_owner, &c);
    for (uint32_t i = 0; i < NPROD; i++) {
        args[i].c = &c;
        args[i].id = i;
        spawn(&prod[i], fifo_producer, &args[i]);
    }
    for (uint32_t i = 0; i < NPROD; i++)
        join(prod[i]);
    join(owner);
    CHECK(c.batches >= 1);
    CHECK_EQ(ovm_inbox_len(&c.box), 0);
    CHECK(ovm_inbox_close(&c.box) == NULL);
    ovm_inbox_destroy(&c.box);
    pthread_barrier_destroy(&c.go);
    printf(" [%llu batches]", (unsigned long long)c.batches);
}

/* ------------------------------------------------------------------ */
/* Close while producers still push. */

#define CLOSE_AFTER 20000     /* nodes the owner must have seen before close */
#define PUSHES_AFTER_FAIL 300

static void *close_producer(void *arg) {
    prod_arg *a = arg;
    mb_ctx *c = a->c;
    uint32_t seq = 0;
    int k;
    pthread_barrier_wait(&c->go);
    for (;;) {
        int was_closed = atomic_load(&c->closed);
        ovm_node *n = ovm_node_new(tag(a->id, seq), (int)(seq % 7));
        CHECK(n != NULL);
        if (ovm_inbox_push(&c->box, n) != 0) {
            /* Refused: the node is still ours, untouched. */
            CHECK(tag_prod(n->payload) == a->id && tag_seq(n->payload) == seq);
            CHECK_EQ(n->kind, (int)(seq % 7));
            ovm_node_free(n);
            break;
        }
        CHECKF(!was_closed, "producer %u: push accepted after close returned", a->id);
        seq++;
    }
    c->accepted[a->id] = seq;
    /* Once refused, refused for good. */
    for (k = 0; k < PUSHES_AFTER_FAIL; k++) {
        ovm_node *n = ovm_node_new(tag(a->id, seq + 1 + (uint32_t)k), OVM_SIG_LINK);
        CHECK(n != NULL);
        CHECKF(ovm_inbox_push(&c->box, n) == -1, "producer %u: push accepted after a refusal",
               a->id);
        CHECK_EQ(n->kind, OVM_SIG_LINK);
        ovm_node_free(n);
    }
    drain_node_cache();
    return NULL;
}

static void *close_owner(void *arg) {
    mb_ctx *c = arg;
    pthread_barrier_wait(&c->go);
    for (;;) {
        int stop = atomic_load(&c->owner_stop);
        ovm_node *n = ovm_inbox_take(&c->box), *nx;
        if (n == NULL) {
            if (stop)
                break;
            sched_yield();
            continue;
        }
        for (; n != NULL; n = nx) {
            nx = n->next;
            expect_next(c->owner_next, n);
            ovm_node_free(n);
            atomic_fetch_add(&c->owner_received, 1);
        }
    }
    drain_node_cache();
    return NULL;
}

static void test_inbox_close_while_pushing(void) {
    mb_ctx c;
    pthread_t prod[NPROD], owner;
    prod_arg args[NPROD];
    ovm_node *rest, *n, *nx;
    uint64_t in_rest = 0;
    memset(&c, 0, sizeof(c));
    CHECK_EQ(ovm_inbox_init(&c.box), 0);
    CHECK_EQ(pthread_barrier_init(&c.go, NULL, NPROD + 1), 0);
    spawn(&owner, close_owner, &c);
    for (uint32_t i = 0; i < NPROD; i++) {
        args[i].c = &c;
        args[i].id = i;
        spawn(&prod[i], close_producer, &args[i]);
    }
    while (atomic_load(&c.owner_received) < CLOSE_AFTER)
        sleep_ns(100000);
    rest = ovm_inbox_close(&c.box);
    atomic_store(&c.closed, 1);
    for (uint32_t i = 0; i < NPROD; i++)
        join(prod[i]);
    atomic_store(&c.owner_stop, 1);
    join(owner);

    /* What close returned continues exactly where the owner stopped. */
    for (n = rest; n != NULL; n = nx) {
        nx = n->next;
        expect_next(c.owner_next, n);
        ovm_node_free(n);
        in_rest++;
    }
    for (uint32_t i = 0; i < NPROD; i++)
        CHECKF(c.owner_next[i] == c.accepted[i], "producer %u: %u delivered, %llu accepted", i,
               c.owner_next[i], (unsigned long long)c.accepted[i]);

    /* Closed: nothing queued, nothing taken, pushes refused, close idempotent. */
    CHECK_EQ(ovm_inbox_len(&c.box), 0);
    CHECK(ovm_inbox_take(&c.box) == NULL);
    n = ovm_node_new(tag(0, 0), OVM_SIG_EXIT);
    CHECK_EQ(ovm_inbox_push(&c.box, n), -1);
    CHECK(n->payload == tag(0, 0) && n->kind == OVM_SIG_EXIT);
    ovm_node_free(n);
    CHECK(ovm_inbox_close(&c.box) == NULL);
    ovm_inbox_destroy(&c.box);
    pthread_barrier_destroy(&c.go);
    printf(" [%llu taken, %llu at close]",
           (unsigned long long)atomic_load(&c.owner_received), (unsigned long long)in_rest);
}

/* ------------------------------------------------------------------ */
/* Private queue unit tests. */

#define QMAX 16

typedef struct {
    ovm_queue q;
    ovm_node *n[QMAX + 1];      /* n[i] carries payload i */
} qfix;

static void qfix_init(qfix *f, int count) {
    ovm_queue_init(&f->q);
    memset(f->n, 0, sizeof(f->n));
    for (int i = 1; i <= QMAX; i++) {
        f->n[i] = ovm_node_new((void *)(uintptr_t)i, OVM_SIG_MESSAGE);
        CHECK(f->n[i] != NULL);
        f->n[i]->next = (ovm_node *)(uintptr_t)0xdead;   /* append must reset it */
    }
    for (int i = 1; i <= count; i++)
        ovm_queue_append(&f->q, f->n[i]);
}

static void qfix_free(qfix *f) {
    for (int i = 1; i <= QMAX; i++)
        ovm_node_free(f->n[i]);
}

static int pl(ovm_node *n) { return n == NULL ? 0 : (int)(uintptr_t)n->payload; }

/* Checks the queue holds exactly the payloads in `want` (0-terminated). */
static void qexpect(ovm_queue *q, const int *want) {
    ovm_node *n = q->head, *last = NULL;
    size_t k = 0;
    for (; want[k] != 0; k++) {
        CHECKF(n != NULL, "queue ends at %zu", k);
        CHECKF(pl(n) == want[k], "at %zu: %d, expected %d", k, pl(n), want[k]);
        last = n;
        n = n->next;
    }
    CHECKF(n == NULL, "extra node %d", pl(n));
    CHECK(q->tail == last);
    CHECK_EQ(q->len, k);
}

#define QEXPECT(q, ...)                                                      \
    do {                                                                     \
        const int _w[] = {__VA_ARGS__, 0};                                   \
        qexpect((q), _w);                                                    \
    } while (0)

static void expect_start(ovm_queue *q, int want, int want_prev) {
    ovm_node *prev = (ovm_node *)(uintptr_t)0xbad;
    ovm_node *start = ovm_queue_marked_start(q, &prev);
    CHECKF(pl(start) == want && pl(prev) == want_prev,
           "marked_start = %d (prev %d), expected %d (prev %d)", pl(start), pl(prev), want,
           want_prev);
    CHECK(prev == NULL ? start == q->head : prev->next == start);
}

/* The inbox counts what is not a message, so that a reader can tell when
 * it need not walk it (process_info). */
static void test_inbox_counts_signals(void) {
    ovm_inbox box;
    int kinds[] = {OVM_SIG_MESSAGE, OVM_SIG_LINK, OVM_SIG_DOWN, OVM_SIG_ALIAS, OVM_SIG_EXIT};
    ovm_node *n, *nx;
    CHECK_EQ(ovm_inbox_init(&box), 0);
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 5; i++)
            CHECK_EQ(ovm_inbox_push(&box, ovm_node_new(NULL, kinds[i])), 0);
        CHECK_EQ(ovm_inbox_len(&box), 5);
        CHECK_EQ(ovm_inbox_signals(&box), 2);      /* the link and the exit */
        n = round == 0 ? ovm_inbox_take(&box) : ovm_inbox_close(&box);
        CHECK_EQ(ovm_inbox_signals(&box), 0);
        for (; n != NULL; n = nx) {
            nx = n->next;
            ovm_node_free(n);
        }
    }
    ovm_inbox_destroy(&box);
    ovm_node_cache_clear();
}

static void test_queue_unlink(void) {
    qfix f;
    qfix_init(&f, 5);
    QEXPECT(&f.q, 1, 2, 3, 4, 5);
    ovm_queue_unlink(&f.q, f.n[2], f.n[3]);        /* middle */
    CHECK(f.n[3]->next == NULL);
    QEXPECT(&f.q, 1, 2, 4, 5);
    ovm_queue_unlink(&f.q, NULL, f.n[1]);          /* head */
    QEXPECT(&f.q, 2, 4, 5);
    ovm_queue_unlink(&f.q, f.n[4], f.n[5]);        /* tail */
    QEXPECT(&f.q, 2, 4);
    ovm_queue_append(&f.q, f.n[6]);                /* append after a tail removal */
    QEXPECT(&f.q, 2, 4, 6);
    ovm_queue_unlink(&f.q, f.n[2], f.n[4]);
    ovm_queue_unlink(&f.q, f.n[2], f.n[6]);
    QEXPECT(&f.q, 2);
    ovm_queue_unlink(&f.q, NULL, f.n[2]);          /* the only node */
    CHECK(f.q.head == NULL && f.q.tail == NULL && f.q.len == 0);
    ovm_queue_append(&f.q, f.n[7]);                /* append to an emptied queue */
    QEXPECT(&f.q, 7);
    CHECK(f.q.head == f.q.tail);
    CHECK(ovm_queue_take_all(&f.q) == f.n[7]);
    CHECK(f.q.head == NULL && f.q.tail == NULL && f.q.len == 0);
    qfix_free(&f);
}

static void test_queue_marker(void) {
    qfix f;

    /* Not marked: scans start at the head. */
    qfix_init(&f, 3);
    expect_start(&f.q, 1, 0);
    qfix_free(&f);

    /* marked_start starts after the marker. */
    qfix_init(&f, 2);
    ovm_queue_mark(&f.q);
    expect_start(&f.q, 0, 2);                      /* nothing arrived yet */
    ovm_queue_append(&f.q, f.n[3]);
    ovm_queue_append(&f.q, f.n[4]);
    expect_start(&f.q, 3, 2);
    /* Removing a node after the marker does not move it. */
    ovm_queue_unlink(&f.q, f.n[2], f.n[3]);
    expect_start(&f.q, 4, 2);
    /* Removing a node before the marker does not move it either. */
    ovm_queue_unlink(&f.q, NULL, f.n[1]);
    expect_start(&f.q, 4, 2);
    qfix_free(&f);

    /* The marker survives removal of the marked node. */
    qfix_init(&f, 3);
    ovm_queue_mark(&f.q);                          /* marker = 3 */
    ovm_queue_append(&f.q, f.n[4]);
    ovm_queue_append(&f.q, f.n[5]);
    ovm_queue_unlink(&f.q, f.n[2], f.n[3]);        /* the marked node */
    QEXPECT(&f.q, 1, 2, 4, 5);
    expect_start(&f.q, 4, 2);
    ovm_queue_unlink(&f.q, f.n[1], f.n[2]);        /* the marked node again */
    expect_start(&f.q, 4, 1);
    ovm_queue_unlink(&f.q, NULL, f.n[1]);          /* marked node is the head */
    QEXPECT(&f.q, 4, 5);
    expect_start(&f.q, 4, 0);                      /* everything left is after it */
    ovm_queue_unlink(&f.q, NULL, f.n[4]);          /* remove what the scan found */
    expect_start(&f.q, 5, 0);
    ovm_queue_unlink(&f.q, NULL, f.n[5]);
    expect_start(&f.q, 0, 0);
    ovm_queue_append(&f.q, f.n[6]);
    expect_start(&f.q, 6, 0);
    qfix_free(&f);

    /* Marked node is the tail, removed, then more arrives. */
    qfix_init(&f, 2);
    ovm_queue_mark(&f.q);                          /* marker = 2 = tail */
    ovm_queue_unlink(&f.q, f.n[1], f.n[2]);
    QEXPECT(&f.q, 1);
    ovm_queue_append(&f.q, f.n[3]);
    QEXPECT(&f.q, 1, 3);
    expect_start(&f.q, 3, 1);
    qfix_free(&f);

    /* Marker set on an empty queue: everything that arrives is after it. */
    qfix_init(&f, 0);
    ovm_queue_mark(&f.q);
    CHECK(f.q.marked);
    expect_start(&f.q, 0, 0);
    ovm_queue_append(&f.q, f.n[1]);
    ovm_queue_append(&f.q, f.n[2]);
    expect_start(&f.q, 1, 0);
    /* Re-marking moves the marker to the current tail. */
    ovm_queue_mark(&f.q);
    expect_start(&f.q, 0, 2);
    ovm_queue_append(&f.q, f.n[3]);
    expect_start(&f.q, 3, 2);
    /* take_all forgets the marker. */
    CHECK(ovm_queue_take_all(&f.q) == f.n[1]);
    CHECK(!f.q.marked);
    ovm_queue_append(&f.q, f.n[4]);
    expect_start(&f.q, 4, 0);
    qfix_free(&f);
}

/* Random appends / unlinks / marks against a model: the marked scan must
 * start at the first node still queued that was appended after the mark. */
static void test_queue_random_model(void) {
    enum { CAP = 64, OPS = 200000 };
    ovm_node *model[CAP];       /* queue contents, in order */
    uint64_t seqof[CAP];        /* append sequence number of model[i] */
    int len = 0, i, op;
    uint64_t next_seq = 0, mark_seq = 0, rng = 0x9e3779b97f4a7c15ULL;
    int marked = 0;
    ovm_queue q;
    ovm_queue_init(&q);
    for (op = 0; op < OPS; op++) {
        uint64_t r = rng_below(&rng, 100);
        if (r < 45 && len < CAP) {
            ovm_node *n = ovm_node_new((void *)(uintptr_t)(next_seq + 1), OVM_SIG_MESSAGE);
            CHECK(n != NULL);
            ovm_queue_append(&q, n);
            model[len] = n;
            seqof[len++] = next_seq++;
        } else if (r < 90 && len > 0) {
            int k = (int)rng_below(&rng, (uint64_t)len);
            ovm_node *prev = k ? model[k - 1] : NULL;
            ovm_queue_unlink(&q, prev, model[k]);
            ovm_node_free(model[k]);
            for (i = k; i + 1 < len; i++) {
                model[i] = model[i + 1];
                seqof[i] = seqof[i + 1];
            }
            len--;
        } else if (r < 95) {
            ovm_queue_mark(&q);
            marked = 1;
            mark_seq = next_seq;
        } else if (r < 97) {
            ovm_node *n = ovm_queue_take_all(&q), *nx;
            for (; n != NULL; n = nx) {
                nx = n->next;
                ovm_node_free(n);
            }
            len = 0;
            marked = 0;
        }
        /* Compare. */
        CHECK_EQ(q.len, len);
        CHECK(q.head == (len ? model[0] : NULL));
        CHECK(q.tail == (len ? model[len - 1] : NULL));
        {
            ovm_node *prev, *start = ovm_queue_marked_start(&q, &prev);
            int first = 0;
            if (marked)
                while (first < len && seqof[first] < mark_seq)
                    first++;
            CHECKF(start == (first < len ? model[first] : NULL),
                   "op %d: marked scan starts at %d, expected index %d of %d", op, pl(start),
                   first, len);
            CHECK(prev == (first > 0 ? model[first - 1] : NULL));
        }
    }
    {
        ovm_node *n = ovm_queue_take_all(&q), *nx;
        for (; n != NULL; n = nx) {
            nx = n->next;
            ovm_node_free(n);
        }
    }
}

int main(int argc, char **argv) {
    int64_t t0 = ovm_now_ns();
    test_filter = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("test_mailbox (%d producers x %d nodes)\n", NPROD, NPER);
    RUN(test_inbox_counts_signals);
    RUN(test_queue_unlink);
    RUN(test_queue_marker);
    RUN(test_queue_random_model);
    RUN(test_inbox_many_producers_fifo);
    RUN(test_inbox_close_while_pushing);
    drain_node_cache();
    printf("test_mailbox: all passed in %.2f s\n", (double)(ovm_now_ns() - t0) / 1e9);
    return 0;
}
