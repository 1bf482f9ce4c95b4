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

``send_request`` cuts a call in two, as OTP's (gen_server and gen_statem
export it): the request goes now, its response is taken later by
``wait_response`` (a timeout keeps the request), ``receive_response`` (a
timeout gives it up: a late reply is dropped) or ``check_response`` (on a
message already received).  A single request's response is the reply, or
the CallError a call would raise, or TimeoutError; request-id collections
(``reqids_new``...) give ``(Response, label, new_collection)``, where a
Response holds the reply or the CallError, since raising would lose the
label and the collection.  ``multi_call`` and ``abcast`` reach a name on
each node: the caller's own node only, until otpvm has distribution.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, overload

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


# -- asynchronous requests: OTP's send_request family -------------------------
#
# A request is a call cut in two: send_request does the call's first half
# (monitor + alias, send) and returns at once; wait_response,
# receive_response or check_response does the second.  Like a call, the
# request is tagged with the monitor's ref, which is also an alias: once the
# caller gives the request up (receive_response's timeout, or the reply or
# Down taken), a late reply is dropped on arrival and never reaches the
# mailbox.


class _Atom:
    """A sentinel that keeps its identity through a send (pickled by name)."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name

    def __reduce__(self) -> str:
        return self._name


NO_REPLY: Any = _Atom("NO_REPLY")
"""check_response: the message is no response to the request(s) (OTP's no_reply)."""

NO_REQUEST: Any = _Atom("NO_REQUEST")
"""The collection forms of wait/receive/check_response: the collection is
empty (OTP's no_request)."""

Timeout = float | tuple[str, float] | None
"""Seconds, None for infinity, or ``('abs', deadline)`` with a deadline on
``time.monotonic()``'s clock (OTP's ``{abs, T}``): one deadline for several waits."""


class RequestId:
    """An outstanding request made by ``send_request`` (opaque, like OTP's
    request id): only the process that made it can wait for its response.
    Equal ids are the same request; ``dest`` and ``request`` are what was
    asked of whom (they go into the CallError if the server dies)."""

    __slots__ = ("ref", "dest", "request")

    def __init__(self, ref: Ref, dest: Any, request: Any) -> None:
        self.ref = ref
        self.dest = dest
        self.request = request

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RequestId) and other.ref == self.ref

    def __hash__(self) -> int:
        return hash(self.ref)

    def __repr__(self) -> str:
        return f"RequestId({self.ref!r}, {self.dest!r})"


@dataclass(frozen=True, slots=True)
class Response:
    """The outcome of one request of a collection: OTP's ``{reply, Reply}``
    (``error`` is None, the reply is ``value``) or ``{error, {Reason,
    ServerRef}}`` (``error`` is the CallError, as a call would raise it).
    ``result()`` gives the reply or raises the error."""

    value: Any = None
    error: CallError | None = None

    def result(self) -> Any:
        """The reply, or raises the CallError."""
        if self.error is not None:
            raise self.error
        return self.value


class RequestIdCollection:
    """Request ids with a label each (OTP's request-id collection): an
    immutable value, like OTP's map; adding or removing gives a new
    collection (each costs a copy: O(n)).  ``len()`` is its size; iterating
    gives ``(RequestId, label)`` pairs in the order they were added."""

    __slots__ = ("_reqs",)

    def __init__(self, _reqs: dict[Ref, tuple[RequestId, Any]] | None = None) -> None:
        self._reqs: dict[Ref, tuple[RequestId, Any]] = {} if _reqs is None else _reqs

    def __len__(self) -> int:
        return len(self._reqs)

    def __iter__(self) -> Any:
        return iter(list(self._reqs.values()))

    def __contains__(self, req: object) -> bool:
        return isinstance(req, RequestId) and req.ref in self._reqs

    def __repr__(self) -> str:
        return f"RequestIdCollection({list(self._reqs.values())!r})"

    def add(self, req: RequestId, label: Any) -> RequestIdCollection:
        """A new collection with req added under label (ValueError if req
        is in this one already: OTP's badarg)."""
        if not isinstance(req, RequestId):
            raise TypeError(f"a request id collection holds RequestIds, not {req!r}")
        if req.ref in self._reqs:
            raise ValueError(f"{req!r} is in the collection already")
        reqs = dict(self._reqs)
        reqs[req.ref] = (req, label)
        return RequestIdCollection(reqs)

    def to_list(self) -> list[tuple[RequestId, Any]]:
        """``[(RequestId, label)]``, in the order they were added."""
        return list(self._reqs.values())

    def _without(self, ref: Ref) -> RequestIdCollection:
        reqs = dict(self._reqs)
        del reqs[ref]
        return RequestIdCollection(reqs)


CollectionResult = tuple[Response, Any, RequestIdCollection]
"""``(response, label, new_collection)``: what the collection forms give."""

_NO_LABEL: Any = _Atom("_NO_LABEL")


def reqids_new() -> RequestIdCollection:
    """An empty request-id collection (OTP's reqids_new/0)."""
    return RequestIdCollection()


def reqids_add(req: RequestId, label: Any, collection: RequestIdCollection) -> RequestIdCollection:
    """``collection`` with ``req`` added under ``label`` (OTP's reqids_add/3);
    ValueError if it is there already."""
    return _collection(collection).add(req, label)


def reqids_size(collection: RequestIdCollection) -> int:
    """How many requests the collection holds (OTP's reqids_size/1)."""
    return len(_collection(collection))


def reqids_to_list(collection: RequestIdCollection) -> list[tuple[RequestId, Any]]:
    """``[(RequestId, label)]`` (OTP's reqids_to_list/1), in the order added."""
    return _collection(collection).to_list()


def _collection(value: Any) -> RequestIdCollection:
    if not isinstance(value, RequestIdCollection):
        raise TypeError(f"expected a RequestIdCollection (reqids_new()), not {value!r}")
    return value


@overload
def send_request(dest: Any, request: Any) -> RequestId: ...
@overload
def send_request(dest: Any, request: Any, label: Any,
                 collection: RequestIdCollection) -> RequestIdCollection: ...


def send_request(dest: Any, request: Any, label: Any = _NO_LABEL,
                 collection: RequestIdCollection | None = None) -> Any:
    """Sends a call request to a server (gen_server, gen_statem: anything
    answering ``'$gen_call'``) and returns at once, as OTP's send_request.

    ``dest`` is a Pid, a registered name or a via name.  Returns a
    RequestId to give to wait_response, receive_response or check_response;
    with ``label`` and ``collection``, returns ``collection`` with the new
    request added under label (OTP's send_request/4).  Never fails for a
    missing server: as in OTP, the response is then a CallError('noproc').
    """
    if collection is not None:
        collection = _collection(collection)
        if label is _NO_LABEL:
            raise TypeError("send_request with a collection needs a label")
    elif label is not _NO_LABEL:
        raise TypeError("send_request's label goes with a collection (reqids_new())")
    pid = resolve(dest)
    if pid is None:
        # As OTP: the request is asynchronous even then; its failure comes
        # as the Down a monitor of a missing process would give.
        ref = make_ref()
        send(self(), Down(ref, dest, "noproc"))
    else:
        ref = monitor(pid, alias=True)
        send(pid, (CALL, _new(From, (self(), ref)), request))
    req = RequestId(ref, dest, request)
    return req if collection is None else collection.add(req, label)


def _wait_time(timeout: Any) -> float | None:
    """Seconds to wait (None: forever) from a Timeout; ValueError/TypeError
    for anything else (OTP's badarg)."""
    if timeout is None:
        return None
    if type(timeout) is tuple and len(timeout) == 2 and timeout[0] == "abs":
        deadline = timeout[1]
        if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
            raise TypeError(f"an ('abs', deadline) timeout needs a number, not {deadline!r}")
        return max(0.0, deadline - time.monotonic())
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"a timeout is seconds, None or ('abs', deadline), not {timeout!r}")
    if not timeout >= 0:
        raise ValueError(f"a timeout cannot be negative: {timeout!r}")
    return timeout


def _request(req: Any) -> RequestId:
    if not isinstance(req, RequestId):
        raise TypeError(f"expected a RequestId (from send_request) or a "
                        f"RequestIdCollection, not {req!r}")
    return req


def _single(req: RequestId, msg: tuple[Any, ...]) -> Any:
    """The response msg (a reply or a Down) to req: the reply, or raises
    CallError; either way the request is done (alias and monitor gone)."""
    unalias(req.ref)
    if type(msg) is Down:
        raise CallError(msg.reason, req.dest, req.request)
    demonitor(req.ref, flush=True)
    return msg[1]


async def _response(req: RequestId, msg: tuple[Any, ...]) -> Any:
    """_single, and after a Down, the reply that another process (one the
    server handed its From to) sent meanwhile is dropped: OTP deactivates
    the alias as the Down arrives, this one when the Down is taken."""
    if type(msg) is Down:
        unalias(req.ref)
        await _flush_reply(req.ref)
    return _single(req, msg)


def _single_pattern(ref: Ref) -> Any:
    return _new(AnyOf, ((ref, ANY), _new(Down, (ref, ANY, ANY))))


def _timed_out(what: Any, timeout: Any) -> TimeoutError:
    return TimeoutError(f"no response to {what!r} within {timeout!r}")


@overload
async def wait_response(req: RequestId, timeout: Timeout = None) -> Any: ...
@overload
async def wait_response(req: RequestIdCollection, timeout: Timeout = None,
                        delete: bool = True) -> CollectionResult: ...


async def wait_response(req: Any, timeout: Timeout = None, delete: bool | None = None) -> Any:
    """Waits for the response to a request (OTP's wait_response).

    For a RequestId: returns the reply, raises CallError (``.reason`` as for
    a call: 'noproc', the server's exit reason) if the server died first, or
    TimeoutError after ``timeout`` — the request is *not* given up then:
    wait again for it, or receive_response it.

    For a RequestIdCollection: the first response to any of its requests,
    as ``(Response, label, new_collection)`` (without that request when
    ``delete``, the default; else the collection itself), NO_REQUEST if the
    collection is empty, TimeoutError (nothing given up) after timeout.
    """
    if isinstance(req, RequestIdCollection):
        return await _collection_response(req, timeout, delete, abandon=False)
    _no_delete(delete)
    ref = _request(req).ref
    try:
        msg = await receive(_single_pattern(ref), timeout=_wait_time(timeout))
    except TimeoutError:
        raise _timed_out(req, timeout) from None
    return await _response(req, msg)


@overload
async def receive_response(req: RequestId, timeout: Timeout = None) -> Any: ...
@overload
async def receive_response(req: RequestIdCollection, timeout: Timeout = None,
                           delete: bool = True) -> CollectionResult: ...


async def receive_response(req: Any, timeout: Timeout = None,
                           delete: bool | None = None) -> Any:
    """Like wait_response, but a timeout gives the request up, as a call
    does (OTP's receive_response): its monitor and alias are removed, so a
    reply arriving later is dropped and never reaches the mailbox.  A reply
    that came just as time ran out is still returned, as in OTP.

    For a collection, a timeout gives up *every* request in it (and drops
    the replies already there), then raises TimeoutError.
    """
    if isinstance(req, RequestIdCollection):
        return await _collection_response(req, timeout, delete, abandon=True)
    _no_delete(delete)
    ref = _request(req).ref
    try:
        msg = await receive(_single_pattern(ref), timeout=_wait_time(timeout))
    except TimeoutError:
        unalias(ref)
        demonitor(ref, flush=True)
        try:
            msg = await receive((ref, ANY), timeout=0)
        except TimeoutError:
            raise _timed_out(req, timeout) from None
        return msg[1]
    return await _response(req, msg)


@overload
def check_response(msg: Any, req: RequestId) -> Any: ...
@overload
def check_response(msg: Any, req: RequestIdCollection,
                   delete: bool = True) -> CollectionResult: ...


def check_response(msg: Any, req: Any, delete: bool | None = None) -> Any:
    """Whether a message already received (by ``receive``, or a
    ``handle_info``) is the response to a request (OTP's check_response).

    For a RequestId: the reply, CallError raised if it is the Down of the
    server's death, or NO_REPLY if msg has nothing to do with it.  For a
    collection: ``(Response, label, new_collection)`` as wait_response,
    NO_REQUEST for an empty collection, NO_REPLY for another message.
    """
    if isinstance(req, RequestIdCollection):
        if not req._reqs:
            return NO_REQUEST
        ref = _response_ref(msg, req._reqs)
        if ref is None:
            return NO_REPLY
        return _collection_result(msg, req, _delete(delete))
    _no_delete(delete)
    ref = _request(req).ref
    if type(msg) is tuple and len(msg) == 2 and msg[0] == ref:
        return _single(req, msg)
    if type(msg) is Down and msg[0] == ref:
        return _single(req, msg)
    return NO_REPLY


def _no_delete(delete: Any) -> None:
    if delete is not None:
        raise TypeError("delete= applies to a RequestIdCollection, not a RequestId")


def _delete(delete: Any) -> bool:
    if delete is None:
        return True
    if not isinstance(delete, bool):
        raise TypeError(f"delete must be True or False, not {delete!r}")
    return delete


def _response_ref(msg: Any, reqs: dict[Ref, Any]) -> Ref | None:
    """The ref of the request that msg answers (a reply or a Down), if any."""
    kind = type(msg)
    if kind is tuple:
        if len(msg) == 2 and type(msg[0]) is Ref and msg[0] in reqs:
            return msg[0]
    elif kind is Down and type(msg[0]) is Ref and msg[0] in reqs:
        return msg[0]
    return None


def _collection_result(msg: Any, collection: RequestIdCollection,
                       delete: bool) -> CollectionResult:
    ref = msg[0]
    req, label = collection._reqs[ref]
    try:
        response = Response(_single(req, msg))
    except CallError as exc:
        response = Response(error=exc)
    return response, label, collection._without(ref) if delete else collection


async def _collection_response(collection: RequestIdCollection, timeout: Timeout,
                               delete: Any, abandon: bool) -> Any:
    delete = _delete(delete)
    seconds = _wait_time(timeout)
    reqs = collection._reqs
    if not reqs:
        return NO_REQUEST
    try:
        msg = await receive(_responses_pattern(reqs), timeout=seconds)
    except TimeoutError:
        if abandon:
            await _abandon(reqs)
        raise _timed_out(collection, timeout) from None
    if type(msg) is Down:                # as _response does
        unalias(msg[0])
        await _flush_reply(msg[0])
    return _collection_result(msg, collection, delete)


async def _abandon(reqs: dict[Ref, Any]) -> None:
    """Gives every request up (OTP's receive_response/3 after its timeout):
    no reply or Down for them reaches the mailbox from now on, and those
    already there are dropped."""
    for ref in reqs:
        unalias(ref)
        demonitor(ref, flush=True)
    pattern = _responses_pattern(reqs)
    while True:
        try:
            await receive(pattern, timeout=0)
        except TimeoutError:
            return


def _responses_pattern(reqs: dict[Ref, Any]) -> Any:
    """What a response to one of reqs looks like.  For a single request
    (multi_call's on one node), its ref's own pattern: the receive then
    starts at the mailbox marker the ref set, however full the mailbox
    (OTP's multicall_recv_opt), instead of testing every message."""
    if len(reqs) == 1:
        return _single_pattern(next(iter(reqs)))
    return lambda m: _response_ref(m, reqs) is not None


# -- calls to a name on several nodes ------------------------------------------


def _nodes(nodes: Any) -> list[Any]:
    here = self().node
    if nodes is None:
        return [here]
    if isinstance(nodes, (str, bytes)):
        raise TypeError(f"nodes must be a list of nodes, not {nodes!r}")
    return list(nodes)


def _server_name(name: Any, what: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"{what} needs a registered name (a str), not {name!r}")


async def multi_call(name: str, request: Any, *, nodes: Any = None,
                     timeout: float | None = None) -> tuple[list[tuple[Any, Any]], list[Any]]:
    """Calls the server registered as ``name`` on each node and collects the
    replies (OTP's gen_server:multi_call): ``(replies, bad_nodes)``, where
    ``replies`` is ``[(node, reply)]`` in the order the replies came and
    ``bad_nodes`` the nodes where no such server was, or it died, or did not
    answer within ``timeout`` seconds (None: no limit, OTP's default).

    A node is a VM's number (``Pid.node``); ``nodes`` defaults to the
    caller's own, the only one there is while otpvm has no distribution:
    any other node is a bad node.  Replies arriving after the timeout are
    dropped, never left in the mailbox.
    """
    _server_name(name, "multi_call")
    here = self().node
    deadline = None if timeout is None else ("abs", time.monotonic() + _checked(timeout))
    pending = reqids_new()
    bad: list[Any] = []
    for node in _nodes(nodes):
        if node == here:
            pending = send_request(name, request, node, pending)
        else:
            bad.append(node)
    replies: list[tuple[Any, Any]] = []
    while pending:
        try:
            response, node, pending = await receive_response(pending, deadline)
        except TimeoutError:
            bad.extend(node for _, node in pending)
            break
        if response.error is None:
            replies.append((node, response.value))
        else:
            bad.append(node)
    return replies, bad


def _checked(timeout: Any) -> float:
    seconds = _wait_time(timeout)
    if seconds is None or isinstance(timeout, tuple):
        raise TypeError(f"multi_call's timeout is seconds or None, not {timeout!r}")
    return seconds


def abcast(name: str, msg: Any, *, nodes: Any = None) -> None:
    """Casts msg to the server registered as ``name`` on each node (OTP's
    gen_server:abcast); never fails, like cast: a node without such a
    server, or any node other than the caller's own (no distribution yet),
    gets nothing."""
    _server_name(name, "abcast")
    here = self().node
    for node in _nodes(nodes):
        if node == here:
            pid = whereis(name)
            if pid is not None:
                send(pid, (CAST, msg))
