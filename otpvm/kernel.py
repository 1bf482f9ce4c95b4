"""The kernel API: the calls a process makes, and ``run`` to boot a VM.

The process-level calls are the compiled VM core's own functions, re-exported
as they are so that ``send`` and ``receive`` pay no extra Python call.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import threading
import time
from collections.abc import Callable
from typing import Any

from otpvm._vm import (
    VM,
    Pid,
    Ref,
    TimerRef,
    _current_vm,
    alias,
    become,
    blocking,
    cancel_timer,
    demonitor,
    exit,
    halt,
    is_alive,
    link,
    make_ref,
    monitor,
    process_flag,
    process_info,
    processes,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    send_alias,
    sleep,
    spawn,
    spawn_handler,
    spawn_link,
    spawn_monitor,
    unalias,
    unlink,
    unregister,
    whereis,
)
from otpvm.terms import ANY


async def run_blocking(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls a blocking function on a short-lived thread of its own and
    returns its result (or raises its exception), while the calling process
    waits for it as a message: no scheduler thread is held (Erlang's dirty
    schedulers, in miniature).  For calls such as getaddrinfo or
    subprocess.run, not for CPU-bound work, which still takes the GIL."""
    vm, me, ref = _current_vm("run_blocking"), self(), make_ref()

    def call() -> None:
        try:
            result: Any = (True, fn(*args, **kwargs))
        except BaseException as exc:       # handed to the waiting process
            result = (False, exc)
        vm._post(me, (ref, result))

    threading.Thread(target=call, name=f"otpvm-blocking-{getattr(fn, '__name__', 'call')}",
                     daemon=True).start()
    _, (ok, value) = await receive((ref, ANY))
    if not ok:
        raise value
    return value


async def wait_future(fut: concurrent.futures.Future[Any], timeout: float | None = None) -> Any:
    """Waits for a ``concurrent.futures.Future`` that another thread
    completes (an executor's job, a plain thread's work), as for a message:
    no scheduler thread is held.  Returns its result or raises its exception
    (``CancelledError`` if it was cancelled); ``TimeoutError`` after
    ``timeout`` seconds, leaving the future as it is.  The wake-up comes
    through an alias, so one that arrives after a timeout is dropped instead
    of lingering in the mailbox."""
    vm, me = _current_vm("wait_future"), self()
    if not isinstance(fut, concurrent.futures.Future):
        raise TypeError(f"wait_future() takes a concurrent.futures.Future, not {fut!r}")
    if not fut.done():
        ref = alias()
        fut.add_done_callback(lambda _: vm._post_alias(me, ref, ref))
        try:
            await receive(ref, timeout=timeout)
        except TimeoutError:
            raise TimeoutError(f"wait_future: {fut!r} is not done after {timeout:g} s") from None
        finally:
            unalias(ref)
    return fut.result()


class _Pacer:
    """For a process working through a long list (10,000 processes to scan
    or ask): ``await pacer.tick()`` after each item yields once the slice
    has run for ``slice_s``, so that the others run meanwhile without the
    work waiting for a turn after every few items."""

    def __init__(self, slice_s: float = 0.001) -> None:
        self.slice_s = slice_s
        self.since = time.perf_counter()

    async def tick(self) -> None:
        """Yields if this slice has run long enough."""
        if time.perf_counter() - self.since > self.slice_s:
            await sleep(0)
            self.since = time.perf_counter()


def run(main: Callable[..., Any], *args: Any, schedulers: int | None = None) -> Any:
    """Boots a VM, runs ``main(*args)`` as its first process, and stops the VM.

    Returns main's return value or re-raises the exception it crashed with
    (``ProcessExit(reason)`` if it ended with another reason); that crash is
    not also logged as a crash report, since the caller gets it (one
    traceback, not two).  Processes still alive when main ends are killed.
    """
    with VM(schedulers) as vm:
        return vm.run(main, *args)


_default_lock = threading.Lock()
_default: VM | None = None
_default_hooked = False


def default_vm() -> VM:
    """The VM shared by otpvm's facades (``otpvm.futures.Executor(vm=None)``),
    started on the first call with the default settings and stopped at
    interpreter exit (``atexit``).

    Every caller gets the same VM, so processes started through different
    facades can link to, monitor and message each other.  If it has been
    stopped (``default_vm().stop()``), the next call starts a fresh one:
    that is how a program replaces it, e.g. after a test.  Thread-safe."""
    global _default, _default_hooked
    with _default_lock:
        if _default is None or _default.stopped:
            _default = VM()
            if not _default_hooked:
                atexit.register(_stop_default)
                _default_hooked = True
        return _default


def _stop_default() -> None:
    """atexit: stops the default VM, if one was started (its processes are
    killed: their ``finally`` blocks run)."""
    with _default_lock:
        vm = _default
    if vm is not None:
        vm.stop()


__all__ = [
    "default_vm",
    "Pid",
    "Ref",
    "TimerRef",
    "VM",
    "alias",
    "become",
    "blocking",
    "cancel_timer",
    "demonitor",
    "exit",
    "halt",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "registered",
    "run",
    "run_blocking",
    "self",
    "send",
    "send_after",
    "send_alias",
    "sleep",
    "spawn",
    "spawn_handler",
    "spawn_link",
    "spawn_monitor",
    "unalias",
    "unlink",
    "unregister",
    "wait_future",
    "whereis",
]
