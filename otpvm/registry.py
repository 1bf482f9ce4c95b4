"""A process registry with keys of any hashable type, like Elixir's Registry
or Erlang's gproc.

The kernel registers processes under ``str`` names only.  A registry is a
server process that maps any hashable key — a tuple, an int, a frozenset,
a Pid — to the process that registered it (and a value of its choice), and
forgets every key of a process when that process ends::

    reg = await registry.start_link(name="rooms")
    await registry.register("rooms", ("room", 42), value={"topic": "otp"})
    pid, value = await registry.lookup("rooms", ("room", 42))
    await registry.send("rooms", ("room", 42), "hello")

Keys are unique: a process registers itself (never another process), and a
key held by a live process cannot be taken.  The registry monitors every
process holding a key, so keys disappear when their holder dies — shortly
after, once the registry has handled the ``Down``.  A key held by a process
that is already dead but whose ``Down`` the registry has not handled yet
counts as free: ``register`` takes it over and ``lookup`` does not return it.

Keys travel to the registry in messages, so they must compare equal after
being copied: built-in immutable values (and frozen dataclasses with value
equality) work; objects compared by identity do not.

``via(reg, key)`` names "the process registered under key" in the style of
OTP's ``{via, Module, Name}``; ``whereis_name(reg, key)`` resolves a key at
once, without a call, from a table of pids the registry publishes (pids are
immutable, so publishing them shares nothing mutable).
"""

from __future__ import annotations

import weakref
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from otpvm import gen_server
from otpvm.gen_server import From, GenServer, NoReply, Ok, Reply
from otpvm.kernel import Pid, Ref, demonitor, is_alive, monitor, whereis
from otpvm.kernel import self as _me
from otpvm.kernel import send as _send
from otpvm.terms import Down, NameRegistrationError, UnknownNameError

__all__ = [
    "AlreadyRegisteredError",
    "Registry",
    "Via",
    "count",
    "keys",
    "lookup",
    "register",
    "send",
    "start",
    "start_link",
    "unregister",
    "via",
    "whereis_name",
]


class AlreadyRegisteredError(NameRegistrationError):
    """``register`` with a key that a live process holds (``pid``, which may
    be the caller itself)."""

    def __init__(self, registry: Any, key: Hashable, pid: Pid) -> None:
        super().__init__(f"key {key!r} is already registered in {registry!r} by {pid!r}")
        self.registry = registry
        self.key = key
        self.pid = pid


class _Table(dict[Hashable, Pid]):
    """The published key -> pid map of one registry (weakly referenceable)."""


# Registry pid -> its published table.  Entries go away with the registry
# process, which holds the only strong reference to its table.
_tables: weakref.WeakValueDictionary[Pid, _Table] = weakref.WeakValueDictionary()


@dataclass(slots=True)
class _State:
    """What a registry holds: ``entries`` key -> (pid, value); ``owners``
    pid -> (monitor ref, its keys); ``table`` key -> pid, published."""

    table: _Table
    entries: dict[Hashable, tuple[Pid, Any]] = field(default_factory=dict)
    owners: dict[Pid, tuple[Ref, set[Hashable]]] = field(default_factory=dict)
    monitors: dict[Ref, Pid] = field(default_factory=dict)


class Registry(GenServer):
    """The registry server (start it with ``start`` or ``start_link``)."""

    def init(self, args: Any) -> Ok:
        table = _Table()
        _tables[_me()] = table
        return Ok(_State(table))

    def handle_call(self, request: Any, from_: From, state: _State) -> Reply:
        match request:
            case ("register", key, value):
                return Reply(self._register(state, from_.pid, key, value), state)
            case ("unregister", key):
                entry = state.entries.get(key)
                if entry is not None and entry[0] == from_.pid:
                    self._remove_key(state, key)
                return Reply(None, state)
            case ("lookup", key):
                entry = state.entries.get(key)
                if entry is None or not is_alive(entry[0]):
                    return Reply(None, state)
                return Reply(entry, state)
            case ("keys", pid):
                owner = state.owners.get(pid)
                return Reply([] if owner is None else list(owner[1]), state)
            case "count":
                return Reply(len(state.entries), state)
        return Reply(("error", ("unknown_request", request)), state)

    def handle_info(self, msg: Any, state: _State) -> Any:
        if type(msg) is Down and msg.ref in state.monitors:
            self._remove_owner(state, state.monitors[msg.ref], flush=False)
            return NoReply(state)
        return super().handle_info(msg, state)

    def _register(self, state: _State, pid: Pid, key: Hashable, value: Any) -> Any:
        entry = state.entries.get(key)
        if entry is not None:
            if is_alive(entry[0]):
                return ("error", ("already_registered", entry[0]))
            # Dead, its Down not handled yet: everything it held is free.
            self._remove_owner(state, entry[0], flush=True)
        owner = state.owners.get(pid)
        if owner is None:
            ref = monitor(pid)
            owner = (ref, set())
            state.owners[pid] = owner
            state.monitors[ref] = pid
        owner[1].add(key)
        state.entries[key] = (pid, value)
        state.table[key] = pid
        return "ok"

    def _remove_key(self, state: _State, key: Hashable) -> None:
        pid, _ = state.entries.pop(key)
        state.table.pop(key, None)
        ref, held = state.owners[pid]
        held.discard(key)
        if not held:
            del state.owners[pid]
            del state.monitors[ref]
            demonitor(ref, flush=True)

    def _remove_owner(self, state: _State, pid: Pid, *, flush: bool) -> None:
        ref, held = state.owners.pop(pid)
        del state.monitors[ref]
        if flush:
            demonitor(ref, flush=True)
        for key in held:
            del state.entries[key]
            state.table.pop(key, None)


async def start(*, name: str | None = None, timeout: float | None = None) -> Pid:
    """Starts a registry process (registered under ``name`` if given)."""
    return await gen_server.start(Registry, None, name=name, timeout=timeout)


async def start_link(*, name: str | None = None, timeout: float | None = None) -> Pid:
    """Like start, and links the registry to the caller."""
    return await gen_server.start_link(Registry, None, name=name, timeout=timeout)


async def register(reg: Pid | str, key: Hashable, value: Any = None,
                   timeout: float | None = 5.0) -> None:
    """Registers the calling process under ``key`` with ``value``.

    Raises ``AlreadyRegisteredError`` if a live process (the caller
    included) holds the key, ``TypeError`` if the key is not hashable.
    """
    hash(key)
    outcome = await gen_server.call(reg, ("register", key, value), timeout)
    if outcome != "ok":
        raise AlreadyRegisteredError(reg, key, outcome[1][1])


async def unregister(reg: Pid | str, key: Hashable, timeout: float | None = 5.0) -> None:
    """Removes the caller's registration of ``key`` (nothing happens if the
    caller does not hold it)."""
    await gen_server.call(reg, ("unregister", key), timeout)


async def lookup(reg: Pid | str, key: Hashable,
                 timeout: float | None = 5.0) -> tuple[Pid, Any] | None:
    """``(pid, value)`` of the live process registered under ``key``, or None."""
    entry: tuple[Pid, Any] | None = await gen_server.call(reg, ("lookup", key), timeout)
    return entry


async def keys(reg: Pid | str, pid: Pid, timeout: float | None = 5.0) -> list[Hashable]:
    """The keys ``pid`` holds, in no particular order."""
    held: list[Hashable] = await gen_server.call(reg, ("keys", pid), timeout)
    return held


async def count(reg: Pid | str, timeout: float | None = 5.0) -> int:
    """How many keys are registered (keys of processes that died are counted
    until the registry has handled their ``Down``)."""
    n: int = await gen_server.call(reg, "count", timeout)
    return n


async def send(reg: Pid | str, key: Hashable, msg: Any, timeout: float | None = 5.0) -> Pid:
    """Sends msg to the process registered under key and returns its pid.

    Raises ``UnknownNameError`` if no live process holds the key, as
    sending to an unregistered name does.
    """
    entry = await lookup(reg, key, timeout)
    if entry is None:
        raise UnknownNameError(f"no process is registered under {key!r} in {reg!r}")
    _send(entry[0], msg)
    return entry[0]


def whereis_name(reg: Pid | str, key: Hashable) -> Pid | None:
    """The live process registered under key, or None — at once, from the
    registry's published table (no call; must be called from a process
    when ``reg`` is a name)."""
    reg_pid = reg if isinstance(reg, Pid) else whereis(reg)
    if reg_pid is None:
        return None
    table = _tables.get(reg_pid)
    if table is None:
        return None
    pid = table.get(key)
    return pid if pid is not None and is_alive(pid) else None


class Via(NamedTuple):
    """Names the process registered under ``key`` in registry ``registry``
    (OTP's ``{via, Module, Name}``); ``whereis_name()`` resolves it."""

    registry: Pid | str
    key: Hashable

    def whereis_name(self) -> Pid | None:
        """The live process registered under the key, or None."""
        return whereis_name(self.registry, self.key)


def via(reg: Pid | str, key: Hashable) -> Via:
    """A name for the process registered under key (see ``Via``)."""
    return Via(reg, key)
