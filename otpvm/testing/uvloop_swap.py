"""pytest plugin: uvloop's cross-loop tests on otpvm.aio.

``PYTHONSAFEPATH=1 python -m pytest -p otpvm.testing.uvloop_swap -k "_AIO_ or
BaseAIO or AIOSockets or AIOExecutors" tests`` in an unpacked uvloop sdist,
with uvloop's wheel installed (its tests import ``uvloop._testbase``; with
PYTHONSAFEPATH the sdist's own ``uvloop/`` sources, which lack the compiled
loop, do not shadow it, in pytest nor in the tests' child Pythons; the
test extra's aiohttp, psutil and pyOpenSSL installed).  uvloop keeps each test
in a mixin and runs it twice: on uvloop (``tb.UVTestCase``) and on stock
asyncio (``tb.AIOTestCase``).  The AIO classes, as shipped, are the
reference; this plugin rebinds ``AIOTestCase``'s loop and policy factories
to otpvm.aio's, so the same test ids run on otpvm.aio and the counts
compare one to one.  The UV-only classes are not selected at all.

What else is rebound, each because the test asks "is this asyncio's loop?",
and otpvm.aio's loop is asyncio's own ``SelectorEventLoop`` code:

* ``BaseTestCase.is_asyncio_loop`` (uvloop reads the loop's module name,
  ``asyncio.*``) also answers yes for ``otpvm.aio.Loop``;
* ``NEW_LOOP``, the expression the signal tests' child programs build their
  loop with (``asyncio.new_event_loop()`` in the AIO class), builds an
  otpvm.aio loop, so that those children run on otpvm too.

The tests listed in ``EXCLUDED`` are deselected, each with its reason.
"""

from __future__ import annotations

import asyncio
from importlib.metadata import version
from typing import Any

import pytest
from uvloop import _testbase as tb

import otpvm.aio

# Each excluded test, by node id suffix, with why it cannot apply.
EXCLUDED: dict[str, str] = {
    "tests/test_signals.py::Test_AIO_Signals::test_signals_sigint_pycode_stop":
        "a SIGINT during a callback blocked in time.sleep(200): Python raises KeyboardInterrupt "
        "only on the main thread, which waits in run_forever while the callback runs on a "
        "scheduler thread, so the sleep is not interrupted and the loop stops (raising it) only "
        "when it returns, 200 s later",
    "tests/test_signals.py::Test_AIO_Signals::test_signals_sigint_pycode_continue":
        "expects the KeyboardInterrupt of a SIGINT raised inside a callback blocked in "
        "time.sleep(200), for it to catch; the callback runs on a scheduler thread, where Python "
        "raises no signal's exception",
}

# The expression the AIO signal tests' child programs make their loop with.
_STOCK_NEW_LOOP = "asyncio.new_event_loop()"
_OTPVM_NEW_LOOP = "__import__('otpvm.aio').aio.new_event_loop()"


class _Policy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, whose new loops are otpvm.aio's."""

    _loop_factory = otpvm.aio.Loop


def _new_loop(self: tb.AIOTestCase) -> otpvm.aio.Loop:
    return otpvm.aio.new_event_loop()


def _new_policy(self: tb.AIOTestCase) -> asyncio.AbstractEventLoopPolicy:
    return _Policy()


_stock_is_asyncio_loop = tb.BaseTestCase.is_asyncio_loop


def _is_asyncio_loop(self: tb.BaseTestCase) -> bool:
    return isinstance(self.loop, otpvm.aio.Loop) or _stock_is_asyncio_loop(self)


tb.AIOTestCase.new_loop = _new_loop                 # type: ignore[method-assign]
tb.AIOTestCase.new_policy = _new_policy             # type: ignore[method-assign]
tb.BaseTestCase.is_asyncio_loop = _is_asyncio_loop  # type: ignore[method-assign]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselects the excluded tests (reported as deselected, with the count),
    and points the AIO signal tests' child programs at otpvm.aio."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (dropped if _excluded(item.nodeid) else kept).append(item)
        cls: Any = getattr(item, "cls", None)
        if cls is not None and issubclass(cls, tb.AIOTestCase) \
                and getattr(cls, "NEW_LOOP", None) == _STOCK_NEW_LOOP:
            cls.NEW_LOOP = _OTPVM_NEW_LOOP
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def _excluded(nodeid: str) -> bool:
    base = nodeid.split("[", 1)[0]
    return any(base.endswith(name) for name in EXCLUDED)


def pytest_report_header(config: pytest.Config) -> str:
    """Says, at the top of the run, that the AIO classes run on otpvm.aio."""
    return (f"otpvm.testing.uvloop_swap: uvloop {version('uvloop')}'s AIO test classes run "
            f"on otpvm.aio; {len(EXCLUDED)} tests deselected")
