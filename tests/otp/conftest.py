"""OTP's own test suites, translated case by case.

Each ``test_<name>_SUITE.py`` here translates ``lib/stdlib/test/<name>_SUITE.erl``
of Erlang/OTP: one test function per OTP case, named ``test_<case>`` after it,
with the OTP case's intent in its docstring.  Where OTP leaves an expectation
implicit, it was settled on a real ``erl`` (OTP 25, Debian's erlang-base) and
the Erlang snippet is kept in a comment beside the assertion.

Every suite module declares:

* ``OTP_CASES``: every case of the OTP suite (from its ``all()`` and groups);
* ``LEFT_OUT``: ``{case: why}`` for those not translated (distribution,
  Erlang-only features...).

and its ``test_every_otp_case_is_ported_or_left_out`` checks, through the
``otp_accounting`` fixture, that each OTP case is either a test here or left
out with a reason, so the counts in the docs stay true.

Every case runs on 1 and on 4 schedulers: the ``schedulers`` fixture.
"""

import pytest

import otpvm


@pytest.fixture(params=[1, 4], ids=["1sched", "4sched"])
def schedulers(request):
    """The number of schedulers a case runs its VM on."""
    return request.param


@pytest.fixture
def run(schedulers):
    """``run(main, *args)``: boots a VM on the case's schedulers, runs main,
    returns its result."""
    def run_main(main, *args):
        return otpvm.run(main, *args, schedulers=schedulers)
    return run_main


@pytest.fixture
def otp_accounting(request):
    """(ported, left_out, missing) for the requesting suite module: the OTP
    cases it translates, those it leaves out, and those it does neither."""
    module = request.module
    cases = list(module.OTP_CASES)
    ported = [c for c in cases if hasattr(module, f"test_{c}")]
    left_out = [c for c in cases if c in module.LEFT_OUT]
    missing = [c for c in cases if c not in ported and c not in left_out]
    return ported, left_out, missing
