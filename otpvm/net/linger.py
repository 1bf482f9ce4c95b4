"""Lingering close: output still queued when a TCP socket closes goes out
after it, as Erlang's ports do.

Checked with the real ``erl``: what a gen_tcp socket has queued when
``gen_tcp:close`` is called, or when its owner ends for any reason but
``kill``, still reaches the peer, followed by the close.  A killed owner's
output is dropped.

Here the socket is closed for its users at once (calls raise ClosedError,
waiters are told, the owner is free of it) and a ``Linger`` takes over its
file descriptor and output queue: it writes as the peer reads, then closes
the descriptor.  Unlike ``gen_tcp:close``, which blocks its caller until the
queue is empty, ``close`` returns at once.

A peer that takes nothing for ``LINGER_TIMEOUT`` seconds (or for the
socket's ``send_timeout``, when set) loses the rest: a peer that never reads
cannot hold a descriptor forever.  Stopping the VM drops what still lingers.
"""

from __future__ import annotations

import socket as _socket
import threading
import time
from collections import deque
from typing import Any

__all__ = ["LINGER_TIMEOUT", "Linger"]

LINGER_TIMEOUT = 30.0  # seconds without progress before the rest is dropped

_OUT = 2  # otpvm.net.port.OUT (the poller's OVM_IO_OUT)


class Linger:
    """Writes a closed socket's queued output, then closes its descriptor."""

    __slots__ = ("_vm", "_sock", "_out", "_limit", "_lock", "_token", "_timer",
                 "_progress_at", "_done")

    def __init__(self, vm: Any, sock: _socket.socket, out: deque[bytes], limit: float) -> None:
        self._vm, self._sock, self._out, self._limit = vm, sock, out, limit
        self._lock = threading.Lock()
        self._token: int | None = None
        self._timer: Any = None
        self._progress_at = time.monotonic()
        self._done = False
        with self._lock:
            if not self._write():
                return                      # the kernel took it all (or the peer is gone)
            try:
                self._token = vm._io_add(self, sock.fileno(), _OUT)
                self._timer = vm._call_later(limit, self._check)
            except Exception:               # the VM is stopping: nothing can wait
                self._close()

    def __repr__(self) -> str:
        state = "done" if self._done else f"{sum(map(len, self._out))} bytes to send"
        return f"<otpvm.net.Linger fd {self._sock.fileno()}, {state}>"

    def _write(self) -> bool:
        """Writes what the kernel takes now; False once the socket is closed."""
        out = self._out
        while out:
            frame = out[0]
            try:
                sent = self._sock.send(frame, _socket.MSG_NOSIGNAL)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:                 # reset or broken: nobody to send to
                self._close()
                return False
            if sent:
                self._progress_at = time.monotonic()
            if sent < len(frame):
                out[0] = frame[sent:]
                return True
            out.popleft()
        self._close()
        return False

    def _io_ready(self, events: int) -> None:
        with self._lock:
            if not self._done and self._write():
                self._vm._io_arm(self._sock.fileno(), self._token, _OUT)

    def _check(self) -> None:
        """The timer: gives up on a peer that took nothing for the limit."""
        with self._lock:
            if self._done:
                return
            idle = time.monotonic() - self._progress_at
            if idle >= self._limit:
                self._close()
            else:
                self._timer = self._vm._call_later(self._limit - idle, self._check)

    def close(self) -> None:
        """Drops what is left and closes the descriptor."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._done:
            return
        self._done = True
        self._out.clear()
        if self._token is not None:
            self._vm._io_remove(self._sock.fileno(), self._token)
        if self._timer is not None:
            self._vm._cancel_call(self._timer)
        self._sock.close()
