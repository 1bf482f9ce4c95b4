"""Plain data the VM speaks in: system messages, match wildcards, errors.

Everything here is immutable, so it travels between processes by reference.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class _AnyType:
    """The wildcard of `receive` patterns: matches every value."""

    _instance: _AnyType | None = None

    def __new__(cls) -> _AnyType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ANY"

    def __reduce__(self) -> str:
        return "ANY"


ANY = _AnyType()
"""Matches anything inside a `receive` tuple pattern."""


class AnyOf(tuple[Any, ...]):
    """A `receive` pattern that matches when any of its alternatives does.

    ``await receive(AnyOf((ref, ANY), Down(ref, ANY, ANY)))`` waits for a
    reply or for the server's death, whichever comes first.
    """

    def __new__(cls, *alternatives: Any) -> AnyOf:
        return super().__new__(cls, alternatives)

    def __repr__(self) -> str:
        return f"AnyOf{tuple.__repr__(self)}"


class Shared:
    """A box whose content travels in messages by reference: the receiver
    gets ``box.value`` as the very object the sender put in, not a copy.

    Messages are copied (share-nothing), and objects that cannot be copied
    (a ``threading.Lock``, a ``concurrent.futures.Future``, an open file) fail
    to send.  ``send(pid, Shared(obj))`` is the explicit, greppable way to
    share one anyway: the sender and the receiver then touch the same object
    from different scheduler threads, so it must be thread-safe.  The box
    itself cannot be changed.
    """

    __slots__ = ("value",)
    value: Any

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "value", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"a Shared box cannot be changed (its {name!r})")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"a Shared box cannot be changed (its {name!r})")

    def __repr__(self) -> str:
        return f"Shared({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return type(other) is Shared and other.value is self.value

    def __hash__(self) -> int:
        return id(self.value)

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError("a Shared box cannot be pickled: it stands for one object in this "
                        "process")


class Down(NamedTuple):
    """Sent to a monitoring process when the monitored one ends."""

    ref: Any
    pid: Any
    reason: Any


class Exit(NamedTuple):
    """An exit signal, delivered as a message to a process trapping exits."""

    pid: Any
    reason: Any


class ProcessExit(BaseException):
    """Raised by ``exit(reason)`` to end the calling process with `reason`.

    Like Erlang's ``exit/1`` it unwinds the process (``finally`` blocks run);
    it derives from BaseException so that ``except Exception`` does not
    swallow it by accident.  ``run()`` raises it when the main process ended
    with a reason that is not an exception.
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class NotInProcessError(RuntimeError):
    """A kernel call that needs a calling process was made from outside any."""


class ForeignPidError(ValueError):
    """A pid of another VM, or of a VM that has stopped, was given to a call
    that reaches processes of the caller's own VM only (``send``, ``link``,
    ``monitor``, ``exit``...); ``pid`` is that pid.  A pid is only valid in
    the VM that made it (see ``otpvm.Pid``)."""

    def __init__(self, pid: Any, message: str) -> None:
        super().__init__(message)
        self.pid = pid


class NoProcError(LookupError):
    """The process a call needs does not exist (Erlang's ``noproc``)."""


class NameRegistrationError(ValueError):
    """``register`` with a taken or invalid name, or a pid that cannot take it."""


class UnknownNameError(LookupError):
    """A message was sent to a name that nobody has registered."""


class StaleClassError(TypeError):
    """A message held an instance of a class from an old version of a
    hot-loaded module (otpvm.code): the receiver runs the current version,
    whose class is another object.  Raised in the sender, never delivered:
    send plain data, or convert the value to the current class."""
