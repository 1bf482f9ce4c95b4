"""UDP sockets owned by processes: ``gen_udp`` in Python.

In an active mode datagrams arrive as ``('udp', sock, host, port, data)``
messages; in passive mode ``recv`` returns ``(host, port, data)``.
"""

from __future__ import annotations

import socket as _socket
from typing import Any

from otpvm import _vm
from otpvm.kernel import self
from otpvm.net.port import Socket, flush, wait
from otpvm.net.resolve import resolve

__all__ = ["open", "recv", "send"]

MAX_DATAGRAM = 65535


def open(port: int = 0, *, host: str = "", **opts: Any) -> Socket:  # noqa: A001 (gen_udp:open)
    """Opens a UDP socket bound to host:port (port 0: any free port)."""
    vm = _vm._current_vm("net.udp.open")
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, _socket.SOCK_DGRAM)
    try:
        if opts.pop("reuseaddr", False):
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        opts.setdefault("buffer", MAX_DATAGRAM)
        return Socket(vm, sock, "udp", self(), opts)
    except OSError as exc:
        sock.close()
        where = f"{host or '*'}:{port}"
        raise OSError(exc.errno, f"cannot open UDP on {where}: {exc.strerror}") from None
    except BaseException:
        sock.close()
        raise


async def send(sock: Socket, host: str, port: int, data: bytes) -> None:
    """Sends one datagram to host:port."""
    _, addr = await resolve(sock._vm, host, port, _socket.SOCK_DGRAM)
    ref = sock.send(data, addr)
    if ref is not None:
        try:
            await wait(ref, sock.send_timeout)
        except TimeoutError:
            sock.forget_waiter(ref)
            await flush(ref)
            raise TimeoutError(f"send on {sock!r} timed out after {sock.send_timeout} s") from None


async def recv(sock: Socket, timeout: float | None = None) -> tuple[str, int, bytes]:
    """Receives one datagram from a passive socket: ``(host, port, data)``."""
    ref = sock.recv(self(), 0)
    try:
        return await wait(ref, timeout)             # type: ignore[no-any-return]
    except TimeoutError:
        sock.forget_waiter(ref)
        await flush(ref)        # a datagram that raced the timeout is dropped, as UDP may
        raise TimeoutError(f"recv on {sock!r} timed out after {timeout} s") from None
