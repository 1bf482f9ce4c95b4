"""The uptime demo as a real command (its load generator is a separate OS
process): exactly one connection dies, the report says so first, and Ctrl-C,
SIGTERM or SIGKILL never leave the load generator behind.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

N = 1000
T = 60          # generous: a loaded CI machine may be slow

# Run from elsewhere than the clone, so that the installed package is the one
# imported (the source folder has no compiled core).
DEMO = [sys.executable, "-m", "otpvm", "demo"]


def demo(tmp_path, *args):
    return subprocess.run([*DEMO, *args], capture_output=True, text=True, timeout=300,
                          check=False, cwd=tmp_path)


def shown_logs(stderr):
    """What the demo showed of the VM's logs, time stamps dropped.  A
    long_schedule report (its line and the two-space-indented lines under it)
    is left out: test_scheduler tests those, and on a busy machine the crash
    itself, whose slice formats the traceback, may be one."""
    shown, in_long_schedule = [], False
    for line in stderr.splitlines():
        if "long_schedule" in line:
            in_long_schedule = True
        elif not (in_long_schedule and re.match(r"  \S", line)):
            in_long_schedule = False
            shown.append(re.sub(r"^ *\d+\.\d s  ", "", line).strip())
    return shown


def test_uptime_demo_one_crash_nobody_else_notices(tmp_path):
    done = demo(tmp_path, "--connections", str(N), "--interval", "0.2",
                "--before", "2", "--during", "1", "--after", "2", "--json")
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
    crash = ("crash report: process <0.{}.0> exited with ValueError: not enough values to "
             "unpack (expected 3, got 1)")
    assert re.fullmatch(re.escape(crash).replace(r"\{\}", r"\d+"), r["crash_report"])
    # The crash report is shown once, in short: the line of code that raised.
    logs = shown_logs(done.stderr)
    assert logs[0] == r["crash_report"], done.stderr
    assert re.fullmatch(r"at uptime\.py:\d+ in parse_stats: "
                        r"_, sessions, seconds = line\.split\(\)", logs[1]), done.stderr
    assert logs[2].startswith("supervisor report: supervisor"), done.stderr
    assert len(logs) == 3, done.stderr


def test_the_report_comes_last_as_a_block_quoting_the_crash(tmp_path):
    done = demo(tmp_path, "--connections", "200", "--interval", "0.2",
                "--before", "1", "--during", "0.5", "--after", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert out[0] == ("otpvm uptime demo: 200 connections; after 1 s of traffic one of "
                      "them sends /stats, a command whose code was never tested")
    assert out[1] == ""
    assert out[2] == "otpvm uptime demo: 200 connections, 1 crashed, 199 carried on"
    assert out[3] == "  " + shown_logs(done.stderr)[0]      # the crash report, quoted
    assert out[4] == "  connections: 200 established, 200 alive before the crash, 199 after"
    assert [line for line in out if line.startswith("  [")] == [
        "  [ok] all 200 connections established",
        "  [ok] 200 alive before the crash",
        "  [ok] 199 alive after it",
        "  [ok] the poisoned connection was closed by the server",
        "  [ok] exactly 1 error seen by clients",
        "  [ok] no error on any other connection",
        "  [ok] exactly 1 crash report logged",
        "  [ok] exactly 1 supervisor report logged",
        "  [ok] messages kept flowing after the crash",
    ]
    assert re.fullmatch(r"  \(\d+\.\d s in all\)", out[-1])
    assert "Traceback" not in done.stderr


# -- stopping it ---------------------------------------------------------------------


def children(pid):
    """The pids whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue                    # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid):
    """Whether pid exists and is not a zombie (a zombie has exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(condition, what):
    deadline = time.monotonic() + T
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {T} s")
        time.sleep(0.05)


@pytest.fixture
def running_demo(tmp_path):
    """A demo whose traffic would last two minutes, once its load generator runs."""
    proc = subprocess.Popen([*DEMO, "--connections", "200", "--before", "120"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    loadgen = []

    def started():
        loadgen[:] = [pid for pid in children(proc.pid)
                      if b"otpvm.demos.loadgen" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        return bool(loadgen) or proc.poll() is not None

    try:
        wait_until(started, "the load generator starts")
        assert proc.poll() is None, proc.communicate()
        yield proc, loadgen[0]
    finally:
        for pid in [proc.pid, *loadgen]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.communicate()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_the_demo_and_its_load_generator_at_once(running_demo, sig):
    proc, loadgen = running_demo
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=T)
    assert proc.returncode == 128 + sig, out + err
    assert not running(loadgen)         # the demo waited for it to be gone
    assert re.fullmatch(rf"otpvm demo: interrupted by {sig.name} after \d+\.\d s; "
                        r"the load generator was stopped too", shown_logs(err)[-1]), err
    assert "Traceback" not in err
    assert len(out.splitlines()) == 1               # the first line, no report


def test_the_load_generator_dies_with_a_killed_demo(running_demo):
    proc, loadgen = running_demo
    proc.kill()
    proc.wait(timeout=T)
    wait_until(lambda: not running(loadgen), "the load generator exits")
