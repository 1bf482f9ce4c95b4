"""TCP sockets owned by processes: ``gen_tcp`` in Python.

Every call is made from inside an otpvm process, which becomes the socket's
owner (``listen``, ``connect``; an accepted socket belongs to the process that
called ``accept``).  Options (``active``, ``packet``, ``nodelay``...) are
those of ``otpvm.net.setopts``; an accepted socket inherits its listening
socket's.  Calls that wait (``accept``, ``connect``, ``recv``, a ``send`` to a
slow peer) suspend only their caller.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
from collections.abc import Callable
from typing import Any

from otpvm import _vm
from otpvm.kernel import make_ref, self
from otpvm.net.port import Socket, bound_socket, wait, wait_on
from otpvm.net.resolve import resolve

__all__ = ["accept", "connect", "listen", "recv", "send"]


def listen(port: int = 0, *, host: str = "", backlog: int = 1024, **opts: Any) -> Socket:
    """Opens a listening socket on host:port (port 0: any free port).

    ``reuseaddr`` defaults to True here, so that a restarted listener can
    bind again at once.  Raises OSError naming the address (``EADDRINUSE``...).
    """
    vm = _vm._current_vm("net.tcp.listen")
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be a positive int, not {backlog!r}")
    sock = bound_socket(_socket.SOCK_STREAM, host, port, opts.pop("reuseaddr", True), "listen")
    try:
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host or '*'}:{port}: {exc.strerror}") from None
    return Socket(vm, sock, "listen", self(), opts)


async def accept(lsock: Socket, timeout: float | None = None) -> Socket:
    """Waits for a connection on a listening socket; the caller owns it."""
    result = lsock.accept(self())
    if isinstance(result, Socket):
        return result
    return await wait_on(lsock, result, timeout, "accept", _close_late)  # type: ignore[no-any-return]


def _close_late(late: Any) -> None:
    if isinstance(late, Socket):
        late.close()


async def connect(host: str, port: int, *, timeout: float | None = None, **opts: Any) -> Socket:
    """Connects to host:port; the caller owns the socket.

    Raises ConnectionRefusedError, TimeoutError, socket.gaierror (unknown
    host), each naming the address.
    """
    vm = _vm._current_vm("net.tcp.connect")
    family, addr = await resolve(host, port, _socket.SOCK_STREAM)
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, f"cannot connect to {host}:{port}: {os.strerror(err)}")
    ref = make_ref() if err else None
    conn = Socket(vm, sock, "tcp", self(), opts, connecting=ref)
    if ref is None:
        return conn
    try:
        await wait(ref, timeout)
    except TimeoutError:
        conn.close()
        raise TimeoutError(f"connect to {host}:{port} timed out after {timeout} s") from None
    except OSError as exc:
        raise OSError(exc.errno, f"cannot connect to {host}:{port}: {exc.strerror}") from None
    return conn


async def send(sock: Socket, data: bytes) -> None:
    """Sends a packet (framed by the socket's ``packet`` option).

    Returns once the data is queued.  While the peer is slow and the output
    queue is over ``high_watermark``, the caller waits (up to
    ``send_timeout``, then TimeoutError; the data stays queued).  Raises
    ClosedError on a closed socket; an error the send meets (a peer that
    reset the connection...) closes the socket and raises ClosedError too,
    as gen_tcp's ``{error, closed}``.
    """
    ref = sock.send(data)
    if ref is not None:
        await wait_on(sock, ref, sock.send_timeout, "send (the peer is not reading)")


async def recv(sock: Socket, length: int = 0, timeout: float | None = None) -> bytes:
    """Receives a packet from a passive socket (``active=False``).

    ``length`` (packet='raw' only) asks for exactly that many bytes; 0 for
    whatever is available.  Raises ClosedError at end of stream (a reset
    included), TimeoutError after ``timeout`` seconds (no data is lost).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative int, not {length!r}")
    ref = sock.recv(self(), length)
    return await wait_on(sock, ref, timeout, "recv", _put_back(sock))  # type: ignore[no-any-return]


def _put_back(sock: Socket) -> Callable[[Any], None]:
    def put_back(late: Any) -> None:
        if isinstance(late, bytes):
            sock.unread(late)
    return put_back
