# The awaitables behind receive() and sleep().
#
# A message already in the mailbox costs no suspension: the awaitable
# finishes at once.  Otherwise it yields _WAIT to the scheduler, which keeps
# matching newly arrived messages against the pattern (without resuming the
# coroutine) until one matches or the timeout fires, and only then resumes
# the process.  After CONTEXT_REDS reductions the awaitable yields _YIELD
# first, so that a process with a full mailbox still goes to the back of its
# run queue.

cdef enum:
    RCV_FRESH = 0
    RCV_WAITING = 1
    RCV_DONE = 2
    RCV_YIELDED = 3

cdef object _NEVER = lambda msg: False      # sleep's pattern


cdef class _Receive:
    cdef Process proc
    cdef object pattern
    cdef int64_t timeout_ns         # -1: wait forever
    cdef int state
    cdef bint is_sleep

    def __await__(self):
        return self

    def __next__(self):
        cdef Process p = self.proc
        if self.state == RCV_WAITING:
            self.state = RCV_DONE
            return self.finish(p)
        if self.state == RCV_YIELDED:
            self.state = RCV_DONE
            raise StopIteration(None)
        if self.state != RCV_FRESH:
            raise RuntimeError("an otpvm receive() can be awaited only once")
        if self.is_sleep and self.timeout_ns == 0:
            self.state = RCV_YIELDED           # sleep(0): to the back of the queue
            return _YIELD
        if p.budget <= 0:
            p.budget = CONTEXT_REDS
            return _YIELD
        p.budget -= 1
        p.reductions += 1
        if p.receive_now(self.pattern):
            self.state = RCV_DONE
            msg, p.rcv_msg = p.rcv_msg, None
            raise StopIteration(msg)
        if self.timeout_ns == 0:
            self.state = RCV_DONE
            raise TimeoutError("receive(timeout=0): no matching message")
        p.begin_wait(self.pattern, self.timeout_ns)
        self.state = RCV_WAITING
        return _WAIT

    cdef object finish(self, Process p):
        if p.rcv_error is not None:
            exc, p.rcv_error = p.rcv_error, None
            raise exc
        if p.rcv_done:
            p.rcv_done = False
            msg, p.rcv_msg = p.rcv_msg, None
            raise StopIteration(msg)
        if self.is_sleep:
            raise StopIteration(None)
        raise TimeoutError(
            f"receive timed out after {self.timeout_ns / 1e9:g} s with no matching message")

    def send(self, value):
        return self.__next__()

    def throw(self, typ, val=None, tb=None):
        if val is None:
            val = typ() if isinstance(typ, type) else typ
        raise val

    def close(self):
        pass


cdef int64_t _timeout_ns(object timeout, str what) except -2:
    """Seconds (None: forever) as nanoseconds, or a clear error."""
    if timeout is None:
        return -1
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
