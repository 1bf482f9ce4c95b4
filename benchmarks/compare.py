"""Compare otpvm with asyncio (and uvloop) on the benchmark workloads.

Usage::

    python benchmarks/compare.py [--quick] [--only NAME ...] [--runtime NAME ...]
                                 [--schedulers N] [--json FILE]

Runs every workload on every runtime available in this Python (asyncio
always; uvloop if importable; otpvm if built), all in this one process, and
prints a Markdown table: workload | figure | otpvm | asyncio | uvloop |
ratio otpvm/asyncio.  A run that raises is reported on stderr, left out of
the table, and makes the exit status 1.  Timed workloads take the best of 3 runs, skynet the
best of 1 at full size.  ``--quick`` uses small sizes for CI smoke runs.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    RUNTIME_NAMES,
    WORKLOADS,
    available_runtimes,
    markdown_table,
    run_best_of,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run, < ~20 s)")
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(WORKLOADS),
        metavar="NAME",
        help=f"run only this workload (repeatable); one of {', '.join(WORKLOADS)}",
    )
    p.add_argument(
        "--runtime",
        action="append",
        choices=RUNTIME_NAMES,
        help="run only this runtime (repeatable; default: all available)",
    )
    p.add_argument("--schedulers", type=int, default=None, help="otpvm scheduler threads")
    p.add_argument("--json", type=Path, default=None, help="also write all figures to FILE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table; return the exit status."""
    args = parse_args(argv)
    runtimes = available_runtimes(args.schedulers)
    if args.runtime:
        runtimes = {k: v for k, v in runtimes.items() if k in args.runtime}
    missing = [rt for rt in RUNTIME_NAMES if rt not in runtimes]
    names = args.only or list(WORKLOADS)

    print(
        f"# otpvm vs asyncio ({'quick' if args.quick else 'full'} sizes)\n\n"
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"runtimes: {', '.join(runtimes)}"
        + (f"; not available: {', '.join(missing)}" if missing else ""),
        file=sys.stderr,
    )
    t_start = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    failures: list[str] = []
    for name in names:
        workload = WORKLOADS[name]
        results[name] = {}
        for rt in runtimes:
            t0 = time.perf_counter()
            try:
                figures = run_best_of(rt, workload, args.quick, args.schedulers)
            except Exception as exc:  # noqa: BLE001 - report it, go on with the others
                failures.append(f"{name}/{rt}")
                print(f"  {name:<11} {rt:<8} FAILED: {exc!r}", file=sys.stderr, flush=True)
                traceback.print_exc(file=sys.stderr)
                continue
            results[name][rt] = figures
            shown = ", ".join(
                f"{f.key}={figures[f.key]:.4g}"
                for f in workload.figures
                if not math.isnan(figures.get(f.key, math.nan))
            )
            print(
                f"  {name:<11} {rt:<8} {shown}  ({time.perf_counter() - t0:.1f} s)",
                file=sys.stderr,
                flush=True,
            )
    print(f"  total {time.perf_counter() - t_start:.1f} s\n", file=sys.stderr)

    sizes = "; ".join(
        f"{n}: " + ", ".join(f"{k}={v:,}" for k, v in WORKLOADS[n].sizes(args.quick).items())
        for n in names
    )
    print(markdown_table(results))
    print(f"\nSizes: {sizes}. ↑ higher is better, ↓ lower is better.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {
                    "quick": args.quick,
                    "python": platform.python_version(),
                    "results": results,
                },
                indent=2,
            )
        )
    if failures:
        print(f"\nFailed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
