"""pykka on otpvm: pykka's API, with every actor an otpvm process.

Change one line::

    import pykka                    # before
    import otpvm.pykka as pykka     # after

or subclass ``otpvm.pykka.ThreadingActor`` where you subclassed
``pykka.ThreadingActor``.  pykka stays the API (refs, proxies, futures,
the registry: pykka's own code, bug for bug); otpvm is the execution,
through the three hooks pykka keeps for new actor types
(``_create_actor_inbox``, ``_create_future``, ``_start_actor_loop``).  What
changes:

* An actor is a process of the default VM (``otpvm.default_vm()``, or the
  class's ``otpvm_vm``), not a thread: 10,000 actors cost 10,000 small
  objects, not 10,000 threads.  ``actor_ref.pid`` is its pid: link to it,
  monitor it, and supervise it with :func:`child_spec`, so that an otpvm
  supervisor restarts a crashed actor.
* A handler may be ``async def``: inside it, ``await future`` (another
  actor's answer, ``ask(block=False)``, a proxy call) suspends only this
  actor; ``otpvm.sleep``, ``otpvm.receive`` and the rest of otpvm may be
  awaited too.
* A plain handler may block (``future.get()``, ``time.sleep``, a lock), as
  with threads: it runs in an ``otpvm.blocking()`` section, so the other
  processes on its scheduler thread go on (its run queue is handed to a
  spare) and nothing is reported.  Awaiting is cheaper than blocking.
* Messages travel by reference, as in pykka (its futures hold locks): an
  actor's messages are not copied.  Only these envelopes are shared.

Not the same: the actors' threads are otpvm's scheduler threads, so
``threading.current_thread()`` in a handler names a scheduler thread, and
``ThreadingActor.use_daemon_thread`` is accepted and ignored (otpvm's
threads never keep the interpreter alive).  ``pykka.debug`` shows scheduler
threads.  Everything else (``pykka.messages``, ``ActorRegistry``,
``get_all``, ...) is pykka's own, re-exported here.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Generator
from typing import Any, ClassVar, cast

import pykka
from pykka import (
    ActorDeadError,
    ActorProxy,
    ActorRegistry,
    CallableProxy,
    Future,
    Timeout,
    get_all,
    messages,
    traversable,
)

from otpvm._vm import VM, Pid, _current_vm, blocking, exit, link, make_ref, receive
from otpvm._vm import self as _self_pid
from otpvm.kernel import default_vm, run_blocking
from otpvm.supervisor import ChildSpec
from otpvm.terms import ANY, NotInProcessError, ProcessExit, Shared

__all__ = [
    "Actor",
    "ActorDeadError",
    "ActorProxy",
    "ActorRef",
    "ActorRegistry",
    "CallableProxy",
    "Future",
    "ThreadingActor",
    "ThreadingFuture",
    "Timeout",
    "child_spec",
    "get_all",
    "messages",
    "traversable",
]

Actor = pykka.Actor
_log = logging.getLogger("pykka")       # where pykka's own loop logs


def _caller() -> tuple[VM, Pid] | None:
    """The VM and pid of the calling process, or None on a plain thread."""
    try:
        return _current_vm("await"), _self_pid()
    except NotInProcessError:
        return None


class ThreadingFuture(pykka.ThreadingFuture[Any]):
    """pykka's ``ThreadingFuture``, awaitable inside an otpvm process.

    ``get()`` works as before from any thread; inside a process it runs in
    an ``otpvm.blocking()`` section.  ``await future`` inside a process
    (an ``async def`` handler, any otpvm coroutine) suspends that process
    alone until the future is set: its setter sends the waiter a message.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[tuple[VM, Pid, Any]] = []

    def get(self, *, timeout: float | None = None) -> Any:
        with blocking():
            return super().get(timeout=timeout)

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._wake()

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info if exc_info is not None else sys.exc_info())
        self._wake()

    def _wake(self) -> None:
        with self._condition:
            waiters, self._waiters = self._waiters, []
        for vm, pid, ref in waiters:
            vm._post(pid, ref)

    def __await__(self) -> Generator[Any, None, Any]:
        if _caller() is None:
            return (yield from super().__await__())     # pykka's: a bare yield, then get()
        return (yield from self._await_in_process().__await__())

    async def _await_in_process(self) -> Any:
        caller = _caller()
        assert caller is not None
        ref = make_ref()
        with self._condition:
            waiting = self._result is None and self._get_hook is None
            if waiting:
                self._waiters.append((caller[0], caller[1], ref))
        if waiting:
            await receive(ref)
        if self._get_hook is not None:
            # A derived future (map, join, a stop's answer): its hook may
            # block on others; run it where blocking holds no scheduler thread.
            return await run_blocking(self.get)
        return self.get()


class _Inbox:
    """pykka's ActorInbox over the actor process's mailbox.

    ``put`` posts the envelope itself (``VM._post``, by reference: it holds
    a future).  Envelopes that wait for an answer are also listed here until
    handled, so that when the actor ends, however it ends (stopped, failed,
    killed by a supervisor), every ask still pending is answered with
    ActorDeadError, as pykka's teardown answers those left in its queue."""

    __slots__ = ("_asks", "_closed", "_early", "_lock", "owner", "pid", "vm")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asks: dict[int, Any] = {}
        self._early: list[Any] | None = []   # put before the process exists
        self._closed = False
        self.vm: VM | None = None
        self.pid: Pid | None = None
        self.owner = "the actor"

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                if envelope.reply_to is not None:
                    self._asks[id(envelope)] = envelope
                if self._early is not None:
                    self._early.append(envelope)
                    return
        if not closed and cast(VM, self.vm)._post(cast(Pid, self.pid), envelope):
            return
        # The process is gone: answered here, unless its end (close, on its
        # thread, which may come later) has taken the ask to answer it.
        if closed or self.handled(envelope):
            _answer_dead(envelope, self.owner)

    def get(self) -> Any:
        raise RuntimeError("an otpvm.pykka actor takes its messages in its own process")

    def empty(self) -> bool:
        with self._lock:
            return not self._asks

    def attach(self, vm: VM, pid: Pid, actor: pykka.Actor) -> None:
        """The process exists: it gets the actor, then what came before."""
        with self._lock:
            vm._post(pid, actor)
            for envelope in self._early or ():
                vm._post(pid, envelope)
            self._early = None
            self.vm, self.pid, self.owner = vm, pid, str(actor.actor_ref)

    def handled(self, envelope: Any) -> bool:
        """The actor answers envelope; False if teardown answered it."""
        with self._lock:
            return self._asks.pop(id(envelope), None) is not None

    def close(self) -> list[Any]:
        """No more puts; the asks never handled, in the order they came."""
        with self._lock:
            self._closed = True
            asks, self._asks = list(self._asks.values()), {}
        return asks


def _answer_dead(envelope: Any, who: Any) -> None:
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, messages._ActorStop):
        envelope.reply_to.set(None)         # pykka: stopping a stopped actor is fine
    else:
        error = ActorDeadError(f"{who} stopped before handling the message")
        envelope.reply_to.set_exception(exc_info=(ActorDeadError, error, None))


class ActorRef(pykka.ActorRef[Any]):
    """pykka's ``ActorRef``, with the actor's otpvm pid."""

    @property
    def pid(self) -> Pid:
        """The actor's process: link to it, monitor it, send to its
        supervisor.  Messages sent to it directly are not pykka messages
        (use ``tell``/``ask``)."""
        pid = cast(_Inbox, self.actor_inbox).pid
        if pid is None:
            raise ActorDeadError(f"{self} has not started")
        return pid


class ThreadingActor(pykka.Actor):
    """pykka's ``Actor`` run as an otpvm process (see the module's doc).

    Subclass it as ``pykka.ThreadingActor``.  ``otpvm_vm`` (a class
    attribute) names the VM its actors run on; None: ``otpvm.default_vm()``.
    """

    use_daemon_thread: ClassVar[bool] = False   # accepted, and ignored
    otpvm_vm: ClassVar[VM | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._actor_ref = ActorRef(self)

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ActorRef:   # type: ignore[override]
        """Starts the actor as pykka's ``Actor.start`` does; its ref
        (with its ``pid``) is returned."""
        return cast(ActorRef, super().start(*args, **kwargs))

    @staticmethod
    def _create_actor_inbox() -> _Inbox:
        return _Inbox()

    @staticmethod
    def _create_future() -> ThreadingFuture:
        return ThreadingFuture()

    def _start_actor_loop(self) -> None:
        vm = self.otpvm_vm or default_vm()
        cast(_Inbox, self.actor_inbox).attach(vm, vm.spawn(_actor_process), self)

    @property
    def actor_ref(self) -> ActorRef:   # type: ignore[override]
        """The actor's ActorRef (with its ``pid``)."""
        return cast(ActorRef, self._actor_ref)


OtpvmActor = ThreadingActor
OtpvmFuture = ThreadingFuture


async def _actor_process() -> None:
    """An actor's process: pykka's actor loop (``Actor._actor_loop``), each
    envelope taken from the mailbox; the actor object is the first message.

    It ends ``normal`` when the actor stops, and with the exception when a
    told message (not an ask) failed it, so that a supervisor restarts a
    crashed actor and not a stopped one (:func:`child_spec`)."""
    actor: pykka.Actor = await receive(ANY)
    inbox = cast(_Inbox, actor.actor_inbox)
    failure: BaseException | None = None
    try:
        await _call(actor, actor.on_start)
        while not actor.actor_stopped.is_set():
            failure = await _handle(actor, inbox, await receive(ANY))
    except Exception:                       # on_start failed
        failure = sys.exc_info()[1]
        with blocking():
            actor._handle_failure(*sys.exc_info())
    finally:
        if not actor.actor_stopped.is_set():    # killed: a supervisor's shutdown
            ActorRegistry.unregister(actor.actor_ref)
            actor.actor_stopped.set()
        for envelope in inbox.close():
            _answer_dead(envelope, actor.actor_ref)
    if failure is not None:
        exit(failure)     # the reason a supervisor sees; pykka logged it already


async def _call(actor: pykka.Actor, fn: Any, *args: Any) -> Any:
    """fn(*args) in a blocking section, then awaited if fn is ``async def``
    (a coroutine: a handler may also return a future as its answer, which
    is the answer, not something to wait for)."""
    with blocking():
        result = fn(*args)
    if inspect.iscoroutine(result):
        result = await result
    return result


async def _handle(actor: pykka.Actor, inbox: _Inbox, envelope: Any) -> BaseException | None:
    """One envelope, as pykka's ``_actor_loop_running`` handles it; returns
    the exception that failed the actor, if one did."""
    try:
        response = await _call(actor, actor._handle_receive, envelope.message)
        if envelope.reply_to is not None and inbox.handled(envelope):
            envelope.reply_to.set(response)
    except Exception:
        # Logging may write to a file or a socket: blocking sections too.
        exc_info = sys.exc_info()
        if envelope.reply_to is not None:
            if inbox.handled(envelope):
                with blocking():
                    _log.info(f"Exception returned from {actor} to caller:", exc_info=exc_info)
                envelope.reply_to.set_exception(exc_info)
            return None
        with blocking():
            actor._handle_failure(*exc_info)
        try:
            await _call(actor, actor.on_failure, *exc_info)
        except Exception:
            with blocking():
                actor._handle_failure(*sys.exc_info())
        return exc_info[1]
    except (GeneratorExit, ProcessExit):
        raise                               # otpvm ends the process: not pykka's to catch
    except BaseException:
        with blocking():                    # stop_all waits for every actor
            _log.debug(f"{sys.exc_info()[1]!r} in {actor}. Stopping all actors.")
            actor._stop()
            ActorRegistry.stop_all()
    return None


def child_spec(actor_class: type[ThreadingActor], *args: Any, id: Any = None,
               restart: str = "transient", shutdown: Any = None,
               **kwargs: Any) -> ChildSpec:
    """A supervisor child that is the pykka actor ``actor_class(*args, **kwargs)``.

    Each start (and restart) calls ``actor_class.start(*args, **kwargs)``
    and links the new actor's process to the supervisor; the restarted
    actor is a new actor (a new ref and urn, registered in ActorRegistry as
    usual).  ``restart`` defaults to ``'transient'``: an actor that failed
    (a told message raised, or ``on_start`` did) is restarted; one stopped
    with ``stop()`` stays stopped.  ``id`` defaults to the class's name.
    A supervisor's shutdown kills the actor's process: its ``on_stop`` does
    not run (as when a pykka actor fails), and pending asks are answered
    with ActorDeadError.  The arguments are handed to each start by
    reference, as pykka hands them to the constructor."""
    if not (isinstance(actor_class, type) and issubclass(actor_class, ThreadingActor)):
        raise TypeError(f"child_spec() needs a subclass of otpvm.pykka.ThreadingActor, "
                        f"not {actor_class!r}")
    # By reference, as pykka passes them (a ref, an event...): the spec
    # travels in the supervisor's messages, which would copy them.
    start = Shared((actor_class, args, kwargs))
    return ChildSpec(id if id is not None else actor_class.__name__, (_start_linked, (start,)),
                     restart=restart, shutdown=shutdown)


async def _start_linked(start: Shared) -> Pid:
    actor_class, args, kwargs = start.value
    pid = actor_class.start(*args, **kwargs).pid
    link(pid)
    return pid
