"""Runs the C tests of csrc/ (tests/c) under AddressSanitizer+UBSan and
ThreadSanitizer: `make -C tests/c check`."""

import os
import shutil
import subprocess

import pytest

C_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "c")
TIMEOUT = 300  # seconds; the whole run takes well under a minute


def test_c_layer_under_sanitizers():
    missing = [tool for tool in ("gcc", "make") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"the C layer tests need {' and '.join(missing)}, not found on PATH")
    try:
        proc = subprocess.run(
            ["make", "-C", C_TESTS, "check"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout or ""
        if isinstance(out, bytes):
            out = out.decode(errors="replace")
        pytest.fail(f"make -C tests/c check timed out after {TIMEOUT} s:\n{out}")
    if proc.returncode != 0:
        pytest.fail(
            f"make -C tests/c check failed (exit status {proc.returncode}):\n{proc.stdout}",
            pytrace=False,
        )
