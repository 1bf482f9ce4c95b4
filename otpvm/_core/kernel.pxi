# The calls a process makes.  Each needs a calling process: outside of one,
# they raise NotInProcessError (use the VM object from ordinary threads).

from cpython.set cimport PySet_Discard
from otpvm.terms import NoProcError as _NoProcError, NotInProcessError as _NotInProcessError


cdef inline Process _me(str call):
    cdef void *cur = ovm_get_current()
    if cur == NULL:
        raise _not_in_process(call)
    if ovm_proc_taken(&(<Process>cur).c):
        raise _ProcessKilled()              # killed while its code ran: it does nothing more
    return <Process>cur


cdef object _not_in_process(str call,
                            str instead="the VM object (VM.spawn, VM.send, VM.run)"):
    """The NotInProcessError for a kernel `call` made outside any process,
    naming the function the user called (see _called_api)."""
    return _NotInProcessError(
        f"{_called_api(call)}() must be called from inside an otpvm process; "
        f"from ordinary code use {instead}")


cdef str _called_api(str call):
    """The otpvm function that the code outside otpvm called, for an error
    raised deep inside it: a gen_server.call made outside a process fails in
    whereis, but whereis is not what the user wrote.

    Outside any process nothing but the user's own code can have called
    otpvm, so the outermost of the otpvm frames on top of the stack is the
    entry point (compiled functions have no frame: a compiled entry point
    checks first and names itself, `call`).  Only on this error path."""
    frame = _sys._getframe(0)       # the innermost Python frame: ours have none
    entry = None
    while frame is not None and _is_otpvm_module(frame.f_globals.get("__name__")):
        entry = frame
        frame = frame.f_back
    if entry is None:
        return f"otpvm.{call}"
    module = entry.f_globals["__name__"]
    if module == "otpvm.kernel":
        module = "otpvm"                # re-exported as otpvm.<name>
    return f"{module}.{entry.f_code.co_qualname}"


cdef bint _is_otpvm_module(object name):
    if type(name) is not str:
        return False
    if name == "otpvm":
        return True
    # The demos and the command line are otpvm's users, not its API.
    return (name.startswith("otpvm.") and not name.startswith("otpvm.demos")
            and name != "otpvm.__main__")


cdef Pid _as_pid(object pid, str call):
    if type(pid) is not Pid:
        raise TypeError(f"otpvm.{call}() needs a Pid, not {pid!r}")
    return <Pid>pid


def _current_vm(str call):
    """The VM of the calling process (the I/O layer's way in)."""
    return _me(call).vm


def self():
    """The pid of the calling process."""
    return _me("self").pid


def spawn(fn, *args):
    """Starts a process running ``fn(*args)`` (an async def or a function)."""
    cdef Process me = _me("spawn")
    return me.vm.start_process(fn, args, me, False).pid


def spawn_link(fn, *args):
    """Like spawn, and links the new process to the caller atomically."""
    cdef Process me = _me("spawn_link")
    return me.vm.start_process(fn, args, me, True).pid


def spawn_monitor(fn, *args):
    """Like spawn, and monitors the new process atomically: (pid, ref)."""
    cdef Process me = _me("spawn_monitor")
    cdef Ref ref = _new_ref()
    cdef Process p = me.vm.start_process(fn, args, me, False, None, ref)
    return p.pid, ref


def spawn_handler(handler, args=(), *, link=False, monitor=False):
    """Starts a callback process (the kind every OTP behaviour uses).

    ``handler.start(*args)`` runs first (a plain method or an async def);
    then each message in the mailbox, in order, goes to
    ``handler.handle_message(msg)``, which may return a coroutine to run
    before the next message.  The process keeps no stack between messages.
    It ends when a handler call raises (``exit(reason)`` included).
    Returns the pid, or (pid, ref) with ``monitor=True``."""
    cdef Process me = _me("spawn_handler")
    cdef Ref ref = _new_ref() if monitor else None
    if not callable(getattr(handler, "handle_message", None)):
        raise TypeError(f"a handler needs a handle_message method, not {handler!r}")
    cdef Process p = me.vm.start_process(handler.start, tuple(args), me, link, None, ref,
                                         handler)
    return (p.pid, ref) if monitor else p.pid


def send(dest, msg):
    """Sends msg to a Pid (dropped silently if it is dead) or a registered
    name (UnknownNameError if nobody has it).  The receiver gets its own
    copy: nothing it does to the message is visible to the sender.  A pid
    of another VM is an error (ForeignPidError; see Pid)."""
    _send_from(_me("send"), dest, msg)


cdef int _send_from(Process me, object dest, object msg, bint copy=True) except -1:
    """send(); copy=False for a message known to be immutable (copy_msg
    would return it as it is)."""
    me.budget -= 1
    me.reductions += 1
    if type(dest) is Pid:
        target = me.vm.procs.get((<Pid>dest).key)
        if target is None:
            me.vm.check_own(<Pid>dest, "cannot send to")
            return 0
    else:
        target = me.vm.resolve(dest)
    (<Process>target).deliver(OVM_SIG_MESSAGE, copy_msg(msg) if copy else msg, me.home())
    return 0


def receive(match=None, timeout=None):
    """``await receive(match, timeout)``: the first message that matches.

    Unmatched messages stay in the mailbox, in order.  ``match`` is None
    (anything), a type, a tuple pattern (with ``ANY`` and types inside), an
    ``AnyOf(...)``, a predicate, or a value compared by equality.  Raises
    TimeoutError after ``timeout`` seconds; ``timeout=0`` only looks.
    """
    return _new_receive(_me("receive"), match, _timeout_ns(timeout, "timeout"), False)


def sleep(seconds):
    """``await sleep(seconds)``: suspends the process (``sleep(0)`` yields)."""
    cdef int64_t ns = _timeout_ns(seconds, "sleep()'s seconds")
    if seconds is None:
        raise TypeError("sleep() needs a number of seconds, not None")
    return _new_receive(_me("sleep"), _NEVER, ns, True)


def _spend(int reductions):
    """Charges the calling process ``reductions`` reductions, as its own
    sends and receives are charged, for work otpvm does not see (an
    otpvm.aio loop: one per asyncio callback): True once its slice should
    end, when it must get to an await that yields (``sleep(0)``), as a
    receive would have yielded there.  Erlang's ``bump_reductions``, telling
    the caller when to yield."""
    cdef Process me = _me("_spend")
    me.budget -= reductions
    me.reductions += reductions
    return me.out_of_budget()


def make_ref():
    """A new unique reference.  A receive whose pattern contains it starts
    scanning at the messages that arrived after it was made, so a call's
    reply is found in O(1) however long the mailbox is."""
    return _make_ref(_me("make_ref"))


cdef Ref _make_ref(Process me):
    cdef Ref ref = _new_ref()
    me.drain()
    ovm_queue_mark(&me.mq)
    me.mark_ref = ref
    return ref


def alias():
    """A new reference that other processes can send to with
    ``send_alias(pid, ref, msg)`` while it is active (Erlang's alias/0).
    Like make_ref(), a receive on it skips older messages."""
    cdef Process me = _me("alias")
    ref = make_ref()
    (<Ref>ref).is_alias = True
    if me.aliases is None:
        me.aliases = set()
    me.aliases.add(ref)
    return ref


def unalias(ref):
    """Deactivates an alias: messages sent to it from now on are dropped,
    even those already on their way.  Returns whether it was active."""
    return _unalias(_me("unalias"), ref)


cdef bint _unalias(Process me, object ref) except -1:
    if me.aliases is None:
        return False
    return PySet_Discard(me.aliases, ref) == 1


def send_alias(pid, ref, msg):
    """Sends msg to pid through its alias ref: delivered only if pid still
    has the alias active when the message arrives."""
    _send_alias_from(_me("send_alias"), pid, ref, msg)


cdef int _send_alias_from(Process me, object pid, object ref, object msg,
                          bint copy=True) except -1:
    """send_alias(); copy=False for a message known to be immutable."""
    target = me.vm.lookup(_as_pid(pid, "send_alias"))
    if target is not None:
        (<Process>target).deliver(OVM_SIG_ALIAS, (ref, copy_msg(msg) if copy else msg),
                                  me.home())
    else:
        me.vm.check_own(<Pid>pid, "cannot send to")
    return 0


def link(pid):
    """Links the caller and pid: when either ends, the other gets an exit
    signal.  Linking to a dead process raises NoProcError, or, when the
    caller traps exits, delivers ``Exit(pid, 'noproc')`` (as Erlang does).
    A pid of another VM is an error (ForeignPidError; see Pid)."""
    cdef Process me = _me("link")
    cdef Pid other = _as_pid(pid, "link")
    if other == me.pid or (me.links is not None and other in me.links):
        return
    target = me.vm.lookup(other)
    if target is None:
        me.vm.check_own(other, "cannot link to")
    if target is not None and (<Process>target).deliver(OVM_SIG_LINK, me.pid, me.home()):
        me.link_set().add(other)
    elif me.trap_exit:
        me.link_set().add(other)
        me.deliver(OVM_SIG_EXIT_LINKED, (other, "noproc"), me.home())
    else:
        raise _NoProcError(f"link({other!r}): no such process (noproc)")


def unlink(pid):
    """Removes the link; no exit signal from it arrives afterwards."""
    cdef Process me = _me("unlink")
    cdef Pid other = _as_pid(pid, "unlink")
    if me.links is None or other not in me.links:
        return
    me.links.discard(other)
    target = me.vm.lookup(other)
    if target is not None:
        (<Process>target).deliver(OVM_SIG_UNLINK, me.pid, me.home())


def monitor(pid, *, alias=False):
    """Monitors a Pid or a registered name: when it ends (or if it is already
    gone) the caller gets ``Down(ref, pid, reason)``.  Returns ref.  With
    ``alias=True`` the ref is also an alias (see alias()), the way a
    gen_server call tags its request, active until the monitor ends: by
    the Down arriving or by demonitor (OTP's ``{alias, demonitor}``), or by
    unalias.  A pid of another VM is an error (ForeignPidError; see Pid)."""
    cdef Process me = _me("monitor")
    if type(pid) is not Pid and not isinstance(pid, str):
        raise TypeError(f"otpvm.monitor() needs a Pid or a registered name, not {pid!r}")
    return _monitor(me, pid, alias)


cdef Ref _monitor(Process me, object pid, bint alias):
    cdef Ref ref
    target = me.vm.lookup(pid)
    if target is None and type(pid) is Pid:
        me.vm.check_own(<Pid>pid, "cannot monitor")
    ref = _make_ref(me)             # marks the mailbox: a receive on ref is O(1)
    if alias:
        ref.is_alias = True
        if me.aliases is None:
            me.aliases = set()
        me.aliases.add(ref)
    if me.monitors_out is None:
        me.monitors_out = {}
    me.monitors_out[ref] = pid if target is None else (<Process>target).pid
    if target is None or not (<Process>target).deliver(
            OVM_SIG_MONITOR, (ref, me.pid, pid), me.home()):
        me.deliver(OVM_SIG_DOWN, _Down(ref, pid, "noproc"), me.home())
    return ref


def demonitor(ref, flush=False):
    """Removes a monitor: no Down for it arrives afterwards.  With
    ``flush=True`` a Down that already arrived is removed too.  Returns
    True if the monitor was still active."""
    cdef Process me = _me("demonitor")
    if type(ref) is not Ref:
        raise TypeError(f"otpvm.demonitor() needs a Ref, not {ref!r}")
    return _demonitor(me, <Ref>ref, flush)


cdef bint _demonitor(Process me, Ref ref, bint flush) except -1:
    cdef ovm_node *prev = NULL
    cdef ovm_node *node
    target = me.monitors_out.pop(ref, None) if me.monitors_out is not None else None
    if target is not None:
        if me.aliases is not None:          # {alias, demonitor}: see monitor_fired
            me.aliases.discard(ref)
        target = me.vm.lookup(target)
        if target is not None:
            (<Process>target).deliver(OVM_SIG_DEMONITOR, ref, me.home())
    if flush:
        me.drain()
        node = me.mq.head
        while node != NULL:
            msg = <object>node.payload
            if type(msg) is _Down and (<tuple>msg)[0] == ref:
                ovm_queue_unlink(&me.mq, prev, node)
                Py_DECREF(msg)
                ovm_node_free(node)
                break
            prev = node
            node = node.next
    return target is not None


def exit(*args):
    """``exit(reason)`` ends the calling process with reason (it unwinds
    like an exception: ``finally`` blocks run).  ``exit(pid, reason)`` sends
    pid an exit signal: ignored if 'normal', trapped as an ``Exit`` message
    if pid traps exits, untrappable if 'kill' (it dies with 'killed').  A pid
    of another VM is an error (ForeignPidError; see Pid)."""
    cdef Process me
    if len(args) == 1:
        _me("exit")
        raise _ProcessExit(args[0])
    if len(args) != 2:
        raise TypeError(f"exit() takes (reason) or (pid, reason), got {len(args)} arguments")
    me = _me("exit")
    pid = _as_pid(args[0], "exit")
    reason = args[1]
    if pid == me.pid:
        # A signal to oneself: in order after the messages already sent to
        # oneself, and acted on before exit() returns.
        me.deliver(OVM_SIG_EXIT, (me.pid, reason), me.home())
        me.drain()
        if me.kill_reason is not NOTHING:
            raise _ProcessExit(me.kill_reason)
        return
    target = me.vm.lookup(pid)
    if target is not None:
        (<Process>target).deliver(OVM_SIG_EXIT, (me.pid, reason), me.home())
    else:
        me.vm.check_own(pid, "cannot send an exit signal to")


def process_flag(flag, value):
    """Sets a process flag and returns its old value (only 'trap_exit')."""
    cdef Process me = _me("process_flag")
    if flag != "trap_exit":
        raise ValueError(f"unknown process flag {flag!r} (supported: 'trap_exit')")
    if not isinstance(value, bool):
        raise TypeError(f"process_flag('trap_exit', ...) needs a bool, not {value!r}")
    old = me.trap_exit
    me.trap_exit = value
    return old


def halt():
    """Stops the caller's VM, like ``erlang:halt()``: every process is killed
    and the ``run()`` or ``VM.run()`` waiting on the VM ends (raising
    ``ProcessExit('killed')`` if its main process was one of them).  Like
    erlang:halt() it does not return: the caller is killed at once (no
    ``terminate`` runs), rather than racing the stop that kills it from
    another thread."""
    _me("halt").vm.stop()
    raise _ProcessKilled()


def register(name, pid):
    """Registers pid under name (a non-empty str), atomically."""
    cdef Process me = _me("register")
    me.vm.register(name, _as_pid(pid, "register"))


def unregister(name):
    """Removes a registered name."""
    _me("unregister").vm.unregister(name)


def whereis(name):
    """The pid registered under name, or None."""
    p = _me("whereis").vm.names.get(name)
    return None if p is None else (<Process>p).pid


def registered():
    """The registered names."""
    return list(_me("registered").vm.names)


def send_after(seconds, dest, msg):
    """Sends msg to dest (a Pid, or a name looked up when the timer fires)
    after `seconds`.  Returns a TimerRef for cancel_timer."""
    cdef Process me = _me("send_after")
    cdef int64_t ns = _timeout_ns(seconds, "send_after()'s seconds")
    if seconds is None or ns < 0:
        raise ValueError(f"send_after() needs a finite number of seconds, not {seconds!r}")
    if type(dest) is not Pid and not isinstance(dest, str):
        raise TypeError(f"send_after() needs a Pid or a registered name, not {dest!r}")
    return me.vm.start_timer(ns, _TIMER_SEND, None, dest, copy_msg(msg), 0)


def cancel_timer(tref):
    """Cancels a send_after timer: the seconds that were left, or False if
    it already fired (or was cancelled)."""
    cdef Process me = _me("cancel_timer")
    if type(tref) is not TimerRef:
        raise TypeError(f"cancel_timer() needs a TimerRef, not {tref!r}")
    return me.vm.cancel_timer(<TimerRef>tref)


def is_alive(pid):
    """Whether the process is alive."""
    cdef Pid p = _as_pid(pid, "is_alive")
    target = p.vm.procs.get(p.key) if p.vm is not None else None
    return target is not None and (<Process>target).alive()


def processes():
    """The pids of every live process of the caller's VM (from outside any
    process, VM.processes())."""
    cdef void *cur = ovm_get_current()
    if cur == NULL:
        raise _not_in_process("processes", "VM.processes()")
    return (<Process>cur).vm.processes()


def become(fn, *args):
    """Replaces the calling coroutine process's body with ``fn(*args)``:
    OTP's ``?MODULE:loop(State)``.  The current body unwinds (its ``finally``
    blocks run) and the new one starts at once with the same pid, mailbox,
    links, monitors, sockets and context; locals are lost, state travels in
    the arguments.  Write ``become(mymod.loop, state)``: a qualified name
    reaches the current version of a hot-loaded module (otpvm.code)."""
    cdef Process me = _me("become")
    if me.on_message is not None:
        raise TypeError("become() is for coroutine processes: a callback process "
                        "switches code at its next message")
    if not callable(fn):
        raise TypeError(f"become() needs an async function, not {fn!r}")
    raise _Become(fn, args)


@cython.final
cdef class blocking:
    """``with otpvm.blocking(): ...`` around a call that may wait (a lock, a
    file, ``time.sleep``, another thread's result): Erlang's dirty
    schedulers.  Once the call has waited 0.2 ms, the monitor hands the
    scheduler thread's run queue to a spare thread at its next look (within
    a millisecond), so the other processes run on while it waits, and
    nothing is reported: a ``long_schedule`` is for code that overran
    without saying so.  The calling process still holds its thread until the
    call returns (Python cannot suspend it mid-call); the thread becomes a
    spare afterwards.  Time spent inside is not charged to the slice.  A
    process killed while inside is ended at once (links and monitors hear of
    it), as a stuck one is; its code is interrupted when the call returns.

    Costs two clock reads and a few atomic stores; outside a process (a
    plain thread) it does nothing.  Nests.  For work that can be awaited
    instead, awaiting is better: ``otpvm.run_blocking(fn)`` runs fn on a
    thread of its own while the process waits as for a message, and
    ``otpvm.wait_future(fut)`` waits for a ``concurrent.futures.Future``.
    """

    def __enter__(self):
        cdef void *cur = ovm_get_current()
        if cur != NULL and ovm_proc_state(&(<Process>cur).c) & OVM_KILL:
            raise _ProcessExit("killed")    # a kill came first: no waiting then
        ovm_blocking(1)
        return self

    def __exit__(self, *exc_info):
        ovm_blocking(0)
        return False


@cython.final
cdef class _EnterLoop:
    """_enter_loop's request to Process.become."""
    cdef object handler


def _enter_loop(handler):
    """gen_server.enter_loop's part in the core: the calling coroutine
    process becomes a callback process run by ``handler`` (its body unwinds
    first, as with become; pid, mailbox, links, monitors, sockets and
    context stay), whose ``start()`` runs first as at spawn_handler.
    Raises, like become, to unwind the body: never returns."""
    cdef Process me = _me("enter_loop")
    cdef _EnterLoop request
    if me.on_message is not None:
        raise TypeError("enter_loop is for a coroutine process: this one is already "
                        "a callback process")
    if not callable(getattr(handler, "handle_message", None)):
        raise TypeError(f"a handler needs a handle_message method, not {handler!r}")
    request = _EnterLoop.__new__(_EnterLoop)
    request.handler = handler
    raise _Become(request, ())


def _code_roots(pid):
    """otpvm.code only: (body function, handler, coroutine, arguments not
    yet taken) of a live process of the caller's VM, or None."""
    cdef Pid p = _as_pid(pid, "_code_roots")
    cdef void *cur = ovm_get_current()
    cdef VM vm = (<Process>cur).vm if cur != NULL else p.vm
    if vm is None:
        return None
    target = vm.lookup(p)
    if target is None or not (<Process>target).alive():
        return None
    return (<Process>target).code_roots()


def _hibernate():
    """Hibernation's part in the core, for behaviours (gen_server's
    ``hibernate=True``), called by a callback process between two messages:
    frees what the process keeps for speed, not for its function -- the
    timer and pattern of its last receive (kept armed to serve the next
    call) -- and rebuilds its link, monitor and alias tables at their exact
    size (a set that once held thousands of links keeps their table).  The
    behaviour compacts its state itself (``_compact``).  process_info says
    ``hibernating`` until the next message is dispatched."""
    _shrink(_me("hibernate"))


cdef int _shrink(Process me) except -1:
    cdef TimerRef t
    if not me.waiting:
        t = me.rcv_timer
        if t is not None:
            if ovm_proc_timeout_fired(&me.c) != t.gen:
                me.vm.cancel_timer(t)
            me.rcv_timer = None
        me.rcv_match = None
    with cython.critical_section(me):          # see "shared fields" (process.pxi)
        me.links = set(me.links) if me.links else None
        me.aliases = set(me.aliases) if me.aliases else None
        me.monitors_in = dict(me.monitors_in) if me.monitors_in else None
        me.monitors_out = dict(me.monitors_out) if me.monitors_out else None
    me.hibernating = True
    return 0


def process_info(pid):
    """A dict about a live process (status, message_queue_len, reductions,
    links, monitors, monitored_by, registered_name, trap_exit,
    initial_call, hibernating), or None if it is dead.  Like is_alive, it works from any
    thread: outside a process, the pid's own VM answers."""
    cdef Pid p = _as_pid(pid, "process_info")
    cdef void *cur = ovm_get_current()
    cdef VM vm = (<Process>cur).vm if cur != NULL else p.vm
    if vm is None:
        return None                     # an unpickled pid, and no VM of its node runs
    target = vm.lookup(p)
    if target is None:
        vm.check_own(p, "cannot get process_info of")
        return None
    if <void *>target == cur:
        # About itself: its signals are handled first, so a process with a
        # kill on its way ends here instead of reading itself as dead.
        (<Process>target).drain()
        if (<Process>target).kill_reason is not NOTHING:
            raise _ProcessKilled((<Process>target).kill_reason)
    return (<Process>target).info()
