"""UDP sockets owned by processes: ``gen_udp`` in Python.

In an active mode datagrams arrive as ``('udp', sock, host, port, data)``
messages; in passive mode ``recv`` returns ``(host, port, data)``.
"""

from __future__ import annotations

import socket as _socket
from typing import Any

from otpvm import _vm
from otpvm.kernel import self
from otpvm.net.port import Socket, bound_socket, wait_on
from otpvm.net.resolve import resolve

__all__ = ["open", "recv", "send"]

MAX_DATAGRAM = 65535


def open(port: int = 0, *, host: str = "", **opts: Any) -> Socket:  # noqa: A001 (gen_udp:open)
    """Opens a UDP socket bound to host:port (port 0: any free port)."""
    vm = _vm._current_vm("net.udp.open")
    sock = bound_socket(_socket.SOCK_DGRAM, host, port, opts.pop("reuseaddr", False), "open UDP")
    opts.setdefault("buffer", MAX_DATAGRAM)
    return Socket(vm, sock, "udp", self(), opts)


async def send(sock: Socket, host: str, port: int, data: bytes) -> None:
    """Sends one datagram to host:port."""
    _, addr = await resolve(host, port, _socket.SOCK_DGRAM)
    ref = sock.send(data, addr)
    if ref is not None:
        await wait_on(sock, ref, sock.send_timeout, "send")


async def recv(sock: Socket, timeout: float | None = None) -> tuple[str, int, bytes]:
    """Receives one datagram from a passive socket: ``(host, port, data)``.
    A datagram that races the timeout is dropped, as UDP may."""
    ref = sock.recv(self(), 0)
    return await wait_on(sock, ref, timeout, "recv")  # type: ignore[no-any-return]
