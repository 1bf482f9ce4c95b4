"""Sockets owned by processes, driven by the VM's C poller.

A socket is like an Erlang port: it belongs to a *controlling process*, which
gets its data as messages in an active mode and which, when it ends for any
reason, takes the socket with it.  ``otpvm.net.tcp`` and ``otpvm.net.udp``
open sockets; the functions here work on any socket; ``serve`` runs a
supervised acceptor pool with one process per connection, running a
coroutine or a ``Protocol`` (a callback process that can change code
between two packets: ``otpvm.net.protocol``).

Active modes (``setopts(sock, active=...)``), as in ``inet:setopts``:

* ``True``: every packet arrives as ``('tcp', sock, data)``, then
  ``('tcp_closed', sock)``, after ``('tcp_error', sock, reason)`` when an
  error ended the stream (a reset is a close, unless ``show_econnreset``);
* ``'once'``: one packet, then the socket turns passive until set again;
* ``N`` (an int): N packets, then ``('tcp_passive', sock)``;
* ``False`` (passive, the default): ``await tcp.recv(sock)``.

Framing (``packet=``): ``'raw'``, ``'line'``, or 1/2/4-byte length headers,
with ``packet_size`` as the largest packet accepted (0, the default, means
64 MiB; at most 2**31 - 1; see ``otpvm.net.framing``).  Other options:
``nodelay``, ``keepalive``, ``reuseaddr``, ``sndbuf``, ``recbuf``, ``buffer``
(bytes read at a time), ``send_timeout``, ``high_watermark`` and
``low_watermark`` (the output queue's bounds: over the high one a sender
waits until the queue drains to the low one), ``show_econnreset`` (report a
peer's reset as ``econnreset`` instead of a plain close).

Closing a TCP socket, or its owner ending, does not lose what it still had
queued: that goes out after the close, as from an Erlang port, unless the
owner was killed or the peer takes nothing for ``send_timeout`` (30 s when
unset); see ``otpvm.net.linger``.
"""

from __future__ import annotations

from otpvm.net import tcp, udp
from otpvm.net.framing import PacketTooLarge
from otpvm.net.inet import (
    close,
    controlling_process,
    getopts,
    peername,
    setopts,
    shutdown,
    sockname,
)
from otpvm.net.port import ClosedError, Socket
from otpvm.net.protocol import Protocol
from otpvm.net.server import (
    Listener,
    child_spec,
    connection_count,
    connection_pids,
    nudge,
    serve,
    stop_server,
)

__all__ = [
    "ClosedError", "Listener", "PacketTooLarge", "Protocol", "Socket", "child_spec", "close",
    "connection_count", "connection_pids", "controlling_process", "getopts", "nudge",
    "peername", "serve", "setopts", "shutdown", "sockname", "stop_server", "tcp", "udp",
]
