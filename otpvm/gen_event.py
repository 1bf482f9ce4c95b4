"""gen_event: an event manager process with pluggable event handlers.

An event manager is a process to which events are sent (``notify``,
``sync_notify``); every event is handed to each event handler installed in
it, in turn.  Handlers are classes deriving ``EventHandler``; each installed
handler keeps its own state, which its callbacks return, as OTP's do::

    class Counter(EventHandler[int]):
        def init(self, start: int) -> int:
            return start

        def handle_event(self, event: Any, count: int) -> int:
            return count + 1

        def handle_call(self, request: Any, count: int) -> tuple[Any, int]:
            return count, count

    mgr = await gen_event.start()
    await gen_event.add_handler(mgr, Counter, 0)
    gen_event.notify(mgr, "tick")
    assert await gen_event.call(mgr, Counter, "get") == 1

A handler is named by its class, or by ``(cls, id)`` so that one class can be
installed several times.  A manager may be started under a str or a
``registry.via`` name.  Everything follows OTP's gen_event (checked with
``erl``, OTP 25):

* handlers added later see each event first (OTP keeps them newest first),
  and ``which_handlers`` lists them in that order; adding a handler id that
  is already installed installs it a second time, as OTP does;
* a handler whose callback raises is removed alone — ``terminate(Crash(exc),
  state)`` runs and one error report is logged on the ``otpvm`` logger — and
  the manager and the other handlers carry on;
* ``add_sup_handler`` connects the handler to the caller: the caller gets
  ``GenEventExit(handler, reason)`` whenever the handler is removed
  (``'normal'`` for ``delete_handler`` or ``RemoveHandler``, ``'shutdown'``
  when the manager stops, ``Swapped(...)``, or the exception it crashed
  with), and if the caller ends with reason R the handler is removed with
  ``terminate(Stop(R), state)``;
* other exit signals, and any message that is not an event manager request,
  go to every handler's ``handle_info``;
* a callback result of the wrong shape (from ``handle_call``, anything but
  ``(reply, state)``, ``Reply``, ``RemoveHandler`` or ``SwapHandler``; from
  ``handle_event``/``handle_info``, another callback's ``Reply`` or
  ``Refuse``, any other value being the new state) is OTP's ``{error,
  Value}``: the handler is removed with ``terminate(BadReturn(value),
  state)`` and one error report, as for a crash;
* ``sys.get_state`` gives the ``(handler_id, state)`` pairs, newest first,
  and ``sys.replace_state(mgr, fn)`` runs ``fn`` on each pair: a handler for
  which it raises (or returns another id) keeps its state, and nothing is
  raised (OTP's ``system_replace_state``); ``sys.get_status`` shows each
  state through the handler's ``format_status``, and ``sys`` debugging
  (trace, log, statistics, install...) sees every message but system
  requests as an ``('in', ...)`` event.

Differences, deliberate: OTP hands a supervising owner and ``call`` the bare
bad value, otpvm ``BadReturn(value)`` (a bare value could read as
``'normal'``); OTP's ``{Module, Id, State}`` triples are ``(handler_id,
state)`` pairs; an unlinked manager's ``get_status`` parent is None (OTP:
the manager itself).

Hibernation: a handler's ``Hibernate(state)`` (from ``init``,
``handle_event``, ``handle_info``) or ``Reply(value, state,
hibernate=True)`` (from ``handle_call``) makes the manager hibernate once
the message is handled, as OTP's ``{ok, ..., hibernate}``: but not after an
exit signal, nor after ``delete_handler`` or ``which_handlers``, as in OTP.
A ``SwapHandler``'s new handler may hibernate from ``init`` too (OTP takes
``{ok, State, hibernate}`` for an error there, and only there).  The
``hibernate_after`` start option hibernates a manager idle that long.

Callbacks may be ``async def``: the manager then waits for them (handling no
other request meanwhile, as in OTP, where a callback may block).

Hot code upgrade is per handler class, as in OTP: after a new version of a
handler's module is loaded, each of its handlers switches to the class of the
same name in it before the manager's next message, keeping its state; under
``sys.suspend``, ``sys.change_code(mgr, module, old_vsn, extra)`` runs
``code_change`` for every handler whose class is from ``module`` (the
others are untouched) and switches them all, or none if one fails.  The
versions of a class are one handler id (OTP names handlers by module).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Generic, NamedTuple, TypeAlias, TypeVar

from otpvm import _idle, _vm, code, gen
from otpvm import sys as _sys
from otpvm.gen import CallError, From, StartError
from otpvm.kernel import (
    Pid,
    Ref,
    exit,
    link,
    process_flag,
    register,
    send,
    unlink,
    whereis,
)
from otpvm.kernel import self as _me
from otpvm.terms import Exit, NameRegistrationError, ProcessExit

__all__ = [
    "BadReturn", "CallError", "Crash", "EventHandler", "GenEventExit", "HandlerError", "HandlerId",
    "Hibernate",
    "HandlerNotFound", "Refuse", "RemoveHandler", "Reply", "StartError", "Stop", "SwapHandler",
    "Swapped", "add_handler", "add_sup_handler", "call", "delete_handler", "notify",
    "start", "start_link", "start_monitor", "stop", "swap_handler", "swap_sup_handler",
    "sync_notify", "which_handlers",
]

_log = logging.getLogger("otpvm")

S = TypeVar("S")

HandlerId: TypeAlias = "type[EventHandler[Any]] | tuple[type[EventHandler[Any]], Any]"
"""A handler's name in its manager: its class, or ``(cls, id)``."""

NOTIFY = "$gen_event_notify"
"""The tag of an asynchronous event: ``(NOTIFY, event)``."""


# -- what callbacks return ----------------------------------------------------


@dataclass(slots=True)
class Reply(Generic[S]):
    """``handle_call``: answer ``value`` and go on with ``state`` (a plain
    ``(value, state)`` tuple means the same); ``hibernate=True``: the
    manager hibernates after the call (OTP's ``{ok, Reply, State,
    hibernate}``)."""

    value: Any
    state: S
    hibernate: bool = False


@dataclass(slots=True, frozen=True)
class Hibernate(Generic[S]):
    """``init``, ``handle_event``, ``handle_info``: go on with ``state``,
    and the manager hibernates once the message is handled (OTP's ``{ok,
    State, hibernate}``): every handler's state has its built-in
    containers rebuilt at their exact size, and ``process_info(pid)
    ['hibernating']`` is True until the next message (system requests
    leave it hibernating)."""

    state: S


@dataclass(slots=True, frozen=True)
class RemoveHandler:
    """Any callback but ``init``: remove this handler (``terminate(
    'remove_handler', state)`` runs).  From ``handle_call``, ``reply`` is the
    answer.  Returning the class itself, unconstructed, means the same."""

    reply: Any = None


@dataclass(slots=True, frozen=True)
class SwapHandler:
    """Any callback but ``init``: replace this handler, in place, by
    ``handler2``.  ``terminate(args1, state)`` runs, then
    ``handler2.init((args2, what_terminate_returned))``; a supervised
    connection carries over.  From ``handle_call``, ``reply`` is the answer."""

    args1: Any
    state: Any
    handler2: Any
    args2: Any
    reply: Any = None


@dataclass(slots=True, frozen=True)
class Refuse:
    """``init``: do not install the handler (``add_handler`` raises
    ``HandlerError`` with this reason).  Raising from init refuses too."""

    reason: Any


# -- what terminate receives, and what an owner is told -----------------------


class Crash(NamedTuple):
    """``terminate``'s argument when a callback raised (OTP's ``{error,
    {'EXIT', Reason}}``): ``reason`` is the exception (or the reason given
    to ``otpvm.exit``)."""

    reason: Any


class BadReturn(NamedTuple):
    """A callback returned ``value``, which is none of the shapes it may
    return (OTP's ``{error, Value}``): the handler is removed, as if it had
    crashed, with ``terminate(BadReturn(value), state)``; a supervising
    owner gets ``GenEventExit(handler, BadReturn(value))`` and ``call``
    raises ``HandlerError`` with it as ``reason``.  Bad are: from
    ``handle_call``, anything but ``(reply, state)``, ``Reply``,
    ``RemoveHandler`` or ``SwapHandler``; from ``handle_event`` and
    ``handle_info``, ``Reply`` and ``Refuse`` (results of other callbacks:
    any other value is the new state)."""

    value: Any


class Stop(NamedTuple):
    """``terminate``'s argument when the owner of a supervised handler ended
    with ``reason`` (OTP's ``{stop, Reason}``)."""

    reason: Any


class Swapped(NamedTuple):
    """A ``GenEventExit`` reason: the handler was replaced by ``new_handler``,
    now supervised by ``owner`` (None when unsupervised)."""

    new_handler: Any
    owner: Pid | None


class GenEventExit(NamedTuple):
    """Sent to the owner of a handler added with ``add_sup_handler`` when the
    handler is removed (OTP's ``{gen_event_EXIT, Handler, Reason}``).

    ``reason`` is ``'normal'`` (``delete_handler``, ``RemoveHandler``),
    ``'shutdown'`` (the manager stopped), ``Swapped(...)``, or the exception
    a callback raised.
    """

    handler: Any
    reason: Any


class HandlerError(Exception):
    """A handler operation failed: ``handler`` is the handler id, ``reason``
    why (the exception a callback raised, or the ``Refuse`` reason)."""

    def __init__(self, handler: Any, reason: Any) -> None:
        super().__init__(handler, reason)
        self.handler = handler
        self.reason = reason

    def __str__(self) -> str:
        return f"event handler {_name(self.handler)} failed: {self.reason!r}"


class HandlerNotFound(HandlerError, LookupError):
    """The handler is not installed in the manager (OTP's ``bad_module`` /
    ``module_not_found``)."""

    def __str__(self) -> str:
        return f"event handler {_name(self.handler)} is not installed ({self.reason})"


# -- handlers -------------------------------------------------------------------


class EventHandler(Generic[S]):
    """Base class of event handlers: override the callbacks you need.

    A new instance is made for each installation; the handler's state is
    what ``init`` returns and what each callback returns next, so the
    instance itself need hold nothing.  Every callback may be ``async def``.
    """

    def init(self, args: Any) -> S:
        """Returns the initial state (by default, ``args``).  Return
        ``Refuse(reason)`` or raise to refuse being installed."""
        return args  # type: ignore[no-any-return]

    def handle_event(self, event: Any, state: S) -> Any:
        """An event: returns the new state, ``RemoveHandler()`` or
        ``SwapHandler(...)``."""
        raise NotImplementedError(f"{type(self).__qualname__} has no handle_event")

    def handle_call(self, request: Any, state: S) -> Any:
        """A request from ``call``: returns ``(reply, state)`` (or
        ``Reply``), ``RemoveHandler(reply)`` or ``SwapHandler(...)``."""
        raise NotImplementedError(f"{type(self).__qualname__} has no handle_call")

    def handle_info(self, msg: Any, state: S) -> Any:
        """Any other message to the manager: like ``handle_event``.  By
        default logs a warning and keeps the state (as OTP does)."""
        _log.warning("gen_event handler %s has no handle_info; unhandled message: %r",
                     type(self).__qualname__, msg)
        return state

    def terminate(self, arg: Any, state: S) -> Any:
        """The handler is being removed.  ``arg`` is ``delete_handler``'s
        args, a swap's ``args1``, ``'remove_handler'``, ``'stop'`` (the
        manager stops), ``Stop(reason)`` (the owner ended) or ``Crash(exc)``.
        The return value goes back to ``delete_handler``, or into the new
        handler's ``init`` on a swap."""
        return None

    def code_change(self, old_vsn: Any, state: S, extra: Any) -> S:
        """Converts the state during a code upgrade (called as
        GenServer.code_change is)."""
        return state

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Trims what is shown of the handler (OTP's format_status/1):
        ``status`` has ``'state'``, and in the error report of a crash also
        ``'message'`` (the last event) and ``'reason'``; the returned dict's
        entries are shown instead.  Used by ``sys.get_status`` and the
        crash report (for example to hide secrets in the state)."""
        return status


def _check_id(handler: Any) -> type[EventHandler[Any]]:
    """The class behind a handler id; TypeError for anything else."""
    cls = handler[0] if type(handler) is tuple and len(handler) == 2 else handler
    if not (isinstance(cls, type) and issubclass(cls, EventHandler)):
        raise TypeError(f"an event handler is an EventHandler subclass or (cls, id), "
                        f"not {handler!r}")
    return cls


def _name(handler: Any) -> str:
    if type(handler) is tuple and len(handler) == 2 and isinstance(handler[0], type):
        return f"({handler[0].__qualname__}, {handler[1]!r})"
    return handler.__qualname__ if isinstance(handler, type) else repr(handler)


def _same_class(a: Any, b: Any) -> bool:
    """Two versions of one class of a module under otpvm.code."""
    return (isinstance(a, type) and isinstance(b, type) and a.__qualname__ == b.__qualname__
            and a.__module__ == b.__module__ and code.managed(a.__module__))


def _same_handler(a: Any, b: Any) -> bool:
    """Whether handler ids a and b name the same handler: equal, or the
    same but for the version of the class."""
    if a == b:
        return True
    if type(a) is tuple and type(b) is tuple and len(a) == len(b) == 2:
        return bool(a[1] == b[1]) and _same_class(a[0], b[0])
    return _same_class(a, b)


def _renamed(handler: Any, cls: type) -> Any:
    """The handler id with its class replaced by cls."""
    return (cls, handler[1]) if type(handler) is tuple else cls


def _reason(exc: BaseException) -> Any:
    return exc.reason if isinstance(exc, ProcessExit) else exc


# -- the manager process --------------------------------------------------------


class _Installed:
    """One installed handler."""

    __slots__ = ("id", "mod", "owner", "refused", "state")

    def __init__(self, id: Any, mod: EventHandler[Any], state: Any, owner: Pid | None) -> None:
        self.id = id
        self.mod = mod
        self.state = state
        self.owner = owner
        self.refused: Any = None        # the code.Version it failed to switch to


class _Manager(_sys.CodeChanging):
    """The event manager: a callback process whose state is its handlers."""

    def __init__(self, name: Any, parent: Pid | None,
                 hibernate_after: float | None = None) -> None:
        after = _idle.check(hibernate_after)
        self.idle = None if after is None else _idle.IdleTimer(after)   # hibernate_after's
        self.name = name
        self.parent = parent
        self.handlers: list[_Installed] = []    # newest first, as in OTP
        self.starter: From | None = None        # set by gen.start
        self.epoch = _vm.code_epoch()           # the code epoch handlers were resolved in
        self.debug: _sys.Debug | None = None    # sys.trace, log, statistics...: None while off
        # change_code's undo, until commit/abort/resume: (handler, id, snapshot)
        self.undo: list[tuple[_Installed, Any, _sys.CodeUndo]] | None = None
        self.hibernate = False                  # hibernating, until the next message
        self.asked = False                      # a handler asked to, for this message

    def start(self) -> Any:
        process_flag("trap_exit", True)
        assert self.starter is not None
        if isinstance(self.name, str):
            try:
                register(self.name, _me())
            except NameRegistrationError:
                gen.ack(self.starter, ("already_started", whereis(self.name)))
                exit("normal")
        elif self.name is not None:
            return self._start_via(self.name)
        gen.ack(self.starter)
        self._rest()
        return None

    async def _start_via(self, name: Any) -> None:
        """Registers a ``registry.via`` name (OTP's {via, Module, Name})."""
        from otpvm import registry  # registry needs gen_server: imported late
        assert self.starter is not None
        try:
            await registry.register(name.registry, name.key)
        except registry.AlreadyRegisteredError as exc:
            gen.ack(self.starter, ("already_started", exc.pid))
            exit("normal")
        gen.ack(self.starter)
        self._rest()

    def handle_message(self, msg: Any) -> Any:
        """Runs the request as a coroutine; returns it only if it suspended."""
        body = self._handle(msg)
        try:
            yielded = body.send(None)
        except StopIteration:
            return None
        return _finish(body, yielded)

    async def _handle(self, msg: Any) -> None:
        if self.epoch != _vm.code_epoch():
            self._code_epoch_changed()
        if (type(msg) is tuple and len(msg) == 3 and msg[0] == gen.SYSTEM
                and type(msg[1]) is From):
            await self._system(msg[1], msg[2])
            self._rest()                # hibernating: again (OTP's system_continue)
            return
        if (self.idle is not None and type(msg) is tuple and len(msg) == 2
                and msg[0] == _idle.TAG and self.idle.is_mine(msg)):
            if self.idle.fired(_me()) or self.hibernate:
                self._hibernate()
            return
        self.asked = False
        await self._message(msg)
        # OTP: an exit signal's handle_info never hibernates the manager
        self.hibernate = self.asked and type(msg) is not Exit
        self._rest()

    def _rest(self) -> None:
        """The manager waits for its next message: it hibernates if a
        handler asked to, else hibernate_after's wait starts again."""
        if self.hibernate:
            self._hibernate()
        elif self.idle is not None:
            self.idle.rest(_me())

    def _hibernate(self) -> None:
        """Shrinks the manager until its next message, as OTP's hibernate:
        each handler's state has its built-in containers rebuilt at their
        exact size (one that cannot be is kept as it is), and the process
        drops what it kept for speed (_vm._hibernate)."""
        for h in self.handlers:
            try:
                h.state = _vm._compact(h.state)
            except Exception:
                pass                    # a stale class in it: keep it as it is
        self.handlers = list(self.handlers)
        _vm._hibernate()

    async def _message(self, msg: Any) -> None:
        if type(msg) is tuple:
            if self.debug is not None:
                self._debug_in(msg)
            if len(msg) == 2 and msg[0] == NOTIFY:
                await self._notify(msg[1], "handle_event")
                return
            if len(msg) == 3 and msg[0] == gen.CALL and type(msg[1]) is From:
                await self._request(msg[1], msg[2])
                return
        elif self.debug is not None:
            self._debug_in(msg)
        if type(msg) is Exit:
            if msg.pid == self.parent:
                await self._terminate_server(msg.reason)    # exits
            await self._owner_exit(msg.pid, msg.reason)
        await self._notify(msg, "handle_info")

    def _debug_in(self, msg: Any) -> None:
        """For sys debugging: every message but system requests is an event in
        (a call as ``('in', request, from_)``); gen_event sends none out."""
        if type(msg) is tuple and len(msg) == 3 and msg[0] == gen.CALL:
            event: Any = ("in", msg[2], msg[1])
        else:
            event = ("in", msg)
        _sys.handle_debug(self.debug, self._debug_name(), event)

    # -- requests ----------------------------------------------------------------

    async def _request(self, from_: From, request: Any) -> None:
        op = request[0] if type(request) is tuple and request else request
        if op == "sync_notify":
            await self._notify(request[1], "handle_event")
            _reply(from_, (True, None))
        elif op == "call":
            _reply(from_, await self._call(request[1], request[2]))
        elif op == "add_handler":
            _reply(from_, await self._add(request[1], request[2], request[3]))
        elif op == "delete_handler":
            _reply(from_, await self._delete(request[1], request[2]))
        elif op == "swap_handler":
            _reply(from_, await self._swap(*request[1:]))
        elif op == "which_handlers":
            _reply(from_, (True, [h.id for h in self.handlers]))
        else:
            _reply(from_, (False, ValueError(f"unknown gen_event request {request!r}")))

    async def _add(self, handler: Any, args: Any, owner: Pid | None) -> tuple[bool, Any]:
        if owner is not None:
            link(owner)         # trapping exits: a dead owner is an Exit message
        installed = await self._init(handler, args, owner)
        if isinstance(installed, _Installed):
            self.handlers = [installed, *self.handlers]
            return True, None
        return False, HandlerError(handler, installed)

    async def _init(self, handler: Any, args: Any, owner: Pid | None) -> Any:
        """A new installed handler, or the reason it refused."""
        try:
            # The class as of now: a handler added after an upgrade runs the new code.
            mod = code.current(_check_id(handler))()
            state = mod.init(args)
            if type(state) is CoroutineType:
                state = await state
        except (Exception, ProcessExit) as exc:
            return _reason(exc)
        if type(state) is Refuse:
            return state.reason
        if type(state) is Hibernate:
            state = state.state
            self.asked = True
        return _Installed(handler, mod, state, owner)

    async def _delete(self, handler: Any, args: Any) -> tuple[bool, Any]:
        h = self._find(handler)
        if h is None:
            return False, HandlerNotFound(handler, "module_not_found")
        self._remove(h)
        ok, result = await self._terminate(h, args, "normal")
        return (True, result) if ok else (False, HandlerError(handler, result))

    async def _swap(self, old: Any, args1: Any, new: Any, args2: Any,
                    owner: Pid | None) -> tuple[bool, Any]:
        """swap_handler (owner None: the old handler's owner carries over)
        and swap_sup_handler."""
        h = self._find(old)
        if h is None:
            result: Any = HandlerNotFound(old, "module_not_found")
        else:
            self._remove(h)
            if owner is None:
                owner = h.owner
            result = await self._terminate_for_swap(h, args1, Swapped(new, owner))
        if owner is not None:
            link(owner)
        installed = await self._init(new, (args2, result), owner)
        if isinstance(installed, _Installed):
            self.handlers = [installed, *self.handlers]
            return True, None
        return False, HandlerError(new, installed)

    async def _call(self, handler: Any, request: Any) -> tuple[bool, Any]:
        h = self._find(handler)
        if h is None:
            return False, HandlerNotFound(handler, "bad_module")
        try:
            result = h.mod.handle_call(request, h.state)
            if type(result) is CoroutineType:
                result = await result
            if isinstance(result, Reply):
                h.state = result.state
                self.asked = self.asked or result.hibernate
                return True, result.value
            if type(result) is tuple and len(result) == 2:
                h.state = result[1]
                return True, result[0]
            if result is RemoveHandler or type(result) is RemoveHandler:
                reply = result.reply if type(result) is RemoveHandler else None
                self._remove(h)
                await self._terminate(h, "remove_handler", "normal")
                return True, reply
            if type(result) is SwapHandler:
                await self._swap_in_place(h, result)
                return True, result.reply
        except (Exception, ProcessExit) as exc:
            await self._crash(h, exc, request)
            return False, HandlerError(handler, _reason(exc))
        await self._bad_return(h, result, request)
        return False, HandlerError(handler, BadReturn(result))

    # -- events ------------------------------------------------------------------

    async def _notify(self, event: Any, callback: str) -> None:
        """Hands event to every handler, in order (server_notify)."""
        # The list is never changed in place: a handler removed or swapped
        # meanwhile leaves this loop's list as it was.
        for h in self.handlers:
            try:
                result = getattr(h.mod, callback)(event, h.state)
                if type(result) is CoroutineType:
                    result = await result
            except (Exception, ProcessExit) as exc:
                await self._crash(h, exc, event)
                continue
            if result is RemoveHandler or type(result) is RemoveHandler:
                self._remove(h)
                await self._terminate(h, "remove_handler", "normal")
            elif type(result) is SwapHandler:
                await self._swap_in_place(h, result)
            elif _bad_event_result(result):
                await self._bad_return(h, result, event)
            elif type(result) is Hibernate:
                h.state = result.state
                self.asked = True
            else:
                h.state = result

    async def _swap_in_place(self, h: _Installed, swap: SwapHandler) -> None:
        """A callback returned SwapHandler: the new handler takes the old
        one's place in the list (OTP's do_swap)."""
        index = self.handlers.index(h)
        self._remove(h)
        h.state = swap.state
        result = await self._terminate_for_swap(h, swap.args1, Swapped(swap.handler2, h.owner))
        installed = await self._init(swap.handler2, (swap.args2, result), h.owner)
        if isinstance(installed, _Installed):
            self.handlers = [*self.handlers[:index], installed, *self.handlers[index:]]
            return
        _report_failed_swap(swap.handler2, installed, self.name)
        _tell_owner(h.owner, swap.handler2, installed)

    # -- removing handlers ---------------------------------------------------------

    def _find(self, handler: Any) -> _Installed | None:
        for h in self.handlers:
            if _same_handler(h.id, handler):
                return h
        return None

    def _remove(self, h: _Installed) -> None:
        self.handlers = [x for x in self.handlers if x is not h]

    async def _terminate(self, h: _Installed, arg: Any, reason: Any) -> tuple[bool, Any]:
        """Calls terminate (the handler is already out of the list) and
        tells the owner: (True, what terminate returned), or (False, why it
        raised)."""
        try:
            result = h.mod.terminate(arg, h.state)
            if type(result) is CoroutineType:
                result = await result
        except (Exception, ProcessExit) as exc:
            _tell_owner(h.owner, h.id, reason)
            if type(arg) is not Crash and type(arg) is not BadReturn:
                # OTP returns this to delete_handler and swaps, else drops it.
                _log.warning("gen_event handler %s raised in terminate(%r): %r",
                             _name(h.id), arg, exc)
            return False, _reason(exc)
        _tell_owner(h.owner, h.id, reason)
        return True, result

    async def _terminate_for_swap(self, h: _Installed, arg: Any, reason: Any) -> Any:
        """What goes to the new handler's init: terminate's result, or
        Crash(exc) if it raised (OTP's {'EXIT', Reason})."""
        ok, result = await self._terminate(h, arg, reason)
        return result if ok else Crash(result)

    async def _crash(self, h: _Installed, exc: BaseException, last_in: Any) -> None:
        """A callback raised: log it once and remove the handler."""
        reason = _reason(exc)
        _report(h, reason, last_in, self.name, exc)
        self._remove(h)
        await self._terminate(h, Crash(reason), reason)

    async def _bad_return(self, h: _Installed, value: Any, last_in: Any) -> None:
        """A callback returned a bad value: as a crash (OTP's server_update
        and server_call_update: terminate({error, Value}), reported)."""
        reason = BadReturn(value)
        _report(h, reason, last_in, self.name)
        self._remove(h)
        await self._terminate(h, reason, reason)

    async def _owner_exit(self, pid: Pid, reason: Any) -> None:
        """An owner ended: its supervised handlers go (terminate_supervised)."""
        for h in [h for h in self.handlers if h.owner == pid]:
            self._remove(h)
            h.owner = None              # nobody to tell
            await self._terminate(h, Stop(reason), "shutdown")

    async def _terminate_server(self, reason: Any) -> None:
        """The manager stops: terminate('stop') for every handler, in order;
        owners are told 'shutdown' and unlinked (not the parent)."""
        handlers, self.handlers = self.handlers, []
        for h in handlers:
            await self._terminate(h, "stop", "shutdown")
        for owner in {h.owner for h in handlers if h.owner is not None}:
            if owner != self.parent:
                unlink(owner)
        exit(reason)

    # -- the sys protocol -------------------------------------------------------

    async def _system(self, from_: From, request: Any) -> None:
        op = request[0] if type(request) is tuple and request else request
        if op == "terminate":
            await self._terminate_server(request[1])
        elif op == "get_state":
            gen.reply(from_, [(h.id, h.state) for h in self.handlers])
        elif op == "replace_state" and type(request) is tuple and len(request) == 2:
            gen.reply(from_, self._replace_state(request[1]))
        elif op == "get_status":
            gen.reply(from_, self._status())
        elif op == "suspend":
            gen.reply(from_, "ok")
            if self.hibernate:
                self._hibernate()       # suspended, it stays hibernating (OTP)
            await self._suspended()
        elif op == "resume":
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

    def _replace_state(self, fn: Any) -> list[tuple[Any, Any]]:
        """OTP's system_replace_state: fn((id, state)) -> (id, new_state)
        for each handler; one for which fn raises, or returns anything
        else, keeps its state.  Returns the (id, state) pairs after."""
        pairs = []
        for h in self.handlers:
            current = (h.id, h.state)
            try:
                new = fn(current)
            except (Exception, ProcessExit):
                pairs.append(current)
                continue
            if type(new) is tuple and len(new) == 2 and _same_id(new[0], h.id):
                h.state = new[1]
                pairs.append((h.id, h.state))
            else:
                pairs.append(current)
        return pairs

    def _status(self) -> dict[str, Any]:
        """sys.get_status: the handlers' states as their format_status shows them."""
        handlers = [(h.id, _formatted(h, {"state": h.state}).get("state")) for h in self.handlers]
        log = [] if self.debug is None or self.debug.log is None else list(self.debug.log)
        return {"pid": _me(), "module": "gen_event", "parent": self.parent, "name": self.name,
                "status": self.sys_status, "log": log, "state": handlers}

    def _debug_name(self) -> Any:
        return self.name if self.name is not None else _me()


    # -- hot code upgrade ----------------------------------------------------------

    def _code_epoch_changed(self) -> None:
        """Each handler switches to the current version of its class,
        keeping its state (see code.switch_callback); one that fails stays
        as it was, reported once."""
        self.epoch = _vm.code_epoch()
        for h in self.handlers:
            cls = type(h.mod)
            if h.refused is not None and code.which(cls.__module__) is h.refused:
                continue
            try:
                new_cls, h.mod, h.state = code.switch_callback(
                    cls, h.mod, _sys.migrating(cls, h.state))
            except code.ModuleDeleted:
                continue                # it runs on until purged, as in Erlang
            except Exception as exc:
                h.refused = code.which(cls.__module__)
                _log.error("gen_event handler %s: switching to the current version of %s "
                           "failed: %r; it stays on its old code and state", _name(h.id),
                           cls.__module__, exc, exc_info=exc)
                continue
            h.id = _renamed(h.id, new_cls)

    def _change_code(self, module: str, old_vsn: Any, extra: Any) -> Any:
        """sys.change_code while suspended, for the handlers whose class is
        from module: all switched ('ok'), or, if one code_change raised,
        none (('error', ('callback_failed', exc)))."""
        targets = [h for h in self.handlers if type(h.mod).__module__ == module]
        undo = [(h, h.id, _sys.CodeUndo.take(type(h.mod), h.mod, h.state)) for h in targets]
        done = []
        try:
            for h in targets:
                done.append(_sys.run_code_change(type(h.mod), h.mod, old_vsn,
                                                 _converter(old_vsn, h.state, extra)))
        except Exception as exc:
            self._restore(undo)
            return _sys.callback_failed(exc)
        for h, (cls, mod, state) in zip(targets, done, strict=True):
            h.id, h.mod, h.state, h.refused = _renamed(h.id, cls), mod, state, None
        if self.undo is None:           # abort goes back to before the first change
            self.undo = undo
        return "ok"

    def _abort_code(self) -> None:
        undo, self.undo = self.undo, None
        if undo is not None:
            self._restore(undo)

    def _restore(self, undo: list[tuple[_Installed, Any, _sys.CodeUndo]]) -> None:
        """Puts the handlers back as they were; they do not switch to the
        version now current by themselves at the next message."""
        for h, handler_id, snapshot in undo:
            h.id, h.mod, h.state = handler_id, snapshot.restore_instance(), snapshot.state
            h.refused = code.which(snapshot.cls.__module__)


def _converter(old_vsn: Any, state: Any, extra: Any) -> Any:
    """change_code's step for one handler: its code_change on state."""
    def convert(handler: EventHandler[Any]) -> Any:
        return handler.code_change(old_vsn, state, extra)
    return convert


class _Resume:
    """Continues a coroutine that suspended inside ``handle_message``."""

    __slots__ = ("body", "yielded")

    def __init__(self, body: Any, yielded: Any) -> None:
        self.body = body
        self.yielded = yielded

    def __await__(self) -> Any:
        body, value = self.body, self.yielded
        self.body = self.yielded = None
        try:
            while True:
                try:
                    sent = yield value
                except GeneratorExit:
                    body.close()
                    raise
                except BaseException as exc:
                    value = body.throw(exc)
                else:
                    value = body.send(sent)
        except StopIteration:
            return None


async def _finish(body: Any, yielded: Any) -> None:
    await _Resume(body, yielded)


def _reply(from_: From, outcome: Any) -> None:
    """Replies (ok, value); an answer that cannot be sent becomes an error
    rather than crashing the manager."""
    try:
        gen.reply(from_, outcome)
    except TypeError as exc:
        gen.reply(from_, (False, TypeError(str(exc))))


def _tell_owner(owner: Pid | None, handler: Any, reason: Any) -> None:
    if owner is None:
        return
    try:
        send(owner, GenEventExit(handler, reason))
    except TypeError:           # a reason that cannot be copied
        send(owner, GenEventExit(handler, RuntimeError(repr(reason))))


def _report(h: _Installed, reason: Any, last_in: Any, name: Any,
            exc: BaseException | None = None) -> None:
    """The error report of a crashed handler (OTP's gen_event terminate
    report), through the handler's format_status."""
    status = _formatted(h, {"state": h.state, "message": last_in, "reason": reason})
    _log_report(h.id, status.get("reason", reason), status.get("message", last_in),
                status.get("state"), name, exc)


def _report_failed_swap(handler: Any, reason: Any, name: Any) -> None:
    """A swap whose new handler's init refused: reported as OTP does."""
    _log_report(handler, reason, None, None, name, None)


def _log_report(handler: Any, reason: Any, last_in: Any, state: Any, name: Any,
                exc: BaseException | None) -> None:
    where = repr(name) if name is not None else repr(_me())
    text = f"{type(reason).__qualname__}: {reason}" if isinstance(reason, BaseException) \
        else repr(reason)
    _log.error(
        "gen_event handler %s crashed and was removed.\n  installed in: %s\n"
        "  last event: %r\n  handler state: %r\n  reason: %s",
        _name(handler), where, last_in, state, text,
        exc_info=exc if exc is not None and not isinstance(exc, ProcessExit) else None)


def _formatted(h: _Installed, status: dict[str, Any]) -> dict[str, Any]:
    """The handler's format_status(status); status itself if that raises
    or returns something else than a dict (a report must not fail)."""
    try:
        shown = h.mod.format_status(dict(status))
    except Exception as exc:
        _log.warning("gen_event handler %s: format_status raised %r", _name(h.id), exc)
        return status
    return shown if isinstance(shown, dict) else status


def _bad_event_result(result: Any) -> bool:
    """A handle_event/handle_info result that is another callback's shape."""
    return (type(result) is Reply or type(result) is Refuse
            or result is Reply or result is Refuse or result is SwapHandler)


def _same_id(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


# -- the API ----------------------------------------------------------------------


async def start(name: Any = None, *, timeout: float | None = None,
                hibernate_after: float | None = None) -> Pid:
    """Starts an event manager with no handlers, registered as ``name``: a
    str, or a ``registry.via(reg, key)`` name (OTP's ``{via, Module, Name}``).
    ``hibernate_after`` (seconds, OTP's start option): the manager
    hibernates whenever it has waited that long for a message.

    Raises ``StartError(('already_started', pid))`` if the name is taken.
    """
    pid: Pid = await gen.start(_Manager(_check_name(name), None, hibernate_after),
                               link=False, timeout=timeout)
    return pid


async def start_link(name: Any = None, *, timeout: float | None = None,
                     hibernate_after: float | None = None) -> Pid:
    """Like start, and links the manager to the caller, its parent: an exit
    signal from the parent stops the manager (handlers get ``'stop'``)."""
    pid: Pid = await gen.start(_Manager(_check_name(name), _me(), hibernate_after),
                               link=True, timeout=timeout)
    return pid


async def start_monitor(name: Any = None, *, timeout: float | None = None,
                        hibernate_after: float | None = None) -> tuple[Pid, Ref]:
    """Like start, and monitors the manager: returns ``(pid, ref)``."""
    result: tuple[Pid, Ref] = await gen.start(_Manager(_check_name(name), None,
                                                       hibernate_after), link=False,
                                              timeout=timeout, monitor_child=True)
    return result


def _check_name(name: Any) -> Any:
    from otpvm.registry import Via  # registry needs gen_server: imported late
    if name is None or isinstance(name, (str, Via)):
        return name
    raise TypeError(f"an event manager's name is a str or a registry.via name, not {name!r}")


async def _rpc(mgr: Pid | str, request: tuple[Any, ...], timeout: float | None = None) -> Any:
    ok, value = await gen.call(mgr, request, timeout)
    if ok:
        return value
    if isinstance(value, HandlerError) and isinstance(value.reason, BaseException):
        raise value from value.reason
    raise value


async def add_handler(mgr: Pid | str, handler: HandlerId, args: Any = None) -> None:
    """Installs a handler: ``handler.init(args)`` gives its state.

    Raises ``HandlerError`` (``.reason``: the exception init raised or the
    ``Refuse`` reason) if init refuses, ``CallError`` if there is no manager.
    """
    _check_id(handler)
    await _rpc(mgr, ("add_handler", handler, args, None))


async def add_sup_handler(mgr: Pid | str, handler: HandlerId, args: Any = None) -> None:
    """Like add_handler, and connects the handler to the caller: the caller
    gets ``GenEventExit(handler, reason)`` when the handler is removed, and
    the handler is removed (``terminate(Stop(reason), state)``) when the
    caller ends.  The manager and the caller are linked, as in OTP."""
    _check_id(handler)
    await _rpc(mgr, ("add_handler", handler, args, _me()))


async def delete_handler(mgr: Pid | str, handler: HandlerId, args: Any = None) -> Any:
    """Removes a handler: returns what ``terminate(args, state)`` returned.

    Raises ``HandlerNotFound`` if it is not installed, ``HandlerError`` if
    terminate raised (the handler is removed all the same).
    """
    return await _rpc(mgr, ("delete_handler", handler, args))


async def swap_handler(mgr: Pid | str, old: tuple[HandlerId, Any],
                       new: tuple[HandlerId, Any]) -> None:
    """Replaces ``old = (handler1, args1)`` by ``new = (handler2, args2)``.

    ``handler1.terminate(args1, state)`` runs, then ``handler2.init((args2,
    result))`` with what terminate returned (``Crash(exc)`` if it raised,
    a ``HandlerNotFound`` if handler1 was not installed: handler2 is added
    all the same, as in OTP).  A supervised connection carries over.
    Raises ``HandlerError`` if handler2's init refuses.
    """
    (h1, args1), (h2, args2) = old, new
    _check_id(h2)
    await _rpc(mgr, ("swap_handler", h1, args1, h2, args2, None))


async def swap_sup_handler(mgr: Pid | str, old: tuple[HandlerId, Any],
                           new: tuple[HandlerId, Any]) -> None:
    """Like swap_handler, and the new handler is supervised by the caller."""
    (h1, args1), (h2, args2) = old, new
    _check_id(h2)
    await _rpc(mgr, ("swap_handler", h1, args1, h2, args2, _me()))


def notify(mgr: Pid | str, event: Any) -> None:
    """Sends an event to every handler without waiting; never fails, even
    if the manager does not exist."""
    pid = gen.resolve(mgr)
    if pid is not None:
        send(pid, (NOTIFY, event))


async def sync_notify(mgr: Pid | str, event: Any) -> None:
    """Sends an event and returns once every handler has handled it."""
    await _rpc(mgr, ("sync_notify", event))


async def call(mgr: Pid | str, handler: HandlerId, request: Any,
               timeout: float | None = 5.0) -> Any:
    """Calls one handler's ``handle_call`` and returns its reply.

    Raises ``HandlerNotFound`` if the handler is not installed,
    ``HandlerError`` if it crashed (it is removed), ``CallError`` if the
    manager does not exist or died, ``TimeoutError`` after ``timeout``.
    """
    return await _rpc(mgr, ("call", handler, request), timeout)


async def which_handlers(mgr: Pid | str) -> list[Any]:
    """The installed handlers' ids, in the order they see events."""
    result: list[Any] = await _rpc(mgr, ("which_handlers",))
    return result


async def stop(mgr: Pid | str, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stops the manager: ``terminate('stop', state)`` runs for every
    handler, then the manager exits with ``reason``; returns once it is gone.

    Raises ``CallError('noproc')`` if there is no such manager,
    ``CallError(r)`` if it ended with another reason r, ``TimeoutError``.
    """
    await gen.stop(mgr, reason, timeout)
