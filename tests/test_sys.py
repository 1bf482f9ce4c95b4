"""otpvm.sys: the system-message protocol, against gen_server."""

import logging

import pytest

import otpvm
from otpvm import ANY, Down, gen_server, receive, send, special
from otpvm import sys as otp_sys
from otpvm.gen import From
from otpvm.gen_server import CallError, GenServer, NoReply, Ok, Reply
from otpvm.sys import CallbackFailed, Debug, SysError

# Every test runs on the compiled call path and on the Python reference.
pytestmark = pytest.mark.usefixtures("gen_impl")


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


def queue_len():
    return otpvm.process_info(otpvm.self())["message_queue_len"]


class Journal(GenServer):
    """Keeps the casts and infos it handled, in order."""

    def init(self, args):
        return Ok(list(args or []))

    def handle_call(self, request, from_, seen):
        if request == "seen":
            return Reply(seen, seen)
        return Reply(("unknown", request), seen)

    def handle_cast(self, msg, seen):
        return NoReply([*seen, ("cast", msg)])

    def handle_info(self, msg, seen):
        return NoReply([*seen, ("info", msg)])

    def format_status(self, status):
        return {**status, "note": "journal"}


class Reporting(Journal):
    def init(self, watcher):
        self.watcher = watcher
        return Ok([])

    def terminate(self, reason, state):
        send(self.watcher, ("terminated", reason, state))


@pytest.mark.parametrize("schedulers", [1, 4])
def test_get_state_is_a_copy(schedulers):
    async def main():
        pid = await gen_server.start_link(Journal, ["a"])
        state = await otp_sys.get_state(pid)
        state.append("mine")
        return state, await otp_sys.get_state(pid), queue_len()

    assert run(main, schedulers=schedulers) == (["a", "mine"], ["a"], 0)


@pytest.mark.parametrize("schedulers", [1, 4])
def test_suspended_server_queues_messages_and_handles_them_in_order_after_resume(schedulers):
    async def main():
        pid = await gen_server.start_link(Journal, None, name="journal")
        gen_server.cast(pid, 0)
        await otp_sys.suspend("journal")
        for i in range(1, 4):
            gen_server.cast(pid, i)
            send(pid, f"info{i}")
        queued = otpvm.process_info(pid)["message_queue_len"]
        during = await otp_sys.get_state(pid)            # system requests still work
        with pytest.raises(TimeoutError):
            await gen_server.call(pid, "seen", timeout=0.01)
        status = (await otp_sys.get_status(pid))["status"]
        await otp_sys.suspend(pid)                        # suspending twice is harmless
        await otp_sys.resume(pid)
        after = await gen_server.call(pid, "seen")
        await otp_sys.resume(pid)                         # resuming a running one too
        return queued, during, status, after, queue_len()

    queued, during, status, after, left = run(main, schedulers=schedulers)
    assert queued >= 6          # (today it also counts the suspend call's demonitor signal)
    assert during == [("cast", 0)]
    assert status == "suspended"                   # as OTP's sys:get_status says
    assert after == [("cast", 0), ("cast", 1), ("info", "info1"), ("cast", 2),
                     ("info", "info2"), ("cast", 3), ("info", "info3")]
    assert left == 0


def test_replace_state_runs_in_the_server_and_returns_the_new_state():
    async def main():
        pid = await gen_server.start(Journal, ["a"])
        new = await otp_sys.replace_state(pid, lambda seen: [*seen, "b"])
        seen = await gen_server.call(pid, "seen")
        await otp_sys.suspend(pid)
        while_suspended = await otp_sys.replace_state(pid, lambda seen: seen[1:])
        await otp_sys.resume(pid)
        return new, seen, while_suspended, await otp_sys.get_state(pid)

    assert run(main) == (["a", "b"], ["a", "b"], ["b"], ["b"])


def test_a_failing_replace_state_reports_the_error_and_the_server_goes_on():
    async def main():
        pid = await gen_server.start_link(Journal, ["a"])
        with pytest.raises(CallbackFailed) as info:
            await otp_sys.replace_state(pid, lambda seen: seen["no such key"])
        gen_server.cast(pid, 1)
        return info.value, otpvm.is_alive(pid), await otp_sys.get_state(pid), queue_len()

    exc, alive, state, left = run(main)
    assert isinstance(exc.exc, TypeError)
    assert exc.__cause__ is exc.exc
    assert exc.reason[0] == "callback_failed"
    assert isinstance(exc, SysError)
    assert alive
    assert state == ["a", ("cast", 1)]
    assert left == 0


def test_get_status_has_state_module_and_more():
    async def main():
        pid = await gen_server.start_link(Journal, ["a"], name="journal")
        return pid, otpvm.self(), await otp_sys.get_status("journal")

    pid, me, status = run(main)
    assert status["pid"] == pid
    assert status["module"] is Journal
    assert status["state"] == ["a"]
    assert status["parent"] == me
    assert status["name"] == "journal"
    assert status["status"] == "running"
    assert status["note"] == "journal"                    # format_status applied


def test_terminate_runs_terminate_and_waits_for_the_end():
    async def main():
        pid = await gen_server.start(Reporting, otpvm.self())
        ref = otpvm.monitor(pid)
        gen_server.cast(pid, "x")
        await otp_sys.terminate(pid, "shutdown")
        gone = not otpvm.is_alive(pid)
        report = await receive(("terminated", ANY, ANY), timeout=5)
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        suspended = await gen_server.start(Reporting, otpvm.self())
        await otp_sys.suspend(suspended)
        await otp_sys.terminate(suspended)
        report2 = await receive(("terminated", ANY, ANY), timeout=5)
        with pytest.raises(CallError) as missing:
            await otp_sys.terminate(pid)
        return gone, report, down.reason, report2, missing.value.reason, queue_len()

    gone, report, reason, report2, missing, left = run(main)
    assert gone
    assert report == ("terminated", "shutdown", [("cast", "x")])
    assert reason == "shutdown"
    assert report2 == ("terminated", "normal", [])
    assert missing == "noproc"
    assert left == 0


def test_terminate_with_another_reason_and_timeout():
    class Stubborn(Journal):
        def terminate(self, reason, state):
            raise RuntimeError("not like this")

    class Slow(Journal):
        async def terminate(self, reason, state):
            await receive("never")

    async def main():
        pid = await gen_server.start(Stubborn)
        with pytest.raises(CallError) as other:
            await otp_sys.terminate(pid, "normal")
        slow = await gen_server.start(Slow)
        with pytest.raises(TimeoutError):
            await otp_sys.terminate(slow, "normal", timeout=0.01)
        otpvm.exit(slow, "kill")
        return other.value.reason, queue_len()

    reason, left = run(main)
    assert isinstance(reason, RuntimeError)
    assert left == 0


def test_requests_to_missing_or_dying_processes():
    async def main():
        errors = []
        for call in (otp_sys.get_state("nobody"), otp_sys.suspend("nobody"),
                     otp_sys.get_status("nobody")):
            with pytest.raises(CallError) as info:
                await call
            errors.append(info.value.reason)
        pid = await gen_server.start(Journal)
        await gen_server.stop(pid)
        with pytest.raises(CallError) as dead:
            await otp_sys.get_state(pid)
        silent = otpvm.spawn(receive, "never")
        with pytest.raises(TimeoutError):
            await otp_sys.get_state(silent, timeout=0.01)
        otpvm.exit(silent, "kill")
        return errors, dead.value.reason, queue_len()

    assert run(main) == (["noproc"] * 3, "noproc", 0)


def test_argument_checks():
    async def main():
        with pytest.raises(TypeError):
            await otp_sys.trace(otpvm.self(), "yes")
        for bad in (0, -1, "on", None):
            with pytest.raises(ValueError):
                await otp_sys.log(otpvm.self(), bad)
        return queue_len()

    assert run(main) == 0


# -- the debug helpers (server side), tested on their own ----------------------


def test_debug_request_turns_trace_and_log_on_and_off():
    debug, reply = otp_sys.debug_request(None, ("trace", True))
    assert reply == "ok" and debug == Debug(trace=True)
    debug, reply = otp_sys.debug_request(debug, ("log", ("on", 2)))
    assert reply == "ok" and debug.trace and debug.log.maxlen == 2
    for n in range(3):
        otp_sys.handle_debug(debug, "srv", ("noreply", n))
    assert otp_sys.debug_request(debug, ("log", "get")) == (debug, [("noreply", 1),
                                                                     ("noreply", 2)])
    debug, reply = otp_sys.debug_request(debug, ("log", ("on", 5)))   # keeps the events
    assert list(debug.log) == [("noreply", 1), ("noreply", 2)]
    debug, _ = otp_sys.debug_request(debug, ("trace", False))
    debug, _ = otp_sys.debug_request(debug, ("log", "off"))
    assert debug is None                                  # everything off
    assert otp_sys.debug_request(None, ("log", "get")) == (None, [])
    assert otp_sys.debug_request(None, "get_state") is None
    assert otp_sys.debug_request(None, ("log", ("on", 0))) is None
    assert otp_sys.debug_request(None, ("trace", "yes")) is None
    otp_sys.handle_debug(None, "srv", ("noreply", 0))     # nothing on: nothing happens


def test_trace_logs_otp_style_lines(caplog):
    async def main():
        return otpvm.self()

    pid = run(main)
    debug, _ = otp_sys.debug_request(None, ("trace", True))
    events = [("in", ("$gen_cast", 5)), ("in", "get", From(pid, None)), ("in", "tick"),
              ("out", 5, pid, 5), ("noreply", 6), ("continue", "more"), ("odd",)]
    with caplog.at_level(logging.INFO, logger="otpvm.sys"):
        for event in events:
            otp_sys.handle_debug(debug, "counter", event)
    assert [r.getMessage() for r in caplog.records] == [
        "*DBG* counter got cast 5",
        f"*DBG* counter got call 'get' from {pid!r}",
        "*DBG* counter got 'tick'",
        f"*DBG* counter sent 5 to {pid!r}, new state 5",
        "*DBG* counter new state 6",
        "*DBG* counter continue 'more'",
        "*DBG* counter dbg ('odd',)",
    ]


# -- trace and log against a real gen_server ------------------------------------

class Counter(GenServer):
    def init(self, n):
        return Ok(n)

    def handle_call(self, request, from_, n):
        return Reply(n, n)

    def handle_cast(self, k, n):
        return NoReply(n + k)


def test_log_records_a_gen_servers_events():
    async def main():
        pid = await gen_server.start(Counter, 0, name="counter")
        await otp_sys.log(pid, True)
        gen_server.cast(pid, 5)
        got = await gen_server.call(pid, "get")
        events = await otp_sys.get_log(pid)
        await otp_sys.log(pid, False)
        gen_server.cast(pid, 1)
        return otpvm.self(), got, events, await otp_sys.get_log(pid)

    me, got, events, after = run(main)
    assert got == 5
    assert events[0] == ("in", ("$gen_cast", 5))
    assert events[1] == ("noreply", 5)
    assert events[2][0] == "in" and events[2][1] == "get" and events[2][2].pid == me
    assert events[3] == ("out", 5, me, 5)
    assert after == []


def test_trace_prints_a_gen_servers_events(caplog):
    async def main():
        pid = await gen_server.start(Counter, 0, name="counter")
        await otp_sys.trace(pid, True)
        gen_server.cast(pid, 5)
        await gen_server.call(pid, "get")
        await otp_sys.trace(pid, False)
        gen_server.cast(pid, 1)
        await gen_server.call(pid, "get")
        return otpvm.self()

    with caplog.at_level(logging.INFO, logger="otpvm.sys"):
        me = run(main)
    assert [r.getMessage() for r in caplog.records if r.name == "otpvm.sys"] == [
        "*DBG* counter got cast 5",
        "*DBG* counter new state 5",
        f"*DBG* counter got call 'get' from {me!r}",
        f"*DBG* counter sent 5 to {me!r}, new state 5",
    ]


def test_get_status_of_a_suspended_process_says_suspended():
    """sys_SUITE's suspend case, and sys:get_status's second element: OTP
    says ``suspended`` while the process is suspended, ``running`` after."""
    async def main():
        pid = await gen_server.start(Journal, None)
        assert (await otp_sys.get_status(pid))["status"] == "running"
        await otp_sys.suspend(pid)
        assert (await otp_sys.get_status(pid))["status"] == "suspended"
        await otp_sys.resume(pid)
        return (await otp_sys.get_status(pid))["status"]

    assert run(main) == "running"


# -- errors are raised, never returned as results ------------------------------


def test_replace_state_of_a_process_that_has_none_raises():
    """A special process answers ('error', ('unknown_system_msg', ...)) to
    replace_state: that is a SysError, not the new state (it used to be
    returned as one)."""
    async def loop():
        while True:
            await special.receive(state="mine")

    async def main():
        pid = otpvm.spawn(loop)
        with pytest.raises(SysError) as info:
            await otp_sys.replace_state(pid, lambda s: s)
        state = await otp_sys.get_state(pid)
        otpvm.exit(pid, "kill")
        return info.value.reason, state

    reason, state = run(main)
    assert reason[0] == "unknown_system_msg" and reason[1][0] == "replace_state"
    assert state == "mine"


def test_a_state_that_merely_looks_like_an_error_is_a_state():
    """OTP's sys takes any {error, R} reply for a failure; otpvm only
    exceptions and sys's own error reasons, so ('error', data) is a state."""
    async def main():
        pid = await gen_server.start(Journal, None)
        new = await otp_sys.replace_state(pid, lambda _: ("error", "data"))
        return new, await otp_sys.get_state(pid)

    assert run(main) == (("error", "data"), ("error", "data"))


# -- statistics, install/remove, no_debug, log_to_file --------------------------


def test_statistics_count_calls_casts_and_infos_in_and_replies_out():
    async def main():
        pid = await gen_server.start(Journal, None)
        assert await otp_sys.statistics(pid, "get") is None     # off
        assert await otp_sys.statistics(pid, True) is None
        gen_server.cast(pid, 1)
        send(pid, "info")
        await gen_server.call(pid, "seen")
        await otp_sys.get_state(pid)                  # system requests do not count
        first = await otp_sys.statistics(pid, "get")
        await otp_sys.statistics(pid, True)           # on already: they go on
        gen_server.cast(pid, 2)
        second = await otp_sys.statistics(pid, "get")
        await otp_sys.statistics(pid, False)
        off = await otp_sys.statistics(pid, "get")
        await otp_sys.statistics(pid, True)           # off, then on: from zero
        third = await otp_sys.statistics(pid, "get")
        return first, second, off, third

    first, second, off, third = run(main)
    assert (first.messages_in, first.messages_out) == (3, 1)
    # sys:statistics(P, true) twice: {messages_in,2},{messages_out,1} after a call and a cast
    assert (second.messages_in, second.messages_out) == (4, 1)
    assert second.start_time == first.start_time
    assert first.reductions > 0
    assert off is None
    assert (third.messages_in, third.messages_out) == (0, 0)


def test_a_debug_function_threads_its_state_and_is_removed_by_done():
    async def main():
        pid = await gen_server.start(Journal, None)
        me = otpvm.self()

        def count_casts(seen, event, name):
            if event[0] == "in" and event[1][0] == "$gen_cast":
                seen = seen + 1
                send(me, ("casts", seen, name == pid))
                if seen == 2:
                    return otp_sys.DONE
            return seen

        def raise_done(state, event, name):
            send(me, ("raised", event[0]))
            raise otp_sys.DONE

        await otp_sys.install(pid, count_casts, 0)
        await otp_sys.install(pid, raise_done, None, id="once")
        for i in range(3):
            gen_server.cast(pid, i)
        await gen_server.call(pid, "seen")
        got = []
        while True:
            try:
                got.append(await otpvm.receive(timeout=0))
            except TimeoutError:
                return got

    assert run(main) == [("raised", "in"), ("casts", 1, True), ("casts", 2, True)]


def test_a_raising_debug_function_is_removed_and_the_process_goes_on(caplog):
    """OTP's handle_debug catches _:_ and drops the function:

        G = fun(_, _, _) -> error(boom) end, sys:install(P, {G, 0}),
        gen_server:cast(P, d)   % P lives on; other functions still run
    """
    async def main():
        pid = await gen_server.start_link(Journal, None)
        me = otpvm.self()

        def broken(state, event, name):
            send(me, ("broken", event[0]))
            raise KeyError("broken")

        def spy(state, event, name):
            send(me, ("spy", event[0]))
            return state

        await otp_sys.install(pid, spy)
        await otp_sys.install(pid, broken)
        gen_server.cast(pid, 1)
        gen_server.cast(pid, 2)
        await gen_server.call(pid, "seen")
        await otp_sys.get_state(pid)        # the call's 'out' event comes after its reply
        got = []
        while True:
            try:
                got.append(await otpvm.receive(timeout=0))
            except TimeoutError:
                return got, otpvm.is_alive(pid)

    with caplog.at_level(logging.WARNING, logger="otpvm.sys"):
        got, alive = run(main)
    assert alive
    assert got == [("broken", "in"), ("spy", "in"), ("spy", "noreply"), ("spy", "in"),
                   ("spy", "noreply"), ("spy", "in"), ("spy", "out")]
    assert sum("raised KeyError('broken')" in r.getMessage() for r in caplog.records) == 1


def test_no_debug_turns_everything_off_and_closes_the_file(tmp_path):
    path = tmp_path / "events.log"

    async def main():
        pid = await gen_server.start(Journal, None)
        await otp_sys.trace(pid, True)
        await otp_sys.log(pid, True)
        await otp_sys.statistics(pid, True)
        await otp_sys.log_to_file(pid, path)
        await otp_sys.install(pid, lambda s, e, n: s)
        gen_server.cast(pid, 1)
        await otp_sys.no_debug(pid)
        gen_server.cast(pid, 2)
        await gen_server.call(pid, "seen")
        return (pid, await otp_sys.get_log(pid), await otp_sys.statistics(pid, "get"),
                await otp_sys.get_state(pid))

    pid, log, stats, state = run(main)
    assert (log, stats) == ([], None)
    assert state == [("cast", 1), ("cast", 2)]
    assert path.read_text().splitlines() == [f"*DBG* {pid!r} got cast 1",
                                             f"*DBG* {pid!r} new state [('cast', 1)]"]


def test_log_to_file_that_cannot_be_opened_and_bad_arguments(tmp_path):
    async def main():
        pid = await gen_server.start(Journal, None)
        with pytest.raises(SysError) as info:
            await otp_sys.log_to_file(pid, tmp_path / "no" / "such" / "dir" / "f")
        with pytest.raises(TypeError):
            await otp_sys.log_to_file(pid, True)
        with pytest.raises(ValueError):
            await otp_sys.statistics(pid, "on")
        with pytest.raises(TypeError):
            await otp_sys.install(pid, "not a function")
        with pytest.raises(TypeError):
            await otp_sys.install(pid, print, id=["unhashable"])
        await otp_sys.remove(pid, "never installed")          # no error
        await otp_sys.log(pid, "print")                       # nothing logged: no error
        return info.value.reason, otpvm.is_alive(pid)

    assert run(main) == ("open_file", True)
