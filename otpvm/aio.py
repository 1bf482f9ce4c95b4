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
  ``select``, the process waits in ``otpvm.receive``: readiness of the
  loop's sockets comes from otpvm's own poller, as messages.  So the loop
  holds no scheduler thread while it waits, and one that overruns in a
  callback is reported and handed over like any process.
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
import errno
import heapq
import os
import queue
import selectors
import signal
import sys
import threading
from asyncio import events, unix_events
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import Any, TypeVarTuple

from otpvm._aio_tasks import (
    _BATON,
    _LOOP,
    _QUIT,
    Baton,
    ProcessTask,
    iterate,
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

# Readiness bits of otpvm's poller (csrc/ovm_poll.h), as otpvm.net.port has them.
_IN, _OUT, _ERR, _HUP = 1, 2, 4, 8
_WAKE = ("$otpvm.aio", "ready")     # a readiness report came: the events are in the selector
# A loop with work waiting runs this many iterations between two looks at its
# mailbox (each look is an await, where otpvm may also give its thread to
# another process): a look per iteration cost asyncio's ping-pong two thirds
# of its speed.
_BUSY_ITERATIONS = 16
# run_forever's thread waits in steps this long, as VM.run does (a signal the
# kernel gave another thread runs Python's handler on this one at a step).
_SIGNAL_LOOK_S = 0.05
# The handler asyncio's add_signal_handler sets (its loop then reads the
# signal from its wakeup fd): not relayed (see _SignalRelay).
_ASYNCIO_SIGNAL_NOOP = unix_events._sighandler_noop  # type: ignore[attr-defined]


class _Watch:
    """One fd registered with otpvm's poller for the selector."""

    __slots__ = ("fd", "selector", "token")

    def __init__(self, selector: _Selector, fd: int) -> None:
        self.selector, self.fd, self.token = selector, fd, 0

    def _io_ready(self, events: int) -> None:
        """Called by a scheduler thread, outside any process (see VM._io_add)."""
        self.selector.report(self.fd, events)

    def close(self) -> None:
        """The VM stops: the fd is asyncio's, which closes it."""


class _Selector(selectors.BaseSelector):
    """The selector asyncio's loop is given: registrations live in otpvm's
    poller (one-shot there: re-armed at each ``select``), and readiness is
    collected here as it is reported, from any scheduler thread.  ``select``
    never blocks: the loop process waits for a wake-up message before it
    calls it (``_loop_body``)."""

    def __init__(self, vm: VM) -> None:
        self.vm = vm
        self.keys: dict[int, selectors.SelectorKey] = {}
        self.watches: dict[int, _Watch] = {}
        self.lock = threading.Lock()
        self.ready: dict[int, int] = {}         # fd -> poller events, not yet selected
        self.disarmed: set[int] = set()
        self.waiter: Pid | None = None          # the loop process, while it runs

    # -- the poller's side (any thread) ------------------------------------

    def report(self, fd: int, events: int) -> None:
        with self.lock:
            if fd not in self.keys:
                return
            self.ready[fd] = self.ready.get(fd, 0) | events
            self.disarmed.add(fd)
            waiter = self.waiter
        if waiter is not None:
            self.vm._post(waiter, _WAKE)

    def has_ready(self) -> bool:
        """Whether a report waits (read without the lock: one that comes
        just after is followed by its wake-up message)."""
        return bool(self.ready)

    # -- selectors.BaseSelector ----------------------------------------------

    def _fd(self, fileobj: Any) -> int:
        """The fd of fileobj, as selectors' ``_fileobj_lookup`` finds it: a file
        object closed since it was registered (its fileno() is -1) is found
        by identity among the keys, so that it can still be unregistered."""
        try:
            return selectors._fileobj_to_fd(fileobj)  # type: ignore[attr-defined, no-any-return]
        except ValueError:
            for key in self.keys.values():
                if key.fileobj is fileobj:
                    return key.fd
            raise

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        fd = self._fd(fileobj)
        if not events or events & ~(selectors.EVENT_READ | selectors.EVENT_WRITE):
            raise ValueError(f"Invalid events: {events!r}")
        if fd in self.keys:
            raise KeyError(f"{fileobj!r} (FD {fd}) is already registered")
        key = selectors.SelectorKey(fileobj, fd, events, data)
        watch = _Watch(self, fd)
        with self.lock:
            self.keys[fd] = key
            self.watches[fd] = watch
        try:
            watch.token = self.vm._io_add(watch, fd, _interest(events))
        except BaseException:
            with self.lock:
                del self.keys[fd], self.watches[fd]
            raise
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            fd = self._fd(fileobj)
        except ValueError:
            raise KeyError(f"{fileobj!r} is not registered") from None
        with self.lock:
            key = self.keys.pop(fd, None)
            if key is None:
                raise KeyError(f"{fileobj!r} is not registered")
            watch = self.watches.pop(fd)
            self.ready.pop(fd, None)
            self.disarmed.discard(fd)
        # A file object closed while registered left the poller then (the
        # kernel drops a closed fd from epoll), and its fd number may be
        # another's now, maybe an otpvm.net socket's in the same poller: only
        # the token is dropped (fd -1 names no fd).
        self.vm._io_remove(fd if _open(key) else -1, watch.token)
        return key

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        try:
            key = self.keys.get(self._fd(fileobj))
        except ValueError:
            key = None
        if key is None:
            raise KeyError(f"{fileobj!r} is not registered")
        if events == key.events:
            key = key._replace(data=data)
            with self.lock:
                self.keys[key.fd] = key
            return key
        self.unregister(fileobj)
        return self.register(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        """What was reported since the last call (never waits), after which
        every fd reported is armed again: a socket still readable is
        reported anew, as by a level-triggered select."""
        if not self.ready:      # the common case, without the lock (see has_ready)
            return []
        with self.lock:
            ready, self.ready = self.ready, {}
            rearm, self.disarmed = self.disarmed, set()
            out = []
            for fd, events in ready.items():
                key = self.keys.get(fd)
                if key is None:
                    continue
                mask = 0
                if events & (_IN | _ERR | _HUP):
                    mask |= selectors.EVENT_READ
                if events & (_OUT | _ERR | _HUP):
                    mask |= selectors.EVENT_WRITE
                mask &= key.events
                if mask:
                    out.append((key, mask))
            arm = [(fd, self.watches[fd].token, _interest(self.keys[fd].events))
                   for fd in rearm if fd in self.keys and _open(self.keys[fd])]
        for fd, token, interest in arm:
            try:
                self.vm._io_arm(fd, token, interest)
            except OSError as e:
                # Closed since it was reported (EBADF), or closed and its
                # number reused (ENOENT): it is watched no more, as epoll
                # forgets a closed fd; unregister drops it.
                if e.errno not in (errno.EBADF, errno.ENOENT):
                    raise
        return out

    def close(self) -> None:
        for fd in list(self.keys):
            self.unregister(fd)

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        """The keys, by file object or fd, as selectors' own map has them."""
        return _Map(self)


class _Map(Mapping[Any, selectors.SelectorKey]):
    """A _Selector's keys, looked up by file object or fd (``get_key`` and
    asyncio's ``_add_reader`` pass either)."""

    def __init__(self, selector: _Selector) -> None:
        self.selector = selector

    def __len__(self) -> int:
        return len(self.selector.keys)

    def __getitem__(self, fileobj: Any) -> selectors.SelectorKey:
        try:
            return self.selector.keys[self.selector._fd(fileobj)]
        except (KeyError, ValueError):
            raise KeyError(f"{fileobj!r} is not registered") from None

    def __iter__(self) -> Iterator[int]:
        return iter(self.selector.keys)


def _open(key: selectors.SelectorKey) -> bool:
    """Whether key's file object still has key's fd: False once a file
    object (not a bare fd) registered has been closed."""
    if isinstance(key.fileobj, int):
        return True
    try:
        return bool(key.fileobj.fileno() == key.fd)
    except (AttributeError, OSError, ValueError):
        return False


def _interest(events: int) -> int:
    return ((_IN if events & selectors.EVENT_READ else 0)
            | (_OUT if events & selectors.EVENT_WRITE else 0))


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
                here.leave()
                try:
                    await _take_messages(loop, timeout)
                finally:
                    here.enter()
            if baton is not None and not holding:
                here.leave()
                try:
                    await baton.acquire(_LOOP)
                finally:
                    here.enter()
                holding = True
            if loop._otpvm_signals:
                _run_signal_handlers(loop)
            if baton is None:
                loop._run_once()  # type: ignore[attr-defined]
            else:
                await iterate(loop, baton, here)
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
