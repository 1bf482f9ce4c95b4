"""The kernel API: the calls a process makes, and ``run`` to boot a VM.

The process-level calls are the compiled VM core's own functions, re-exported
as they are so that ``send`` and ``receive`` pay no extra Python call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otpvm._vm import (
    VM,
    Pid,
    Ref,
    TimerRef,
    alias,
    cancel_timer,
    demonitor,
    exit,
    halt,
    is_alive,
    link,
    make_ref,
    monitor,
    process_flag,
    process_info,
    processes,
    receive,
    register,
    registered,
    self,
    send,
    send_after,
    send_alias,
    sleep,
    spawn,
    spawn_handler,
    spawn_link,
    spawn_monitor,
    unalias,
    unlink,
    unregister,
    whereis,
)


def run(main: Callable[..., Any], *args: Any, schedulers: int | None = None) -> Any:
    """Boots a VM, runs ``main(*args)`` as its first process, and stops the VM.

    Returns main's return value or re-raises the exception it crashed with
    (``ProcessExit(reason)`` if it ended with another reason).  Processes
    still alive when main ends are killed.
    """
    with VM(schedulers) as vm:
        return vm.run(main, *args)


__all__ = [
    "Pid",
    "Ref",
    "TimerRef",
    "VM",
    "alias",
    "cancel_timer",
    "demonitor",
    "exit",
    "halt",
    "is_alive",
    "link",
    "make_ref",
    "monitor",
    "process_flag",
    "process_info",
    "processes",
    "receive",
    "register",
    "registered",
    "run",
    "self",
    "send",
    "send_after",
    "send_alias",
    "sleep",
    "spawn",
    "spawn_handler",
    "spawn_link",
    "spawn_monitor",
    "unalias",
    "unlink",
    "unregister",
    "whereis",
]
