"""hibernate_after: a behaviour hibernates once it has waited that long.

Shared by gen_statem and gen_event (OTP's ``{hibernate_after, Time}`` start
option).  One timer is on its way at most: a message handled meanwhile does
not restart it, it moves the start of the wait, and the timer, when it
comes, waits out the rest.  That costs one clock read per message instead of
a timer set and cancelled each time.
"""

from __future__ import annotations

import time
from typing import Any

from otpvm.kernel import Pid, Ref, make_ref, send_after

TAG = "$idle"
"""The tag of the timer's message: ``(TAG, ref)``."""


def check(value: Any) -> float | None:
    """The hibernate_after option, checked: None or seconds >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"hibernate_after is None or seconds, not {value!r}")
    if not value >= 0:
        raise ValueError(f"hibernate_after cannot be negative: {value!r}")
    return float(value)


class IdleTimer:
    """hibernate_after's clock for one process."""

    __slots__ = ("after", "since", "ref")

    def __init__(self, after: float) -> None:
        self.after = after
        self.since = 0.0                    # when the process last began to wait
        self.ref: Ref | None = None         # the tag of the timer on its way

    def rest(self, pid: Pid) -> None:
        """The process begins to wait for its next message."""
        self.since = time.monotonic()
        if self.ref is None:
            self._arm(pid, self.after)

    def is_mine(self, msg: Any) -> bool:
        """Whether msg is this timer's message (a 2-tuple tagged TAG)."""
        return msg[1] == self.ref

    def fired(self, pid: Pid) -> bool:
        """The timer's message came: True if the process has waited long
        enough to hibernate, else the timer is sent again for the rest."""
        self.ref = None
        left = self.since + self.after - time.monotonic()
        if left > 0.001:
            self._arm(pid, left)
            return False
        return True

    def _arm(self, pid: Pid, delay: float) -> None:
        self.ref = make_ref()
        send_after(delay, pid, (TAG, self.ref))
