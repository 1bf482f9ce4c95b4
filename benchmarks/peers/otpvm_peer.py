"""The benchmark workloads written for otpvm.

These mirror :mod:`peers.asyncio_peer` one for one, using the otpvm process
API: ``otpvm.run(main, *args, schedulers=None)`` boots a VM and runs ``main``
as its first process; inside a process ``otpvm.spawn``, ``otpvm.self``,
``otpvm.send`` and ``await otpvm.receive()`` are the Erlang primitives.

Every workload is a synchronous function that boots its own VM (with
``schedulers`` scheduler threads, ``None`` = the VM default) and returns a
dict of figures.  Timing is done inside the first process, so VM boot and
shutdown are excluded, as the event loop's are on the asyncio side.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import otpvm
from otpvm import gen_server
from otpvm.gen_server import From, GenServer, NoReply, Ok, Reply

from . import check_skynet_size, rss_bytes, skynet_actors, skynet_expected

__all__ = [
    "WORKLOADS",
    "available",
    "flood",
    "gen_call",
    "gen_cast",
    "pingpong",
    "ring",
    "skynet",
    "spawn_idle",
]

STOP = "stop"


def available() -> bool:
    """Return True if the importable ``otpvm`` is the real VM (has ``run``)."""
    return callable(getattr(otpvm, "run", None))


# --------------------------------------------------------------------------
# ping-pong


async def _ponger() -> None:
    """Answer every ``(from, n)`` with ``n`` until told to stop."""
    while True:
        msg = await otpvm.receive()
        if msg == STOP:
            return
        sender, n = msg
        otpvm.send(sender, n)


async def _pingpong(n: int) -> dict[str, float]:
    me = otpvm.self()
    peer = otpvm.spawn(_ponger)
    t0 = time.perf_counter()
    for i in range(n):
        otpvm.send(peer, (me, i))
        got = await otpvm.receive()
        assert got == i
    seconds = time.perf_counter() - t0
    otpvm.send(peer, STOP)
    return {"seconds": seconds, "round_trips_per_s": n / seconds}


def pingpong(n: int = 100_000, schedulers: int | None = None) -> dict[str, float]:
    """Two processes pass a message back and forth ``n`` round trips.

    Returns ``seconds`` and ``round_trips_per_s``.
    """
    result: dict[str, float] = otpvm.run(_pingpong, n, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# flood


async def _counter() -> None:
    """Count messages until ``("done", from)`` arrives, then reply the count."""
    count = 0
    while True:
        msg = await otpvm.receive()
        if type(msg) is tuple:
            otpvm.send(msg[1], count)
            return
        count += 1


async def _flood(n: int) -> dict[str, float]:
    me = otpvm.self()
    receiver = otpvm.spawn(_counter)
    send = otpvm.send
    t0 = time.perf_counter()
    for i in range(n):
        send(receiver, i)
    send(receiver, ("done", me))
    count = await otpvm.receive()
    seconds = time.perf_counter() - t0
    assert count == n, (count, n)
    return {"seconds": seconds, "messages_per_s": n / seconds}


def flood(n: int = 1_000_000, schedulers: int | None = None) -> dict[str, float]:
    """One sender sends ``n`` messages to one receiver, which counts them.

    The receiver replies with its count after a final ``done`` message; the
    clock stops at that reply.  Returns ``seconds`` and ``messages_per_s``.
    """
    result: dict[str, float] = otpvm.run(_flood, n, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# ring


async def _ring_node(main: otpvm.Pid) -> None:
    """Learn the next pid, then forward token ``t`` as ``t - 1``; report 0 to main."""
    nxt = await otpvm.receive()
    send = otpvm.send
    while True:
        msg = await otpvm.receive()
        if msg == STOP:
            return
        if msg == 0:
            send(main, "done")
        else:
            send(nxt, msg - 1)


async def _ring(procs: int, rounds: int) -> dict[str, float]:
    me = otpvm.self()
    t0 = time.perf_counter()
    pids = [otpvm.spawn(_ring_node, me) for _ in range(procs)]
    for i, pid in enumerate(pids):
        otpvm.send(pid, pids[(i + 1) % procs])
    spawn_seconds = time.perf_counter() - t0
    hops = procs * rounds
    t0 = time.perf_counter()
    otpvm.send(pids[0], hops)
    await otpvm.receive()
    seconds = time.perf_counter() - t0
    for pid in pids:
        otpvm.send(pid, STOP)
    return {
        "seconds": seconds,
        "hops_per_s": hops / seconds,
        "spawn_seconds": spawn_seconds,
    }


def ring(procs: int = 10_000, rounds: int = 10, schedulers: int | None = None) -> dict[str, float]:
    """``procs`` processes in a ring; a token goes round ``rounds`` times.

    Building the ring is timed separately (``spawn_seconds``); ``seconds`` and
    ``hops_per_s`` cover only the ``procs * rounds`` token hops.
    """
    result: dict[str, float] = otpvm.run(_ring, procs, rounds, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# skynet


async def _skynet_node(parent: otpvm.Pid, num: int, size: int, div: int) -> None:
    """Leaf: send ``num`` to parent.  Inner node: send its ``div`` children's sum."""
    if size == 1:
        otpvm.send(parent, num)
        return
    me = otpvm.self()
    sub = size // div
    for i in range(div):
        otpvm.spawn(_skynet_node, me, num + i * sub, sub, div)
    total = 0
    for _ in range(div):
        total += await otpvm.receive()
    otpvm.send(parent, total)


async def _skynet(size: int) -> dict[str, float]:
    me = otpvm.self()
    t0 = time.perf_counter()
    otpvm.spawn(_skynet_node, me, 0, size, 10)
    total = await otpvm.receive()
    seconds = time.perf_counter() - t0
    expected = skynet_expected(size)
    assert total == expected, (total, expected)
    return {"seconds": seconds, "sum": total, "actors": skynet_actors(size)}


def skynet(size: int = 1_000_000, schedulers: int | None = None) -> dict[str, float]:
    """Run the classic skynet benchmark with ``size`` leaves (a power of 10).

    Returns ``seconds``, the ``sum`` (499999500000 for 1M) and the number of
    ``actors`` spawned.
    """
    check_skynet_size(size)
    result: dict[str, float] = otpvm.run(_skynet, size, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# spawn idle


async def _idle(parent: otpvm.Pid) -> None:
    """Tell ``parent`` we are up, then wait for any message (``stop``)."""
    otpvm.send(parent, "ready")
    await otpvm.receive()


async def _spawn_idle(n: int) -> dict[str, float]:
    me = otpvm.self()
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    pids = [otpvm.spawn(_idle, me) for _ in range(n)]
    spawn_seconds = time.perf_counter() - t0
    for _ in range(n):
        await otpvm.receive()
    seconds = time.perf_counter() - t0
    rss1 = rss_bytes()
    out: dict[str, float] = {
        "seconds": seconds,
        "us_per_spawn": seconds / n * 1e6,
        "spawn_only_seconds": spawn_seconds,
        "bytes_per_process": (rss1 - rss0) / n if rss0 >= 0 else float("nan"),
    }
    reported = _reported_memory(pids[0]) if pids else None
    if reported is not None:
        out["process_info_memory"] = reported
    for pid in pids:
        otpvm.send(pid, STOP)
    return out


def _reported_memory(pid: otpvm.Pid) -> float | None:
    """Return the VM's own memory figure for ``pid``, if ``process_info`` has one."""
    info_fn = getattr(otpvm, "process_info", None)
    if info_fn is None:
        return None
    try:
        info = info_fn(pid)
    except Exception:  # noqa: BLE001 - optional figure: never fail the benchmark
        return None
    if isinstance(info, dict) and isinstance(info.get("memory"), int | float):
        return float(info["memory"])
    return None


def spawn_idle(n: int = 100_000, schedulers: int | None = None) -> dict[str, float]:
    """Spawn ``n`` processes that each wait in ``receive``, then stop them all.

    ``seconds``/``us_per_spawn`` run until every process has started and told
    the parent so (a "ready" message).  ``bytes_per_process`` is the RSS
    growth per live idle process: otpvm allocates in C, so tracemalloc would
    not see it.  If ``otpvm.process_info(pid)`` reports a ``memory`` entry it
    is added as ``process_info_memory``.
    """
    result: dict[str, float] = otpvm.run(_spawn_idle, n, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# gen_server call


class _Echo(GenServer):
    """Answers every call with the request itself."""

    def init(self, args: object) -> Ok:
        return Ok(args)

    def handle_call(self, request: object, from_: From, state: object) -> Reply:
        return Reply(request, state)


async def _gen_call(n: int) -> dict[str, float]:
    pid = await gen_server.start(_Echo, None)
    call = gen_server.call
    t0 = time.perf_counter()
    for i in range(n):
        got = await call(pid, i)
        assert got == i
    seconds = time.perf_counter() - t0
    await gen_server.stop(pid)
    # A raw ping-pong of the same size in the same VM, for the cost of a call
    # relative to the bare message round trip it is built on.
    raw = await _pingpong(n)
    return {
        "seconds": seconds,
        "calls_per_s": n / seconds,
        "pingpong_round_trips_per_s": raw["round_trips_per_s"],
        "call_cost_vs_pingpong": seconds / raw["seconds"],
    }


def gen_call(n: int = 100_000, schedulers: int | None = None) -> dict[str, float]:
    """One client makes ``n`` ``gen_server.call``s to a server that echoes them.

    Each call is the full OTP call (monitor + alias, reply or ``Down``, the
    default 5 s timeout).  Returns ``seconds`` and ``calls_per_s``, plus
    ``call_cost_vs_pingpong``: the time of a call over that of a raw
    send/receive round trip (:func:`pingpong`), measured right after in the
    same VM.
    """
    result: dict[str, float] = otpvm.run(_gen_call, n, schedulers=schedulers)
    return result


# --------------------------------------------------------------------------
# gen_server cast


class _CastCounter(GenServer):
    """Counts casts; a call answers the count so far."""

    def init(self, args: object) -> Ok:
        return Ok(0)

    def handle_cast(self, msg: object, count: int) -> NoReply:
        return NoReply(count + 1)

    def handle_call(self, request: object, from_: From, count: int) -> Reply:
        return Reply(count, count)


async def _gen_cast(n: int) -> dict[str, float]:
    pid = await gen_server.start(_CastCounter, None)
    cast = gen_server.cast
    t0 = time.perf_counter()
    for i in range(n):
        cast(pid, i)
    # No timeout: the server may take longer than the default 5 s to get
    # through its mailbox.
    count = await gen_server.call(pid, "count", timeout=None)
    seconds = time.perf_counter() - t0
    assert count == n, (count, n)
    await gen_server.stop(pid)
    return {"seconds": seconds, "casts_per_s": n / seconds}


def gen_cast(n: int = 1_000_000, schedulers: int | None = None) -> dict[str, float]:
    """One client casts ``n`` messages to a server that counts them.

    A final call returns the count (checked to be ``n``); the clock stops at
    its reply.  Returns ``seconds`` and ``casts_per_s``.
    """
    result: dict[str, float] = otpvm.run(_gen_cast, n, schedulers=schedulers)
    return result


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
