"""``concurrent.futures`` on otpvm: an Executor whose jobs are processes.

Change one line::

    from concurrent.futures import ThreadPoolExecutor as Executor
    from otpvm.futures import Executor          # instead

and every job becomes an otpvm process (``future.pid``), with CPython's
executor semantics (``submit``, ``map``, ``shutdown(wait, cancel_futures)``,
``initializer``, a broken executor after a failed initializer).

* An ``async def`` job is awaited inside its process and holds no thread
  while it waits: 100,000 of them need no more OS threads than one.  It may
  await what a process may await (``otpvm.sleep``, ``otpvm.receive``,
  ``otpvm.run_blocking``...), not asyncio.
* A plain (sync) job is called on one of the executor's blocking threads, at
  most ``max_workers`` of them (default ``min(32, cpu_count + 4)``, as
  ThreadPoolExecutor's), while its process waits for the outcome as a
  message.  A sync function may block (``time.sleep``, I/O, locks): it never
  holds a scheduler thread.  A bounded pool of reused threads was chosen over
  ``otpvm.run_blocking`` (a new thread per call): it keeps the thread count
  at ``max_workers`` as ThreadPoolExecutor does, runs ``initializer`` once
  per thread as ThreadPoolExecutor does (thread-local set-ups work), and
  does not pay for a thread start per job.  A sync function that returns a
  coroutine has that coroutine awaited in its process.

``max_workers`` bounds the jobs running at once, of either kind; left at
None, async jobs are not bounded (only sync ones are, by the thread pool).
Jobs beyond the bound wait in the executor, pending and cancellable.

Share-nothing: otpvm copies every message, and a Future, a lock or a
closure's cell cannot travel in one.  This module hands each job (the
function, its arguments and its Future) to its process by reference, through
``VM._post`` (``grep _post``): ``_give`` below, and a blocking thread's reply
to the job's process, which may carry the coroutine a sync function returned
and its Future.  Nothing else reaches a job's process by reference.  The
job's arguments and result are therefore *not* copied, exactly as with
ThreadPoolExecutor.
"""

from __future__ import annotations

import concurrent.futures
import inspect
import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from otpvm._vm import VM, Pid, make_ref, receive, sleep
from otpvm._vm import self as _self_pid
from otpvm.kernel import default_vm
from otpvm.terms import ANY, ProcessExit

__all__ = ["BrokenExecutor", "Executor", "Future"]

# Where ThreadPoolExecutor reports a failed initializer: code (and CPython's
# tests) that listen for it there hear ours too.
_LOGGER = logging.getLogger("concurrent.futures")

# A blocking thread idle this long ends (another starts when needed), so that
# an executor nobody shuts down does not keep threads for ever.
_IDLE_S = 10.0


class BrokenExecutor(concurrent.futures.BrokenExecutor):
    """An initializer failed (or the executor's VM stopped under it): the
    executor takes no more jobs, and the jobs it still held fail with this."""


class Future(concurrent.futures.Future):  # type: ignore[type-arg]
    """A ``concurrent.futures.Future`` that knows its job's process.

    ``pid`` is None while the job waits for its turn, then the
    :class:`otpvm.Pid` of the process that runs it (it stays set after the
    job ends): link to it, monitor it, or kill it (``exit(pid, 'kill')``
    fails the future with ``ProcessExit('killed')`` for an async job; a
    sync job's call, already on its thread, still completes the future).
    """

    pid: Pid | None = None


class _Job:
    """One submitted call, handed to its process by reference."""

    __slots__ = ("executor", "future", "fn", "args", "kwargs", "is_async")

    def __init__(self, executor: Executor, future: Future, fn: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.executor = executor
        self.future: Future | None = future     # None once handed to who settles it
        self.fn: Callable[..., Any] | None = fn
        self.args = args
        self.kwargs = kwargs
        self.is_async = inspect.iscoroutinefunction(fn)

    def drop(self) -> None:
        """Forgets the call once it ran (no stale references to its
        arguments, as ThreadPoolExecutor's work items)."""
        self.fn = None
        self.args = ()
        self.kwargs = {}

    async def run(self) -> None:
        """The job's process: runs the job, then frees its place."""
        ex = self.executor
        try:
            await self.settle()
        except BaseException:
            # Ended by a kill or exit (GeneratorExit, ProcessExit): no await
            # from here, so the place is freed the blocking way.
            ex._run_queue([self])
            raise
        await ex._run_queue_in_process(self)

    async def settle(self) -> None:
        """Runs the call and settles the future.  Who settles it lets go of
        it first (``self.future = None``, locals deleted), so that a result
        read from the future is not kept alive by the job (CPython's
        test_free_reference)."""
        ex = self.executor
        if self.is_async:
            fut = self.future
            assert fut is not None and self.fn is not None
            if not fut.set_running_or_notify_cancel():
                return
            try:
                coro = self.fn(*self.args, **self.kwargs)
            except BaseException as exc:
                self.future = None
                fut.set_exception(exc)
                return
            finally:
                self.drop()
        else:
            ref = make_ref()
            if not await ex._queue_call(self, _self_pid(), ref):
                return
            _, reply = await receive((ref, ANY))    # the thread's reply
            if reply is None:                       # the thread settled the future
                return
            coro, fut = reply                       # fn returned a coroutine
            del reply
        self.future = None
        try:
            value = await coro
        except (GeneratorExit, ProcessExit) as exc:
            # The process is being ended (a kill, the VM stopping, or
            # otpvm.exit() in the job): the future says so; the process
            # ends as asked.
            fut.set_exception(exc if isinstance(exc, ProcessExit) else ProcessExit("killed"))
            raise
        except BaseException as exc:
            fut.set_exception(exc)
        else:
            fut.set_result(value)
            del value
        del fut, coro


async def _acquire(lock: threading.Lock) -> None:
    """Takes the executor's lock from a process without blocking its
    scheduler thread: a thread holding it may be waiting for the GIL, and a
    blocked scheduler thread is a long_schedule.  The process yields to the
    others between tries."""
    while not lock.acquire(blocking=False):
        await sleep(0)


def _settle(fut: Future, value: Any, failed: bool) -> None:
    """A blocking thread settles a future, unless something settled it
    meanwhile (its VM stopped: see ``Executor.shutdown``)."""
    try:
        if failed:
            fut.set_exception(value)
        else:
            fut.set_result(value)
    except concurrent.futures.InvalidStateError:
        pass


def _fail(job: _Job, exc: BaseException) -> None:
    """Fails a job that has not run (unless it was cancelled)."""
    fut, job.future = job.future, None
    if fut is not None and fut.set_running_or_notify_cancel():
        fut.set_exception(exc)


async def _job_process() -> None:
    """The body of every job's process: it takes its job from its mailbox,
    where ``_give`` put it by reference, and runs it."""
    job = await receive(ANY)
    await job.run()


def _give(vm: VM, pid: Pid, job: _Job) -> None:
    """The by-reference path: delivers the job object itself, not a copy, to
    its process (``VM._post``).  The job holds a Future and a lock-bearing
    executor, which share-nothing messages could not carry; only the job's
    own process ever sees it."""
    vm._post(pid, job)


class Executor(concurrent.futures.Executor):
    """A ``concurrent.futures.Executor`` that runs each job as an otpvm process.

    ``Executor(max_workers=None, *, initializer=None, initargs=(), vm=None)``:

    * ``max_workers``: at most this many jobs run at once (async or sync), and
      at most this many blocking threads run sync jobs; None: async jobs are
      not bounded and sync jobs get ``min(32, os.cpu_count() + 4)`` threads.
    * ``initializer(*initargs)`` runs at the start of each blocking thread,
      before any job (as ThreadPoolExecutor's), and once before the first job
      of any kind starts.  If it raises, it is logged (CRITICAL, on the
      ``concurrent.futures`` logger), the executor is broken: pending jobs fail
      and ``submit`` raises :class:`BrokenExecutor`.
    * ``vm``: the VM the jobs run in; None uses ``otpvm.default_vm()``, shared
      by otpvm's facades.  Stopping that VM fails the jobs that had not ended.

    See the module's docstring for how async and sync jobs run.
    """

    def __init__(self, max_workers: int | None = None, *,
                 initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = (), vm: VM | None = None) -> None:
        if max_workers is not None and max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        self._vm = vm if vm is not None else default_vm()
        self._max = max_workers
        self._threads_max = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._initializer = initializer
        self._initargs = initargs
        self._lock = threading.Lock()
        self._idle_cond = threading.Condition(self._lock)
        self._pending: deque[_Job] = deque()    # jobs waiting for their turn
        self._live: set[_Job] = set()           # jobs whose process was started
        self._active = 0                        # jobs counted against max_workers
        # The blocking threads' own lock (order: _lock, then _tlock), so that
        # sync jobs queueing their calls do not contend with submit().
        self._tlock = threading.Lock()          # guards the four below
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()  # sync calls for threads
        self._threads: list[threading.Thread] = []
        self._idle = 0                          # blocking threads free for a call
        self._gate_open = initializer is None   # jobs may start (initializer ran once)
        self._shutdown = False
        self._threads_told = False              # exit sentinels sent
        self._broken: str | bool = False        # set under both locks

    # -- the concurrent.futures.Executor interface ---------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Schedules ``fn(*args, **kwargs)`` as a process; returns its Future.

        Raises RuntimeError after ``shutdown()``, :class:`BrokenExecutor`
        once an initializer failed."""
        fut = Future()
        job = _Job(self, fut, fn, args, kwargs)
        with self._lock:
            if self._broken:
                raise BrokenExecutor(self._broken)
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append(job)
            if not self._gate_open:
                with self._tlock:
                    if not self._threads:
                        self._start_thread(claimed=False)   # it runs the initializer
        self._run_queue([])
        return fut

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Takes no more jobs.  ``cancel_futures``: cancels the jobs still
        waiting for their turn (``max_workers`` reached; a job whose process
        has started runs).  ``wait``: returns once every job has ended and the blocking
        threads have exited.  Jobs already submitted run either way."""
        with self._lock:
            self._shutdown = True
            # The jobs still waiting for a process; those whose process has
            # started run, as ThreadPoolExecutor runs what its threads took.
            waiting = list(self._pending) if cancel_futures else []
            if cancel_futures:
                self._pending.clear()
        for job in waiting:
            if job.future is not None:
                job.future.cancel()
        self._run_queue([])
        if not wait:
            return
        why = "the executor's VM was stopped"
        orphans: list[Future] = []
        with self._lock:
            while self._active or self._pending:
                if self._vm.stopped:
                    orphans = self._orphans_locked(why)
                    break
                self._idle_cond.wait(0.1)
        for fut in orphans:                         # outside the lock: callbacks run
            try:
                if fut.running() or fut.set_running_or_notify_cancel():
                    fut.set_exception(BrokenExecutor(why))
            except (RuntimeError, concurrent.futures.InvalidStateError):
                pass                                # it finished meanwhile
        with self._tlock:
            threads = list(self._threads)
        for t in threads:
            t.join()

    # -- dispatch --------------------------------------------------------------

    def _run_queue(self, ended: list[_Job]) -> None:
        """Starts the pending jobs that may start now; ``ended``: jobs that
        just ended, whose places are free.  From a thread; a process that
        can await uses ``_run_queue_in_process``."""
        while True:
            with self._lock:
                jobs = self._take_locked(ended)
            if not jobs:
                return
            ended = self._start_jobs(jobs)
            if not ended:
                return

    async def _run_queue_in_process(self, finished: _Job) -> None:
        """``_run_queue`` for a process that ended its job: it never blocks
        its scheduler thread on the lock (see ``_acquire``)."""
        ended = [finished]
        while True:
            try:
                await _acquire(self._lock)
            except BaseException:               # killed meanwhile: no more awaits
                self._run_queue(ended)
                raise
            try:
                jobs = self._take_locked(ended)
            finally:
                self._lock.release()
            if not jobs:
                return
            ended = self._start_jobs(jobs)
            if not ended:
                return

    def _take_locked(self, ended: list[_Job]) -> list[_Job]:
        """Under the lock: frees the places of the jobs that ended, and takes
        the pending jobs that may start now."""
        for job in ended:
            self._live.discard(job)
            self._active -= 1
        jobs: list[_Job] = []
        while (self._pending and self._gate_open
               and (self._max is None or self._active < self._max)):
            job = self._pending.popleft()
            self._active += 1
            self._live.add(job)
            jobs.append(job)
        if not jobs and not self._active and not self._pending:
            self._idle_cond.notify_all()
            if self._shutdown:
                self._tell_threads_locked()
        return jobs

    def _start_jobs(self, jobs: list[_Job]) -> list[_Job]:
        """Outside the lock: starts a process for each job; returns those
        that got none (cancelled meanwhile, or the VM stopped)."""
        ended = []
        for job in jobs:
            fut = job.future
            assert fut is not None
            if not fut.cancelled():             # cancelled while it waited: no process
                try:
                    pid = self._vm.spawn(_job_process)
                except RuntimeError as exc:     # the VM has stopped
                    _fail(job, BrokenExecutor(f"cannot start the job: {exc}"))
                else:
                    fut.pid = pid
                    _give(self._vm, pid, job)
                    continue
            ended.append(job)
        return ended

    def _orphans_locked(self, why: str) -> list[Future]:
        """The VM stopped under the jobs: breaks the executor, forgets every
        job not yet ended and returns their futures, to be failed."""
        with self._tlock:
            self._broken = why
        jobs = list(self._pending) + list(self._live)
        self._pending.clear()
        self._live.clear()
        self._active = 0
        self._idle_cond.notify_all()
        self._tell_threads_locked()
        return [job.future for job in jobs if job.future is not None]

    # -- blocking threads, for sync jobs ---------------------------------------

    async def _queue_call(self, job: _Job, pid: Pid, ref: Any) -> bool:
        """From a sync job's process: queues its call for a blocking thread,
        starting one if none is free.  False if the executor is broken (the
        future failed)."""
        await _acquire(self._tlock)
        try:
            if not self._broken:
                self._calls.put((job, pid, ref))
                if self._idle:
                    self._idle -= 1
                elif len(self._threads) < self._threads_max:
                    self._start_thread(claimed=True)
                return True
            why = self._broken
        finally:
            self._tlock.release()
        _fail(job, BrokenExecutor(why))
        return False

    def _start_thread(self, claimed: bool) -> None:
        """Starts a blocking thread (under ``_tlock``); ``claimed``: a call was
        queued for it (else it counts as idle once initialized)."""
        t = threading.Thread(target=self._blocking_thread, args=(claimed,), daemon=True,
                             name=f"otpvm-futures-{id(self):x}_{len(self._threads)}")
        self._threads.append(t)
        t.start()

    def _tell_threads_locked(self) -> None:
        """Tells the blocking threads to exit (under ``_lock``)."""
        with self._tlock:
            if not self._threads_told:
                self._threads_told = True
                for _ in self._threads:
                    self._calls.put(None)

    def _blocking_thread(self, claimed: bool) -> None:
        if self._initializer is not None:
            try:
                self._initializer(*self._initargs)
            except BaseException:
                _LOGGER.critical("Exception in initializer:", exc_info=True)
                self._initializer_failed()
                return
        if not claimed:
            with self._tlock:
                self._idle += 1
        with self._lock:
            opened = not self._gate_open
            self._gate_open = True
        if opened:
            self._run_queue([])
        calls = self._calls
        while True:
            try:
                item = calls.get(timeout=_IDLE_S)
            except queue.Empty:
                with self._tlock:
                    if self._idle > 0:      # more free threads than queued calls
                        self._idle -= 1
                        self._threads.remove(threading.current_thread())
                        return
                continue
            if item is None:
                return
            job, pid, ref = item
            item = None
            self._call(job, pid, ref)
            job = None
            with self._tlock:
                self._idle += 1

    def _call(self, job: _Job, pid: Pid, ref: Any) -> None:
        """Runs a sync job's call on this thread and settles its future; a
        coroutine it returns goes to the process, to be awaited there."""
        fut, reply = job.future, None
        assert fut is not None
        if self._broken:
            job.future = None
            if fut.set_running_or_notify_cancel():
                fut.set_exception(BrokenExecutor(self._broken))
        elif fut.set_running_or_notify_cancel():
            try:
                assert job.fn is not None
                value = job.fn(*job.args, **job.kwargs)
            except BaseException as exc:
                job.future = None
                _settle(fut, exc, True)
            else:
                if inspect.iscoroutine(value):
                    reply = (value, fut)
                else:
                    job.future = None
                    _settle(fut, value, False)
                del value
            job.drop()
        else:
            job.future = None                       # cancelled before it ran
        del fut
        if not self._vm._post(pid, (ref, reply)) and reply is not None:
            coro, fut = reply                       # its process is gone
            coro.close()
            fut.set_exception(ProcessExit("killed"))

    def _initializer_failed(self) -> None:
        """A thread's initializer raised: the executor is broken, and the
        jobs it holds fail (ThreadPoolExecutor's BrokenThreadPool)."""
        why = "A thread initializer failed, the executor is not usable anymore"
        queued = []
        with self._lock, self._tlock:
            self._broken = why
            self._threads.remove(threading.current_thread())
            pending = list(self._pending)
            self._pending.clear()
            while True:
                try:
                    item = self._calls.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    queued.append(item)
            if self._threads_told:
                for _ in self._threads:
                    self._calls.put(None)
            self._idle_cond.notify_all()
        for job in pending:
            _fail(job, BrokenExecutor(why))
        for job, pid, ref in queued:
            _fail(job, BrokenExecutor(why))
            self._vm._post(pid, (ref, None))
        self._run_queue([])
