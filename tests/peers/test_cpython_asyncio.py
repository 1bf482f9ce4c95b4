"""CPython's own per-loop asyncio tests, run against otpvm.aio's loop.

CPython's ``test.test_asyncio`` keeps the tests every event loop must pass
in mixins with a ``create_event_loop`` hook (``EventLoopTestsMixin``,
``SubprocessTestsMixin``, ``BaseSockTestsMixin``, ``BaseStartServer``,
``BaseTestBufferedProtocol``); CPython itself runs them on each of its loops.
Here each is run twice in the same test: on ``asyncio.SelectorEventLoop``
(the reference, whose code otpvm's loop reuses) and on
``otpvm.aio.new_event_loop()``.  otpvm's must pass every test the
reference passes, less the tests named in EXCLUDED_FREE_THREADED on a
free-threaded build.  Any Python whose build ships its ``test`` package.
"""

import asyncio
import sys
import unittest

import pytest

try:
    from test.test_asyncio import test_buffered_proto, test_events, test_server, test_sock_lowlevel
    from test.test_asyncio import utils as test_utils
except ImportError as exc:      # a Python built without its test package
    pytest.skip(f"this Python has no test.test_asyncio ({exc})", allow_module_level=True)

import otpvm
import otpvm.aio

MIXINS = {
    "EventLoopTests": (test_events.EventLoopTestsMixin, test_events.SubprocessTestsMixin),
    "SockTests": (test_sock_lowlevel.BaseSockTestsMixin,),
    "StartServer": (test_server.BaseStartServer,),
    "BufferedProtocol": (test_buffered_proto.BaseTestBufferedProtocol,),
}

pytestmark = pytest.mark.usefixtures("stop_default_vm")

FREE_THREADED = not getattr(sys, "_is_gil_enabled", lambda: True)()

# Tests that cannot apply to otpvm's loop on a free-threaded build, with why;
# skipped for otpvm only there (the reference run keeps them).
EXCLUDED_FREE_THREADED = {
    "test_run_until_complete_nesting":
        "expects the RuntimeWarning of a never-awaited coroutine inside its assertWarns: the "
        "coroutine was made on the loop's scheduler thread and is dropped on the test's, and a "
        "free-threaded build frees an object dropped by another thread later, on the thread that "
        "made it (biased reference counting), after assertWarns has ended",
}


def _case(name, mixins, factory, excluded=()):
    # Both hooks: the mixins name it create_event_loop, or new_loop.
    body = {"create_event_loop": lambda self: factory(), "new_loop": lambda self: factory()}
    for test in excluded:
        if any(hasattr(m, test) for m in mixins):
            body[test] = unittest.skip(f"excluded: {excluded[test]}")(lambda self: None)
    return type(name, (*mixins, test_utils.TestCase), body)


def _run(case):
    """(passed, problems) of a TestCase's tests, run by unittest."""
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(case).run(result)
    problems = [f"{t.id()}: {tb.strip().splitlines()[-1]}"
                for t, tb in result.failures + result.errors]
    return result.testsRun - len(result.skipped) - len(problems), problems


LOOPS = {"loop": otpvm.aio.new_event_loop, "process_task_loop": otpvm.aio.new_process_task_loop}


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("name", sorted(MIXINS))
def test_otpvm_loop_passes_what_asyncio_selector_loop_passes(name, loop):
    otpvm.default_vm()      # its threads exist before the tests count threads
    reference, reference_problems = _run(_case(f"Selector{name}", MIXINS[name],
                                               asyncio.SelectorEventLoop))
    excluded = EXCLUDED_FREE_THREADED if FREE_THREADED else {}
    passed, problems = _run(_case(f"Otpvm{name}", MIXINS[name], LOOPS[loop], excluded))
    skipped = sum(any(hasattr(m, t) for m in MIXINS[name]) for t in excluded)
    print(f"{name}: asyncio.SelectorEventLoop passed {reference}, otpvm.aio's {loop} {passed} "
          f"({skipped} excluded)")
    assert reference > 0 and not reference_problems, reference_problems
    assert problems == []
    assert passed == reference - skipped
