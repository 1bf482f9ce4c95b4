"""A supervised TCP server: acceptor pool plus one process per connection.

The ranch pattern, as a supervision tree (``rest_for_one``)::

    listener supervisor            owns the listening socket
    ├── connections                a gen_server that starts, counts and links
    │                              every connection process (temporary: a
    │                              crashed connection is logged, not restarted)
    └── acceptors supervisor
        ├── acceptor 1             accept → hand the socket to `connections`
        ├── ...
        └── acceptor N

A connection process owns ``sock`` and runs either a coroutine, ``await
handler(sock, *args)``, or a ``Protocol`` (``otpvm.net.protocol``: a callback
process, which can change code between two packets): when it ends, or crashes
on a bad code path, its socket closes and no other connection notices.  A
``ClosedError`` raised once its own socket is closed (the peer left or reset
the connection mid-send or mid-recv) ends it as ``('shutdown', reason)``: no
crash report, no supervisor report.  At
``max_connections`` the acceptors stop accepting until a connection ends
(the kernel's backlog holds newcomers).

Accepted sockets stay passive (``active=False``) until their connection
process owns them; only then is the configured ``active`` mode set.  A
client that talks at once would otherwise have its first bytes delivered to
the acceptor, handed on to ``connections`` with the socket, and taken there
as a stray message: ranch keeps its listening socket passive for the same
reason.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from otpvm import gen, gen_server, kernel, supervisor
from otpvm._vm import copy_message
from otpvm.gen import From
from otpvm.gen_server import GenServer, NoReply, Ok, Reply
from otpvm.kernel import Pid, process_flag, receive, send, spawn_handler, spawn_link, unlink
from otpvm.net import tcp
from otpvm.net.inet import controlling_process
from otpvm.net.port import ClosedError, Socket, check_option
from otpvm.net.protocol import GO, NUDGE, ProtocolServer, is_protocol, ref_of, resolve
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags
from otpvm.terms import ANY, Exit

__all__ = ["Listener", "child_spec", "connection_count", "connection_pids", "nudge",
           "serve", "stop_server"]

_log = logging.getLogger("otpvm")

CoroutineHandler = Callable[..., Awaitable[Any]]
Handler = CoroutineHandler | type | str
"""A coroutine function, a Protocol subclass, or a ``'pkg.mod:Name'`` ref to one."""


class Listener(NamedTuple):
    """A running server: its supervisor, the port it listens on, its name."""

    sup: Pid
    port: int
    name: str


async def serve(handler: Handler, port: int = 0, **kwargs: Any) -> Listener:
    """Starts a server linked to the caller; returns once it listens.

    Takes the arguments of ``child_spec`` (but the name is optional).
    """
    # A ref's id is unique in the VM, however often this module is reloaded.
    name = kwargs.pop("name", None) or f"otpvm.net.server.{kernel.make_ref().id}"
    spec = child_spec(name, handler, port, **kwargs)
    fn, start_args = spec.start
    sup = await fn(*start_args)
    listening = await gen_server.call(_conns_name(name), "port")
    return Listener(sup, listening, name)


def child_spec(name: str, handler: Handler, port: int = 0, *, args: tuple[Any, ...] = (),
               host: str = "", acceptors: int = 10, max_connections: int = 1024,
               backlog: int = 1024, **opts: Any) -> ChildSpec:
    """The child spec of a server, to put it in your own supervision tree.

    Every connection gets a new process, which runs ``handler(sock, *args)``
    for a coroutine function, or ``handler``'s callbacks for a Protocol
    subclass (``init(sock, args)``, then ``handle_data``...; ``args`` is
    then passed as one tuple) or for a ``'pkg.mod:Name'`` naming one.  A
    Protocol is kept as its name and looked up at each connection's start,
    so new connections run the current version of its code.
    ``opts`` are the socket options every accepted socket starts with (e.g.
    ``packet='line', active='once'``); ``active`` takes effect once the
    socket belongs to the handler's process, so no data reaches another.
    """
    handler = _check_handler(handler)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
    if not isinstance(host, str):
        raise TypeError(f"host must be a str ('' for every interface), not {host!r}")
    for option, value in opts.items():
        check_option(option, value)     # before anything starts, not in the listener
    _check_positive("acceptors", acceptors)
    _check_positive("max_connections", max_connections)
    _check_positive("backlog", backlog)
    config = _Config(name, handler, tuple(args), port, host, acceptors, max_connections,
                     backlog, opts)
    return ChildSpec(name, (supervisor.start_link, (_ListenerSup, config)), type="supervisor")


async def stop_server(listener: Listener) -> None:
    """Stops the server: acceptors, then every connection, then the socket.
    The caller's link to it (from ``serve``) is removed first, so the
    caller lives on."""
    unlink(listener.sup)
    await gen.stop(listener.sup, "shutdown")


async def connection_count(listener: Listener | str) -> int:
    """How many connection processes are alive."""
    name = listener.name if isinstance(listener, Listener) else listener
    return await gen_server.call(_conns_name(name), "count")  # type: ignore[no-any-return]


async def connection_pids(listener: Listener | str) -> list[Pid]:
    """The pids of the connection processes alive, oldest first."""
    name = listener.name if isinstance(listener, Listener) else listener
    return await gen_server.call(_conns_name(name), "pids")  # type: ignore[no-any-return]


async def nudge(listener: Listener | str) -> int:
    """Sends every connection process a no-op message, so that idle
    Protocol connections switch to the current code now rather than at
    their next packet (the code changes at a message); returns how many."""
    pids = await connection_pids(listener)
    for pid in pids:
        send(pid, NUDGE)
    return len(pids)


def _check_handler(handler: Any) -> Any:
    """What the config keeps of a handler: a Protocol as a late-bound ref."""
    if isinstance(handler, str):
        try:
            cls = resolve(handler)
        except (ImportError, LookupError, ValueError) as exc:
            raise ValueError(f"handler {handler!r} names no Protocol: {exc}") from None
        if not is_protocol(cls):
            raise TypeError(f"handler {handler!r} is {cls!r}, not a Protocol subclass")
        return handler
    if is_protocol(handler):
        return ref_of(handler)
    if isinstance(handler, type) or not callable(handler):
        raise TypeError(f"handler must be an async function or a Protocol subclass, "
                        f"not {handler!r}")
    return handler


def _conns_name(name: str) -> str:
    return f"{name}.connections"


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, not {value!r}")


class _Config(NamedTuple):
    name: str
    handler: Handler
    args: tuple[Any, ...]
    port: int
    host: str
    acceptors: int
    max_connections: int
    backlog: int
    opts: dict[str, Any]


class _ListenerSup(Supervisor):
    def init(self, config: _Config) -> Any:
        opts = dict(config.opts)
        active = opts.pop("active", False)  # set by each connection process itself
        lsock = tcp.listen(config.port, host=config.host, backlog=config.backlog, **opts)
        conns = _conns_name(config.name)
        conns_args = (config.handler, config.args, active, config.max_connections,
                      lsock.sock.getsockname()[1])
        return SupFlags("rest_for_one", intensity=10, period=10), [
            ChildSpec("connections", (_start_connections, (conns, conns_args)),
                      shutdown="infinity"),
            ChildSpec("acceptors", (supervisor.start_link,
                                    (_AcceptorSup, (lsock, conns, config.acceptors))),
                      type="supervisor"),
        ]


async def _start_connections(name: str, args: Any) -> Pid:
    return await gen_server.start_link(_Connections, args, name=name)


class _AcceptorSup(Supervisor):
    def init(self, args: tuple[Socket, str, int]) -> Any:
        lsock, conns, count = args
        return SupFlags("one_for_one", intensity=10, period=10), [
            ChildSpec(("acceptor", i), (_start_acceptor, (lsock, conns)), shutdown="brutal_kill")
            for i in range(count)
        ]


async def _start_acceptor(lsock: Socket, conns: str) -> Pid:
    return spawn_link(_acceptor, lsock, conns)


async def _acceptor(lsock: Socket, conns: str) -> None:
    """Accepts forever; hands each socket to the connections server, which
    answers only while under max_connections."""
    while True:
        await _accept_one(lsock, conns)


async def _accept_one(lsock: Socket, conns: str) -> None:
    # A function of its own so that nothing of the connection outlives the
    # hand-over: a local of the loop would keep its socket (and whatever
    # that socket buffered) until the next accept, for as long as that took.
    sock = await tcp.accept(lsock)
    pid = gen.resolve(conns)
    if pid is None:                     # connections is restarting: so do we
        raise RuntimeError(f"{conns!r} is not running")
    await controlling_process(sock, pid)
    await gen_server.call(conns, ("start", sock), timeout=None)


async def _connection(handler: CoroutineHandler, args: tuple[Any, ...], active: Any) -> Any:
    _, sock = await receive((GO, ANY))
    if active is not False:
        sock.setopts({"active": active})
    reason = await _run_handler(handler, sock, args)
    if reason != "normal":
        kernel.exit(reason)             # outside the except: no traceback kept


async def _run_handler(handler: CoroutineHandler, sock: Socket, args: tuple[Any, ...]) -> Any:
    """The handler's result, as the connection's exit reason: 'normal' when
    it returns, ('shutdown', reason) when it raised ClosedError once its own
    socket was closed or its peer had closed it (a peer that left or reset:
    not a crash, as ranch's connections end).  Anything else crashes the
    connection, as it should."""
    try:
        await handler(sock, *args)
    except ClosedError as exc:
        if not (sock.closed or sock._eof):  # _eof: the peer closed a passive socket
            raise                       # another socket's: the handler's bug
        return ("shutdown", exc.reason)
    return "normal"


class _ConnState:
    __slots__ = ("handler", "args", "active", "max", "port", "pids", "sleepers")

    def __init__(self, handler: Handler, args: tuple[Any, ...], active: Any, max_: int,
                 port: int) -> None:
        self.handler, self.args, self.active = handler, args, active
        self.max, self.port = max_, port
        self.pids: dict[Pid, None] = {}     # the live connections, oldest first
        self.sleepers: deque[From] = deque()


class _Connections(GenServer):
    """Starts connection processes (linked, trapping their exits) and keeps
    the acceptors waiting while max_connections are alive."""

    def init(self, args: tuple[Any, ...]) -> Any:
        process_flag("trap_exit", True)
        return Ok(_ConnState(*args))

    async def handle_call(self, request: Any, from_: From, state: _ConnState) -> Any:
        if request == "port":
            return Reply(state.port, state)
        if request == "count":
            return Reply(len(state.pids), state)
        if request == "pids":
            return Reply(list(state.pids), state)
        if request == ("which_children",):      # as supervisor.which_children answers
            return Reply([(None, pid, "worker", _modules(state.handler))
                          for pid in state.pids], state)
        _, sock = request
        pid = self._spawn(state)
        state.pids[pid] = None
        try:
            await controlling_process(sock, pid)
        except Exception:
            sock.close()                    # the new process is already gone
        send(pid, (GO, sock))
        if len(state.pids) < state.max:
            return Reply("ok", state)
        state.sleepers.append(from_)
        return NoReply(state)

    def handle_info(self, msg: Any, state: _ConnState) -> Any:
        if not isinstance(msg, Exit) or msg.pid not in state.pids:
            return super().handle_info(msg, state)    # logged: none should come
        del state.pids[msg.pid]
        if not _is_clean(msg.reason):
            _log.error(
                "supervisor report: supervisor %r, context child_terminated, reason %r, "
                "offender: connection pid=%r restart=temporary",
                kernel.self(), msg.reason, msg.pid)
        if state.sleepers:                  # one ended: one held acceptor goes on
            gen.reply(state.sleepers.popleft(), "ok")
        return NoReply(state)

    @staticmethod
    def _spawn(state: _ConnState) -> Pid:
        handler = state.handler
        if isinstance(handler, str) or is_protocol(handler):
            # The current version at each start, as an MFA in OTP.
            server = ProtocolServer(resolve(handler), copy_message(state.args), state.active,
                                    kernel.self())
            return spawn_handler(server, link=True)
        return spawn_link(_connection, handler, state.args, state.active)


def _modules(handler: Any) -> tuple[Any, ...]:
    if isinstance(handler, str):
        return (handler.partition(":")[0],)
    return (getattr(handler, "__module__", None),)


def _is_clean(reason: Any) -> bool:
    return reason in ("normal", "shutdown") or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown")
