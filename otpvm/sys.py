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
for debugging ``('trace', flag)``, ``('log', ...)``, ``('log_to_file',
path)``, ``('statistics', flag)``, ``('install', ...)``, ``('remove',
key)`` and ``('no_debug',)``, and for hot code
upgrade, only while suspended, ``('change_code', module, old_vsn, extra)``,
``('commit_code',)`` and ``('abort_code',)``::

    await sys.suspend(pid)
    await sys.change_code(pid, "app.cache", "1", None)  # code_change on the new class
    await sys.commit_code(pid)          # or abort_code: back to the old class and state
    await sys.resume(pid)

Debugging, as OTP's: ``trace`` prints each event, ``log`` keeps the last
ones (``get_log``), ``log_to_file`` writes them to a file, ``statistics``
counts messages in and out, ``install`` runs a function of yours on each
event (``func(func_state, event, name) -> func_state | DONE``), and
``no_debug`` turns it all off::

    await sys.statistics("counter", True)
    ...
    stats = await sys.statistics("counter", "get")   # a Statistics, or None when off
    await sys.install("counter", spy, [], id="spy")

A failing request raises ``SysError`` (``CallbackFailed`` when the
function given to replace_state raised), never returns the error as if it
were a result.

The debugging half is also here for behaviours to use, like OTP's
``sys:handle_debug``: a behaviour keeps a ``Debug`` (None while nothing is
on), hands system requests it does not know to ``debug_request``, and
reports each event with ``handle_debug``.  Events
have OTP's shapes: ``('in', msg)`` (a cast arrives as ``('in', ('$gen_cast',
msg))``), ``('in', request, from_)`` for a call, ``('out', reply, to_pid,
state)``, ``('noreply', state)``, ``('continue', value)``.  Tracing writes
each event, formatted as OTP's ``*DBG*`` lines, to the ``otpvm.sys`` logger
at INFO level; logging keeps the last N events for ``get_log``.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NamedTuple, TextIO, TypeAlias

from otpvm import code, gen
from otpvm._vm import copy_message
from otpvm.gen import CallError, From, RequestFailed
from otpvm.kernel import Pid, demonitor, monitor, process_info, receive, send
from otpvm.kernel import self as _me
from otpvm.terms import ANY, Down

__all__ = [
    "DONE", "CallbackFailed", "CodeChanging", "CodeUndo", "Debug", "DebugFunc", "Statistics",
    "SysError", "abort_code", "callback_failed",
    "carry", "change_code", "code_request", "commit_code", "debug_request", "format_event",
    "get_log", "get_state", "get_status", "handle_debug", "install", "log", "log_to_file",
    "migrating", "no_debug", "remove", "replace_state", "resume", "run_code_change",
    "snapshot", "statistics", "suspend", "terminate", "trace",
]

DebugFunc: TypeAlias = Callable[[Any, Any, Any], Any]
"""A debug function for ``install``: ``func(func_state, event, name) ->
new func_state | DONE``."""

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


_SYS_ERRORS = ("unknown_system_msg", "callback_failed")


def _failure(reply: Any) -> Any:
    """The reason, when reply is a process's answer that a request failed:
    ``('error', exc)`` or ``('error', ('unknown_system_msg' |
    'callback_failed', ...))``; else None.  Narrower than OTP, which takes
    every ``{error, R}`` for a failure, so that a state that merely looks
    like ``('error', data)`` (a gen_statem in state ``'error'``) is a state."""
    if not _is_error(reply):
        return None
    reason = reply[1]
    if isinstance(reason, BaseException):
        return reason
    if type(reason) is tuple and reason and reason[0] in _SYS_ERRORS:
        return reason
    return None


def _raise_failure(reply: Any, dest: Any, request: Any) -> None:
    reason = _failure(reply)
    if reason is None:
        return
    if isinstance(reason, BaseException):
        raise CallbackFailed(reason, dest, request) from reason
    if reason[0] == "callback_failed" and len(reason) == 2 \
            and isinstance(reason[1], BaseException):
        raise CallbackFailed(reason[1], dest, request) from reason[1]
    raise SysError(reason, dest, request)


async def _ok(dest: Any, request: Any, timeout: float | None) -> None:
    reply = await _request(dest, request, timeout)
    if reply != "ok":
        raise SysError(reply[1] if _is_error(reply) else reply, dest, request)


async def get_state(dest: Pid | str, timeout: float | None = 5.0) -> Any:
    """The process's state (a copy: changing it changes nothing there).

    Raises ``CallError`` if the process does not exist or dies first, and
    ``TimeoutError`` after ``timeout`` seconds.
    """
    reply = await _request(dest, "get_state", timeout)
    _raise_failure(reply, dest, "get_state")
    return reply


async def replace_state(dest: Pid | str, fn: Callable[[Any], Any],
                        timeout: float | None = 5.0) -> Any:
    """Replaces the state with ``fn(state)``, run inside the process, and
    returns the new state.

    If ``fn`` raises, the state is left as it was, the process goes on, and
    ``CallbackFailed`` is raised here (chained from fn's exception); a
    process that has no state to replace raises ``SysError``
    (``('unknown_system_msg', request)``).

    An event manager is different, as in OTP: its state is the list of
    ``(handler_id, handler_state)`` pairs (see ``get_state``) and ``fn``
    runs once per handler, on its pair, returning the pair with the new
    state; a handler for which ``fn`` raises (or returns anything but a
    pair with the same id) keeps its state, and nothing is raised.  The
    result is the list of pairs after the change.
    """
    request = ("replace_state", fn)
    reply = await _request(dest, request, timeout)
    _raise_failure(reply, dest, request)
    return reply


async def get_status(dest: Pid | str, timeout: float | None = 5.0) -> dict[str, Any]:
    """What the process says about itself: a dict with at least ``pid``,
    ``module``, ``state``, ``parent``, ``name`` and ``status`` (a behaviour's
    ``format_status`` may trim it)."""
    reply = await _request(dest, "get_status", timeout)
    if _is_error(reply):
        raise SysError(reply[1], dest, "get_status")
    if type(reply) is not dict:
        raise SysError(("bad_status", reply), dest, "get_status")
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


async def log(dest: Pid | str, flag: bool | int | str, timeout: float | None = 5.0) -> None:
    """Turns the event log on (``True``: keep the last 10 events; an int
    ``n``: the last n) or off (``False``: forget the events); ``'print'``
    writes the logged events, as trace would have, to the ``otpvm.sys``
    logger (OTP prints them on standard output)."""
    if flag is False:
        request: Any = ("log", "off")
    elif flag is True:
        request = ("log", ("on", DEFAULT_LOG_SIZE))
    elif flag == "print":
        request = ("log", "print")
    elif isinstance(flag, int) and not isinstance(flag, bool) and flag > 0:
        request = ("log", ("on", flag))
    else:
        raise ValueError(f"sys.log() needs True, False, 'print' or a positive int, "
                         f"not {flag!r}")
    await _ok(dest, request, timeout)


async def get_log(dest: Pid | str, timeout: float | None = 5.0) -> list[Any]:
    """The logged events, oldest first ([] when logging is off)."""
    reply = await _request(dest, ("log", "get"), timeout)
    if _is_error(reply):
        raise SysError(reply[1], dest, ("log", "get"))
    events: list[Any] = reply
    return events


async def log_to_file(dest: Pid | str, path: str | os.PathLike[str] | Literal[False],
                      timeout: float | None = 5.0) -> None:
    """Writes each event of the process, as trace prints it, to the file at
    ``path`` (opened, and truncated, by the process); ``False`` closes it.

    Raises ``SysError('open_file')`` if the process cannot open the file.
    """
    if path is False:
        request: Any = ("log_to_file", False)
    elif isinstance(path, (str, os.PathLike)):
        request = ("log_to_file", os.fspath(path))
    else:
        raise TypeError(f"sys.log_to_file() needs a path or False, not {path!r}")
    await _ok(dest, request, timeout)


class Statistics(NamedTuple):
    """What ``statistics(dest, 'get')`` answers (OTP's proplist, in its
    order): since statistics were turned on, the process handled
    ``messages_in`` messages (requests, casts, infos: not system requests)
    and sent ``messages_out`` replies, and ran ``reductions`` of otpvm's
    reductions (callbacks and receives, not Erlang's)."""

    start_time: datetime
    current_time: datetime
    reductions: int
    messages_in: int
    messages_out: int


async def statistics(dest: Pid | str, flag: bool | Literal["get"],
                     timeout: float | None = 5.0) -> Statistics | None:
    """Turns the process's statistics on (``True``: counting from now; if
    they are on already, they go on) or off (``False``), returning None;
    ``'get'`` returns them (a ``Statistics``), or None while they are off
    (OTP's ``no_statistics``)."""
    if flag is not True and flag is not False and flag != "get":
        raise ValueError(f"sys.statistics() needs True, False or 'get', not {flag!r}")
    request = ("statistics", flag)
    reply = await _request(dest, request, timeout)
    if flag == "get":
        if reply is None or type(reply) is Statistics:
            return reply
    elif reply == "ok":
        return None
    raise SysError(reply[1] if _is_error(reply) else reply, dest, request)


class _Done(Exception):
    """The type of ``DONE``."""

    def __repr__(self) -> str:
        return "sys.DONE"


DONE = _Done()
"""What a debug function returns (or raises) to be removed (OTP's ``done``)."""


async def install(dest: Pid | str, func: DebugFunc, func_state: Any = None, *,
                  id: Hashable = None, timeout: float | None = 5.0) -> None:
    """Installs a debug function in the process (OTP's ``sys:install``).

    For every event the process reports (the events trace prints),
    ``func(func_state, event, name)`` runs in the process — ``name`` is its
    registered name, else its pid — and returns the next ``func_state``, or
    ``sys.DONE`` to be removed (raising ``sys.DONE`` does the same).  A
    function that raises anything else is removed too, as in OTP, and the
    process goes on (a warning is logged on ``otpvm.sys``).  The function
    is known by ``id``, or by itself when
    no id is given; installing one already installed (same id, or same
    function) changes nothing.  The newest runs first.
    """
    if not callable(func):
        raise TypeError(f"sys.install() needs a function, not {func!r}")
    key = func if id is None else id
    try:
        hash(key)
    except TypeError:
        raise TypeError(f"sys.install() needs a hashable id, not {key!r}") from None
    await _ok(dest, ("install", (key, func, func_state)), timeout)


async def remove(dest: Pid | str, func_or_id: Hashable, timeout: float | None = 5.0) -> None:
    """Removes a debug function installed with ``install``, by its id (or
    the function itself when it has none); removing one not installed is
    no error."""
    await _ok(dest, ("remove", func_or_id), timeout)


async def no_debug(dest: Pid | str, timeout: float | None = 5.0) -> None:
    """Turns off all debugging of the process: trace, log, statistics,
    debug functions, and closes the log file."""
    await _ok(dest, ("no_debug",), timeout)


# -- the server side ------------------------------------------------------------


@dataclass(slots=True)
class _Stats:
    start_time: datetime
    reductions: int
    messages_in: int = 0
    messages_out: int = 0


@dataclass(slots=True)
class Debug:
    """A behaviour's debug options: tracing on, the event log (None when
    off), statistics (None when off), the installed debug functions (by
    key, each ``[func, func_state]``) and the log file (None when closed).
    A behaviour holds None instead while everything is off, so that
    checking costs one comparison per message."""

    trace: bool = False
    log: deque[Any] | None = field(default=None)
    stats: _Stats | None = field(default=None)
    funcs: dict[Hashable, list[Any]] | None = field(default=None)
    file: TextIO | None = field(default=None)

    def is_off(self) -> bool:
        """Whether nothing is on: the behaviour may hold None instead."""
        return (not self.trace and self.log is None and self.stats is None
                and not self.funcs and self.file is None)

    def close(self) -> None:
        """Closes the log file, if any."""
        if self.file is not None:
            try:
                self.file.close()
            finally:
                self.file = None


def debug_request(debug: Debug | None, request: Any) -> tuple[Debug | None, Any] | None:
    """Handles a debug system request: ``('trace', flag)``, ``('log', ...)``,
    ``('log_to_file', path | False)``, ``('statistics', flag)``,
    ``('install', (key, func, func_state))``, ``('remove', key)`` or
    ``('no_debug',)``.

    Returns ``(new_debug, reply)`` — keep ``new_debug`` (None when
    everything is off) and answer ``reply`` — or None if ``request`` is not
    a debug request.  Runs in the process (it reads the process's
    reductions and opens the log file there).
    """
    if request == ("no_debug",):
        if debug is not None:
            debug.close()
        return None, "ok"
    if type(request) is not tuple or len(request) != 2:
        return None
    kind, arg = request
    handler = _DEBUG_REQUESTS.get(kind) if type(kind) is str else None
    if handler is None:
        return None
    current = debug if debug is not None else Debug()
    reply = handler(current, arg)
    if reply is _NOT_DEBUG:
        return None
    return (None if current.is_off() else current), reply


_NOT_DEBUG = object()


def _trace_request(debug: Debug, flag: Any) -> Any:
    if not isinstance(flag, bool):
        return _NOT_DEBUG
    debug.trace = flag
    return "ok"


def _log_request(debug: Debug, arg: Any) -> Any:
    if arg == "get":
        return [] if debug.log is None else list(debug.log)
    if arg == "print":
        for event in debug.log or ():
            _log.info("%s", format_event(_name(), event))
    elif arg == "off":
        debug.log = None
    elif (type(arg) is tuple and len(arg) == 2 and arg[0] == "on"
          and isinstance(arg[1], int) and arg[1] > 0):
        debug.log = deque(debug.log or (), maxlen=arg[1])
    else:
        return _NOT_DEBUG
    return "ok"


def _log_to_file_request(debug: Debug, path: Any) -> Any:
    if path is not False and not isinstance(path, str):
        return _NOT_DEBUG
    debug.close()
    if path is False:
        return "ok"
    try:
        debug.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed by close())
    except OSError:
        return ("error", "open_file")
    return "ok"


def _statistics_request(debug: Debug, flag: Any) -> Any:
    if flag is True:
        if debug.stats is None:         # OTP: turning them on again keeps the counts
            debug.stats = _Stats(datetime.now(), _reductions())
    elif flag is False:
        debug.stats = None
    elif flag == "get":
        stats = debug.stats
        if stats is None:
            return None
        return Statistics(stats.start_time, datetime.now(),
                          _reductions() - stats.reductions,
                          stats.messages_in, stats.messages_out)
    else:
        return _NOT_DEBUG
    return "ok"


def _install_request(debug: Debug, arg: Any) -> Any:
    if type(arg) is not tuple or len(arg) != 3 or not callable(arg[1]):
        return _NOT_DEBUG
    key, func, func_state = arg
    if debug.funcs is None:
        debug.funcs = {}
    if key not in debug.funcs:          # OTP: installing it again changes nothing
        debug.funcs[key] = [func, func_state]
    return "ok"


def _remove_request(debug: Debug, key: Any) -> Any:
    if debug.funcs is not None:
        try:
            debug.funcs.pop(key, None)
        except TypeError:               # unhashable: installed it cannot be
            pass
    return "ok"


_DEBUG_REQUESTS: dict[str, Callable[[Debug, Any], Any]] = {
    "trace": _trace_request,
    "log": _log_request,
    "log_to_file": _log_to_file_request,
    "statistics": _statistics_request,
    "install": _install_request,
    "remove": _remove_request,
}


def _reductions() -> int:
    info = process_info(_me())
    return int(info["reductions"]) if info is not None else 0


def _name() -> Any:
    """The calling process's registered name, else its pid."""
    me = _me()
    info = process_info(me)
    name = info.get("registered_name") if info is not None else None
    return name if name else me


def handle_debug(debug: Debug | None, name: Hashable, event: Any) -> None:
    """Reports one event of process ``name``: traced, logged, written to
    the log file, counted and handed to the debug functions, as ``debug``
    says (nothing when it is None).  A debug function that returns or
    raises ``DONE``, or raises anything else, is removed (OTP's
    handle_debug)."""
    if debug is None:
        return
    if debug.trace:
        _log.info("%s", format_event(name, event))
    if debug.log is not None:
        debug.log.append(event)
    if debug.file is not None:
        debug.file.write(format_event(name, event) + "\n")
        debug.file.flush()              # a reader sees each event as it happens
    if debug.stats is not None:
        _count(debug.stats, event)
    if debug.funcs:
        _run_funcs(debug.funcs, name, event)


def _count(stats: _Stats, event: Any) -> None:
    """OTP's sys:stat: ``{in, ...}`` and ``{out, ...}`` events."""
    if type(event) is tuple and event:
        if event[0] == "in" and len(event) in (2, 3):
            stats.messages_in += 1
        elif event[0] == "out" and len(event) in (3, 4):
            stats.messages_out += 1


def _run_funcs(funcs: dict[Hashable, list[Any]], name: Hashable, event: Any) -> None:
    for key in reversed(list(funcs)):   # newest first, as OTP's list
        entry = funcs.get(key)
        if entry is None:
            continue
        try:
            new_state = entry[0](entry[1], event, name)
        except _Done:
            new_state = DONE
        except Exception as exc:
            _log.warning("sys debug function %r of %s raised %r on %r; removed",
                         key, name, exc, event)
            new_state = DONE
        if new_state is DONE:
            del funcs[key]
        else:
            entry[1] = new_state


def format_event(name: Hashable, event: Any) -> str:
    """An event as OTP's gen_server prints it (``*DBG* name got call ...``)."""
    match event:
        case ("in", (gen.CAST, msg)):
            return f"*DBG* {name} got cast {msg!r}"
        case ("in", ("$gen_event_notify", msg)):
            return f"*DBG* {name} got event {msg!r}"
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
