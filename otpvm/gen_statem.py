"""gen_statem: OTP's generic state machine, as a callback process.

Subclass ``GenStatem``, choose a callback mode, and return typed results::

    class Door(GenStatem):
        def callback_mode(self):
            return "state_functions"

        def init(self, code):
            return "locked", {"code": code, "typed": ""}

        def locked(self, event_type, content, data):
            match event_type, content:
                case ("call", from_), ("button", digit):
                    typed = data["typed"] + digit
                    if typed == data["code"]:
                        return NextState("open", {**data, "typed": ""},
                                         [Reply(from_, "open"), StateTimeout(10, "lock")])
                    return KeepState({**data, "typed": typed}, Reply(from_, "locked"))
            return KeepStateAndData()

        def open(self, event_type, content, data):
            match event_type:
                case "state_timeout":
                    return NextState("locked", data)
                case ("call", _):
                    return KeepStateAndData(Postpone())
            return KeepStateAndData()

    pid = await gen_statem.start_link(Door, "123", name="door")
    await gen_statem.call("door", ("button", "1"))

The semantics are OTP's (``gen_statem(3)``):

* **Callback modes.** ``'state_functions'``: an event goes to the method
  named after the state, ``state(event_type, content, data)``.
  ``'handle_event_function'``: it goes to ``handle_event(event_type,
  content, state, data)``, and a state can be any value.  Add
  ``'state_enter'`` (``('state_functions', 'state_enter')``) for *state enter
  calls*: on every state change, and before the initial state, the new
  state's callback runs with ``('enter', old_state)``.
* **Event types**: ``('call', from_)``, ``'cast'``, ``'info'``,
  ``'internal'``, ``'timeout'`` (event timeout), ``'state_timeout'``,
  ``('generic_timeout', name)`` and ``'enter'``.
* **Results**: ``NextState``, ``KeepState``, ``KeepStateAndData``,
  ``RepeatState``, ``RepeatStateAndData``, ``Stop``, ``StopAndReply``.
  ``init`` returns ``(state, data)``, ``(state, data, actions)``,
  ``Stop(reason)`` or ``Ignore``.
* **Actions**, executed in order: ``Reply``, ``Postpone`` (the event is
  retried after the next state change), ``NextEvent`` (inserted before
  everything already queued, in the order given), ``EventTimeout``
  (cancelled by any event), ``StateTimeout`` (cancelled by a state change),
  ``GenericTimeout`` (named; cancelled only explicitly), ``Hibernate``
  (see below), ``ChangeCallbackModule``/``PushCallbackModule``/
  ``PopCallbackModule`` (go on with another GenStatem class: a new instance
  of it, no ``init``; a pop goes back to the instance pushed).  For timeouts
  the last action of each kind wins; a time of ``None`` (infinity) cancels,
  ``'update'`` changes the content of a running timer.  A zero time-out is
  delivered after the events already queued but before any new message.
* **Starting**: ``start``/``start_link``/``start_monitor`` register a str
  name or a ``registry.via`` name before ``init``; ``init`` may return
  ``InitError(reason)`` (OTP 26's ``{error, Reason}``) to fail the start
  quietly.  ``enter_loop`` turns a coroutine process that set itself up
  into a state machine; unlike OTP (which reads proc_lib's record of the
  starter), it is given its parent.
* **Hibernation**: after a transition with the ``Hibernate`` action (the
  last one before the state machine waits for its next event), or once it
  has waited ``hibernate_after`` seconds (a start option), it hibernates:
  the built-in containers of its state, data and postponed events are
  rebuilt at their exact size (keep no other reference to them across it)
  and the process drops what it kept for speed, until its next event;
  ``process_info(pid)['hibernating']`` says so.  A system request leaves a
  hibernating state machine hibernating.
* **sys**: ``get_state``/``replace_state`` see ``(state, data)``;
  ``get_status`` gives a dict with ``state``, ``data``, ``queue`` (events
  inserted, not handled yet), ``postponed``, ``timeouts`` (``[(kind,
  content)]``), ``log`` (sys.log's), ``pid``, ``name``, ``parent``,
  ``module``, ``status``, after
  ``format_status`` (OTP's ``format_status/1`` shape: the same callback
  shapes the termination reports, where the dict also has ``reason``);
  ``trace``/``log`` record ``('in', (type, content))`` per event and
  ``('out', value, to, state)`` per reply.  System requests are not events:
  they cancel no timeout.

A callback may be ``async def`` when it has to call another process; the
state machine handles nothing else until it returns, like an OTP callback
blocked in a call.  When a callback raises, ``terminate(exc, state, data)``
runs and the process exits with the exception (logged once, by the VM, with
the state machine's status as a note of the exception).  ``terminate`` also
runs on ``stop``, on a ``Stop`` result, and when the parent's exit signal
arrives while the process traps exits; a ``terminate`` that raises or exits
ends the process with its own reason, reported, as in OTP.  A subclass
inherits every callback: ``sys.change_code`` of one without ``code_change``
keeps state and data (OTP: an ``undef`` error).

Hot code upgrade works as for gen_server: the current version of the class
at start, an automatic switch at the next event after a load, and
``sys.change_code`` under ``sys.suspend``; ``code_change(old_vsn, state,
data, extra)`` returns ``(state, data)``, and ``callback_mode()`` is read
again from the new code after each switch.
"""

from __future__ import annotations

import logging
import time as _time
from collections import deque
from collections.abc import Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from types import CoroutineType
from typing import Any, Literal, NoReturn, TypeAlias

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
    ack,
    check_response,
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
    "CallError", "ChangeCallbackModule", "EventTimeout", "From", "GenStatem", "GenericTimeout",
    "Hibernate", "Ignore", "Ignored", "InitError", "KEEP", "KeepState", "KeepStateAndData",
    "NextEvent", "NextState", "PopCallbackModule", "Postpone", "PushCallbackModule",
    "RepeatState", "RepeatStateAndData", "Reply", "StartError", "StateTimeout", "StatemError",
    "Stop", "StopAndReply", "call", "cast", "enter_loop", "reply", "start", "start_link",
    "start_monitor", "stop",
]
__all__ += [  # OTP's send_request family (otpvm.gen)
    "NO_REPLY", "NO_REQUEST", "RequestId", "RequestIdCollection", "Response", "check_response",
    "receive_response", "reqids_add", "reqids_new", "reqids_size", "reqids_to_list",
    "send_request", "wait_response",
]


_log = logging.getLogger("otpvm")

EventType: TypeAlias = str | tuple[str, Any]
"""``'cast'``, ``'info'``, ``'internal'``, ``'timeout'``, ``'state_timeout'``,
``'enter'``, ``('call', From)`` or ``('generic_timeout', name)``."""

CallbackMode: TypeAlias = str | Sequence[str]
"""``'state_functions'`` or ``'handle_event_function'``, optionally with
``'state_enter'`` (a tuple or list of both)."""

TimeoutTime: TypeAlias = float | Literal["update"] | None
"""Seconds (0 means: right after the events already queued), ``None`` for
infinity (cancels the timer), or ``'update'`` (new content, same timer)."""


class _Keep:
    """The default ``data`` of results that may keep the data as it is."""

    def __repr__(self) -> str:
        return "KEEP"

    def __reduce__(self) -> str:
        return "KEEP"  # one object: a message carries the sentinel itself


KEEP: Any = _Keep()
"""Marks "keep the current data" in ``KeepState``, ``RepeatState`` and ``Stop``."""


class _IgnoreType:
    def __repr__(self) -> str:
        return "Ignore"

    def __reduce__(self) -> str:
        return "Ignore"  # one object: a message carries the sentinel itself


Ignore: Any = _IgnoreType()
"""``init`` result: start nothing (``start`` raises ``Ignored``)."""


@dataclass(frozen=True, slots=True)
class InitError:
    """``init`` result: the start fails with ``reason`` quietly (OTP 26's
    ``{error, Reason}``): ``start`` raises ``StartError(reason)``, the
    process ends with reason ``'normal'`` and nothing is logged."""

    reason: Any


class StatemError(Exception):
    """A callback returned something gen_statem cannot act on.

    ``reason`` is OTP's: ``('bad_return_from_state_function', result)``,
    ``('bad_action_from_state_function', action)``,
    ``('bad_state_enter_action_from_state_function', action)``,
    ``('bad_state_enter_return_from_state_function', result)``,
    ``('bad_return_from_init', result)``,
    ``('bad_return_from_callback_mode', result)`` or
    ``('undefined_state_function', state)``.
    """

    def __init__(self, tag: str, value: Any) -> None:
        super().__init__(tag, value)
        self.reason = (tag, value)

    def __str__(self) -> str:
        return f"{self.reason[0]}: {self.reason[1]!r}"


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """Answers the call ``from_`` with ``value``."""

    from_: From
    value: Any


@dataclass(frozen=True, slots=True)
class Postpone:
    """Keeps the current event and retries it after the next state change."""

    postpone: bool = True


@dataclass(frozen=True, slots=True)
class Hibernate:
    """Shrinks the state machine once it waits for its next event (if this
    transition is the last before it waits): the state, the data and the
    postponed events have their built-in containers rebuilt at their exact
    size, as OTP's hibernate, and ``process_info(pid)['hibernating']`` is
    True until the next event (system requests leave it hibernating)."""

    hibernate: bool = True


@dataclass(frozen=True, slots=True)
class NextEvent:
    """Inserts an event to handle next, before any queued or new event."""

    event_type: EventType
    content: Any = None


@dataclass(frozen=True, slots=True)
class EventTimeout:
    """An event of type ``'timeout'`` after ``time`` seconds, unless any
    event arrives first (which cancels it).  ``absolute=True``: ``time`` is a
    ``time.monotonic()`` deadline.
    """

    time: TimeoutTime
    content: Any = None
    absolute: bool = False

    @classmethod
    def cancel(cls) -> EventTimeout:
        """Cancels the event timeout."""
        return cls(None)

    @classmethod
    def update(cls, content: Any) -> EventTimeout:
        """Changes the content of the running event timeout (or fires one now)."""
        return cls("update", content)


@dataclass(frozen=True, slots=True)
class StateTimeout:
    """An event of type ``'state_timeout'`` after ``time`` seconds, unless
    the state changes first (which cancels it).
    """

    time: TimeoutTime
    content: Any = None
    absolute: bool = False

    @classmethod
    def cancel(cls) -> StateTimeout:
        """Cancels the state timeout."""
        return cls(None)

    @classmethod
    def update(cls, content: Any) -> StateTimeout:
        """Changes the content of the running state timeout (or fires one now)."""
        return cls("update", content)


@dataclass(frozen=True, slots=True)
class GenericTimeout:
    """An event of type ``('generic_timeout', name)`` after ``time`` seconds;
    only restarting or cancelling that name stops it.
    """

    name: Any
    time: TimeoutTime
    content: Any = None
    absolute: bool = False

    @classmethod
    def cancel(cls, name: Any) -> GenericTimeout:
        """Cancels the generic timeout ``name``."""
        return cls(name, None)

    @classmethod
    def update(cls, name: Any, content: Any) -> GenericTimeout:
        """Changes the content of the running timeout ``name`` (or fires one now)."""
        return cls(name, "update", content)


@dataclass(frozen=True, slots=True)
class ChangeCallbackModule:
    """Goes on with another GenStatem class, from the state enter call this
    transition may make on: a new instance of ``cls`` (no ``init``), whose
    ``callback_mode()`` is read at once."""

    cls: type[GenStatem]


@dataclass(frozen=True, slots=True)
class PushCallbackModule:
    """Like ChangeCallbackModule, and remembers the current class (and
    instance) for PopCallbackModule."""

    cls: type[GenStatem]


@dataclass(frozen=True, slots=True)
class PopCallbackModule:
    """Goes back to the class (and instance) that the last
    PushCallbackModule replaced; with none pushed, the state machine
    crashes with ``bad_action_from_state_function``."""


Action: TypeAlias = (Reply | Postpone | Hibernate | NextEvent | EventTimeout | StateTimeout
                     | GenericTimeout | ChangeCallbackModule | PushCallbackModule
                     | PopCallbackModule | type[Postpone] | type[Hibernate]
                     | type[PopCallbackModule])
Actions: TypeAlias = Action | Sequence[Action]

_ACTION_TYPES = (Reply, Postpone, Hibernate, NextEvent, EventTimeout, StateTimeout,
                 GenericTimeout, ChangeCallbackModule, PushCallbackModule, PopCallbackModule)


# -- results ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NextState:
    """Go to ``state`` (maybe the same one) with ``data``, then run ``actions``."""

    state: Any
    data: Any
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class KeepState:
    """Stay in the state, with new ``data`` (or the same, by default)."""

    data: Any = KEEP
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class KeepStateAndData:
    """Stay in the state with the same data; only run ``actions``."""

    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class RepeatState:
    """Like KeepState, but the state enter call runs again (if enabled)."""

    data: Any = KEEP
    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class RepeatStateAndData:
    """Like KeepStateAndData, but the state enter call runs again (if enabled)."""

    actions: Actions = ()


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop with ``reason`` (``terminate`` runs), with new ``data`` if given."""

    reason: Any = "normal"
    data: Any = KEEP


@dataclass(frozen=True, slots=True)
class StopAndReply:
    """Send ``replies`` (Reply actions), then stop like ``Stop``."""

    reason: Any
    replies: Reply | Sequence[Reply]
    data: Any = KEEP


Result: TypeAlias = (NextState | KeepState | KeepStateAndData | RepeatState | RepeatStateAndData
                     | Stop | StopAndReply | type[KeepStateAndData]
                     | type[RepeatStateAndData] | type[Stop])


# -- the behaviour --------------------------------------------------------------


class GenStatem:
    """Base class of a state machine: override the callbacks you need.

    In ``'state_functions'`` mode, define one method per state, named after
    it: ``def locked(self, event_type, content, data) -> Result``.  In
    ``'handle_event_function'`` mode, override ``handle_event``.  Any of them
    may be ``async def``.
    """

    def callback_mode(self) -> CallbackMode:
        """``'state_functions'`` (the default) or ``'handle_event_function'``,
        optionally together with ``'state_enter'``.

        Called after ``init`` and after ``code_change``.
        """
        return "state_functions"

    def init(self, args: Any) -> Any:
        """Returns ``(state, data)``, ``(state, data, actions)``,
        ``Stop(reason)`` or ``Ignore``.
        """
        raise NotImplementedError(f"{type(self).__qualname__} must define init")

    def handle_event(self, event_type: EventType, content: Any, state: Any, data: Any) -> Any:
        """Every event, in ``'handle_event_function'`` mode: returns a Result."""
        raise NotImplementedError(f"{type(self).__qualname__} must define handle_event")

    def terminate(self, reason: Any, state: Any, data: Any) -> Any:
        """Called when the state machine stops (may be ``async def``); its
        return value is ignored.
        """

    def code_change(self, old_vsn: Any, state: Any, data: Any, extra: Any) -> tuple[Any, Any]:
        """Hot upgrade: returns ``(state, data)`` converted for the new code
        (called as gen_server's is: see GenServer.code_change)."""
        return state, data

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Trims what ``sys.get_status`` shows (for example secrets in the data)."""
        return status


# -- the engine -------------------------------------------------------------------

_TIMEOUT = "$statem_timeout"
_STATE_FUNCTIONS = "state_functions"
_HANDLE_EVENT_FUNCTION = "handle_event_function"
_STATE_ENTER = "state_enter"

Event: TypeAlias = tuple[Any, Any]
_Step: TypeAlias = Generator[Any, Any, None]


class _Stopping(Exception):
    """Internal: a callback asked to stop (never escapes the engine)."""

    def __init__(self, reason: Any, replies: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.replies = replies


class _Transition:
    """What the callbacks of one event asked for, applied all at once."""

    __slots__ = ("state", "data", "postpone", "next_events", "timeouts", "hibernate")

    def __init__(self, state: Any, data: Any) -> None:
        self.state = state
        self.data = data
        self.postpone = False
        self.hibernate = False
        self.next_events: list[Event] = []
        self.timeouts: list[tuple[Any, TimeoutTime, Any, bool]] = []


def _is_awaitable(value: Any) -> bool:
    return type(value) is CoroutineType or (
        not isinstance(value, (tuple, *_RESULT_CLASSES)) and hasattr(value, "__await__"))


def _abnormal(reason: Any) -> bool:
    if isinstance(reason, str):
        return reason not in ("normal", "shutdown")
    return not (type(reason) is tuple and len(reason) == 2 and reason[0] == "shutdown")


def _drive(step: _Step) -> Coroutine[Any, Any, None] | None:
    """Runs the engine's generator: synchronously while every callback is
    plain, as a coroutine (that the VM runs) from the first async one on.
    """
    try:
        pending = step.send(None)
    except StopIteration:
        return None
    return _drive_async(step, pending)


async def _drive_async(step: _Step, pending: Any) -> None:
    while True:
        try:
            value = await pending
        except (Exception, ProcessExit) as exc:
            try:
                pending = step.throw(exc)
            except StopIteration:
                return
        else:
            try:
                pending = step.send(value)
            except StopIteration:
                return


class _Statem(_sys.CodeChanging):
    """The callback-process handler that runs a GenStatem."""

    def __init__(self, cls: type[GenStatem] | str, args: Any, name: Any,
                 hibernate_after: float | None = None) -> None:
        if isinstance(cls, str) and ":" in cls:
            cls = code.ref(cls).resolve()         # a late-bound "pkg.mod:Name"
        if not (isinstance(cls, type) and issubclass(cls, GenStatem)):
            raise TypeError(f"gen_statem needs a GenStatem subclass, not {cls!r}")
        if not (name is None or isinstance(name, str) or _is_via(name)):
            raise TypeError(f"a gen_statem name is a str or a registry.via name, not {name!r}")
        self.initial_call = f"{cls.__module__}.{cls.__qualname__}.init"
        self.cls = cls
        self.args = args
        self.name = name
        self.starter: From | None = None
        self.parent: Pid | None = None
        self.pid: Pid | None = None
        self.mod: GenStatem | None = None
        self.state: Any = None
        self.data: Any = None
        self.handle_event: Any = None       # the bound handle_event, in that mode
        self.state_enter = False
        self.queue: deque[Event] = deque()  # received (or inserted) but not handled
        self.postponed: list[Event] = []    # oldest first
        self.timers: dict[Any, list[Any]] = {}   # kind -> [TimerRef|None, token, content]
        self.t0q: list[Any] = []            # kinds of the zero timeouts, in order
        self.token = 0
        self.epoch = 0                      # the code epoch cls was last resolved in
        self.undo: tuple[_sys.CodeUndo, Any, bool] | None = None   # change_code's
        self.refused: Any = None            # the code.Version it failed to switch to
        self.debug: _sys.Debug | None = None   # sys.trace / sys.log, None while off
        self.module_stack: list[tuple[type, GenStatem]] = []  # push_callback_module's
        self.entered: tuple[Any, Any, Any] | None = None   # enter_loop's state, data, actions
        self.hibernate = False              # the last transition hibernated: until an event
        after = _idle.check(hibernate_after)
        self.idle = None if after is None else _idle.IdleTimer(after)   # hibernate_after's

    # -- start ------------------------------------------------------------

    def start(self) -> Any:
        if self.entered is not None:
            return _drive(self._enter())
        return _drive(self._init())

    def _enter(self) -> _Step:
        """enter_loop: the process is the state machine now, without init."""
        assert self.entered is not None
        (state, data, actions), self.entered = self.entered, None
        self.pid = _me()
        self.epoch = _code_epoch()
        self.cls = code.current(self.cls)
        self.mod = mod = self.cls()
        self._set_callback_mode(mod)
        self.state, self.data = state, data
        yield from self._run(None, actions)

    def _init(self) -> _Step:
        starter = self.starter
        assert starter is not None
        self.pid = _me()
        self.parent = starter.pid
        if self.name is not None:
            yield from self._register(starter)
        ignored: Ignored | InitError | None = None
        stop_reason: Any = KEEP
        self.epoch = _code_epoch()
        try:
            # The class as of now: a restart after an upgrade runs the new code.
            self.cls = code.current(self.cls)
            self.mod = mod = self.cls()
            result = mod.init(self.args)
            if _is_awaitable(result):
                result = yield result
            if result is Ignore:
                ignored = Ignored(f"{self.cls.__qualname__}.init returned Ignore")
            elif type(result) is InitError:
                ignored = result
            elif result is Stop or isinstance(result, Stop):
                stop_reason = result.reason if isinstance(result, Stop) else "normal"
            else:
                if type(result) is tuple and len(result) in (2, 3):
                    state, data, actions = (*result, ())[:3]
                elif isinstance(result, NextState):
                    state, data, actions = result.state, result.data, result.actions
                else:
                    raise StatemError("bad_return_from_init", result)
                self._set_callback_mode(mod)
        except (Exception, ProcessExit) as exc:
            ack(starter, exc.reason if isinstance(exc, ProcessExit) else exc)
            raise
        if ignored is not None:
            ack(starter, ignored.reason if isinstance(ignored, InitError) else ignored)
            exit("normal")
        if stop_reason is not KEEP:
            ack(starter, stop_reason)        # OTP: {error, Reason}, then exit(Reason)
            exit(stop_reason)
        ack(starter)
        self.state, self.data = state, data
        yield from self._run(None, actions)

    def _register(self, starter: From) -> _Step:
        """Takes the name before init runs, or fails the start with
        ``('already_started', pid)``: a registered name at once, a
        ``registry.via`` name through its registry."""
        name = self.name
        assert self.pid is not None
        if isinstance(name, str):
            try:
                register(name, self.pid)
            except NameRegistrationError:
                ack(starter, ("already_started", whereis(name)))
                exit("normal")
            return
        # registry needs gen_server: imported late
        from otpvm import registry
        try:
            yield registry.register(name.registry, name.key)
        except registry.AlreadyRegisteredError as exc:
            ack(starter, ("already_started", exc.pid))
            exit("normal")

    def _set_callback_mode(self, mod: GenStatem) -> None:
        self.handle_event, self.state_enter = _callback_mode(mod)

    # -- messages -----------------------------------------------------------

    def handle_message(self, msg: Any) -> Any:
        if self.epoch != _code_epoch():
            self._code_epoch_changed()
        if type(msg) is tuple:
            size = len(msg)
            tag = msg[0] if size and type(msg[0]) is str else None
            if size == 3:
                if tag == gen.CALL:
                    return _drive(self._run((("call", msg[1]), msg[2])))
                if tag == _TIMEOUT:
                    entry = self.timers.get(msg[1])
                    if entry is None or entry[1] != msg[2] or entry[0] is None:
                        self._rest()        # a cancelled timer's late message
                        return None
                    del self.timers[msg[1]]
                    return _drive(self._run((msg[1], entry[2])))
                if tag == gen.SYSTEM:
                    more = self._system(msg[1], msg[2])
                    if more is None:
                        self._rest()
                    return more
            elif size == 2:
                if tag == gen.CAST:
                    return _drive(self._run(("cast", msg[1])))
                if tag == _idle.TAG and self.idle is not None and self.idle.is_mine(msg):
                    self._idle_timeout()
                    return None
        elif type(msg) is Exit and msg.pid == self.parent:
            return _drive(self._shutdown(msg.reason))   # the parent's exit, trapped
        return _drive(self._run(("info", msg)))

    # -- the loop -------------------------------------------------------------

    def _run(self, event: Event | None, init_actions: Any = None) -> _Step:
        """Handles event, then every event it queued, until only the mailbox
        is left (or, from init, runs the initial transition first).
        """
        try:
            if init_actions is not None:
                yield from self._initial_transition(init_actions)
                event = self._next_event()
            while event is not None:
                yield from self._handle(event)
                event = self._next_event()
            self._rest()
        except _Stopping as stopping:
            for item in _listify(stopping.replies):
                if type(item) is not Reply:
                    yield from self._crash(StatemError("bad_reply_action_from_state_function",
                                                       item))
                self._reply(item.from_, item.value, self.state)
            yield from self._shutdown(stopping.reason)
        except ProcessExit as exc:            # exit(reason) inside a callback
            yield from self._shutdown(exc.reason)
        except Exception as exc:
            yield from self._crash(exc)

    def _initial_transition(self, actions: Any) -> _Step:
        tr = _Transition(self.state, self.data)
        self._actions(tr, actions, True)
        tr.postpone = False                   # there is no event to postpone
        if self.state_enter:
            yield from self._enter_calls(tr, True)
        self._transition(tr, None)

    def _handle(self, event: Event) -> _Step:
        if self.debug is not None:
            _sys.handle_debug(self.debug, self._debug_name(), ("in", event))
        event_type, content = event
        state = self.state
        if self.handle_event is not None:
            result = self.handle_event(event_type, content, state, self.data)
        else:
            result = self._state_function(state)(event_type, content, self.data)
        if _is_awaitable(result):
            result = yield result
        tr = _Transition(state, self.data)
        call_enter = self._result(tr, result, True)
        if call_enter and self.state_enter:
            yield from self._enter_calls(tr, True)
        self._transition(tr, event)

    def _enter_calls(self, tr: _Transition, call_enter: bool) -> _Step:
        """State enter calls, repeated while they return RepeatState."""
        while call_enter:
            if self.handle_event is not None:
                result = self.handle_event("enter", self.state, tr.state, tr.data)
            else:
                result = self._state_function(tr.state)("enter", self.state, tr.data)
            if _is_awaitable(result):
                result = yield result
            call_enter = self._result(tr, result, False)

    def _state_function(self, state: Any) -> Any:
        fn = getattr(self.mod, state, None) if isinstance(state, str) else None
        if fn is None or not callable(fn) or state.startswith("_"):
            raise StatemError("undefined_state_function", state)
        return fn

    def _result(self, tr: _Transition, result: Any, state_call: bool) -> bool:
        """Applies a callback's result to tr; whether a state enter call is due."""
        kind = type(result)
        if kind is NextState:
            if result.state == tr.state:
                call_enter = False
            elif state_call:
                tr.state = result.state
                call_enter = True
            else:
                raise StatemError("bad_state_enter_return_from_state_function", result)
            tr.data = result.data
        elif kind is KeepState or kind is RepeatState:
            if result.data is not KEEP:
                tr.data = result.data
            call_enter = kind is RepeatState
        elif kind is KeepStateAndData or kind is RepeatStateAndData:
            call_enter = kind is RepeatStateAndData
        elif result is KeepStateAndData or result is RepeatStateAndData:
            return result is RepeatStateAndData
        elif result is Stop:
            raise _Stopping("normal", ())
        elif kind is Stop or kind is StopAndReply:
            self.state = tr.state
            self.data = tr.data if result.data is KEEP else result.data
            raise _Stopping(result.reason, result.replies if kind is StopAndReply else ())
        else:
            raise StatemError("bad_return_from_state_function", result)
        if result.actions:
            self._actions(tr, result.actions, state_call)
        return call_enter

    def _actions(self, tr: _Transition, actions: Any, state_call: bool) -> None:
        for action in _listify(actions):
            kind = type(action)
            if kind is Reply:
                self._reply(action.from_, action.value, tr.state)
            elif kind is EventTimeout or kind is StateTimeout:
                tr.timeouts.append(("timeout" if kind is EventTimeout else "state_timeout",
                                    _check_time(action), action.content, action.absolute))
            elif kind is GenericTimeout:
                tr.timeouts.append((("generic_timeout", action.name), _check_time(action),
                                    action.content, action.absolute))
            elif kind is Postpone or action is Postpone:
                postpone = action is Postpone or action.postpone
                if postpone and not state_call:
                    raise StatemError("bad_state_enter_action_from_state_function", action)
                tr.postpone = postpone
            elif kind is NextEvent:
                if not state_call:
                    raise StatemError("bad_state_enter_action_from_state_function", action)
                if not _valid_event_type(action.event_type):
                    raise StatemError("bad_action_from_state_function", action)
                tr.next_events.append((action.event_type, action.content))
            elif kind is Hibernate or action is Hibernate:
                tr.hibernate = action is Hibernate or action.hibernate
            elif kind in _MODULE_ACTIONS or action is PopCallbackModule:
                if not state_call:
                    raise StatemError("bad_state_enter_action_from_state_function", action)
                self._module_action(action)
            else:
                raise StatemError("bad_action_from_state_function", action)

    def _module_action(self, action: Any) -> None:
        """change/push/pop_callback_module, at once: the state enter call
        of this transition already goes to the new class (OTP-18239)."""
        assert self.mod is not None
        if action is PopCallbackModule or type(action) is PopCallbackModule:
            if not self.module_stack:
                raise StatemError("bad_action_from_state_function", action)
            cls, mod = self.module_stack.pop()
        else:
            cls = action.cls
            if not (isinstance(cls, type) and issubclass(cls, GenStatem)):
                raise StatemError("bad_action_from_state_function", action)
            if type(action) is PushCallbackModule:
                self.module_stack.append((self.cls, self.mod))
            mod = cls()
        self.handle_event, self.state_enter = _callback_mode(mod)
        self.cls, self.mod = cls, mod

    def _transition(self, tr: _Transition, event: Event | None) -> None:
        """OTP's transition: postpone, retry postponed events on a state
        change, cancel the event (and state) timeout, insert next events,
        start timeouts.
        """
        if tr.postpone and event is not None:
            self.postponed.append(event)
        timers = self.timers
        if tr.state != self.state:
            if self.postponed:
                self.queue.extendleft(reversed(self.postponed))
                self.postponed = []
            if "state_timeout" in timers:
                self._cancel("state_timeout")
        if "timeout" in timers:
            self._cancel("timeout")
        if tr.next_events:
            self.queue.extendleft(reversed(tr.next_events))
        self.state = tr.state
        self.data = tr.data
        self.hibernate = tr.hibernate
        if tr.timeouts:
            self._start_timeouts(tr.timeouts)

    def _next_event(self) -> Event | None:
        if self.queue:
            return self.queue.popleft()
        if self.t0q:
            kind = self.t0q.pop(0)
            return kind, self.timers.pop(kind)[2]
        return None

    # -- waiting: hibernation ----------------------------------------------------

    def _rest(self) -> None:
        """The state machine waits for its next event: it hibernates if its
        last transition asked to (again after a system request, as OTP's
        system_continue), else hibernate_after's wait starts again."""
        if self.hibernate:
            self._hibernate()
        elif self.idle is not None:
            assert self.pid is not None
            self.idle.rest(self.pid)

    def _idle_timeout(self) -> None:
        """hibernate_after's timer: hibernates if no event came for that long."""
        assert self.idle is not None and self.pid is not None
        if self.idle.fired(self.pid) or self.hibernate:
            self._hibernate()

    def _hibernate(self) -> None:
        """Shrinks the state machine until its next message, as OTP's
        hibernate: state, data and postponed events (its live data) have
        their built-in containers rebuilt at their exact size, and the
        process drops what it kept for speed (_vm._hibernate).  What
        cannot be rebuilt is kept as it is."""
        try:
            self.state, self.data, self.postponed = _vm._compact(
                (self.state, self.data, self.postponed))
        except Exception:
            pass                          # a stale class in it: keep it as it is
        _vm._hibernate()

    # -- timeouts -------------------------------------------------------------

    def _start_timeouts(self, timeouts: list[tuple[Any, TimeoutTime, Any, bool]]) -> None:
        seen = set()
        zero = []
        timers = self.timers
        for kind, time, content, absolute in reversed(timeouts):   # the last one wins
            if kind in seen:
                continue
            seen.add(kind)
            if time is None:
                self._cancel(kind)
            elif time == "update":
                entry = timers.get(kind)
                if entry is not None:
                    entry[2] = content
                else:
                    timers[kind] = [None, 0, content]
                    zero.append(kind)
            elif time == 0 and not absolute:
                self._cancel(kind)
                timers[kind] = [None, 0, content]
                zero.append(kind)
            else:
                self._cancel(kind)
                assert not isinstance(time, str)
                delay = max(0.0, time - _time.monotonic()) if absolute else time
                self.token += 1
                assert self.pid is not None
                tref = send_after(delay, self.pid, (_TIMEOUT, kind, self.token))
                timers[kind] = [tref, self.token, content]
        if zero:
            zero.reverse()
            self.t0q.extend(zero)

    def _cancel(self, kind: Any) -> None:
        entry = self.timers.pop(kind, None)
        if entry is None:
            return
        if entry[0] is None:
            self.t0q.remove(kind)
        else:
            cancel_timer(entry[0])        # a message already sent is dropped by its token

    # -- the end ----------------------------------------------------------------

    def _terminate(self, reason: Any) -> _Step:
        if self.mod is not None:
            result = self.mod.terminate(reason, self.state, self.data)
            if _is_awaitable(result):
                yield result

    def _report(self, reason: Any) -> None:
        if _abnormal(reason):
            _log.error("%s", self._report_status(reason))

    def _shutdown(self, reason: Any) -> _Step:
        """Runs terminate, logs an abnormal reason, exits with reason.  A
        terminate that raises or exits ends the process with its reason
        instead (reported the same way), as in OTP."""
        try:
            yield from self._terminate(reason)
        except ProcessExit as exc:
            self._report(exc.reason)
            raise
        except Exception as exc:
            raise self._noted(exc) from None
        self._report(reason)
        exit(reason)

    def _crash(self, exc: Exception) -> _Step:
        """terminate(exc, state, data), then the exception ends the process:
        the VM logs it once, as a crash report, which carries the state
        machine's status (through format_status) as a note."""
        try:
            yield from self._terminate(exc)
        except ProcessExit as exit_exc:   # terminate's own exit wins, as in OTP
            self._report(exit_exc.reason)
            raise
        except Exception as terminate_exc:
            raise self._noted(terminate_exc) from exc
        raise self._noted(exc)

    def _noted(self, exc: BaseException) -> BaseException:
        """exc, with the state machine's status added as a note (once)."""
        notes = getattr(exc, "__notes__", ())
        if not any(isinstance(n, str) and n.startswith("gen_statem ") for n in notes):
            exc.add_note(self._report_status(exc))
        return exc

    # -- status and reports ---------------------------------------------------

    def _status(self, **more: Any) -> Any:
        """What get_status and the termination report show, through
        format_status: OTP's status items, ``timeouts`` as ``[(kind,
        content)]`` in start order, ``queue`` the events inserted but not
        handled yet, ``log`` the sys.log events, and (in a report)
        ``reason``."""
        status = {"pid": self.pid, "module": self.cls, "state": self.state,
                  "data": self.data, "parent": self.parent, "name": self.name,
                  "queue": list(self.queue), "postponed": list(self.postponed),
                  "timeouts": [(kind, entry[2]) for kind, entry in self.timers.items()],
                  "log": [] if self.debug is None or self.debug.log is None
                  else list(self.debug.log),
                  "status": self.sys_status, **more}
        if self.mod is None:
            return status
        return self.mod.format_status(status)

    def _report_status(self, reason: Any) -> str:
        """The state machine's part of a termination report (as OTP's
        ``** State machine ... terminating``), through format_status; a
        format_status that fails is reported instead of the status."""
        try:
            status = self._status(reason=reason)
            if not isinstance(status, dict):
                raise TypeError(f"format_status returned {status!r}: expected a dict")
            shown = ", ".join(f"{key} {status[key]!r}" for key in (
                "state", "data", "queue", "postponed", "timeouts", "log") if key in status)
            return (f"gen_statem {self.pid!r} ({self.cls.__qualname__}) terminating with "
                    f"reason {status.get('reason', reason)!r}: {shown}")
        except Exception as exc:
            return (f"gen_statem {self.pid!r} ({self.cls.__qualname__}) terminating with "
                    f"reason {reason!r}; its status could not be shown: {exc!r}")

    # -- the sys protocol -----------------------------------------------------

    def _system(self, from_: From, request: Any) -> Any:
        if type(request) is tuple and request[:1] == ("terminate",):
            return _drive(self._shutdown(request[1]))    # stop() waits for the Down
        if request == "get_state":
            gen.reply(from_, (self.state, self.data))
        elif type(request) is tuple and request[:1] == ("replace_state",):
            try:
                self.state, self.data = request[1]((self.state, self.data))
            except Exception as exc:
                gen.reply(from_, ("error", exc))
            else:
                gen.reply(from_, (self.state, self.data))
        elif request == "get_status":
            gen.reply(from_, self._status())
        elif request == "suspend":
            gen.reply(from_, "ok")
            return self._suspend()
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

    async def _suspend(self) -> None:
        """Suspended: a hibernating state machine stays so (OTP)."""
        if self.hibernate:
            self._hibernate()
        await self._suspended()
        self._rest()

    def _debug_name(self) -> Any:
        return self.name if self.name is not None else self.pid

    def _reply(self, from_: From, value: Any, state: Any) -> None:
        gen.reply(from_, value)
        if self.debug is not None:
            _sys.handle_debug(self.debug, self._debug_name(), ("out", value, from_.pid, state))

    # -- hot code upgrade (as gen_server's: see there) --------------------------

    def _code_epoch_changed(self) -> None:
        """Switches to the current version of the class at a safe point
        (before an event), keeping state and data (migrated by code_change
        when the version asks for it) and reading callback_mode() again.
        A failure leaves everything as it was, reported once."""
        self.epoch = _code_epoch()
        cls, mod = self.cls, self.mod
        if mod is None or (self.refused is not None
                           and code.which(cls.__module__) is self.refused):
            return
        try:
            new_cls = code.current(cls)
            if new_cls is cls:
                return
            new = _sys.carry(new_cls, mod)
            state, data = self.state, self.data
            migration = code.pending_code_change(new_cls, code.vsn_of(cls))
            if migration is not None:         # on a copy: it may change it, then fail
                state, data = _sys.snapshot((state, data))
                converter = mod if code.is_down(migration[0]) else new
                state, data = _state_and_data(
                    converter.code_change(migration[0], state, data, migration[1]), new_cls)
            handle_event, enter = _callback_mode(new)
        except code.ModuleDeleted:
            return                        # deleted: it runs on until purged, as in Erlang
        except Exception as exc:
            self.refused = code.which(cls.__module__)
            vsn = self.refused.vsn if self.refused is not None else "?"
            _log.error("gen_statem %r (%s): switching to version %s of %s failed: %r; it "
                       "stays on its old code, state and data", self.pid, cls.__qualname__,
                       vsn, cls.__module__, exc, exc_info=exc)
            return
        self.cls, self.mod, self.state, self.data = new_cls, new, state, data
        self.handle_event, self.state_enter = handle_event, enter

    def _change_code(self, module: str, old_vsn: Any, extra: Any) -> Any:
        """sys.change_code while suspended: 'ok' or ('error', ('callback_failed', exc))."""
        assert self.mod is not None
        undo = _sys.CodeUndo.take(self.cls, self.mod, (self.state, self.data))
        state, data = self.state, self.data
        try:
            cls, mod, (state, data) = _sys.run_code_change(
                self.cls, self.mod, old_vsn, lambda m: _state_and_data(
                    m.code_change(old_vsn, state, data, extra), type(m)))
            handle_event, enter = _callback_mode(mod)
        except Exception as exc:
            self.mod = undo.restore_instance()
            self.state, self.data = undo.state
            self._stay(undo.cls)
            return _sys.callback_failed(exc)
        if self.undo is None:             # abort goes back to before the first change
            self.undo = (undo, self.handle_event, self.state_enter)
        self.cls, self.mod, self.state, self.data = cls, mod, state, data
        self.handle_event, self.state_enter = handle_event, enter
        self.refused = None
        self.epoch = _code_epoch()        # switched: nothing to do at the next event
        return "ok"

    def _abort_code(self) -> None:
        undo, self.undo = self.undo, None
        if undo is not None:
            snapshot, self.handle_event, self.state_enter = undo
            self.cls, self.mod = snapshot.cls, snapshot.restore_instance()
            self.state, self.data = snapshot.state
            self._stay(snapshot.cls)

    def _stay(self, cls: type) -> None:
        """Stays on cls: the version now current is not switched to by
        itself at the next event."""
        self.epoch = _code_epoch()
        self.refused = code.which(cls.__module__)



_RESULT_CLASSES = (NextState, KeepState, KeepStateAndData, RepeatState, RepeatStateAndData,
                   Stop, StopAndReply, *_ACTION_TYPES)


def _is_via(name: Any) -> bool:
    # registry needs gen_server: imported late
    from otpvm.registry import Via
    return isinstance(name, Via)


def _callback_mode(mod: GenStatem) -> tuple[Any, bool]:
    """What mod.callback_mode() asks for: (the bound handle_event, or None
    in 'state_functions' mode; whether state enter calls are on)."""
    result = mod.callback_mode()
    modes = [result] if isinstance(result, str) else list(result)
    mode = None
    enter = False
    for item in modes:
        if item in (_STATE_FUNCTIONS, _HANDLE_EVENT_FUNCTION):
            mode = item
        elif item == _STATE_ENTER:
            enter = True
        else:
            mode = None
            break
    if mode is None:
        raise StatemError("bad_return_from_callback_mode", result)
    return (mod.handle_event if mode == _HANDLE_EVENT_FUNCTION else None), enter


def _state_and_data(result: Any, cls: type) -> tuple[Any, Any]:
    if type(result) is not tuple or len(result) != 2:
        raise TypeError(f"{cls.__qualname__}.code_change returned {result!r}: "
                        "expected (state, data)")
    return result


_code_epoch = _vm.code_epoch


def _listify(actions: Any) -> Iterable[Any]:
    if isinstance(actions, (list, tuple)):
        return actions
    return (actions,)


def _check_time(action: EventTimeout | StateTimeout | GenericTimeout) -> TimeoutTime:
    time = action.time
    if time is None or time == "update":
        return time
    if isinstance(time, (int, float)) and not isinstance(time, bool) and (
            time >= 0 or action.absolute):
        return time
    raise StatemError("bad_action_from_state_function", action)


_MODULE_ACTIONS = (ChangeCallbackModule, PushCallbackModule, PopCallbackModule)

_SIMPLE_EVENT_TYPES = frozenset(("cast", "info", "internal", "timeout", "state_timeout"))


def _valid_event_type(event_type: Any) -> bool:
    if type(event_type) is str:
        return event_type in _SIMPLE_EVENT_TYPES
    if type(event_type) is tuple and len(event_type) == 2:
        if event_type[0] == "call":
            return isinstance(event_type[1], From)
        return bool(event_type[0] == "generic_timeout")
    return False


# -- the API ------------------------------------------------------------------


async def start(cls: type[GenStatem] | str, args: Any = None, *, name: Any = None,
                timeout: float | None = None, hibernate_after: float | None = None) -> Pid:
    """Starts a state machine and returns its pid once ``init`` has completed.

    With ``name`` (a str, or a ``registry.via(reg, key)`` name), the
    process registers it before ``init`` runs, atomically: if it is taken,
    ``StartError(('already_started', pid))`` is raised.
    Raises ``StartError`` if init fails, stops or returns InitError
    (``reason`` says why), ``Ignored`` if init returned Ignore.

    ``hibernate_after`` (seconds, OTP's start option): the state machine
    hibernates (as the Hibernate action) whenever it has waited that long
    for an event.
    """
    pid: Pid = await gen.start(_Statem(cls, args, name, hibernate_after), link=False,
                               timeout=timeout)
    return pid


async def start_link(cls: type[GenStatem] | str, args: Any = None, *, name: Any = None,
                     timeout: float | None = None,
                     hibernate_after: float | None = None) -> Pid:
    """Like start, and links the state machine to the caller (its parent)."""
    pid: Pid = await gen.start(_Statem(cls, args, name, hibernate_after), link=True,
                               timeout=timeout)
    return pid


async def start_monitor(cls: type[GenStatem] | str, args: Any = None, *, name: Any = None,
                        timeout: float | None = None,
                        hibernate_after: float | None = None) -> tuple[Pid, Ref]:
    """Like start, and monitors the state machine: returns (pid, ref)."""
    result: tuple[Pid, Ref] = await gen.start(_Statem(cls, args, name, hibernate_after),
                                              link=False,
                                              timeout=timeout, monitor_child=True)
    return result


def enter_loop(cls: type[GenStatem] | str, state: Any, data: Any, actions: Any = (), *,
               name: Any = None, parent: Pid | None = None,
               hibernate_after: float | None = None) -> NoReturn:
    """Makes the calling coroutine process a state machine, in ``state``
    with ``data``, after ``actions`` (OTP's ``enter_loop/4,5,6``): for a
    process that set itself up (registered a name, acknowledged its own
    start...) without ``init``.  Never returns: the caller's body unwinds
    (its ``finally`` blocks run) and the process, with the same pid,
    mailbox, links and monitors, runs as the state machine; the state
    enter call, if enabled, comes first, as after ``init``.

    With ``name`` (a str, or a ``registry.via`` name), the process must
    already be registered under it, or it exits with
    ``'process_not_registered'`` (``('process_not_registered_via',
    registry)``).  ``parent`` is the process whose exit signal, when the
    process traps exits, stops the state machine with that reason (as from
    a supervisor): otpvm keeps no record of who started a process, so
    pass the pid of the starter (None: no parent).  ``hibernate_after``
    is start's.
    """
    if name is not None:
        if not (isinstance(name, str) or _is_via(name)):
            raise TypeError(f"a gen_statem name is a str or a registry.via name, "
                            f"not {name!r}")
        if gen.resolve(name) != _me():
            exit("process_not_registered" if isinstance(name, str)
                 else ("process_not_registered_via", name.registry))
    handler = _Statem(cls, None, name, hibernate_after)
    handler.parent = parent
    handler.entered = (state, data, actions)
    _vm._enter_loop(handler)
    raise AssertionError("unreachable: _enter_loop raises")


async def call(dest: Pid | str, request: Any, timeout: float | None = 5.0) -> Any:
    """Sends a request (an event of type ``('call', from_)``) and waits for
    the reply.

    Raises ``TimeoutError`` after ``timeout`` seconds and ``CallError`` (with
    ``.reason``) if the state machine does not exist or dies before replying.
    """
    return await gen.call(dest, request, timeout)


def cast(dest: Pid | str, msg: Any) -> None:
    """Sends an event of type ``'cast'`` without waiting (never fails)."""
    gen.cast(dest, msg)


_NO_VALUE: Any = object()


def reply(from_: From | Reply | Sequence[Reply], value: Any = _NO_VALUE) -> None:
    """Answers a call (from any state, or any process given ``from_``).

    Also OTP's ``reply/1``: ``reply(Reply(from_, value))`` or a list of
    Reply actions, answered in order.
    """
    if value is not _NO_VALUE:
        gen.reply(from_, value)
        return
    for item in _listify(from_):
        if type(item) is not Reply:
            raise TypeError(f"gen_statem.reply needs (from_, value) or Reply actions, "
                            f"not {item!r}")
        gen.reply(item.from_, item.value)


async def stop(dest: Pid | str, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stops the state machine with reason (its terminate runs) and waits
    until it is gone.

    Raises ``CallError('noproc')`` if there is no such process,
    ``CallError(r)`` if it ended with another reason r, ``TimeoutError``
    after timeout; ``TypeError``/``ValueError`` for a timeout that is not
    ``None`` or seconds, before anything is sent.
    """
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float))):
        raise TypeError(f"stop's timeout is None or seconds, not {timeout!r}")
    if timeout is not None and timeout < 0:
        raise ValueError(f"stop's timeout is None or seconds, not {timeout!r}")
    await gen.stop(dest, reason, timeout)
