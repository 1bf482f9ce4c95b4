"""What every behaviour shares: starting with an acknowledgement, calls, replies.

This is OTP's ``gen`` and ``proc_lib`` in one module.  A behaviour process is a
callback process (``spawn_handler``); its handler acknowledges its start with
``ack``, and requests reach it as plain tuples:

* ``('$gen_call', From(pid, ref), request)`` — answered with ``reply(from_, value)``;
* ``('$gen_cast', msg)`` — no answer;
* ``('$system', From(pid, ref), request)`` — the ``sys`` protocol.

A call monitors the server and tags the request with the monitor's ref, which
is also an alias: the caller waits for the reply or the server's death in O(1)
however full its mailbox is, and a reply arriving after the call gave up is
dropped on arrival, never left in the mailbox.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from otpvm import _vm
from otpvm._vm import copy_message
from otpvm.kernel import (
    Pid,
    Ref,
    demonitor,
    exit,
    make_ref,
    monitor,
    receive,
    self,
    send,
    send_alias,
    spawn_handler,
    unalias,
    unlink,
    whereis,
)
from otpvm.terms import ANY, AnyOf, Down, Exit

_new = tuple.__new__

CALL = "$gen_call"
CAST = "$gen_cast"
SYSTEM = "$system"


class From(NamedTuple):
    """Who is waiting for a reply: pass it to ``reply``."""

    pid: Pid
    ref: Ref


class RequestFailed(Exception):
    """A request to a process failed: ``reason`` says why, ``dest`` and
    ``request`` what was asked of whom (the base of CallError and SysError)."""

    def __init__(self, reason: Any, dest: Any = None, request: Any = None) -> None:
        super().__init__(reason, dest, request)
        self.reason = reason
        self.dest = dest
        self.request = request


class CallError(RequestFailed):
    """A call failed because the server was gone or died before replying.

    ``reason`` is the server's exit reason: ``'noproc'`` if it did not exist,
    ``'normal'``/``'shutdown'`` if it stopped, or the exception it crashed with.
    """

    def __str__(self) -> str:
        return f"call to {self.dest!r} failed: {self.reason!r} (request {self.request!r})"


class StartError(Exception):
    """A behaviour's start failed: ``reason`` is why (``('already_started',
    pid)``, the exception init raised, or the reason it stopped with).
    """

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


class Ignored(Exception):
    """``init`` returned Ignore: no process was started (supervisors skip it)."""


def resolve(dest: Any) -> Pid | None:
    """The pid behind a Pid, a registered name, or a via name such as
    ``registry.via(reg, key)`` — any object with a ``whereis_name()``
    method, like OTP's ``{via, Module, Name}`` (None when nobody has it).
    """
    if isinstance(dest, Pid):
        return dest
    if isinstance(dest, str):
        return whereis(dest)
    whereis_name = getattr(dest, "whereis_name", None)
    if callable(whereis_name):
        pid: Pid | None = whereis_name()
        return pid
    raise TypeError(f"a server is a Pid, a registered name or a via name, not {dest!r}")


async def _call_py(dest: Any, request: Any, timeout: float | None = 5.0,
                   tag: str = CALL) -> Any:
    """Sends a request and waits for its reply (see the module docstring):
    the reference implementation of ``call``."""
    pid = resolve(dest)
    if pid is None:
        raise CallError("noproc", dest, request)
    if pid == self():
        raise CallError("calling_self", dest, request)  # it could never answer
    ref = monitor(pid, alias=True)
    # tuple.__new__ skips the named tuples' Python-level constructors: this
    # is the hot path of every call.
    send(pid, (tag, _new(From, (self(), ref)), request))
    try:
        msg = await receive(_new(AnyOf, ((ref, ANY), _new(Down, (ref, ANY, ANY)))),
                            timeout=timeout)
    except TimeoutError:
        unalias(ref)
        demonitor(ref, flush=True)
        await _flush_reply(ref)
        raise TimeoutError(f"call to {dest!r} timed out after {timeout} s "
                           f"(request {request!r})") from None
    unalias(ref)
    if isinstance(msg, Down):
        raise CallError(msg.reason, dest, request)
    demonitor(ref, flush=True)
    return msg[1]


async def _flush_reply(ref: Ref) -> None:
    """Removes a reply that arrived just before the alias was deactivated."""
    try:
        await receive((ref, ANY), timeout=0)
    except TimeoutError:
        pass


def _reply_py(from_: From, value: Any) -> None:
    """Answers a call (from inside the server or any process it handed
    ``from_`` to): the reference implementation of ``reply``.  A ref that is
    no alias (a hand-made From) gets a plain message, as in OTP."""
    ref = from_.ref
    if isinstance(ref, Ref) and ref.is_alias:
        send_alias(from_.pid, ref, (ref, value))
    else:
        send(from_.pid, (ref, value))


def _cast_py(dest: Any, msg: Any) -> None:
    """Sends a request without waiting; never fails (as in OTP): the
    reference implementation of ``cast``."""
    pid = dest if type(dest) is Pid else resolve(dest)
    if pid is not None:
        send(pid, (CAST, msg))


_vm._gen_setup(From=From, CallError=CallError, resolve=resolve, call_tag=CALL, cast_tag=CAST)

# What processes call: the compiled versions (otpvm/_core/gen.pxi) of the three
# reference functions above, which they mirror step for step.  Being the VM
# core's own functions, they cost no Python frame of their own.  call's
# awaitable does nothing until awaited, like the coroutine it mirrors (it is
# registered as a collections.abc.Coroutine).
call = _vm.gen_call
cast = _vm.gen_cast
reply = _vm.gen_reply


async def start(handler: Any, *, link: bool, timeout: float | None = None,
                monitor_child: bool = False) -> Any:
    """Starts a callback process and waits until it acknowledges its start.

    The handler's ``start`` must call ``ack(starter)``, or ``ack(starter,
    reason)`` when it fails; its init args (``handler.args``) are copied
    first, like any message, so the new process shares nothing with the
    caller.  Returns the pid, or ``(pid, ref)`` with
    ``monitor_child``.  Raises StartError, or Ignored.
    """
    ref = make_ref()
    handler.starter = From(self(), ref)
    if hasattr(handler, "args"):
        handler.args = copy_message(handler.args)
    pid, mref = spawn_handler(handler, link=link, monitor=True)
    try:
        msg = await receive(AnyOf((ref, ANY, ANY), Down(mref, ANY, ANY)), timeout=timeout)
    except TimeoutError:
        if link:
            unlink(pid)                 # OTP's kill_flush: no Exit is left behind
        exit(pid, "kill")
        demonitor(mref, flush=True)
        raise StartError("timeout") from None
    if isinstance(msg, Down):
        await _flush_exit(pid, link)
        raise StartError(msg.reason)
    _, started, outcome = msg
    if not started:
        await receive(Down(mref, ANY, ANY), timeout=None)
        await _flush_exit(pid, link)
        if isinstance(outcome, Ignored):
            raise outcome
        raise StartError(outcome)
    if monitor_child:
        return pid, mref
    demonitor(mref, flush=True)
    return pid


async def _flush_exit(pid: Pid, linked: bool) -> None:
    """After a failed start, the Exit from the linked child (if the caller
    traps exits) has served its purpose, as proc_lib's init_fail arranges.
    """
    if linked:
        try:
            await receive(Exit(pid, ANY), timeout=0)
        except TimeoutError:
            pass


class _Success:
    def __repr__(self) -> str:
        return "SUCCESS"


_SUCCESS: Any = _Success()


def ack(starter: From, failure: Any = _SUCCESS) -> None:
    """Tells the starter how start went: ``ack(starter)`` for success, or
    ``ack(starter, reason)`` with why it failed (None is a reason too)."""
    if failure is _SUCCESS:
        send(starter.pid, (starter.ref, True, None))
    else:
        send(starter.pid, (starter.ref, False, failure))


async def stop(dest: Any, reason: Any = "normal", timeout: float | None = None) -> None:
    """Stops a behaviour process with reason (its terminate runs) and waits
    until it is gone, like OTP's proc_lib:stop.

    Raises ``CallError('noproc')`` if there is no such process,
    ``CallError(r)`` if it ended with another reason r, ``TimeoutError``
    after timeout.
    """
    if timeout is not None and (isinstance(timeout, bool)
                                or not isinstance(timeout, (int, float)) or timeout < 0):
        # Checked before anything is sent: the process is left running (OTP).
        raise TypeError(f"stop's timeout is a number of seconds >= 0 or None, not {timeout!r}")
    pid = resolve(dest)
    if pid is None:
        raise CallError("noproc", dest, ("stop", reason))
    ref = monitor(pid)
    send(pid, (SYSTEM, From(self(), ref), ("terminate", reason)))
    try:
        down = await receive(Down(ref, ANY, ANY), timeout=timeout)
    except TimeoutError:
        demonitor(ref, flush=True)
        raise TimeoutError(f"stop of {dest!r} timed out after {timeout} s") from None
    if down.reason is not reason and down.reason != reason:
        raise CallError(down.reason, dest, ("stop", reason))


async def suspended(handle_system: Callable[[From, Any], Any]) -> None:
    """A suspended behaviour (``sys.suspend``): only system messages are
    handled, by ``handle_system(from_, request)`` (which may return an
    awaitable); everything else waits in the mailbox, in order, until resume."""
    while True:
        _, from_, request = await receive((SYSTEM, ANY, ANY))
        if request == "resume":
            reply(from_, "ok")
            return
        if request == "suspend":
            reply(from_, "ok")
            continue
        more = handle_system(from_, request)
        if more is not None:
            await more
