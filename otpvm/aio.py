"""asyncio on otpvm: an event loop that runs as an otpvm process.

Select it as uvloop is selected::

    asyncio.run(main(), loop_factory=otpvm.aio.new_event_loop)       # 3.12+
    with asyncio.Runner(loop_factory=otpvm.aio.new_event_loop) as r:  # 3.11+
        r.run(main())

The loop is asyncio's own selector loop (``asyncio.SelectorEventLoop``), so
asyncio code behaves as on asyncio's default loop, with these changes of
engine underneath:

* ``run_forever`` runs the loop as a process of an otpvm VM (the default VM
  unless ``new_event_loop(vm)`` names one), and the calling thread waits for
  it.  Between two iterations, where asyncio's loop would block in
  ``select``, the loop looks at its selector without waiting, and when
  nothing is ready, the process waits in ``otpvm.receive``: the readiness
  of the loop's sockets then comes from otpvm's own poller, as a message.
  So the loop holds no scheduler thread while it waits, and one that
  overruns in a callback is reported and handed over like any process.
* So asyncio code runs on otpvm's scheduler threads, not on the thread that
  called ``run_forever``, and may resume on another one after a wait:
  ``threading.current_thread()`` there is a scheduler thread, and a check
  of "am I on the loop's thread" by thread ident does not hold.  What
  asyncio itself does on the loop's thread only, the waiting thread does
  for the loop: ``add_signal_handler``'s ``signal.set_wakeup_fd`` and
  ``signal.signal`` (main thread only).
* Python runs signal handlers on the main thread only.  While run_forever
  waits there, the handlers set in Python run in the loop's process
  instead, between two iterations: where asyncio's loop, on the main
  thread, runs them.  So Ctrl-C's KeyboardInterrupt stops the loop and
  comes out of run_forever, which can then be run again or closed, and
  asyncio.Runner's Ctrl-C handler cancels the main task from inside the
  loop.  A callback blocked in a system call is not interrupted, as on
  asyncio's loop it would be: the handler runs when it returns, and the
  same signal again meanwhile runs its handler on the main thread (a
  second Ctrl-C leaves the loop running and comes out at once).
* asyncio code running in the loop is inside that process: it may call
  ``otpvm.self()``, ``send``, ``spawn``, ``link`` and ``monitor``, and
  ``await otpvm.aio.receive(pattern, timeout)`` takes a message from the
  loop process's mailbox as an asyncio future.  Other processes send to the
  loop's pid (``otpvm.aio.loop_pid()`` inside the loop).

On this loop the whole of asyncio is one process: a callback or task that
spins holds all of it.  ``new_process_task_loop`` gives a loop whose tasks
are otpvm processes of their own (``otpvm._aio_tasks`` says how): one that
spins no longer delays the others, and a task can be linked to, monitored
and supervised.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import os
import queue
import select
import selectors
import signal
import sys
import threading
from asyncio import events, unix_events
from collections.abc import Callable, Coroutine
from typing import Any, TypeVarTuple

from otpvm._aio_tasks import (
    _BATON,
    _LOOP,
    _QUIT,
    Baton,
    ProcessTask,
    begin_iteration,
    pause,
    run_handles,
    start_task_link,
    task_factory,
)
from otpvm._vm import VM, Pid, _matches, receive
from otpvm._vm import self as _self_pid
from otpvm.kernel import default_vm
from otpvm.supervisor import ChildSpec
from otpvm.terms import ANY, NotInProcessError, Shared

__all__ = ["Loop", "ProcessTask", "ProcessTaskLoop", "loop_pid", "new_event_loop",
           "new_process_task_loop", "receive_message", "task_child_spec"]

_Ts = TypeVarTuple("_Ts")

_IN = 1     # readable, in otpvm's poller (csrc/ovm_poll.h), as otpvm.net.port has it
_WAKE = ("$otpvm.aio", "ready")     # the selector has an fd ready (or: look at the loop)
# A loop with work waiting runs this many iterations between two looks at its
# mailbox (each look is an await, where otpvm may also give its thread to
# another process): a look per iteration cost asyncio's ping-pong two thirds
# of its speed.
_BUSY_ITERATIONS = 16
# A loop with work waiting asks epoll every this many iterations (and always
# before it waits, and on the first iteration after): one system call per
# iteration cost asyncio's ping-pong 14% of its speed here.  asyncio's own
# loop asks at every iteration; no code can count on when the kernel makes
# an fd ready, and a loop that has run out of work asks at once.
_SELECT_EVERY = 4
# At most this many fds are taken from epoll at a time (asyncio takes all):
# making thousands of callbacks ready at once is a long stretch without a
# yield.  epoll hands the rest out next time, each fd in its turn.
_MAX_EVENTS = 1024
# run_forever's thread waits in steps this long, as VM.run does (a signal the
# kernel gave another thread runs Python's handler on this one at a step).
_SIGNAL_LOOK_S = 0.05
# The handler asyncio's add_signal_handler sets (its loop then reads the
# signal from its wakeup fd): not relayed (see _SignalRelay).
_ASYNCIO_SIGNAL_NOOP = unix_events._sighandler_noop  # type: ignore[attr-defined]


class _Selector(selectors.EpollSelector):
    """The selector asyncio's loop is given: asyncio's own (epoll, level-
    triggered), except that ``select`` never waits.  The loop's process
    looks at it before it waits (``has_ready``): on loopback, or whenever
    I/O keeps up with the loop, the answer is there already and the loop
    goes on at once, as asyncio's would from ``epoll_wait``.  Only when
    nothing is ready does the process wait in ``otpvm.receive``, and then
    the selector's epoll fd (readable when one of its fds is ready) is
    armed, one-shot, in otpvm's poller, whose report is the wake-up
    message.

    A process task that lost the baton (see ``otpvm._aio_tasks``) may
    register or unregister an fd while the loop selects: with epoll level-
    triggered, the worst that comes of it is an fd reported one iteration
    later, or reported while its key was just dropped (and then not at
    all), as when asyncio's own selector is used from two threads."""

    # selectors' own (private) attributes, which typeshed does not declare
    _fd_to_key: dict[int, selectors.SelectorKey]
    _selector: select.epoll

    def __init__(self, vm: VM) -> None:
        super().__init__()
        self.vm = vm
        self.lock = threading.Lock()            # report's view of waiter and armed
        self.waiter: Pid | None = None          # the loop process, while it runs
        self.watch: _Watch | None = None        # the epoll fd in otpvm's poller
        self.armed = False                      # a report of it is asked for
        self.polled: list[tuple[int, int]] | None = None    # by has_ready, for select
        self.skips = 0                          # selects to answer [] without asking epoll

    def has_ready(self) -> bool:
        """Whether an fd is ready now.  What epoll said is kept for the next
        ``select``, unless ``forget`` is called first."""
        if not self._fd_to_key:
            return False
        self.polled = self._poll()
        return bool(self.polled)

    def _poll(self) -> list[tuple[int, int]]:
        polled = self._selector.poll(0, min(len(self._fd_to_key), _MAX_EVENTS))
        # A full batch: more may be ready, so the next select asks again.
        self.skips = 0 if len(polled) == _MAX_EVENTS else _SELECT_EVERY - 1
        return polled

    def forget(self) -> None:
        """What has_ready saw is stale: asyncio code ran since (task steps,
        signal handlers), which may have closed or unregistered an fd.  The
        next select asks epoll again, if has_ready had asked."""
        if self.polled is not None:
            self.polled = None
            self.skips = 0

    def look_now(self) -> None:
        """The loop starts, or has waited: the next select asks epoll."""
        self.polled = None
        self.skips = 0

    def arm(self) -> None:
        """Asks otpvm's poller for one report when an fd is ready (the loop
        process is about to wait): a wake-up message to the waiter."""
        # Read without the lock: a report that clears armed just after is
        # followed by its wake-up message, so skipping the arm loses nothing.
        if self.armed or not self._fd_to_key:
            return      # the report asked for is still to come; or nothing to wait for
        self.armed = True
        if self.watch is None:
            self.watch = _Watch(self)
            self.watch.token = self.vm._io_add(self.watch, self.fileno(), _IN)
        else:
            self.vm._io_arm(self.fileno(), self.watch.token, _IN)

    def report(self) -> None:
        """From otpvm's poller (a scheduler thread): an fd is ready."""
        with self.lock:
            self.armed = False
            waiter = self.waiter
        if waiter is not None:
            self.vm._post(waiter, _WAKE)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """What is ready now (or was, when has_ready looked just before), at
        every ``_SELECT_EVERY``-th call while the loop is busy: never waits
        (the loop process waited before)."""
        polled, self.polled = self.polled, None
        if polled is None:
            if self.skips > 0:
                self.skips -= 1
                return []
            if not self._fd_to_key:
                return []
            polled = self._poll()
        ready = []
        for fd, event in polled:        # as selectors.EpollSelector.select
            key = self._fd_to_key.get(fd)
            if key:
                events = ((selectors.EVENT_WRITE if event & ~select.EPOLLIN else 0)
                          | (selectors.EVENT_READ if event & ~select.EPOLLOUT else 0))
                ready.append((key, events & key.events))
        return ready

    def close(self) -> None:
        if self.watch is not None:      # out of the poller before the fd is closed
            self.vm._io_remove(self.fileno(), self.watch.token)
            self.watch = None
        super().close()


class _Watch:
    """A _Selector's epoll fd, as otpvm's poller watches it."""

    __slots__ = ("selector", "token")

    def __init__(self, selector: _Selector) -> None:
        self.selector, self.token = selector, 0

    def _io_ready(self, events: int) -> None:
        """Called by a scheduler thread, outside any process (see VM._io_add)."""
        self.selector.report()

    def close(self) -> None:
        """The VM stops: the fd is the selector's, which closes it."""


class Loop(asyncio.SelectorEventLoop):
    """asyncio's selector event loop, run as an otpvm process (see the module)."""

    def __init__(self, vm: VM | None = None) -> None:
        self._otpvm_vm = vm if vm is not None else default_vm()
        self._otpvm_selector = _Selector(self._otpvm_vm)
        self._otpvm_mailbox: collections.deque[Any] = collections.deque()
        self._otpvm_waiters: list[tuple[Any, asyncio.Future[Any]]] = []
        self._otpvm_pid: Pid | None = None
        self._otpvm_caller: _Caller | None = None      # while run_forever runs
        # Python signal handlers called while run_forever waits on the main
        # thread, for the loop's process to run (_SignalRelay).
        self._otpvm_signals: collections.deque[tuple[Any, int, Any]] = collections.deque()
        self._otpvm_baton: Baton | None = None          # a ProcessTaskLoop's
        self._otpvm_tasks: dict[Pid, ProcessTask] = {}  # its live tasks, by pid
        super().__init__(self._otpvm_selector)

    def run_forever(self) -> None:
        """Runs the loop as a process of its VM until ``stop()``; the calling
        thread (a plain thread, not a process) waits for it, and meanwhile
        runs what asyncio may do on its own thread only (see ``_Caller``)."""
        self._check_closed()  # type: ignore[attr-defined]
        self._check_running()  # type: ignore[attr-defined]
        try:
            _self_pid()
        except NotInProcessError:
            pass
        else:
            raise RuntimeError("an otpvm.aio loop runs from a plain thread: inside a process, "
                               "await otpvm's own calls instead")
        self._otpvm_caller = caller = _Caller()
        relay = _SignalRelay(self) if threading.current_thread() is threading.main_thread() \
            else None
        self._otpvm_signals.clear()
        try:
            if relay is not None:
                relay.install()
            caller.serve(self._otpvm_vm, Shared(self))
        finally:
            self._otpvm_caller = None
            if relay is not None:
                relay.restore()
        _run_signal_handlers(self)      # relayed as the loop ended: run here

    def add_signal_handler(self, sig: int, callback: Callable[[*_Ts], object],
                           *args: *_Ts) -> None:
        """asyncio's, done on the thread that runs the loop (run_forever's):
        ``signal.set_wakeup_fd`` and ``signal.signal`` are for the main
        thread only, and asyncio code runs on a scheduler thread.  The
        signal then wakes the loop as on asyncio's loop, through its
        self-pipe."""
        self._otpvm_on_caller(super().add_signal_handler, sig, callback, *args)

    def remove_signal_handler(self, sig: int) -> bool:
        """asyncio's, done on run_forever's thread (see add_signal_handler)."""
        return bool(self._otpvm_on_caller(super().remove_signal_handler, sig))

    def _otpvm_on_caller(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on run_forever's thread, in the caller's context, when
        called from the loop's process; else here."""
        caller = self._otpvm_caller
        if caller is None or threading.get_ident() == caller.ident:
            return fn(*args)
        return caller.call(contextvars.copy_context().run, fn, *args)


class _SignalRelay:
    """While run_forever waits on the main thread, where Python runs signal
    handlers: each handler set in Python is replaced by a relay that has the
    loop's process run it between two iterations, as asyncio's loop, on the
    main thread, would have (asyncio.Runner's SIGINT handler cancels the
    main task: run here, on another thread than the loop's code, in debug
    mode its call_soon raised half-way through, and the task was never
    woken).  A signal that comes again before the loop has run its handler
    (the loop is blocked in a callback) has it run here: a second Ctrl-C's
    KeyboardInterrupt comes out of run_forever at once."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.originals: dict[int, Any] = {}

    def install(self) -> None:
        for sig in signal.valid_signals():
            try:
                handler = signal.getsignal(sig)
            except (OSError, ValueError):
                continue
            if not callable(handler) or handler is _ASYNCIO_SIGNAL_NOOP:
                continue                        # SIG_DFL, SIG_IGN, C's; asyncio's own
            try:
                signal.signal(sig, self.relay)
            except (OSError, ValueError):
                continue
            self.originals[sig] = handler

    def restore(self) -> None:
        for sig, handler in self.originals.items():
            if signal.getsignal(sig) == self.relay:     # else set anew meanwhile: kept
                signal.signal(sig, handler)

    def relay(self, signum: int, frame: Any) -> None:
        handler = self.originals[signum]
        pending = self.loop._otpvm_signals
        if any(sig == signum for _, sig, _ in list(pending)):
            handler(signum, frame)              # the loop has not run the last one
            return
        pending.append((handler, signum, frame))
        selector = self.loop._otpvm_selector
        with selector.lock:
            waiter = selector.waiter
        if waiter is not None:
            self.loop._otpvm_vm._post(waiter, _WAKE)


def _run_signal_handlers(loop: Loop) -> None:
    """The relayed signal handlers (see _SignalRelay), in the loop's
    process: what one raises comes out of the loop, as out of asyncio's."""
    pending = loop._otpvm_signals
    while pending:
        handler, signum, frame = pending.popleft()
        handler(signum, frame)


class _Caller:
    """The thread that called run_forever, while the loop runs.

    The loop's process runs on scheduler threads, but asyncio expects a
    few things of the loop's own thread, which is the main thread in most
    programs: only there may ``add_signal_handler`` call
    ``signal.set_wakeup_fd`` and ``signal.signal``.  So the calling thread
    does not wait in ``VM.run`` itself: a helper thread does, and the
    calling thread runs what the loop's process hands it until the process
    ends.  It waits in short steps, as VM.run does, so that a Ctrl-C the
    kernel gave another thread still runs Python's handler here at once."""

    def __init__(self) -> None:
        self.ident = threading.get_ident()
        self.calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self.lock = threading.Lock()
        self.serving = True

    def serve(self, vm: VM, box: Shared) -> None:
        """Runs the loop's process to its end, serving calls meanwhile."""
        outcome: list[BaseException | None] = []
        # VM.run starts the process in a copy of the context it is called
        # in: this thread's, as when this thread called it.
        context = contextvars.copy_context()

        def wait() -> None:
            try:
                context.run(vm.run, _loop_body, box)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)
            finally:
                self.calls.put(None)

        try:
            _Waiter.start(wait)
            while True:
                try:
                    call = self.calls.get(timeout=_SIGNAL_LOOK_S)
                except queue.Empty:
                    continue
                if call is None:
                    break
                call.run()
        finally:
            self.close()
        if outcome[0] is not None:
            try:
                raise outcome[0]
            finally:
                outcome.clear()     # no cycle through the traceback

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the calling thread (from the loop's process): its
        result, or its exception raised here."""
        call = _Call(fn, args)
        with self.lock:
            if not self.serving:
                raise RuntimeError("the thread that ran this otpvm.aio loop has left run_forever")
            self.calls.put(call)
        return call.result()

    def close(self) -> None:
        """Serves no more: a call still queued fails with RuntimeError."""
        with self.lock:
            self.serving = False
        while True:
            try:
                call = self.calls.get_nowait()
            except queue.Empty:
                return
            if call is not None:
                call.fail(RuntimeError("the thread that ran this otpvm.aio loop has left "
                                       "run_forever"))


class _Waiter:
    """A thread that waits in ``VM.run`` for run_forever's thread.  Kept for
    the next run, once done (a thread started per run_forever made each
    run_until_complete 2.5 times as long)."""

    idle: list[_Waiter] = []
    lock = threading.Lock()

    def __init__(self) -> None:
        self.jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        threading.Thread(target=self.main, name="otpvm.aio waiter", daemon=True).start()

    @classmethod
    def start(cls, job: Callable[[], None]) -> None:
        """Runs job (which raises nothing) on an idle waiter, or a new one."""
        with cls.lock:
            waiter = cls.idle.pop() if cls.idle else None
        (waiter or cls()).jobs.put(job)

    def main(self) -> None:
        while True:
            self.jobs.get()()
            with self.lock:
                self.idle.append(self)

    @classmethod
    def forget(cls) -> None:
        """In a forked child: the parent's waiters are not there."""
        cls.idle = []
        cls.lock = threading.Lock()


os.register_at_fork(after_in_child=_Waiter.forget)


class _Call:
    """One call handed to run_forever's thread, and its outcome."""

    __slots__ = ("args", "done", "error", "fn", "value")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc
        self.done.set()

    def fail(self, exc: BaseException) -> None:
        self.error = exc
        self.done.set()

    def result(self) -> Any:
        self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


class ProcessTaskLoop(Loop):
    """An otpvm.aio loop whose tasks are otpvm processes (see
    ``otpvm._aio_tasks``): asyncio code runs one piece at a time, as on any
    loop, except that a task step running longer than ``preempt_after``
    seconds without awaiting no longer holds up the loop and the other
    tasks."""

    def __init__(self, vm: VM | None = None, *, preempt_after: float = 0.002) -> None:
        super().__init__(vm)
        if not (isinstance(preempt_after, (int, float)) and preempt_after > 0):
            super().close()
            raise ValueError(f"preempt_after must be a positive number of seconds, "
                             f"not {preempt_after!r}")
        self._otpvm_baton = Baton(self, preempt_after)
        self.set_task_factory(task_factory)  # type: ignore[arg-type]

    # Callbacks and timers may come from a task step that lost the baton
    # (or from a plain thread): those are handed to the loop's process,
    # which alone touches its queues then.

    def call_soon(self, callback: Any, *args: Any,  # type: ignore[override]
                  context: Any = None) -> asyncio.Handle:
        baton = self._otpvm_baton
        assert baton is not None
        if not baton.held_here():
            return self.call_soon_threadsafe(callback, *args, context=context)
        if baton.holder is not _LOOP:
            baton.dirty = True
        return super().call_soon(callback, *args, context=context)

    def call_at(self, when: float, callback: Any, *args: Any,  # type: ignore[override]
                context: Any = None) -> asyncio.TimerHandle:
        baton = self._otpvm_baton
        assert baton is not None
        if baton.held_here():
            if baton.holder is not _LOOP:
                baton.dirty = True
            return super().call_at(when, callback, *args, context=context)
        self._check_closed()  # type: ignore[attr-defined]
        timer = events.TimerHandle(when, callback, args, self, context)
        timer._scheduled = True  # type: ignore[attr-defined]
        self.call_soon_threadsafe(heapq.heappush, self._scheduled, timer)  # type: ignore[attr-defined]
        return timer

    def stop(self) -> None:
        super().stop()
        self._write_to_self()       # a task's process may have called it

    def _write_to_self(self) -> None:
        pid = self._otpvm_pid
        if pid is None or not self._otpvm_vm._post(pid, _WAKE):
            super()._write_to_self()  # type: ignore[misc]

    def close(self) -> None:
        """Closes the loop; the processes of tasks still pending end, their
        coroutines closed and the tasks cancelled."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        for pid, task in list(self._otpvm_tasks.items()):
            if not task.done():
                task._otpvm_abandon()   # the loop is stopped: nothing else runs
            self._otpvm_vm._post(pid, _QUIT)
        super().close()


def new_event_loop(vm: VM | None = None) -> Loop:
    """A new otpvm.aio loop on ``vm`` (default: ``otpvm.default_vm()``): the
    ``loop_factory`` for ``asyncio.run`` and ``asyncio.Runner``."""
    return Loop(vm)


def new_process_task_loop(vm: VM | None = None, *, preempt_after: float = 0.002) -> ProcessTaskLoop:
    """A new otpvm.aio loop whose tasks are otpvm processes (each with a
    ``pid``, supervisable), so that one spinning without awaiting delays
    the others by about ``preempt_after`` plus, with a GIL, CPython's
    switch interval: ``asyncio.run(main(),
    loop_factory=otpvm.aio.new_process_task_loop)``."""
    return ProcessTaskLoop(vm, preempt_after=preempt_after)


def task_child_spec(loop: Loop, fn: Callable[..., Coroutine[Any, Any, Any]], *args: Any,
                    id: Any = None, restart: str = "transient",
                    shutdown: Any = None) -> ChildSpec:
    """A supervisor child that is the asyncio task ``fn(*args)`` on ``loop``
    (a process-task loop, running), started (and restarted) linked to the
    supervisor.  ``restart`` defaults to ``'transient'``: a task that raised
    is restarted, one that returned or was cancelled is not.  ``id``
    defaults to the function's name.  The function and its arguments are
    handed over by reference."""
    if not isinstance(loop, ProcessTaskLoop):
        raise TypeError(f"task_child_spec() needs a loop from otpvm.aio.new_process_task_loop(), "
                        f"not {loop!r}")
    if not callable(fn):
        raise TypeError(f"task_child_spec() needs a coroutine function, not {fn!r}")
    start = Shared((loop, fn, args))
    return ChildSpec(id if id is not None else getattr(fn, "__name__", repr(fn)),
                     (start_task_link, (start,)), restart=restart, shutdown=shutdown)


def loop_pid() -> Pid:
    """The pid of the running otpvm.aio loop (call it from asyncio code)."""
    loop = events.get_running_loop()
    if not isinstance(loop, Loop) or loop._otpvm_pid is None:
        raise RuntimeError("loop_pid() is for asyncio code running on an otpvm.aio loop")
    return loop._otpvm_pid


def receive_message(pattern: Any = None, timeout: float | None = None) -> asyncio.Future[Any]:
    """An asyncio future of the first message of the loop process's mailbox
    that matches ``pattern`` (otpvm's patterns; None: any), as
    ``otpvm.receive`` takes it: ``await otpvm.aio.receive_message(...)``.
    After ``timeout`` seconds it fails with TimeoutError."""
    loop = events.get_running_loop()
    if not isinstance(loop, Loop):
        raise RuntimeError("receive_message() is for asyncio code on an otpvm.aio loop")
    owner: Loop | ProcessTask = loop
    if loop._otpvm_tasks:
        owner = loop._otpvm_tasks.get(_self_pid(), loop)
    pattern = ANY if pattern is None else pattern
    fut = loop.create_future()
    for i, msg in enumerate(owner._otpvm_mailbox):
        if _matches(pattern, msg):
            del owner._otpvm_mailbox[i]
            fut.set_result(msg)
            return fut
    entry = (pattern, fut)
    owner._otpvm_waiters.append(entry)
    timer: asyncio.TimerHandle | None = None
    if timeout is not None:
        def expire() -> None:
            if not fut.done():
                fut.set_exception(TimeoutError(f"no matching message after {timeout:g} s"))
        timer = loop.call_later(timeout, expire)

    def done(_: asyncio.Future[Any]) -> None:     # answered, timed out or cancelled
        if timer is not None:
            timer.cancel()
        if entry in owner._otpvm_waiters:
            owner._otpvm_waiters.remove(entry)
    fut.add_done_callback(done)
    return fut


def _deliver(owner: Loop | ProcessTask, msg: Any) -> None:
    """A message for asyncio code (of the loop's process, or of a process
    task's): to the first waiter it matches, else kept."""
    for i, (pattern, fut) in enumerate(owner._otpvm_waiters):
        if not fut.done() and _matches(pattern, msg):
            del owner._otpvm_waiters[i]
            fut.set_result(msg)
            return
    owner._otpvm_mailbox.append(msg)


class _OnThisThread:
    """What asyncio keeps per thread while a loop runs there (the running
    loop, async generator hooks, coroutine origin tracking): the loop
    process may resume on another scheduler thread after each wait, so it
    takes them along, and leaves each thread as it found it."""

    def __init__(self, loop: Loop) -> None:
        self.loop = loop
        self.saved_hooks: Any = None

    def enter(self) -> None:
        loop = self.loop
        loop._thread_id = threading.get_ident()  # type: ignore[attr-defined]
        self.saved_hooks = sys.get_asyncgen_hooks()
        sys.set_asyncgen_hooks(firstiter=loop._asyncgen_firstiter_hook,  # type: ignore[attr-defined]
                               finalizer=loop._asyncgen_finalizer_hook)  # type: ignore[attr-defined]
        loop._set_coroutine_origin_tracking(loop._debug)  # type: ignore[attr-defined]
        events._set_running_loop(loop)

    def leave(self) -> None:
        events._set_running_loop(None)
        self.loop._set_coroutine_origin_tracking(False)  # type: ignore[attr-defined]
        sys.set_asyncgen_hooks(*self.saved_hooks)


async def _loop_body(box: Shared) -> None:
    """The loop's process: asyncio's run_forever, with the wait for I/O and
    timers done by ``otpvm.receive`` between iterations (and, on a
    process-task loop, each iteration run holding the baton)."""
    loop: Loop = box.value
    selector = loop._otpvm_selector
    baton = loop._otpvm_baton
    here = _OnThisThread(loop)
    loop._otpvm_pid = _self_pid()
    with selector.lock:
        selector.waiter = loop._otpvm_pid
    here.enter()
    selector.look_now()
    busy = 0
    timeout: float | None = 0.0
    holding = baton is not None         # a stopped loop keeps its baton (parked)
    if baton is not None:
        baton.resume()
    try:
        while True:
            if timeout == 0 and busy < _BUSY_ITERATIONS:
                busy += 1
            else:
                busy = 0
                if timeout != 0:
                    selector.arm()
                here.leave()
                try:
                    await _take_messages(loop, timeout)
                finally:
                    here.enter()
                if timeout != 0:
                    selector.look_now()     # woken, maybe by an fd
            if baton is not None and not holding:
                here.leave()
                try:
                    await baton.acquire(_LOOP)
                finally:
                    here.enter()
                holding = True
            if loop._otpvm_signals:
                _run_signal_handlers(loop)
                selector.forget()
            if baton is not None:
                selector.forget()       # tasks ran since _timeout looked
            todo = begin_iteration(loop)
            while todo := run_handles(loop, todo, baton):
                await pause(baton, here)
            timeout = _timeout(loop, selector)
            if loop._stopping:  # type: ignore[attr-defined]
                break
            if baton is not None:
                baton.release(_LOOP)
                holding = False
    finally:
        if baton is not None:
            baton.park(holding)
        with selector.lock:
            selector.waiter = None
        loop._otpvm_pid = None
        loop._stopping = False  # type: ignore[attr-defined]
        here.leave()
        loop._thread_id = None  # type: ignore[attr-defined]


def _timeout(loop: Loop, selector: _Selector) -> float | None:
    """How long the loop may wait before its next iteration, as
    ``BaseEventLoop._run_once`` reckons it (0: it has work now)."""
    if loop._ready or loop._stopping or selector.has_ready():  # type: ignore[attr-defined]
        return 0.0
    if loop._scheduled:  # type: ignore[attr-defined]
        return max(0.0, loop._scheduled[0]._when - loop.time())  # type: ignore[attr-defined]
    return None


async def _take_messages(loop: Loop, timeout: float | None) -> None:
    """Waits up to timeout for a message (a wake-up, or one for asyncio
    code), then takes whatever else has come, without waiting."""
    try:
        msg = await receive(ANY, timeout=timeout)
    except TimeoutError:
        return
    while True:
        if msg is not _WAKE and msg is not _BATON:
            _deliver(loop, msg)
        try:
            msg = await receive(ANY, timeout=0)
        except TimeoutError:
            return
