"""Running a VM from a command's main thread, with SIGINT and SIGTERM handled.

Python runs signal handlers in the main thread, between bytecodes.  A main
thread blocked in ``vm.run`` would take a signal late or never: the kernel may
hand it to a scheduler thread, and even one aimed at the main thread is lost
if it comes just before the wait starts.  So the VM's threads (and the thread
that runs the first process) start with SIGINT and SIGTERM blocked — threads
inherit the mask — and the main thread waits in short timed joins, so that a
handler always runs promptly.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from otpvm.kernel import VM

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Raised by an ``on_signal`` handler to end ``run_main``'s wait."""

    def __init__(self, sig: signal.Signals) -> None:
        super().__init__(sig)
        self.sig = sig


def ignore() -> None:
    """Ignores further SIGINT/SIGTERM: one already acted on must not be
    interrupted by another (a KeyboardInterrupt in the middle of a stop)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Threads started inside inherit a mask without SIGINT and SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def new_vm(schedulers: int | None = None) -> VM:
    """A VM whose threads never take SIGINT or SIGTERM (see the module doc)."""
    with _signals_blocked():
        return VM(schedulers)


def run_main(vm: VM, on_signal: Callable[[signal.Signals], None],
             main: Callable[..., Any], *args: Any) -> Any:
    """Runs ``vm.run(main, *args)`` while the calling (main) thread takes the
    signals: ``on_signal(sig)`` is called there for each SIGINT or SIGTERM
    (it may raise, which ends the wait with that exception; the VM then keeps
    running, for the caller to stop).  Returns main's result or raises its
    exception, like ``vm.run``.

    Once main has ended, or on_signal has raised, a SIGINT or SIGTERM does
    nothing, then and after run_main returns: the program is on its way out,
    and a late signal (a second SIGTERM a few ms after the first, once the
    clean stop is done) must not turn its clean exit into a death by signal
    or a forced stop.  The handler that ignores them is a Python one: a
    program started after this (exec resets caught signals) gets the defaults."""
    outcome: list[tuple[bool, Any]] = []
    forced: list[bool] = []

    def run() -> None:
        try:
            outcome.append((True, vm.run(main, *args)))
        except BaseException as exc:    # re-raised in the calling thread
            outcome.append((False, exc))

    def handler(signum: int, _frame: Any) -> None:
        if outcome or forced:           # main has ended, or on_signal already gave up on it
            return
        try:
            on_signal(signal.Signals(signum))
        except BaseException:
            forced.append(True)         # a signal must not interrupt what the caller does now
            raise

    # The handlers go in before main starts: a signal that comes as soon as
    # main has said it is up must find them, not the default (death).
    for sig in SIGNALS:
        signal.signal(sig, handler)
    with _signals_blocked():
        runner = threading.Thread(target=run, name="otpvm-main", daemon=True)
        runner.start()
    while runner.is_alive():
        runner.join(0.25)
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
