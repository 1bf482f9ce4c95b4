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
for debugging ``('trace', flag)`` and ``('log', ...)``, and for hot code
upgrade, only while suspended, ``('change_code', module, old_vsn, extra)``,
``('commit_code',)`` and ``('abort_code',)``::

    await sys.suspend(pid)
    await sys.change_code(pid, "app.cache", "1", None)  # code_change on the new class
    await sys.commit_code(pid)          # or abort_code: back to the old class and state
    await sys.resume(pid)

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

import inspect
import logging
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from otpvm import code, gen
from otpvm._vm import copy_message
from otpvm.gen import CallError, From, RequestFailed
from otpvm.kernel import Pid, demonitor, monitor, receive, send
from otpvm.kernel import self as _me
from otpvm.terms import ANY, Down

__all__ = [
    "CallbackFailed", "CodeChanging", "CodeUndo", "Debug", "SysError", "abort_code",
    "callback_failed",
    "carry", "change_code", "code_request", "commit_code", "debug_request", "format_event",
    "get_log", "get_state", "get_status", "handle_debug", "log", "migrating",
    "replace_state", "resume", "run_code_change", "snapshot", "suspend", "terminate", "trace",
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
    """``replace_state``'s function or ``change_code``'s ``code_change``
    raised (``exc``); the process, its code and its state are unchanged
    (OTP's ``callback_failed``)."""

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


async def change_code(dest: Pid | str, module: str, old_vsn: Any, extra: Any = None,
                      timeout: float | None = 5.0) -> None:
    """Switches a *suspended* process to the current version of its
    callback class, converting its state with ``code_change`` (OTP's
    ``sys:change_code``).

    Upgrade: the new class's ``code_change(old_vsn, state, extra)`` runs on
    a new instance (carrying the old instance's attributes).  Downgrade
    (``old_vsn == ('down', vsn)``, the older version made current first):
    the running instance's ``code_change`` runs, then the process switches
    to the (older) current class.  ``module`` names the module being
    changed: gen_event upgrades only the handlers from it; gen_server and
    gen_statem, as in OTP, convert whatever they run.

    The process keeps an undo (its class, instance and a copy of its
    state) until ``commit_code``, ``abort_code`` or ``resume``.  Raises
    ``SysError('running')`` if the process is not suspended, and
    ``CallbackFailed`` if code_change raised: then nothing was switched
    and the process is still suspended, on its old code and state, and will
    not switch at its next message by itself either.
    """
    if not isinstance(module, str) or not module:
        raise TypeError(f"sys.change_code() needs the module's name, not {module!r}")
    request = ("change_code", module, old_vsn, extra)
    reply = await _request(dest, request, timeout)
    if reply == "ok":
        return
    if _is_error(reply) and type(reply[1]) is tuple and reply[1][:1] == ("callback_failed",):
        raise CallbackFailed(reply[1][1], dest, request) from reply[1][1]
    raise SysError(reply[1] if _is_error(reply) else reply, dest, request)


async def commit_code(dest: Pid | str, timeout: float | None = 5.0) -> None:
    """Drops the undo ``change_code`` kept: the change is final (resume
    does this too)."""
    await _ok(dest, ("commit_code",), timeout)


async def abort_code(dest: Pid | str, timeout: float | None = 5.0) -> None:
    """Puts a suspended process back on the class, instance and state it
    had before ``change_code``; runs no user code.  Nothing to undo is not
    an error.  Raises ``SysError('running')`` if the process is not
    suspended (it may have handled messages on the new code since)."""
    await _ok(dest, ("abort_code",), timeout)


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



# -- the server side of hot code upgrade --------------------------------------


def code_request(request: Any) -> str | None:
    """``'change_code'``, ``'commit_code'`` or ``'abort_code'`` when the
    system request is a well-formed one of those, else None."""
    if type(request) is not tuple or not request:
        return None
    kind = request[0]
    if kind == "change_code" and len(request) == 4:
        return kind
    if kind in ("commit_code", "abort_code") and len(request) == 1:
        return kind  # type: ignore[no-any-return]
    return None


class CodeChanging:
    """For behaviour authors: what a suspended behaviour does with the code
    requests (``change_code``, ``commit_code``, ``abort_code``), shared by
    gen_server, gen_statem and gen_event.  The behaviour provides
    ``_change_code(module, old_vsn, extra) -> 'ok' | ('error', reason)``,
    ``_abort_code()`` and ``_system(from_, request)`` (everything else),
    and keeps its undo in ``self.undo``."""

    undo: Any
    sys_status = "running"              # what get_status says: 'running' or 'suspended'

    def _change_code(self, module: str, old_vsn: Any, extra: Any) -> Any:
        raise NotImplementedError

    def _abort_code(self) -> None:
        raise NotImplementedError

    def _system(self, from_: From, request: Any) -> Any:
        raise NotImplementedError

    async def _suspended(self) -> None:
        """Serves system requests until resume; a change of code is final then."""
        self.sys_status = "suspended"
        try:
            await gen.suspended(self._suspended_system)
        finally:
            self.sys_status = "running"
        self.undo = None

    def _suspended_system(self, from_: From, request: Any) -> Any:
        kind = code_request(request)
        if kind == "change_code":
            gen.reply(from_, self._change_code(*request[1:]))
        elif kind == "commit_code":
            self.undo = None
            gen.reply(from_, "ok")
        elif kind == "abort_code":
            self._abort_code()
            gen.reply(from_, "ok")
        else:
            return self._system(from_, request)
        return None


@dataclass(slots=True)
class CodeUndo:
    """What ``abort_code`` restores: a callback's class, its instance (and
    the instance's attributes as they were), and a copy of its state."""

    cls: type
    instance: Any
    attrs: dict[str, Any] | None
    state: Any

    @classmethod
    def take(cls, callback_cls: type, instance: Any, state: Any) -> CodeUndo:
        """The snapshot, taken before code_change runs.  The state is
        copied as a message would be, so that a code_change that changes
        its input in place cannot spoil it; a state that cannot be copied
        (a lock, an open file) is kept as is."""
        attrs = dict(vars(instance)) if hasattr(instance, "__dict__") else None
        return cls(callback_cls, instance, attrs, snapshot(state))

    def restore_instance(self) -> Any:
        """The instance, its attributes put back; runs no user code."""
        if self.attrs is not None:
            vars(self.instance).clear()
            vars(self.instance).update(self.attrs)
        return self.instance


def snapshot(state: Any) -> Any:
    """A copy of state, as a message would carry it, so that a code_change
    that changes its input in place cannot spoil it; a state that cannot be
    copied (a lock, an open file) is returned as is."""
    try:
        return copy_message(state)
    except Exception:
        return state


def callback_failed(exc: BaseException) -> tuple[str, Any]:
    """The reply to a change_code whose code_change raised exc: exc itself
    if it can travel in a message, else a RuntimeError saying what it was
    (an exception that cannot be pickled must not crash the process)."""
    try:
        copy_message(exc)
    except Exception:
        exc = RuntimeError(f"code_change raised {exc!r} (which cannot be sent)")
    return ("error", ("callback_failed", exc))


def migrating(cls: type, state: Any) -> Any:
    """The state to hand code.switch_callback at a safe point: a snapshot
    when the switch would run code_change (which may change it in place and
    then fail), else state itself (a plain switch costs no copy)."""
    new_cls = code.current(cls)
    if new_cls is not cls and code.pending_code_change(new_cls, code.vsn_of(cls)) is not None:
        return snapshot(state)
    return state


def carry(new_cls: Any, instance: Any) -> Any:
    """A new instance of new_cls carrying instance's attributes (set by
    ``init``), made without calling ``__init__``."""
    new = new_cls.__new__(new_cls)
    if hasattr(instance, "__dict__") and hasattr(new, "__dict__"):
        new.__dict__.update(vars(instance))
    return new


def run_code_change(cls: type, instance: Any, old_vsn: Any,
                    convert: Callable[[Any], Any]) -> tuple[type, Any, Any]:
    """OTP's system_code_change for a callback process: returns the class
    to switch to (the current version of cls), its instance, and what
    ``convert(instance_that_runs_code_change)`` returned.  Upgrade: convert
    runs on the new instance; downgrade (``('down', vsn)``): on the running
    one, before the switch.  Whatever convert raises propagates, with
    nothing switched."""
    new_cls = code.current(cls)
    if code.is_down(old_vsn):
        result = _plain(convert(instance))
        return new_cls, carry(new_cls, instance), result
    new = carry(new_cls, instance)
    return new_cls, new, _plain(convert(new))


def _plain(result: Any) -> Any:
    if inspect.isawaitable(result):
        if inspect.iscoroutine(result):
            result.close()
        raise TypeError("code_change must be a plain function, not async: the process is "
                        "suspended and must convert its state in one step")
    return result
