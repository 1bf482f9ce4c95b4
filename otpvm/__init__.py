"""otpvm: Erlang/OTP's uptime for Python.

A virtual machine of lightweight isolated processes — share-nothing
messages, selective receive, links, monitors, exit signals, timers and
registered names — scheduled by a compiled core on several threads.
"""

try:
    from otpvm import _vm  # noqa: F401  (first: a source tree without it is explained below)
except ImportError:
    # ``python -m otpvm`` (or ``python -m pytest``) run from a clone's root puts
    # that folder first on sys.path, so this uncompiled source tree is imported
    # instead of the installed package: say so, rather than the confusing
    # "partially initialized module" error.  name= makes python -m show it as
    # one line, not a traceback.
    import importlib.util as _importlib_util
    import os as _os

    _here = _os.path.dirname(_os.path.abspath(__file__))
    if (_importlib_util.find_spec("otpvm._vm") is not None
            or not _os.path.exists(_os.path.join(_here, "_core", "_vm.pyx"))):
        raise
    raise ImportError(
        f"otpvm is imported from its source tree ({_here}), which has no compiled core: "
        f"run `pip install .` and use the `otpvm` command, or run from another folder",
        name="otpvm") from None

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
    Shared,
    StaleClassError,
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
    "Shared",
    "StaleClassError",
    "UnknownNameError",
    *kernel.__all__,
]
