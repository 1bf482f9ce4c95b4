"""``Protocol``: one connection as a callback behaviour, upgradable in place.

A connection handler written as a coroutine (``async def handler(sock)``)
holds its logic in a frame, which no code change can reach: it runs the code
it started with until it returns.  A ``Protocol`` keeps no stack between two
packets, as a gen_server keeps none between two messages, so the code under a
connection can change at a packet boundary without losing its socket, its
state, or a byte::

    class Echo(Protocol):
        state_vsn = 1

        def init(self, sock, args):
            return 0                              # the state: lines echoed

        def handle_data(self, line, count):
            self.send(line)
            return count + 1

    listener = await net.serve(Echo, 7000, packet="line")

Callbacks (each returns the new state, and may be ``async def``):

* ``init(sock, args) -> state``: the socket already belongs to the process;
* ``handle_data(data, state) -> state``: one packet (framed by ``packet=``);
* ``handle_info(msg, state) -> state``: any other message (logged and dropped
  by default);
* ``handle_closed(state)``: the peer closed the connection; the process then
  ends with ``'normal'``;
* ``code_change(old_vsn, state, extra) -> state``: the state converted for
  this (new) code;
* ``terminate(reason, state)``: the process is stopping (optional).

The process delivers the socket's packets one at a time (``active='once'``,
re-armed after each ``handle_data``), so a slow handler slows its peer down
through TCP, and no packet waits anywhere but in the kernel's buffers.
``self.sock`` is the socket and ``self.send(data)`` sends on it from a plain
callback; when the peer reads too slowly (the output queue over
``high_watermark``) the process waits for room before its next packet.

The process is a gen_server underneath (``otpvm.gen_server``'s handler, whose
code-change logic it shares): it answers the ``sys`` protocol (``get_state``,
``get_status``, ``suspend``, ``resume``, ``replace_state``, tracing, and
``change_code``/``commit_code``/``abort_code`` while suspended), and it
resolves its class again whenever the code epoch changed (see
``otpvm.code``): a connection switches to the current version of its class at
its next message, running the new ``code_change`` first when the version was
installed with a lazy migration; if that raises, the connection stays on its
old code and state (one error logged) and keeps its socket.  ``state_vsn``
names the shape of the state, for upgrade plans: bump it whenever
``code_change`` has something to convert.
A peer that closes or resets the connection ends the process with
``'normal'`` (after ``handle_closed``) or ``('shutdown', reason)`` (a send or
receive that met the close): neither is a crash.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Coroutine
from typing import Any

from otpvm import code, gen
from otpvm import sys as _sys
from otpvm.gen_server import NoReply, _Server
from otpvm.kernel import Pid, receive
from otpvm.net.port import ClosedError, Socket, wait_on
from otpvm.terms import ANY, ProcessExit

__all__ = ["NUDGE", "Protocol", "is_protocol", "resolve"]

_log = logging.getLogger("otpvm")

GO = "$otpvm_net_go"
"""The message that hands a connection process its socket, once it owns it."""

NUDGE = "$otpvm_net_nudge"
"""A message a Protocol process takes and drops: sent to an idle connection
after a code change, so that it switches at once instead of at its next packet."""


class Protocol:
    """Base class of a connection handler: override the callbacks you need
    (see the module docstring)."""

    state_vsn: Any = 1
    """The version of the state's shape (bump it when code_change converts)."""

    sock: Socket
    _waiting: Any = None                # a send's ref while over the high watermark

    def init(self, sock: Socket, args: Any) -> Any:
        """Returns the initial state (None by default)."""
        return None

    def handle_data(self, data: bytes, state: Any) -> Any:
        """One packet from the peer; returns the new state."""
        raise NotImplementedError(f"{type(self).__qualname__} has no handle_data")

    def handle_info(self, msg: Any, state: Any) -> Any:
        """Any other message; by default logged and dropped."""
        _log.warning("%s %r received an unexpected message: %r",
                     type(self).__qualname__, self.sock.owner, msg)
        return state

    def handle_closed(self, state: Any) -> Any:
        """The peer closed the connection (the process then ends 'normal')."""

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        """Hot upgrade: returns the state converted for this code."""
        return state

    def terminate(self, reason: Any, state: Any) -> Any:
        """The process is stopping with reason (a crash, a stop, a shutdown)."""

    def format_status(self, status: dict[str, Any]) -> dict[str, Any]:
        """Trims what ``sys.get_status`` shows."""
        return status

    def handle_call(self, request: Any, from_: Any, state: Any) -> Any:
        """A Protocol takes no calls: one crashes it, as an unexpected call
        crashes a gen_server."""
        raise NotImplementedError(f"{type(self).__qualname__} got an unexpected call {request!r}")

    def handle_cast(self, msg: Any, state: Any) -> Any:
        """A cast is handed to handle_info."""
        return NoReply(self.handle_info(("$gen_cast", msg), state))

    def send(self, data: bytes) -> None:
        """Queues data on the socket without waiting; while the output queue
        is over its high watermark the process waits, after this callback,
        before it takes its next message (TCP backpressure).  Raises
        ClosedError on a closed socket."""
        ref = self.sock.send(data)
        if ref is not None:
            self._waiting = ref


def is_protocol(handler: Any) -> bool:
    """Whether handler is a Protocol subclass."""
    return isinstance(handler, type) and issubclass(handler, Protocol)


def ref_of(cls: type[Protocol]) -> Any:
    """A late-bound name for cls (``'pkg.mod:Name'``) when it has one, else
    cls itself (a class defined inside a function has no importable name)."""
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        return cls
    return code.ref(f"{cls.__module__}:{cls.__qualname__}")


def resolve(handler: Any) -> Any:
    """The current version of what ``ref_of`` returned (a ref or a class)."""
    if isinstance(handler, str):
        return code.ref(handler).resolve()
    return code.current(handler)


class ProtocolServer(_Server):
    """The callback-process handler that runs a Protocol: gen_server's
    handler (calls, casts, the sys protocol, the code epoch check) with
    socket messages dispatched to the Protocol's callbacks."""

    def __init__(self, cls: type[Protocol], args: Any, active: Any, parent: Pid) -> None:
        if not is_protocol(cls):
            raise TypeError(f"a connection handler class must subclass Protocol, not {cls!r}")
        # Not _Server.__init__: that one wants a GenServer and a starter.
        self.cls = cls  # type: ignore[assignment]
        self.args = args
        self.name = None
        self.initial_call = f"{cls.__module__}.{cls.__qualname__}.init"
        self.starter = None
        self.parent = parent
        self.mod = None
        self.state = None
        self.timer = None
        self.timer_token = 0
        self.debug = None
        self.undo = None                # gen_server's hot-upgrade bookkeeping
        self.refused = None
        self.active = "once" if active is False else active
        self.sock: Any = None           # the Socket, once GO hands it over
        self.epoch = code.epoch()       # cls is current: resolved just now

    def start(self) -> Any:
        return self._start()

    async def _start(self) -> None:
        _, sock = await receive((GO, ANY))    # once the socket is ours
        self.sock = sock
        self.mod = mod = self.cls()
        mod.sock = sock  # type: ignore[attr-defined]
        state = await self._run(mod.init, (sock, self.args))
        self.state = state
        sock.set_active(self.active)
        more = self._wait_for_room()
        if more is not None:
            await more

    # -- messages -----------------------------------------------------------

    def _handle_message_py(self, msg: Any) -> Any:
        # (The compiled handle_message checks the epoch first; the Python
        # reference path must too.)
        epoch = code.epoch()
        if self.epoch != epoch:
            self.epoch = epoch
            self._code_epoch_changed()
        if type(msg) is tuple and len(msg) >= 2 and msg[1] is self.sock:
            kind = msg[0]
            if kind == "tcp":
                return self._dispatch(self.mod.handle_data, msg[2], True)
            if kind == "tcp_closed":
                return self._closed()
            if kind == "tcp_error":
                return None             # tcp_closed follows
            if kind == "tcp_passive":   # an active=N count ran out
                self.sock.set_active(self.active)
                return None
        if msg == NUDGE:
            return None
        if type(msg) is tuple and len(msg) == 3 and msg[0] == gen.SYSTEM:
            return self._system(msg[1], msg[2])
        return self._dispatch(self.mod.handle_info, msg, False)

    def _dispatch(self, callback: Any, arg: Any, data: bool) -> Any:
        if self.debug is not None:
            _sys.handle_debug(self.debug, self._debug_name(), ("in", arg))
        try:
            result = callback(arg, self.state)
        except ProcessExit:
            raise
        except Exception as exc:
            return self._failed(exc)
        if inspect.iscoroutine(result):
            return self._dispatch_async(result, data)
        self.state = result
        if data and self.active == "once" and not self.sock.closed:
            self.sock.set_active("once")
        return self._wait_for_room()

    async def _dispatch_async(self, pending: Coroutine[Any, Any, Any], data: bool) -> None:
        self.state = await self._run_coroutine(pending)
        if data and self.active == "once" and not self.sock.closed:
            self.sock.set_active("once")
        more = self._wait_for_room()
        if more is not None:
            await more

    async def _run(self, callback: Any, args: tuple[Any, ...]) -> Any:
        """A callback that may be sync or async, with _failed's exit rules."""
        try:
            result = callback(*args)
        except ProcessExit:
            raise
        except Exception as exc:
            more = self._failed(exc)
            if more is not None:
                await more
            raise AssertionError("unreachable: _failed always exits") from None
        if inspect.iscoroutine(result):
            return await self._run_coroutine(result)
        return result

    async def _run_coroutine(self, pending: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await pending
        except ProcessExit:
            raise
        except Exception as exc:
            more = self._failed(exc)
            if more is not None:
                await more
            raise AssertionError("unreachable: _failed always exits") from None

    def _wait_for_room(self) -> Any:
        """After a callback: wait for room if its sends filled the output queue."""
        mod = self.mod
        if mod is None or mod._waiting is None:
            return None
        ref, mod._waiting = mod._waiting, None
        return wait_on(self.sock, ref, self.sock.send_timeout, "send (the peer is not reading)")

    def _failed(self, exc: Exception) -> Any:
        """A callback raised: a ClosedError of the process's own socket (the
        peer left or reset it) ends it as ('shutdown', reason), anything else
        is a crash (terminate runs, a crash report is logged)."""
        sock = self.sock
        if isinstance(exc, ClosedError) and sock is not None and (sock.closed or sock._eof):
            reason = ("shutdown", exc.reason)
            del exc                     # outside the except: no traceback kept
            return self._terminate(reason)
        return self._crash(exc)

    def _closed(self) -> Any:
        try:
            result = self.mod.handle_closed(self.state)
        except ProcessExit:
            raise
        except Exception as exc:
            return self._crash(exc)
        if inspect.iscoroutine(result):
            return self._closed_async(result)
        return self._terminate("normal")

    async def _closed_async(self, pending: Coroutine[Any, Any, Any]) -> None:
        await self._run_coroutine(pending)
        more = self._terminate("normal")
        if more is not None:
            await more
