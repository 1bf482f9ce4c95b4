#include "ovm_timer.h"
#include "ovm_atomic.h"

#include <stdlib.h>

static void place(ovm_timers *t, size_t i, ovm_timer *timer) {
    t->heap[i] = timer;
    timer->index = i;
}

static void sift_up(ovm_timers *t, size_t i) {
    ovm_timer *timer = t->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (t->heap[parent]->deadline <= timer->deadline)
            break;
        place(t, i, t->heap[parent]);
        i = parent;
    }
    place(t, i, timer);
}

static void sift_down(ovm_timers *t, size_t i) {
    ovm_timer *timer = t->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= t->len)
            break;
        if (child + 1 < t->len && t->heap[child + 1]->deadline < t->heap[child]->deadline)
            child++;
        if (timer->deadline <= t->heap[child]->deadline)
            break;
        place(t, i, t->heap[child]);
        i = child;
    }
    place(t, i, timer);
}

static void publish(ovm_timers *t) {
    atomic_store_explicit(&t->next_deadline,
                          t->len ? t->heap[0]->deadline : OVM_NEVER,
                          memory_order_release);
}

static void remove_at(ovm_timers *t, size_t i) {
    ovm_timer *last = t->heap[--t->len];
    t->heap[i]->index = SIZE_MAX;
    if (i < t->len) {
        place(t, i, last);
        sift_down(t, i);
        sift_up(t, last->index);
    }
    publish(t);
}

int ovm_timers_init(ovm_timers *t) {
    t->heap = NULL;
    t->len = t->cap = 0;
    atomic_init(&t->next_deadline, OVM_NEVER);
    return pthread_mutex_init(&t->lock, NULL);
}

void ovm_timers_destroy(ovm_timers *t) {
    free(t->heap);
    t->heap = NULL;
    t->len = t->cap = 0;
    pthread_mutex_destroy(&t->lock);
}

int ovm_timers_add(ovm_timers *t, ovm_timer *timer, int *earliest) {
    pthread_mutex_lock(&t->lock);
    if (t->len == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        ovm_timer **heap = realloc(t->heap, cap * sizeof(*heap));
        if (heap == NULL) {
            pthread_mutex_unlock(&t->lock);
            return -1;
        }
        t->heap = heap;
        t->cap = cap;
    }
    place(t, t->len++, timer);
    sift_up(t, timer->index);
    *earliest = timer->index == 0;
    publish(t);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

int ovm_timers_cancel(ovm_timers *t, ovm_timer *timer) {
    int removed = 0;
    pthread_mutex_lock(&t->lock);
    if (timer->index != SIZE_MAX && timer->index < t->len && t->heap[timer->index] == timer) {
        remove_at(t, timer->index);
        removed = 1;
    }
    pthread_mutex_unlock(&t->lock);
    return removed;
}

ovm_timer *ovm_timers_pop_due(ovm_timers *t, int64_t now) {
    ovm_timer *timer = NULL;
    if (ovm_timers_next(t) > now)
        return NULL;
    pthread_mutex_lock(&t->lock);
    if (t->len && t->heap[0]->deadline <= now) {
        timer = t->heap[0];
        remove_at(t, 0);
    }
    pthread_mutex_unlock(&t->lock);
    return timer;
}

ovm_timer *ovm_timers_pop_any(ovm_timers *t) {
    ovm_timer *timer = NULL;
    pthread_mutex_lock(&t->lock);
    if (t->len) {
        timer = t->heap[0];
        remove_at(t, 0);
    }
    pthread_mutex_unlock(&t->lock);
    return timer;
}

size_t ovm_timers_len(ovm_timers *t) {
    size_t len;
    pthread_mutex_lock(&t->lock);
    len = t->len;
    pthread_mutex_unlock(&t->lock);
    return len;
}
