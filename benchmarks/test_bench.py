"""pytest-benchmark suite: every workload on every runtime.

``pytest benchmarks/ --benchmark-only`` times each workload with
``benchmark.pedantic`` (a few rounds, one iteration each, no warm-up) on
otpvm, asyncio and uvloop; a runtime that is not importable is skipped.  The
workloads' own figures (round trips/s, hops/s, bytes per process...) go into
``extra_info`` and into the summary table printed by ``conftest.py``.

There are no timing assertions: only correctness checks.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import RecordFn, bench_quick, bench_schedulers
from harness import RUNTIME_NAMES, WORKLOADS, available_runtimes, best_of, run_isolated
from peers import skynet_expected


@pytest.fixture(scope="module")
def runtimes() -> dict[str, Any]:
    """Return the runtimes importable here, with their workload functions."""
    return available_runtimes(bench_schedulers())


@pytest.mark.parametrize("runtime", RUNTIME_NAMES)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_workload(
    benchmark: Any,
    runtimes: dict[str, Any],
    record_figures: RecordFn,
    workload: str,
    runtime: str,
) -> None:
    """Benchmark one workload on one runtime and record its figures."""
    if runtime not in runtimes:
        pytest.skip(f"{runtime} is not available")
    spec = WORKLOADS[workload]
    quick = bench_quick()
    sizes = spec.sizes(quick)
    fn = runtimes[runtime][workload]
    runs: list[dict[str, float]] = []

    def once() -> dict[str, float]:
        figures = fn(**sizes)
        runs.append(figures)
        return figures

    benchmark.group = workload
    benchmark.pedantic(once, rounds=spec.runs(quick), iterations=1, warmup_rounds=0)
    figures = best_of(spec, runs)

    if spec.isolated:
        # Memory figures are only sound in a fresh interpreter (see harness).
        fresh = run_isolated(runtime, workload, sizes, bench_schedulers())
        figures.update({k: v for k, v in fresh.items() if k.startswith("bytes_")})
    if workload == "skynet":
        assert figures["sum"] == skynet_expected(sizes["size"])

    benchmark.extra_info.update(figures)
    record_figures(workload, runtime, figures)
