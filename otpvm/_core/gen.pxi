# The compiled fast path of otpvm.gen and otpvm.gen_server.
#
# Like CPython's _asyncio module beside asyncio's Python code, this mirrors
# a Python reference implementation step for step: gen.py's call, cast and
# reply (kept there as _call_py, _cast_py and _reply_py), and the
# '$gen_call' / '$gen_cast' branch of gen_server's handle_message (kept as
# _Server._handle_message_py).  Whatever is unusual -- a dest that is not a
# Pid, a result other than a plain Reply/NoReply, a timer, sys debugging,
# an async callback, a crash -- goes back to that Python code, so the two
# can never drift apart in behaviour; tests run the suites on both.
#
# The Python modules hand their classes over with _gen_setup() when they are
# imported (the VM core is below them and cannot import them).

cdef extern from "gen.h":
    object ovm_tuple2_of(type t, object a, object b)
    Py_ssize_t ovm_slot_offset(object descr)
    PyObject *ovm_slot_peek(object obj, Py_ssize_t offset)
    long ovm_code_epoch()
    long ovm_code_epoch_bump()

cdef type _From = None
cdef object _CallError = None
cdef object _gen_resolve = None
cdef str _GEN_CALL = "$gen_call"
cdef str _GEN_CAST = "$gen_cast"
cdef type _Reply = None
cdef type _NoReply = None
cdef object _UNSET = None


def _gen_setup(*, From, CallError, resolve, call_tag, cast_tag):
    """Called once by otpvm.gen: the classes and helpers the fast path uses."""
    global _From, _CallError, _gen_resolve, _GEN_CALL, _GEN_CAST
    _From = From
    _CallError = CallError
    _gen_resolve = resolve
    _GEN_CALL = call_tag
    _GEN_CAST = cast_tag


# Where Reply's and NoReply's fields live in their instances (they are
# slots dataclasses): read directly, as the member descriptors would, instead
# of through getattr.  -1: use getattr.
cdef Py_ssize_t _R_VALUE = -1, _R_STATE = -1, _R_TIMEOUT = -1, _R_CONTINUE = -1
cdef Py_ssize_t _R_HIBERNATE = -1
cdef Py_ssize_t _N_STATE = -1, _N_TIMEOUT = -1, _N_CONTINUE = -1, _N_HIBERNATE = -1


def _gen_server_setup(*, Reply, NoReply, UNSET):
    """Called once by otpvm.gen_server: its result classes."""
    global _Reply, _NoReply, _UNSET
    global _R_VALUE, _R_STATE, _R_TIMEOUT, _R_CONTINUE, _R_HIBERNATE
    global _N_STATE, _N_TIMEOUT, _N_CONTINUE, _N_HIBERNATE
    _Reply = Reply
    _NoReply = NoReply
    _UNSET = UNSET
    _R_VALUE = ovm_slot_offset(Reply.__dict__.get("value"))
    _R_STATE = ovm_slot_offset(Reply.__dict__.get("state"))
    _R_TIMEOUT = ovm_slot_offset(Reply.__dict__.get("timeout"))
    _R_CONTINUE = ovm_slot_offset(Reply.__dict__.get("continue_"))
    _R_HIBERNATE = ovm_slot_offset(Reply.__dict__.get("hibernate"))
    _N_STATE = ovm_slot_offset(NoReply.__dict__.get("state"))
    _N_TIMEOUT = ovm_slot_offset(NoReply.__dict__.get("timeout"))
    _N_CONTINUE = ovm_slot_offset(NoReply.__dict__.get("continue_"))
    _N_HIBERNATE = ovm_slot_offset(NoReply.__dict__.get("hibernate"))


cdef inline object _field(object obj, Py_ssize_t offset, str name):
    """obj.name, for a Reply or NoReply of exactly that class."""
    cdef PyObject *v
    if offset >= 0:
        v = ovm_slot_peek(obj, offset)
        if v != NULL:
            return <object>v
    return getattr(obj, name)


# -- the caller's side: gen.call ------------------------------------------------

cdef enum:
    CALL_FRESH = 0
    CALL_SENT = 1
    CALL_WAITING = 2
    CALL_DONE = 3


cdef class _Call(_Receive):
    """``await gen.call(dest, request, timeout, tag)``: gen.py's _call_py in
    one awaitable, with no Python frame.  Nothing happens until it is
    awaited, as with the coroutine it mirrors.

    resolve -> monitor(pid, alias=True) -> send (tag, From(self, ref),
    request) -> receive the reply or the Down on ref (O(1), from the
    mailbox marker the monitor's ref set) -> unalias -> demonitor(flush)."""

    cdef object dest
    cdef object request
    cdef object timeout
    cdef object tag
    cdef Ref ref

    def __dealloc__(self):
        # Here, while dest is still set (the base's deallocator runs after
        # this class's fields are cleared); then the base stays quiet.
        if not self.advanced:
            self.advanced = True
            _warn_unawaited(f"otpvm.gen.call() to {_brief(self.dest)}")

    cdef int advance(self, PyObject **out) except -1:
        cdef Process p
        cdef object msg
        if self.state == CALL_FRESH:
            self.start()
        p = self.proc
        if self.state == CALL_SENT:
            # receive(...)'s first step (_receive_advance), with the call's pattern.
            if p.out_of_budget():
                p.budget = CONTEXT_REDS
                return _to_scheduler(self, STEP_YIELD, out)
            p.budget -= 1
            p.reductions += 1
            if p.receive_now(self.pattern, self.timeout_ns == 0):
                self.state = CALL_DONE
                msg = p.rcv_msg
                p.rcv_msg = None
                return _give(self.outcome(p, msg), out, 0)
            if self.timeout_ns == 0:
                self.state = CALL_DONE
                self.timed_out(p)
            p.begin_wait(self.pattern, self.timeout_ns)
            self.state = CALL_WAITING
            return _to_scheduler(self, STEP_WAIT, out)
        if self.state == CALL_WAITING:
            self.state = CALL_DONE
            if p.rcv_error is not None:
                exc, p.rcv_error = p.rcv_error, None
                raise exc
            if p.rcv_done:
                p.rcv_done = False
                msg, p.rcv_msg = p.rcv_msg, None
                return _give(self.outcome(p, msg), out, 0)
            self.timed_out(p)
        raise RuntimeError("a gen call can be awaited only once")

    cdef int start(self) except -1:
        cdef Process p
        cdef Ref ref
        self.state = CALL_DONE         # until sent: a failed start is not retried
        dest = self.dest
        pid = dest if type(dest) is Pid else _gen_resolve(dest)
        if pid is None:
            raise _CallError("noproc", dest, self.request)
        p = _me("monitor")
        if type(pid) is Pid and pid == p.pid:
            # OTP's gen:call exits at once with calling_self: a server
            # cannot answer a call it is waiting in.
            raise _CallError("calling_self", dest, self.request)
        if type(pid) is not Pid and not isinstance(pid, str):
            raise TypeError(f"otpvm.monitor() needs a Pid or a registered name, not {pid!r}")
        ref = _monitor(p, pid, True)
        self.proc = p
        self.ref = ref
        msg = (self.tag, ovm_tuple2_of(_From, p.pid, ref), self.request)
        # An immutable request: copy_msg would return msg itself.
        _send_from(p, pid, msg, not (type(self.tag) is str and _atomic(self.request)))
        self.timeout_ns = _timeout_ns(self.timeout, "timeout")
        pattern = _CallReply.__new__(_CallReply)
        (<_CallReply>pattern).ref = ref
        self.pattern = pattern
        self.state = CALL_SENT
        return 0

    cdef object outcome(self, Process p, object msg):
        _unalias(p, self.ref)
        # The matcher let through only tuples: a reply (ref, value) or a Down.
        if type(msg) is not tuple and isinstance(msg, _Down):
            raise _CallError((<tuple>msg)[2], self.dest, self.request)
        _demonitor(p, self.ref, True)
        return (<tuple>msg)[1]

    cdef int timed_out(self, Process p) except -1:
        cdef Ref ref = self.ref
        _unalias(p, ref)
        _demonitor(p, ref, True)
        # _flush_reply: a reply that arrived just before the alias went.
        p.budget -= 1
        p.reductions += 1
        if p.receive_now((ref, _ANY)):
            p.rcv_msg = None
        exc = TimeoutError(f"call to {self.dest!r} timed out after {self.timeout} s "
                           f"(request {self.request!r})")
        exc.__suppress_context__ = True
        raise exc


cdef str _brief(object dest):
    """dest for a warning written from a deallocator: no user __repr__."""
    if type(dest) is Pid or type(dest) is str:
        return repr(dest)
    return f"a {type(dest).__name__}"


ovm_install_awaitable(_Call, _advance)
_Coroutine.register(_Call)      # asyncio.iscoroutine(), like the coroutine it mirrors


def gen_call(dest, request, timeout=5.0, tag=_GEN_CALL):
    """``await call(dest, request, timeout=5.0)``: sends a request to a
    server (a Pid, a registered name or a via name) and waits for its reply.

    Raises ``CallError`` (with ``.reason``) if the server does not exist or
    ends before replying, ``TimeoutError`` after ``timeout`` seconds (None:
    forever).  Neither leaves a stray reply or Down message behind, and a
    reply that comes after a timeout is dropped on arrival.  Nothing happens
    until the result is awaited.  (otpvm.gen.call; its Python reference is
    gen._call_py.)"""
    cdef _Call c
    _me("gen.call")                 # outside a process: fail here, naming the caller's call
    c = _Call.__new__(_Call)
    c.dest = dest
    c.request = request
    c.timeout = timeout
    c.tag = tag
    return c


def gen_cast(dest, msg):
    """Sends a request to a server without waiting; never fails, as in OTP,
    unless dest is a pid of another VM (ForeignPidError: see Pid).
    (otpvm.gen.cast; its Python reference is gen._cast_py.)"""
    _cast(_me("gen.cast"), dest, msg)


def gen_server_cast(dest, msg):
    """Sends a request to a server without waiting; never fails, as in OTP,
    unless dest is a pid of another VM (ForeignPidError: see Pid).
    (otpvm.gen_server.cast: gen.cast under the name its errors give.)"""
    _cast(_me("gen_server.cast"), dest, msg)


cdef int _cast(Process me, object dest, object msg) except -1:
    pid = dest if type(dest) is Pid else _gen_resolve(dest)
    if pid is not None:
        _send_from(me, pid, (_GEN_CAST, msg))
    return 0


def gen_reply(from_, value):
    """Answers a call, from inside the server or any process it handed
    ``from_`` to; a caller that gave up meanwhile drops it.  A ``from_``
    whose ref is no alias (a hand-made ``From(pid, make_ref())``) gets the
    reply ``(ref, value)`` as a plain message, as OTP's gen:reply sends
    ``{Tag, Reply}`` to a tag that is no alias.  (otpvm.gen.reply; its
    Python reference is gen._reply_py.)"""
    cdef Process me = _me("gen.reply")
    if type(from_) is _From:
        pid = (<tuple>from_)[0]
        ref = (<tuple>from_)[1]
    else:
        pid = from_.pid
        ref = from_.ref
    copy = not (_atomic(value) and _atomic(ref))
    if type(ref) is Ref and (<Ref>ref).is_alias:
        _send_alias_from(me, pid, ref, (ref, value), copy)
    else:
        _send_from(me, pid, (ref, value), copy)


# -- the code epoch ---------------------------------------------------------------


def code_epoch():
    """The code server's epoch: changes whenever a module's current version
    does (otpvm.code)."""
    return ovm_code_epoch()


def _bump_code_epoch():
    """otpvm.code only: a module's current version changed."""
    return ovm_code_epoch_bump()


# -- the server's side: gen_server's dispatch -----------------------------------


cdef class _ServerCore:
    """The compiled half of gen_server's callback-process handler.

    handle_message takes the common cases -- a call answered with a plain
    Reply (or NoReply), a cast answered with a plain NoReply (no timeout,
    continue or hibernate), with no timer armed, no sys debugging and no
    hibernation to wake from -- and hands everything else, unchanged, to
    the Python reference (_handle_message_py, _crash, _finish_callback)."""

    cdef public object mod          # the GenServer instance
    cdef public object state
    cdef public object timer        # the timeout's TimerRef, or None
    cdef public object debug        # sys.Debug, or None
    cdef public bint hibernate      # it hibernated (again after each sys request)
    cdef public long epoch          # the code epoch its class was last resolved in
    cdef public object hib_timer    # hibernate_after's TimerRef, or None
    cdef public object last_msg     # what a termination report shows as the last message
    cdef public object last_from    # and who sent it, if it was a call

    def _code_epoch_changed(self):
        """Called before a message when the code epoch moved since the last
        one (the subclass resolves its callback class again)."""

    def handle_message(self, msg):
        cdef Py_ssize_t n
        cdef long epoch = ovm_code_epoch()
        if self.epoch != epoch:
            self.epoch = epoch
            self._code_epoch_changed()
        if (self.timer is not None or self.debug is not None or self.hibernate
                or self.hib_timer is not None or type(msg) is not tuple):
            return self._handle_message_py(msg)
        n = len(<tuple>msg)
        tag = (<tuple>msg)[0] if n else None
        if type(tag) is not str:
            return self._handle_message_py(msg)
        if n == 3 and <str>tag == _GEN_CALL:
            return self.call(msg[2], msg[1])
        if n == 2 and <str>tag == _GEN_CAST:
            return self.cast(msg[1])
        return self._handle_message_py(msg)

    cdef object call(self, object request, object from_):
        try:
            result = self.mod.handle_call(request, from_, self.state)
        except _ProcessKilled:
            raise
        except (Exception, _ProcessExit) as exc:
            self.last_msg, self.last_from = request, from_
            return self._crash(exc)       # exit(reason) too: terminate runs
        t = type(result)
        if t is _Reply and from_ is not None:
            if (_field(result, _R_TIMEOUT, "timeout") is None
                    and _field(result, _R_CONTINUE, "continue_") is _UNSET
                    and _field(result, _R_HIBERNATE, "hibernate") is False):
                gen_reply(from_, _field(result, _R_VALUE, "value"))
                self.state = _field(result, _R_STATE, "state")
                return None
        elif t is _NoReply:
            if (_field(result, _N_TIMEOUT, "timeout") is None
                    and _field(result, _N_CONTINUE, "continue_") is _UNSET
                    and _field(result, _N_HIBERNATE, "hibernate") is False):
                self.state = _field(result, _N_STATE, "state")
                return None
        self.last_msg, self.last_from = request, from_
        return self._finish_callback("handle_call", result, from_)

    cdef object cast(self, object msg):
        try:
            result = self.mod.handle_cast(msg, self.state)
        except _ProcessKilled:
            raise
        except (Exception, _ProcessExit) as exc:
            self.last_msg, self.last_from = (_GEN_CAST, msg), None
            return self._crash(exc)       # exit(reason) too: terminate runs
        if type(result) is _NoReply:
            if (_field(result, _N_TIMEOUT, "timeout") is None
                    and _field(result, _N_CONTINUE, "continue_") is _UNSET
                    and _field(result, _N_HIBERNATE, "hibernate") is False):
                self.state = _field(result, _N_STATE, "state")
                return None
        self.last_msg, self.last_from = (_GEN_CAST, msg), None
        return self._finish_callback("handle_cast", result, None)
