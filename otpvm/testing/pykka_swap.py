"""pytest plugin: pykka's own test suite on otpvm.pykka.

``pytest -p otpvm.testing.pykka_swap tests`` in an unpacked pykka sdist.
pykka's ``tests/conftest.py`` builds its ``threading`` runtime from
``pykka.ThreadingActor`` and ``pykka.ThreadingFuture`` when it is imported;
this plugin is imported first and rebinds both to otpvm's, so every
runtime-parametrized test runs on otpvm processes.  The tests listed in
``EXCLUDED`` check what only a thread per actor has, and are deselected.
"""

from __future__ import annotations

import logging
from importlib.metadata import version

import pykka
import pytest

import otpvm.pykka

# Each excluded test, by node id suffix, with why it cannot apply.
EXCLUDED = {
    "tests/test_threading_actor.py::test_actor_thread_is_named_after_pykka_actor_class":
        "asserts the name of a thread of the actor's own: otpvm actors run on scheduler threads",
    "tests/test_threading_actor.py::test_actor_thread_is_not_daemonic_by_default":
        "asserts the daemon flag of the actor's own thread (there is none)",
    "tests/test_threading_actor.py::test_actor_thread_is_daemonic_if_use_daemon_thread_flag_is_set":
        "the same daemon flag, with use_daemon_thread (accepted and ignored on otpvm)",
}

pykka.ThreadingActor = otpvm.pykka.ThreadingActor        # type: ignore[misc, assignment]
pykka.ThreadingFuture = otpvm.pykka.ThreadingFuture      # type: ignore[misc, assignment]


class _LongSchedules(logging.Handler):
    """Counts otpvm's long_schedule reports: a pykka handler that blocks is
    in a blocking section, so none is expected."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("long_schedule"):
            self.count += 1


_long_schedules = _LongSchedules()
logging.getLogger("otpvm").addHandler(_long_schedules)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Says how many long_schedule reports otpvm made during the run."""
    terminalreporter.write_line(f"otpvm: {_long_schedules.count} long_schedule reports")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects the excluded tests (reported as deselected, with the count)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if _excluded(item.nodeid) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _excluded(nodeid: str) -> bool:
    base = nodeid.split("[", 1)[0]
    return any(base.endswith(name) for name in EXCLUDED)


def pytest_report_header(config: pytest.Config) -> str:
    """Says, at the top of the run, that the actors are otpvm's."""
    return (f"otpvm.testing.pykka_swap: pykka {version('pykka')}'s actors run as otpvm "
            f"processes; {len(EXCLUDED)} tests deselected (thread introspection)")
