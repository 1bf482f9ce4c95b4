"""gen_server: OTP's generic server, as a callback process.

Subclass ``GenServer`` and return typed results from the callbacks::

    class Counter(GenServer):
        def init(self, start):
            return Ok(start)

        def handle_call(self, request, from_, count):
            if request == "get":
                return Reply(count, count)
            raise ValueError(request)

        def handle_cast(self, n, count):
            return NoReply(count + n)

    pid = await gen_server.start_link(Counter, 0, name="counter")
    gen_server.cast("counter", 5)
    assert await gen_server.call("counter", "get") == 5

The server keeps no stack between messages: its state is the value the
callbacks pass along, which is what lets hot code upgrade swap the code under
it.  A callback may be ``async def`` when it has to call another process; the
server then handles nothing else until it returns, exactly like an OTP
callback blocked in a call.

Hot code upgrade (see otpvm.code): at its next message after a new version
of its callback module is loaded, a server switches to the class of the same
name in that version, keeping its state (running ``code_change`` first when
the version was switched in with ``code_change=``); under ``sys.suspend``,
``sys.change_code`` switches it explicitly, with ``commit_code`` and
``abort_code``.  Starting resolves the current version of the class, so a
server restarted after an upgrade runs the new code.

As in OTP, when a callback raises, ``terminate(exc, state)`` runs and the
server exits with the exception (logged once, as a crash report, with the
server's report -- last message, state, reason, sys log, through
``format_status`` -- as a note); ``terminate`` also runs on ``stop`` and when
the parent's exit signal arrives while the server traps exits
(``process_flag('trap_exit', True)`` in ``init``).  A ``Stop`` or ``exit``
with another reason than normal, shutdown or ('shutdown', _) logs that
report (OTP's "Generic server terminating").

Differences from OTP (README, "Differences from OTP"): a subclass inherits
every callback, so one without ``init`` starts with its argument as state and
``sys.change_code`` without ``code_change`` keeps the state (OTP: undef); a
crash is one log record (OTP: the server's report, then proc_lib's crash
report); ``enter_loop`` is given its parent.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

from otpvm import _idle, _vm, code, gen
from otpvm import sys as _sys
from otpvm.gen import (  # with OTP's send_request family, which this module exports too
    NO_REPLY,
    NO_REQUEST,
    CallError,
    From,
    Ignored,
    RequestId,
    RequestIdCollection,
    Response,
    StartError,
    abcast,
    ack,
    check_response,
    multi_call,
    receive_response,
    reqids_add,
    reqids_new,
    reqids_size,
    reqids_to_list,
    send_request,
    wait_response,
)
from otpvm.kernel import (
    Pid,
    Ref,
    cancel_timer,
    exit,
    register,
    send_after,
    whereis,
)
from otpvm.kernel import self as _me
from otpvm.terms import Exit, NameRegistrationError, ProcessExit

__all__ = [
    "CallError", "From", "GenServer", "Ignore", "Ignored", "NoReply", "Ok", "Reply",
    "StartError", "Stop", "call", "cast", "enter_loop", "reply", "start", "start_link",
    "start_monitor", "stop",
]
__all__ += [  # OTP's send_request family, multi_call and abcast (otpvm.gen)
    "NO_REPLY", "NO_REQUEST", "RequestId", "RequestIdCollection", "Response", "abcast",
    "check_response", "multi_call", "receive_response", "reqids_add", "reqids_new", "reqids_size",
    "reqids_to_list", "send_request", "wait_response",
]


_log = logging.getLogger("otpvm")


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"

    def __reduce__(self) -> str:
        return "UNSET"  # one object: a message carries the sentinel itself


UNSET: Any = _Unset()


@dataclass(slots=True)
class Ok:
    """``init`` succeeded: the initial state (and optional timeout/continue)."""

    state: Any
    timeout: float | None = None
    continue_: Any = UNSET
    hibernate: bool = False


@dataclass(slots=True)
class Reply:
    """``handle_call``: answer with ``value`` and go on with ``state``."""

    value: Any
    state: Any
    timeout: float | None = None
    continue_: Any = UNSET
    hibernate: bool = False


@dataclass(slots=True)
class NoReply:
    """Go on with ``state`` (a call is answered later with ``reply``)."""

    state: Any
    timeout: float | None = None
    continue_: Any = UNSET
    hibernate: bool = False


@dataclass(slots=True)
class Stop:
    """Stop with ``reason``; from ``handle_call``, ``reply`` answers first."""

    reason: Any
    state: Any = None
    reply: Any = UNSET


class _IgnoreType:
    def __repr__(self) -> str:
        return "Ignore"

    def __reduce__(self) -> str:
        return "Ignore"  # one object: a message carries the sentinel itself


Ignore: Any = _IgnoreType()
"""``init`` result: start nothing (``start`` raises ``Ignored``)."""

_TIMEOUT = "$gen_timeout"
_HIBERNATE_AFTER = "$gen_hibernate_after"
_Killed = _vm._ProcessKilled          # a kill (never trapped): terminate does not run


def _abnormal(reason: Any) -> bool:
    """OTP logs a server's end unless its reason is normal, shutdown or
    ('shutdown', term)."""
    if isinstance(reason, str):
        return reason not in ("normal", "shutdown")
    return not (type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")

_vm._gen_server_setup(Reply=Reply, NoReply=NoReply, UNSET=UNSET)


class GenServer:
    """Base class of a generic server: override the callbacks you need."""

    def init(self, args: Any) -> Any:
        """Returns ``Ok(state)``, ``Stop(reason)`` or ``Ignore``."""
        return Ok(args)

    def handle_call(self, request: Any, from_: From, state: Any) -> Any:
        """Returns ``Reply``, ``NoReply`` or ``Stop``."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call {request!r}")

    def handle_cast(self, msg: Any, state: Any) -> Any:
        """Returns ``NoReply`` or ``Stop``."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected cast {msg!r}")

    def handle_info(self, msg: Any, state: Any) -> Any:
        """Any other message (and ``'timeout'``); by default logged and dropped."""
        _log.warning("%s %r received an unexpected message: %r",
                     type(self).__qualname__, _me(), msg)
        return NoReply(state)

    def handle_continue(self, continue_: Any, state: Any) -> Any:
        """Runs right after a callback that returned ``continue_=...``."""
        raise NotImplementedError(f"{type(self).__qualname__} has no handle_continue")

    def terminate(self, reason: Any, state: Any) -> Any:
        """Called when the server stops (awaited if ``async def``); its
        return value is ignored."""

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Hot upgrade: returns the state converted for the new code.

        Called on the new version's class with the old version's vsn, or,
        for a downgrade, on the running (newer) class with ``('down',
        vsn)``.  Raising makes the change fail with nothing switched."""
        return state

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Trims what ``sys.get_status`` and the termination report show
        (for example secrets in the state): returns the status dict to
        show.  It has ``pid``, ``module``, ``state``, ``parent``, ``name``,
        ``status`` and ``log`` (sys.log's events), and in a report also
        ``message`` (the last one in) and ``reason``, as OTP's
        format_status/1.  If it raises or returns no dict, the status is
        shown with its ``state`` replaced by a line that says so."""
        return status


class _Server(_sys.CodeChanging, _vm._ServerCore):
    """The callback-process handler that runs a GenServer.

    Its handle_message is compiled (``_vm._ServerCore``, in otpvm/_core/gen.pxi):
    it handles plain calls and casts itself and hands everything else to
    ``_handle_message_py`` below, the reference implementation it mirrors.
    """

    def __init__(self, cls: type[GenServer] | str, args: Any, name: str | None,
                 hibernate_after: float | None = None) -> None:
        if isinstance(cls, str) and ":" in cls:
            cls = code.ref(cls).resolve()         # a late-bound "pkg.mod:Name"
        if not (isinstance(cls, type) and issubclass(cls, GenServer)):
            raise TypeError(f"gen_server needs a GenServer subclass, not {cls!r}")
        self.cls = cls
        self.args = args
        self.name = name
        self.initial_call = f"{cls.__module__}.{cls.__qualname__}.init"
        self.starter: From | None = None
        self.parent: Pid | None = None
        self.mod = None                   # the GenServer instance, once started
        self.state = None
        self.timer = None
        self.timer_token = 0
        self.idle_timeout: float | None = None   # the armed timeout's length, for sys
        self.hibernate = False            # hibernate=True: again after a sys request
        self.debug = None                 # sys.trace / sys.log (a sys.Debug), None while off
        self.undo: _sys.CodeUndo | None = None   # change_code's, until commit/abort/resume
        self.refused: Any = None          # the code.Version it failed to switch to
        self.entered: Ok | None = None    # enter_loop's state and what follows it
        self.hibernate_after = _idle.check(hibernate_after)
        self.hib_token = 0                # which hibernate_after timer is the live one

    # -- start ------------------------------------------------------------

    def start(self) -> Any:
        if self.entered is not None:
            return self._enter()
        assert self.starter is not None
        self.parent = self.starter.pid
        if self.name is not None:
            try:
                register(self.name, _me())
            except NameRegistrationError:
                ack(self.starter, ("already_started", whereis(self.name)))
                exit("normal")
        self.epoch = _vm.code_epoch()
        try:
            # The class as of now: a restart after an upgrade runs the new code.
            self.cls = code.current(self.cls)
            self.mod = self.cls()
            result = self.mod.init(self.args)
        except Exception as exc:
            ack(self.starter, exc)
            raise
        self.args = None                  # not needed again; it may hold old classes
        if inspect.iscoroutine(result):
            return self._start_async(result)
        return self._started(result)

    def _enter(self) -> Any:
        """enter_loop: the process is the server now, with the state it gave."""
        entered, self.entered = self.entered, None
        assert entered is not None
        self.epoch = _vm.code_epoch()
        self.cls = code.current(self.cls)
        self.mod = self.cls()
        self.state = entered.state
        return self._after(entered.timeout, entered.continue_, entered.hibernate)

    async def _start_async(self, pending: Coroutine[Any, Any, Any]) -> None:
        assert self.starter is not None
        try:
            result = await pending
        except Exception as exc:
            ack(self.starter, exc)
            raise
        more = self._started(result)
        if more is not None:
            await more

    def _started(self, result: Any) -> Any:
        assert self.starter is not None
        if isinstance(result, Ok):
            self.state = result.state
            ack(self.starter)
            return self._after(result.timeout, result.continue_, result.hibernate)
        if result is Ignore:
            ack(self.starter, Ignored(f"{self.cls.__qualname__}.init returned Ignore"))
            exit("normal")
        if isinstance(result, Stop):
            ack(self.starter, result.reason)
            if _abnormal(result.reason):  # OTP: proc_lib's crash report
                _log.error("crash report: process %r exited with %r (init returned Stop)\n"
                           "  initial call: %s", _me(), result.reason, self.initial_call)
            exit(result.reason)
        error = TypeError(f"{self.cls.__qualname__}.init returned {result!r}: "
                          "expected Ok(state), Stop(reason) or Ignore")
        ack(self.starter, error)
        raise error

    # -- messages -----------------------------------------------------------

    def _handle_message_py(self, msg: Any) -> Any:
        epoch = _vm.code_epoch()
        if self.epoch != epoch:
            self.epoch = epoch
            self._code_epoch_changed()
        if type(msg) is tuple and len(msg) == 3 and msg[0] == gen.SYSTEM:
            return self._system_message(msg[1], msg[2])
        if type(msg) is tuple and len(msg) == 2 and msg[0] == _HIBERNATE_AFTER:
            if self.hib_timer is not None and msg[1] == self.hib_token:
                self.hib_timer = None
                self._hibernate()             # idle for hibernate_after
            return None
        self._stop_idle_hibernation()
        self.hibernate = False
        self.last_from = None
        if self.timer is not None:
            if type(msg) is tuple and len(msg) == 2 and msg[0] == _TIMEOUT:
                if msg[1] != self.timer_token:
                    return None                   # a timeout that was cancelled
                self.timer = self.idle_timeout = None
                if self.debug is not None:
                    _sys.handle_debug(self.debug, self._debug_name(), ("in", "timeout"))
                self.last_msg = "timeout"
                return self._callback("handle_info", ("timeout", self.state))
            cancel_timer(self.timer)
            self.timer = self.idle_timeout = None
        if type(msg) is tuple and len(msg) == 3 and msg[0] == gen.CALL:
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(), ("in", msg[2], msg[1]))
            self.last_msg, self.last_from = msg[2], msg[1]
            return self._callback("handle_call", (msg[2], msg[1], self.state), msg[1])
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == gen.CAST:
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(), ("in", msg))
            self.last_msg = msg
            return self._callback("handle_cast", (msg[1], self.state))
        self.last_msg = msg
        if type(msg) is Exit and msg.pid == self.parent:
            return self._terminate(msg.reason)    # the parent's shutdown, trapped
        if self.debug is not None:
            _sys.handle_debug(self.debug, self._debug_name(), ("in", msg))
        return self._callback("handle_info", (msg, self.state))

    def _callback(self, name: str, args: tuple[Any, ...], from_: From | None = None) -> Any:
        try:
            result = getattr(self.mod, name)(*args)
        except _Killed:
            raise
        except (Exception, ProcessExit) as exc:
            return self._crash(exc)
        return self._finish_callback(name, result, from_)

    def _finish_callback(self, name: str, result: Any, from_: From | None) -> Any:
        if inspect.iscoroutine(result):
            return self._callback_async(name, result, from_)
        return self._apply(name, result, from_)

    async def _callback_async(self, name: str, pending: Coroutine[Any, Any, Any],
                              from_: From | None) -> None:
        try:
            result = await pending
        except _Killed:
            raise
        except (Exception, ProcessExit) as exc:
            more = self._crash(exc)
        else:
            more = self._apply(name, result, from_)
        if more is not None:
            await more

    def _apply(self, name: str, result: Any, from_: From | None) -> Any:
        """Acts on a callback's result; may return a coroutine to run next."""
        if isinstance(result, Reply) and from_ is not None:
            gen.reply(from_, result.value)
            self.state = result.state
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(),
                                  ("out", result.value, from_.pid, result.state))
            return self._after(result.timeout, result.continue_, result.hibernate)
        if isinstance(result, NoReply):
            self.state = result.state
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(), ("noreply", result.state))
            return self._after(result.timeout, result.continue_, result.hibernate)
        if isinstance(result, Stop):
            self.state = result.state
            if result.reply is not UNSET and from_ is not None:
                gen.reply(from_, result.reply)
            return self._terminate(result.reason)
        return self._crash(TypeError(
            f"{self.cls.__qualname__}.{name} returned {result!r}: expected "
            + ("Reply, NoReply or Stop" if from_ is not None else "NoReply or Stop")))

    def _debug_name(self) -> Any:
        return self.name if self.name is not None else _me()

    def _after(self, timeout: float | None, continue_: Any, hibernate: bool = False) -> Any:
        if continue_ is not UNSET:
            return self._callback("handle_continue", (continue_, self.state))
        if timeout is not None:
            self._arm(timeout)
        if hibernate:
            self._hibernate()
        elif timeout is None and self.hibernate_after is not None:
            self._arm_idle_hibernation()
        return None

    def _arm_idle_hibernation(self) -> None:
        """hibernate_after: hibernate if no message comes within that time
        (OTP's receive ... after HibernateAfterTimeout, in its loop without a
        timeout)."""
        assert self.hibernate_after is not None
        self.hib_token += 1
        self.hib_timer = send_after(self.hibernate_after, _me(),
                                    (_HIBERNATE_AFTER, self.hib_token))

    def _stop_idle_hibernation(self) -> None:
        if self.hib_timer is not None:
            cancel_timer(self.hib_timer)  # one already sent is dropped by its token
            self.hib_timer = None

    def _arm(self, timeout: float) -> None:
        self.idle_timeout = timeout
        self.timer_token += 1
        self.timer = send_after(timeout, _me(), (_TIMEOUT, self.timer_token))

    def _hibernate(self) -> None:
        """Shrinks the server until its next message, as OTP's hibernate
        does: the state's built-in containers are rebuilt at their exact
        size (the state is the server's live data, like an Erlang process's
        heap), and the process drops what it kept for speed (_vm._hibernate).
        A state that cannot be rebuilt is kept as it is."""
        self.hibernate = True
        try:
            self.state = _vm._compact(self.state)
        except Exception:
            pass                          # a stale class in it: keep it as it is
        _vm._hibernate()

    def _system_message(self, from_: From, request: Any) -> Any:
        """A sys request: the idle timeout stops while it is handled (and
        while the server is suspended), then starts again in full, and a
        hibernating server hibernates again -- OTP's system_continue
        re-enters its loop with the same Time."""
        timeout = self.idle_timeout if self.timer is not None else None
        if self.timer is not None:
            cancel_timer(self.timer)
            self.timer = self.idle_timeout = None
        self._stop_idle_hibernation()     # OTP's loop restarts its receive after it
        more = self._system(from_, request)
        if more is not None:
            if self.hibernate:
                self._hibernate()         # suspended, it stays hibernating (OTP)
            return self._continue_after(more, timeout)
        self._continue(timeout)
        return None

    async def _continue_after(self, pending: Coroutine[Any, Any, Any],
                              timeout: float | None) -> None:
        await pending
        self._continue(timeout)

    def _continue(self, timeout: float | None) -> None:
        if timeout is not None:
            self._arm(timeout)
        if self.hibernate:
            self._hibernate()
        elif timeout is None and self.hibernate_after is not None:
            self._arm_idle_hibernation()

    # -- the end --------------------------------------------------------------

    def _terminate(self, reason: Any) -> Any:
        """Runs terminate, reports an abnormal reason, then exits with reason.
        A terminate that raises or exits ends the server with its own
        reason instead, reported the same way (OTP's gen_server:terminate)."""
        try:
            result = self.mod.terminate(reason, self.state) if self.mod else None
        except _Killed:
            raise
        except ProcessExit as exc:
            self._report(exc.reason)
            raise
        except Exception as exc:
            raise self._noted(exc) from None
        if inspect.iscoroutine(result):
            return self._terminate_async(result, reason)
        self._report(reason)
        exit(reason)

    async def _terminate_async(self, pending: Coroutine[Any, Any, Any], reason: Any) -> None:
        try:
            await pending
        except _Killed:
            raise
        except ProcessExit as exc:
            self._report(exc.reason)
            raise
        except Exception as exc:
            raise self._noted(exc) from None
        self._report(reason)
        exit(reason)

    def _crash(self, exc: BaseException) -> Any:
        """A callback raised: terminate(exc, state) runs, then the exception
        ends the server, logged once, by the VM, with the server's report
        (through format_status) as a note of the exception.  A callback
        that called exit(reason) ends the same way, terminate seeing the
        reason, as OTP's gen_server does with an exit class exception; an
        abnormal reason is reported here (the VM logs no ProcessExit)."""
        reason = exc.reason if isinstance(exc, ProcessExit) else exc
        try:
            result = self.mod.terminate(reason, self.state) if self.mod else None
        except _Killed:
            raise
        except ProcessExit as exit_exc:   # terminate's own end wins, as in OTP
            self._report(exit_exc.reason)
            raise
        except Exception as terminate_exc:
            raise self._noted(terminate_exc) from exc
        if inspect.iscoroutine(result):
            return self._crash_async(result, exc)
        return self._end(exc)

    async def _crash_async(self, pending: Coroutine[Any, Any, Any], exc: BaseException) -> None:
        try:
            await pending
        except _Killed:
            raise
        except ProcessExit as exit_exc:
            self._report(exit_exc.reason)
            raise
        except Exception as terminate_exc:
            raise self._noted(terminate_exc) from exc
        self._end(exc)

    def _end(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, ProcessExit):
            self._report(exc.reason)
            raise exc
        raise self._noted(exc)

    def _report(self, reason: Any) -> None:
        """OTP's "Generic server terminating" error report, for an end with
        an abnormal reason that the VM does not log (a Stop, an exit)."""
        if _abnormal(reason):
            _log.error("%s", self._report_text(reason))

    def _noted(self, exc: BaseException) -> BaseException:
        """exc, with the server's report added as a note (once): the VM's
        crash report then carries it."""
        notes = getattr(exc, "__notes__", ())
        if not any(isinstance(n, str) and n.startswith("gen_server ") for n in notes):
            exc.add_note(self._report_text(exc))
        return exc

    def _report_text(self, reason: Any) -> str:
        """The server's termination report: the last message, the state,
        the reason and the sys log, through format_status (OTP's
        format_status(#{reason, state, message, log}))."""
        status = self._formatted(message=self.last_msg, reason=reason)
        text = (f"gen_server {self._debug_name()!r} ({self.cls.__qualname__}) terminating"
                f"\n  last message: {status.get('message')!r}"
                f"\n  state: {status.get('state')!r}"
                f"\n  reason: {status.get('reason')!r}")
        if status.get("log"):
            text += f"\n  log: {status['log']!r}"
        if isinstance(self.last_from, From):
            text += f"\n  client: {self.last_from.pid!r}"
        return text

    def _status(self, **more: Any) -> dict[str, Any]:
        log = [] if self.debug is None or self.debug.log is None else list(self.debug.log)
        return {"pid": _me(), "module": self.cls, "state": self.state, "parent": self.parent,
                "name": self.name, "status": self.sys_status, "log": log, **more}

    def _formatted(self, **more: Any) -> dict[str, Any]:
        """The status (with ``more``: a report's message and reason) through
        format_status.  One that raises or exits, or returns no dict, leaves
        the status as it is but for its ``state``, which says so: OTP's
        "Mod:format_status/1 crashed"; the server goes on."""
        status = self._status(**more)
        if self.mod is None:
            return status
        try:
            shown = self.mod.format_status(dict(status))
        except _Killed:
            raise
        except (Exception, ProcessExit) as exc:
            return {**status, "state": f"{self.cls.__qualname__}.format_status crashed: {exc!r}"}
        if not isinstance(shown, dict):
            return {**status, "state": f"{self.cls.__qualname__}.format_status returned "
                                       f"{shown!r}: expected a dict"}
        return shown

    # -- hot code upgrade -------------------------------------------------------

    def _code_epoch_changed(self) -> None:
        """A module's version changed since the last message: switch to the
        current version of the callback class, keeping the state (migrated
        by code_change when the version asks for it).  If that fails, the
        server stays on its code and state, says so once, and does not try
        that version again."""
        cls = self.cls
        if self.mod is None or (self.refused is not None
                                and code.which(cls.__module__) is self.refused):
            return
        try:
            self.cls, self.mod, self.state = code.switch_callback(
                cls, self.mod, _sys.migrating(cls, self.state))
        except code.ModuleDeleted:
            return                        # deleted: it runs on until purged, as in Erlang
        except Exception as exc:
            self.refused = code.which(cls.__module__)
            vsn = self.refused.vsn if self.refused is not None else "?"
            _log.error("gen_server %r (%s): switching to version %s of %s failed: %r; it "
                       "stays on its old code and state", self._debug_name(),
                       cls.__qualname__, vsn, cls.__module__, exc, exc_info=exc)

    def _change_code(self, module: str, old_vsn: Any, extra: Any) -> Any:
        """sys.change_code while suspended: 'ok' or ('error', ('callback_failed', exc))."""
        assert self.mod is not None
        undo = _sys.CodeUndo.take(self.cls, self.mod, self.state)
        state = self.state
        try:
            cls, mod, state = _sys.run_code_change(
                self.cls, self.mod, old_vsn, lambda m: m.code_change(old_vsn, state, extra))
        except Exception as exc:
            self.mod, self.state = undo.restore_instance(), undo.state
            self._stay(undo.cls)
            return _sys.callback_failed(exc)
        if self.undo is None:             # abort goes back to before the first change
            self.undo = undo
        self.cls, self.mod, self.state = cls, mod, state
        self.refused = None
        self.epoch = _vm.code_epoch()     # switched: nothing to do at the next message
        return "ok"

    def _abort_code(self) -> None:
        undo, self.undo = self.undo, None
        if undo is not None:
            self.cls, self.mod, self.state = undo.cls, undo.restore_instance(), undo.state
            self._stay(undo.cls)

    def _stay(self, cls: type) -> None:
        """Stays on cls: the version now current is not switched to by
        itself at the next message (OTP's process would run it over the old
        state)."""
        self.epoch = _vm.code_epoch()
        self.refused = code.which(cls.__module__)

    # -- the sys protocol -----------------------------------------------------

    def _system(self, from_: From, request: Any) -> Any:
        if isinstance(request, tuple) and request[:1] == ("terminate",):
            self.last_msg = self.last_from = None     # OTP's system_terminate: none
            return self._terminate(request[1])   # stop() waits for the Down
        if request == "get_state":
            gen.reply(from_, self.state)
        elif isinstance(request, tuple) and request[:1] == ("replace_state",):
            try:
                self.state = request[1](self.state)
            except Exception as exc:
                gen.reply(from_, ("error", exc))
            else:
                gen.reply(from_, self.state)
        elif request == "get_status":
            gen.reply(from_, self._formatted())
        elif request == "suspend":
            gen.reply(from_, "ok")
            return self._suspended()
        elif request == "resume":
            gen.reply(from_, "ok")
        elif _sys.code_request(request) is not None:
            # Code changes only while suspended; with no undo, commit is a no-op.
            gen.reply(from_, "ok" if request[0] == "commit_code" else ("error", "running"))
        else:
            handled = _sys.debug_request(self.debug, request)
            if handled is None:
                gen.reply(from_, ("error", ("unknown_system_msg", request)))
            else:
                self.debug, answer = handled
                gen.reply(from_, answer)
        return None



# -- the API ------------------------------------------------------------------


async def start(cls: type[GenServer] | str, args: Any = None, *, name: str | None = None,
                timeout: float | None = None, hibernate_after: float | None = None) -> Pid:
    """Starts a server and returns its pid once ``init`` has completed.

    ``cls`` is a GenServer subclass, or a ``"pkg.mod:Name"`` reference (see
    ``code.ref``); the server runs the current version of the class.

    Raises ``StartError`` if init fails or stops (``reason`` says why, for
    example ``('already_started', pid)`` when the name is taken), ``Ignored``
    if init returned Ignore.

    ``hibernate_after``: seconds; a server that receives nothing for that
    long hibernates (as after ``hibernate=True``) until its next message,
    as OTP's ``{hibernate_after, Ms}`` (not while an idle timeout runs).
    """
    pid: Pid = await gen.start(_Server(cls, args, name, hibernate_after), link=False,
                               timeout=timeout)
    return pid


async def start_link(cls: type[GenServer] | str, args: Any = None, *, name: str | None = None,
                     timeout: float | None = None, hibernate_after: float | None = None) -> Pid:
    """Like start, and links the server to the caller (its parent)."""
    pid: Pid = await gen.start(_Server(cls, args, name, hibernate_after), link=True,
                               timeout=timeout)
    return pid


async def start_monitor(cls: type[GenServer] | str, args: Any = None, *, name: str | None = None,
                        timeout: float | None = None,
                        hibernate_after: float | None = None) -> tuple[Pid, Ref]:
    """Like start, and monitors the server: returns (pid, ref)."""
    result: tuple[Pid, Ref] = await gen.start(_Server(cls, args, name, hibernate_after),
                                              link=False,
                                              timeout=timeout, monitor_child=True)
    return result


def enter_loop(cls: type[GenServer] | str, state: Any, *, name: Any = None,
               parent: Pid | str | None = None, timeout: float | None = None,
               hibernate: bool = False, continue_: Any = UNSET,
               hibernate_after: float | None = None) -> NoReturn:
    """Makes the calling coroutine process a gen_server running ``cls``
    with ``state``, as OTP's enter_loop: for a process that initialised
    itself (and acknowledged its own start).  Never returns: the caller's
    body unwinds (its ``finally`` blocks run) and the process then serves
    messages as the server, with the same pid, mailbox, links and monitors;
    ``init`` is not called.  ``timeout``, ``hibernate`` and ``continue_``
    act as in ``Ok``, ``hibernate_after`` as in ``start``.

    ``name``: the name the process must already be registered under (a
    string, or a via name); if it is not, the process exits with
    ``'process_not_registered'`` (``('process_not_registered_via',
    registry)`` for a via name: its ``registry``, or the via object's
    class when it has none), as in OTP and gen_statem.enter_loop.
    ``parent``: the process whose exit signal, when the server traps
    exits, runs terminate and stops it (OTP takes it from proc_lib's
    ancestors; otpvm processes record none, so it is given here, as a pid
    or the name it is registered under -- resolved now, as OTP does, the
    process exiting ``'could_not_find_registered_name'`` if nobody has
    it; None: every Exit goes to handle_info)."""
    if isinstance(parent, str):           # OTP's get_parent: a registered name
        parent = whereis(parent)
        if parent is None:
            exit("could_not_find_registered_name")
    if name is not None and gen.resolve(name) != _me():
        exit("process_not_registered" if isinstance(name, str)
             else ("process_not_registered_via", getattr(name, "registry", type(name))))
    server = _Server(cls, None, name, hibernate_after)
    server.entered = Ok(state, timeout, continue_, hibernate)
    server.parent = parent
    _vm._enter_loop(server)
    raise AssertionError("unreachable: _enter_loop raises")


def call(dest: Pid | str, request: Any,
         timeout: float | None = 5.0) -> Coroutine[Any, Any, Any]:
    """Sends a request and waits for the reply (``await`` the result).

    Raises ``TimeoutError`` after ``timeout`` seconds and ``CallError`` (with
    ``.reason``) if the server does not exist or dies before replying.  Neither
    leaves a stray reply or Down message behind.
    """
    return gen.call(dest, request, timeout)   # gen.call's awaitable, no coroutine of ours


cast = _vm.gen_server_cast
"""Sends a request without waiting for anything (never fails): gen.cast."""


def reply(from_: From, value: Any) -> None:
    """Answers a call later (after returning NoReply from handle_call)."""
    gen.reply(from_, value)


async def stop(dest: Pid | str, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stops the server with reason (its terminate runs) and waits until it is gone.

    Raises ``CallError('noproc')`` if there is no such server, ``CallError(r)``
    if it ended with another reason r, ``TimeoutError`` after timeout.
    """
    await gen.stop(dest, reason, timeout)

