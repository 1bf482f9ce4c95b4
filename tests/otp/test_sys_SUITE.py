"""OTP's lib/stdlib/test/sys_SUITE.erl, translated case by case.

The suite drives ``sys_SUITE_server``, a gen_server whose state counts the
``{req, N}`` calls it answered with ``{ok, -N}``; here it is ``SuiteServer``
(``('req', n)`` answered ``('ok', -n)``).  OTP's timeouts of 1000 ms become
0.05 s where a call is meant to time out.
"""

import logging

import pytest

import otpvm
from otpvm import gen_server
from otpvm import sys as otp_sys
from otpvm.gen_server import GenServer, NoReply, Ok, Reply, Stop
from otpvm.sys import CallbackFailed, Statistics

OTP_CASES = ["log", "log_to_file", "stats", "trace", "suspend", "install", "special_process"]
LEFT_OUT: dict[str, str] = {}

SERVER = "sys_SUITE_server"


class SuiteServer(GenServer):
    """sys_SUITE's dummy server."""

    def init(self, args):
        return Ok(0)

    def handle_call(self, request, from_, state):
        if request == "stop":
            return Stop("normal", state, reply="ok")
        _, arg = request
        return Reply(("ok", -arg), state + 1)


async def start():
    return await gen_server.start_link(SuiteServer, None, name=SERVER)


async def public_call(arg, timeout=1.0):
    return await gen_server.call(SERVER, ("req", arg), timeout)


async def stop():
    assert await gen_server.call(SERVER, "stop", 1.0) == "ok"


async def drain():
    """The messages already in the mailbox (OTP's get_messages, without its
    1 ms wait: here every message counted was sent before the reply that
    the test waited for, so it is already there)."""
    out = []
    while True:
        try:
            out.append(await otpvm.receive(timeout=0))
        except TimeoutError:
            return out


def test_log(run):
    """sys:log on, a call, off, print: the events are kept, then forgotten."""
    async def main():
        pid = await start()
        await otp_sys.log(SERVER, True)
        assert await public_call(44) == ("ok", -44)
        logged = await otp_sys.get_log(SERVER)
        await otp_sys.log(SERVER, False)
        after_off = await otp_sys.get_log(SERVER)
        await otp_sys.log(SERVER, "print")
        await stop()
        return pid, otpvm.self(), logged, after_off

    pid, me, logged, after_off = run(main)
    assert [event[:2] for event in logged] == [("in", ("req", 44)), ("out", ("ok", -44))]
    assert logged[0][2].pid == me
    assert logged[1][2:] == (me, 1)
    assert after_off == []
    assert pid != me


def test_log_to_file(run, tmp_path):
    """sys:log_to_file writes the events, as trace prints them, to a file."""
    path = tmp_path / "sys.log"

    async def main():
        await start()
        await otp_sys.log_to_file(SERVER, str(path))
        assert await public_call(44) == ("ok", -44)
        await otp_sys.log_to_file(SERVER, False)
        await stop()
        return repr(otpvm.self())

    me = run(main)
    lines = path.read_text().splitlines()
    assert lines == [f"*DBG* sys_SUITE_server got call ('req', 44) from {me}",
                     f"*DBG* sys_SUITE_server sent ('ok', -44) to {me}, new state 1"]


def test_stats(run):
    """sys:statistics counts one message in and one out for a call; off: none."""
    async def main():
        await start()
        await otp_sys.statistics(SERVER, True)
        assert await public_call(44) == ("ok", -44)
        stats = await otp_sys.statistics(SERVER, "get")
        await otp_sys.statistics(SERVER, False)
        status = await otp_sys.get_status(SERVER)
        off = await otp_sys.statistics(SERVER, "get")
        await stop()
        return stats, status, off, otpvm.self()

    stats, status, off, me = run(main)
    assert type(stats) is Statistics
    assert (stats.messages_in, stats.messages_out) == (1, 1)
    assert stats.start_time <= stats.current_time
    assert stats.reductions >= 1
    assert status["status"] == "running" and status["parent"] == me
    assert off is None                          # OTP: {ok, no_statistics}


def test_trace(run, caplog):
    """sys:trace prints the call in and the reply out, OTP's *DBG* lines."""
    caplog.set_level(logging.INFO, logger="otpvm.sys")

    async def main():
        await start()
        await otp_sys.trace(SERVER, True)
        assert await public_call(44) == ("ok", -44)
        await otp_sys.trace(SERVER, False)
        await stop()
        return repr(otpvm.self())

    me = run(main)
    lines = [r.getMessage() for r in caplog.records if r.name == "otpvm.sys"]
    assert lines == [f"*DBG* sys_SUITE_server got call ('req', 44) from {me}",
                     f"*DBG* sys_SUITE_server sent ('ok', -44) to {me}, new state 1"]


def test_suspend(run):
    """A suspended server answers no call; suspending or resuming twice is no error."""
    async def main():
        await start()
        await otp_sys.suspend(SERVER, 1.0)
        with pytest.raises(TimeoutError):
            await public_call(48, timeout=0.05)
        first = (await otp_sys.get_status(SERVER))["status"]
        await otp_sys.suspend(SERVER, 1.0)          # doing it twice is no error
        with pytest.raises(TimeoutError):
            await public_call(48, timeout=0.05)
        await otp_sys.resume(SERVER)
        second = (await otp_sys.get_status(SERVER))["status"]
        answered = await public_call(48)
        await otp_sys.resume(SERVER)                # doing it twice is no error
        again = await public_call(48)
        await stop()
        return first, second, answered, again

    assert run(main) == ("suspended", "running", ("ok", -48), ("ok", -48))


def test_install(run):
    """Debug functions: installed once per function or id, removed by
    function, id or no_debug; each call triggers every one installed."""
    async def main():
        await start()
        master = otpvm.self()

        def spy(func_state, event, proc_state):
            if event[0] == "in" and len(event) == 3 and event[1][0] == "req":
                otpvm.send(master, ("spy_got", ("request", event[1][1]), proc_state))
            return func_state

        await otp_sys.install(SERVER, spy, "func_state")
        assert await public_call(1) == ("ok", -1)
        await otp_sys.no_debug(SERVER)
        assert await public_call(2) == ("ok", -2)
        await otp_sys.install(SERVER, spy, "func_state")
        await otp_sys.install(SERVER, spy, "func_state")    # already installed
        assert await public_call(3) == ("ok", -3)
        assert await public_call(4) == ("ok", -4)
        await otp_sys.remove(SERVER, spy)
        assert await public_call(5) == ("ok", -5)
        by_function = await drain()

        await otp_sys.install(SERVER, spy, "func_state", id="id1")
        await otp_sys.install(SERVER, spy, "func_state", id="id1")   # not installed
        await otp_sys.install(SERVER, spy, "func_state", id="id2")
        assert await public_call(1) == ("ok", -1)
        two = await drain()
        await otp_sys.remove(SERVER, "id1")
        assert await public_call(1) == ("ok", -1)
        one = await drain()
        await otp_sys.no_debug(SERVER)
        assert await public_call(1) == ("ok", -1)
        none = await drain()
        await stop()
        return by_function, two, one, none

    by_function, two, one, none = run(main)
    assert by_function == [("spy_got", ("request", 1), SERVER),
                           ("spy_got", ("request", 3), SERVER),
                           ("spy_got", ("request", 4), SERVER)]
    assert two == [("spy_got", ("request", 1), SERVER)] * 2
    assert one == [("spy_got", ("request", 1), SERVER)]
    assert none == []


class Channels(GenServer):
    """sys_sp1/sys_sp2's channel allocator: state (allocated, free)."""

    def init(self, n):
        return Ok(([], list(range(1, n + 1))))

    def handle_call(self, request, from_, state):
        allocated, free = state
        return Reply(free[0], ([free[0], *allocated], free[1:]))

    def handle_cast(self, msg, state):
        _, ch = msg
        allocated, free = state
        return NoReply(([c for c in allocated if c != ch], [ch, *free]))


def test_special_process(run):
    """statistics, trace, get_state and replace_state (also a failing one)
    and terminate on a channel allocator.

    OTP runs this on two hand-written special processes (sys_sp1, sys_sp2,
    looping on sys:handle_system_msg); otpvm's special processes
    (otpvm.special.receive) answer get_state/suspend/change_code only, so
    the allocator here is a gen_server: the sys side is the same."""
    name = "sys_sp"

    async def main():
        pid = await gen_server.start_link(Channels, 100, name=name)
        await otp_sys.statistics(name, True)
        await otp_sys.trace(name, True)
        ch = await gen_server.call(name, "alloc")
        assert ch == 1
        assert await otp_sys.get_state(name) == ([1], list(range(2, 101)))

        def replace(state):
            allocated, free = state
            assert free == list(range(2, 101))
            return (allocated, [2, 3, 4])

        assert await otp_sys.replace_state(name, replace) == ([1], [2, 3, 4])
        gen_server.cast(name, ("free", ch))
        assert await otp_sys.get_state(name) == ([], [1, 2, 3, 4])
        stats = await otp_sys.statistics(name, "get")
        await otp_sys.statistics(name, False)
        assert await otp_sys.replace_state(name, lambda _: []) == []
        assert await otp_sys.get_state(name) == []
        await sync_terminate(name, pid)

        pid = await gen_server.start_link(Channels, 4, name=name)
        assert await otp_sys.replace_state(name, lambda _: ()) == ()
        await sync_terminate(name, pid)

        pid = await gen_server.start_link(Channels, 4, name=name)

        def fail(_):
            raise RuntimeError("fail")

        with pytest.raises(CallbackFailed) as info:
            await otp_sys.replace_state(name, fail)
        unchanged = await otp_sys.get_state(name)
        await sync_terminate(name, pid)
        return stats, info.value, unchanged

    stats, failed, unchanged = run(main)
    assert (stats.messages_in, stats.messages_out) == (2, 1)
    assert isinstance(failed.exc, RuntimeError) and failed.exc.args == ("fail",)
    assert unchanged == ([], [1, 2, 3, 4])


async def sync_terminate(name, pid):
    ref = otpvm.monitor(pid)
    await otp_sys.terminate(name, "normal")
    down = await otpvm.receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
    assert down.reason == "normal"
    assert otpvm.whereis(name) is None


def test_every_otp_case_is_ported_or_left_out(otp_accounting):
    ported, left_out, missing = otp_accounting
    assert missing == []
