"""What works on any socket, as Erlang's ``inet`` module: options,
addresses, closing, and handing a socket to another process."""

from __future__ import annotations

from typing import Any

from otpvm.kernel import Pid, receive, self, send
from otpvm.net.port import Socket
from otpvm.terms import ANY, AnyOf

__all__ = ["close", "controlling_process", "getopts", "peername", "setopts", "shutdown",
           "sockname"]


def close(sock: Socket) -> None:
    """Closes the socket at once; TCP output still queued goes out after
    it (see ``otpvm.net.linger``).  Closing a closed socket does nothing."""
    sock.close()


def shutdown(sock: Socket, how: str = "write") -> None:
    """Shuts down ``'read'``, ``'write'`` (after pending output) or ``'read_write'``."""
    sock.shutdown(how)


def setopts(sock: Socket, **opts: Any) -> None:
    """Sets socket options (see the module docstring); raises ValueError
    naming an unknown option or a bad value."""
    if len(opts) == 1 and "active" in opts:
        sock.set_active(opts["active"])
    else:
        sock.setopts(opts)


def getopts(sock: Socket, *names: str) -> dict[str, Any]:
    """Reads options by name (all the socket-level ones when none given)."""
    return sock.getopts(names)


def peername(sock: Socket) -> tuple[str, int]:
    """The remote address (host, port)."""
    sock._check_open()
    return sock.sock.getpeername()[:2]  # type: ignore[no-any-return]


def sockname(sock: Socket) -> tuple[str, int]:
    """The local address (host, port)."""
    sock._check_open()
    return sock.sock.getsockname()[:2]  # type: ignore[no-any-return]


async def controlling_process(sock: Socket, pid: Pid) -> None:
    """Hands the socket to pid (only its owner may).  Messages of this
    socket already in the caller's mailbox move to pid, in order, as
    ``gen_tcp:controlling_process`` does."""
    me = self()
    if sock.owner != me:
        raise PermissionError(f"only its owner {sock.owner!r} can hand {sock!r} over (not_owner)")
    if pid == me:
        return
    active = sock.active
    sock.setopts({"active": False})
    sock.give_to(pid)
    own = AnyOf(("tcp", sock, ANY), ("tcp_closed", sock), ("tcp_error", sock, ANY),
                ("tcp_passive", sock), ("udp", sock, ANY, ANY, ANY), ("udp_error", sock, ANY),
                ("udp_passive", sock))
    while True:
        try:
            msg = await receive(own, timeout=0)
        except TimeoutError:
            break
        send(pid, msg)
    if not sock.closed:
        sock.setopts({"active": active})
