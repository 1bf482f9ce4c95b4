"""CPython's own concurrent.futures suite, run against otpvm.futures.Executor.

CPython 3.13's ``test.test_concurrent_futures`` builds its generic tests
from mixins with ``util.create_executor_tests``; here they are built twice:
with ``OtpvmMixin`` (the executor under test) and with CPython's
``ThreadPoolMixin`` (the reference run, same machine, same Python).  pytest
``test_counts`` runs both sets (``Otpvm*Test`` and ``ThreadPool*Test``)
through unittest and names every failing test: otpvm must pass at least as
many as the reference minus the named exclusions, and for the 3.13 releases
listed in ``expected.json`` exactly the counts recorded there.

Only Python 3.13 is used: its pyenv build ships the ``test`` package, and
the suite differs between versions (the counts are 3.13's).
"""

import json
import platform
import sys
import threading
import unittest
from pathlib import Path

import pytest

if sys.version_info[:2] != (3, 13):
    pytest.skip("CPython's concurrent.futures suite is pinned to 3.13's "
                "test.test_concurrent_futures (the expected counts are 3.13's)",
                allow_module_level=True)
try:
    from test.test_concurrent_futures import util
    from test.test_concurrent_futures.executor import ExecutorTest
    from test.test_concurrent_futures.test_as_completed import AsCompletedTests
    from test.test_concurrent_futures.test_init import (
        FailingInitializerMixin,
        InitializerMixin,
    )
    from test.test_concurrent_futures.test_shutdown import ExecutorShutdownTest
    from test.test_concurrent_futures.test_wait import WaitTests
except ImportError as exc:      # a Python built without its test package
    pytest.skip(f"this Python has no test.test_concurrent_futures ({exc})",
                allow_module_level=True)

import otpvm.futures

EXPECTED = json.loads((Path(__file__).parent / "expected.json").read_text())

# Tests that cannot apply to otpvm's executor, with why.  They are skipped
# for otpvm only; the reference run keeps them.
EXCLUDED = {
    "test_interpreter_shutdown":
        "runs `python -c 'from concurrent.futures import <executor_type.__name__>'` in a "
        "subprocess: for otpvm that names concurrent.futures.Executor, the abstract base",
    "test_submit_after_interpreter_shutdown":
        "the same subprocess import of `concurrent.futures.<executor_type.__name__>`",
    "test_hang_gh83386":
        "the same subprocess import of `concurrent.futures.<executor_type.__name__>`",
}
assert set(EXCLUDED) == set(EXPECTED["excluded"]), "expected.json and EXCLUDED disagree"
# The suite changes between 3.13 releases (3.13.15's has one test more):
# exact counts for the releases measured, the relative check for any.
COUNTS = EXPECTED["counts"].get(platform.python_version())

MIXINS = (ExecutorTest, WaitTests, AsCompletedTests, ExecutorShutdownTest,
          InitializerMixin, FailingInitializerMixin)


class OtpvmMixin(util.ExecutorMixin):
    """CPython's executor fixture, with otpvm's Executor (on the default VM)."""

    executor_type = otpvm.futures.Executor

    def create_event(self):
        # Later 3.13 releases' WaitTests ask the mixin for an event its jobs
        # can wait on: the tests' jobs are sync, run on threads.
        return threading.Event()


# Built into a private namespace, not this module's globals: pytest would
# collect them and every test would run twice (the suite takes ~20 s a set,
# a sixth of it test_map_timeout's sleeps); test_counts runs each set once
# and names every failing test.
_classes: dict = {"__name__": __name__}
for _mixin in MIXINS:
    util.create_executor_tests(_classes, _mixin, executor_mixins=(OtpvmMixin,))
    util.create_executor_tests(_classes, _mixin, executor_mixins=(util.ThreadPoolMixin,))

OTPVM_CLASSES = [v for k, v in sorted(_classes.items()) if k.startswith("Otpvm")]
REFERENCE_CLASSES = [v for k, v in sorted(_classes.items()) if k.startswith("ThreadPool")]
assert len(OTPVM_CLASSES) == len(REFERENCE_CLASSES) == len(MIXINS)

# On the generated classes themselves: their mixin comes first in the MRO.
for _cls in OTPVM_CLASSES:
    for _name, _reason in EXCLUDED.items():
        if hasattr(_cls, _name):
            setattr(_cls, _name, unittest.skip(f"excluded: {_reason}")(lambda self: None))
del _cls, _mixin, _name, _reason     # a TestCase left in globals would be collected


# The default VM lives until exit: stopped after this module (conftest.py).
pytestmark = pytest.mark.usefixtures("stop_default_vm")


def _run(classes):
    """(passed, skipped, problems) of the classes' tests, run by unittest."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in classes)
    result = unittest.TestResult()
    suite.run(result)
    problems = [f"{t.id()}: {tb.strip().splitlines()[-1]}"
                for t, tb in result.failures + result.errors]
    skipped = len(result.skipped)
    for t, why in result.skipped:
        print(f"skipped {t.id()}: {why}")
    passed = result.testsRun - skipped - len(problems) - len(result.expectedFailures)
    return passed, skipped, problems


def test_counts():
    """otpvm passes what the reference passes, less the named exclusions."""
    ref_passed, ref_skipped, ref_problems = _run(REFERENCE_CLASSES)
    passed, skipped, problems = _run(OTPVM_CLASSES)
    print(f"\nreference (ThreadPoolExecutor): {ref_passed} passed, {ref_skipped} skipped; "
          f"otpvm: {passed} passed, {skipped} skipped ({len(EXCLUDED)} excluded)")
    assert not ref_problems, ref_problems
    assert not problems, problems
    assert passed >= ref_passed - len(EXCLUDED)
    if COUNTS is not None:
        assert (ref_passed, passed) == (COUNTS["reference_passed"], COUNTS["otpvm_passed"])
