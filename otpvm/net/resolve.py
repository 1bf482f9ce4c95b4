"""Name resolution that never blocks a scheduler thread.

A numeric address is converted at once; a host name is looked up by
``getaddrinfo`` on a short-lived thread (the C library's resolver blocks),
while the calling process waits for the answer as a message.
"""

from __future__ import annotations

import socket as _socket
import threading
from typing import Any

from otpvm.kernel import make_ref, self
from otpvm.net.port import wait


async def resolve(vm: Any, host: str, port: int, kind: int) -> tuple[int, Any]:
    """(family, sockaddr) for host:port; raises socket.gaierror naming host."""
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a non-empty str, not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an int in 0..65535, not {port!r}")
    try:
        infos = _socket.getaddrinfo(host, port, type=kind, flags=_socket.AI_NUMERICHOST)
    except _socket.gaierror:
        infos = await _lookup(vm, host, port, kind)
    family, _, _, _, addr = infos[0]
    return family, addr


async def _lookup(vm: Any, host: str, port: int, kind: int) -> Any:
    me, ref = self(), make_ref()

    def look_up() -> None:
        try:
            result: Any = _socket.getaddrinfo(host, port, type=kind)
        except OSError as exc:
            result = _socket.gaierror(exc.errno, f"cannot resolve {host!r}: {exc.strerror}")
        vm._post(me, (ref, result))

    threading.Thread(target=look_up, name=f"otpvm-resolve-{host}", daemon=True).start()
    return await wait(ref, None)
