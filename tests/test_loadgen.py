"""The echo load generator (otpvm/demos/loadgen.py) against the asyncio echo server.

Both run as subprocesses, as the demo and benchmarks/echo/compare.py run them.
Nothing here is timed: only counts and orderings are asserted.
"""

import json
import os
import resource
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LOADGEN = REPO / "otpvm" / "demos" / "loadgen.py"
ECHO = REPO / "benchmarks" / "echo" / "asyncio_echo.py"
N = 50
PHASES = ("before", "during", "after")
TOP_KEYS = {
    "host", "port", "interval_s", "reply_timeout_s", "connections_requested",
    "connections_established", "alive_before_poison", "alive_at_end", "rampup", "phases",
    "messages", "messages_per_second", "timed_seconds", "errors", "latency_ms", "poison",
    "client",
}


def start_server(*extra):
    proc = subprocess.Popen(
        [sys.executable, str(ECHO), "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, bufsize=0,
    )
    deadline = time.monotonic() + 60
    buf = b""
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(left, 0))
        chunk = os.read(proc.stdout.fileno(), 4096) if ready else b""
        if not chunk:
            proc.kill()
            _, err = proc.communicate()
            pytest.fail(f"echo server gave no READY line: {buf!r} {err[-2000:]!r}")
        buf += chunk
    word, port = buf.split(b"\n", 1)[0].split()
    assert word == b"READY"
    return proc, int(port)


def stop_server(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def echo_port():
    proc, port = start_server()
    yield port
    stop_server(proc)


@pytest.fixture(scope="module")
def protocol_port():
    proc, port = start_server("--style", "protocol")
    yield port
    stop_server(proc)


@pytest.fixture
def poison_port():
    proc, port = start_server("--poison", "crash")
    yield port
    stop_server(proc)


def loadgen(port, *args, n=N):
    out = subprocess.run(
        [sys.executable, str(LOADGEN), "--port", str(port), "--connections", str(n),
         "--before", "0.4", "--during", "0.4", "--after", "0.4", "--quiet", *args],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def check_traffic(r):
    assert set(r) == TOP_KEYS
    assert r["connections_requested"] == N
    assert r["connections_established"] == N
    assert r["rampup"]["failures"] == 0
    assert r["rampup"]["failure_kinds"] == {}
    assert r["alive_before_poison"] == N
    m = r["messages"]
    assert set(m) == {"total", *PHASES}
    assert m["total"] == sum(m[p] for p in PHASES)
    assert all(m[p] > 0 for p in PHASES)
    assert r["messages_per_second"] > 0
    for name in (*PHASES, "overall"):
        lat = r["latency_ms"][name]
        assert set(lat) == {"p50", "p99", "max", "count"}
        assert lat["count"] == (m["total"] if name == "overall" else m[name])
        assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert [r["phases"][p]["start_s"] for p in PHASES] == [0.0, 0.4, 0.8]
    assert r["phases"]["after"]["end_s"] == 1.2


@pytest.mark.parametrize("interval", ["0", "0.01"])
def test_every_connection_echoes_without_errors(echo_port, interval):
    r = loadgen(echo_port, "--interval", interval)
    check_traffic(r)
    assert r["alive_at_end"] == N
    assert r["errors"] == {
        "total": 0, "other_than_poisoned": 0, "by_kind": {}, "by_phase": {},
        "by_connection": {}, "by_connection_truncated": False,
    }
    assert r["poison"] is None


def test_protocol_style_server(protocol_port):
    r = loadgen(protocol_port)
    check_traffic(r)
    assert r["alive_at_end"] == N
    assert r["errors"]["total"] == 0


def test_poisoned_connection_is_the_only_error(poison_port):
    r = loadgen(poison_port, "--poison", "crash")
    check_traffic(r)
    assert r["alive_at_end"] == N - 1
    e = r["errors"]
    assert e["total"] == 1
    assert e["other_than_poisoned"] == 0
    assert len(e["by_connection"]) == 1
    kind = e["by_connection"]["0"]
    assert kind in ("eof", "reset")
    assert e["by_kind"] == {kind: 1}
    assert "before" not in e["by_phase"] and sum(e["by_phase"].values()) == 1
    p = r["poison"]
    assert p["sent"] is True and p["connection"] == 0 and p["line"] == "crash\n"
    assert p["outcome"] == kind
    assert p["close_after_ms"] >= 0
    assert p["sent_at_s"] >= 0.4


@pytest.mark.parametrize("style", ["streams", "protocol"])
def test_the_same_server_on_otpvm_aio(style):
    """``asyncio_echo.py --loop otpvm.aio`` (compare.py's otpvm.aio rows):
    the same traffic without an error, the poisoned connection alone
    closed, and SIGTERM, whose handler the server set with
    loop.add_signal_handler, stops it with status 0."""
    proc, port = start_server("--loop", "otpvm.aio", "--style", style, "--poison", "crash")
    try:
        r = loadgen(port, "--poison", "crash")
        proc.send_signal(signal.SIGTERM)
        status = proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    check_traffic(r)
    assert r["alive_at_end"] == N - 1
    assert r["errors"]["total"] == 1 and r["errors"]["other_than_poisoned"] == 0
    assert r["poison"]["outcome"] in ("eof", "reset")
    assert status == 0, proc.stderr.read()


def test_a_server_that_does_not_echo_the_poison_keeps_the_connection(echo_port):
    r = loadgen(echo_port, "--poison", "crash")
    check_traffic(r)
    assert r["alive_at_end"] == N
    assert r["errors"]["total"] == 0
    assert r["poison"]["outcome"] == "echoed"


def test_refused_connections_are_rampup_failures_not_errors():
    # A port nobody listens on: bind one, never listen, keep it so it stays unused.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        out = subprocess.run(
            [sys.executable, str(LOADGEN), "--port", str(port), "--connections", "5",
             "--connect-retries", "1", "--before", "0.1", "--during", "0", "--after", "0",
             "--quiet"],
            capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["connections_established"] == 0
    assert r["rampup"]["failures"] == 5
    assert r["rampup"]["retries"] == 5
    assert r["rampup"]["failure_kinds"] == {"refused": 5}
    assert r["errors"]["total"] == 0
    assert r["messages"]["total"] == 0
    assert r["latency_ms"]["overall"] == {"p50": None, "p99": None, "max": None, "count": 0}


def test_too_many_connections_for_the_fd_limit_is_a_clear_failure():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > 10**8:
        pytest.skip("no finite open-files hard limit to exceed")
    out = subprocess.run(
        [sys.executable, str(LOADGEN), "--port", "9", "--connections", str(hard + 1)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 2
    assert out.stdout == ""
    assert "RLIMIT_NOFILE" in out.stderr and "ulimit -Hn" in out.stderr


def test_run_in_process(echo_port):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_loadgen_under_test", LOADGEN)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    r = mod.run("127.0.0.1", echo_port, 5, before=0.2, during=0.1, after=0.1)
    assert r["connections_established"] == 5 and r["alive_at_end"] == 5
    assert r["errors"]["total"] == 0 and r["messages"]["total"] > 0
    assert "overall" in mod.format_table(r)
