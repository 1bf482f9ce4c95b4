"""Name resolution that never blocks a scheduler thread.

A numeric address is converted at once; a host name is looked up by
``getaddrinfo`` through ``run_blocking`` (the C library's resolver blocks a
thread; it must not be a scheduler's).
"""

from __future__ import annotations

import socket as _socket
from typing import Any

from otpvm.kernel import run_blocking


async def resolve(host: str, port: int, kind: int) -> tuple[int, Any]:
    """(family, sockaddr) for host:port; raises socket.gaierror naming host."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty str, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    try:
        infos = _socket.getaddrinfo(host, port, type=kind, flags=_socket.AI_NUMERICHOST)
    except _socket.gaierror:
        try:
            infos = await run_blocking(_socket.getaddrinfo, host, port, 0, kind)
        except OSError as exc:
            raise _socket.gaierror(exc.errno, f"cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    return family, addr
