"""otpvm: Erlang/OTP's uptime for Python.

A virtual machine of lightweight isolated processes — share-nothing
messages, selective receive, links, monitors, exit signals, timers and
registered names — scheduled by a compiled core on several threads.
"""

from otpvm import (
    application,
    gen,
    gen_event,
    gen_server,
    gen_statem,
    kernel,
    registry,
    supervisor,
    sys,  # noqa: F401  (otpvm.sys, not in __all__: it would shadow the stdlib)
    task,
)
from otpvm.gen import CallError
from otpvm.gen_server import GenServer
from otpvm.kernel import *  # noqa: F403  (the kernel API, listed in kernel.__all__)
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags
from otpvm.terms import (
    ANY,
    AnyOf,
    Down,
    Exit,
    ForeignPidError,
    NameRegistrationError,
    NoProcError,
    NotInProcessError,
    ProcessExit,
    UnknownNameError,
)

__version__ = "0.1.0"

__all__ = [
    "gen_event",
    "gen_statem",
    "registry",
    "task",
    "application",
    "supervisor",
    "ChildSpec",
    "SupFlags",
    "Supervisor",
    "gen",
    "gen_server",
    "GenServer",
    "CallError",
    "ANY",
    "AnyOf",
    "Down",
    "Exit",
    "ForeignPidError",
    "NameRegistrationError",
    "NoProcError",
    "NotInProcessError",
    "ProcessExit",
    "UnknownNameError",
    *kernel.__all__,
]
