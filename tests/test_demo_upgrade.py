"""Connections that change code live: ``net.Protocol`` processes under
``net.serve``, and ``otpvm demo --upgrade`` (its load generator a separate OS
process) at 1,000 connections, with exact counts.
"""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
import textwrap
import uuid

import pytest

import otpvm
from otpvm import ANY, code, net
from otpvm import sys as otpsys
from otpvm.demos import echo_v1
from otpvm.net import ClosedError, Protocol, tcp

T = 10.0                # generous: anything awaited
N = 1000


def run(main, *args):
    with otpvm.VM(2) as vm:
        return vm.run(main, *args)


async def client(listener):
    return await tcp.connect("127.0.0.1", listener.port, timeout=T, packet="line")


async def ask(sock, line):
    await tcp.send(sock, line)
    return await tcp.recv(sock, timeout=T)


def reports(caplog):
    messages = [r.getMessage() for r in caplog.records]
    return ([m for m in messages if m.startswith("crash report")],
            [m for m in messages if m.startswith("supervisor report")])


# -- Protocol ------------------------------------------------------------------------


class Recorder(Protocol):
    """Tells the test process every packet it gets, in order, and echoes it."""

    def init(self, sock, args):
        self.test = args[0]
        return 0

    def handle_data(self, data, count):
        otpvm.send(self.test, ("data", count, data))
        self.send(data)
        return count + 1

    def handle_info(self, msg, count):
        otpvm.send(self.test, ("info", count, msg))
        return count

    def handle_closed(self, count):
        otpvm.send(self.test, ("closed", count))


def test_packets_reach_handle_data_in_order_then_handle_closed():
    async def main():
        listener = await net.serve(Recorder, 0, host="127.0.0.1", args=(otpvm.self(),),
                                   packet="line")
        sock = await client(listener)
        lines = [b"line %d\n" % i for i in range(200)]
        await tcp.send(sock, b"".join(lines)[:-1])          # one write, framed by the server
        await tcp.send(sock, b"\n")
        got = [await otpvm.receive(("data", ANY, ANY), timeout=T) for _ in lines]
        echoed = [await tcp.recv(sock, timeout=T) for _ in lines]
        [pid] = await net.connection_pids(listener)
        otpvm.send(pid, "hello")
        info = await otpvm.receive(("info", ANY, ANY), timeout=T)
        ref = otpvm.monitor(pid)
        net.close(sock)
        closed = await otpvm.receive(("closed", ANY), timeout=T)
        down = await otpvm.receive(otpvm.Down(ref, ANY, ANY), timeout=T)
        await net.stop_server(listener)
        return got, echoed, info, closed, down.reason

    got, echoed, info, closed, reason = run(main)
    assert got == [("data", i, b"line %d\n" % i) for i in range(200)]
    assert echoed == [b"line %d\n" % i for i in range(200)]
    assert info == ("info", 200, "hello")
    assert closed == ("closed", 200)
    assert reason == "normal"


def test_a_crashing_connection_is_isolated(caplog):
    async def main():
        listener = await net.serve(echo_v1.Echo, 0, host="127.0.0.1", packet="line")
        a, b = await client(listener), await client(listener)
        assert await ask(a, b"1 1\n") == b"1 1\n"
        await tcp.send(b, b"/stats\n")              # the demo's untested command
        with pytest.raises(ClosedError):
            await tcp.recv(b, timeout=T)
        answers = [await ask(a, b"1 %d\n" % i) for i in range(2, 5)]
        alive = await net.connection_count(listener)
        await net.stop_server(listener)
        return answers, alive

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        answers, alive = run(main)
    assert answers == [b"1 2\n", b"1 3\n", b"1 4\n"]
    assert alive == 1
    crashes, supervisors = reports(caplog)
    assert len(crashes) == 1 and "not enough values to unpack" in crashes[0]
    assert len(supervisors) == 1 and "restart=temporary" in supervisors[0]


def test_sys_get_state_get_status_and_suspend():
    async def main():
        listener = await net.serve("otpvm.demos.echo_v1:Echo", 0, host="127.0.0.1",
                                   packet="line")
        sock = await client(listener)
        for i in range(3):
            await ask(sock, b"x %d\n" % i)
        [pid] = await net.connection_pids(listener)
        children = await otpvm.supervisor.which_children(f"{listener.name}.connections")
        state = await otpsys.get_state(pid)
        status = await otpsys.get_status(pid)
        await otpsys.suspend(pid)
        await tcp.send(sock, b"x 3\n")
        while_suspended = await otpsys.get_state(pid)    # the line waits in the mailbox
        await otpsys.resume(pid)
        reply = await tcp.recv(sock, timeout=T)
        after = await otpsys.get_state(pid)
        await net.stop_server(listener)
        return pid, children, state, status, while_suspended, reply, after

    pid, children, state, status, while_suspended, reply, after = run(main)
    assert children == [(None, pid, "worker", ("otpvm.demos.echo_v1",))]
    assert state == 3
    assert status["module"] is echo_v1.Echo and status["state"] == 3
    assert (while_suspended, reply, after) == (3, b"x 3\n", 4)


@pytest.mark.parametrize("handler, error", [
    (echo_v1, TypeError), (int, TypeError), ("otpvm.demos.echo_v1:Nope", ValueError),
    ("otpvm.demos.uptime:DemoLog", TypeError), ("no colon", ValueError),
])
def test_a_bad_handler_is_refused_before_anything_starts(handler, error):
    with pytest.raises(error, match="handler"):
        net.child_spec("bad", handler)


def test_server_names_stay_unique_when_the_module_is_reloaded():
    from otpvm.net import server

    async def main():
        first = await net.serve(Recorder, 0, host="127.0.0.1", args=(otpvm.self(),))
        reloaded = importlib.reload(server)
        second = await reloaded.serve(Recorder, 0, host="127.0.0.1", args=(otpvm.self(),))
        names = first.name, second.name
        await net.stop_server(first)
        await reloaded.stop_server(second)
        return names

    try:
        first, second = run(main)
    finally:
        importlib.reload(server)
    assert first != second


# -- code change under a live connection ---------------------------------------------

PROTOCOL = '''
from otpvm.net import Protocol

__vsn__ = "{vsn}"


class Echo(Protocol):
    state_vsn = {vsn}

    def init(self, sock, args):
        return {init}

    def handle_data(self, line, state):
        state = {step}
        self.send(b"v{vsn} %a " % (state,) + line)
        return state

    def code_change(self, old_vsn, state, extra):
        if extra == "fail" and state == 2:
            raise ValueError("cannot convert " + repr(state))
        return (state, 0)
'''
V1 = {"vsn": "1", "init": "0", "step": "state + 1"}
V2 = {"vsn": "2", "init": "(0, 0)", "step": "(state[0] + 1, state[1] + len(line))"}


@pytest.fixture
def proto(tmp_path, monkeypatch):
    """A fresh managed package whose module proto is V1; its name."""
    pkg = f"prototest_{uuid.uuid4().hex[:10]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "proto.py").write_text(textwrap.dedent(PROTOCOL.format(**V1)))
    monkeypatch.syspath_prepend(str(tmp_path))
    code.manage(pkg)
    yield f"{pkg}.proto"
    for mod in [m for m in sys.modules if m.startswith(pkg)]:
        del sys.modules[mod]


def test_a_connection_switches_code_at_its_next_packet_keeping_socket_and_state(proto):
    async def main():
        listener = await net.serve(f"{proto}:Echo", 0, host="127.0.0.1", packet="line")
        a, b = await client(listener), await client(listener)
        first = [await ask(a, b"a\n"), await ask(a, b"b\n"), await ask(b, b"c\n")]
        pids = await net.connection_pids(listener)
        code.switch(code.prepare(proto, PROTOCOL.format(**V2)), code_change=("1", None))
        second = [await ask(a, b"d\n"), await ask(b, b"ee\n"), await ask(a, b"f\n")]
        same_pids = await net.connection_pids(listener) == pids
        c = await client(listener)                  # a new connection starts on v2
        third = await ask(c, b"g\n")
        purged = await code.soft_purge(proto)
        await net.stop_server(listener)
        return first, second, same_pids, third, purged

    first, second, same_pids, third, purged = run(main)
    assert first == [b"v1 1 a\n", b"v1 2 b\n", b"v1 1 c\n"]
    # code_change made (count, 0) of count; then the line counted
    assert second == [b"v2 (3, 2) d\n", b"v2 (2, 3) ee\n", b"v2 (4, 4) f\n"]
    assert same_pids
    assert third == b"v2 (1, 2) g\n"
    assert purged


def test_a_failing_lazy_code_change_keeps_that_connection_on_its_old_code(proto, caplog):
    async def main():
        listener = await net.serve(f"{proto}:Echo", 0, host="127.0.0.1", packet="line")
        a, b = await client(listener), await client(listener)
        await ask(a, b"a\n")
        await ask(b, b"b\n")
        await ask(b, b"b\n")                                 # b's state is 2: it fails
        code.switch(code.prepare(proto, PROTOCOL.format(**V2)), code_change=("1", "fail"))
        after = [await ask(a, b"c\n"), await ask(b, b"d\n"), await ask(b, b"e\n")]
        alive = await net.connection_count(listener)
        await net.stop_server(listener)
        return after, alive

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        after, alive = run(main)
    assert after == [b"v2 (2, 2) c\n", b"v1 3 d\n", b"v1 4 e\n"]
    assert alive == 2
    errors = [r.getMessage() for r in caplog.records]
    assert len(errors) == 1
    assert "cannot convert 2" in errors[0] and "stays on its old code" in errors[0]


def test_sys_change_code_on_a_suspended_connection_and_abort(proto):
    async def main():
        listener = await net.serve(f"{proto}:Echo", 0, host="127.0.0.1", packet="line")
        sock = await client(listener)
        await ask(sock, b"a\n")
        [pid] = await net.connection_pids(listener)
        await otpsys.suspend(pid)
        code.switch(code.prepare(proto, PROTOCOL.format(**V2)))
        await tcp.send(sock, b"b\n")                 # waits: the process is suspended
        await otpsys.change_code(pid, proto, "1", None)
        changed = await otpsys.get_state(pid)
        await otpsys.abort_code(pid)
        aborted = await otpsys.get_state(pid)
        await otpsys.change_code(pid, proto, "1", None)
        await otpsys.resume(pid)
        replies = [await tcp.recv(sock, timeout=T), await ask(sock, b"c\n")]
        await net.stop_server(listener)
        return changed, aborted, replies

    changed, aborted, replies = run(main)
    assert (changed, aborted) == ((1, 0), 1)
    assert replies == [b"v2 (2, 2) b\n", b"v2 (3, 4) c\n"]


# -- the demo ------------------------------------------------------------------------


def upgrade_demo(tmp_path, mode):
    # Run from elsewhere than the clone: the installed package is imported.
    done = subprocess.run(
        [sys.executable, "-m", "otpvm", "demo", f"--upgrade={mode}", "--connections", str(N),
         "--interval", "0.2", "--before", "1.5", "--during", "1", "--after", "1.5", "--json"],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(done.stdout)
    assert r["crash_reports"] == r["supervisor_reports"] == 0, done.stderr
    return r["upgrade"]


def test_upgrade_demo_every_connection_switches_once_and_nothing_is_lost(tmp_path):
    u = upgrade_demo(tmp_path, "ok")
    assert (u["connections"], u["established"], u["alive_before"], u["alive_after"]) == (N,) * 4
    assert u["client_errors"] == 0
    assert u["requests_sent"] == u["requests_answered"] > N
    assert (u["switched"], u["switched_more_than_once"]) == (N, 0)
    assert u["v1_replies_after_switch"] == 0
    assert u["client_versions_at_end"] == u["server_versions"] == {"2": N}
    assert u["rolled_back"] is False and u["failure"] is None and u["soft_purged"] is True
    assert 0 < u["install_s"]
    assert set(u["p99_ms"]) == {"before", "upgrade", "after"}
    assert all(u["p99_ms"][phase] is not None for phase in ("before", "upgrade", "after"))


def test_upgrade_demo_failing_rolls_back_with_every_connection_on_v1(tmp_path):
    u = upgrade_demo(tmp_path, "failing")
    assert (u["connections"], u["established"], u["alive_before"], u["alive_after"]) == (N,) * 4
    assert u["client_errors"] == 0
    assert u["requests_sent"] == u["requests_answered"] > N
    assert (u["switched"], u["v1_replies_after_switch"]) == (0, 0)
    assert u["client_versions_at_end"] == u["server_versions"] == {"1": N}
    assert u["rolled_back"] is True
    assert u["failure"]["connection"] == 41         # echo_v2_failing.FAIL_ON = 42, 1-based
    assert "injected failure" in u["failure"]["error"]
