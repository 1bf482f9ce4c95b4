"""The uptime demo's connection handler, version 1: a line echo.

The same wire behaviour as ``otpvm.demos.uptime.connection`` (every line
comes back as it was; ``/stats`` runs the untested code path that crashes
the connection), written as a ``net.Protocol`` so that a live upgrade can
change its code between two lines (``otpvm demo --upgrade``, which loads
``echo_v2.py`` as the next version of this module).  The state is the count
of lines echoed.
"""

from __future__ import annotations

from typing import Any

from otpvm.demos.uptime import parse_stats
from otpvm.net import Protocol, Socket

__vsn__ = "1"


class Echo(Protocol):
    """Echoes every line; counts them."""

    state_vsn = 1

    def init(self, sock: Socket, args: Any) -> int:
        return 0

    def handle_data(self, line: bytes, count: int) -> int:
        if line.startswith(b"/stats"):
            parse_stats(line)
        self.send(line)
        return count + 1
