"""Special processes: coroutine processes that take part in the sys protocol.

A behaviour switches code between two messages; a coroutine cannot switch
in the middle of its frame, just as an Erlang process in a local loop
cannot.  OTP's answer is the *special process*: its own receive loop hands
``{system, From, Request}`` to ``sys:handle_system_msg``, and it changes code
when it calls its loop again through a qualified call.  In otpvm the loop
awaits ``special.receive`` instead of ``otpvm.receive``::

    from otpvm import special

    async def loop(count):
        while True:
            msg = await special.receive(state=count, resume=loop)
            count += 1
            ...

``special.receive`` returns the next message as ``otpvm.receive`` does, and
answers system requests on the way: ``sys.get_state`` gets ``state``,
``sys.suspend`` holds the process (its messages wait, in order), and
``sys.change_code`` while suspended runs the module's ``code_change(old_vsn,
state, extra)`` (a module-level function; the state is kept when there is
none).  At ``sys.resume`` the process restarts in the current version of
its module: ``otpvm.become(code.current(resume), new_state)``.  The release
handler (otpvm.release) suspends, switches and resumes special processes
like behaviours.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from otpvm import code, gen
from otpvm._vm import copy_message
from otpvm.gen import SYSTEM, From
from otpvm.kernel import become
from otpvm.kernel import receive as _receive
from otpvm.kernel import self as _self
from otpvm.terms import ANY, AnyOf

__all__ = ["receive"]

_SYSTEM_PATTERN = (SYSTEM, ANY, ANY)


class _Special:
    """One receive's view of the process: its state and what a change_code
    made of it."""

    def __init__(self, state: Any, resume: Callable[..., Any] | None) -> None:
        self.state = state
        self.resume = resume
        self.changed: tuple[Callable[..., Any], Any] | None = None   # (new loop, new state)
        self.undo: tuple[Callable[..., Any], Any] | None = None

    def status(self) -> dict[str, Any]:
        return {"pid": _self(), "module": self.resume, "state": self.state, "status": "running"}


async def receive(match: Any = None, timeout: float | None = None, *, state: Any = None,
                  resume: Callable[..., Any] | None = None) -> Any:
    """The next message matching ``match`` (as ``otpvm.receive``), with the
    sys protocol answered meanwhile (see the module docstring).  ``state``
    is what ``sys.get_state`` shows and ``code_change`` converts;
    ``resume(state)`` is the loop to restart after a code change (an async
    function of the process's module)."""
    special = _Special(state, resume)
    pattern = _SYSTEM_PATTERN if match is None else AnyOf(_SYSTEM_PATTERN, match)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        msg = await _receive(None if match is None else pattern, timeout=left)
        if not (type(msg) is tuple and len(msg) == 3 and msg[0] == SYSTEM
                and isinstance(msg[1], From)):
            return msg
        await _system(special, msg[1], msg[2], suspended=False)


async def _system(special: _Special, from_: From, request: Any, *, suspended: bool) -> None:
    if request == "get_state":
        gen.reply(from_, special.state)
    elif request == "get_status":
        gen.reply(from_, special.status())
    elif request == "suspend":
        gen.reply(from_, "ok")
        if not suspended:
            await _suspended(special)
    elif request == "resume":
        gen.reply(from_, "ok")
    elif isinstance(request, tuple) and request[:1] == ("change_code",) and len(request) == 4:
        if not suspended:
            gen.reply(from_, ("error", "running"))
        else:
            gen.reply(from_, _change_code(special, *request[1:]))
    elif request in (("commit_code",), ("abort_code",)):
        if request == ("abort_code",) and special.undo is not None:
            special.changed = None
        special.undo = None
        gen.reply(from_, "ok")
    else:
        gen.reply(from_, ("error", ("unknown_system_msg", request)))


async def _suspended(special: _Special) -> None:
    """Only system requests until resume; then, after a code change, the
    loop restarts in the new version."""
    while True:
        _, from_, request = await _receive(_SYSTEM_PATTERN)
        if request == "resume":
            gen.reply(from_, "ok")
            break
        await _system(special, from_, request, suspended=True)
    if special.changed is not None:
        loop, state = special.changed
        become(loop, state)


def _change_code(special: _Special, module: str, old_vsn: Any, extra: Any) -> Any:
    """The loop's module code_change, on the new code (on the running code
    for a downgrade); the new loop and state wait for resume."""
    if special.resume is None:
        return ("error", "no resume function: pass resume= to special.receive")
    running = special.resume
    if running.__module__ != module:
        return "ok"                                 # another module's change
    new_loop = code.current(running)
    down = type(old_vsn) is tuple and old_vsn[:1] == ("down",)
    migrate = (running if down else new_loop).__globals__.get("code_change")
    try:
        state = copy_message(special.state)
        if migrate is not None:
            state = migrate(old_vsn, state, extra)
    except Exception as exc:
        return ("error", ("callback_failed", exc))
    special.undo = (running, special.state)
    special.changed = (new_loop, state)
    return "ok"

