"""asyncio tasks as otpvm processes: the tasks of ``otpvm.aio.new_process_task_loop``.

Each task created on such a loop (``create_task``, ``gather``,
``TaskGroup``...) is a :class:`ProcessTask`: an asyncio future whose
coroutine is stepped by an otpvm process of its own (``task.pid``), not by
the loop's process.  Two things follow:

* **One at a time, until a step overruns.**  asyncio code may assume that
  nothing else runs between two of its awaits.  A baton keeps that promise:
  the loop's process holds it while it runs an iteration, a task's process
  while it runs a step, and the others wait for it as otpvm processes do,
  holding no thread.  But a step that runs longer than the VM's
  ``slice_limit`` without awaiting loses the baton to the next one waiting
  (the loop, whose timers are due): the spinning task goes on on its own
  scheduler thread, which otpvm already handed its run queue away from,
  while the loop and the other tasks run beside it.  So a task that spins
  100 ms delays a 1 ms ticker by about ``slice_limit`` plus, on a GIL
  build, CPython's switch interval (5 ms), not by 100 ms.  Until its next
  await, what the detached step does to asyncio objects is not serialised
  with the rest: the loop's own call_soon and timers are (they are handed
  to the loop's process), other objects are not.
* **A process, so supervised.**  A task ends its process as it ends: with
  ``'normal'`` for a result, ``('shutdown', 'cancelled')`` when cancelled,
  and the exception itself when it raised (no crash report is logged:
  asyncio keeps the exception for whoever awaits the task).  Links and
  monitors see that reason, so a supervisor restarts a task that crashed
  (``otpvm.aio.task_child_spec``).  A task whose process is killed (a
  supervisor's shutdown, ``exit(pid, 'kill')``) is cancelled, and its
  coroutine is closed in the loop's process.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import heapq
import itertools
import threading
import time
from asyncio import base_events, coroutines, futures
from asyncio import tasks as _tasks
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from otpvm._vm import Pid, _spend, receive, sleep, spawn, spawn_link
from otpvm._vm import exit as _exit
from otpvm._vm import self as _self_pid
from otpvm.terms import ANY, NotInProcessError, ProcessExit, Shared

if TYPE_CHECKING:
    from otpvm.aio import Loop

_BATON = ("$otpvm.aio", "baton")    # the baton may be free: look again
_STEP = ("$otpvm.aio", "step")      # a task's next step is due
_QUIT = ("$otpvm.aio", "quit")      # the loop is closed: the task's process ends
_LOOP = "loop"                      # the loop's process, as a baton holder
_names = itertools.count(1)


class Baton:
    """Who may run asyncio code of a loop now: the loop's process (``_LOOP``)
    or one task's process, or nobody.

    The loop's iteration runs callbacks; one of them may make a task's step
    due (the step is posted to the task's process).  On asyncio's loop that
    step would run inside the iteration, before the next one looks at I/O,
    so here the loop does not take the baton back while steps are ``due``:
    it lets them run first.  Otherwise waiters are served in arrival order.
    The first waiter takes the baton from a task whose step has held it for
    longer than ``limit`` seconds (see the module); that step is no longer
    due."""

    def __init__(self, loop: Loop, limit: float) -> None:
        self.loop = loop
        self.limit = limit
        self.lock = threading.Lock()
        # _LOOP, a ProcessTask or None.  A loop that is not running holds it
        # (on no thread): no task steps then, as on asyncio's loop.
        self.holder: Any = _LOOP
        self.thread = 0                  # the holder's thread
        self.since = 0.0                 # time.monotonic() when it took it
        self.waiters: collections.deque[tuple[Pid, Any]] = collections.deque()
        self.due = 0                     # task steps posted and not yet run (nor detached)
        self.sleeping: set[Pid] = set()  # waiters waiting for a wake-up message
        self.dirty = False               # a task added callbacks or timers for the loop

    def held_here(self) -> bool:
        """Whether the code calling runs for the holder, on its thread."""
        return self.holder is not None and self.thread == threading.get_ident()

    async def acquire(self, who: Any) -> None:
        """Waits (as a process) until ``who`` holds the baton."""
        me = _self_pid()
        entry = (me, who)
        queued = False
        try:
            while True:
                with self.lock:
                    wait = self._wait_time(entry)
                    if wait is not None and wait <= 0 and isinstance(self.holder, ProcessTask):
                        self._detach()
                    if self._may_take(entry):
                        if queued:
                            self.waiters.remove(entry)
                            queued = False
                        self._take(who)
                        return
                    if not queued:
                        self.waiters.append(entry)
                        queued = True
                        wait = self._wait_time(entry)
                    self.sleeping.add(me)
                await self._sleep(me, wait)
        finally:
            if queued:      # killed while waiting: the next one must not wait for us
                with self.lock:
                    self.waiters.remove(entry)
                    self.sleeping.discard(me)
                    self._wake(self._next_waiter())

    async def _sleep(self, me: Pid, wait: float | None) -> None:
        """Until woken by _wake, or for ``wait`` seconds; either way no
        wake-up message is left behind in the mailbox."""
        try:
            # A waiter that comes first after the holder overran has a wait
            # below 0: it looks again at once, and takes the baton then.
            await receive(_BATON, timeout=None if wait is None else max(0.0, wait))
            return
        except TimeoutError:
            pass
        with self.lock:
            woken = me not in self.sleeping     # _wake posted under the lock
            self.sleeping.discard(me)
        if woken:
            await receive(_BATON, timeout=0)

    def release(self, who: Any) -> None:
        """``who`` is done with the baton (nothing if it lost it meanwhile)."""
        with self.lock:
            if self.holder is not who:
                return
            self.holder = None
            self._wake(self._next_waiter())
            wake_loop = self.dirty and who is not _LOOP
            self.dirty = False
        pid = self.loop._otpvm_pid
        if wake_loop and pid is not None:
            from otpvm.aio import _WAKE
            self.loop._otpvm_vm._post(pid, _WAKE)

    def step_posted(self, task: ProcessTask) -> None:
        """The loop made a step of ``task`` due."""
        with self.lock:
            if not task._otpvm_due:
                task._otpvm_due = True
                self.due += 1

    def step_over(self, task: ProcessTask) -> None:
        """``task``'s due step has run (or never will: its process ended)."""
        with self.lock:
            if not task._otpvm_due:
                return
            task._otpvm_due = False
            self.due -= 1
            if self.due == 0 and self.holder is None:
                self._wake(self._next_waiter())

    def resume(self) -> None:
        """The loop starts running: its process holds the baton it kept."""
        with self.lock:
            assert self.holder is _LOOP, self.holder
            self._take(_LOOP)

    def park(self, holding: bool) -> None:
        """The loop stops running (its process holding the baton, unless it
        was ended while it waited): the baton stays with the stopped loop."""
        with self.lock:
            if holding or self.holder is None:
                self.holder = _LOOP
            self.thread = 0

    def still_held(self, task: ProcessTask) -> bool:
        """At the end of a step: whether ``task`` kept the baton through it
        (the step then leaves asyncio's current task)."""
        with self.lock:
            if self.holder is not task:
                return False
            _tasks._leave_task(self.loop, task)
            return True

    # -- under self.lock -------------------------------------------------------

    def _may_take(self, entry: tuple[Pid, Any]) -> bool:
        if self.holder is not None or (entry[1] is _LOOP and self.due):
            return False
        for waiter in self.waiters:
            if waiter == entry:
                return True
            if not (waiter[1] is _LOOP and self.due):   # one before us that may take it
                return False
        return True

    def _next_waiter(self) -> Pid | None:
        """The waiter to tell that the baton is free."""
        for pid, who in self.waiters:
            if not (who is _LOOP and self.due):
                return pid
        return None

    def _wait_time(self, entry: tuple[Pid, Any]) -> float | None:
        """How long the first waiter sleeps at most: until it may take the
        baton from the holding task, or, while nobody holds it, ``limit``
        (a task may take it meanwhile, and nobody tells the first waiter
        so: it then looks again).  None: until woken."""
        if not (self.waiters and self.waiters[0] == entry) or self.holder is _LOOP:
            return None
        if self.holder is None:
            return self.limit
        return self.since + self.limit - time.monotonic()

    def _take(self, who: Any) -> None:
        self.holder = who
        self.thread = threading.get_ident()
        self.since = time.monotonic()
        self.loop._thread_id = self.thread  # type: ignore[attr-defined]

    def _detach(self) -> None:
        """The holding task overran: it goes on without the baton, and its
        step is no longer due."""
        task = self.holder
        _tasks._leave_task(self.loop, task)
        task._otpvm_detached_steps += 1
        if task._otpvm_due:
            task._otpvm_due = False
            self.due -= 1
        self.holder = None

    def _wake(self, pid: Pid | None) -> None:
        """Wakes a waiter that sleeps (one message per sleep)."""
        if pid is not None and pid in self.sleeping:
            self.sleeping.discard(pid)
            self.loop._otpvm_vm._post(pid, _BATON)


class ProcessTask(asyncio.Future):  # type: ignore[type-arg]
    """An asyncio task whose coroutine runs in an otpvm process of its own
    (``pid``); asyncio's Task API (``cancel``, ``cancelling``,
    ``uncancel``, names, ``get_coro``, ``get_context``).  Created by
    ``create_task`` on a loop from ``otpvm.aio.new_process_task_loop``."""

    def __init__(self, coro: Coroutine[Any, Any, Any], *, loop: Loop,
                 name: str | None = None, context: contextvars.Context | None = None,
                 link: bool = False) -> None:
        if not coroutines.iscoroutine(coro):
            raise TypeError(f"a coroutine was expected, got {coro!r}")
        if loop._otpvm_baton is None:
            raise RuntimeError("process tasks need a loop from otpvm.aio.new_process_task_loop()")
        super().__init__(loop=loop)
        self._coro = coro
        self._context = context if context is not None else contextvars.copy_context()
        self._name = str(name) if name is not None else f"ProcessTask-{next(_names)}"
        self._fut_waiter: asyncio.Future[Any] | None = None
        self._must_cancel = False
        self._cancel_message: Any = None
        self._num_cancels_requested = 0
        self._otpvm_detached_steps = 0
        self._otpvm_due = False             # a step is due (see Baton)
        self._otpvm_mailbox: collections.deque[Any] = collections.deque()
        self._otpvm_waiters: list[tuple[Any, asyncio.Future[Any]]] = []
        body = Shared(self)
        if link:
            self.pid: Pid = spawn_link(_task_body, body)
        else:
            try:
                self.pid = spawn(_task_body, body)
            except NotInProcessError:
                self.pid = loop._otpvm_vm.spawn(_task_body, body)
        loop._otpvm_tasks[self.pid] = self
        _tasks._register_task(self)  # type: ignore[arg-type]
        loop.call_soon(self._otpvm_schedule_step, context=self._context)

    # -- asyncio's Task API ----------------------------------------------------

    def __repr__(self) -> str:
        state = "cancelled" if self.cancelled() else "finished" if self.done() else "pending"
        return f"<ProcessTask {state} name={self._name!r} pid={self.pid} coro={self._coro!r}>"

    def get_coro(self) -> Coroutine[Any, Any, Any]:
        return self._coro

    def get_context(self) -> contextvars.Context:
        return self._context

    def get_name(self) -> str:
        return self._name

    def set_name(self, value: object) -> None:
        self._name = str(value)

    def get_stack(self, *, limit: int | None = None) -> list[Any]:
        return _tasks.base_tasks._task_get_stack(self, limit)  # type: ignore[attr-defined]

    def print_stack(self, *, limit: int | None = None, file: Any = None) -> None:
        _tasks.base_tasks._task_print_stack(self, limit, file)  # type: ignore[attr-defined]

    def cancelling(self) -> int:
        return self._num_cancels_requested

    def uncancel(self) -> int:
        if self._num_cancels_requested > 0:
            self._num_cancels_requested -= 1
            if self._num_cancels_requested == 0:
                self._must_cancel = False
        return self._num_cancels_requested

    def cancel(self, msg: Any = None) -> bool:
        """As ``asyncio.Task.cancel``: the coroutine gets CancelledError at
        its await (or at its next one, if it is running now)."""
        self._log_traceback = False
        if self.done():
            return False
        self._num_cancels_requested += 1
        if self._fut_waiter is not None and self._fut_waiter.cancel(msg=msg):
            return True
        self._must_cancel = True
        self._cancel_message = msg
        return True

    def set_result(self, result: Any) -> None:
        raise RuntimeError("ProcessTask does not support set_result()")

    def set_exception(self, exception: Any) -> None:
        raise RuntimeError("ProcessTask does not support set_exception()")

    # -- the steps, in the task's process ----------------------------------

    def _otpvm_schedule_step(self, _: Any = None) -> None:
        """A step is due (the task starts, or what it awaited is done): a
        callback, run by the loop's process."""
        loop: Loop = self._loop  # type: ignore[attr-defined, assignment]
        baton: Baton = loop._otpvm_baton  # type: ignore[assignment]
        baton.step_posted(self)
        if not loop._otpvm_vm._post(self.pid, _STEP):
            baton.step_over(self)   # its process has ended: no step will come

    async def _otpvm_step(self) -> None:
        """One step, as asyncio's Task.__step: resume the coroutine with what
        it awaited, then act on what it yields; holding the baton."""
        loop: Loop = self._loop  # type: ignore[attr-defined, assignment]
        baton: Baton = loop._otpvm_baton  # type: ignore[assignment]
        await baton.acquire(self)
        exc: BaseException | None = None
        waited, self._fut_waiter = self._fut_waiter, None
        if waited is not None:
            try:
                waited.result()
            except BaseException as e:  # noqa: BLE001 - thrown into the coroutine
                exc = e
        if self._must_cancel:
            exc = self._make_cancelled_error()  # type: ignore[attr-defined]
            self._must_cancel = False
        from otpvm.aio import _OnThisThread
        here = _OnThisThread(loop)
        here.enter()
        _tasks._enter_task(loop, self)  # type: ignore[arg-type]
        outcome: tuple[str, Any]
        try:
            if exc is None:
                outcome = ("yield", self._context.run(self._coro.send, None))
            else:
                outcome = ("yield", self._context.run(self._coro.throw, exc))
        except StopIteration as e:
            outcome = ("result", e.value)
        except asyncio.CancelledError as e:
            outcome = ("cancelled", e)
        except ProcessExit:
            if self._otpvm_end_step(baton, here):
                baton.release(self)
            raise                     # the process is ending (killed, or otpvm.exit)
        except BaseException as e:  # noqa: BLE001 - the task's outcome
            outcome = ("exception", e)
        if not self._otpvm_end_step(baton, here):
            await baton.acquire(self)
        try:
            self._otpvm_settle(*outcome)
        finally:
            baton.step_over(self)
            baton.release(self)
        if outcome[0] == "exception" and isinstance(outcome[1], (KeyboardInterrupt, SystemExit)):
            raise outcome[1]

    def _otpvm_end_step(self, baton: Baton, here: Any) -> bool:
        kept = baton.still_held(self)
        here.leave()
        return kept

    def _otpvm_settle(self, kind: str, value: Any) -> None:
        """Acts on a step's outcome (holding the baton)."""
        if kind == "result":
            if self._must_cancel:
                self._must_cancel = False
                asyncio.Future.cancel(self, msg=self._cancel_message)
            else:
                asyncio.Future.set_result(self, value)
        elif kind == "cancelled":
            asyncio.Future.cancel(self, msg=value.args[0] if value.args else None)
        elif kind == "exception":
            asyncio.Future.set_exception(self, value)
        else:
            self._otpvm_awaits(value)

    def _otpvm_awaits(self, result: Any) -> None:
        """The coroutine yielded ``result``: wait for it, as Task.__step does."""
        blocking = getattr(result, "_asyncio_future_blocking", None)
        error: BaseException | None = None
        if blocking is not None:
            if futures._get_loop(result) is not self._loop:  # type: ignore[attr-defined]
                error = RuntimeError(f"Task {self!r} got Future {result!r} attached to a "
                                     f"different loop")
            elif not blocking:
                error = RuntimeError(f"yield was used instead of yield from in task "
                                     f"{self!r} with {result!r}")
            elif result is self:
                error = RuntimeError(f"Task cannot await on itself: {self!r}")
            else:
                result._asyncio_future_blocking = False
                self._fut_waiter = result
                result.add_done_callback(self._otpvm_schedule_step, context=self._context)
                if self._must_cancel and result.cancel(msg=self._cancel_message):
                    self._must_cancel = False
                return
        elif result is None:        # a bare yield (asyncio.sleep(0)): step again soon
            self._loop.call_soon(self._otpvm_schedule_step, context=self._context)
            return
        else:
            error = RuntimeError(f"Task got bad yield: {result!r} (asyncio code on an otpvm.aio "
                                 f"loop awaits asyncio's awaitables; otpvm's own, such as "
                                 f"otpvm.receive, are for otpvm processes: use "
                                 f"otpvm.aio.receive_message)")
        # Thrown into the coroutine at its next step, as asyncio does.
        waiter = self._loop.create_future()
        waiter.set_exception(error)
        self._fut_waiter = waiter
        self._loop.call_soon(self._otpvm_schedule_step, context=self._context)

    def _otpvm_abandon(self) -> None:
        """The task's process was killed: its coroutine is closed here, in
        the loop's process, and the task cancelled."""
        try:
            self._coro.close()
        finally:
            if not self.done():
                asyncio.Future.cancel(self, msg="the task's process was killed")


async def _task_body(box: Shared) -> None:
    """A ProcessTask's process: a step per wake-up; messages for the
    task's asyncio code are delivered under the baton."""
    task: ProcessTask = box.value
    from otpvm.aio import _deliver
    baton: Baton = task._loop._otpvm_baton  # type: ignore[attr-defined]
    try:
        while not task.done():
            msg = await receive(ANY)
            if msg is _STEP:
                await task._otpvm_step()
            elif msg is _QUIT:
                break
            elif msg is not _BATON:
                await baton.acquire(task)
                try:
                    _deliver(task, msg)
                finally:
                    baton.release(task)
    finally:
        baton.step_over(task)
        task._loop._otpvm_tasks.pop(task.pid, None)  # type: ignore[attr-defined]
        if not task.done():
            _abandon(task)
    if not task.done() or task.cancelled():
        _exit(("shutdown", "cancelled"))
    failure = task.exception()
    if failure is not None:
        _exit(failure)


def _abandon(task: ProcessTask) -> None:
    loop = task.get_loop()
    try:
        loop.call_soon_threadsafe(task._otpvm_abandon)
    except RuntimeError:        # the loop is closed: nobody else will run it
        try:
            task._otpvm_abandon()
        except RuntimeError:    # its done callbacks cannot be scheduled any more
            pass


def begin_iteration(loop: Loop) -> int:
    """The first half of asyncio's ``BaseEventLoop._run_once`` (3.11 to
    3.13), whose select never waits here (the loop's process waited
    before): cancelled timers dropped, I/O events and due timers made
    ready.  Returns how many ready callbacks this iteration runs (those
    that callbacks add run in the next one, as on asyncio's loop)."""
    _drop_cancelled_timers(loop)
    loop._process_events(loop._selector.select(0))  # type: ignore[attr-defined]
    scheduled = loop._scheduled  # type: ignore[attr-defined]
    ready = loop._ready  # type: ignore[attr-defined]
    end_time = loop.time() + loop._clock_resolution  # type: ignore[attr-defined]
    while scheduled and scheduled[0]._when < end_time:
        handle = heapq.heappop(scheduled)
        handle._scheduled = False
        ready.append(handle)
    return len(ready)


def run_handles(loop: Loop, todo: int, baton: Baton | None) -> int:
    """The second half of ``_run_once``: runs the first ``todo`` ready
    callbacks, each charged to the loop's process as a reduction, and stops
    early when its slice is over (it must yield, or otpvm would report the
    whole iteration as one callback that overran) or, on a process-task
    loop, when a callback made a task step due (on asyncio's loop that step
    would run before the next callback).  Returns how many are left."""
    ready = loop._ready  # type: ignore[attr-defined]
    while todo:
        todo -= 1
        handle = ready.popleft()
        if handle._cancelled:
            continue
        if loop._debug:  # type: ignore[attr-defined]
            _run_timed(loop, handle)
        else:
            handle._run()
        if _spend(1) or (baton is not None and baton.due):
            break
    return todo


async def pause(baton: Baton | None, here: Any) -> None:
    """Between two callbacks of an iteration that run_handles stopped: the
    due task steps run (the loop hands the baton over and takes it back
    once no step is due), or the loop's process yields its thread.  ``here``
    is the loop's _OnThisThread: the process may resume on another thread."""
    here.leave()
    try:
        if baton is not None and baton.due:
            baton.release(_LOOP)
            await baton.acquire(_LOOP)
        else:
            await sleep(0)
    finally:
        here.enter()


def _drop_cancelled_timers(loop: Any) -> None:
    """As _run_once: cancelled timers leave the heap, all at once when
    they are many."""
    scheduled = loop._scheduled
    if (len(scheduled) > base_events._MIN_SCHEDULED_TIMER_HANDLES  # type: ignore[attr-defined]
            and loop._timer_cancelled_count / len(scheduled)
            > base_events._MIN_CANCELLED_TIMER_HANDLES_FRACTION):  # type: ignore[attr-defined]
        kept = []
        for handle in scheduled:
            if handle._cancelled:
                handle._scheduled = False
            else:
                kept.append(handle)
        heapq.heapify(kept)
        loop._scheduled = kept
        loop._timer_cancelled_count = 0
    else:
        while scheduled and scheduled[0]._cancelled:
            loop._timer_cancelled_count -= 1
            heapq.heappop(scheduled)._scheduled = False


def _run_timed(loop: Any, handle: Any) -> None:
    """A callback in debug mode: a slow one is logged, as by _run_once."""
    try:
        loop._current_handle = handle
        t0 = loop.time()
        handle._run()
        dt = loop.time() - t0
        if dt >= loop.slow_callback_duration:
            text = base_events._format_handle(handle)  # type: ignore[attr-defined]
            base_events.logger.warning(  # type: ignore[attr-defined]
                "Executing %s took %.3f seconds", text, dt)
    finally:
        loop._current_handle = None


def task_factory(loop: Loop, coro: Coroutine[Any, Any, Any], **kwargs: Any) -> ProcessTask:
    """The task factory of a process-task loop (``loop.set_task_factory``)."""
    kwargs.pop("eager_start", None)
    return ProcessTask(coro, loop=loop, **kwargs)


async def start_task_link(start: Shared) -> Pid:
    """A supervisor child's start: the task ``fn(*args)`` on ``loop``,
    linked to the caller (the supervisor); returns its pid."""
    loop, fn, args = start.value
    return ProcessTask(fn(*args), loop=loop, link=True).pid

