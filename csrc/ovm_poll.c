#include "ovm_poll.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define WAKE_TOKEN UINT64_MAX
#define BATCH 256

int ovm_poller_init(ovm_poller *p) {
    memset(p, 0, sizeof(*p));
    p->epfd = p->wakefd = -1;
    atomic_init(&p->pending, 0);
    atomic_init(&p->stopping, 0);
    return pthread_mutex_init(&p->lock, NULL);
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

/* Appends events to the ready list.  Losing one would leave its socket
 * silent forever (registrations are one-shot), so on out of memory this
 * waits for memory rather than dropping anything. */
static void publish(ovm_poller *p, const struct epoll_event *evs, int n) {
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
    if (added)
        p->notify(p->notify_ctx);
}

static void *poll_main(void *arg) {
    ovm_poller *p = arg;
    struct epoll_event evs[BATCH];
    while (!atomic_load(&p->stopping)) {
        int n = epoll_wait(p->epfd, evs, BATCH, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;          /* EBADF/EINVAL: the instance is gone */
        }
        publish(p, evs, n);
    }
    return NULL;
}

int ovm_poller_start(ovm_poller *p, ovm_poll_notify_fn notify, void *ctx) {
    struct epoll_event ev;
    int err;
    if (p->started)
        return 0;
    p->notify = notify;
    p->notify_ctx = ctx;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (p->epfd < 0)
        return errno;
    p->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (p->wakefd < 0) {
        err = errno;
        close(p->epfd);
        p->epfd = -1;
        return err;
    }
    ev.events = EPOLLIN;        /* level-triggered: stays ready once written */
    ev.data.u64 = WAKE_TOKEN;
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->wakefd, &ev) != 0 ||
        (errno = pthread_create(&p->thread, NULL, poll_main, p)) != 0) {
        err = errno;
        close(p->wakefd);
        close(p->epfd);
        p->epfd = p->wakefd = -1;
        return err;
    }
    p->started = 1;
    return 0;
}

void ovm_poller_stop(ovm_poller *p) {
    uint64_t one = 1;
    if (!p->started)
        return;
    atomic_store(&p->stopping, 1);
    while (write(p->wakefd, &one, sizeof(one)) < 0 && errno == EINTR)
        ;
    pthread_join(p->thread, NULL);
    p->started = 0;
}

void ovm_poller_destroy(ovm_poller *p) {
    if (p->wakefd >= 0)
        close(p->wakefd);
    if (p->epfd >= 0)
        close(p->epfd);
    p->epfd = p->wakefd = -1;
    free(p->ready);
    p->ready = NULL;
    p->len = p->cap = 0;
    pthread_mutex_destroy(&p->lock);
}

static int ctl(ovm_poller *p, int op, int fd, uint64_t token, uint32_t interest) {
    struct epoll_event ev;
    if (p->epfd < 0)
        return EBADF;
    memset(&ev, 0, sizeof(ev));
    ev.events = to_epoll(interest);
    ev.data.u64 = token;
    return epoll_ctl(p->epfd, op, fd, &ev) == 0 ? 0 : errno;
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
