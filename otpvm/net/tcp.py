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
from typing import Any

from otpvm import _vm
from otpvm.kernel import self
from otpvm.net.port import Socket, flush, wait
from otpvm.net.resolve import resolve

__all__ = ["accept", "connect", "listen", "recv", "send"]


def listen(port: int = 0, *, host: str = "", backlog: int = 1024, **opts: Any) -> Socket:
    """Opens a listening socket on host:port (port 0: any free port).

    Raises OSError naming the address when it cannot (``EADDRINUSE``...).
    """
    vm = _vm._current_vm("net.tcp.listen")
    if isinstance(backlog, bool) or not isinstance(backlog, int) or backlog < 1:
        raise ValueError(f"backlog must be a positive int, not {backlog!r}")
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    try:
        if opts.pop("reuseaddr", True):
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host or '*'}:{port}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise
    return Socket(vm, sock, "listen", self(), opts)


async def accept(lsock: Socket, timeout: float | None = None) -> Socket:
    """Waits for a connection on a listening socket; the caller owns it."""
    result = lsock.accept(self())
    if isinstance(result, Socket):
        return result
    try:
        return await wait(result, timeout)          # type: ignore[no-any-return]
    except TimeoutError:
        lsock.forget_waiter(result)
        late = await flush(result)
        if isinstance(late, Socket):
            late.close()
        raise TimeoutError(f"accept on {lsock!r} timed out after {timeout} s") from None


async def connect(host: str, port: int, *, timeout: float | None = None, **opts: Any) -> Socket:
    """Connects to host:port; the caller owns the socket.

    Raises ConnectionRefusedError, TimeoutError, socket.gaierror (unknown
    host), each naming the address.
    """
    vm = _vm._current_vm("net.tcp.connect")
    family, addr = await resolve(vm, host, port, _socket.SOCK_STREAM)
    sock = _socket.socket(family, _socket.SOCK_STREAM)
    sock.setblocking(False)
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS):
        sock.close()
        raise OSError(err, f"cannot connect to {host}:{port}: {os.strerror(err)}")
    try:
        conn = Socket(vm, sock, "tcp", self(), opts, connecting=err != 0)
    except BaseException:
        sock.close()
        raise
    if err == 0:
        return conn
    try:
        await wait(conn.connecting_ref(), timeout)
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
    ``send_timeout``, then TimeoutError; the data stays queued).
    """
    ref = sock.send(data)
    if ref is None:
        return
    try:
        await wait(ref, sock.send_timeout)
    except TimeoutError:
        sock.forget_waiter(ref)
        await flush(ref)
        raise TimeoutError(f"send on {sock!r} timed out after {sock.send_timeout} s: "
                           f"the peer is not reading") from None


async def recv(sock: Socket, length: int = 0, timeout: float | None = None) -> bytes:
    """Receives a packet from a passive socket (``active=False``).

    ``length`` (packet='raw' only) asks for exactly that many bytes; 0 for
    whatever is available.  Raises ClosedError at end of stream,
    TimeoutError after ``timeout`` seconds (no data is lost).
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative int, not {length!r}")
    ref = sock.recv(self(), length)
    try:
        return await wait(ref, timeout)             # type: ignore[no-any-return]
    except TimeoutError:
        sock.forget_waiter(ref)
        late = await flush(ref)
        if isinstance(late, bytes):
            sock.unread(late)
        raise TimeoutError(f"recv on {sock!r} timed out after {timeout} s") from None
