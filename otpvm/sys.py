"""OTP's ``sys``: look into and steer any behaviour process through the
system-message protocol.

Every behaviour answers system requests, sent as ``('$system', From(pid,
ref), request)`` (see ``otpvm.gen``) and handled between two messages, so
they see the process in a consistent state::

    state = await sys.get_state("counter")
    await sys.suspend("counter")        # casts and infos now wait in the mailbox
    await sys.replace_state("counter", lambda n: n + 1)
    await sys.resume("counter")         # ... and are handled, in order

Requests a behaviour answers: ``'get_state'``, ``('replace_state', fn)``,
``'get_status'``, ``'suspend'``, ``'resume'``, ``('terminate', reason)``,
and for debugging ``('trace', flag)`` and ``('log', ...)``.

The debugging half is also here for behaviours to use, like OTP's
``sys:handle_debug``: a behaviour keeps a ``Debug`` (None while nothing is
on), hands ``('trace', ...)``/``('log', ...)`` requests to
``debug_request``, and reports each event with ``handle_debug``.  Events
have OTP's shapes: ``('in', msg)`` (a cast arrives as ``('in', ('$gen_cast',
msg))``), ``('in', request, from_)`` for a call, ``('out', reply, to_pid,
state)``, ``('noreply', state)``, ``('continue', value)``.  Tracing writes
each event, formatted as OTP's ``*DBG*`` lines, to the ``otpvm.sys`` logger
at INFO level; logging keeps the last N events for ``get_log``.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from otpvm import gen
from otpvm.gen import CallError, From, RequestFailed
from otpvm.kernel import Pid, demonitor, monitor, receive, send
from otpvm.kernel import self as _me
from otpvm.terms import ANY, Down

__all__ = [
    "CallbackFailed", "Debug", "SysError", "debug_request", "format_event", "get_log",
    "get_state", "get_status", "handle_debug", "log", "replace_state", "resume",
    "suspend", "terminate", "trace",
]

_log = logging.getLogger("otpvm.sys")

DEFAULT_LOG_SIZE = 10
"""How many events ``log(dest, True)`` keeps (OTP's default)."""


class SysError(RequestFailed):
    """The process answered a system request with an error (``reason``),
    for example ``('unknown_system_msg', request)``."""

    def __str__(self) -> str:
        return f"system request {self.request!r} to {self.dest!r} failed: {self.reason!r}"


class CallbackFailed(SysError):
    """``replace_state``'s function raised (``exc``); the process and its
    state are unchanged (OTP's ``callback_failed``)."""

    def __init__(self, exc: BaseException, dest: Any = None, request: Any = None) -> None:
        super().__init__(("callback_failed", exc), dest, request)
        self.exc = exc


async def _request(dest: Any, request: Any, timeout: float | None) -> Any:
    return await gen.call(dest, request, timeout, tag=gen.SYSTEM)


def _is_error(reply: Any) -> bool:
    return type(reply) is tuple and len(reply) == 2 and reply[0] == "error"


async def _ok(dest: Any, request: Any, timeout: float | None) -> None:
    reply = await _request(dest, request, timeout)
    if reply != "ok":
        raise SysError(reply[1] if _is_error(reply) else reply, dest, request)


async def get_state(dest: Pid | str, timeout: float | None = 5.0) -> Any:
    """The process's state (a copy: changing it changes nothing there).

    Raises ``CallError`` if the process does not exist or dies first, and
    ``TimeoutError`` after ``timeout`` seconds.
    """
    return await _request(dest, "get_state", timeout)


async def replace_state(dest: Pid | str, fn: Callable[[Any], Any],
                        timeout: float | None = 5.0) -> Any:
    """Replaces the state with ``fn(state)``, run inside the process, and
    returns the new state.

    If ``fn`` raises, the state is left as it was, the process goes on, and
    ``CallbackFailed`` is raised here (chained from fn's exception).
    """
    request = ("replace_state", fn)
    reply = await _request(dest, request, timeout)
    # The server answers ('error', exc) when fn raised (a state of exactly
    # that shape is indistinguishable: see the module's report).
    if _is_error(reply) and isinstance(reply[1], BaseException):
        raise CallbackFailed(reply[1], dest, request) from reply[1]
    return reply


async def get_status(dest: Pid | str, timeout: float | None = 5.0) -> dict[str, Any]:
    """What the process says about itself: a dict with at least ``pid``,
    ``module``, ``state``, ``parent``, ``name`` and ``status`` (a behaviour's
    ``format_status`` may trim it)."""
    reply = await _request(dest, "get_status", timeout)
    if _is_error(reply):
        raise SysError(reply[1], dest, "get_status")
    status: dict[str, Any] = reply
    return status


async def suspend(dest: Pid | str, timeout: float | None = 5.0) -> None:
    """Suspends the process: until ``resume`` it answers only system
    requests; every other message waits in its mailbox, in order."""
    await _ok(dest, "suspend", timeout)


async def resume(dest: Pid | str, timeout: float | None = 5.0) -> None:
    """Resumes a suspended process (a running one just answers)."""
    await _ok(dest, "resume", timeout)


async def terminate(dest: Pid | str, reason: Any = "normal",
                    timeout: float | None = None) -> None:
    """Makes the process end with ``reason`` (its ``terminate`` callback
    runs, even when it is suspended) and waits until it is gone.

    Raises ``CallError('noproc')`` if there is no such process,
    ``CallError(r)`` if it ended with another reason ``r``, and
    ``TimeoutError`` after ``timeout`` seconds (it may still end later).
    """
    request = ("terminate", reason)
    pid = gen.resolve(dest)
    if pid is None:
        raise CallError("noproc", dest, request)
    ref = monitor(pid)
    send(pid, (gen.SYSTEM, From(_me(), ref), request))
    try:
        down = await receive(Down(ref, ANY, ANY), timeout=timeout)
    except TimeoutError:
        demonitor(ref, flush=True)
        raise TimeoutError(f"terminate of {dest!r} timed out after {timeout} s") from None
    if down.reason is not reason and down.reason != reason:
        raise CallError(down.reason, dest, request)


async def trace(dest: Pid | str, flag: bool, timeout: float | None = 5.0) -> None:
    """Turns printing of the process's events on or off (to the
    ``otpvm.sys`` logger, INFO level, as OTP's ``*DBG*`` lines)."""
    if not isinstance(flag, bool):
        raise TypeError(f"sys.trace() needs a bool flag, not {flag!r}")
    await _ok(dest, ("trace", flag), timeout)


async def log(dest: Pid | str, flag: bool | int, timeout: float | None = 5.0) -> None:
    """Turns the event log on (``True``: keep the last 10 events; an int
    ``n``: the last n) or off (``False``: forget the events)."""
    if flag is False:
        request: Any = ("log", "off")
    elif flag is True:
        request = ("log", ("on", DEFAULT_LOG_SIZE))
    elif isinstance(flag, int) and flag > 0:
        request = ("log", ("on", flag))
    else:
        raise ValueError(f"sys.log() needs True, False or a positive int, not {flag!r}")
    await _ok(dest, request, timeout)


async def get_log(dest: Pid | str, timeout: float | None = 5.0) -> list[Any]:
    """The logged events, oldest first ([] when logging is off)."""
    reply = await _request(dest, ("log", "get"), timeout)
    if _is_error(reply):
        raise SysError(reply[1], dest, ("log", "get"))
    events: list[Any] = reply
    return events


# -- the server side ------------------------------------------------------------


@dataclass(slots=True)
class Debug:
    """A behaviour's debug options: tracing on, and the event log (None
    when off).  A behaviour holds None instead while both are off, so
    that checking costs one comparison per message."""

    trace: bool = False
    log: deque[Any] | None = field(default=None)


def debug_request(debug: Debug | None, request: Any) -> tuple[Debug | None, Any] | None:
    """Handles a ``('trace', ...)`` or ``('log', ...)`` system request.

    Returns ``(new_debug, reply)`` — keep ``new_debug`` (None when
    everything is off) and answer ``reply`` — or None if ``request`` is not
    a debug request.
    """
    if type(request) is not tuple or len(request) != 2:
        return None
    kind, arg = request
    current = debug if debug is not None else Debug()
    if kind == "trace" and isinstance(arg, bool):
        current.trace = arg
    elif kind == "log" and arg == "get":
        return debug, [] if debug is None or debug.log is None else list(debug.log)
    elif kind == "log" and arg == "off":
        current.log = None
    elif (kind == "log" and type(arg) is tuple and len(arg) == 2 and arg[0] == "on"
          and isinstance(arg[1], int) and arg[1] > 0):
        old = current.log or ()
        current.log = deque(old, maxlen=arg[1])
    else:
        return None
    if not current.trace and current.log is None:
        return None, "ok"
    return current, "ok"


def handle_debug(debug: Debug | None, name: Hashable, event: Any) -> None:
    """Reports one event of process ``name``: traced and/or logged as
    ``debug`` says (nothing when it is None)."""
    if debug is None:
        return
    if debug.trace:
        _log.info("%s", format_event(name, event))
    if debug.log is not None:
        debug.log.append(event)


def format_event(name: Hashable, event: Any) -> str:
    """An event as OTP's gen_server prints it (``*DBG* name got call ...``)."""
    match event:
        case ("in", (gen.CAST, msg)):
            return f"*DBG* {name} got cast {msg!r}"
        case ("in", request, From(pid, _)):
            return f"*DBG* {name} got call {request!r} from {pid!r}"
        case ("in", msg):
            return f"*DBG* {name} got {msg!r}"
        case ("out", reply, to, state):
            return f"*DBG* {name} sent {reply!r} to {to!r}, new state {state!r}"
        case ("noreply", state):
            return f"*DBG* {name} new state {state!r}"
        case ("continue", value):
            return f"*DBG* {name} continue {value!r}"
    return f"*DBG* {name} dbg {event!r}"
