"""Version 2 of the demo's echo handler with a ``code_change`` that fails
for exactly one connection: the one whose state is the ``FAIL_ON``-th
converted by this version (``otpvm demo --upgrade=failing``).

Everything else is ``echo_v2``'s.  The failure is injected by counting calls,
the one way to single out a connection whose state (a line count) says
nothing about which it is; a real ``code_change`` must be a pure function
of its arguments.
"""

from __future__ import annotations

import itertools
from typing import Any

from otpvm.demos import echo_v2

__vsn__ = "2"

FAIL_ON = 42
"""Which conversion fails (1-based), counted per loaded copy of this module."""

_conversions = itertools.count(1)


class Echo(echo_v2.Echo):
    """echo_v2's Echo, but one code_change raises."""

    def code_change(self, old_vsn: Any, state: Any, extra: Any) -> Any:
        if old_vsn == "1" and next(_conversions) == FAIL_ON:
            raise ValueError(f"injected failure: conversion #{FAIL_ON} of an echo state "
                             f"({state!r})")
        return super().code_change(old_vsn, state, extra)
