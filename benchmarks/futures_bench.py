"""otpvm.futures.Executor against concurrent.futures.ThreadPoolExecutor.

Usage::

    python benchmarks/futures_bench.py [--quick] [--runs N] [--json FILE]

Both executors at their defaults (``max_workers=None``), in this one process,
and prints a Markdown table: workload | figure | otpvm | ThreadPool | ratio.

* ``sync``: 100,000 trivial sync jobs (``add(i, 1)``), submitted then waited.
* ``async``: 100,000 jobs that yield once: otpvm runs ``async def`` jobs
  (``await otpvm.sleep(0)``), ThreadPool the sync equivalent (no yield).
* ``async_sleep``: 20,000 jobs that wait 1 ms: ``await otpvm.sleep(0.001)``
  against ``time.sleep(0.001)`` on ThreadPool's threads.

Each figure is the best of ``--runs`` (default 3); ``threads`` is the most
OS threads alive while the jobs ran (the process's, VM included).
``--quick`` uses sizes a tenth as big (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import otpvm
import otpvm.futures


def add(i: int, j: int) -> int:
    return i + j


async def async_yield(i: int) -> int:
    await otpvm.sleep(0)
    return i


def sync_yield(i: int) -> int:
    return i


async def async_sleep(i: int) -> int:
    await otpvm.sleep(0.001)
    return i


def sync_sleep(i: int) -> int:
    time.sleep(0.001)
    return i


# workload -> (n, otpvm's job, ThreadPool's job)
WORKLOADS: dict[str, tuple[int, Callable[..., Any], Callable[..., Any]]] = {
    "sync": (100_000, add, add),
    "async": (100_000, async_yield, sync_yield),
    "async_sleep": (20_000, async_sleep, sync_sleep),
}


def run_once(make: Callable[[], Executor], fn: Callable[..., Any], n: int) -> dict[str, float]:
    """One run: submit n jobs, wait for all; jobs/s and the peak thread count."""
    with make() as ex:
        t0 = time.perf_counter()
        futs = [ex.submit(fn, i, 1) if fn is add else ex.submit(fn, i) for i in range(n)]
        threads = threading.active_count()
        total = sum(f.result() for f in futs)
        elapsed = time.perf_counter() - t0
        threads = max(threads, threading.active_count())
    expected = sum(range(n)) + (n if fn is add else 0)
    assert total == expected, (total, expected)
    return {"jobs_per_s": n / elapsed, "threads": threads}


def main(argv: list[str] | None = None) -> int:
    """Run every workload on both executors and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="sizes a tenth as big")
    p.add_argument("--runs", type=int, default=3, help="best of N runs (default 3)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to FILE")
    args = p.parse_args(argv)
    otpvm.default_vm()                          # started once, outside the timings
    makers: dict[str, Callable[[], Executor]] = {
        "otpvm": otpvm.futures.Executor, "ThreadPool": ThreadPoolExecutor}
    results: dict[str, dict[str, dict[str, float]]] = {}
    for name, (n, otpvm_fn, pool_fn) in WORKLOADS.items():
        n = max(n // 10, 1) if args.quick else n
        results[name] = {}
        for rt, fn in (("otpvm", otpvm_fn), ("ThreadPool", pool_fn)):
            runs = [run_once(makers[rt], fn, n) for _ in range(args.runs)]
            results[name][rt] = {"n": n,
                                 "jobs_per_s": max(r["jobs_per_s"] for r in runs),
                                 "threads": max(r["threads"] for r in runs)}
    print(f"Python {platform.python_version()} on {platform.machine()}, "
          f"best of {args.runs}\n")
    print("| workload | jobs | figure | otpvm | ThreadPool | ratio otpvm/ThreadPool |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for name, per in results.items():
        for fig, label in (("jobs_per_s", "jobs/s ↑"), ("threads", "peak OS threads ↓")):
            a, b = per["otpvm"][fig], per["ThreadPool"][fig]
            print(f"| {name} | {int(per['otpvm']['n']):,} | {label} | {a:,.0f} | {b:,.0f} "
                  f"| {a / b:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
