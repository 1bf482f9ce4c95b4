"""The benchmark workloads written in idiomatic asyncio.

An Erlang process translates to asyncio as one :class:`asyncio.Task` whose
mailbox is an unbounded :class:`asyncio.Queue`: ``send`` is
``queue.put_nowait(msg)`` and ``receive`` is ``await queue.get()``.  A "pid"
is simply the actor's queue, so a message that expects an answer carries the
sender's queue.

Every workload is a synchronous function that runs its own event loop and
returns a dict of figures.  ``loop_factory=None`` runs on the default asyncio
loop; pass e.g. ``uvloop.new_event_loop`` to run the very same code on uvloop.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from . import check_skynet_size, rss_bytes, skynet_actors, skynet_expected

__all__ = [
    "WORKLOADS",
    "flood",
    "gen_call",
    "gen_cast",
    "pingpong",
    "ring",
    "skynet",
    "spawn_idle",
]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
Mailbox = asyncio.Queue[Any]
T = TypeVar("T")

STOP = "stop"


def _run(coro: Coroutine[Any, Any, T], loop_factory: LoopFactory | None) -> T:
    """Run ``coro`` to completion on a fresh event loop made by ``loop_factory``."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


# --------------------------------------------------------------------------
# ping-pong


async def _ponger(inbox: Mailbox) -> None:
    """Answer every ``(reply_to, n)`` with ``n`` until told to stop."""
    while True:
        msg = await inbox.get()
        if msg == STOP:
            return
        reply_to, n = msg
        reply_to.put_nowait(n)


async def _pingpong(n: int) -> dict[str, float]:
    me: Mailbox = asyncio.Queue()
    peer: Mailbox = asyncio.Queue()
    task = asyncio.create_task(_ponger(peer))
    t0 = time.perf_counter()
    for i in range(n):
        peer.put_nowait((me, i))
        got = await me.get()
        assert got == i
    seconds = time.perf_counter() - t0
    peer.put_nowait(STOP)
    await task
    return {"seconds": seconds, "round_trips_per_s": n / seconds}


def pingpong(n: int = 100_000, loop_factory: LoopFactory | None = None) -> dict[str, float]:
    """Two actors pass a message back and forth ``n`` round trips.

    Returns ``seconds`` and ``round_trips_per_s``.
    """
    return _run(_pingpong(n), loop_factory)


# --------------------------------------------------------------------------
# flood


async def _counter(inbox: Mailbox) -> None:
    """Count messages until ``("done", reply_to)`` arrives, then reply the count."""
    count = 0
    while True:
        msg = await inbox.get()
        if type(msg) is tuple:
            msg[1].put_nowait(count)
            return
        count += 1


async def _flood(n: int) -> dict[str, float]:
    me: Mailbox = asyncio.Queue()
    receiver: Mailbox = asyncio.Queue()
    task = asyncio.create_task(_counter(receiver))
    await asyncio.sleep(0)  # let the receiver park on its mailbox
    t0 = time.perf_counter()
    put = receiver.put_nowait
    for i in range(n):
        put(i)
    put(("done", me))
    count = await me.get()
    seconds = time.perf_counter() - t0
    assert count == n, (count, n)
    await task
    return {"seconds": seconds, "messages_per_s": n / seconds}


def flood(n: int = 1_000_000, loop_factory: LoopFactory | None = None) -> dict[str, float]:
    """One sender sends ``n`` messages to one receiver, which counts them.

    The receiver replies with its count after a final ``done`` message; the
    clock stops at that reply.  Returns ``seconds`` and ``messages_per_s``.
    """
    return _run(_flood(n), loop_factory)


# --------------------------------------------------------------------------
# ring


async def _ring_node(inbox: Mailbox, nxt: Mailbox, main: Mailbox) -> None:
    """Forward token ``t`` as ``t - 1``; report to ``main`` when it hits 0."""
    while True:
        msg = await inbox.get()
        if msg == STOP:
            return
        if msg == 0:
            main.put_nowait("done")
        else:
            nxt.put_nowait(msg - 1)


async def _ring(procs: int, rounds: int) -> dict[str, float]:
    me: Mailbox = asyncio.Queue()
    t0 = time.perf_counter()
    boxes: list[Mailbox] = [asyncio.Queue() for _ in range(procs)]
    tasks = [
        asyncio.create_task(_ring_node(boxes[i], boxes[(i + 1) % procs], me)) for i in range(procs)
    ]
    await asyncio.sleep(0)
    spawn_seconds = time.perf_counter() - t0
    hops = procs * rounds
    t0 = time.perf_counter()
    boxes[0].put_nowait(hops)
    await me.get()
    seconds = time.perf_counter() - t0
    for box in boxes:
        box.put_nowait(STOP)
    await asyncio.gather(*tasks)
    return {
        "seconds": seconds,
        "hops_per_s": hops / seconds,
        "spawn_seconds": spawn_seconds,
    }


def ring(
    procs: int = 10_000, rounds: int = 10, loop_factory: LoopFactory | None = None
) -> dict[str, float]:
    """``procs`` actors in a ring; a token goes round ``rounds`` times.

    Building the ring is timed separately (``spawn_seconds``); ``seconds`` and
    ``hops_per_s`` cover only the ``procs * rounds`` token hops.
    """
    return _run(_ring(procs, rounds), loop_factory)


# --------------------------------------------------------------------------
# skynet


async def _skynet_node(parent: Mailbox, num: int, size: int, div: int) -> None:
    """Leaf: reply ``num``.  Inner node: spawn ``div`` children, reply their sum."""
    if size == 1:
        parent.put_nowait(num)
        return
    inbox: Mailbox = asyncio.Queue()
    sub = size // div
    # Fire and forget, like spawn: a pending child is always strongly reachable
    # (leaves sit in the loop's ready queue and their frames hold the parent's
    # inbox, whose waiting future holds the parent task), so none can be
    # collected early.  Holding 1.1M finished tasks in lists instead costs
    # ~40% more time in the garbage collector.
    for i in range(div):
        asyncio.create_task(_skynet_node(inbox, num + i * sub, sub, div))  # noqa: RUF006
    total = 0
    for _ in range(div):
        total += await inbox.get()
    parent.put_nowait(total)


async def _skynet(size: int) -> dict[str, float]:
    me: Mailbox = asyncio.Queue()
    t0 = time.perf_counter()
    root = asyncio.create_task(_skynet_node(me, 0, size, 10))
    total = await me.get()
    seconds = time.perf_counter() - t0
    await root
    expected = skynet_expected(size)
    assert total == expected, (total, expected)
    return {"seconds": seconds, "sum": total, "actors": skynet_actors(size)}


def skynet(size: int = 1_000_000, loop_factory: LoopFactory | None = None) -> dict[str, float]:
    """Run the classic skynet benchmark with ``size`` leaves (a power of 10).

    Returns ``seconds``, the ``sum`` (499999500000 for 1M) and the number of
    ``actors`` spawned.
    """
    check_skynet_size(size)
    return _run(_skynet(size), loop_factory)


# --------------------------------------------------------------------------
# spawn idle


async def _idle(inbox: Mailbox, parent: Mailbox) -> None:
    """Tell ``parent`` we are up, then wait on the mailbox for ``stop``."""
    parent.put_nowait("ready")
    await inbox.get()


async def _spawn_idle(n: int, traced: bool) -> dict[str, float]:
    me: Mailbox = asyncio.Queue()
    gc.collect()
    rss0 = rss_bytes()
    traced0 = tracemalloc.get_traced_memory()[0] if traced else 0
    t0 = time.perf_counter()
    boxes: list[Mailbox] = []
    tasks: list[asyncio.Task[None]] = []
    for _ in range(n):
        box: Mailbox = asyncio.Queue()
        boxes.append(box)
        tasks.append(asyncio.create_task(_idle(box, me)))
    spawn_seconds = time.perf_counter() - t0
    for _ in range(n):
        await me.get()
    seconds = time.perf_counter() - t0
    traced1 = tracemalloc.get_traced_memory()[0] if traced else 0
    rss1 = rss_bytes()
    for box in boxes:
        box.put_nowait(STOP)
    await asyncio.gather(*tasks)
    out = {
        "seconds": seconds,
        "us_per_spawn": seconds / n * 1e6,
        "spawn_only_seconds": spawn_seconds,
        "bytes_per_process": (rss1 - rss0) / n if rss0 >= 0 else float("nan"),
    }
    if traced:
        out["bytes_per_process_tracemalloc"] = (traced1 - traced0) / n
    return out


def spawn_idle(
    n: int = 100_000,
    loop_factory: LoopFactory | None = None,
    tracemalloc_check: bool = False,
) -> dict[str, float]:
    """Spawn ``n`` actors that each wait on their mailbox, then stop them all.

    ``seconds``/``us_per_spawn`` run until every actor has started and told the
    parent so (a "ready" message).  ``bytes_per_process`` is the RSS growth
    per live idle actor (task + queue + bookkeeping), measured without
    tracemalloc so the timing is clean.  With ``tracemalloc_check`` a second,
    traced run adds ``bytes_per_process_tracemalloc`` as a cross-check (only
    the memory figure is taken from that run).
    """
    out = _run(_spawn_idle(n, traced=False), loop_factory)
    if tracemalloc_check:
        already = tracemalloc.is_tracing()
        if not already:
            tracemalloc.start()
        try:
            traced = _run(_spawn_idle(n, traced=True), loop_factory)
        finally:
            if not already:
                tracemalloc.stop()
        out["bytes_per_process_tracemalloc"] = traced["bytes_per_process_tracemalloc"]
    return out


# --------------------------------------------------------------------------
# request/response (gen_server call)


async def _echo_server(inbox: Mailbox) -> None:
    """Answer every ``(request, future)`` by setting the future to ``request``."""
    while True:
        msg = await inbox.get()
        if msg == STOP:
            return
        request, fut = msg
        if not fut.done():  # the caller may have given up (cancelled)
            fut.set_result(request)


async def _gen_call(n: int) -> dict[str, float]:
    server: Mailbox = asyncio.Queue()
    task = asyncio.create_task(_echo_server(server))
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    for i in range(n):
        fut = loop.create_future()
        server.put_nowait((i, fut))
        got = await fut
        assert got == i
    seconds = time.perf_counter() - t0
    server.put_nowait(STOP)
    await task
    return {"seconds": seconds, "calls_per_s": n / seconds}


def gen_call(n: int = 100_000, loop_factory: LoopFactory | None = None) -> dict[str, float]:
    """One client makes ``n`` requests to a server task that echoes them.

    The idiomatic asyncio request/response: the client puts ``(request,
    future)`` on the server's queue and awaits the future, which the server
    sets.  Returns ``seconds`` and ``calls_per_s``.
    """
    return _run(_gen_call(n), loop_factory)


# --------------------------------------------------------------------------
# one-way requests (gen_server cast)


async def _cast_counter(inbox: Mailbox) -> None:
    """Count casts; answer a ``(request, future)`` call with the count so far."""
    count = 0
    while True:
        msg = await inbox.get()
        if msg == STOP:
            return
        if type(msg) is tuple:
            fut = msg[1]
            if not fut.done():
                fut.set_result(count)
        else:
            count += 1


async def _gen_cast(n: int) -> dict[str, float]:
    server: Mailbox = asyncio.Queue()
    task = asyncio.create_task(_cast_counter(server))
    await asyncio.sleep(0)  # let the server park on its mailbox
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    put = server.put_nowait
    for i in range(n):
        put(i)
    fut = loop.create_future()
    put(("count", fut))
    count = await fut
    seconds = time.perf_counter() - t0
    assert count == n, (count, n)
    server.put_nowait(STOP)
    await task
    return {"seconds": seconds, "casts_per_s": n / seconds}


def gen_cast(n: int = 1_000_000, loop_factory: LoopFactory | None = None) -> dict[str, float]:
    """One client puts ``n`` one-way requests on a server task's queue.

    The server counts them; a final request/response returns the count
    (checked to be ``n``) and the clock stops at its answer.  Returns
    ``seconds`` and ``casts_per_s``.
    """
    return _run(_gen_cast(n), loop_factory)


#: Workload name -> function, for the harness.
WORKLOADS: dict[str, Callable[..., dict[str, float]]] = {
    "pingpong": pingpong,
    "flood": flood,
    "ring": ring,
    "skynet": skynet,
    "spawn_idle": spawn_idle,
    "gen_call": gen_call,
    "gen_cast": gen_cast,
}
