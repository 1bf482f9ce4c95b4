"""How otpvm's throughput grows with its scheduler count, beside the BEAM's.

Usage::

    python benchmarks/scaling.py [--schedulers 1,2,8] [--repeat N] [--quick]
                                 [--only NAME ...] [--no-beam]
                                 [--json FILE] [--plot FILE.png]
    python benchmarks/scaling.py --from A.json [--from B.json ...] [--plot FILE.png]

Five workloads whose work can spread over cores (``peers/otpvm_scaling.py``
and, for the BEAM, ``scaling.erl``): independent ping-pong pairs, a ring
with several tokens going round, skynet, a gen_server call storm (many
clients, a few servers) and CPU-bound workers running a pure-Python loop.
Each runs at 1, 2, 4, ... schedulers up to the core count, every measurement
in a fresh process (a new VM: nothing warm carried over), the best of
``--repeat`` runs (3; 1 with ``--quick``; ``--median`` for their median,
steadier where other work shares the cores), the repetitions taken in turns so
that a slow spell of a shared machine spreads over every column.  When
``erl`` is installed, ``scaling.erl`` is compiled into a temporary folder and
each measurement is also run on the BEAM with ``erl +S N``.

Prints a Markdown table per workload: schedulers | otpvm | speedup | BEAM |
BEAM speedup, under a header naming the Python build (GIL or free-threaded),
the machine and the date.  ``--json`` writes every run's figures; ``--plot``
draws throughput against schedulers (needs matplotlib: the ``plot`` extra).
``--from`` measures nothing: it prints one table of saved ``--json`` runs, an
otpvm column each (e.g. a GIL build and a free-threaded one) and the BEAM's
from the first that has it, and plots them with ``--plot``.
A measurement that fails is reported on stderr and makes the exit status 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import Figure, _fmt  # noqa: E402

ERL_SOURCE = BENCH_DIR / "scaling.erl"
RUNTIMES = ("otpvm", "beam")
#: Seconds one measurement may take before it counts as failed.
CHILD_TIMEOUT = 600


@dataclass(frozen=True)
class Workload:
    """One scaling workload: its figure, its sizes and the work it does."""

    name: str
    figure: Figure
    full: Mapping[str, int]
    quick: Mapping[str, int]
    #: Describes the sizes, e.g. "16 pairs x 10,000 round trips".
    describe: Callable[[Mapping[str, int]], str]
    #: The units of work done (round trips, actors...), for throughput plots.
    work: Callable[[Mapping[str, int]], int]
    work_unit: str

    def sizes(self, quick: bool) -> Mapping[str, int]:
        """Return the sizes of a quick or a full run."""
        return self.quick if quick else self.full

    def throughput(self, value: float, sizes: Mapping[str, int]) -> float:
        """Return the figure as units of work per second."""
        if self.figure.higher_is_better:
            return value
        return self.work(sizes) / value

    def speedup(self, value: float, base: float) -> float:
        """How many times better ``value`` is than ``base``."""
        return value / base if self.figure.higher_is_better else base / value


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            "pairs",
            Figure("round_trips_per_s", True),
            full={"pairs": 16, "round_trips": 20_000},
            quick={"pairs": 4, "round_trips": 500},
            describe=lambda s: f"{s['pairs']} ping-pong pairs x {s['round_trips']:,} round trips",
            work=lambda s: s["pairs"] * s["round_trips"],
            work_unit="round trips/s",
        ),
        Workload(
            "ring",
            Figure("messages_per_s", True),
            full={"procs": 10_000, "tokens": 16, "rounds": 4},
            quick={"procs": 200, "tokens": 4, "rounds": 2},
            describe=lambda s: (
                f"a ring of {s['procs']:,} processes, {s['tokens']} tokens "
                f"going round {s['rounds']} times"
            ),
            work=lambda s: s["procs"] * s["tokens"] * s["rounds"],
            work_unit="messages/s",
        ),
        Workload(
            "skynet",
            Figure("seconds", False),
            full={"size": 100_000},
            quick={"size": 1_000},
            describe=lambda s: f"skynet {s['size']:,} ({_skynet_actors(s['size']):,} processes)",
            work=lambda s: _skynet_actors(s["size"]),
            work_unit="processes/s",
        ),
        Workload(
            "calls",
            Figure("calls_per_s", True),
            full={"servers": 8, "clients": 128, "calls": 2_500},
            quick={"servers": 2, "clients": 8, "calls": 100},
            describe=lambda s: (
                f"{s['clients']} clients x {s['calls']:,} gen_server calls "
                f"to {s['servers']} servers"
            ),
            work=lambda s: s["clients"] * s["calls"],
            work_unit="calls/s",
        ),
        Workload(
            "cpu",
            Figure("seconds", False),
            full={"workers": 16, "iterations": 400_000},
            quick={"workers": 4, "iterations": 20_000},
            describe=lambda s: f"{s['workers']} CPU-bound workers x {s['iterations']:,} iterations",
            work=lambda s: s["workers"] * s["iterations"],
            work_unit="iterations/s",
        ),
    )
}


def _skynet_actors(size: int) -> int:
    from peers import skynet_actors

    return skynet_actors(size)


# --------------------------------------------------------------------------
# the machine and the builds


def python_build() -> str:
    """Describe this Python: version, and GIL or free-threaded."""
    version = f"{platform.python_implementation()} {platform.python_version()}"
    if not sysconfig.get_config_var("Py_GIL_DISABLED"):
        return f"{version} (GIL)"
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_enabled is not None and is_enabled():
        return f"{version} (free-threaded build, GIL enabled)"
    return f"{version} (free-threaded, GIL disabled)"


def gil_disabled() -> bool:
    """Return True if this interpreter runs without the GIL."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return is_enabled is not None and not is_enabled()


def cpu_model() -> str:
    """Return the CPU's model name from /proc/cpuinfo, or what platform knows."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def otpvm_version() -> str:
    """Return the installed otpvm's version, or a note that none is installed."""
    try:
        return importlib.metadata.version("otpvm")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def default_schedulers() -> list[int]:
    """Return 1, 2, 4, ... below the core count, then the core count."""
    cores = os.cpu_count() or 1
    counts = []
    n = 1
    while n < cores:
        counts.append(n)
        n *= 2
    counts.append(cores)
    return counts


def parse_schedulers(text: str) -> list[int]:
    """Parse ``--schedulers 1,2,8`` into a sorted list of distinct counts."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--schedulers takes counts separated by commas (e.g. 1,2,8), got {text!r}"
        ) from None
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"scheduler counts must be 1 or more, got {text!r}")
    return counts


# --------------------------------------------------------------------------
# the two runtimes, each measurement in a fresh process


class Beam:
    """The BEAM peer: ``scaling.erl`` compiled into a temporary folder."""

    def __init__(self, erl: str, erlc: str) -> None:
        self.erl = erl
        self._dir = tempfile.TemporaryDirectory(prefix="otpvm-scaling-")
        subprocess.run(
            [erlc, "-o", self._dir.name, str(ERL_SOURCE)],
            check=True,
            capture_output=True,
            text=True,
        )
        self.version = self._version()

    @classmethod
    def find(cls) -> Beam | None:
        """Return a ready BEAM peer, or None (with a one-line note) if there is none."""
        erl, erlc = shutil.which("erl"), shutil.which("erlc")
        if erl is None or erlc is None:
            print("note: erl/erlc not found, running otpvm alone", file=sys.stderr)
            return None
        try:
            return cls(erl, erlc)
        except subprocess.CalledProcessError as exc:
            print(f"note: compiling scaling.erl failed, no BEAM:\n{exc.stderr}", file=sys.stderr)
            return None

    def close(self) -> None:
        """Remove the compiled module."""
        self._dir.cleanup()

    def _version(self) -> str:
        out = subprocess.run(
            [
                self.erl,
                "-noshell",
                "-eval",
                'io:format("~s ~s", [erlang:system_info(otp_release), '
                "erlang:system_info(version)]), halt().",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.split()
        return f"Erlang/OTP {out[0]} (erts {out[1]})"

    def command(self, name: str, schedulers: int, sizes: Mapping[str, int]) -> list[str]:
        """Return the command line of one measurement."""
        return [
            self.erl,
            "+S",
            f"{schedulers}:{schedulers}",
            "-noshell",
            "-pa",
            self._dir.name,
            "-run",
            "scaling",
            "main",
            name,
            *(str(v) for v in sizes.values()),
        ]


def otpvm_command(name: str, schedulers: int, sizes: Mapping[str, int]) -> list[str]:
    """Return the command line of one otpvm measurement (this script as a child)."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        name,
        str(schedulers),
        json.dumps(dict(sizes)),
    ]


def measure(cmd: list[str]) -> dict[str, float]:
    """Run one measurement's command; return the figures it printed last."""
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"exit status {proc.returncode}:\n{proc.stderr.strip()}")
    if proc.stderr.strip():
        # A long_schedule report, say: worth seeing beside the figure it spoils.
        print(textwrap.indent(proc.stderr.strip(), "    | "), file=sys.stderr)
    lines = proc.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"no figures printed:\n{proc.stderr.strip()}")
    figures: dict[str, float] = json.loads(lines[-1])
    return figures


def child_main(argv: list[str]) -> None:
    """Entry point of one otpvm measurement: run it, print its figures as JSON."""
    name, schedulers, sizes = argv
    from peers import otpvm_scaling

    fn = otpvm_scaling.WORKLOADS[name]
    print(json.dumps(fn(schedulers=int(schedulers), **json.loads(sizes))))


# --------------------------------------------------------------------------
# running and reporting

#: results[workload][runtime][schedulers] -> the figures of every run
Results = dict[str, dict[str, dict[int, list[dict[str, float]]]]]


def run_all(
    names: Sequence[str],
    counts: Sequence[int],
    repeat: int,
    quick: bool,
    beam: Beam | None,
) -> tuple[Results, list[str]]:
    """Take every measurement ``repeat`` times, in turns; return the runs and failures."""
    results: Results = {n: {rt: {s: [] for s in counts} for rt in RUNTIMES} for n in names}
    failures: list[str] = []
    commands: dict[str, Callable[[str, int, Mapping[str, int]], list[str]]] = {
        "otpvm": otpvm_command
    }
    if beam is not None:
        commands["beam"] = beam.command
    for rep in range(repeat):
        for name in names:
            sizes = WORKLOADS[name].sizes(quick)
            key = WORKLOADS[name].figure.key
            for s in counts:
                for runtime, command in commands.items():
                    label = f"{name}/{runtime}/{s}"
                    try:
                        figures = measure(command(name, s, sizes))
                    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as exc:
                        failures.append(label)
                        print(f"  {label} FAILED: {exc}", file=sys.stderr, flush=True)
                        continue
                    results[name][runtime][s].append(figures)
                    print(
                        f"  [{rep + 1}/{repeat}] {name:<6} {runtime:<5} S={s:<3} "
                        f"{key}={figures[key]:.4g}",
                        file=sys.stderr,
                        flush=True,
                    )
    return results, failures


def summary(workload: Workload, runs: list[dict[str, float]], median: bool) -> float:
    """Return the best (or the median) value of the workload's figure over ``runs``.

    NaN if there are none.
    """
    values = [r[workload.figure.key] for r in runs]
    if median:
        return statistics.median(values) if values else math.nan
    return workload.figure.best(values)


def check_results(results: Results, quick: bool) -> list[str]:
    """Check what runs computed (the cpu loop's result); return the mismatches."""
    if "cpu" not in results:
        return []
    from peers import spin

    expected = spin(WORKLOADS["cpu"].sizes(quick)["iterations"])
    return [
        f"cpu/{runtime}/{s}: result {run['result']} != {expected}"
        for runtime, per_count in results["cpu"].items()
        for s, runs in per_count.items()
        for run in runs
        if run.get("result") != expected
    ]


def gil_came_back(results: Results) -> bool:
    """Return True if any otpvm measurement ran with the GIL on."""
    return any(
        run.get("gil_enabled")
        for per_runtime in results.values()
        for runs in per_runtime["otpvm"].values()
        for run in runs
    )


def markdown_tables(results: Results, quick: bool, median: bool) -> str:
    """Render one Markdown table per workload: otpvm and BEAM, with speedups."""
    out = []
    for name, per_runtime in results.items():
        workload = WORKLOADS[name]
        sizes = workload.sizes(quick)
        counts = sorted(per_runtime["otpvm"])
        base = counts[0]
        out.append(f"{name}: {workload.describe(sizes)} ({workload.figure.label})\n")
        out.append(f"| schedulers | otpvm | speedup vs {base} | BEAM | BEAM speedup |")
        out.append("| ---: | ---: | ---: | ---: | ---: |")
        bests = {
            rt: {s: summary(workload, runs, median) for s, runs in per_runtime[rt].items()}
            for rt in RUNTIMES
        }
        for s in counts:
            cells = [str(s)]
            for rt in RUNTIMES:
                value, first = bests[rt].get(s, math.nan), bests[rt].get(base, math.nan)
                speedup = workload.speedup(value, first)
                cells.append(_fmt(value))
                cells.append("-" if math.isnan(speedup) else f"{speedup:.2f}x")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def header(beam: Beam | None, counts: Sequence[int], repeat: int, quick: bool, median: bool) -> str:
    """The lines above the tables: the builds, the machine, the date, how it was run."""
    beam_text = beam.version if beam is not None else "not run (no erl)"
    return (
        f"otpvm {otpvm_version()} on {python_build()}; BEAM: {beam_text}\n"
        f"{os.cpu_count()} CPUs ({cpu_model()}), {platform.system()} {platform.machine()}; "
        f"{datetime.date.today().isoformat()}; schedulers {', '.join(map(str, counts))}; "
        f"{'median' if median else 'best'} of {repeat}{', quick sizes' if quick else ''}; "
        "each measurement in a fresh process\n"
    )


def as_saved(results: Results, beam: Beam | None, args: argparse.Namespace) -> dict[str, Any]:
    """Return every run's figures, with what they were measured on (``--json``'s content)."""
    return {
        "python": python_build(),
        "gil_disabled": gil_disabled(),
        "otpvm": otpvm_version(),
        "beam": beam.version if beam is not None else None,
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model(),
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "repeat": args.repeat,
        "sizes": {n: dict(WORKLOADS[n].sizes(args.quick)) for n in results},
        "results": {
            name: {
                rt: {str(s): runs for s, runs in per_count.items()}
                for rt, per_count in per_runtime.items()
            }
            for name, per_runtime in results.items()
        },
    }


def short_build(saved: Mapping[str, Any]) -> str:
    """Return a saved run's Python version, with a ``t`` if it ran free-threaded."""
    version = saved["python"].split()[1]
    return f"{version}t" if saved["gil_disabled"] else version


def series(
    saved: Sequence[Mapping[str, Any]], name: str
) -> list[tuple[str, Mapping[str, Any], str]]:
    """Return (label, saved run, runtime) for each line of a workload: otpvm per run, one BEAM."""
    out: list[tuple[str, Mapping[str, Any], str]] = [
        (f"otpvm {short_build(d)}", d, "otpvm") for d in saved if name in d["results"]
    ]
    with_beam = [d for d in saved if any(d["results"].get(name, {}).get("beam", {}).values())]
    if with_beam:
        out.append(("BEAM", with_beam[0], "beam"))
    return out


def combined_table(saved: Sequence[Mapping[str, Any]], median: bool) -> str:
    """One Markdown table of saved runs: a row per workload and count, a column pair per line."""
    names = [n for n in WORKLOADS if any(n in d["results"] for d in saved)]
    labels = [label for label, _, _ in series(saved, names[0])] if names else []
    lines = [
        "| workload | figure | schedulers | "
        + " | ".join(f"{lb} | speedup" for lb in labels)
        + " |",
        "| --- | --- | ---: | " + " | ".join("---: | ---:" for _ in labels) + " |",
    ]
    for name in names:
        workload = WORKLOADS[name]
        lines_of = series(saved, name)
        counts = sorted({int(s) for _, d, rt in lines_of for s in d["results"][name][rt]})
        for s in counts:
            cells = [name, workload.figure.label, str(s)]
            for _, d, rt in lines_of:
                per_count = d["results"][name][rt]
                value = summary(workload, per_count.get(str(s), []), median)
                first = summary(workload, per_count.get(str(counts[0]), []), median)
                speedup = workload.speedup(value, first)
                cells += [_fmt(value), "-" if math.isnan(speedup) else f"{speedup:.2f}x"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(path: Path, saved: Sequence[Mapping[str, Any]], median: bool) -> None:
    """Plot throughput against schedulers per workload from saved JSON runs.

    One otpvm line per saved run (labelled with its Python build) and the
    BEAM's line from the first run that has one.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in WORKLOADS if any(n in d["results"] for d in saved)]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        workload = WORKLOADS[name]
        for label, data, rt in series(saved, name):
            sizes = data["sizes"][name]
            points = sorted(
                (int(s), workload.throughput(summary(workload, runs, median), sizes))
                for s, runs in data["results"][name][rt].items()
                if runs
            )
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        shown = next(d["sizes"][name] for d in saved if name in d["sizes"])
        ax.set_title(f"{name}: {workload.describe(shown)}", fontsize=8)
        ax.set_xscale("log", base=2)
        counts = sorted(
            {int(c) for _, d, rt in series(saved, name) for c in d["results"][name][rt]}
        )
        ax.set_xticks(counts, [str(c) for c in counts])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_xlabel("schedulers")
        ax.set_ylabel(workload.work_unit)
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=8)
    first = saved[0]
    fig.suptitle(
        f"{first['cpus']} CPUs ({first['cpu_model']}), {first['date']}; "
        f"{'median' if median else 'best'} of {first['repeat']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--schedulers",
        type=parse_schedulers,
        default=None,
        help="scheduler counts, e.g. 1,2,8 (default: 1, 2, 4, ... up to the core count)",
    )
    p.add_argument("--repeat", type=int, default=None, help="runs to take the best of (3)")
    p.add_argument(
        "--median",
        action="store_true",
        help="report the median of the runs, not the best (steadier on a shared machine)",
    )
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run of seconds")
    p.add_argument(
        "--only",
        action="append",
        choices=list(WORKLOADS),
        metavar="NAME",
        help=f"run only this workload (repeatable); one of {', '.join(WORKLOADS)}",
    )
    p.add_argument("--no-beam", action="store_true", help="leave the BEAM out")
    p.add_argument("--json", type=Path, default=None, help="write every run's figures to FILE")
    p.add_argument("--plot", type=Path, default=None, help="plot throughput to FILE.png")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        type=Path,
        default=None,
        metavar="FILE",
        help="measure nothing: one table (and --plot) of these saved --json runs",
    )
    args = p.parse_args(argv)
    if args.repeat is not None and args.repeat < 1:
        p.error(f"--repeat must be 1 or more, got {args.repeat}")
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        p.error("--plot needs matplotlib: pip install 'otpvm[plot]' (or pip install matplotlib)")
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the tables, write the JSON and plot; return the exit status."""
    args = parse_args(argv)
    if args.sources:
        runs = [json.loads(path.read_text()) for path in args.sources]
        print(combined_table(runs, args.median))
        if args.plot is not None:
            plot(args.plot, runs, args.median)
        return 0
    counts = args.schedulers or default_schedulers()
    names = args.only or list(WORKLOADS)
    beam = None if args.no_beam else Beam.find()
    try:
        t0 = time.perf_counter()
        results, failures = run_all(names, counts, args.repeat, args.quick, beam)
        print(f"  total {time.perf_counter() - t0:.1f} s\n", file=sys.stderr)
        saved = as_saved(results, beam, args)
        if args.json is not None:  # first: the runs are kept whatever follows
            args.json.write_text(json.dumps(saved, indent=1) + "\n")
        failures += check_results(results, args.quick)
        print(header(beam, counts, args.repeat, args.quick, args.median))
        print(markdown_tables(results, args.quick, args.median))
        if gil_disabled() and gil_came_back(results):
            print("warning: the GIL was on in the VM's process (an extension turned it on)")
        if args.plot is not None:
            plot(args.plot, [saved], args.median)
    finally:
        if beam is not None:
            beam.close()
    if failures:
        print(f"Failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child_main(sys.argv[2:])
    else:
        sys.exit(main())
