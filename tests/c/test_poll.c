/* Tests of csrc/ovm_poll.c: the epoll poller and its thread.
 *   - an fd armed for reading reports once (one-shot), then stays quiet until
 *     re-armed; the token and the readiness bits come through;
 *   - writability, hang-up, removal, and tokens of removed fds;
 *   - many socket pairs written from several threads while the consumer
 *     re-arms: every write is seen, none twice per arming (TSan);
 *   - stop joins the thread with events still queued, destroy frees them;
 *   - while schedulers are awake the poll thread leaves the looking to
 *     ovm_poller_poll (rate-limited, one looker at a time) and only takes a
 *     stale look itself; when none is, it blocks and notifies again. */
#include "test_util.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ovm_poll.h"

typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int notified;
} waiter;

static void on_ready(void *ctx) {
    waiter *w = ctx;
    pthread_mutex_lock(&w->lock);
    w->notified++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static void waiter_init(waiter *w) {
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->notified = 0;
}

static void waiter_destroy(waiter *w) {
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

/* Takes events until `want` have arrived (or 5 s pass). */
static size_t take_events(ovm_poller *p, waiter *w, ovm_io_event *out, size_t want) {
    size_t got = 0;
    int64_t deadline = ovm_now_ns() + 5000000000LL;
    while (got < want && ovm_now_ns() < deadline) {
        got += ovm_poller_take(p, out + got, want - got);
        if (got < want) {
            pthread_mutex_lock(&w->lock);
            if (!ovm_poller_pending(p)) {
                struct timespec ts;
                clock_gettime(CLOCK_REALTIME, &ts);
                ts.tv_nsec += 10000000;
                if (ts.tv_nsec >= 1000000000) {
                    ts.tv_sec++;
                    ts.tv_nsec -= 1000000000;
                }
                pthread_cond_timedwait(&w->cond, &w->lock, &ts);
            }
            pthread_mutex_unlock(&w->lock);
        }
    }
    return got;
}

static void pair(int sv[2]) {
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0);
}

static void test_oneshot_read(void) {
    ovm_poller p;
    waiter w;
    ovm_io_event ev[4];
    int sv[2];
    char buf[8];
    waiter_init(&w);
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_add(&p, 0, 1, OVM_IO_IN), EBADF);      /* not started */
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);           /* idempotent */
    pair(sv);
    CHECK_EQ(ovm_poller_add(&p, sv[0], 42, OVM_IO_IN), 0);
    CHECK_EQ(ovm_poller_add(&p, sv[0], 42, OVM_IO_IN), EEXIST);
    CHECK(write(sv[1], "ab", 2) == 2);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1);
    CHECK_EQ(ev[0].token, 42);
    CHECK(ev[0].events & OVM_IO_IN);
    /* Still readable, but one-shot: nothing more until re-armed. */
    CHECK(write(sv[1], "c", 1) == 1);
    sleep_ns(20000000);
    CHECK_EQ(ovm_poller_take(&p, ev, 4), 0);
    CHECK_EQ(ovm_poller_pending(&p), 0);
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 43, OVM_IO_IN), 0);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1);
    CHECK_EQ(ev[0].token, 43);
    CHECK(read(sv[0], buf, sizeof(buf)) == 3);
    /* Writable at once; hang-up once the peer is gone. */
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 44, OVM_IO_OUT), 0);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1);
    CHECK(ev[0].events & OVM_IO_OUT);
    close(sv[1]);
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 45, OVM_IO_IN), 0);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1);
    CHECK(ev[0].events & (OVM_IO_IN | OVM_IO_HUP));
    CHECK_EQ(ovm_poller_remove(&p, sv[0]), 0);
    CHECK_EQ(ovm_poller_remove(&p, sv[0]), ENOENT);
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 46, OVM_IO_IN), ENOENT);
    close(sv[0]);
    ovm_poller_stop(&p);
    ovm_poller_destroy(&p);
    waiter_destroy(&w);
}

enum { PAIRS = 64, ROUNDS = 200, WRITERS = 4 };

typedef struct {
    int *fds;           /* write ends */
    int first, count;
} writer_arg;

static void *writer_main(void *arg) {
    writer_arg *a = arg;
    int r, i;
    for (r = 0; r < ROUNDS; r++)
        for (i = a->first; i < a->first + a->count; i++)
            while (write(a->fds[i], "x", 1) != 1)
                CHECK(errno == EAGAIN || errno == EINTR);
    return NULL;
}

/* Writers never stop while the consumer drains each readable fd and
 * re-arms it under a new token: every byte is read, and an fd never reports
 * twice for one arming (an old token would show it). */
static void test_concurrent_writers(void) {
    ovm_poller p;
    waiter w;
    int rd[PAIRS], wr[PAIRS];
    uint64_t gen[PAIRS];
    long seen = 0;
    pthread_t writers[WRITERS];
    writer_arg args[WRITERS];
    ovm_io_event ev[PAIRS];
    int i;
    int64_t deadline;
    waiter_init(&w);
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    for (i = 0; i < PAIRS; i++) {
        int sv[2];
        pair(sv);
        rd[i] = sv[0];
        wr[i] = sv[1];
        gen[i] = 0;
        CHECK_EQ(ovm_poller_add(&p, rd[i], (uint64_t)i, OVM_IO_IN), 0);
    }
    for (i = 0; i < WRITERS; i++) {
        args[i].fds = wr;
        args[i].first = i * (PAIRS / WRITERS);
        args[i].count = PAIRS / WRITERS;
        spawn(&writers[i], writer_main, &args[i]);
    }
    deadline = ovm_now_ns() + 20000000000LL;
    while (seen < (long)PAIRS * ROUNDS && ovm_now_ns() < deadline) {
        size_t n = take_events(&p, &w, ev, 1), k;
        for (k = 0; k < n; k++) {
            int idx = (int)(ev[k].token % PAIRS);
            char buf[512];
            ssize_t got;
            CHECKF(ev[k].token / PAIRS == gen[idx], "fd %d reported twice for one arming", idx);
            while ((got = read(rd[idx], buf, sizeof(buf))) > 0)
                seen += got;
            gen[idx]++;
            CHECK_EQ(ovm_poller_arm(&p, rd[idx], gen[idx] * PAIRS + (uint64_t)idx, OVM_IO_IN), 0);
        }
    }
    for (i = 0; i < WRITERS; i++)
        join(writers[i]);
    CHECK_EQ(seen, (long)PAIRS * ROUNDS);
    ovm_poller_stop(&p);
    for (i = 0; i < PAIRS; i++) {
        close(rd[i]);
        close(wr[i]);
    }
    ovm_poller_destroy(&p);
    waiter_destroy(&w);
}

/* Events still queued at stop are freed by destroy (LeakSanitizer). */
static void test_stop_with_queued_events(void) {
    ovm_poller p;
    waiter w;
    int sv[2];
    waiter_init(&w);
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    pair(sv);
    CHECK_EQ(ovm_poller_add(&p, sv[0], 7, OVM_IO_OUT), 0);
    pthread_mutex_lock(&w.lock);
    while (!w.notified)
        pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    CHECK(ovm_poller_pending(&p));
    ovm_poller_stop(&p);
    ovm_poller_stop(&p);                                    /* idempotent */
    ovm_poller_destroy(&p);
    close(sv[0]);
    close(sv[1]);
    waiter_destroy(&w);
}

static int notified(waiter *w) {
    int n;
    pthread_mutex_lock(&w->lock);
    n = w->notified;
    pthread_mutex_unlock(&w->lock);
    return n;
}

static void test_watch_handover(void) {
    ovm_poller p;
    waiter w;
    ovm_io_event ev[4];
    _Atomic int awake;
    int sv[2], seen_by_poll = 0;
    int64_t t0;
    waiter_init(&w);
    atomic_init(&awake, 1);
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_poll(&p, 0), 0u);                     /* not started: nothing */
    ovm_poller_watch(&p, &awake);                              /* a scheduler is awake */
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    pair(sv);
    CHECK_EQ(ovm_poller_add(&p, sv[0], 5, OVM_IO_IN), 0);
    CHECK(write(sv[1], "x", 1) == 1);
    /* The scheduler's own look finds the event, unless the poll thread's
     * stale look (every OVM_POLL_STALE_NS) got there first.  A look fails
     * while the other is in progress, which under load (TSan, a busy
     * machine) can outlast any fixed number of tries: give it 5 s. */
    t0 = ovm_now_ns();
    while (!ovm_poller_pending(&p) && ovm_now_ns() - t0 < 5000000000LL) {
        seen_by_poll += (int)ovm_poller_poll(&p, 0);
        sched_yield();
    }
    CHECK(ovm_poller_pending(&p));
    CHECK_EQ(ovm_poller_take(&p, ev, 4), 1u);
    CHECK_EQ(ev[0].token, 5u);
    CHECK(seen_by_poll == 1 || notified(&w) == 1);
    /* A look younger than min_age is skipped. */
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 6, OVM_IO_IN), 0);
    CHECK_EQ(ovm_poller_poll(&p, 1000000000LL), 0u);
    /* Everyone asleep: the poll thread reports it with notify. */
    t0 = ovm_now_ns();
    atomic_store(&awake, 0);
    ovm_poller_watch(&p, &awake);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1u);
    CHECK_EQ(ev[0].token, 6u);
    CHECK(ovm_now_ns() - t0 < 2000000000LL);
    /* Awake again: the poll thread still reports within a stale period. */
    atomic_store(&awake, 1);
    ovm_poller_watch(&p, &awake);
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 7, OVM_IO_IN), 0);
    CHECK_EQ(take_events(&p, &w, ev, 1), 1u);
    CHECK_EQ(ev[0].token, 7u);
    ovm_poller_stop(&p);
    ovm_poller_destroy(&p);
    close(sv[0]);
    close(sv[1]);
    waiter_destroy(&w);
}

static int open_fd_count(void) {
    int n = 0, fd;
    for (fd = 0; fd < 1024; fd++)
        n += fcntl(fd, F_GETFD) != -1;
    return n;
}

/* Stop closes the epoll instance and the eventfd at once (not at destroy):
 * the fds are back, calls on the poller fail cleanly, and it cannot be
 * started again. */
static void test_stop_closes_fds(void) {
    ovm_poller p;
    waiter w;
    int sv[2], before;
    waiter_init(&w);
    pair(sv);
    before = open_fd_count();
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    CHECK_EQ(open_fd_count(), before + 2);
    CHECK_EQ(ovm_poller_add(&p, sv[0], 3, OVM_IO_IN), 0);
    ovm_poller_stop(&p);
    CHECK_EQ(open_fd_count(), before);
    CHECK_EQ(ovm_poller_arm(&p, sv[0], 4, OVM_IO_IN), EBADF);
    CHECK_EQ(ovm_poller_remove(&p, sv[0]), EBADF);
    CHECK_EQ(ovm_poller_poll(&p, 0), 0u);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), ECANCELED);
    CHECK_EQ(open_fd_count(), before);
    ovm_poller_destroy(&p);
    close(sv[0]);
    close(sv[1]);
    waiter_destroy(&w);
}

enum { USERS = 4 };

typedef struct {
    ovm_poller *p;
    int fd;
    _Atomic int *go;
    _Atomic long calls;
} user_arg;

/* Arms and polls until the poller is stopped under it. */
static void *user_main(void *arg) {
    user_arg *a = arg;
    int err;
    while (!atomic_load(a->go))
        ;
    do {
        err = ovm_poller_arm(a->p, a->fd, 9, OVM_IO_OUT);
        CHECK(err == 0 || err == EBADF);
        ovm_poller_poll(a->p, 0);
        atomic_fetch_add(&a->calls, 1);
    } while (err == 0);
    return NULL;
}

/* Threads keep calling epoll_ctl and epoll_wait while another stops the
 * poller: each call either works or fails with EBADF, and stop returns
 * (it waits only for calls already inside a syscall). */
static void test_stop_while_in_use(void) {
    ovm_poller p;
    waiter w;
    pthread_t users[USERS];
    user_arg args[USERS];
    int sv[USERS][2], i;
    _Atomic int go;
    atomic_init(&go, 0);
    waiter_init(&w);
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_start(&p, on_ready, &w), 0);
    for (i = 0; i < USERS; i++) {
        pair(sv[i]);
        CHECK_EQ(ovm_poller_add(&p, sv[i][0], 9, 0), 0);
        args[i].p = &p;
        args[i].fd = sv[i][0];
        args[i].go = &go;
        atomic_init(&args[i].calls, 0);
        spawn(&users[i], user_main, &args[i]);
    }
    atomic_store(&go, 1);
    while (atomic_load(&args[0].calls) < 100)
        sched_yield();
    ovm_poller_stop(&p);
    for (i = 0; i < USERS; i++) {
        join(users[i]);
        close(sv[i][0]);
        close(sv[i][1]);
    }
    ovm_poller_destroy(&p);
    waiter_destroy(&w);
}

/* A poller that was never started costs nothing and tears down cleanly. */
static void test_never_started(void) {
    ovm_poller p;
    CHECK_EQ(ovm_poller_init(&p), 0);
    CHECK_EQ(ovm_poller_remove(&p, 0), EBADF);
    ovm_poller_stop(&p);
    ovm_poller_destroy(&p);
}

int main(int argc, char **argv) {
    test_filter = argc > 1 ? argv[1] : NULL;
    printf("ovm_poll:\n");
    RUN(test_oneshot_read);
    RUN(test_concurrent_writers);
    RUN(test_stop_with_queued_events);
    RUN(test_never_started);
    RUN(test_watch_handover);
    RUN(test_stop_closes_fds);
    RUN(test_stop_while_in_use);
    return 0;
}
