# Declarations of the C primitives in csrc/ (no Python objects live there).
from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "ovm_atomic.h" nogil:
    int64_t ovm_now_ns()
    uint64_t ovm_next_id()


cdef extern from "ovm_mailbox.h" nogil:
    enum:
        OVM_SIG_MESSAGE
        OVM_SIG_EXIT
        OVM_SIG_EXIT_LINKED
        OVM_SIG_LINK
        OVM_SIG_UNLINK
        OVM_SIG_MONITOR
        OVM_SIG_DEMONITOR
        OVM_SIG_DOWN
        OVM_SIG_ALIAS

    ctypedef struct ovm_node:
        ovm_node *next
        void *payload
        int kind

    ovm_node *ovm_node_new(void *payload, int kind)
    void ovm_node_free(ovm_node *node)
    void ovm_node_cache_clear()

    ctypedef struct ovm_inbox:
        pass

    int ovm_inbox_init(ovm_inbox *box)
    void ovm_inbox_destroy(ovm_inbox *box)
    int ovm_inbox_push(ovm_inbox *box, ovm_node *node)
    ovm_node *ovm_inbox_take(ovm_inbox *box)
    ovm_node *ovm_inbox_close(ovm_inbox *box)
    size_t ovm_inbox_len(ovm_inbox *box)
    size_t ovm_inbox_signals(ovm_inbox *box)
    bint ovm_sig_is_message(int kind)
    void ovm_trim_memory()

    ctypedef struct ovm_queue:
        ovm_node *head
        ovm_node *tail
        size_t len
        int marked

    void ovm_queue_init(ovm_queue *q)
    void ovm_queue_append(ovm_queue *q, ovm_node *node)
    void ovm_queue_unlink(ovm_queue *q, ovm_node *prev, ovm_node *node)
    void ovm_queue_mark(ovm_queue *q)
    ovm_node *ovm_queue_marked_start(ovm_queue *q, ovm_node **prev)
    ovm_node *ovm_queue_take_all(ovm_queue *q)


# Visiting an inbox calls back into Python-object code: it keeps the GIL.
cdef extern from "ovm_mailbox.h":
    ctypedef void (*ovm_visit_fn)(void *ctx, int kind, void *payload) noexcept
    void ovm_inbox_visit(ovm_inbox *box, ovm_visit_fn fn, void *ctx)


cdef extern from "ovm_proc.h" nogil:
    enum:
        OVM_RUNQ
        OVM_RUNNING
        OVM_ACTIVE
        OVM_EXITED
        OVM_KILL
        OVM_TAKEN
        OVM_LEFT

    ctypedef struct ovm_proc:
        void *owner

    void ovm_proc_init(ovm_proc *p, void *owner, uint32_t home)
    int ovm_proc_wake(ovm_proc *p)
    int ovm_proc_begin(ovm_proc *p)
    int ovm_proc_try_wait(ovm_proc *p)
    void ovm_proc_requeue(ovm_proc *p)
    uint32_t ovm_proc_exit(ovm_proc *p)
    int ovm_proc_exited(ovm_proc *p)
    uint32_t ovm_proc_home(ovm_proc *p)
    void ovm_proc_set_home(ovm_proc *p, uint32_t q)
    uint32_t ovm_proc_state(ovm_proc *p)
    void ovm_proc_fire_timeout(ovm_proc *p, uint64_t gen)
    uint64_t ovm_proc_timeout_fired(ovm_proc *p)
    void ovm_proc_mark_kill(ovm_proc *p)
    int ovm_proc_take(ovm_proc *p)
    int ovm_proc_taken(ovm_proc *p)
    int ovm_proc_interrupt_begin(ovm_proc *p)
    void ovm_proc_interrupt_end(ovm_proc *p)
    int ovm_proc_leave(ovm_proc *p)
    int ovm_proc_interrupting(ovm_proc *p)


cdef extern from "ovm_timer.h" nogil:
    int64_t OVM_NEVER

    ctypedef struct ovm_timer:
        int64_t deadline
        uint64_t id
        size_t index
        void *payload

    ctypedef struct ovm_timers:
        pass

    void ovm_timer_init(ovm_timer *timer, int64_t deadline, uint64_t id, void *payload)
    int ovm_timers_add(ovm_timers *t, ovm_timer *timer, int *earliest)
    int ovm_timers_cancel(ovm_timers *t, ovm_timer *timer)
    ovm_timer *ovm_timers_pop_due(ovm_timers *t, int64_t now)
    ovm_timer *ovm_timers_pop_any(ovm_timers *t)
    int64_t ovm_timers_next(ovm_timers *t)
    size_t ovm_timers_len(ovm_timers *t)


cdef extern from "ovm_poll.h" nogil:
    enum:
        OVM_IO_IN
        OVM_IO_OUT
        OVM_IO_ERR
        OVM_IO_HUP

    ctypedef struct ovm_io_event:
        uint64_t token
        uint32_t events

    ctypedef struct ovm_poller:
        pass

    int ovm_poller_add(ovm_poller *p, int fd, uint64_t token, uint32_t interest)
    int ovm_poller_arm(ovm_poller *p, int fd, uint64_t token, uint32_t interest)
    int ovm_poller_remove(ovm_poller *p, int fd)
    size_t ovm_poller_take(ovm_poller *p, ovm_io_event *out, size_t max)


cdef extern from "ovm_sched.h" nogil:
    uint32_t OVM_NO_RUNQ

    enum:
        OVM_NEXT_PROC
        OVM_NEXT_TIMERS
        OVM_NEXT_STOP
        OVM_NEXT_NONE
        OVM_NEXT_IO
        OVM_NEXT_RETIRE

    enum:
        OVM_LS_RUNNING
        OVM_LS_BLOCKED
        OVM_LS_STILL
        OVM_LS_END

    ctypedef struct ovm_incident:
        int kind
        uint32_t worker
        uint32_t runq
        uint64_t slice
        uint64_t pid
        int64_t wall_ns
        int64_t cpu_ns
        int64_t blocked_ns
        int64_t house_ns
        long syscall
        int handed_over
        uint64_t queued

    ctypedef struct ovm_worker:
        pass

    ctypedef struct ovm_sched:
        uint32_t nrunqs
        uint32_t nworkers
        uint32_t threads
        int64_t slice_limit_ns
        int64_t hold_limit_ns
        ovm_timers timers
        ovm_poller io
        uint64_t handoffs
        uint64_t no_spare
        uint64_t overruns

    int ovm_sched_init(ovm_sched *s, uint32_t nrunqs, uint32_t nworkers,
                       uint32_t max_workers, int64_t slice_limit_ns, int steal)
    int ovm_sched_take_start(ovm_sched *s)
    void ovm_sched_set_gil_interval(ovm_sched *s, int64_t ns)
    int ovm_sched_start_monitor(ovm_sched *s)
    int ovm_sched_start_io(ovm_sched *s)
    void ovm_sched_stop(ovm_sched *s)
    void ovm_sched_destroy(ovm_sched *s)
    void ovm_runq_push(ovm_sched *s, uint32_t q, ovm_proc *p)
    void ovm_sched_timers_changed(ovm_sched *s)
    int ovm_worker_next(ovm_sched *s, uint32_t w, ovm_proc **out)
    int ovm_worker_poll(ovm_sched *s, uint32_t w, ovm_proc **out)
    uint32_t ovm_worker_runq(ovm_sched *s, uint32_t w)
    uint64_t ovm_runq_taken(ovm_sched *s, uint32_t q)
    uint64_t ovm_sched_stolen(ovm_sched *s)
    ovm_worker *ovm_sched_worker(ovm_sched *s, uint32_t w)
    bint ovm_slice_overdue(ovm_worker *w, int used, int *next)
    int ovm_worker_register(ovm_sched *s, uint32_t w)
    void ovm_housekeeping(int starting)
    void ovm_kernel_io(int starting)
    void ovm_blocking(int starting)
    int ovm_sched_in_blocking(ovm_sched *s, uint64_t pid)
    void ovm_worker_slice_begin(ovm_sched *s, uint32_t w, uint64_t pid)
    int ovm_worker_slice_end(ovm_sched *s, uint32_t w)
    int ovm_sched_next_incident(ovm_sched *s, ovm_incident *out, int64_t timeout_ns)
    uint64_t ovm_sched_take_dropped(ovm_sched *s)
    void ovm_sched_poke_reporter(ovm_sched *s)
    int ovm_sched_in_slice(ovm_sched *s, const ovm_incident *inc)
    const char *ovm_syscall_name(long nr)


cdef extern from "ovm_tls.h" nogil:
    void *ovm_get_current()
    void ovm_set_current(void *p)
