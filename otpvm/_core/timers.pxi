# Timers: send_after and receive timeouts, on the C timer heap.
#
# A TimerRef is the heap entry itself: the heap holds one reference to it
# while it is armed.  Scheduler threads pop due timers between slices, and an
# idle scheduler sleeps exactly until the earliest deadline.

cdef enum:
    _TIMER_RECEIVE = 0
    _TIMER_SEND = 1
    _TIMER_CALL = 2                 # the socket layer's: dest() on a scheduler thread


cdef class TimerRef:
    """A timer started by ``send_after``; pass it to ``cancel_timer``."""

    cdef ovm_timer c
    cdef int kind
    cdef Process proc               # receive timeouts: who waits
    cdef uint64_t gen               # ... and for which receive
    cdef object dest                # send_after: a Pid or a name
    cdef object msg

    def __repr__(self):
        return f"#TimerRef<{self.c.id}>"


cdef void _fire_timer(TimerRef timer, VM vm) except *:
    cdef Process p
    if timer.kind == _TIMER_RECEIVE:
        p = timer.proc
        timer.proc = None
        if p is not None:
            ovm_proc_fire_timeout(&p.c, timer.gen)
            p.wake(p.home())
        return
    if timer.kind == _TIMER_CALL:
        fn, timer.dest = timer.dest, None
        try:
            fn()
        except BaseException:               # a bug in the socket layer: log it, go on
            _log.critical("otpvm: internal error in timer callback %r", fn, exc_info=True)
        return
    dest, msg = timer.dest, timer.msg
    timer.dest = timer.msg = None
    target = vm.lookup(dest)
    if target is not None:
        (<Process>target).deliver(OVM_SIG_MESSAGE, msg, (<Process>target).home())
