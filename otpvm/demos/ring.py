"""The VM demo: 100,000 processes in a ring, a few crashes nobody notices.

1. Spawn N processes (default 100,000), each linked to nothing, each knowing
   the next one: a ring.
2. Pass a token round the ring a few times and time the hops.
3. Crash a handful of processes that are not in the ring (each hits a bad
   code path and dies with an exception, logged once as a crash report) and
   show that the ring, and every other process, carried on: the token keeps
   going round, every process answers a roll call.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import time
from typing import Any

import otpvm
from otpvm import ANY, Down, receive, self, send

# Spawns or sends between two yields of the demo's main process: a few
# hundred microseconds of work, well under the VM's 2 ms slice limit (a
# process that goes longer without awaiting is reported as a long_schedule).
BATCH = 200


async def ring_node() -> None:
    """A ring member: learns its successor, then forwards tokens."""
    nxt = await receive()
    while True:
        msg = await receive()
        if msg[0] == "token":
            send(nxt, ("token", msg[1] + 1))
        elif msg[0] == "roll_call":
            send(msg[1], "here")


async def fragile(n: int) -> None:
    """A process with a badly tested code path."""
    request = await receive()
    print(f"  worker {n}: got {request!r}, dividing by zero now")
    _ = 1 / 0


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def demo(n: int, rounds: int, crashes: int) -> dict[str, Any]:
    """Runs the demo; returns its figures."""
    me = self()
    start = time.perf_counter()
    nodes = []
    for i in range(n):
        nodes.append(otpvm.spawn(ring_node))
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)        # yield: let the others run
    for i, pid in enumerate(nodes):
        send(pid, nodes[i + 1] if i + 1 < n else me)
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)
    spawn_s = time.perf_counter() - start
    print(f"spawned {n:,} processes in {spawn_s:.2f} s "
          f"({spawn_s / n * 1e6:.2f} us each), peak RSS {_rss_mb():.0f} MB")

    start = time.perf_counter()
    for _ in range(rounds):
        send(nodes[0], ("token", 0))
        _, hops = await receive(("token", ANY), timeout=60)
        assert hops == n, hops
    ring_s = time.perf_counter() - start
    print(f"token went round {rounds} times: {rounds * n:,} hops in {ring_s:.2f} s "
          f"({rounds * n / ring_s:,.0f} hops/s)")

    print(f"crashing {crashes} workers (expect {crashes} crash reports below):")
    monitors = []
    for k in range(crashes):
        pid, ref = otpvm.spawn_monitor(fragile, k)
        send(pid, ("please", "divide"))
        monitors.append(ref)
    reasons = [(await receive(Down(ref, ANY, ANY), timeout=10)).reason for ref in monitors]

    send(nodes[0], ("token", 0))
    _, hops = await receive(("token", ANY), timeout=60)
    for i, pid in enumerate(nodes):
        send(pid, ("roll_call", me))
        if i % BATCH == BATCH - 1:
            await otpvm.sleep(0)
    answers = 0
    for _ in nodes:
        await receive("here", timeout=60)
        answers += 1
    print(f"after the crashes: the token still went round ({hops:,} hops), "
          f"{answers:,}/{n:,} ring processes answered the roll call")
    return {"processes": n, "crashed": len(reasons), "answered": answers,
            "crash_reasons": sorted({type(r).__name__ for r in reasons})}


def main(argv: list[str] | None = None) -> int:
    """Command line entry: ``otpvm ring [--processes N]``."""
    parser = argparse.ArgumentParser(prog="otpvm ring", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--crashes", type=int, default=3)
    parser.add_argument("--schedulers", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(f"otpvm {otpvm.__version__} demo, pid {os.getpid()}")
    figures = otpvm.run(demo, args.processes, args.rounds, args.crashes,
                        schedulers=args.schedulers)
    ok = figures["answered"] == figures["processes"] and figures["crashed"] == args.crashes
    print("OK: only the crashed processes died" if ok else f"FAILED: {figures}")
    return 0 if ok else 1
