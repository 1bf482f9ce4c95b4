"""Tasks: run one function in its own process and collect its result, like
Elixir's ``Task``.

::

    t = task.async_(fetch, url)            # starts now, linked to the caller
    ...                                    # do something else meanwhile
    body = await task.await_(t, timeout=5)

``async_`` spawns a process that is linked to the caller (its *owner*) and
monitored by it, atomically; the process runs ``fn(*args)`` (an ``async
def`` or a plain function) and sends its result back as ``(ref, result)``.
Only the owner may await a task.

What happens when things go wrong follows Elixir, with one deliberate
difference:

* The task crashes: the link propagates the crash to the owner, which dies
  with the same reason — unless the owner traps exits, in which case
  ``await_`` raises ``TaskExit`` carrying the task's exit reason (and, as in
  Elixir, the owner also finds ``Exit(pid, reason)`` in its mailbox).
* ``await_`` times out: Elixir exits the caller (which takes the task down
  through the link).  Here ``await_`` raises ``TimeoutError`` and the task
  keeps running: the owner can await it again, ``yield_`` it, or
  ``shutdown`` it.  Raising lets the caller decide, which is what Python
  code expects from a timeout.
* ``yield_`` times out: it returns ``default`` (None) and the task keeps
  running, as Elixir's ``Task.yield``.

After a successful ``await_``/``yield_`` nothing about the task is left in
the owner's mailbox: the result is taken, the monitor's ``Down`` flushed,
and the reply tag (an alias) deactivated.  A task exits ``'normal'``, so an
owner that does not trap exits sees nothing of the link either; one that
traps exits gets ``Exit(pid, 'normal')``, as in Elixir.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from otpvm import supervisor as _supervisor
from otpvm._vm import copy_message
from otpvm.kernel import (
    Pid,
    Ref,
    alias,
    demonitor,
    exit,
    monitor,
    process_info,
    receive,
    send,
    send_alias,
    spawn,
    spawn_handler,
    unalias,
    unlink,
)
from otpvm.kernel import self as _me
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags
from otpvm.terms import ANY, AnyOf, Down, Exit

__all__ = ["Task", "TaskExit", "TaskOwnerError", "async_", "await_", "await_many",
           "shutdown", "start", "yield_"]


class Task(NamedTuple):
    """A running task: its ``pid``, the ``ref`` its result is tagged with,
    the ``owner`` that may await it, and the ``mref`` of the owner's monitor.

    A tuple of immutable values, so it can be sent to other processes (but
    only the owner can await it).
    """

    pid: Pid
    ref: Ref
    owner: Pid
    mref: Ref


class TaskExit(Exception):
    """The task ended without a result; ``reason`` is its exit reason (the
    exception it crashed with, ``'killed'``, ``'noproc'``, ...)."""

    def __init__(self, task: Task, reason: Any) -> None:
        super().__init__(task, reason)
        self.task = task
        self.reason = reason

    def __str__(self) -> str:
        return f"task {self.task.pid!r} exited with {self.reason!r}"


class TaskOwnerError(RuntimeError):
    """A task was awaited (or shut down) by a process that does not own it."""


class _Runner:
    """The task process: runs fn, sends the result to the owner's alias."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], owner: Pid | None,
                 ref: Ref | None) -> None:
        self.fn = fn
        self.args = args
        self.owner = owner
        self.ref = ref

    go: bool = False

    def start(self) -> Any:
        if self.go:
            return self._after_go()
        result = self.fn(*self.args)
        if inspect.isawaitable(result):
            return self._finish_async(result)
        self._finish(result)

    async def _after_go(self) -> None:
        """Supervised tasks wait until the owner monitors them: otherwise a
        task that crashed at once would be reported as noproc."""
        await receive(("$go", self.ref))
        self.go = False
        more = self.start()
        if more is not None:
            await more

    async def _finish_async(self, pending: Any) -> None:
        self._finish(await pending)

    def _finish(self, result: Any) -> None:
        if self.owner is not None and self.ref is not None:
            send_alias(self.owner, self.ref, (self.ref, result))
        exit("normal")

    def handle_message(self, msg: Any) -> None:   # never reached: start exits
        """Unused: the task ends when ``start`` does."""


def async_(fn: Callable[..., Any], *args: Any) -> Task:
    """Starts a task running ``fn(*args)``, linked to and monitored by the caller."""
    me = _me()
    ref = alias()        # made first: a receive on it scans only later messages
    runner = _Runner(fn, copy_message(args), me, ref)
    pid, mref = spawn_handler(runner, link=True, monitor=True)
    return Task(pid, ref, me, mref)


def start(fn: Callable[..., Any], *args: Any) -> Pid:
    """Elixir's ``Task.start``: runs ``fn(*args)`` in a process that nobody
    links to or awaits (fire and forget).  Returns its pid."""
    return spawn(_run_detached, fn, args)


async def _run_detached(fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    result = fn(*args)
    if inspect.isawaitable(result):
        await result


def _check_owner(task: Task, call: str) -> None:
    if not isinstance(task, Task):
        raise TypeError(f"task.{call}() needs a Task, not {task!r}")
    me = _me()
    if task.owner != me:
        raise TaskOwnerError(f"task {task.pid!r} is owned by {task.owner!r}; "
                             f"{me!r} cannot {call} it")


def _done(task: Task) -> None:
    """The result is in: forget the alias and the monitor (flushing its Down)."""
    unalias(task.ref)
    demonitor(task.mref, flush=True)


async def _outcome(task: Task, timeout: float | None) -> Any:
    """The result message, or raises TaskExit / TimeoutError."""
    msg = await receive(AnyOf((task.ref, ANY), Down(task.mref, ANY, ANY)), timeout=timeout)
    if type(msg) is Down:
        unalias(task.ref)
        reason = msg.reason
        if isinstance(reason, BaseException):
            raise TaskExit(task, reason) from reason
        raise TaskExit(task, reason)
    _done(task)
    return msg[1]


async def await_(task: Task, timeout: float | None = 5.0) -> Any:
    """The task's result, waiting up to ``timeout`` seconds (None: forever).

    Raises ``TaskExit`` if the task ended without a result (only seen when
    the owner traps exits: otherwise the crash ends the owner too),
    ``TimeoutError`` on timeout (the task keeps running), and
    ``TaskOwnerError`` if the caller is not the task's owner.
    """
    _check_owner(task, "await")
    try:
        return await _outcome(task, timeout)
    except TimeoutError:
        raise TimeoutError(f"task {task.pid!r} gave no result within {timeout} s") from None


async def yield_(task: Task, timeout: float | None = 5.0, default: Any = None) -> Any:
    """Like ``await_``, but returns ``default`` on timeout (pass a sentinel
    to tell a timeout from a task that returned None); the task keeps
    running and can be yielded or awaited again."""
    _check_owner(task, "yield")
    try:
        return await _outcome(task, timeout)
    except TimeoutError:
        return default


async def await_many(tasks: Iterable[Task], timeout: float | None = 5.0) -> list[Any]:
    """The results of all the tasks, in order, within one overall timeout.

    Raises ``TaskExit`` for the first task found to have exited without a
    result, and ``TimeoutError`` if they are not all done in time (the
    unfinished ones keep running; those already done are collected).
    """
    tasks = list(tasks)
    for t in tasks:
        _check_owner(t, "await")
    deadline = None if timeout is None else time.monotonic() + timeout
    results: dict[int, Any] = {}
    index = {t.ref: i for i, t in enumerate(tasks)}
    index.update({t.mref: i for i, t in enumerate(tasks)})
    while len(results) < len(tasks):
        pending = [t for i, t in enumerate(tasks) if i not in results]
        pattern = AnyOf(*[(t.ref, ANY) for t in pending],
                        *[Down(t.mref, ANY, ANY) for t in pending])
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            msg = await receive(pattern, timeout=left)
        except TimeoutError:
            raise TimeoutError(f"{len(pending)} of {len(tasks)} tasks gave no result "
                               f"within {timeout} s") from None
        i = index[msg[0]]
        t = tasks[i]
        if type(msg) is Down:
            unalias(t.ref)
            if isinstance(msg.reason, BaseException):
                raise TaskExit(t, msg.reason) from msg.reason
            raise TaskExit(t, msg.reason)
        _done(t)
        results[i] = msg[1]
    return [results[i] for i in range(len(tasks))]


async def shutdown(task: Task, timeout: float | None = None) -> Any:
    """Stops the task and returns its result if it had already sent it, else None.

    The task is unlinked first, so stopping it does not reach the owner,
    and shutdown waits until the task is gone.  With ``timeout=None`` it is
    killed at once (``'brutal_kill'``); otherwise it is sent ``'shutdown'``
    and killed if it has not ended after ``timeout`` seconds.  Raises
    ``TaskExit`` if the task had crashed before it was stopped (seen only
    when the owner traps exits).  Shutdown takes over the link: an
    ``Exit`` the link already delivered to a trapping owner is flushed.
    Shutting down a task already awaited returns None.
    """
    _check_owner(task, "shut down")
    unlink(task.pid)
    mon = monitor(task.pid)      # the task's own monitor may be gone (awaited)
    exit(task.pid, "kill" if timeout is None else "shutdown")
    # A Down for the task's monitor, already there, carries the real reason.
    down = AnyOf(Down(task.mref, ANY, ANY), Down(mon, ANY, ANY))
    try:
        msg = await receive(AnyOf((task.ref, ANY), *down), timeout=timeout)
    except TimeoutError:
        exit(task.pid, "kill")
        msg = await receive(AnyOf((task.ref, ANY), *down))
    unalias(task.ref)
    got_result = type(msg) is not Down
    result = msg[1] if got_result else None
    if got_result:
        msg = await receive(down)        # it was killed: its Down follows at once
    demonitor(task.mref, flush=True)
    demonitor(mon, flush=True)
    info = process_info(_me())
    if info is not None and info["trap_exit"]:
        try:                             # the link's Exit precedes the Downs
            await receive(Exit(task.pid, ANY), timeout=0)
        except TimeoutError:
            pass
    reason = msg.reason
    if got_result:
        return result
    if isinstance(reason, BaseException):
        raise TaskExit(task, reason) from reason
    if reason in ("killed", "shutdown", "normal", "noproc"):
        return None
    raise TaskExit(task, reason)


# -- supervised tasks (Elixir's Task.Supervisor) ---------------------------------


class _TaskSupervisor(Supervisor):
    """simple_one_for_one over temporary task processes."""

    def init(self, args: Any) -> Any:
        return SupFlags("simple_one_for_one", intensity=3, period=5), [
            ChildSpec("task", (_start_supervised, ()), restart="temporary", shutdown=5.0)]


async def _start_supervised(owner: Pid | None, ref: Ref | None, fn: Callable[..., Any],
                            args: tuple[Any, ...]) -> Pid:
    runner = _Runner(fn, args, owner, ref)
    runner.go = owner is not None
    pid: Pid = spawn_handler(runner, link=True)
    return pid


async def supervisor_start_link(name: str | None = None) -> Pid:
    """Starts a task supervisor (put it in your tree: its tasks are
    temporary children, shut down with it)."""
    return await _supervisor.start_link(_TaskSupervisor, None, name=name)


async def async_nolink(sup: Pid | str, fn: Callable[..., Any], *args: Any) -> Task:
    """Starts a task under a task supervisor, monitored but not linked: a
    crash does not take the caller down; ``await_`` raises TaskExit instead."""
    me = _me()
    ref = alias()
    pid = await _supervisor.start_child(sup, (me, ref, fn, args))
    assert pid is not None
    mref = monitor(pid)
    send(pid, ("$go", ref))
    return Task(pid, ref, me, mref)


async def start_child(sup: Pid | str, fn: Callable[..., Any], *args: Any) -> Pid:
    """Starts a fire-and-forget task under a task supervisor."""
    pid = await _supervisor.start_child(sup, (None, None, fn, args))
    assert pid is not None
    return pid
