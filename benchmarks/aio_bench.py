"""asyncio's own workloads on asyncio's default loop, uvloop and otpvm.aio.

Usage::

    python benchmarks/aio_bench.py [--quick] [--runs N] [--json FILE]

The asyncio versions of the benchmark workloads (``peers/asyncio_peer.py``:
tasks with ``asyncio.Queue`` mailboxes: pingpong, flood, ring, skynet, a
request/response "gen_call", casts) plus ``tcp_echo`` (a client and a
server in the same loop, one line out and back at a time over loopback
TCP: the loop's I/O path) and ``spin_ticker`` (how late a 1 ms ticker
task gets while another task spins 100 ms without awaiting), each run to
completion under ``asyncio.Runner(loop_factory=...)`` with asyncio's
default loop, uvloop (when installed), ``otpvm.aio.new_event_loop`` and
``otpvm.aio.new_process_task_loop`` (tasks as processes) on a
one-scheduler VM, in this one process.  Best of ``--runs`` (default 3).
Prints a Markdown table with the ratios to asyncio's loop.  ``--quick``:
small sizes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import WORKLOADS  # noqa: E402
from peers import asyncio_peer  # noqa: E402

import otpvm  # noqa: E402
import otpvm.aio  # noqa: E402

ECHO_SIZES = {"full": {"n": 20_000}, "quick": {"n": 2_000}}


async def _tcp_echo(n: int) -> dict[str, float]:
    served = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
        writer.close()
        served.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for i in range(n):
        writer.write(b"%d\n" % i)
        assert await reader.readline() == b"%d\n" % i
    seconds = time.perf_counter() - start
    writer.close()
    await writer.wait_closed()
    await served.wait()                 # the handler saw the end: nothing left to cancel
    server.close()
    await server.wait_closed()
    return {"round_trips_per_s": n / seconds, "seconds": seconds}


def tcp_echo(n: int, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
             ) -> dict[str, float]:
    """Round trips of one line over loopback TCP, client and server in one loop."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_tcp_echo(n))


async def _spin_ticker(spin: float) -> dict[str, float]:
    late: list[float] = []

    async def spinner() -> None:
        await asyncio.sleep(0.005)
        start = time.perf_counter()
        while time.perf_counter() - start < spin:
            pass

    async def ticker() -> None:
        end = time.perf_counter() + spin + 0.02
        while time.perf_counter() < end:
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - start - 0.001)

    await asyncio.gather(spinner(), ticker())
    return {"max_late_ms": max(late) * 1000, "ticks": len(late)}


def spin_ticker(spin: float, loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
                ) -> dict[str, float]:
    """How late a 1 ms ticker task gets while another task spins ``spin`` s."""
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_spin_ticker(spin))


def loops() -> dict[str, Callable[[], asyncio.AbstractEventLoop] | None]:
    out: dict[str, Callable[[], asyncio.AbstractEventLoop] | None] = {"asyncio": None}
    try:
        import uvloop
    except ImportError:
        pass
    else:
        out["uvloop"] = uvloop.new_event_loop
    vm = otpvm.VM(schedulers=1)
    out["otpvm.aio"] = lambda: otpvm.aio.new_event_loop(vm)
    out["otpvm.aio tasks"] = lambda: otpvm.aio.new_process_task_loop(vm)
    return out


def main(argv: list[str] | None = None) -> int:
    """Runs every workload on every loop and prints the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    p.add_argument("--runs", type=int, default=3, help="best of this many runs")
    p.add_argument("--loops", default=None,
                   help="comma-separated loops to run (default: all; the process-task loop, "
                        "'otpvm.aio tasks', takes many minutes at full size)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to FILE")
    args = p.parse_args(argv)
    size = "quick" if args.quick else "full"
    factories = loops()
    if args.loops:
        chosen = ["asyncio", *(n.strip() for n in args.loops.split(",") if n.strip() != "asyncio")]
        unknown = [n for n in chosen if n not in factories]
        if unknown:
            p.error(f"unknown loop(s) {unknown}: choose among {list(factories)}")
        factories = {n: factories[n] for n in chosen}
    rows: list[tuple[str, str, bool, dict[str, float]]] = []
    results: dict[str, Any] = {}
    jobs: list[tuple[str, Any, dict[str, int], list[tuple[str, bool]]]] = [
        (name, fn, getattr(WORKLOADS[name], size),
         [(f.key, f.higher_is_better) for f in WORKLOADS[name].figures])
        for name, fn in asyncio_peer.WORKLOADS.items() if name != "spawn_idle"]
    jobs.append(("tcp_echo", tcp_echo, ECHO_SIZES[size], [("round_trips_per_s", True)]))
    jobs.append(("spin_ticker", spin_ticker, {"spin": 0.1}, [("max_late_ms", False)]))
    for name, fn, sizes, figures in jobs:
        figs: dict[str, dict[str, float]] = {}
        for loop_name, factory in factories.items():
            runs = [fn(**sizes, loop_factory=factory) for _ in range(args.runs)]
            key, higher = figures[0]
            figs[loop_name] = (max if higher else min)(runs, key=lambda r: r[key])
        results[name] = {"sizes": sizes, "figures": figs}
        for key, higher in figures:
            if all(key in f for f in figs.values()):
                rows.append((name, key, higher, {n: f[key] for n, f in figs.items()}))
    print(f"Python {platform.python_version()} ({platform.python_implementation()}), "
          f"best of {args.runs}; otpvm.aio on a VM with 1 scheduler\n")
    names = list(factories)
    ours = [n for n in names if n.startswith("otpvm")]
    print("| workload | figure | " + " | ".join(names) + " | "
          + " | ".join(f"{n} / asyncio" for n in ours) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in names + ours) + " |")
    for name, key, higher, vals in rows:
        arrow = "↑" if higher else "↓"
        cells = " | ".join(_fmt(vals[n]) for n in names)
        ratios = " | ".join(f"{vals[n] / vals['asyncio']:.2f}x" for n in ours)
        print(f"| {name} | {key} {arrow} | {cells} | {ratios} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def _fmt(v: float) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k"
    return f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
