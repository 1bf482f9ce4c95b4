"""pytest plugin: AnyIO's own test suite on otpvm.aio's event loop.

``pytest -p otpvm.testing.anyio_swap -k "not trio and not uvloop and not eager
and not ipv6" tests`` in an unpacked AnyIO sdist (tests/peers/suites.json
has the arguments CI uses).  AnyIO's ``tests/conftest.py`` parametrizes its
``anyio_backend`` fixture over loop variants; the plain one, id ``asyncio``,
is ``("asyncio", {"debug": True})``: asyncio's own loop.  When that conftest
is registered, this plugin (imported first) adds ``"loop_factory":
otpvm.aio.new_event_loop`` to that parameter's options, so every test of
that id runs on otpvm's loop, and its ``asyncio_event_loop`` fixture (a loop
for the tests that run one by hand) makes otpvm's loop too.  The test ids
are those of the run as shipped, so the two runs' counts compare one for
one; the other variants (trio, uvloop, eager tasks) are deselected by ``-k``
in both.  The tests listed in ``EXCLUDED`` check what only asyncio's own
loop has (its code runs on the thread that called ``run_forever``), and are
deselected.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Iterator
from importlib.metadata import version
from types import ModuleType
from typing import Any

import pytest

import otpvm.aio

# Each excluded test, by node id (the variant's id included), with why it
# cannot apply.  All check which thread runs the loop's code: asyncio's loop
# runs it on the thread that called run_forever, otpvm.aio's on a scheduler
# thread (the loop is a process; otpvm/aio.py says so).
_MAIN_THREAD = ("asserts that what a worker thread hands the loop (from_thread.run, "
                "run_sync, a portal's call) runs on the main thread, which called run: on "
                "otpvm.aio it runs on a scheduler thread")
EXCLUDED = {
    "tests/test_from_thread.py::TestRunAsyncFromThread::test_run_corofunc_from_thread[asyncio]":
        _MAIN_THREAD,
    "tests/test_from_thread.py::TestRunAsyncFromThread::test_run_sync_from_thread[asyncio]":
        _MAIN_THREAD,
    "tests/test_from_thread.py::TestRunAsyncFromThread::"
    "test_run_async_from_thread_exception[asyncio]":
        _MAIN_THREAD + " (the assertion fails before the TypeError it expects)",
    "tests/test_from_thread.py::TestRunAsyncFromThread::"
    "test_run_sync_from_thread_exception[asyncio]":
        _MAIN_THREAD + " (the assertion fails before the TypeError it expects)",
    "tests/test_from_thread.py::TestBlockingPortal::test_call_corofunc[asyncio]": _MAIN_THREAD,
    "tests/test_from_thread.py::TestBlockingPortal::test_call_non_corofunc[asyncio]": _MAIN_THREAD,
    "tests/test_from_thread.py::TestBlockingPortal::test_start_with_thread_name[asyncio]":
        "asserts that the portal's code runs on the thread named 'foo' that start_blocking_portal "
        "made to run the loop: on otpvm.aio it runs on a scheduler thread",
}

# The id of the parameter of AnyIO's conftest whose loop becomes otpvm's.
PARAM_ID = "asyncio"


class _LongSchedules(logging.Filter):
    """Counts otpvm's long_schedule reports (a callback or task step that
    held the loop's scheduler thread past slice_limit), by the test running
    when each was written, and keeps them out of the tests' logs, as AnyIO's
    conftest keeps asyncio's slow-callback warnings out: otpvm writes them
    from a thread of its own, at any time, and a test that counts the log
    records it captures (test_pytest_plugin.py::test_asyncio) would count one
    written for an earlier test's overrun."""

    def __init__(self) -> None:
        super().__init__()
        self.test = ""
        self.by_test: Counter[str] = Counter()
        self.in_summaries = 0           # "N more long schedules ... not reported one by one"

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("long_schedule"):
            return True
        summary = re.match(r"long_schedule: (\d+) more long schedules", message)
        if summary:
            self.in_summaries += int(summary.group(1))
        else:
            self.by_test[self.test] += 1
        return False


_long_schedules = _LongSchedules()
logging.getLogger("otpvm").addFilter(_long_schedules)
_swapped: list[str] = []        # the conftests whose parameter was swapped


def _swap(conftest: ModuleType) -> bool:
    """Gives this conftest's ``asyncio`` parameter otpvm's loop (its options
    dict is shared by every test of that id, so it is changed in place), and
    its ``asyncio_event_loop`` fixture too.  False: the conftest has no such
    parameter."""
    for param in getattr(conftest, "asyncio_params", ()):
        if getattr(param, "id", None) != PARAM_ID:
            continue
        (backend,) = param.values
        name, options = backend
        if name != "asyncio" or not isinstance(options, dict) or "loop_factory" in options:
            raise pytest.UsageError(f"otpvm.testing.anyio_swap: {conftest.__name__}'s "
                                    f"{PARAM_ID!r} parameter is {backend!r}: not asyncio's "
                                    "own loop; this AnyIO's conftest differs from 4.16's")
        options["loop_factory"] = otpvm.aio.new_event_loop
        if hasattr(conftest, "asyncio_event_loop"):
            # pytest reads a conftest's fixtures after this hook (tryfirst).
            vars(conftest)["asyncio_event_loop"] = pytest.fixture(
                name="asyncio_event_loop")(_event_loop)
        return True
    return False


def _event_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """AnyIO's ``asyncio_event_loop`` fixture (a new loop of asyncio's, for
    the tests that run one by hand), on otpvm.aio's loop."""
    loop = otpvm.aio.new_event_loop()
    yield loop
    loop.close()


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin: Any) -> None:
    """When AnyIO's tests/conftest.py is registered (before pytest reads its
    fixtures): swaps its parameter and fixture."""
    if isinstance(plugin, ModuleType) and plugin.__file__ and _swap(plugin):
        _swapped.append(plugin.__file__)


def pytest_collection_finish(session: pytest.Session) -> None:
    """Refuses a run where no conftest had the parameter: it would test
    asyncio's own loop under otpvm's name."""
    if not _swapped:
        raise pytest.UsageError("otpvm.testing.anyio_swap: no conftest with AnyIO's "
                                f"{PARAM_ID!r} anyio_backend parameter was loaded")


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
    return any(nodeid.endswith(name) for name in EXCLUDED)


def pytest_runtest_logstart(nodeid: str) -> None:
    """Notes the test now running, for the long_schedule count."""
    _long_schedules.test = nodeid


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Says how many long_schedule reports otpvm wrote during the run, and
    during which tests."""
    counts = _long_schedules.by_test
    terminalreporter.write_line(f"otpvm: {sum(counts.values())} long_schedule reports, and "
                                f"{_long_schedules.in_summaries} more in burst summaries")
    for test, count in sorted(counts.items()):
        terminalreporter.write_line(f"  {count} during {test}")


def pytest_report_header(config: pytest.Config) -> str:
    """Says, at the top of the run, which loop the asyncio tests run on."""
    return (f"otpvm.testing.anyio_swap: AnyIO {version('anyio')}'s [{PARAM_ID}] tests run on "
            f"otpvm.aio's loop; {len(EXCLUDED)} tests deselected")
