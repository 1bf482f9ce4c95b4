# A process: its mailbox, its signals, its links and monitors, its end.
#
# Only the process itself (on whichever scheduler thread runs it) touches its
# private queue, links and monitors.  Other processes reach it only through
# its inbox: messages and signals queue up there in the order they were sent,
# and the process handles them when it next looks at its mailbox, which is
# what gives Erlang's ordering guarantee between any two processes.
#
# Killing a stuck process.  A process whose code never gets to an await
# (an endless loop, a call that never returns) never looks at its mailbox,
# so the exit signal that should end it would wait there forever.  Once the
# monitor has found its slice overrunning (the reporter keeps such processes
# in VM.stuck), a signal that kills it is acted on by the thread that sends
# it, or by the reporter if it came first (take_over):
#   1. the state word goes from RUNNING to EXITED | TAKEN, so that its own
#      thread will never end it again, and nothing can wake or run it;
#   2. the end is announced as usual, from copies of its links, monitors
#      and sockets: exit signals, Downs with the reason ('killed' for a
#      kill), sockets closed, pid and name freed, on_exit hook;
#   3. its thread is interrupted: _ProcessKilled is raised in it
#      (PyThreadState_SetAsyncExc), and again every few milliseconds while
#      the code goes on (it may catch it), until the thread gets out of the
#      process's code.  Every kernel call the code makes meanwhile raises it
#      too (_me), so a killed process sends nothing more.
# When its thread gets out, it finishes the end (end_taken): it stops the
# interrupts and clears one still pending, tells the links and monitors made
# after the copies, and frees its mailbox.  A thread inside a C call that
# never returns to Python cannot be interrupted: the process is dead for
# everyone, but its thread stays there (VM.stop says so).
#
# Shared fields.  A few fields are read by other threads: process_info,
# long_schedule reports, otpvm.code's scan, an exit signal's check of the
# links, a stuck process's take-over, a socket handed to it (VM._own).  On
# free-threaded Python nothing serialises those readers with the owner, and
# loading an object field while the owner replaces it could touch a freed
# object; so the owner replaces them (release, hibernation, its name, its
# sockets, its first start) under the process's own lock
# (cython.critical_section: a per-object mutex on free-threaded builds,
# nothing with a GIL), and the readers load them under it.  Changes made in
# place (adding to a set of links) need nothing: the containers of
# free-threaded Python have locks of their own.

import logging as _logging
import traceback as _traceback

cdef extern from "Python.h":
    object PyContext_CopyCurrent()
    int PyContext_Enter(object ctx) except -1
    int PyContext_Exit(object ctx) except -1
    int PyIter_Send(object iter, object arg, PyObject **presult) except -1
    bint PyCoro_CheckExact(object o)
    int PyThreadState_SetAsyncExc(unsigned long id, PyObject *exc)

cdef extern from "sched.h" nogil:
    int sched_yield()

from collections.abc import Coroutine as _Coroutine
from otpvm.terms import ProcessExit as _ProcessExit_cls

cdef object _ProcessExit = _ProcessExit_cls
cdef int64_t _NAG_NS = 10 * 1000000LL          # a killed process's thread: interrupted again
cdef int64_t _NAG_MAX_NS = 1000 * 1000000LL    # ... backing off up to this


class _Become(BaseException):
    """Raised by otpvm.become(): the process's body is replaced.  A
    BaseException, so that ``except Exception`` in the body lets it through
    while its ``finally`` blocks run."""

    def __init__(self, fn, args):
        super().__init__(fn, args)
        self.fn = fn
        self.args = args


class _ProcessKilled(_ProcessExit_cls):
    """Raised in the thread of a process killed while its code ran (see
    "killing a stuck process" above); a ProcessExit with reason 'killed'."""

    def __init__(self, reason="killed"):
        super().__init__(reason)
cdef object _Down = _Down_cls
cdef object _Exit = _Exit_cls
cdef object _log = _logging.getLogger("otpvm")

# What a slice of a process ended with.
cdef enum:
    STEP_WAIT = 0       # blocked in receive: not queued anywhere
    STEP_YIELD = 1      # used up its reductions: back of the run queue
    STEP_DONE = 2       # ended
    STEP_AGAIN = 3      # (inside a slice) a handler finished a message: go on
    STEP_IDLE = 4       # (inside a slice) a handler has no message to take

# Erlang's CONTEXT_REDS: what one slice may spend before yielding.
DEF CONTEXT_REDS = 4000

# Arrivals the scheduler takes from the mailbox per look in a slice.  Acting
# on a signal costs a reduction, as in Erlang: a supervisor whose ten
# thousand children exit at once works through their exit signals over
# several slices instead of one of tens of milliseconds (drain_some).
DEF DRAIN_BATCH = 64

cdef object NOTHING = object()


cdef inline object _take_payload(ovm_node *node):
    """The node's payload, taking over the reference the node held."""
    cdef object payload = <object>node.payload
    Py_DECREF(payload)
    return payload


cdef inline bint _is(object reason, str atom):
    return type(reason) is str and <str>reason == atom


cdef struct _Signals:
    # The non-message signals seen in an inbox, kept in C memory while the
    # inbox lock is held: creating a Python object there could start the
    # garbage collector, which can run any finaliser and switch threads,
    # while a sender holding the GIL waits for the lock (a deadlock).
    size_t n, cap, messages
    int *kinds
    PyObject **payloads
    bint out_of_memory


cdef void _collect_signal(void *out, int kind, void *payload) noexcept:
    cdef _Signals *seen = <_Signals *>out
    cdef size_t cap
    cdef void *grown
    if ovm_sig_is_message(kind):
        seen.messages += 1
        return
    if seen.out_of_memory:
        return
    if seen.n == seen.cap:
        cap = seen.cap * 2 if seen.cap else 8
        grown = realloc(seen.kinds, cap * sizeof(int))
        if grown == NULL:
            seen.out_of_memory = True
            return
        seen.kinds = <int *>grown
        grown = realloc(seen.payloads, cap * sizeof(PyObject *))
        if grown == NULL:
            seen.out_of_memory = True
            return
        seen.payloads = <PyObject **>grown
        seen.cap = cap
    Py_INCREF(<object>payload)          # its owner may drain and free it once we unlock
    seen.kinds[seen.n] = kind
    seen.payloads[seen.n] = <PyObject *>payload
    seen.n += 1


cdef void _free_nodes(ovm_node *node) noexcept:
    cdef ovm_node *nxt
    while node != NULL:
        nxt = node.next
        Py_DECREF(<object>node.payload)
        ovm_node_free(node)
        node = nxt


cdef str _ASYNCIO_HINT = (
    "asyncio does not run inside an otpvm process: use otpvm.sleep() instead of "
    "asyncio.sleep(), otpvm.receive() to wait for messages, and "
    "'await otpvm.run_blocking(fn, *args)' for a blocking call; to use otpvm from "
    "asyncio code, run the VM beside the event loop: "
    "'await loop.run_in_executor(None, vm.run, main)'")


cdef object _foreign_await(Pid pid, object value):
    """The TypeError for a process whose coroutine yielded something other
    than otpvm's own awaitables to the scheduler, saying what it was."""
    if hasattr(type(value), "_asyncio_future_blocking"):       # asyncio.isfuture
        return TypeError(f"process {pid!r} awaited an asyncio future ({value!r}), which "
                         f"otpvm cannot wait for. {_ASYNCIO_HINT}")
    if value is None:
        return TypeError(f"process {pid!r} awaited something that yielded None to the "
                         f"scheduler (a bare 'yield', as asyncio.sleep(0) does), which "
                         f"otpvm cannot wait for. {_ASYNCIO_HINT}")
    return TypeError(f"process {pid!r} awaited something that yielded {value!r} to the "
                     f"scheduler, which otpvm cannot wait for: processes await "
                     f"otpvm.receive(), otpvm.sleep(), gen calls, and coroutines that "
                     f"await them (not another event loop's objects)")


cdef int _explain_asyncio(object exc) except -1:
    """A process that crashed calling asyncio (whose calls need a running
    event loop) gets a note on its exception saying what to use instead."""
    if type(exc) is not RuntimeError:
        return 0
    text = str(exc)
    if text != "no running event loop" and not text.startswith("There is no current event loop"):
        return 0
    if _ASYNCIO_HINT not in (getattr(exc, "__notes__", None) or ()):
        exc.add_note(_ASYNCIO_HINT)
    return 0


@cython.no_gc
cdef class Process:
    """A lightweight process (internal: user code only ever sees its Pid).

    Not tracked by the cyclic GC: a million processes would otherwise make
    every full collection walk a million objects.  Nothing refers back to a
    process except the VM's pid table, and terminate() drops everything it
    holds, so no cycle can keep a dead process alive.
    """

    cdef ovm_proc c
    cdef ovm_inbox inbox
    cdef ovm_node *pending          # taken from the inbox, not yet looked at (drain_some)
    cdef ovm_queue mq
    cdef VM vm
    cdef Pid pid
    cdef object fn                  # the body (for a handler: its start method)
    cdef tuple args
    cdef bint started
    cdef object on_message          # callback processes: handler.handle_message
    cdef object coro                # the running coroutine, if any
    cdef object ctx                 # its contextvars.Context
    cdef set links                  # Pids
    cdef dict monitors_in           # Ref -> (watcher Pid, how its Down names us)
    cdef dict monitors_out          # Ref -> Pid we watch
    cdef bint trap_exit
    cdef object name                # registered name, or None
    cdef uint64_t reductions
    cdef int budget
    cdef int next_check             # budget at which out_of_budget next looks at the clock
    cdef ovm_worker *worker         # the scheduler thread running it (run_slice)
    cdef uint32_t worker_index      # ... its slot
    cdef tuple announced            # take_over's copies: links, monitors in and out, ports
    cdef bint released              # its end is complete (terminate or end_taken)
    cdef object kill_reason         # NOTHING, or why a signal kills us
    cdef object exit_reason         # NOTHING while alive
    cdef object result
    cdef object on_exit             # called with no argument when it ends
    cdef bint crash_raised          # VM.run's main: its crash is re-raised, not logged
    # A receive in progress (see receive.pxi).
    cdef bint waiting
    cdef object rcv_match
    cdef ovm_node *rcv_prev         # last node already examined
    cdef bint rcv_marked            # the scan starts at the ref marker
    cdef bint rcv_done
    cdef object rcv_msg
    cdef object rcv_error
    cdef uint64_t rcv_gen           # generation of the receive timer last armed
    cdef TimerRef rcv_timer         # that timer, kept after its receive (see arm_timer)
    cdef int64_t rcv_deadline       # when the receive in progress times out, -1: never
    cdef Ref mark_ref               # the ref the mailbox marker belongs to
    cdef set aliases                # Refs that messages may be sent to
    cdef set ports                  # sockets it owns (closed when it ends)
    cdef bint hibernating           # _hibernate ran and no message came since

    def __dealloc__(self):
        if self.inbox_ready():
            _free_nodes(self.pending)
            _free_nodes(ovm_inbox_close(&self.inbox))
            _free_nodes(ovm_queue_take_all(&self.mq))
            ovm_inbox_destroy(&self.inbox)

    cdef inline bint inbox_ready(self):
        return self.c.owner != NULL

    # -- delivery (called from any thread) --------------------------------

    cdef bint deliver(self, int kind, object payload, uint32_t runq) except -1:
        """Queues a message or signal; False if the process is gone."""
        cdef ovm_node *node
        Py_INCREF(payload)
        node = ovm_node_new(<void *>payload, kind)
        if node == NULL:
            Py_DECREF(payload)
            raise MemoryError("otpvm: out of memory queueing a message")
        if ovm_inbox_push(&self.inbox, node) != 0:
            ovm_node_free(node)
            Py_DECREF(payload)
            return False
        if kind == OVM_SIG_EXIT or kind == OVM_SIG_EXIT_LINKED:
            self.exit_queued(kind, payload)
        # Link and monitor bookkeeping needs no action until the process
        # next looks at its mailbox, or dies (terminate answers them then),
        # so it does not wake the process: a gen_server call's monitor and
        # demonitor would otherwise cost the server two extra slices.
        if kind < OVM_SIG_LINK or kind > OVM_SIG_DEMONITOR:
            self.wake(runq)
        return True

    cdef int exit_queued(self, int kind, tuple payload) except -1:
        """An exit signal was queued for this process: a kill makes it dead
        to observers at once, and one that kills a stuck process is acted on
        now (see "killing a stuck process" above)."""
        reason = self.killing_reason(kind, payload)
        if reason is not NOTHING and (
                (self.vm.stuck and self.pid.id in self.vm.stuck)
                or ovm_sched_in_blocking(&self.vm.sched, self.pid.id)):
            self.take_over(reason)          # stuck, or waiting in otpvm.blocking()
        return 0

    cdef object killing_reason(self, int kind, tuple payload):
        """The reason this exit signal will end the process with, or NOTHING
        (read from another thread: trap_exit and links may be changing, as
        they may in Erlang while a signal is in flight)."""
        sender, reason = payload
        if kind == OVM_SIG_EXIT and _is(reason, "kill"):
            ovm_proc_mark_kill(&self.c)
            return "killed"
        if self.trap_exit or _is(reason, "normal"):
            return NOTHING
        if kind == OVM_SIG_EXIT_LINKED:
            with cython.critical_section(self):
                links = self.links
            if links is None or sender not in links:
                return NOTHING
        return reason

    cdef bint take_over(self, object reason) except -1:
        """Ends this process, stuck in its code on another thread, with
        `reason` (steps 1-3 of "killing a stuck process").  False when it is
        not running any more: its own thread ends it then."""
        cdef uint32_t q = self.home()
        if not ovm_proc_take(&self.c):
            return False
        self.exit_reason = reason
        with cython.critical_section(self):     # its own thread still runs
            links = set(self.links or ())
            monitors_in = dict(self.monitors_in or {})
            monitors_out = dict(self.monitors_out or {})
        ports = self.take_ports()
        self.fold_signals(self.pending_signals(), links, monitors_in)   # it never looked
        self.vm.zombies[self.pid.id] = [self, ovm_now_ns() + _NAG_NS, _NAG_NS]
        self.vm.forget(self)                # first, as terminate does
        self.tell_end(reason, links, monitors_in, monitors_out, q)
        if ports:
            self.close_ports(reason, ports)
        self.announced = (links, monitors_in, monitors_out, ports)
        self.vm.interrupt(self)
        ovm_sched_poke_reporter(&self.vm.sched)     # it repeats that while needed
        if self.on_exit is not None:
            hook, self.on_exit = self.on_exit, None
            hook()
        return True

    cdef int end_taken(self) except -1:
        """The thread of a process that take_over ended got out of its code:
        it finishes the end (see "killing a stuck process")."""
        cdef uint32_t q = self.home()
        if self.released:
            return 0
        self.released = True
        if ovm_proc_leave(&self.c):
            while ovm_proc_interrupting(&self.c):
                with nogil:
                    sched_yield()
        PyThreadState_SetAsyncExc(_threading.get_ident(), NULL)     # one not raised yet
        while self.announced is None:       # the taker is still at it
            with nogil:
                sched_yield()
        links, monitors_in, monitors_out, _ = self.announced     # its ports were closed
        reason = self.exit_reason
        self.tell_end(reason,
                      {pid for pid in self.links or () if pid not in links},
                      {r: w for r, w in (self.monitors_in or {}).items() if r not in monitors_in},
                      {r: p for r, p in (self.monitors_out or {}).items() if r not in monitors_out},
                      q)
        self.release(reason, q, links, monitors_in)
        self.vm.zombies.pop(self.pid.id, None)
        return 0

    cdef inline uint32_t home(self) noexcept:
        """The run queue this process last ran from."""
        return ovm_proc_home(&self.c)

    cdef inline void wake(self, uint32_t runq):
        if ovm_proc_wake(&self.c):
            Py_INCREF(self)
            ovm_runq_push(&self.vm.sched, runq, &self.c)

    # -- the mailbox (owner only) ----------------------------------------

    cdef int drain(self) except -1:
        """Moves everything that arrived into the private queue, acting on
        signals."""
        self.drain_some(-1)
        return 0

    cdef bint drain_some(self, int limit) except -1:
        """Moves up to `limit` arrivals (< 0: all) into the private queue,
        acting on signals, each of which costs a reduction.  Returns True
        when some are left, in `pending` (they arrived before anything now
        in the inbox, so they come first): the process must not wait then.
        False means the inbox was taken in this call and all of it was looked
        at, so anything newer has woken the process (ovm_proc_wake).

        Each node is looked at once, and exactly one branch decides what
        becomes of it (queued, or freed with its payload): a branch that
        frees a node must not let the code after it read the node again."""
        cdef ovm_node *node = self.pending
        cdef ovm_node *nxt
        cdef int kind
        cdef int n = 0
        cdef bint took = False
        self.pending = NULL
        while True:
            if node == NULL:
                if took:
                    return False
                node = ovm_inbox_take(&self.inbox)
                took = True
                continue
            if n == limit:
                self.pending = node
                return True
            n += 1
            nxt = node.next
            kind = node.kind
            if kind == OVM_SIG_MESSAGE:
                ovm_queue_append(&self.mq, node)
                node = nxt
                continue
            self.budget -= 1
            self.reductions += 1
            if kind == OVM_SIG_DOWN:
                if self.monitor_fired(<object>node.payload):
                    ovm_queue_append(&self.mq, node)
                else:
                    Py_DECREF(<object>node.payload)
                    ovm_node_free(node)
            elif kind == OVM_SIG_ALIAS:
                self.alias_message(node)
            else:
                payload = _take_payload(node)
                ovm_node_free(node)
                self.handle_signal(kind, payload)
            node = nxt

    cdef int alias_message(self, ovm_node *node) except -1:
        """A message sent to an alias is kept only while the alias is
        active: a reply that comes after its call gave up is dropped."""
        payload = _take_payload(node)
        if self.aliases is not None and payload[0] in self.aliases:
            node.payload = <void *>payload[1]
            Py_INCREF(payload[1])
            node.kind = OVM_SIG_MESSAGE
            ovm_queue_append(&self.mq, node)
        else:
            ovm_node_free(node)
        return 0

    cdef bint monitor_fired(self, object down) except -1:
        """A Down arrived: True if its monitor was active (it is forgotten
        now and the Down is delivered), False if it was demonitored
        meanwhile (the caller drops the Down: demonitor's guarantee).
        A monitor made with ``alias=True`` takes its alias with it, as
        OTP's ``{alias, demonitor}``: a reply sent after the Down, by
        whoever held the request, is dropped rather than left in the
        mailbox of a caller that has given up."""
        if self.monitors_out is None or self.monitors_out.pop(down[0], None) is None:
            return False
        if self.aliases is not None:
            self.aliases.discard(down[0])
        return True

    cdef int handle_signal(self, int kind, object payload) except -1:
        if kind == OVM_SIG_EXIT:
            self.exit_signal(payload[0], payload[1], False)
        elif kind == OVM_SIG_EXIT_LINKED:
            if self.links is not None and payload[0] in self.links:
                self.links.discard(payload[0])
                self.exit_signal(payload[0], payload[1], True)
        elif kind == OVM_SIG_LINK:
            self.link_set().add(payload)
        elif kind == OVM_SIG_UNLINK:
            if self.links is not None:
                self.links.discard(payload)
        elif kind == OVM_SIG_MONITOR:
            if self.monitors_in is None:
                self.monitors_in = {}
            self.monitors_in[payload[0]] = (payload[1], payload[2])
        elif kind == OVM_SIG_DEMONITOR:
            if self.monitors_in is not None:
                self.monitors_in.pop(payload, None)
        return 0

    cdef int exit_signal(self, object sender, object reason, bint linked) except -1:
        """Erlang's exit-signal rules."""
        if self.kill_reason is not NOTHING:
            return 0
        if not linked and _is(reason, "kill"):
            self.kill_reason = "killed"             # untrappable
        elif self.trap_exit:
            self.append_message(_Exit(sender, reason))
        elif _is(reason, "normal"):
            if not linked and sender == self.pid:
                self.kill_reason = "normal"         # exit(self(), 'normal')
        else:
            self.kill_reason = reason
        return 0

    cdef int append_message(self, object msg) except -1:
        cdef ovm_node *node
        Py_INCREF(msg)
        node = ovm_node_new(<void *>msg, OVM_SIG_MESSAGE)
        if node == NULL:
            Py_DECREF(msg)
            raise MemoryError("otpvm: out of memory queueing a message")
        ovm_queue_append(&self.mq, node)
        return 0

    cdef set link_set(self):
        if self.links is None:
            self.links = set()
        return self.links

    cdef ovm_node *scan(self, object pattern, ovm_node *prev, ovm_node *node) except? NULL:
        """Finds and unlinks the first message from `node` on that matches;
        remembers the last one examined in rcv_prev."""
        if pattern is _NEVER:
            self.rcv_prev = self.mq.tail
            return NULL
        while node != NULL:
            if matches(pattern, <object>node.payload):
                ovm_queue_unlink(&self.mq, prev, node)
                self.rcv_prev = prev
                return node
            prev = node
            node = node.next
        self.rcv_prev = prev
        return NULL

    cdef ovm_node *scan_start(self, ovm_node **prev):
        if self.rcv_marked:
            return ovm_queue_marked_start(&self.mq, prev)
        prev[0] = NULL
        return self.mq.head

    # -- selective receive (owner only; see receive.pxi) ------------------

    cdef bint receive_now(self, object pattern, bint look_at_all=True) except -1:
        """Looks for a match among the queued messages, from the start (or
        from the ref marker).  On a match the message is in rcv_msg.

        look_at_all=False first takes only a batch of what arrived: without a
        match the caller waits, and the scheduler goes through the rest a
        batch at a time (step), so a burst of signals does not make one long
        slice.  A receive that must answer now (timeout=0) looks at all.

        An exit signal that kills the process ends it here, as in Erlang,
        where a receive handles the signals before it looks at a message: a
        process with its kill in hand does not go on to act on a message (a
        supervisor stopped with the VM reported the children it was shutting
        down as 'noproc')."""
        cdef ovm_node *prev
        cdef ovm_node *node
        if look_at_all:
            self.drain()
        else:
            self.drain_some(DRAIN_BATCH)
        if self.kill_reason is not NOTHING:
            raise _ProcessKilled(self.kill_reason)   # it does nothing more (no terminate)
        self.rcv_marked = self.mark_ref is not None and mentions(pattern, self.mark_ref)
        node = self.scan_start(&prev)
        node = self.scan(pattern, prev, node)
        return self.took(node)

    cdef bint took(self, ovm_node *node) except -1:
        if node == NULL:
            return False
        self.rcv_msg = _take_payload(node)
        ovm_node_free(node)
        if self.rcv_marked:
            self.mark_ref = None
            self.mq.marked = 0
        return True

    cdef int begin_wait(self, object pattern, int64_t timeout_ns) except -1:
        """Suspends the receive: the scheduler keeps scanning new messages
        (only those that arrived since) until one matches or time is up."""
        self.waiting = True
        self.rcv_done = False
        self.rcv_match = pattern
        if timeout_ns >= 0:
            self.rcv_deadline = ovm_now_ns() + timeout_ns
            self.arm_timer()
        else:
            self.rcv_deadline = -1
        return 0

    cdef int arm_timer(self) except -1:
        """Makes sure a receive timer is due no later than rcv_deadline.

        The timer of an earlier receive stays armed after that receive got
        its message: cancelling it and arming a new one for every call
        (which always waits, with its 5 s default timeout) cost two timer
        heap operations, clock reads and a wake-up of the scheduler threads
        per call.  An armed timer due no later than the new deadline serves
        as it is; when it fires early, receive_ready arms one for the rest.
        A timer that fires while no receive waits only costs its process an
        idle look at its mailbox; terminate cancels it."""
        cdef TimerRef t = self.rcv_timer
        if t is not None:
            if ovm_proc_timeout_fired(&self.c) != t.gen:    # still armed
                if t.c.deadline <= self.rcv_deadline:
                    return 0
                self.vm.cancel_timer(t)     # a later one: a shorter timeout now
            self.rcv_timer = None
        self.rcv_gen += 1
        self.rcv_timer = self.vm.start_timer(
            max(0, self.rcv_deadline - ovm_now_ns()), _TIMER_RECEIVE, self, None, None,
            self.rcv_gen)
        return 0

    cdef bint receive_ready(self) except -1:
        """Scheduler side of a suspended receive: a new match or a timeout?"""
        cdef ovm_node *prev = self.rcv_prev
        cdef ovm_node *node
        try:
            if prev != NULL:
                node = self.scan(self.rcv_match, prev, prev.next)
            else:
                node = self.scan(self.rcv_match, NULL, self.scan_start(&prev))
            if self.took(node):
                self.end_wait()
                return True
        except BaseException as exc:
            self.rcv_error = exc
            self.end_wait()
            return True
        if self.rcv_timer is not None and ovm_proc_timeout_fired(&self.c) == self.rcv_timer.gen:
            self.rcv_timer = None
            if self.rcv_deadline >= 0:
                if ovm_now_ns() >= self.rcv_deadline:
                    self.rcv_deadline = -1
                    self.waiting = False
                    return True
                self.arm_timer()            # an earlier receive's timer: not due yet
        return False

    cdef int end_wait(self) except -1:
        self.waiting = False
        self.rcv_done = True
        self.rcv_deadline = -1              # the timer stays armed: see arm_timer
        return 0

    # -- the end ------------------------------------------------------------

    cdef int terminate(self, object reason) except -1:
        """Ends the process with `reason`: tells its links and monitors."""
        cdef uint32_t q = self.home()
        if ovm_proc_exit(&self.c) & OVM_TAKEN:
            return self.end_taken()         # another thread ended it already
        self.exit_reason = reason
        # Its pid and name are free before anyone hears of its end, as in
        # Erlang: a supervisor restarting a named child must find the name free.
        self.vm.forget(self)
        self.tell_end(reason, self.links, self.monitors_in, self.monitors_out, q)
        ports = self.take_ports()
        if ports:
            self.close_ports(reason, ports)
        self.release(reason, q)
        if self.on_exit is not None:
            hook, self.on_exit = self.on_exit, None
            hook()
        return 0

    cdef int tell_end(self, object reason, object links, dict monitors_in, dict monitors_out,
                      uint32_t q) except -1:
        """Exit signals to the links, Downs to the monitors, and the end of
        the monitors it had (so that their targets forget them)."""
        if links:
            for pid in links:
                self.vm.deliver_to(<Pid>pid, OVM_SIG_EXIT_LINKED, (self.pid, reason), q)
        if monitors_in:
            for ref, (watcher, shown) in monitors_in.items():
                self.vm.deliver_to(<Pid>watcher, OVM_SIG_DOWN, _Down(ref, shown, reason), q)
        if monitors_out:
            for ref, pid in monitors_out.items():
                if isinstance(pid, Pid):
                    self.vm.deliver_to(<Pid>pid, OVM_SIG_DEMONITOR, ref, q)
        return 0

    cdef int release(self, object reason, uint32_t q, set told_links=None,
                     dict told_monitors=None) except -1:
        """Frees what only the process's own thread touches: its receive
        timer, its mailbox (a link or monitor still queued there is answered
        with `reason`, unless take_over told it already) and the objects it
        held."""
        cdef ovm_node *node
        self.released = True
        self.waiting = False
        if self.rcv_timer is not None:
            self.vm.cancel_timer(self.rcv_timer)
            self.rcv_timer = None
        # Those already taken from the inbox arrived first.
        node = self.pending
        self.pending = NULL
        self.answer_queued(node, reason, q, told_links, told_monitors)
        if ovm_inbox_len(&self.inbox) + self.mq.len >= _BIG_MAILBOX:
            self.dispose_mailbox(reason, q, told_links, told_monitors)
        else:
            self.answer_queued(ovm_inbox_close(&self.inbox), reason, q, told_links,
                               told_monitors)
            _free_nodes(ovm_queue_take_all(&self.mq))
        with cython.critical_section(self):     # see "shared fields"
            self.links = self.monitors_in = self.monitors_out = self.ports = None
            self.coro = self.ctx = self.fn = self.args = self.on_message = None
        self.rcv_match = self.rcv_msg = self.mark_ref = self.aliases = None
        return 0

    cdef int dispose_mailbox(self, object reason, uint32_t q, set told_links,
                             dict told_monitors) except -1:
        """Hands a big mailbox to the reaper thread (reaper.pxi)."""
        cdef _Garbage g = _Garbage.__new__(_Garbage)
        g.vm, g.pid, g.reason, g.q = self.vm, self.pid, reason, q
        g.told_links, g.told_monitors = told_links, told_monitors
        g.count = ovm_inbox_len(&self.inbox) + self.mq.len
        g.inbox = ovm_inbox_close(&self.inbox)
        g.messages = ovm_queue_take_all(&self.mq)
        self.vm.dispose(g)
        return 0

    cdef int answer_queued(self, ovm_node *node, object reason, uint32_t q, set told_links,
                           dict told_monitors) except -1:
        """Frees signals that came too late; a link or monitor among them
        is answered with `reason` at once (unless it was told already)."""
        cdef size_t all_of_them = <size_t>-1
        _answer_queued(self.vm, self.pid, reason, q, told_links, told_monitors, node,
                       &all_of_them)
        return 0

    cdef set take_ports(self):
        """Its sockets, which it no longer owns: once it has exited,
        VM._own refuses to give it more (both under its lock), so none can
        arrive after this and be left open."""
        with cython.critical_section(self):
            ports, self.ports = self.ports, None
        return ports

    cdef int close_ports(self, object reason, set ports) except -1:
        """An owner's death closes its sockets, like an Erlang port's."""
        for port in list(ports):
            try:
                port._owner_exited(reason)
            except BaseException:
                _log.critical("otpvm: internal error closing %r", port, exc_info=True)
        return 0

    cdef int crash(self, object exc) except -1:
        """Logs a crash report, once, like Erlang's error logger."""
        if self.crash_raised or ovm_proc_taken(&self.c):
            return 0                        # VM.run raises it to its caller; killed: no crash
        name = f" registered as {self.name!r}" if self.name is not None else ""
        _log.error(
            "crash report: process %r%s exited with %s\n"
            "  initial call: %s\n  message queue length: %d\n  links: %s\n%s",
            self.pid, name, f"{type(exc).__qualname__}: {exc}",
            self.initial_call(), self.mq.len, sorted(self.links or ()),
            "".join(_traceback.format_exception(type(exc), exc, exc.__traceback__)).rstrip())
        return 0

    cdef str initial_call(self):
        handler = getattr(self.on_message, "__self__", None)
        named = getattr(handler, "initial_call", None)
        if isinstance(named, str):
            return named                    # a behaviour names its callback module
        fn = self.fn if self.fn is not None else self.coro
        qualname = getattr(fn, "__qualname__", None) or repr(fn)
        return f"{getattr(fn, '__module__', '?')}.{qualname}"

    # -- running (one scheduler thread at a time) -------------------------

    cdef inline bint out_of_budget(self) noexcept:
        """Its slice should end now: it used its reductions, or a quarter of its
        slice_limit (ovm_slice_overdue in csrc/ovm_sched.h, which says when
        to look at the clock again)."""
        cdef int next
        if self.budget <= 0:
            return True
        if self.budget > self.next_check:
            return False
        if ovm_slice_overdue(self.worker, CONTEXT_REDS - self.budget, &next):
            return True
        self.next_check = self.budget - next
        return False

    cdef int step(self) except -1:
        """Runs one slice; returns STEP_WAIT, STEP_YIELD or STEP_DONE."""
        cdef int outcome
        cdef bint more
        self.budget = CONTEXT_REDS
        self.next_check = CONTEXT_REDS         # the first look starts the clock
        while True:
            if ovm_proc_taken(&self.c):
                self.end_taken()            # killed while its code ran
                return STEP_DONE
            more = self.drain_some(DRAIN_BATCH)
            if self.kill_reason is not NOTHING:
                self.kill()
                return STEP_DONE
            if self.waiting and not self.receive_ready():
                if not more and ovm_proc_try_wait(&self.c):
                    return STEP_WAIT
                if more and self.out_of_budget():
                    return STEP_YIELD
                continue            # something arrived meanwhile: look again
            if self.out_of_budget():
                return STEP_YIELD
            if self.coro is not None or not self.started:
                outcome = self.resume()
            else:
                outcome = self.dispatch()
            if ovm_proc_taken(&self.c):
                self.end_taken()            # killed while its code ran
                return STEP_DONE
            if outcome == STEP_IDLE:
                if not more and ovm_proc_try_wait(&self.c):
                    return STEP_WAIT
            elif outcome != STEP_WAIT and outcome != STEP_AGAIN:
                return outcome

    cdef int dispatch(self) except -1:
        """Callback processes: hands the next message to the handler.

        A behaviour keeps no stack between messages: its state is data the
        handler holds.  A handler that must wait for another process returns
        a coroutine, which runs as the process until it completes; then
        dispatching resumes."""
        cdef ovm_node *node = self.mq.head
        cdef object ctx = self.ctx
        if node == NULL:
            return STEP_IDLE
        ovm_queue_unlink(&self.mq, NULL, node)
        msg = _take_payload(node)
        ovm_node_free(node)
        self.budget -= 1
        self.reductions += 1
        self.hibernating = False
        PyContext_Enter(ctx)
        try:
            body = self.on_message(msg)
        except BaseException as exc:
            self.finish_with(exc)
            return STEP_DONE
        finally:
            PyContext_Exit(ctx)
        if body is not None and (PyCoro_CheckExact(body) or isinstance(body, _Coroutine)):
            self.coro = body
            return self.resume()
        return STEP_AGAIN

    cdef int resume(self) except -1:
        """Runs the body until its next suspension."""
        cdef PyObject *yielded = NULL
        cdef int status
        cdef object ctx = self.ctx
        self.budget -= 1
        self.reductions += 1
        PyContext_Enter(ctx)
        try:
            if not self.started:
                self.started = True
                if not self.start_body():
                    return STEP_DONE if self.on_message is None else STEP_AGAIN
            status = PyIter_Send(self.coro, None, &yielded)
        except _Become as exc:
            return self.become(exc)
        except BaseException as exc:
            self.finish_with(exc)
            return STEP_DONE
        finally:
            PyContext_Exit(ctx)
        value = <object>yielded
        Py_DECREF(value)
        if status == 0:             # PYGEN_RETURN
            if self.on_message is not None:
                self.coro = None    # back to dispatching messages
                return STEP_AGAIN
            self.result = value
            self.finish(self.kill_reason if self.kill_reason is not NOTHING else "normal")
            return STEP_DONE
        if isinstance(value, _Receive):     # it waits, or yields its turn
            return (<_Receive>value).step
        self.abandon(_foreign_await(self.pid, value))
        return STEP_DONE

    cdef int become(self, object request) except -1:
        """otpvm.become(fn, *args): the old body has unwound (its finally
        blocks ran); fn(*args) is the new one, with the same pid, mailbox,
        links, monitors, sockets and context.  What fn returns must be a
        coroutine: anything else ends the process like a crash of its body.
        _enter_loop's request makes it a callback process instead."""
        self.coro = None
        if type(request.fn) is _EnterLoop:
            handler = (<_EnterLoop>request.fn).handler
            self.on_message = handler.handle_message
            self.fn, self.args = handler.start, ()
            self.waiting = False
            self.started = False            # handler.start runs next, as at spawn_handler
            return STEP_AGAIN
        self.fn, self.args = request.fn, tuple(request.args)
        self.waiting = False
        try:                            # (inside resume: the context is entered)
            body = self.fn(*self.args)
            if not (PyCoro_CheckExact(body) or isinstance(body, _Coroutine)):
                raise TypeError(f"become({self.fn!r}, ...) needs an async function: "
                                f"it returned {body!r}")
        except BaseException as exc:
            self.finish_with(exc)
            return STEP_DONE
        self.args = None
        self.coro = body
        return STEP_AGAIN

    cdef tuple code_roots(self):
        """What its code can be found from (otpvm.code's scan): the body
        function, the handler, the running coroutine, and the arguments of
        a body that has not started yet."""
        with cython.critical_section(self):     # read from another thread
            on_message, fn, coro, args = self.on_message, self.fn, self.coro, self.args
        handler = getattr(on_message, "__self__", None) if on_message is not None else None
        return (fn, handler, coro, args)

    cdef bint start_body(self) except -1:
        """First run: call the body.  A coroutine becomes the process; a
        plain function's return ends it; a handler's start may be either,
        and dispatching begins when it is done."""
        with cython.critical_section(self):     # see "shared fields"
            args, self.args = self.args, None
        body = self.fn(*args)
        if PyCoro_CheckExact(body) or isinstance(body, _Coroutine):
            self.coro = body
            return True
        if self.on_message is None:
            self.result = body
            self.finish("normal")
        return False

    cdef int finish_with(self, object exc) except -1:
        if isinstance(exc, _ProcessExit):
            self.finish((<object>exc).reason)
        else:
            _explain_asyncio(exc)
            self.crash(exc)
            self.finish(exc)
        return 0

    cdef int finish(self, object reason) except -1:
        if self.kill_reason is not NOTHING:
            reason = self.kill_reason
        self.terminate(reason)
        return 0

    cdef int abandon(self, object exc) except -1:
        """Closes the coroutine and crashes with exc."""
        cdef object ctx = self.ctx
        try:
            PyContext_Enter(ctx)
            try:
                self.coro.close()
            finally:
                PyContext_Exit(ctx)
        except BaseException:
            pass
        self.crash(exc)
        self.terminate(exc)
        return 0

    cdef int kill(self) except -1:
        """An exit signal ends the process: unwind its coroutine (finally
        blocks run, as GeneratorExit) and end with the signal's reason."""
        cdef object ctx = self.ctx
        if self.coro is not None:
            PyContext_Enter(ctx)
            try:
                self.coro.close()
            except BaseException as exc:
                _log.error("process %r raised while being killed: %r", self.pid, exc)
            finally:
                PyContext_Exit(ctx)
        self.terminate(self.kill_reason)
        return 0

    # -- introspection (any thread) -----------------------------------------
    #
    # Erlang orders process_info and is_process_alive after the signals the
    # caller already sent, so a link or monitor shows at once on both sides,
    # and a process with a kill on its way is already dead.  Here the reader
    # folds the signals still waiting in the inbox into what it reports.

    cdef list pending_signals(self, size_t *messages=NULL):
        """The link, monitor and exit signals on their way in the inbox, as
        (kind, payload) pairs in order (messages are not listed: their
        number goes to ``messages``, when the inbox had signals)."""
        cdef list out = []
        cdef _Signals seen
        cdef size_t i
        if not ovm_inbox_signals(&self.inbox):
            return out
        memset(&seen, 0, sizeof(seen))
        ovm_inbox_visit(&self.inbox, _collect_signal, <void *>&seen)
        if messages != NULL:
            messages[0] = seen.messages
        try:
            for i in range(seen.n):
                out.append((seen.kinds[i], <object>seen.payloads[i]))
        finally:
            for i in range(seen.n):
                Py_DECREF(<object>seen.payloads[i])
            free(seen.kinds)
            free(seen.payloads)
        if seen.out_of_memory:
            raise MemoryError("no memory to list the signals on their way to a process")
        return out

    cdef int fold_signals(self, list pending, set links, dict monitors_in) except -1:
        """Applies the link and monitor signals in `pending` (still in the
        inbox) to copies of the links and monitors."""
        for kind, payload in pending:
            if kind == OVM_SIG_LINK:
                links.add(payload)
            elif kind == OVM_SIG_UNLINK:
                links.discard(payload)
            elif kind == OVM_SIG_EXIT_LINKED:
                links.discard(payload[0])
            elif kind == OVM_SIG_MONITOR:
                monitors_in[payload[0]] = (payload[1], payload[2])
            elif kind == OVM_SIG_DEMONITOR:
                monitors_in.pop(payload, None)
        return 0

    cdef bint alive(self) except -1:
        return not ovm_proc_state(&self.c) & (OVM_EXITED | OVM_KILL)

    cdef dict info(self):
        cdef uint32_t state = ovm_proc_state(&self.c)
        cdef size_t on_the_way = ovm_inbox_len(&self.inbox)
        # Only link and monitor signals on their way change what it says: a
        # mailbox of millions of messages is not walked for them.
        cdef list pending = self.pending_signals(&on_the_way)   # signals do not count
        if not self.alive():
            return None
        if state & OVM_RUNNING:
            status = "running"
        elif state & OVM_RUNQ:
            status = "runnable"
        else:
            status = "waiting"
        # Another thread asks: the fields it reads are taken (and held) under
        # the process's lock, as the owner replaces them under it (see
        # "shared fields" above).
        with cython.critical_section(self):
            links = set(self.links or ())
            monitors_in = dict(self.monitors_in or {})
            monitors = list((self.monitors_out or {}).values())
            name = self.name
            initial_call = self.initial_call()
        self.fold_signals(pending, links, monitors_in)
        watchers = {ref: watcher for ref, (watcher, _) in monitors_in.items()}
        return {
            "pid": self.pid,
            "status": status,
            "message_queue_len": self.mq.len + on_the_way,
            "reductions": self.reductions,
            "links": sorted(links),
            "monitors": monitors,
            "monitored_by": sorted(watchers.values()),
            "registered_name": name,
            "trap_exit": self.trap_exit,
            "initial_call": initial_call,
            "hibernating": self.hibernating,
        }
