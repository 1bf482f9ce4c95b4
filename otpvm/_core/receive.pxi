# The awaitables behind receive() and sleep().
#
# A message already in the mailbox costs no suspension: the awaitable
# finishes at once.  Otherwise it yields itself to the scheduler, asking to
# wait (STEP_WAIT); the scheduler keeps matching newly arrived messages
# against the pattern (without resuming the coroutine) until one matches or
# the timeout fires, and only then resumes the process.  After CONTEXT_REDS
# reductions the awaitable asks to yield (STEP_YIELD) first, so that a
# process with a full mailbox still goes to the back of its run queue.

cdef enum:
    RCV_FRESH = 0
    RCV_WAITING = 1
    RCV_DONE = 2
    RCV_YIELDED = 3

cdef object _NEVER = lambda msg: False      # sleep's pattern

cdef extern from "Python.h":
    int PyErr_WarnEx(object category, const char *message, Py_ssize_t stack_level)
    void PyErr_WriteUnraisable(object obj)


cdef void _warn_unawaited(str what) noexcept:
    """What CPython does for a coroutine dropped before it ran
    (_PyErr_WarnUnawaitedCoroutine): a RuntimeWarning, attributed to the
    code that dropped it, through the warnings filters; if a filter makes
    it an error, an unraisable exception.  Called from a deallocator, so
    the awaitable itself is never handed to Python code."""
    message = f"{what} was never awaited"
    if PyErr_WarnEx(RuntimeWarning, message.encode(), 1) < 0:
        PyErr_WriteUnraisable(message)


@cython.freelist(64)
cdef class _Receive:
    cdef Process proc
    cdef object pattern
    cdef int64_t timeout_ns         # -1: wait forever
    cdef int state
    cdef int step                   # what it asked of the scheduler: STEP_WAIT or STEP_YIELD
    cdef bint is_sleep
    cdef bint advanced              # awaited (or driven) at least once

    def __dealloc__(self):
        if not self.advanced:
            _warn_unawaited("otpvm.sleep()" if self.is_sleep else "otpvm.receive()")

    def __await__(self):
        return self

    def __next__(self):
        # Replaced at import by the C slot of awaitable.h (see below); kept
        # so that Cython gives the type an iterator slot to replace.
        raise RuntimeError("otpvm: the receive awaitable was not installed")

    cdef object finish(self, Process p):
        """The outcome of a receive that had to wait."""
        if p.rcv_error is not None:
            exc, p.rcv_error = p.rcv_error, None
            raise exc
        if p.rcv_done:
            p.rcv_done = False
            msg, p.rcv_msg = p.rcv_msg, None
            return msg
        if self.is_sleep:
            return None
        raise TimeoutError(
            f"receive timed out after {self.timeout_ns / 1e9:g} s with no matching message")

    def send(self, value):
        return next(self)

    def throw(self, typ, val=None, tb=None):
        if val is None:
            val = typ() if isinstance(typ, type) else typ
        raise val

    def close(self):
        pass

    cdef int advance(self, PyObject **out) except -1:
        return _receive_advance(self, out)


cdef int _advance(object obj, PyObject **out) except -1:
    """One step of an awaited receive: 0 with the result in *out, 1 with a
    value to yield to the scheduler in *out.  A subclass (a gen call, see
    _gen.pxi) brings its own steps."""
    (<_Receive>obj).advanced = True
    return (<_Receive>obj).advance(out)


cdef int _receive_advance(_Receive r, PyObject **out) except -1:
    cdef Process p = r.proc
    cdef object result
    if r.state == RCV_WAITING:
        r.state = RCV_DONE
        result = r.finish(p)
        return _give(result, out, 0)
    if r.state == RCV_YIELDED:
        r.state = RCV_DONE
        return _give(None, out, 0)
    if r.state != RCV_FRESH:
        raise RuntimeError("an otpvm receive() can be awaited only once")
    if r.is_sleep and r.timeout_ns == 0:
        r.state = RCV_YIELDED           # sleep(0): to the back of the queue
        return _to_scheduler(r, STEP_YIELD, out)
    if p.out_of_budget():
        p.budget = CONTEXT_REDS
        return _to_scheduler(r, STEP_YIELD, out)
    p.budget -= 1
    p.reductions += 1
    if p.receive_now(r.pattern, r.timeout_ns == 0):
        r.state = RCV_DONE
        result = p.rcv_msg
        p.rcv_msg = None
        return _give(result, out, 0)
    if r.timeout_ns == 0:
        r.state = RCV_DONE
        raise TimeoutError("receive(timeout=0): no matching message")
    p.begin_wait(r.pattern, r.timeout_ns)
    r.state = RCV_WAITING
    return _to_scheduler(r, STEP_WAIT, out)


cdef inline int _to_scheduler(_Receive r, int step, PyObject **out):
    """Yields the awaitable itself to the scheduler, which reads r.step.
    Not a module-level sentinel: on free-threaded builds every scheduler
    thread would update that one object's reference count at each receive,
    a cache line bouncing between cores (a tenth of the time of ping-pong
    pairs on two schedulers went to that one increment)."""
    r.step = step
    return _give(r, out, 1)


cdef inline int _give(object value, PyObject **out, int status):
    Py_INCREF(value)
    out[0] = <PyObject *>value
    return status


cdef extern from "awaitable.h":
    ctypedef int (*ovm_advance_fn)(object, PyObject **) except -1
    int ovm_install_awaitable(type t, ovm_advance_fn advance) except -1

ovm_install_awaitable(_Receive, _advance)


cdef int64_t _timeout_ns(object timeout, str what) except -2:
    """Seconds (None: forever) as nanoseconds, or a clear error."""
    cdef double t
    if timeout is None:
        return -1
    if type(timeout) is float:          # the common case, without Python arithmetic
        t = <double>timeout
        if 0 <= t <= 1e9:
            return <int64_t>(t * 1e9)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, not {timeout!r}")
    if not (timeout >= 0) or timeout == float("inf"):
        if timeout == float("inf"):
            return -1
        raise ValueError(f"{what} must be >= 0 seconds, not {timeout!r}")
    if timeout > 1e9:
        return -1
    return <int64_t>(timeout * 1e9)


cdef _Receive _new_receive(Process p, object pattern, int64_t timeout_ns, bint is_sleep):
    cdef _Receive r = _Receive.__new__(_Receive)
    r.proc = p
    r.pattern = pattern
    r.timeout_ns = timeout_ns
    r.is_sleep = is_sleep
    return r
