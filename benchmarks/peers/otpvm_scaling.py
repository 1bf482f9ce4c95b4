"""The otpvm side of the scaling benchmark (``benchmarks/scaling.py``).

Five workloads whose work can spread over schedulers, written to match
``benchmarks/scaling.erl`` one for one:

* ``pairs`` -- independent ping-pong pairs;
* ``ring`` -- a ring of processes with several tokens going round at once;
* ``skynet`` -- the classic tree of spawns and sums (:func:`otpvm_peer.skynet`);
* ``calls`` -- many client processes calling a few gen_servers;
* ``cpu`` -- workers each running a pure-Python loop.

Each is a synchronous function that boots a VM with ``schedulers`` run
queues, does the work and returns its figures.  The clock runs inside the
VM and starts once every process is spawned and waiting, so the VM's boot,
the spawns (but skynet's, which are its work) and the shutdown are left out.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import otpvm
from otpvm import gen_server
from otpvm.gen_server import From, GenServer, Ok, Reply

from . import SPIN_MODULUS, otpvm_peer

__all__ = ["WORKLOADS", "calls", "cpu", "pairs", "ring", "skynet"]

STOP = "stop"
GO = "go"
DONE = "done"


def _gil_enabled() -> float:
    """Return 1.0 if the GIL is on now (after the VM ran), else 0.0."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return 0.0 if is_enabled is not None and not is_enabled() else 1.0


def _run(main: Callable[..., object], *args: object, schedulers: int) -> dict[str, float]:
    """Run ``main(*args)`` in a fresh VM; add whether the GIL was on to its figures."""
    result: dict[str, float] = otpvm.run(main, *args, schedulers=schedulers)
    result["gil_enabled"] = _gil_enabled()
    return result


#: Spawns or sends between two yields while setting up: a long setup loop
#: would overrun the VM's slice limit and be rescued (and reported).
BATCH = 200


async def _spawn_all(count: int, fn: Callable[..., object], *args: object) -> list[otpvm.Pid]:
    """Spawn ``count`` processes ``fn(*args)``, yielding every :data:`BATCH` spawns."""
    pids = []
    for i in range(count):
        pids.append(otpvm.spawn(fn, *args))
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)
    return pids


async def _send_all(pids: list[otpvm.Pid], msgs: list[object]) -> None:
    """Send ``msgs[i]`` to ``pids[i]``, yielding every :data:`BATCH` sends."""
    for i, (pid, msg) in enumerate(zip(pids, msgs, strict=True)):
        otpvm.send(pid, msg)
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)


async def _wait_done(count: int) -> None:
    """Wait for ``count`` ``done`` messages."""
    for _ in range(count):
        msg = await otpvm.receive()
        assert msg == DONE, msg


async def _start_all(pids: list[otpvm.Pid], count: int) -> float:
    """Send ``go`` to every pid, wait for ``count`` ``done``; return the seconds taken."""
    t0 = time.perf_counter()
    for pid in pids:
        otpvm.send(pid, GO)
    await _wait_done(count)
    return time.perf_counter() - t0


# --------------------------------------------------------------------------
# pairs


async def _ponger() -> None:
    """Answer every ``(from, n)`` with ``n`` until told to stop."""
    while True:
        msg = await otpvm.receive()
        if msg == STOP:
            return
        sender, n = msg
        otpvm.send(sender, n)


async def _pinger(main: otpvm.Pid, round_trips: int) -> None:
    """On ``go``, make ``round_trips`` round trips with a ponger of its own."""
    me = otpvm.self()
    peer = otpvm.spawn(_ponger)
    await otpvm.receive()
    send, receive = otpvm.send, otpvm.receive
    for i in range(round_trips):
        send(peer, (me, i))
        got = await receive()
        assert got == i, (got, i)
    send(peer, STOP)
    send(main, DONE)


async def _pairs(pairs: int, round_trips: int) -> dict[str, float]:
    me = otpvm.self()
    pingers = await _spawn_all(pairs, _pinger, me, round_trips)
    seconds = await _start_all(pingers, pairs)
    total = pairs * round_trips
    return {"seconds": seconds, "round_trips_per_s": total / seconds}


def pairs(pairs: int, round_trips: int, schedulers: int) -> dict[str, float]:
    """``pairs`` independent ping-pong pairs, ``round_trips`` round trips each."""
    return _run(_pairs, pairs, round_trips, schedulers=schedulers)


# --------------------------------------------------------------------------
# ring


async def _ring_node(main: otpvm.Pid) -> None:
    """Learn the next pid, then pass a token ``h`` on as ``h - 1``; tell main at 0."""
    nxt = await otpvm.receive()
    send, receive = otpvm.send, otpvm.receive
    while True:
        msg = await receive()
        if msg == STOP:
            return
        if msg == 0:
            send(main, DONE)
        else:
            send(nxt, msg - 1)


async def _ring(procs: int, tokens: int, rounds: int) -> dict[str, float]:
    me = otpvm.self()
    pids = await _spawn_all(procs, _ring_node, me)
    await _send_all(pids, [*pids[1:], pids[0]])
    hops = procs * rounds
    t0 = time.perf_counter()
    # The tokens start evenly spaced round the ring, so they never queue up
    # behind each other at first.
    for k in range(tokens):
        otpvm.send(pids[k * procs // tokens], hops)
    await _wait_done(tokens)
    seconds = time.perf_counter() - t0
    await _send_all(pids, [STOP] * procs)
    return {"seconds": seconds, "messages_per_s": tokens * hops / seconds}


def ring(procs: int, tokens: int, rounds: int, schedulers: int) -> dict[str, float]:
    """A ring of ``procs`` processes; ``tokens`` tokens each go round ``rounds`` times."""
    return _run(_ring, procs, tokens, rounds, schedulers=schedulers)


# --------------------------------------------------------------------------
# skynet


def skynet(size: int, schedulers: int) -> dict[str, float]:
    """Skynet with ``size`` leaves: the otpvm peer's, reported the same way."""
    result = otpvm_peer.skynet(size, schedulers=schedulers)
    result["gil_enabled"] = _gil_enabled()
    return result


# --------------------------------------------------------------------------
# calls


class _Echo(GenServer):
    """Answers every call with the request itself."""

    def init(self, args: object) -> Ok:
        return Ok(None)

    def handle_call(self, request: object, from_: From, state: object) -> Reply:
        return Reply(request, state)


async def _client(main: otpvm.Pid, server: otpvm.Pid, calls: int) -> None:
    """On ``go``, make ``calls`` calls to ``server``, then tell main."""
    await otpvm.receive()
    call = gen_server.call
    for i in range(calls):
        got = await call(server, i)
        assert got == i, (got, i)
    otpvm.send(main, DONE)


async def _calls(servers: int, clients: int, calls: int) -> dict[str, float]:
    me = otpvm.self()
    pids = [await gen_server.start(_Echo, None) for _ in range(servers)]
    client_pids = []
    for i in range(clients):
        client_pids.append(otpvm.spawn(_client, me, pids[i % servers], calls))
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)
    seconds = await _start_all(client_pids, clients)
    for pid in pids:
        await gen_server.stop(pid)
    return {"seconds": seconds, "calls_per_s": clients * calls / seconds}


def calls(servers: int, clients: int, calls: int, schedulers: int) -> dict[str, float]:
    """``clients`` processes each make ``calls`` calls to one of ``servers`` gen_servers."""
    return _run(_calls, servers, clients, calls, schedulers=schedulers)


# --------------------------------------------------------------------------
# cpu

#: Iterations between two yields: about 0.1 ms, far under the VM's 2 ms slice
#: limit even on a slow build, so a worker is never rescued (a rescue hands
#: its run queue to a spare thread: one more thread running Python).
CHUNK = 500
MODULUS = SPIN_MODULUS


async def _worker(main: otpvm.Pid, iterations: int) -> None:
    """On ``go``, run :func:`peers.spin`'s loop in chunks, yielding between; send the result."""
    await otpvm.receive()
    acc = 0
    i = iterations
    while i > 0:
        stop = max(i - CHUNK, 0)
        for j in range(i, stop, -1):
            acc = (acc + j * j) % MODULUS
        i = stop
        await otpvm.sleep(0)
    otpvm.send(main, acc)


async def _cpu(workers: int, iterations: int) -> dict[str, float]:
    me = otpvm.self()
    pids = await _spawn_all(workers, _worker, me, iterations)
    t0 = time.perf_counter()
    for pid in pids:
        otpvm.send(pid, GO)
    results = {await otpvm.receive() for _ in range(workers)}
    seconds = time.perf_counter() - t0
    assert len(results) == 1, results
    return {"seconds": seconds, "result": float(results.pop())}


def cpu(workers: int, iterations: int, schedulers: int) -> dict[str, float]:
    """``workers`` processes each run a pure-Python loop of ``iterations`` steps."""
    return _run(_cpu, workers, iterations, schedulers=schedulers)


#: Workload name -> function, for ``scaling.py``'s child processes.
WORKLOADS: dict[str, Callable[..., dict[str, float]]] = {
    "pairs": pairs,
    "ring": ring,
    "skynet": skynet,
    "calls": calls,
    "cpu": cpu,
}
