"""pytest configuration for the otpvm benchmark suite.

Run with ``pytest benchmarks/ --benchmark-only``.  Sizes are the full ones
used by ``compare.py``; set ``OTPVM_BENCH_QUICK=1`` for the small CI sizes and
``OTPVM_BENCH_SCHEDULERS=N`` to choose otpvm's scheduler count.

Each benchmark test records its figures through the ``record_figures``
fixture; at the end of the session :func:`pytest_terminal_summary` prints the
same Markdown table as ``compare.py``, with the ratio otpvm/asyncio per
workload.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from harness import WORKLOADS, markdown_table

#: figures[workload][runtime] -> {figure: value}, filled in by the tests.
Results = dict[str, dict[str, dict[str, float]]]
RecordFn = Callable[[str, str, dict[str, float]], None]

_RESULTS_KEY = pytest.StashKey[Results]()


def bench_quick() -> bool:
    """Return True when the small (CI) sizes were asked for."""
    return os.environ.get("OTPVM_BENCH_QUICK", "") not in ("", "0")


def bench_schedulers() -> int | None:
    """Return otpvm's scheduler count from the environment, or None (VM default)."""
    value = os.environ.get("OTPVM_BENCH_SCHEDULERS", "")
    return int(value) if value else None


def pytest_configure(config: pytest.Config) -> None:
    """Create the session-wide store of benchmark figures."""
    config.stash[_RESULTS_KEY] = {}


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> RecordFn:
    """Return a function that stores one test's figures for the summary."""
    results = request.config.stash[_RESULTS_KEY]

    def record(workload: str, runtime: str, figures: dict[str, float]) -> None:
        results.setdefault(workload, {})[runtime] = figures

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print the otpvm/asyncio comparison table for the workloads that ran."""
    results = config.stash.get(_RESULTS_KEY, {})
    if not results:
        return
    ordered = {name: results[name] for name in WORKLOADS if name in results}
    terminalreporter.write_sep("=", "otpvm vs asyncio (ratio otpvm/asyncio)")
    terminalreporter.write_line(markdown_table(ordered))
    terminalreporter.write_line(
        f"{'quick' if bench_quick() else 'full'} sizes; ↑ higher is better, ↓ lower is better."
    )
