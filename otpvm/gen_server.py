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
server exits with the exception (logged once, as a crash report); ``terminate``
also runs on ``stop`` and when the parent's exit signal arrives while the
server traps exits (``process_flag('trap_exit', True)`` in ``init``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from otpvm import _vm, code, gen
from otpvm import sys as _sys
from otpvm.gen import CallError, From, Ignored, StartError, ack
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
    "StartError", "Stop", "call", "cast", "reply", "start", "start_link", "start_monitor",
    "stop",
]
__all__ += [  # OTP's send_request family, multi_call and abcast (otpvm.gen)
    "NO_REPLY", "NO_REQUEST", "RequestId", "RequestIdCollection", "Response", "abcast",
    "check_response", "multi_call", "receive_response", "reqids_add", "reqids_new", "reqids_size",
    "reqids_to_list", "send_request", "wait_response",
]

# OTP's send_request family, multi_call and abcast: otpvm.gen's, as gen_server exports them.
NO_REPLY, NO_REQUEST = gen.NO_REPLY, gen.NO_REQUEST
RequestId, RequestIdCollection, Response = gen.RequestId, gen.RequestIdCollection, gen.Response
send_request = gen.send_request
wait_response = gen.wait_response
receive_response = gen.receive_response
check_response = gen.check_response
reqids_new, reqids_add = gen.reqids_new, gen.reqids_add
reqids_size, reqids_to_list = gen.reqids_size, gen.reqids_to_list
multi_call, abcast = gen.multi_call, gen.abcast

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
        """Trims what ``sys.get_status`` shows (for example secrets in the state)."""
        return status


class _Server(_sys.CodeChanging, _vm._ServerCore):
    """The callback-process handler that runs a GenServer.

    Its handle_message is compiled (``_vm._ServerCore``, in otpvm/_core/gen.pxi):
    it handles plain calls and casts itself and hands everything else to
    ``_handle_message_py`` below, the reference implementation it mirrors.
    """

    def __init__(self, cls: type[GenServer] | str, args: Any, name: str | None) -> None:
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
        self.debug = None                 # sys.trace / sys.log (a sys.Debug), None while off
        self.undo: _sys.CodeUndo | None = None   # change_code's, until commit/abort/resume
        self.refused: Any = None          # the code.Version it failed to switch to

    # -- start ------------------------------------------------------------

    def start(self) -> Any:
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
            return self._after(result.timeout, result.continue_)
        if result is Ignore:
            ack(self.starter, Ignored(f"{self.cls.__qualname__}.init returned Ignore"))
            exit("normal")
        if isinstance(result, Stop):
            ack(self.starter, result.reason)
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
        if self.timer is not None:
            if type(msg) is tuple and len(msg) == 2 and msg[0] == _TIMEOUT:
                if msg[1] != self.timer_token:
                    return None                   # a timeout that was cancelled
                self.timer = None
                if self.debug is not None:
                    _sys.handle_debug(self.debug, self._debug_name(), ("in", "timeout"))
                return self._callback("handle_info", ("timeout", self.state))
            cancel_timer(self.timer)
            self.timer = None
        if type(msg) is tuple and len(msg) == 3:
            tag = msg[0]
            if tag == gen.CALL:
                if self.debug is not None:
                    _sys.handle_debug(self.debug, self._debug_name(), ("in", msg[2], msg[1]))
                return self._callback("handle_call", (msg[2], msg[1], self.state), msg[1])
            if tag == gen.SYSTEM:
                return self._system(msg[1], msg[2])
        elif type(msg) is tuple and len(msg) == 2 and msg[0] == gen.CAST:
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(), ("in", msg))
            return self._callback("handle_cast", (msg[1], self.state))
        if type(msg) is Exit and msg.pid == self.parent:
            return self._terminate(msg.reason)    # the parent's shutdown, trapped
        if self.debug is not None:
            _sys.handle_debug(self.debug, self._debug_name(), ("in", msg))
        return self._callback("handle_info", (msg, self.state))

    def _callback(self, name: str, args: tuple[Any, ...], from_: From | None = None) -> Any:
        try:
            result = getattr(self.mod, name)(*args)
        except ProcessExit:
            raise
        except Exception as exc:
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
        except ProcessExit:
            raise
        except Exception as exc:
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
            return self._after(result.timeout, result.continue_)
        if isinstance(result, NoReply):
            self.state = result.state
            if self.debug is not None:
                _sys.handle_debug(self.debug, self._debug_name(), ("noreply", result.state))
            return self._after(result.timeout, result.continue_)
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

    def _after(self, timeout: float | None, continue_: Any) -> Any:
        if continue_ is not UNSET:
            return self._callback("handle_continue", (continue_, self.state))
        if timeout is not None:
            self.timer_token += 1
            self.timer = send_after(timeout, _me(), (_TIMEOUT, self.timer_token))
        return None

    # -- the end --------------------------------------------------------------

    def _terminate(self, reason: Any) -> Any:
        """Runs terminate, then exits with reason."""
        result = self.mod.terminate(reason, self.state) if self.mod else None
        if inspect.iscoroutine(result):
            return self._terminate_async(result, reason)
        exit(reason)

    async def _terminate_async(self, pending: Coroutine[Any, Any, Any], reason: Any) -> None:
        await pending
        exit(reason)

    def _crash(self, exc: BaseException) -> Any:
        """A callback raised: terminate(exc, state) runs, then the exception
        ends the server (and is logged once, by the VM)."""
        try:
            result = self.mod.terminate(exc, self.state) if self.mod else None
        except Exception:
            _log.exception("%s.terminate raised while handling a crash", self.cls.__qualname__)
            raise exc from None
        if inspect.iscoroutine(result):
            return self._crash_async(result, exc)
        raise exc

    async def _crash_async(self, pending: Coroutine[Any, Any, Any], exc: BaseException) -> None:
        try:
            await pending
        finally:
            raise exc

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
            status = {"pid": _me(), "module": self.cls, "state": self.state,
                      "parent": self.parent, "name": self.name, "status": self.sys_status}
            assert self.mod is not None
            gen.reply(from_, self.mod.format_status(status))
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
                timeout: float | None = None) -> Pid:
    """Starts a server and returns its pid once ``init`` has completed.

    ``cls`` is a GenServer subclass, or a ``"pkg.mod:Name"`` reference (see
    ``code.ref``); the server runs the current version of the class.

    Raises ``StartError`` if init fails or stops (``reason`` says why, for
    example ``('already_started', pid)`` when the name is taken), ``Ignored``
    if init returned Ignore.
    """
    pid: Pid = await gen.start(_Server(cls, args, name), link=False, timeout=timeout)
    return pid


async def start_link(cls: type[GenServer] | str, args: Any = None, *, name: str | None = None,
                     timeout: float | None = None) -> Pid:
    """Like start, and links the server to the caller (its parent)."""
    pid: Pid = await gen.start(_Server(cls, args, name), link=True, timeout=timeout)
    return pid


async def start_monitor(cls: type[GenServer] | str, args: Any = None, *, name: str | None = None,
                        timeout: float | None = None) -> tuple[Pid, Ref]:
    """Like start, and monitors the server: returns (pid, ref)."""
    result: tuple[Pid, Ref] = await gen.start(_Server(cls, args, name), link=False,
                                              timeout=timeout, monitor_child=True)
    return result


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

