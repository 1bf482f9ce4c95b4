"""The uptime demo's connection handler, version 2 (``otpvm demo --upgrade``
loads this file as the next version of ``otpvm.demos.echo_v1``).

Wire format: every reply says which version answered it.  The line
``<id> <seq>`` comes back as ``<id> <seq> v2``, the request with `` v2``
appended before its newline: the load generator (``--versioned``) still
checks that each reply echoes exactly the request it sent, and reads the
version from the suffix (a bare echo is version 1).  ``/stats`` crashes the
connection as in v1.

The state grows from ``count`` to ``(count, bytes)``: lines and bytes
echoed, the bytes counted from the upgrade on.  ``code_change`` converts it,
both ways.
"""

from __future__ import annotations

from typing import Any

from otpvm.demos.uptime import parse_stats
from otpvm.net import Protocol, Socket

__vsn__ = "2"

SUFFIX = b" v2\n"


class Echo(Protocol):
    """Echoes every line with its version; counts lines and bytes."""

    state_vsn = 2

    def init(self, sock: Socket, args: Any) -> tuple[int, int]:
        return (0, 0)

    def handle_data(self, line: bytes, state: tuple[int, int]) -> tuple[int, int]:
        if line.startswith(b"/stats"):
            parse_stats(line)
        self.send(line[:-1] + SUFFIX if line.endswith(b"\n") else line + SUFFIX)
        count, size = state
        return (count + 1, size + len(line))

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        if old_vsn == ("down", "1"):
            count, _ = state
            return count
        if old_vsn == "1":
            return (state, 0)
        raise ValueError(f"echo v2 cannot convert a state from version {old_vsn!r}")
