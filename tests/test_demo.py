"""The uptime demo at 1,000 connections: exactly one connection dies.

Runs ``python -m otpvm demo`` as a real command (its load generator is a
separate OS process) and checks the numbers its report claims.
"""

from __future__ import annotations

import json
import subprocess
import sys

N = 1000


def test_uptime_demo_one_crash_nobody_else_notices(tmp_path):
    cmd = [sys.executable, "-m", "otpvm", "demo", "--connections", str(N), "--interval", "0.2",
           "--before", "2", "--during", "1", "--after", "2", "--json"]
    # Run from elsewhere than the clone, so that the installed package is the
    # one imported (the source folder has no compiled core).
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(done.stdout)
    assert r["connections_established"] == N
    assert r["alive_before_poison"] == N
    assert r["alive_at_end"] == N - 1
    assert r["errors"]["total"] == 1
    assert r["errors"]["other_than_poisoned"] == 0
    assert r["poison"]["outcome"] in ("eof", "reset")
    assert r["crash_reports"] == 1
    assert r["supervisor_reports"] == 1
    assert all(r["messages"][phase] > 0 for phase in ("before", "during", "after"))
    for phase in ("before", "during", "after"):
        lat = r["latency_ms"][phase]
        assert lat["p50"] <= lat["p99"] <= lat["max"]
    # the crash report names the bug, once
    assert done.stderr.count("crash report") == 1
    assert "not enough values to unpack" in done.stderr
