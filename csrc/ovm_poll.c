#include "ovm_poll.h"

#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WAKE_TOKEN UINT64_MAX
#define BATCH 256

int ovm_poller_init(ovm_poller *p) {
    int err;
    memset(p, 0, sizeof(*p));
    atomic_init(&p->epfd, -1);
    atomic_init(&p->users, 0);
    p->wakefd = -1;
    atomic_init(&p->pending, 0);
    atomic_init(&p->stopping, 0);
    atomic_init(&p->watch, 1);
    atomic_init(&p->polling, 0);
    atomic_init(&p->last_look, 0);
    atomic_init(&p->started, 0);
    if ((err = pthread_mutex_init(&p->lock, NULL)) != 0)
        return err;
    if ((err = pthread_cond_init(&p->gate, NULL)) != 0)
        pthread_mutex_destroy(&p->lock);
    return err;
}

static uint32_t to_epoll(uint32_t interest) {
    uint32_t ev = EPOLLONESHOT;
    if (interest & OVM_IO_IN)
        ev |= EPOLLIN;
    if (interest & OVM_IO_OUT)
        ev |= EPOLLOUT;
    return ev;
}

static uint32_t from_epoll(uint32_t ev) {
    return ((ev & EPOLLIN) ? OVM_IO_IN : 0) | ((ev & EPOLLOUT) ? OVM_IO_OUT : 0) |
           ((ev & EPOLLERR) ? OVM_IO_ERR : 0) | ((ev & EPOLLHUP) ? OVM_IO_HUP : 0);
}

/* Appends events to the ready list; returns how many.  Losing one would
 * leave its socket silent forever (registrations are one-shot), so on out
 * of memory this waits for memory rather than dropping anything. */
static size_t publish(ovm_poller *p, const struct epoll_event *evs, int n) {
    int i;
    size_t added = 0;
    pthread_mutex_lock(&p->lock);
    for (i = 0; i < n; i++) {
        if (evs[i].data.u64 == WAKE_TOKEN)
            continue;
        while (p->len == p->cap) {
            size_t cap = p->cap ? p->cap * 2 : 1024;
            ovm_io_event *grown = realloc(p->ready, cap * sizeof(*grown));
            if (grown != NULL) {
                p->ready = grown;
                p->cap = cap;
            } else {
                struct timespec pause = {0, 1000000};
                pthread_mutex_unlock(&p->lock);
                nanosleep(&pause, NULL);
                pthread_mutex_lock(&p->lock);
            }
        }
        p->ready[p->len].token = evs[i].data.u64;
        p->ready[p->len].events = from_epoll(evs[i].events);
        p->len++;
        added++;
    }
    if (added)
        atomic_store_explicit(&p->pending, 1, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    return added;
}

/* The epoll fd, counted as in use until release(); -1 (not counted) once
 * stopped.  Sequentially consistent on both sides: either stop sees the
 * count and waits, or the caller sees -1. */
static int acquire(ovm_poller *p) {
    int fd;
    atomic_fetch_add(&p->users, 1);
    fd = atomic_load(&p->epfd);
    if (fd < 0)
        atomic_fetch_sub(&p->users, 1);
    return fd;
}

static void release(ovm_poller *p) {
    atomic_fetch_sub(&p->users, 1);
}

/* One epoll_wait (timeout_ms: -1 blocks, 0 does not); the events go to the
 * ready list.  Returns how many, or -1 when the instance is gone.  Only the
 * poll thread blocks, and stop joins it before closing the instance. */
static int collect(ovm_poller *p, int timeout_ms) {
    struct epoll_event evs[BATCH];
    int n, err, fd = acquire(p);
    if (fd < 0)
        return -1;
    n = epoll_wait(fd, evs, BATCH, timeout_ms);
    err = errno;
    release(p);
    if (n < 0)
        return err == EINTR ? 0 : -1;
    atomic_store_explicit(&p->last_look, ovm_now_ns(), memory_order_relaxed);
    return (int)publish(p, evs, n);
}

/* Waits until watching is on (or stopping); false on a stale timeout, when
 * the caller should look without blocking instead. */
static int wait_for_watch(ovm_poller *p) {
    int watching = 1;
    pthread_mutex_lock(&p->lock);
    while (!atomic_load(&p->watch) && !atomic_load(&p->stopping)) {
        int64_t due = atomic_load_explicit(&p->last_look, memory_order_relaxed) +
                      OVM_POLL_STALE_NS;
        struct timespec ts;
        if (ovm_now_ns() >= due) {
            watching = 0;
            break;
        }
        clock_gettime(CLOCK_REALTIME, &ts);     /* the condvar's clock */
        ts.tv_nsec += OVM_POLL_STALE_NS;
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&p->gate, &p->lock, &ts);
    }
    pthread_mutex_unlock(&p->lock);
    return watching;
}

static void *poll_main(void *arg) {
    ovm_poller *p = arg;
    while (!atomic_load(&p->stopping)) {
        int blocking = wait_for_watch(p);
        int n;
        if (atomic_load(&p->stopping))
            break;
        if (!blocking && atomic_exchange(&p->polling, 1))
            continue;                   /* a scheduler is looking right now */
        n = collect(p, blocking ? -1 : 0);
        if (!blocking)
            atomic_store(&p->polling, 0);
        if (n < 0)
            break;
        if (n > 0)
            p->notify(p->notify_ctx);
    }
    return NULL;
}

void ovm_poller_watch(ovm_poller *p, _Atomic int *awake) {
    int on;
    pthread_mutex_lock(&p->lock);
    on = atomic_load(awake) <= 0;
    /* Off: the poll thread parks after its current epoll_wait returns. */
    atomic_store(&p->watch, on);
    if (on)
        pthread_cond_signal(&p->gate);
    pthread_mutex_unlock(&p->lock);
}

size_t ovm_poller_poll(ovm_poller *p, int64_t min_age_ns) {
    int n;
    if (!ovm_poller_started(p))
        return 0;
    if (min_age_ns > 0 && ovm_now_ns() - atomic_load_explicit(&p->last_look, memory_order_relaxed)
                              < min_age_ns)
        return 0;
    if (atomic_exchange(&p->polling, 1))
        return 0;
    n = collect(p, 0);
    atomic_store(&p->polling, 0);
    return n > 0 ? (size_t)n : 0;
}

int ovm_poller_start(ovm_poller *p, ovm_poll_notify_fn notify, void *ctx) {
    struct epoll_event ev;
    int err = 0, epfd;
    pthread_mutex_lock(&p->lock);
    if (atomic_load(&p->stopping)) {
        err = ECANCELED;
        goto out;
    }
    if (atomic_load(&p->started))
        goto out;
    p->notify = notify;
    p->notify_ctx = ctx;
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0) {
        err = errno;
        goto out;
    }
    p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wakefd < 0) {
        err = errno;
        close(epfd);
        goto out;
    }
    ev.events = EPOLLIN;        /* level-triggered: stays ready once written */
    ev.data.u64 = WAKE_TOKEN;
    /* The new thread first takes p->lock (wait_for_watch), so it finds
     * epfd published when it gets to use it. */
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, p->wakefd, &ev) != 0 ||
        (errno = pthread_create(&p->thread, NULL, poll_main, p)) != 0) {
        err = errno;
        close(p->wakefd);
        close(epfd);
        p->wakefd = -1;
        goto out;
    }
    atomic_store(&p->epfd, epfd);
    atomic_store_explicit(&p->started, 1, memory_order_release);
out:
    pthread_mutex_unlock(&p->lock);
    return err;
}

/* Closes the epoll instance once no caller is inside a syscall on it (each
 * is one non-blocking syscall long), and the eventfd. */
static void close_fds(ovm_poller *p) {
    int fd = atomic_exchange(&p->epfd, -1);
    if (fd >= 0) {
        while (atomic_load(&p->users) > 0)
            sched_yield();
        close(fd);
    }
    if (p->wakefd >= 0)
        close(p->wakefd);
    p->wakefd = -1;
}

void ovm_poller_stop(ovm_poller *p) {
    uint64_t one = 1;
    int was_started;
    pthread_mutex_lock(&p->lock);
    if (atomic_load(&p->stopping)) {
        pthread_mutex_unlock(&p->lock);
        return;
    }
    atomic_store(&p->stopping, 1);
    was_started = atomic_load(&p->started);
    atomic_store_explicit(&p->started, 0, memory_order_release);
    pthread_cond_signal(&p->gate);
    pthread_mutex_unlock(&p->lock);
    if (was_started) {
        while (write(p->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
        pthread_join(p->thread, NULL);
    }
    close_fds(p);
}

void ovm_poller_destroy(ovm_poller *p) {
    close_fds(p);
    free(p->ready);
    p->ready = NULL;
    p->len = p->cap = 0;
    pthread_cond_destroy(&p->gate);
    pthread_mutex_destroy(&p->lock);
}

static int ctl(ovm_poller *p, int op, int fd, uint64_t token, uint32_t interest) {
    struct epoll_event ev;
    int err = 0, epfd = acquire(p);
    if (epfd < 0)
        return EBADF;
    memset(&ev, 0, sizeof(ev));
    ev.events = to_epoll(interest);
    ev.data.u64 = token;
    if (epoll_ctl(epfd, op, fd, &ev) != 0)
        err = errno;
    release(p);
    return err;
}

int ovm_poller_add(ovm_poller *p, int fd, uint64_t token, uint32_t interest) {
    if (token == WAKE_TOKEN)
        return EINVAL;
    return ctl(p, EPOLL_CTL_ADD, fd, token, interest);
}

int ovm_poller_arm(ovm_poller *p, int fd, uint64_t token, uint32_t interest) {
    if (token == WAKE_TOKEN)
        return EINVAL;
    return ctl(p, EPOLL_CTL_MOD, fd, token, interest);
}

int ovm_poller_remove(ovm_poller *p, int fd) {
    return ctl(p, EPOLL_CTL_DEL, fd, 0, 0);
}

size_t ovm_poller_take(ovm_poller *p, ovm_io_event *out, size_t max) {
    size_t n;
    pthread_mutex_lock(&p->lock);
    n = p->len < max ? p->len : max;
    if (n == 0) {
        pthread_mutex_unlock(&p->lock);
        return 0;
    }
    memcpy(out, p->ready, n * sizeof(*out));
    memmove(p->ready, p->ready + n, (p->len - n) * sizeof(*out));
    p->len -= n;
    if (p->len == 0)
        atomic_store_explicit(&p->pending, 0, memory_order_release);
    pthread_mutex_unlock(&p->lock);
    return n;
}
