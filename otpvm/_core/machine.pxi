# The VM: scheduler threads, the pid table, registered names, timers.

import os as _os
import time as _time
import sys as _sys
import threading as _threading
from collections import deque as _deque
from otpvm.terms import ForeignPidError as _ForeignPidError, \
    NameRegistrationError as _NameRegistrationError, UnknownNameError as _UnknownNameError

# Free-threaded CPython runs Python on every scheduler thread at once; with a
# GIL, Python code is serialised and extra scheduler threads only add GIL
# hand-offs, so one run queue (plus spare threads for rescues) is the default.
cdef bint _FREE_THREADED = not getattr(_sys, "_is_gil_enabled", lambda: True)()

# How often a thread waiting in VM.run looks for a signal's handler to run.
cdef double _SIGNAL_LOOK_S = 0.05

cdef enum:
    _STOP_GRACE_MS = 5000
    _IO_BATCH = 256         # socket events handled per scheduler turn
    _BIG_TABLE = 8192       # a pid table this big takes over 0.1 ms to resize


def _default_schedulers():
    return (_os.cpu_count() or 1) if _FREE_THREADED else 1


# The running VMs by node number (what their pids print first): a new VM
# takes the lowest free number, and gives it back when it has stopped.
cdef dict _RUNNING = {}
cdef object _RUNNING_LOCK = _threading.Lock()


cdef uint32_t _take_node(VM vm):
    cdef uint32_t node = 0
    with _RUNNING_LOCK:
        while node in _RUNNING:
            node += 1
        _RUNNING[node] = vm
    return node


cdef int _give_node_back(VM vm) except -1:
    with _RUNNING_LOCK:
        if _RUNNING.get(vm.node) is vm:
            del _RUNNING[vm.node]
    return 0


cdef VM _running_vm(uint32_t node):
    with _RUNNING_LOCK:
        return _RUNNING.get(node)


cdef class VM:
    """An otpvm virtual machine: scheduler threads and the processes they run.

    Use it to embed otpvm in ordinary threaded or asyncio code; every method
    is thread-safe::

        with otpvm.VM() as vm:
            result = vm.run(main, 42)

    ``schedulers`` is the number of run queues (default: one per core on
    free-threaded Python, one with a GIL).  ``spare_threads`` (default: as
    many) are the threads kept ready to take over a run queue whose slice
    overran.  When more processes are stuck at once than spares are parked,
    the VM starts another thread for each, up to ``max_spare_threads``
    (default 256) spare threads in all; those retire once their process is
    done with them.  A stuck process can be killed like any other
    (``exit(pid, 'kill')``): see the README's "Stuck processes".

    ``slice_limit`` (seconds, default 2 ms) is how much of its own time a
    process may take between two awaits: the CPU time its thread uses plus
    the time it sits blocked in a call that does not await (``time.sleep``,
    a blocking socket, a lock).  Time it spends waiting for the GIL or for a
    CPU is not its doing and is not counted: the monitor thread reads the
    scheduler thread's CPU clock and asks the kernel what the thread is
    blocked in.  A slice that overruns has its run queue handed to a spare
    thread, so the other processes keep running, and is logged once, while it
    happens, as a ``long_schedule`` WARNING on the ``otpvm`` logger (with a
    follow-up if it goes on for seconds, and one summary line for a burst of
    them).  A slice that merely holds its run queue for ten limits of
    wall-clock time (waiting for the GIL, say) is handed over too, without a
    report.  ``rescues`` and ``long_schedules`` count both.
    """

    cdef ovm_sched sched
    cdef bint sched_ready
    cdef readonly int schedulers
    cdef readonly uint32_t node     # its number among the running VMs (see Pid)
    cdef dict procs                 # pid id -> Process, the live ones
    cdef dict names                 # registered name -> Process
    cdef object lock                # guards names
    cdef object threads             # every thread it started that may still run
    cdef list slot_threads          # worker slot -> its Thread, or None
    cdef list idents                # worker slot -> its thread's ident
    cdef dict stuck                 # pid id -> True: processes in a slice that overran
    cdef dict zombies               # pid id -> [Process, when to interrupt its thread
                                    # again, after how long]: killed while stuck, thread still in it
    cdef object garbage             # _Garbage mailboxes for the reaper (reaper.pxi)
    cdef object garbage_cond        # guards garbage, garbage_nodes, reaper, reaper_held
    cdef size_t garbage_nodes
    cdef object reaper              # its thread, started by the first big mailbox
    cdef bint reaper_held           # tests: the reaper waits (_hold_reaper)
    cdef object emptied             # set when stopping and the last process ended
    cdef object stopped             # set when shutdown is over
    cdef bint stopping
    cdef uint32_t next_runq
    cdef dict io_ports              # poller token -> socket (otpvm.net)
    cdef bint io_started
    cdef object __weakref__         # per-VM tables of the Python layers (application envs)

    def __init__(self, schedulers=None, *, slice_limit=0.002, spare_threads=None,
                 max_spare_threads=256):
        if schedulers is None:
            schedulers = _default_schedulers()
        if isinstance(schedulers, bool) or not isinstance(schedulers, int) or schedulers < 1:
            raise ValueError(f"schedulers must be a positive int or None, not {schedulers!r}")
        if schedulers > 1024:
            raise ValueError(f"schedulers={schedulers} is more than the 1024 supported")
        limit = _timeout_ns(slice_limit, "slice_limit")
        if limit <= 0:
            raise ValueError(f"slice_limit must be a positive number of seconds, not {slice_limit!r}")
        spares = schedulers if spare_threads is None else spare_threads
        if isinstance(spares, bool) or not isinstance(spares, int) or spares < 1:
            raise ValueError(f"spare_threads must be a positive int or None, not {spare_threads!r}")
        if (isinstance(max_spare_threads, bool) or not isinstance(max_spare_threads, int)
                or not spares <= max_spare_threads <= 4096):
            raise ValueError(f"max_spare_threads must be an int from spare_threads ({spares}) "
                             f"to 4096, not {max_spare_threads!r}")
        self.schedulers = schedulers
        self.procs = {}
        self.names = {}
        self.io_ports = {}
        self.lock = _threading.Lock()
        self.emptied = _threading.Event()
        self.stopped = _threading.Event()
        err = ovm_sched_init(&self.sched, schedulers, schedulers + spares,
                             schedulers + max_spare_threads, limit, _FREE_THREADED)
        if err:
            raise OSError(err, f"otpvm: cannot set up the scheduler: {_os.strerror(err)}")
        # A thread waiting for the GIL wakes once per switch interval: what
        # tells the monitor such a wait from a process's own (csrc/ovm_sched.c).
        ovm_sched_set_gil_interval(&self.sched, <int64_t>(_sys.getswitchinterval() * 1e9))
        _hook_gc()
        self.sched_ready = True
        self.node = _take_node(self)        # given back when shutdown ends
        self.threads = []
        self.slot_threads = [None] * (schedulers + max_spare_threads)
        self.idents = [0] * (schedulers + max_spare_threads)
        self.stuck = {}
        self.zombies = {}
        self.garbage = _deque()
        self.garbage_cond = _threading.Condition()
        for i in range(schedulers + spares):
            self.start_worker(i)
        t = _threading.Thread(target=_LongSchedules(self).run, daemon=True,
                              name="otpvm-long-schedules")
        t.start()
        self.threads.append(t)
        err = ovm_sched_start_monitor(&self.sched)
        if err:
            self.stop()
            raise OSError(err, f"otpvm: cannot start the monitor thread: {_os.strerror(err)}")

    def __dealloc__(self):
        if self.sched_ready and not self.threads_may_run():
            self.drop_timers()
            ovm_sched_destroy(&self.sched)

    cdef bint threads_may_run(self):
        """Whether a thread of this VM may still touch its scheduler: one
        abandoned by a forced stop, stuck in a loop.  At interpreter exit,
        Thread objects and module globals may already be torn down, so any
        doubt means yes: the memory is leaked rather than freed under it."""
        try:
            return _sys.is_finalizing() or any(t.is_alive() for t in self.threads or ())
        except BaseException:
            return True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def __repr__(self):
        state = "stopped" if self.stopping else "running"
        return (f"<otpvm.VM node {self.node} {state}, {len(self.procs)} processes, "
                f"{self.schedulers} schedulers>")

    # -- the public, thread-safe face ---------------------------------------

    def spawn(self, fn, *args):
        """Starts a process running ``fn(*args)``; returns its Pid."""
        cdef void *cur = ovm_get_current()
        parent = <Process>cur if cur != NULL and (<Process>cur).vm is self else None
        return self.start_process(fn, args, parent, False).pid

    def send(self, dest, msg):
        """Sends msg to a Pid or a registered name, from any thread."""
        self.check_running()
        target = self.resolve(dest)
        if target is not None:
            (<Process>target).deliver(OVM_SIG_MESSAGE, copy_msg(msg), (<Process>target).home())
        elif type(dest) is Pid:
            self.check_own(<Pid>dest, "cannot send to")

    def run(self, main, *args):
        """Runs ``main(*args)`` as a process and waits for it to end.

        Returns its return value, re-raises the exception it crashed with, or
        raises ``ProcessExit(reason)`` if it ended with another reason.  A
        crash is not also logged as a crash report: the caller has it.
        """
        done = _threading.Event()
        cdef Process p = self.start_process(main, args, None, False, done.set, None, None,
                                            True)
        # In short waits: a signal the kernel gave to another thread (a
        # scheduler thread, say) interrupts no wait of this one, and Python
        # runs its handler (Ctrl-C's KeyboardInterrupt) only when this thread
        # runs Python again.
        while not done.wait(_SIGNAL_LOOK_S):
            pass
        reason = p.exit_reason
        if _is(reason, "normal"):
            return p.result
        if isinstance(reason, BaseException):
            raise reason
        raise _ProcessExit(reason)

    def stop(self, timeout=5.0):
        """Kills every process, then stops the scheduler threads.

        Processes get ``exit(pid, 'kill')`` and end as usual (links and
        monitors fire, ``finally`` blocks run).  Waits up to ``timeout``
        seconds for them; a process stuck in a loop that never awaits cannot
        be interrupted, and its thread is abandoned (it is a daemon thread).
        When it returns, the VM's sockets and its poller's file descriptors
        are closed (not left to the garbage collector).

        Called from a process of this VM (as ``halt()`` does), it returns at
        once and the VM stops from another thread; a later ``stop()`` from
        outside (the end of ``with VM()`` or ``run()``) waits for that.
        """
        cdef bint first
        cdef bint inside = (ovm_get_current() != NULL
                            and (<Process>ovm_get_current()).vm is self)
        with self.lock:
            first = not self.stopping
            self.stopping = True
        if inside:
            if first:
                # A scheduler thread cannot join itself: stop from another thread.
                _threading.Thread(target=self.shutdown, args=(timeout,), daemon=True).start()
            return
        if first:
            self.shutdown(timeout)
        else:
            self.stopped.wait(timeout + 1.0)

    @property
    def stopped(self):
        """True once ``stop()`` has begun: the VM takes no more processes
        (a stopped VM cannot be restarted; start another)."""
        return self.stopping

    def processes(self):
        """The pids of the live processes."""
        return [(<Process>p).pid for p in list(self.procs.values())]

    @property
    def pending_timers(self):
        """How many timers are armed (receive timeouts and send_after)."""
        return ovm_timers_len(&self.sched.timers)

    @property
    def rescues(self):
        """How many times the monitor handed a stuck run queue to a spare thread."""
        return self.sched.handoffs

    @property
    def run_queue_slices(self):
        """How many slices each run queue has run: where the work went."""
        return tuple(ovm_runq_taken(&self.sched, q) for q in range(self.schedulers))

    @property
    def steals(self):
        """How many processes idle schedulers took from busy run queues
        (free-threaded builds; always 0 with a GIL, where work stays where
        it is woken)."""
        return ovm_sched_stolen(&self.sched)

    @property
    def long_schedules(self):
        """How many slices overran ``slice_limit`` (each one logged, or counted
        in a burst's summary line)."""
        return self.sched.overruns

    # -- internals ------------------------------------------------------------

    def shutdown(self, timeout):
        try:
            for p in list(self.procs.values()):
                (<Process>p).deliver(OVM_SIG_EXIT, (None, "kill"), (<Process>p).home())
            deadline = _time.monotonic() + timeout
            if self.procs:
                self.emptied.wait(timeout)
            for port in list(self.io_ports.values()):
                port.close()                # output still lingering after its owner
            with self.garbage_cond:
                self.garbage_cond.notify()  # the reaper ends once it freed it all
            # Also closes the poller's fds, safely even while an abandoned
            # scheduler thread still runs (see ovm_poller_stop).
            with nogil:
                ovm_sched_stop(&self.sched)
            for t in list(self.threads):
                if t is not _threading.current_thread():
                    t.join(max(0.0, deadline - _time.monotonic()) + 0.1)
            self.report_abandoned()
        finally:
            _give_node_back(self)
            self.stopped.set()

    cdef int report_abandoned(self) except -1:
        """Says, once, which threads a stop leaves running a killed process's code."""
        stuck = [z[0] for z in list(self.zombies.values())
                 if not ovm_proc_state(&(<Process>z[0]).c) & OVM_LEFT]
        if stuck:
            pids = ", ".join(repr((<Process>p).pid) for p in stuck[:5])
            _log.warning(
                "the VM stopped, but %d scheduler thread(s) still run the code of "
                "killed processes (%s%s): each is inside a call that does not return to "
                "Python (a C extension's loop, or a blocking call such as time.sleep or a "
                "lock), where a kill cannot interrupt it; the threads are daemon threads and "
                "are abandoned. Make such calls with otpvm.run_blocking()",
                len(stuck), pids, " and more" if len(stuck) > 5 else "")
        return 0

    # -- freeing big mailboxes (reaper.pxi) -------------------------------------

    cdef int dispose(self, _Garbage g) except -1:
        with self.garbage_cond:
            self.garbage.append(g)
            self.garbage_nodes += g.count
            if self.reaper is None:
                self.reaper = _threading.Thread(target=self._reap, daemon=True,
                                                name="otpvm-reaper")
                self.reaper.start()
                self.threads.append(self.reaper)
            self.garbage_cond.notify()
        return 0

    def _reap(self):
        """The reaper thread: frees mailboxes a batch at a time; once none
        is left, gives the memory back to the OS; ends when the VM stops."""
        cdef _Garbage g
        cdef size_t done, freed = 0
        while True:
            with self.garbage_cond:
                while not self.garbage or self.reaper_held:
                    if freed or (self.stopping and not self.garbage):
                        break
                    self.garbage_cond.wait()
                g = self.garbage[0] if self.garbage and not self.reaper_held else None
            if g is None:
                if not freed:
                    return                  # the VM stopped and nothing is left
                freed = 0
                with nogil:
                    ovm_trim_memory()
                continue
            done = g.free_some(_REAP_BATCH)
            freed += done
            with self.garbage_cond:
                self.garbage_nodes -= min(self.garbage_nodes, done)
                if g.empty():
                    self.garbage.popleft()
            with nogil:
                pass                        # the other threads' turn for the GIL

    def _hold_reaper(self, bint held):
        """Tests: stops (True) or resumes the reaper between two batches."""
        with self.garbage_cond:
            self.reaper_held = held
            self.garbage_cond.notify()

    @property
    def mailbox_garbage(self):
        """How many messages of ended processes' big mailboxes are still
        to be freed by the reaper thread."""
        return self.garbage_nodes

    # -- killing stuck processes (see "killing a stuck process" in process.pxi)

    cdef int interrupt(self, Process p) except -1:
        """Raises _ProcessKilled in the thread that runs p's code, unless
        that thread has got out of it."""
        if not ovm_proc_interrupt_begin(&p.c):
            return 0
        try:
            PyThreadState_SetAsyncExc(self.idents[p.worker_index], <PyObject *>_ProcessKilled)
        finally:
            ovm_proc_interrupt_end(&p.c)
        return 0

    cdef int64_t nag_zombies(self) except -2:
        """Interrupts again the threads of killed processes that are still in
        their code (the code may have caught the exception and gone on),
        each after twice as long as the last time, from 10 ms to 1 s: an
        interrupt that lands in a finaliser or a callback is lost (printed
        as an unraisable exception), and the fewer, the fewer such lines.
        Returns when to look again (-1: no zombie left)."""
        cdef int64_t now = ovm_now_ns(), soonest = -1
        cdef Process p
        for key, z in list(self.zombies.items()):
            p = <Process>z[0]
            if ovm_proc_state(&p.c) & OVM_LEFT:
                self.zombies.pop(key, None)
                continue
            if now >= z[1]:
                self.interrupt(p)
                z[2] = min(2 * z[2], _NAG_MAX_NS)
                z[1] = now + z[2]
            if soonest < 0 or z[1] < soonest:
                soonest = z[1]
        return soonest

    cdef int start_requested_workers(self) except -1:
        """Starts the threads the monitor asked for (a rescue found no spare)."""
        cdef int w
        while True:
            w = ovm_sched_take_start(&self.sched)
            if w < 0:
                return 0
            self.start_worker(w)

    cdef int check_running(self) except -1:
        if self.stopping:
            raise RuntimeError("this otpvm VM has been stopped")
        return 0

    cdef int check_own(self, Pid pid, str action) except -1:
        """For a pid not found among the live processes: dead (fine, as in
        Erlang), or of another VM (ForeignPidError, see Pid)."""
        if pid.vm is self:
            return 0
        if pid.vm is None:
            whose = "no VM running in this OS process (an unpickled pid?)"
        elif pid.vm.stopping:
            whose = "a VM that has stopped"
        else:
            whose = f"another VM (node {pid.node})"
        raise _ForeignPidError(
            pid, f"{action} {pid!r}: it is a pid of {whose}, not of this VM (node "
                 f"{self.node}); processes of different VMs cannot reach each other: a "
                 f"pid is only valid in the VM that made it (do not carry pids from one "
                 f"VM or otpvm.run() to another)")

    cdef int start_worker(self, uint32_t w) except -1:
        """Starts the thread of worker slot w (at start, or for a rescue)."""
        t = _threading.Thread(target=self._worker, args=(w,), daemon=True,
                              name=f"otpvm-scheduler-{w}")
        t.start()
        self.slot_threads[w] = t
        self.threads = [t for t in self.threads if t.is_alive()] + [t]
        return 0

    @property
    def scheduler_threads(self):
        """How many scheduler threads run now: those serving the run queues,
        the spares, and those still running a stuck process's code."""
        return self.sched.threads

    def _worker(self, uint32_t w):
        cdef ovm_proc *cp = NULL
        cdef int next_
        self.idents[w] = _threading.get_ident()
        ovm_worker_register(&self.sched, w)     # else the monitor judges it by wall clock
        while True:
            # Hold on to the GIL while there is work; release it only to wait.
            next_ = ovm_worker_poll(&self.sched, w, &cp)
            if next_ == OVM_NEXT_NONE:
                with nogil:
                    next_ = ovm_worker_next(&self.sched, w, &cp)
            if next_ == OVM_NEXT_STOP or next_ == OVM_NEXT_RETIRE:
                return
            if next_ == OVM_NEXT_TIMERS:
                self.fire_timers()
                continue
            if next_ == OVM_NEXT_IO:
                self.fire_io()
                continue
            p = <Process>cp.owner
            Py_DECREF(p)                    # the run queue's reference
            self.run_slice(p, w)

    cdef int run_slice(self, Process p, uint32_t w) except -1:
        cdef int outcome
        cdef uint32_t q
        p.worker = ovm_sched_worker(&self.sched, w)
        p.worker_index = w                  # before it runs: see Process.take_over
        if not ovm_proc_begin(&p.c):
            return 0
        q = ovm_worker_runq(&self.sched, w)
        if q != OVM_NO_RUNQ:
            ovm_proc_set_home(&p.c, q)
        ovm_worker_slice_begin(&self.sched, w, p.pid.id)
        ovm_set_current(<void *>p)
        try:
            outcome = p.step()
        except BaseException as exc:        # a VM bug: never lose the process
            _log.critical("otpvm: internal error running %r", p.pid, exc_info=True)
            if not ovm_proc_exited(&p.c):
                p.crash(exc)
                p.terminate(exc)
            elif ovm_proc_taken(&p.c):
                p.end_taken()
            outcome = STEP_DONE
        finally:
            ovm_set_current(NULL)
        # Whether the monitor took the run queue meanwhile: the monitor
        # reports overruns itself (monitor.pxi), while they happen.
        ovm_worker_slice_end(&self.sched, w)
        if outcome == STEP_YIELD and not ovm_proc_exited(&p.c):
            ovm_proc_requeue(&p.c)
            Py_INCREF(p)
            ovm_runq_push(&self.sched, p.home(), &p.c)
        return 0

    cdef Process start_process(self, object fn, tuple args, Process parent, bint link,
                               object on_exit=None, Ref monitor=None, object handler=None,
                               bint crash_raised=False):
        """Creates a process and queues it; links and monitors it first, so
        that it cannot end before they exist."""
        cdef Process p
        cdef uint32_t q
        self.check_running()
        if not callable(fn):
            raise TypeError(f"a process body must be callable (an async def or a function), "
                            f"not {fn!r}")
        args = copy_msg(args)
        p = Process.__new__(Process)
        if parent is not None:
            q = parent.home()
        else:
            q = self.next_runq % self.schedulers
            self.next_runq += 1
        if ovm_inbox_init(&p.inbox) != 0:
            raise MemoryError("otpvm: cannot create a mailbox")
        ovm_queue_init(&p.mq)
        ovm_proc_init(&p.c, <void *>p, q)
        p.vm = self
        p.pid = _new_pid(self)
        p.fn = fn
        p.args = args
        if handler is not None:
            p.on_message = handler.handle_message
        p.ctx = PyContext_CopyCurrent()
        p.kill_reason = NOTHING
        p.exit_reason = NOTHING
        p.on_exit = on_exit
        p.crash_raised = crash_raised
        if link:
            parent.link_set().add(p.pid)
            p.links = {parent.pid}
        if monitor is not None:
            if parent.monitors_out is None:
                parent.monitors_out = {}
            parent.monitors_out[monitor] = p.pid
            p.monitors_in = {monitor: (parent.pid, p.pid)}
        if len(self.procs) < _BIG_TABLE:
            self.procs[p.pid.key] = p
        else:
            # This insertion may resize a big table, which the monitor must
            # not charge to the spawning process (csrc/ovm_sched.h).
            ovm_housekeeping(1)
            self.procs[p.pid.key] = p
            ovm_housekeeping(0)
        p.wake(q)
        return p

    cdef forget(self, Process p):
        self.procs.pop(p.pid.key, None)
        if self.stopping and not self.procs:
            self.emptied.set()
        # Its exit flag is set: a register() that checks it from now on
        # refuses, and one that checked it before has set p.name by the time
        # its lock lets us read it (both under the process's lock).
        with cython.critical_section(p):
            name = p.name
        if name is not None:
            with self.lock:
                if self.names.get(name) is p:
                    del self.names[name]
                with cython.critical_section(p):
                    p.name = None

    cdef int deliver_to(self, Pid pid, int kind, object payload, uint32_t q) except -1:
        """Queues a signal for pid if it is alive."""
        target = self.procs.get(pid.key)
        if target is not None:
            (<Process>target).deliver(kind, payload, q)
        return 0

    cdef object lookup(self, object dest):
        """The live Process for a Pid or a registered name, else None."""
        if type(dest) is Pid:
            return self.procs.get((<Pid>dest).key)
        return self.names.get(dest)

    cdef object resolve(self, object dest):
        """Like lookup, but an unknown name is an error (Erlang's badarg)."""
        if type(dest) is Pid:
            return self.lookup(dest)
        if isinstance(dest, str):
            target = self.names.get(dest)
            if target is None:
                raise _UnknownNameError(f"no process is registered as {dest!r}")
            return target
        raise TypeError(f"a destination must be a Pid or a registered name, not {dest!r}")

    cdef int register(self, object name, Pid pid) except -1:
        if not isinstance(name, str) or not name or name == "undefined":
            raise _NameRegistrationError(
                f"a registered name must be a non-empty str other than 'undefined', not {name!r}")
        cdef Process p = self.lookup(pid)
        if p is None:
            self.check_own(pid, f"cannot register {name!r} as")
        with self.lock:
            if name in self.names:
                raise _NameRegistrationError(
                    f"{name!r} is already registered to {(<Process>self.names[name]).pid!r}")
            if p is None:
                raise _NameRegistrationError(f"cannot register {name!r}: {pid!r} is not alive")
            # Its exit flag and its name under its lock, against forget().
            with cython.critical_section(p):
                exited, old = ovm_proc_exited(&p.c), p.name
                if not exited and old is None:
                    p.name = name
            if exited:
                raise _NameRegistrationError(f"cannot register {name!r}: {pid!r} is not alive")
            if old is not None:
                raise _NameRegistrationError(f"{pid!r} is already registered as {old!r}")
            self.names[name] = p
        return 0

    cdef int unregister(self, object name) except -1:
        with self.lock:
            p = self.names.pop(name, None)
            if p is None:
                raise _NameRegistrationError(f"{name!r} is not a registered name")
            with cython.critical_section(p):
                (<Process>p).name = None
        return 0

    # -- sockets: the hooks of the I/O layer (otpvm.net) ----------------------
    #
    # A socket registers its fd with the C poller under a token; when the fd
    # is ready, a scheduler thread calls the socket's _io_ready(events) with
    # the interpreter, outside any process.  The socket does the syscalls and
    # posts messages to its owner.  Sockets belong to a process (`_own`) and
    # are closed by terminate() when it ends, like Erlang ports.

    def _io_add(self, port, int fd, uint32_t interest):
        """Watches fd for `port` (armed for `interest`); returns its token."""
        cdef uint64_t token = ovm_next_id()
        cdef int err
        self.check_running()
        if not self.io_started:
            with self.lock:
                self.check_running()        # stop() sets stopping under this lock
                if not self.io_started:
                    err = ovm_sched_start_io(&self.sched)
                    if err:
                        raise OSError(err, f"otpvm: cannot start the I/O poller: "
                                           f"{_os.strerror(err)}")
                    self.io_started = True
        self.io_ports[token] = port
        err = ovm_poller_add(&self.sched.io, fd, token, interest)
        if err:
            del self.io_ports[token]
            self.check_running()            # EBADF: the poller stopped meanwhile
            raise OSError(err, f"otpvm: cannot watch fd {fd}: {_os.strerror(err)}")
        return token

    def _io_arm(self, int fd, uint64_t token, uint32_t interest):
        """Asks for one more readiness report of fd (registrations are one-shot)."""
        self.io_arm(fd, token, interest)

    cdef int io_arm(self, int fd, uint64_t token, uint32_t interest) except -1:
        cdef int err
        ovm_kernel_io(1)            # see _io_close
        err = ovm_poller_arm(&self.sched.io, fd, token, interest)
        ovm_kernel_io(0)
        if err:
            raise OSError(err, f"otpvm: cannot watch fd {fd}: {_os.strerror(err)}")
        return 0

    def _io_close(self, sock):
        """Closes a socket object for the I/O layer.

        A system call on a socket can take milliseconds of the calling
        thread's CPU time that are not its own: on kernels without
        CONFIG_IRQ_TIME_ACCOUNTING the kernel processes other connections'
        packets on it (a close on loopback, 3-7 ms in the uptime demo).  What
        it takes beyond 0.1 ms is not charged to the process's slice
        (ovm_kernel_io in csrc/ovm_sched.h)."""
        ovm_kernel_io(1)
        try:
            sock.close()
        finally:
            ovm_kernel_io(0)

    def _io_accept(self, sock):
        """``sock.accept()`` for the I/O layer, charged as _io_close is."""
        ovm_kernel_io(1)
        try:
            return sock.accept()
        finally:
            ovm_kernel_io(0)

    def _io_remove(self, int fd, uint64_t token):
        """Stops watching fd; events already collected for it are dropped."""
        self.io_ports.pop(token, None)
        ovm_poller_remove(&self.sched.io, fd)

    def _call_later(self, double seconds, fn):
        """Calls fn() on a scheduler thread, outside any process, after
        `seconds`; returns a TimerRef for _cancel_call."""
        return self.start_timer(<int64_t>(max(0.0, seconds) * 1e9), _TIMER_CALL, None, fn,
                                None, 0)

    def _cancel_call(self, TimerRef t):
        self.cancel_timer(t)

    def _post(self, Pid pid, msg):
        """Delivers msg to pid as it is, not copied (the sender gives it
        away); False if the process is gone."""
        return self.post(pid, msg)

    def _post_alias(self, Pid pid, Ref ref, msg):
        """Delivers msg as it is through pid's alias ref, from any thread:
        dropped unless the alias is still active when it arrives (see
        kernel.wait_future).  False if the process is gone."""
        target = self.procs.get(pid.key)
        if target is None:
            return False
        return (<Process>target).deliver(OVM_SIG_ALIAS, (ref, msg), (<Process>target).home())

    cdef bint post(self, Pid pid, object msg) except -1:
        target = self.procs.get(pid.key)
        if target is None:
            return False
        return (<Process>target).deliver(OVM_SIG_MESSAGE, msg, (<Process>target).home())

    def _own(self, Pid pid, port):
        """Makes pid the owner of port: terminate() will call its
        _owner_exited(reason).  False if pid is not alive."""
        cdef Process p = self.procs.get(pid.key)
        if p is None:
            return False
        # Under its lock, against its end taking its sockets (take_ports):
        # a socket given to it after that would never be closed.
        with cython.critical_section(p):
            if ovm_proc_exited(&p.c):
                return False
            if p.ports is None:
                p.ports = set()
            p.ports.add(port)
        return True

    def _disown(self, Pid pid, port):
        cdef Process p = self.procs.get(pid.key)
        if p is not None:
            with cython.critical_section(p):
                if p.ports is not None:
                    p.ports.discard(port)

    @property
    def open_sockets(self):
        """How many sockets are registered with the poller."""
        return len(self.io_ports)

    cdef int fire_io(self) except -1:
        cdef ovm_io_event evs[_IO_BATCH]
        cdef size_t i, n = ovm_poller_take(&self.sched.io, evs, _IO_BATCH)
        for i in range(n):
            port = self.io_ports.get(evs[i].token)
            if port is None:
                continue                    # closed since the event was collected
            try:
                port._io_ready(evs[i].events)
            except BaseException:           # a bug in the socket layer: log it, go on
                _log.critical("otpvm: internal error handling I/O on %r", port, exc_info=True)
        return 0

    # -- timers -----------------------------------------------------------------

    cdef TimerRef start_timer(self, int64_t after_ns, int kind, Process p, object dest,
                              object msg, uint64_t gen):
        cdef TimerRef t = TimerRef.__new__(TimerRef)
        cdef int earliest = 0
        t.kind = kind
        t.proc = p
        t.gen = gen
        t.dest = dest
        t.msg = msg
        ovm_timer_init(&t.c, ovm_now_ns() + after_ns, ovm_next_id(), <void *>t)
        Py_INCREF(t)                        # the heap's reference
        if ovm_timers_add(&self.sched.timers, &t.c, &earliest) != 0:
            Py_DECREF(t)
            raise MemoryError("otpvm: out of memory starting a timer")
        if earliest:
            with nogil:
                ovm_sched_timers_changed(&self.sched)
        return t

    cdef object cancel_timer(self, TimerRef t):
        """Seconds that were left, or False if it had fired already."""
        if not ovm_timers_cancel(&self.sched.timers, &t.c):
            return False
        left = max(0, t.c.deadline - ovm_now_ns()) / 1e9
        t.proc = None
        t.dest = t.msg = None
        Py_DECREF(t)                        # the heap's reference
        return left

    cdef int fire_timers(self) except -1:
        cdef ovm_timer *c
        cdef TimerRef t
        while True:
            c = ovm_timers_pop_due(&self.sched.timers, ovm_now_ns())
            if c == NULL:
                return 0
            t = <TimerRef>c.payload
            Py_DECREF(t)                    # the heap's reference
            _fire_timer(t, self)

    cdef void drop_timers(self):
        cdef ovm_timer *c
        while True:
            c = ovm_timers_pop_any(&self.sched.timers)
            if c == NULL:
                return
            Py_DECREF(<object>c.payload)
