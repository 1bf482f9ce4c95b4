"""Supervisors: let it crash, and the tree heals itself.

A supervisor is a gen_server that traps exits, starts its children in order,
restarts them by its strategy when they end, and gives up — shutting every
child down in reverse order and exiting with ``'shutdown'`` — when children
restart more than ``intensity`` times within ``period`` seconds, so that its
own supervisor deals with it.  This follows OTP's ``supervisor`` module::

    class Top(Supervisor):
        def init(self, args):
            flags = SupFlags(strategy="one_for_one", intensity=3, period=5)
            return flags, [
                ChildSpec("cache", (gen_server.start_link, (Cache, None))),
                ChildSpec("writer", (gen_server.start_link, (Writer, None))),
            ]

    sup = await supervisor.start_link(Top, None, name="top")

A child's start function is called inside the supervisor; it must return the
pid of a process linked to the supervisor (``gen_server.start_link`` does), or
raise ``gen.Ignored`` (init returned Ignore: the child is not started).

Children bind late, as an MFA does in OTP: each (re)start calls the current
version (see otpvm.code) of the start function, and of a class passed in its
args, so a child restarted after an upgrade runs the new code; a start
function may also be named ``"pkg.mod:name"``.  ``sys.change_code`` on a
suspended supervisor runs ``init`` of the current version of its class
again and merges the specs by id, keeping the children running (see
``_SupervisorServer.code_change``).

A restart that fails is tried again through a message the supervisor sends
itself (OTP's ``try_again_restart``), so that it answers calls and its own
shutdown in between: meanwhile ``which_children`` shows the child's pid as
``RESTARTING``, ``restart_child`` and ``delete_child`` answer
``'restarting'``, ``terminate_child`` ends the retries, and every try counts
against the restart intensity.  A start function may return ``(pid,
info)`` (OTP's ``{ok, Pid, Info}``); start_child and restart_child then
answer that pair.  Refusals carry OTP's reasons as ``Reason`` tuples that
read as English.

Deliberate differences from OTP: a start function failing under
``start_child`` of a static child is ``SupervisorError(reason)`` (OTP adds
its internal child record: ``{error, {Reason, Child}}``);
``get_callback_module`` answers the Supervisor subclass; simple_one_for_one
children are listed in start order (OTP: its pid map's order, which is pid
order up to 32 children); a bad SupFlags or ChildSpec is refused when it is
made (a ValueError or TypeError carrying OTP's reason), and a spec cannot
lack its id or start (OTP's ``missing_id``/``missing_start``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any

from otpvm import code, gen, gen_server, kernel
from otpvm import sys as _sys
from otpvm.gen import From, Ignored, StartError
from otpvm.gen_server import GenServer, Ignore, NoReply, Ok, Reply, Stop
from otpvm.kernel import (
    Pid,
    exit,
    is_alive,
    monitor,
    process_flag,
    process_info,
    receive,
    unlink,
)
from otpvm.terms import ANY, Down, Exit

__all__ = [
    "RESTARTING", "ChildSpec", "Reason", "SupFlags", "Supervisor", "SupervisorError",
    "check_childspecs", "count_children", "delete_child", "get_callback_module",
    "get_childspec", "restart_child", "spec_changes", "start_child", "start_link",
    "terminate_child", "validate_upgrade", "which_child", "which_children",
]

_log = logging.getLogger("otpvm")

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one")
RESTARTS = ("permanent", "transient", "temporary")
AUTO_SHUTDOWNS = ("never", "any_significant", "all_significant")
TYPES = ("worker", "supervisor")


class Reason(tuple):  # type: ignore[type-arg]
    """A refusal's reason: OTP's structured term, as a tuple a caller can
    compare and match (``reason == ('invalid_shutdown', -1)``), which reads
    as an English sentence (``str(reason)``)."""

    message: str

    def __new__(cls, reason: tuple[Any, ...], message: str) -> Reason:
        self = super().__new__(cls, reason)
        self.message = message
        return self

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Any:
        return (Reason, (tuple(self), self.message))


def _refuse(error: type[Exception], reason: tuple[Any, ...], message: str) -> Exception:
    """error(message) carrying ``reason``: OTP's term for the same refusal."""
    exc = error(message)
    exc.reason = Reason(reason, message)   # type: ignore[attr-defined]
    return exc


def _alternatives(allowed: tuple[Any, ...]) -> str:
    return ", ".join(map(repr, allowed[:-1])) + f" or {allowed[-1]!r}"


def _check_one_of(what: str, field: str, value: Any, allowed: tuple[str, ...],
                  otp_name: str) -> None:
    if not (isinstance(value, str) and value in allowed):
        raise _refuse(ValueError, (otp_name, value),
                      f"{what}: {field} must be {_alternatives(allowed)}, not {value!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SupFlags:
    """How a supervisor restarts: OTP's sup_flags().  Every field is checked
    when it is made: a bad one is a ValueError or TypeError naming it."""

    strategy: str = "one_for_one"
    intensity: int = 1
    period: float = 5
    auto_shutdown: str = "never"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raises ValueError or TypeError naming the first bad field; its
        ``reason`` is OTP's (``('invalid_intensity', -1)``...)."""
        what = "SupFlags"
        _check_one_of(what, "strategy", self.strategy, STRATEGIES, "invalid_strategy")
        intensity, period = self.intensity, self.period
        if isinstance(intensity, bool) or not isinstance(intensity, int):
            raise _refuse(TypeError, ("invalid_intensity", intensity),
                          f"{what}: intensity (the restarts allowed within period) must be "
                          f"an int >= 0, not {intensity!r}")
        if intensity < 0:
            raise _refuse(ValueError, ("invalid_intensity", intensity),
                          f"{what}: intensity must be an int >= 0, not {intensity!r}")
        if not _is_number(period):
            raise _refuse(TypeError, ("invalid_period", period),
                          f"{what}: period must be seconds > 0 (an int or a float), "
                          f"not {period!r}")
        if not period > 0:
            raise _refuse(ValueError, ("invalid_period", period),
                          f"{what}: period must be seconds > 0, not {period!r}")
        _check_one_of(what, "auto_shutdown", self.auto_shutdown, AUTO_SHUTDOWNS,
                      "invalid_auto_shutdown")
        # OTP 27 refuses this combination (OTP 25 and 26 accepted it, and
        # never shut a simple_one_for_one supervisor down automatically).
        if self.strategy == "simple_one_for_one" and self.auto_shutdown != "never":
            raise _refuse(ValueError, ("bad_combination", (
                ("auto_shutdown", self.auto_shutdown), ("strategy", "simple_one_for_one"))),
                f"{what}: a simple_one_for_one supervisor cannot shut itself down "
                f"automatically (auto_shutdown must be 'never', not {self.auto_shutdown!r})")


@dataclass(frozen=True)
class ChildSpec:
    """One child: OTP's child_spec().

    ``start`` is ``(fn, args)``: ``await fn(*args)`` returns the pid of a
    process linked to the supervisor; ``fn`` may be a ``"pkg.mod:name"``
    string (made a ``code.CodeRef``; ``start`` may be that string alone
    when there are no args), and each start calls the current
    version of fn and of any class in args.  ``modules`` defaults to the
    callback's module: the module of a class first in args (a GenServer,
    for ``gen_server.start_link``), else fn's (OTP's ``[M]``).  ``restart`` is ``'permanent'``,
    ``'transient'`` or ``'temporary'``.  ``shutdown`` is ``'brutal_kill'``,
    seconds to wait after the ``'shutdown'`` signal before killing, or
    ``'infinity'``; it defaults to 5 s for workers and ``'infinity'`` for
    supervisors.  ``type`` is ``'worker'`` or ``'supervisor'``; a
    ``significant`` child (transient or temporary) ending can shut its
    supervisor down (see SupFlags.auto_shutdown).  Every field is checked
    when it is made: a bad one is a ValueError or TypeError naming it.
    """

    id: Any
    start: tuple[Callable[..., Any], tuple[Any, ...]]   # a "pkg.mod:name" str is accepted too
    restart: str = "permanent"
    shutdown: Any = None
    type: str = "worker"
    significant: bool = False
    modules: tuple[Any, ...] = None  # type: ignore[assignment]   # filled in

    def __post_init__(self) -> None:
        start: Any = self.start
        if isinstance(start, str) and ":" in start:       # "pkg.mod:name": no args
            start = (start, ())
        if (isinstance(start, tuple) and len(start) == 2 and isinstance(start[0], str)
                and ":" in start[0]):
            object.__setattr__(self, "start", (code.ref(start[0]), start[1]))
        if self.modules is None:
            object.__setattr__(self, "modules", _callback_module(self.start))
        self.validate()

    def validate(self) -> None:
        """Raises ValueError or TypeError naming the first bad field; its
        ``reason`` is OTP's (``('invalid_restart_type', 'prmanent')``...)."""
        try:
            hash(self.id)
        except TypeError:
            raise _refuse(TypeError, ("invalid_child_spec", self.id),
                          f"ChildSpec: id must be hashable, not {self.id!r}") from None
        what = f"ChildSpec {self.id!r}"
        fn_args = self.start
        if not (isinstance(fn_args, tuple) and len(fn_args) == 2 and callable(fn_args[0])
                and isinstance(fn_args[1], tuple)):
            raise _refuse(TypeError, ("invalid_mfa", fn_args),
                          f"{what}: start must be (fn, args), a callable and the tuple of "
                          f"its arguments, not {fn_args!r} (fn may be a 'pkg.mod:name' "
                          "string)")
        _check_one_of(what, "restart", self.restart, RESTARTS, "invalid_restart_type")
        shutdown = self.shutdown
        if not (shutdown is None or shutdown in ("brutal_kill", "infinity")
                or (_is_number(shutdown) and shutdown >= 0)):
            error = ValueError if _is_number(shutdown) or isinstance(shutdown, str) else TypeError
            raise _refuse(error, ("invalid_shutdown", shutdown),
                          f"{what}: shutdown must be 'brutal_kill', 'infinity', seconds >= 0 "
                          f"or None (5 s for a worker, 'infinity' for a supervisor), "
                          f"not {shutdown!r}")
        _check_one_of(what, "type", self.type, TYPES, "invalid_child_type")
        if not isinstance(self.significant, bool):
            raise _refuse(TypeError, ("invalid_significant", self.significant),
                          f"{what}: significant must be True or False, "
                          f"not {self.significant!r}")
        if self.significant and self.restart == "permanent":
            raise _refuse(ValueError, ("bad_combination", (
                ("restart", "permanent"), ("significant", True))),
                f"{what}: a significant child cannot be permanent "
                f"(restart must be 'transient' or 'temporary')")
        if not isinstance(self.modules, tuple):
            raise _refuse(TypeError, ("invalid_modules", self.modules),
                          f"{what}: modules must be a tuple, not {self.modules!r}")

    @property
    def shutdown_policy(self) -> Any:
        """The shutdown with its default filled in."""
        if self.shutdown is not None:
            return self.shutdown
        return "infinity" if self.type == "supervisor" else 5.0


def _callback_module(start: Any) -> tuple[str, ...]:
    """OTP's default modules, [M]: a class's module if one comes first in
    the args (gen_server.start_link(Cache, ...)), else the start function's."""
    if not (isinstance(start, tuple) and len(start) == 2):
        return ()
    fn, args = start
    if isinstance(args, tuple) and args and isinstance(args[0], type):
        return (args[0].__module__,)
    if isinstance(fn, code.CodeRef):
        return (fn.partition(":")[0],)
    module = getattr(fn, "__module__", None)
    return (module,) if isinstance(module, str) else ()


def _why_invalid(value: Any, cls: type[SupFlags] | type[ChildSpec]) -> Reason | None:
    """Why value is not a valid cls (OTP's reason), or None.  Both check
    themselves when made, but one that came in a message was unpickled
    without that check."""
    if not isinstance(value, cls):
        otp_name = "invalid_type" if cls is SupFlags else "invalid_child_spec"
        return Reason((otp_name, value), f"expected a {cls.__name__}, not {value!r}")
    try:
        value.validate()
    except (TypeError, ValueError) as exc:
        reason: Reason = getattr(exc, "reason", None) or Reason(("invalid_child_spec", value),
                                                                str(exc))
        return reason
    return None


def _bad_combination(spec: ChildSpec, auto_shutdown: str) -> Reason | None:
    """OTP's bad_combination: a significant child where nothing is."""
    if spec.significant and auto_shutdown == "never":
        return Reason(("bad_combination", (("auto_shutdown", "never"), ("significant", True))),
                      f"child {spec.id!r} is significant but auto_shutdown is 'never'")
    return None


def check_childspecs(specs: Iterable[Any], auto_shutdown: str = "never") -> Reason | None:
    """None if every spec is valid (and ids are unique), else what is wrong:
    OTP's reason (``('duplicate_child_name', id)``, ``('invalid_shutdown',
    -1)``, ``('bad_combination', ...)``...) as a ``Reason``, a tuple whose
    ``str()`` says it in English."""
    if isinstance(specs, (str, bytes, ChildSpec)) or not isinstance(specs, Iterable):
        return Reason(("badarg", specs), f"expected a list of ChildSpec, not {specs!r}")
    seen = set()
    for spec in specs:
        error = _why_invalid(spec, ChildSpec) or _bad_combination(spec, auto_shutdown)
        if error:
            return error
        if spec.id in seen:
            return Reason(("duplicate_child_name", spec.id), f"duplicate child id {spec.id!r}")
        seen.add(spec.id)
    return None


_NO_INFO: Any = object()      # a start function returned the pid alone

# The message a supervisor sends itself to try a failed restart again.
_TRY_AGAIN = "$supervisor_try_again_restart"

#: What ``which_children`` shows in the pid's place while a failed restart
#: is being tried again (OTP's ``restarting``).
RESTARTING = "restarting"


@dataclass
class _Child:
    spec: ChildSpec
    pid: Pid | None = None
    args: tuple[Any, ...] = ()           # simple_one_for_one: the extra args
    # A restart that failed is tried again through a message to the
    # supervisor itself (OTP's try_again_restart): meanwhile pid is None and
    # restarting True; last_pid names a dynamic child until then.
    restarting: bool = False
    last_pid: Pid | None = None
    info: Any = _NO_INFO                # what a start function returned beside the pid


@dataclass
class _State:
    name: Any
    flags: SupFlags
    children: list[_Child] = field(default_factory=list)     # in start order
    restarts: list[float] = field(default_factory=list)
    template: ChildSpec | None = None                          # simple_one_for_one
    # For code_change, which runs init again: the user's class as a
    # "pkg.mod:Name" reference where it is upgradable (no old class is held),
    # and its args.
    module: Any = None
    args: Any = None
    # What the last code_change found: ids new in init's specs, ids gone from them.
    changes: tuple[Any, Any] = ((), ())


class Supervisor:
    """Base class: ``init(args)`` returns ``(SupFlags, [ChildSpec, ...])`` or
    ``Ignore``; the supervision itself is done by this module."""

    def init(self, args: Any) -> Any:
        """Returns the flags and the child specs, in start order."""
        raise NotImplementedError("a Supervisor subclass must define init(args)")


class _SupervisorServer(GenServer):
    """The gen_server that runs a Supervisor subclass's tree."""

    async def init(self, args: Any) -> Any:
        cls, user_args, name = args
        process_flag("trap_exit", True)
        cls = code.current(cls)         # a restart after an upgrade runs the new code
        result = cls().init(user_args)
        if result is Ignore:
            return Ignore
        try:
            flags, specs = _check_init(cls, result)
        except _BadInit as bad:
            return Stop(bad.reason)
        state = _State(name or cls.__qualname__, flags, module=_late(cls), args=user_args)
        if flags.strategy == "simple_one_for_one":
            state.template = specs[0]
            return Ok(state)
        for spec in specs:
            child = _Child(spec)
            failure = await _start(child)
            if failure is not None:
                _report(state, "start_error", failure, child)
                await _terminate_children(state, reversed(state.children))
                return Stop(("shutdown", ("failed_to_start_child", spec.id, failure)))
            if child.pid is not None or spec.restart != "temporary":
                state.children.append(child)    # an ignored temporary child is forgotten
        return Ok(state)

    async def handle_call(self, request: Any, from_: From, state: _State) -> Any:
        op, *args = request
        handler = getattr(self, f"_call_{op}", None)
        if handler is None:
            return Reply(("error", ("unknown_request", request)), state)
        return await handler(state, *args)

    async def handle_info(self, msg: Any, state: _State) -> Any:
        if isinstance(msg, Exit):
            return await self._child_exited(state, msg.pid, msg.reason)
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == _TRY_AGAIN:
            child = _restarting(state, msg[1])
            if child is None:               # terminated (or restarted) meanwhile
                return NoReply(state)
            return await self._restart(state, child)
        _log.warning("supervisor %r received an unexpected message: %r", state.name, msg)
        return NoReply(state)

    def code_change(self, old_vsn: Any, state: _State, extra: Any) -> _State:
        """OTP's supervisor code_change: ``init`` of the current version of
        the user's class runs again (it must have no side effects) and its
        result is checked as at start; the flags are replaced and the specs
        merged by id: a child keeps its pid under its new spec (which
        applies from its next restart on, or at once for the restart type).
        Nothing is started or stopped: ids new in the specs are added, not
        running (``restart_child`` starts them), ids gone from them are kept
        (``terminate_child`` and ``delete_child`` remove them), and both
        lists are kept for ``spec_changes``.  Raises ValueError for a bad
        new init result (the change then fails with nothing changed); an
        init returning Ignore changes nothing.  The old state is not
        touched (it is the undo)."""
        cls = _resolve(state.module)
        result = cls().init(state.args)
        if result is Ignore:
            return state
        flags, specs = _check_init(cls, result)
        if (flags.strategy == "simple_one_for_one") != (state.template is not None):
            raise ValueError("a code change cannot turn a supervisor into or out of "
                             f"simple_one_for_one (new strategy {flags.strategy!r})")
        new = _State(state.name, flags, restarts=list(state.restarts), module=_late(cls),
                     args=state.args)
        if state.template is not None:
            new.template = specs[0]
            new.children = [_copy(c, specs[0]) for c in state.children]
            return new
        old = {c.spec.id: c for c in state.children}
        wanted = {spec.id for spec in specs}
        kept = [_copy(c, c.spec) for c in state.children if c.spec.id not in wanted]
        merged = [_copy(old[spec.id], spec) if spec.id in old else _Child(spec)
                  for spec in specs]
        # OTP's order (update_childspec1): init's specs in their order, then
        # the ids kept, as if started after them.
        new.children = merged + kept
        new.changes = ([spec.id for spec in specs if spec.id not in old],
                       [c.spec.id for c in kept])
        return new

    async def terminate(self, reason: Any, state: _State) -> None:
        if isinstance(state, _State) and state.template is not None:
            await _terminate_dynamic(state)
        elif isinstance(state, _State):
            await _terminate_children(state, reversed(state.children))

    # -- a child ended ------------------------------------------------------

    async def _child_exited(self, state: _State, pid: Pid, reason: Any) -> Any:
        child = next((c for c in state.children if c.pid == pid), None)
        if child is None:
            return NoReply(state)          # not ours (or already dealt with)
        child.pid = None
        child.last_pid = pid
        spec = child.spec
        if _is_exit_reported(spec, reason):
            _report(state, "child_terminated", reason, child, pid)
        if state.template is not None or spec.restart == "temporary":
            state.children.remove(child)
        if spec.significant and _ends_for_good(spec, reason):
            if _auto_shutdown(state):
                return Stop("shutdown", state)
        if not _needs_restart(spec, reason):
            return NoReply(state)
        return await self._restart(state, child)

    async def _restart(self, state: _State, child: _Child) -> Any:
        """OTP's restart/2: restarts by the strategy, or gives up past the
        restart intensity.  A start that fails leaves its child restarting
        and is tried again through a message to the supervisor itself, so
        that calls (and its own shutdown) are answered in between; each
        try counts against the intensity, as in OTP."""
        if not _add_restart(state):
            child.restarting = False
            if state.template is not None and child in state.children:
                state.children.remove(child)
            _report(state, "shutdown", "reached_max_restart_intensity", child)
            return Stop("shutdown", state)
        failed = await self._restart_by_strategy(state, child)
        if failed is not None:
            failed.restarting = True
            kernel.send(kernel.self(), (_TRY_AGAIN, _restart_key(state, failed)))
        return NoReply(state)

    async def _restart_by_strategy(self, state: _State, child: _Child) -> _Child | None:
        """Starts the child again (and the others its strategy names); the
        child that failed to start, reported, else None."""
        strategy = state.flags.strategy
        if strategy in ("one_for_one", "simple_one_for_one"):
            if strategy == "simple_one_for_one" and child not in state.children:
                state.children.append(child)
            child.restarting = False
            if _start_failed(state, child, await _start(child)):
                return child
            if child.pid is None and strategy == "simple_one_for_one":
                state.children.remove(child)    # its restart returned Ignore: gone (OTP)
            return None
        position = state.children.index(child)
        group = state.children if strategy == "one_for_all" else state.children[position:]
        await _terminate_children(state, reversed([c for c in group if c is not child]))
        # Temporary siblings are not restarted: they go, as in OTP.
        for member in [c for c in group if c is not child and c.spec.restart == "temporary"]:
            state.children.remove(member)
        group = [c for c in group if c is child or c.spec.restart != "temporary"]
        for member in group:
            member.restarting = False
        for member in group:
            if _start_failed(state, member, await _start(member)):
                return member
        return None

    # -- the API, as calls to the supervisor ----------------------------------

    async def _call_start_child(self, state: _State, arg: Any) -> Any:
        if state.template is not None:
            extra = tuple(arg) if isinstance(arg, (list, tuple)) else (arg,)
            child = _Child(state.template, args=extra)
        else:
            error: Any = (_why_invalid(arg, ChildSpec)
                          or _bad_combination(arg, state.flags.auto_shutdown))
            if error is None and any(c.spec.id == arg.id for c in state.children):
                existing = next(c for c in state.children if c.spec.id == arg.id)
                error = ("already_started", existing.pid) if existing.pid else "already_present"
            if error is not None:
                return Reply(("error", error), state)
            child = _Child(arg)
        failure = await _start(child)
        if failure is not None:
            return Reply(("error", failure), state)
        # A child whose start returned Ignore is kept only where it could be
        # restarted later: not a dynamic child, nor a temporary one (OTP).
        if child.pid is not None or (state.template is None
                                     and child.spec.restart != "temporary"):
            state.children.append(child)
        reply = Reply(("ok", _started(child)), state)
        if child.spec.restart == "temporary":
            # Never restarted: its start args (often large) are not kept (OTP's save_child).
            child.args, child.info = (), _NO_INFO
        return reply

    async def _call_terminate_child(self, state: _State, key: Any) -> Any:
        if state.template is not None and not isinstance(key, Pid):
            return Reply(("error", "simple_one_for_one"), state)    # pids only there
        child = _find(state, key)
        if child is None and state.template is not None and not is_alive(key):
            return Reply("ok", state)       # a dynamic child that ended already (OTP)
        if child is None:
            return Reply(("error", "not_found"), state)
        child.restarting = False            # ends a restart being tried again
        await _terminate_children(state, [child])
        if state.template is not None or child.spec.restart == "temporary":
            state.children.remove(child)
        return Reply("ok", state)

    async def _call_restart_child(self, state: _State, key: Any) -> Any:
        if state.template is not None:
            return Reply(("error", "simple_one_for_one"), state)
        child = _find(state, key)
        if child is None:
            return Reply(("error", "not_found"), state)
        if child.restarting:
            return Reply(("error", RESTARTING), state)
        if child.pid is not None:
            return Reply(("error", "running"), state)
        failure = await _start(child)
        if failure is not None:
            return Reply(("error", failure), state)
        return Reply(("ok", _started(child)), state)

    async def _call_delete_child(self, state: _State, key: Any) -> Any:
        if state.template is not None:
            return Reply(("error", "simple_one_for_one"), state)
        child = _find(state, key)
        if child is None:
            return Reply(("error", "not_found"), state)
        if child.restarting:
            return Reply(("error", RESTARTING), state)
        if child.pid is not None:
            return Reply(("error", "running"), state)
        state.children.remove(child)
        return Reply("ok", state)

    async def _call_which_children(self, state: _State) -> Any:
        # OTP lists children newest first; a simple_one_for_one supervisor's
        # come from its pid map, oldest first for small ones: start order.
        children = state.children if state.template else reversed(state.children)
        return Reply([_describe(state, c) for c in children], state)

    async def _call_which_child(self, state: _State, key: Any) -> Any:
        if state.template is not None and not isinstance(key, Pid):
            return Reply(("error", "simple_one_for_one"), state)
        child = _find(state, key)
        if child is None:
            return Reply(("error", "not_found"), state)
        return Reply(("ok", _describe(state, child)), state)

    async def _call_get_childspec(self, state: _State, key: Any) -> Any:
        if state.template is not None:
            if not isinstance(key, Pid) or _find(state, key) is None:
                return Reply(("error", "not_found"), state)
            spec = state.template
        else:
            child = _find(state, key)
            if child is None:
                return Reply(("error", "not_found"), state)
            spec = child.spec
        return Reply(("ok", replace(spec, shutdown=spec.shutdown_policy)), state)

    async def _call_get_callback_module(self, state: _State) -> Any:
        return Reply(("ok", _resolve(state.module)), state)

    async def _call_count_children(self, state: _State) -> Any:
        kids = state.children
        counts = {
            "specs": 1 if state.template else len(kids),
            "active": sum(1 for c in kids if c.pid is not None),
            "supervisors": sum(1 for c in kids if c.spec.type == "supervisor"),
            "workers": sum(1 for c in kids if c.spec.type == "worker"),
        }
        return Reply(counts, state)


def _copy(child: _Child, spec: ChildSpec) -> _Child:
    """The child under a new spec (code_change never touches the old state)."""
    return _Child(spec, child.pid, child.args, child.restarting, child.last_pid, child.info)


def _describe(state: _State, child: _Child) -> tuple[Any, Any, str, tuple[Any, ...]]:
    """A which_children entry: (id, pid or RESTARTING or None, type, modules)."""
    pid: Any = RESTARTING if child.restarting else child.pid
    return (None if state.template else child.spec.id, pid, child.spec.type,
            child.spec.modules)


def _started(child: _Child) -> Any:
    """What start_child and restart_child answer: the pid (None if the start
    returned Ignore), or (pid, info) if the start function returned that."""
    return child.pid if child.info is _NO_INFO else (child.pid, child.info)


def _start_failed(state: _State, child: _Child, failure: Any) -> bool:
    if failure is None:
        return False
    _report(state, "start_error", failure, child)
    return True


def _restart_key(state: _State, child: _Child) -> Any:
    """How a try-again message names its child: the id, or under
    simple_one_for_one the pid it had (OTP's {restarting, OldPid})."""
    return child.last_pid if state.template is not None else child.spec.id


def _restarting(state: _State, key: Any) -> _Child | None:
    for child in state.children:
        if child.restarting and _restart_key(state, child) == key:
            return child
    return None


# -- helpers ----------------------------------------------------------------


# -- what is reported: OTP's rules (supervisor.erl: do_restart/3, shutdown/1) -----
#
# A child that ends on its own (the supervisor gets its Exit):
#
#   restart     'normal'  'shutdown'  ('shutdown', _)  anything else
#   permanent   report    report      report           report     then restarted
#   transient   -         -           -                report     restarted if reported
#   temporary   -         -           -                report     never restarted
#
# ("report": one child_terminated report.  A permanent child's every end is
# one, even 'normal': it was not supposed to end.)
#
# A child the supervisor shuts down (terminate_child, a one_for_all or
# rest_for_one restart, the supervisor's own end) is monitored and sent
# exit(pid, 'kill') for 'brutal_kill', else exit(pid, 'shutdown') and killed
# after its shutdown time.  The reason it ended with is its Exit's if one
# came (a sibling that had died before: its Down says only 'noproc'), else
# the Down's.  Not reported (any other reason is one shutdown_error report):
#
#   shutdown      any child     transient or temporary child
#   brutal_kill   'killed'      'normal', 'shutdown', ('shutdown', _)
#   seconds       'shutdown'    'normal', ('shutdown', _)
#   'infinity'    'shutdown'    'normal', ('shutdown', _)
#
# So a child killed because it outlived its shutdown time is reported
# ('killed'), a child that had died on its own is reported with its own
# reason when that is not one of these, and its death is not reported a
# second time as child_terminated: its Exit was consumed.  Checked against
# erl (OTP 25) for every restart type, shutdown and reason.


def _is_normal(reason: Any) -> bool:
    """normal, shutdown or ('shutdown', _): ends that are not failures."""
    if isinstance(reason, str):
        return reason in ("normal", "shutdown")
    return isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown"


def _is_exit_reported(spec: ChildSpec, reason: Any) -> bool:
    """Whether a child that ended on its own is a child_terminated report."""
    return spec.restart == "permanent" or not _is_normal(reason)


def _shutdown_ok(policy: Any, restart: str, reason: Any) -> bool:
    """Whether a child shut down by its supervisor ended as it should have."""
    asked = "killed" if policy == "brutal_kill" else "shutdown"
    if isinstance(reason, str) and reason == asked:
        return True
    if restart == "permanent":
        return False
    return _is_normal(reason)


def _needs_restart(spec: ChildSpec, reason: Any) -> bool:
    if spec.restart == "permanent":
        return True
    if spec.restart == "transient":
        return not _is_normal(reason)
    return False


def _ends_for_good(spec: ChildSpec, reason: Any) -> bool:
    """A significant child that will not be restarted."""
    return spec.restart == "temporary" or (spec.restart == "transient" and _is_normal(reason))


def _auto_shutdown(state: _State) -> bool:
    mode = state.flags.auto_shutdown
    if mode == "any_significant":
        return True
    if mode == "all_significant":
        return not any(c.pid is not None for c in state.children if c.spec.significant)
    return False


def _add_restart(state: _State) -> bool:
    """Records a restart; False when that exceeds the intensity."""
    now = time.monotonic()
    state.restarts = [t for t in state.restarts if now - t < state.flags.period]
    state.restarts.append(now)
    return len(state.restarts) <= state.flags.intensity


def _find(state: _State, key: Any) -> _Child | None:
    """The child a request names: by pid under simple_one_for_one (a child
    restarting by the pid it had), by id elsewhere (as OTP: a pid names no
    child of other supervisors)."""
    for child in state.children:
        if state.template is None:
            if child.spec.id == key:
                return child
        elif child.pid == key or (child.restarting and child.last_pid == key):
            return child
    return None


class _BadInit(ValueError):
    """A supervisor's init returned what is not a valid (flags, specs):
    ``reason`` is OTP's (``('supervisor_data', ('invalid_intensity', -1))``,
    ``('start_spec', ('duplicate_child_name', 'a'))``, ``('bad_start_spec',
    specs)``, ``('bad_return', (cls, 'init', result))``), a Reason that reads
    as English."""

    def __init__(self, who: str, reason: Any) -> None:
        super().__init__(who, reason)     # both in args: it pickles (a reply carries it)
        self.reason = reason

    def __str__(self) -> str:
        return str(self.reason)


def _check_init(cls: type, result: Any) -> tuple[SupFlags, list[ChildSpec]]:
    """(flags, specs) from a valid init result; raises _BadInit with OTP's
    reason otherwise."""
    who = cls.__qualname__
    try:
        flags, specs = result
        specs = list(specs)
    except (TypeError, ValueError):
        raise _BadInit(who, Reason(("bad_return", (cls, "init", result)),
                                   f"{who}.init returned {result!r}, not (SupFlags, "
                                   "[ChildSpec, ...]) or Ignore")) from None
    error = _why_invalid(flags, SupFlags)
    if error is not None:
        raise _BadInit(who, Reason(("supervisor_data", tuple(error)),
                                   f"{who}.init returned bad supervisor data: {error}"))
    if flags.strategy == "simple_one_for_one" and len(specs) != 1:
        raise _BadInit(who, Reason(("bad_start_spec", specs),
                                   f"{who}.init returned bad supervisor data: "
                                   "simple_one_for_one needs exactly one child spec "
                                   f"(the template), not {len(specs)}"))
    error = check_childspecs(specs, flags.auto_shutdown)
    if error is not None:
        raise _BadInit(who, Reason(("start_spec", tuple(error)),
                                   f"{who}.init returned bad supervisor data: {error}"))
    return flags, specs


def validate_upgrade(state: Any, module: ModuleType) -> None:
    """For a release handler, before anything changes: if ``state`` is a
    supervisor's (``sys.get_state``) whose class is in ``module`` (a new
    version, ``code.prepare``), runs that class's ``init`` on the stored
    args and checks its result as at start.  Raises ValueError saying what
    is wrong; does nothing for any other state.  ``init`` must have no
    side effects (OTP requires the same: it runs again at code_change)."""
    if not isinstance(state, _State) or not isinstance(state.module, code.CodeRef):
        return
    module_name, qualname = state.module.split(":")
    if module_name != module.__name__:
        return
    cls = getattr(module, qualname, None)
    if not isinstance(cls, type):
        raise ValueError(f"the new version of {module_name} has no supervisor {qualname}")
    result = cls().init(state.args)
    if result is not Ignore:
        _check_init(cls, result)


def _late(cls: type) -> Any:
    """A late-bound reference to an upgradable class, else the class."""
    module, qualname = cls.__module__, cls.__qualname__
    if code.managed(module) and "<locals>" not in qualname:
        return code.ref(f"{module}:{qualname}")
    return cls


def _resolve(ref: Any) -> Any:
    return ref.resolve() if isinstance(ref, code.CodeRef) else code.current(ref)


async def _start(child: _Child) -> Any:
    """Starts a child; None on success (or Ignore), else the failure reason."""
    fn, args = child.spec.start
    try:
        # The start function and the classes in its args as of now (a CodeRef
        # resolves itself when called): a restart after an upgrade runs new code.
        if not isinstance(fn, code.CodeRef):
            fn = code.current(fn)
        args = tuple(code.current(a) if isinstance(a, type) else a for a in args)
        pid = await fn(*args, *child.args)
    except Ignored:
        child.pid = None
        return None
    except StartError as exc:
        return exc.reason
    except Exception as exc:
        return exc
    child.info = _NO_INFO
    if pid is Ignore:
        child.pid = None
        return None
    if isinstance(pid, tuple) and len(pid) == 2 and isinstance(pid[0], Pid):
        pid, child.info = pid               # OTP's {ok, Pid, Info}
    if not isinstance(pid, Pid):
        return ("bad_start_return", pid)
    child.pid = pid
    return None


async def _terminate_children(state: _State, children: Iterable[_Child]) -> None:
    for child in list(children):
        if child.pid is not None:
            await _shutdown(state, child)


async def _shutdown(state: _State, child: _Child) -> None:
    """OTP's shutdown/1 and do_terminate/2: monitor, signal, wait (then kill),
    learn how the child really ended, and report it if that was not the end
    asked for (the table above the helpers)."""
    pid, policy = child.pid, child.spec.shutdown_policy
    assert pid is not None
    child.pid = None
    ref = monitor(pid)
    if policy == "brutal_kill":
        exit(pid, "kill")
        down = await receive(Down(ref, ANY, ANY))
    else:
        exit(pid, "shutdown")
        try:
            down = await receive(Down(ref, ANY, ANY),
                                 timeout=None if policy == "infinity" else policy)
        except TimeoutError:             # it ignored the shutdown: killed, and reported
            exit(pid, "kill")
            down = await receive(Down(ref, ANY, ANY))
    reason = await _unlink_flush(pid, down.reason)
    if not _shutdown_ok(policy, child.spec.restart, reason):
        _report(state, "shutdown_error", reason, child, pid)


async def _terminate_dynamic(state: _State) -> None:
    """OTP's terminate_dynamic_children/1: a simple_one_for_one supervisor
    tells all its children at once, so that they clean up in parallel, waits
    for them under one deadline (then kills those left), and reports each
    distinct failure reason once, naming every pid that ended with it."""
    template = state.template
    assert template is not None
    policy = template.shutdown_policy
    waiting: dict[Any, Pid] = {}
    for child in state.children:
        if child.pid is not None:
            waiting[monitor(child.pid)] = child.pid
            exit(child.pid, "kill" if policy == "brutal_kill" else "shutdown")
            child.pid = None
    deadline = None if policy in ("brutal_kill", "infinity") else time.monotonic() + policy
    failures: list[tuple[Any, list[Pid]]] = []
    while waiting:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            down = await receive(lambda m: type(m) is Down and m.ref in waiting, timeout=timeout)
        except TimeoutError:            # the shutdown time is over: kill the rest
            for pid in waiting.values():
                exit(pid, "kill")
            deadline = None
            continue
        pid = waiting.pop(down.ref)
        reason = await _unlink_flush(pid, down.reason)
        if not _shutdown_ok(policy, template.restart, reason):
            same = next((pids for known, pids in failures if known == reason), None)
            if same is None:
                failures.append((reason, [pid]))
            else:
                same.append(pid)
    for reason, pids in failures:
        _report(state, "shutdown_error", reason, _Child(template), pids)


async def _unlink_flush(pid: Pid, down_reason: Any) -> Any:
    """OTP's unlink_flush/2: the reason the child really ended with.

    A child that was already dead when monitored (a sibling that died while
    the supervisor was busy restarting another) gives ``Down(..., 'noproc')``;
    its real reason is in its Exit, already queued (or on its way: the child
    may be delivering its end right now).  The Exit is consumed here, so the
    supervisor does not see that death a second time."""
    found = await _take_exit(pid)
    if found is _NO_EXIT and down_reason == "noproc":
        info = process_info(kernel.self())
        if info is not None and pid in info["links"]:
            # Still linked, with no Exit even pending: the child's end is
            # being delivered now, and its Exit comes next (a child that had
            # unlinked itself is not linked: nothing is waited for then).
            found = (await receive(Exit(pid, ANY))).reason
        else:
            found = await _take_exit(pid)    # one that came in meanwhile
    unlink(pid)
    return down_reason if found is _NO_EXIT else found


_NO_EXIT = object()


async def _take_exit(pid: Pid) -> Any:
    """The reason of pid's Exit if one is in the mailbox, else _NO_EXIT.
    Looked for before unlink: an Exit still on its way is dropped by unlink."""
    try:
        return (await receive(Exit(pid, ANY), timeout=0)).reason
    except TimeoutError:
        return _NO_EXIT


def _report(state: _State, context: str, reason: Any, child: _Child,
            pid: Pid | list[Pid] | None = None) -> None:
    """A supervisor report, shaped like OTP's."""
    spec = child.spec
    _log.error(
        "supervisor report: supervisor %r, context %s, reason %r, offender: "
        "id=%r pid=%r restart=%s shutdown=%r type=%s",
        state.name, context, reason, spec.id, pid if pid is not None else child.pid,
        spec.restart, spec.shutdown_policy, spec.type)


# -- the API -------------------------------------------------------------------


async def start_link(cls: type[Supervisor], args: Any = None, *,
                     name: str | None = None) -> Pid:
    """Starts a supervisor linked to the caller; returns once every child started."""
    if not (isinstance(cls, type) and issubclass(cls, Supervisor)):
        raise TypeError(f"supervisor.start_link needs a Supervisor subclass, not {cls!r}")
    return await gen_server.start_link(_SupervisorServer, (cls, args, name), name=name)


async def start_child(sup: Pid | str, spec_or_args: Any) -> Any:
    """Adds a child (a ChildSpec, or the extra args for simple_one_for_one)
    and starts it; returns its pid (None if it returned Ignore), or
    ``(pid, info)`` when its start function returned that pair (OTP's
    ``{ok, Pid, Info}``).  SupervisorError otherwise: ``.reason`` is
    ``('already_started', pid)``, ``'already_present'``, OTP's reason for a
    bad spec (``('invalid_restart_type', x)``, ``('bad_combination', ...)``
    for a significant child under ``auto_shutdown='never'``...) or the
    reason the start failed."""
    return _ok(await gen.call(sup, ("start_child", spec_or_args), None))


async def terminate_child(sup: Pid | str, key: Any) -> None:
    """Stops a child by id, or by pid under simple_one_for_one (where an id
    is refused with ``'simple_one_for_one'``, and a child that ended
    already is no error); a non-temporary child's spec is kept for
    restart_child.  SupervisorError(``'not_found'``) otherwise, as in OTP."""
    _ok(await gen.call(sup, ("terminate_child", key), None))


async def restart_child(sup: Pid | str, key: Any) -> Any:
    """Starts again a child stopped with terminate_child; answers as
    start_child.  Refused with ``'running'``, ``'restarting'`` (a failed
    restart is being tried again), ``'not_found'``, or under
    simple_one_for_one ``'simple_one_for_one'``."""
    return _ok(await gen.call(sup, ("restart_child", key), None))


async def delete_child(sup: Pid | str, key: Any) -> None:
    """Removes a stopped child's spec; refused as restart_child is."""
    _ok(await gen.call(sup, ("delete_child", key), None))


async def which_children(sup: Pid | str) -> list[tuple[Any, Any, str, tuple[Any, ...]]]:
    """(id, pid, type, modules) for each child, newest first as in OTP
    (under simple_one_for_one: id None, in start order).  The pid is None
    for a child not running, and ``RESTARTING`` (the string
    ``'restarting'``, OTP's atom) while a failed restart is tried again."""
    result: list[tuple[Any, Any, str, tuple[Any, ...]]] = await gen.call(
        sup, ("which_children",), None)
    return result


async def which_child(sup: Pid | str, key: Any) -> tuple[Any, Any, str, tuple[Any, ...]]:
    """The which_children entry of one child, by id (by pid under
    simple_one_for_one, where an id is ``'simple_one_for_one'``);
    SupervisorError(``'not_found'``) if there is none (OTP 27)."""
    result: tuple[Any, Any, str, tuple[Any, ...]] = _ok(
        await gen.call(sup, ("which_child", key), None))
    return result


async def get_childspec(sup: Pid | str, key: Any) -> ChildSpec:
    """A child's spec, by id (by pid under simple_one_for_one: the
    template), with its default shutdown filled in;
    SupervisorError(``'not_found'``) if there is none."""
    result: ChildSpec = _ok(await gen.call(sup, ("get_childspec", key), None))
    return result


async def get_callback_module(sup: Pid | str) -> type[Supervisor]:
    """The supervisor's Supervisor subclass, as of its current code."""
    result: type[Supervisor] = _ok(await gen.call(sup, ("get_callback_module",), None))
    return result


async def count_children(sup: Pid | str) -> dict[str, int]:
    """specs, active, supervisors and workers counts."""
    result: dict[str, int] = await gen.call(sup, ("count_children",), None)
    return result


async def spec_changes(sup: Pid | str,
                       timeout: float | None = 5.0) -> tuple[list[Any], list[Any]]:
    """(added_ids, removed_ids): what the last ``sys.change_code`` of the
    supervisor found in its new ``init`` (ids that were not in the specs,
    not started; ids no longer in them, still there).  A release handler
    starts the added children (``restart_child``) and terminates and deletes
    the removed ones; the supervisor's change_code does neither, as in OTP.
    Answers while the supervisor is suspended; ``((), ())`` before any change."""
    state = await _sys.get_state(sup, timeout)
    if not isinstance(state, _State):
        raise TypeError(f"{sup!r} is not a supervisor")
    added, removed = state.changes
    return list(added), list(removed)


class SupervisorError(Exception):
    """A supervisor API call was refused: ``reason`` says why."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _ok(result: Any) -> Any:
    if result == "ok":
        return None
    if isinstance(result, tuple) and result and result[0] == "ok":
        return result[1]
    if isinstance(result, tuple) and result and result[0] == "error":
        raise SupervisorError(result[1])
    return result

