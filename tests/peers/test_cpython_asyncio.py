"""CPython's own per-loop asyncio tests, run against otpvm.aio's loop.

CPython's ``test.test_asyncio`` keeps the tests every event loop must pass
in mixins with a ``create_event_loop`` hook (``EventLoopTestsMixin``,
``SubprocessTestsMixin``, ``BaseSockTestsMixin``, ``BaseStartServer``,
``BaseTestBufferedProtocol``); CPython itself runs them on each of its loops.
Here each is run twice in the same test: on ``asyncio.SelectorEventLoop``
(the reference, whose code otpvm's loop reuses) and on
``otpvm.aio.new_event_loop()``.  otpvm's must pass every test the
reference passes.  Any Python whose build ships its ``test`` package.
"""

import asyncio
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


def _case(name, mixins, factory):
    # Both hooks: the mixins name it create_event_loop, or new_loop.
    return type(name, (*mixins, test_utils.TestCase),
                {"create_event_loop": lambda self: factory(),
                 "new_loop": lambda self: factory()})


def _run(case):
    """(passed, problems) of a TestCase's tests, run by unittest."""
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(case).run(result)
    problems = [f"{t.id()}: {tb.strip().splitlines()[-1]}"
                for t, tb in result.failures + result.errors]
    return result.testsRun - len(result.skipped) - len(problems), problems


@pytest.mark.parametrize("name", sorted(MIXINS))
def test_otpvm_loop_passes_what_asyncio_selector_loop_passes(name):
    otpvm.default_vm()      # its threads exist before the tests count threads
    reference, reference_problems = _run(_case(f"Selector{name}", MIXINS[name],
                                               asyncio.SelectorEventLoop))
    passed, problems = _run(_case(f"Otpvm{name}", MIXINS[name], otpvm.aio.new_event_loop))
    print(f"{name}: asyncio.SelectorEventLoop passed {reference}, otpvm.aio {passed}")
    assert reference > 0 and not reference_problems, reference_problems
    assert problems == []
    assert passed == reference
