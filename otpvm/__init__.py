"""otpvm: Erlang/OTP's uptime for Python.

A virtual machine of lightweight isolated processes — share-nothing
messages, selective receive, links, monitors, exit signals, timers and
registered names — scheduled by a compiled core on several threads.
"""

from otpvm.kernel import (
    VM,
    Pid,
    Ref,
    TimerRef,
    cancel_timer,
    demonitor,
    exit,
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
    run,
    self,
    send,
    send_after,
    sleep,
    spawn,
    spawn_link,
    spawn_monitor,
    unlink,
    unregister,
    whereis,
)
from otpvm.terms import (
    ANY,
    AnyOf,
    Down,
    Exit,
    NameRegistrationError,
    NotInProcessError,
    ProcessExit,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "ANY", "AnyOf", "Down", "Exit", "NameRegistrationError", "NotInProcessError", "Pid",
    "ProcessExit", "Ref", "TimerRef", "UnknownNameError", "VM", "cancel_timer", "demonitor",
    "exit", "is_alive", "link", "make_ref", "monitor", "process_flag", "process_info",
    "processes", "receive", "register", "registered", "run", "self", "send", "send_after",
    "sleep", "spawn", "spawn_link", "spawn_monitor", "unlink", "unregister", "whereis",
]
