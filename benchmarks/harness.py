"""Shared pieces of the benchmark harness: workloads, runtimes, best-of, table.

Used by both :mod:`compare` (the command-line runner) and the pytest-benchmark
suite (``test_bench.py`` / ``conftest.py``), so both report the same figures.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from peers import WorkloadFn

_BENCH_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _BENCH_DIR.parent
# Let an in-place build of otpvm in the repo be found when it is not installed.
if str(_REPO_ROOT) not in sys.path:
    sys.path.append(str(_REPO_ROOT))

#: Column order of every report.
RUNTIME_NAMES: tuple[str, ...] = ("otpvm", "asyncio", "uvloop")


@dataclass(frozen=True)
class Figure:
    """One reported number of a workload, e.g. ``hops_per_s``."""

    key: str
    higher_is_better: bool

    @property
    def label(self) -> str:
        """The figure's name with an arrow saying which way is better."""
        return f"{self.key} {'↑' if self.higher_is_better else '↓'}"

    def best(self, values: Iterable[float]) -> float:
        """Return the best of ``values`` (max or min), ignoring NaNs."""
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return math.nan
        return max(finite) if self.higher_is_better else min(finite)


@dataclass(frozen=True)
class Workload:
    """A workload: its reported figures, its sizes and how many runs to take."""

    name: str
    figures: tuple[Figure, ...]
    full: Mapping[str, int]
    quick: Mapping[str, int]
    repeats: int = 3
    quick_repeats: int = 3
    #: Run each repetition in a fresh interpreter.  Needed for RSS deltas:
    #: memory freed by an earlier workload is reused without growing RSS.
    isolated: bool = False

    def sizes(self, quick: bool) -> Mapping[str, int]:
        """Return the size keyword arguments for a quick or a full run."""
        return self.quick if quick else self.full

    def runs(self, quick: bool) -> int:
        """Return how many runs to take the best of."""
        return self.quick_repeats if quick else self.repeats


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "pingpong",
            (Figure("round_trips_per_s", True),),
            full={"n": 100_000},
            quick={"n": 10_000},
        ),
        Workload(
            "flood",
            (Figure("messages_per_s", True),),
            full={"n": 1_000_000},
            quick={"n": 100_000},
        ),
        Workload(
            "ring",
            (Figure("hops_per_s", True),),
            full={"procs": 10_000, "rounds": 10},
            quick={"procs": 1_000, "rounds": 10},
        ),
        Workload(
            "skynet",
            (Figure("seconds", False),),
            full={"size": 1_000_000},
            quick={"size": 10_000},
            repeats=1,
        ),
        Workload(
            "spawn_idle",
            (
                Figure("us_per_spawn", False),
                Figure("bytes_per_process", False),
                Figure("bytes_per_process_tracemalloc", False),
            ),
            full={"n": 100_000},
            quick={"n": 10_000},
            isolated=True,
        ),
        Workload(
            "gen_call",
            (
                Figure("calls_per_s", True),
                # otpvm only: a call's time over a raw ping-pong round trip's.
                Figure("call_cost_vs_pingpong", False),
            ),
            full={"n": 100_000},
            quick={"n": 10_000},
        ),
        Workload(
            "gen_cast",
            (Figure("casts_per_s", True),),
            full={"n": 1_000_000},
            quick={"n": 100_000},
        ),
    )
}


def available_runtimes(
    schedulers: int | None = None,
) -> dict[str, dict[str, WorkloadFn]]:
    """Return ``{runtime: {workload: fn}}`` for every runtime importable here.

    ``asyncio`` is always there; ``uvloop`` when the package imports; ``otpvm``
    when the VM imports and has ``run``.  ``schedulers`` is passed to otpvm.
    """
    from peers import asyncio_peer

    runtimes: dict[str, dict[str, WorkloadFn]] = {}
    try:
        otpvm_peer = importlib.import_module("peers.otpvm_peer")
    except Exception:  # noqa: BLE001 - not built yet, or broken: leave it out
        otpvm_peer = None
    if otpvm_peer is not None and otpvm_peer.available():
        runtimes["otpvm"] = {
            name: functools.partial(fn, schedulers=schedulers)
            for name, fn in otpvm_peer.WORKLOADS.items()
        }
    runtimes["asyncio"] = dict(asyncio_peer.WORKLOADS)
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        pass
    else:
        runtimes["uvloop"] = {
            name: functools.partial(fn, loop_factory=uvloop.new_event_loop)
            for name, fn in asyncio_peer.WORKLOADS.items()
        }
    return runtimes


def best_of(workload: Workload, runs: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Merge several runs' figures: each reported figure takes its best value.

    Other keys (``sum``, ``seconds`` of a rate workload...) come from the run
    that was best on the workload's first figure.
    """
    runs = list(runs)
    if not runs:
        return {}
    primary = workload.figures[0]
    key = primary.key
    best_run = (
        max(runs, key=lambda r: r[key])
        if primary.higher_is_better
        else min(runs, key=lambda r: r[key])
    )
    out = dict(best_run)
    for fig in workload.figures:
        out[fig.key] = fig.best(r.get(fig.key, math.nan) for r in runs)
    return out


#: Extra keyword arguments for isolated runs: the asyncio peers add a
#: tracemalloc cross-check of the memory figure (it would skew timings
#: in-process, and tracemalloc cannot see otpvm's C allocations anyway).
_ISOLATED_EXTRA: dict[tuple[str, str], dict[str, bool]] = {
    ("asyncio", "spawn_idle"): {"tracemalloc_check": True},
    ("uvloop", "spawn_idle"): {"tracemalloc_check": True},
}


def run_isolated(
    runtime: str,
    name: str,
    sizes: Mapping[str, int],
    schedulers: int | None = None,
    cross_check: bool = True,
) -> dict[str, float]:
    """Run one workload once in a fresh interpreter and return its figures.

    ``cross_check`` adds the runtime's slow extra measurements, if it has any
    (the tracemalloc figure of the asyncio peers' ``spawn_idle``).
    """
    extra = _ISOLATED_EXTRA.get((runtime, name), {}) if cross_check else {}
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        runtime,
        name,
        json.dumps({**sizes, **extra}),
        json.dumps(schedulers),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{runtime}/{name} child failed:\n{proc.stderr}")
    figures: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return figures


def run_once(
    runtime: str,
    workload: Workload,
    quick: bool,
    schedulers: int | None = None,
    cross_check: bool = True,
) -> dict[str, float]:
    """Run a workload once on a runtime, in a fresh interpreter if it asks for one."""
    sizes = workload.sizes(quick)
    if workload.isolated:
        return run_isolated(runtime, workload.name, sizes, schedulers, cross_check)
    return available_runtimes(schedulers)[runtime][workload.name](**sizes)


def run_best_of(
    runtime: str, workload: Workload, quick: bool, schedulers: int | None = None
) -> dict[str, float]:
    """Run a workload as many times as it asks; return the best figures.

    Slow cross-checks (see :func:`run_isolated`) run on the first repetition only.
    """
    return best_of(
        workload,
        (
            run_once(runtime, workload, quick, schedulers, cross_check=i == 0)
            for i in range(workload.runs(quick))
        ),
    )


def _fmt(value: float | None) -> str:
    """Format a figure for the table: engineering-ish, 3-4 significant digits."""
    if value is None or math.isnan(value):
        return "-"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.2f} M"
    if a >= 1e4:
        return f"{value / 1e3:.1f} k"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def ratio(otpvm: float | None, asyncio: float | None) -> float | None:
    """Return ``otpvm / asyncio`` or None when either is missing or zero."""
    if otpvm is None or asyncio is None or math.isnan(otpvm) or math.isnan(asyncio):
        return None
    if asyncio == 0:
        return None
    return otpvm / asyncio


def markdown_table(results: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Render ``results[workload][runtime] -> figures`` as a Markdown table.

    Columns: workload | figure | otpvm | asyncio | uvloop | ratio otpvm/asyncio.
    The arrow after a figure's name says whether higher or lower is better,
    so a ratio above 1 means otpvm is better for ↑ figures and worse for ↓.
    """
    lines = [
        "| workload | figure | otpvm | asyncio | uvloop | ratio otpvm/asyncio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for wname, per_runtime in results.items():
        workload = WORKLOADS[wname]
        for fig in workload.figures:
            vals = {
                rt: per_runtime[rt].get(fig.key) if rt in per_runtime else None
                for rt in RUNTIME_NAMES
            }
            r = ratio(vals["otpvm"], vals["asyncio"])
            cells = [
                wname,
                fig.label,
                *(_fmt(vals[rt]) for rt in RUNTIME_NAMES),
                "-" if r is None else f"{r:.2f}x",
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _child_main(argv: list[str]) -> None:
    """Entry point of :func:`run_isolated`'s child: run once, print JSON figures."""
    runtime, name, kwargs, schedulers = argv
    fn = available_runtimes(json.loads(schedulers))[runtime][name]
    print(json.dumps(fn(**json.loads(kwargs))))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        _child_main(sys.argv[2:])
    else:
        sys.exit("usage: harness.py --child RUNTIME WORKLOAD KWARGS_JSON SCHEDULERS_JSON")
