"""pytest plugins that run other projects' own test suites on otpvm.

Each plugin is loaded with ``-p`` (before the peer's ``conftest.py``) and
rebinds the one name through which the peer's suite picks its runtime, so
the suite runs unchanged: ``pytest -p otpvm.testing.pykka_swap tests``
(pykka's actors), ``pytest -p otpvm.testing.anyio_swap tests`` (AnyIO's
asyncio tests, on otpvm.aio's loop), ``pytest -p otpvm.testing.uvloop_swap
tests`` (uvloop's cross-loop tests' asyncio classes, on otpvm.aio's
loop).  Tests that inspect the reference implementation's internals are
deselected by name, each with its reason (``EXCLUDED`` in each plugin).
Importing a plugin changes the peer (and otpvm's log): load them in a
peer's test run only.
"""
