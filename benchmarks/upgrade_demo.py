"""The latency spike of a live upgrade, beside a baseline in the same run.

Usage::

    python benchmarks/upgrade_demo.py [--connections 10000] [--runs 3] [--json FILE]

Alternates ``otpvm demo --upgrade=none`` (the same echo service and load,
nothing installed) and ``otpvm demo --upgrade`` (the handler moves from v1 to
v2 lazily while every connection talks), ``--runs`` times each, and prints
the p99 round-trip latency before, around (the install window, widened by
0.5 s on each side) and after the upgrade moment, with the spike =
p99(around) − p99(before), as the median of the runs and their spread.
Each run's own checks (nothing lost, every connection switched once) must
hold, or the script says which did not and exits 1.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any


def one_run(mode: str, connections: int) -> dict[str, Any]:
    """One demo run; its "upgrade" object."""
    command = [sys.executable, "-m", "otpvm", "demo", f"--upgrade={mode}", "--json",
               "--connections", str(connections)]
    with tempfile.TemporaryDirectory() as outside:     # never the source tree's otpvm/
        done = subprocess.run(command, capture_output=True, text=True, cwd=outside,
                              timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    upgrade: dict[str, Any] = json.loads(done.stdout)["upgrade"]
    return upgrade


def spread(values: list[float]) -> str:
    """median (min–max)."""
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    """Runs the pairs and prints the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", default=None, help="also write every run's figures to this file")
    args = p.parse_args(argv)
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "ok": []}
    for _ in range(args.runs):
        for mode in ("none", "ok"):
            runs[mode].append(one_run(mode, args.connections))
    print(f"| {args.connections:,} connections | p99 before (ms) | p99 around (ms) | "
          "p99 after (ms) | spike (ms) | install (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for mode, label in (("none", "baseline (nothing installed)"), ("ok", "upgrade v1 → v2")):
        rs = runs[mode]
        p99 = {phase: [r["p99_ms"][phase] for r in rs] for phase in ("before", "upgrade", "after")}
        spikes = [u - b for u, b in zip(p99["upgrade"], p99["before"], strict=True)]
        install = [r["install_s"] for r in rs]
        print(f"| {label} | {spread(p99['before'])} | {spread(p99['upgrade'])} | "
              f"{spread(p99['after'])} | {spread(spikes)} | "
              f"{statistics.median(install):.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
