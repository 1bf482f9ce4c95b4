"""gen_server, as OTP specifies it."""

import logging
import time

import pytest

import otpvm
from otpvm import ANY, Down, gen_server, receive, send
from otpvm.gen_server import CallError, GenServer, Ignore, NoReply, Ok, Reply, StartError, Stop

# Every test runs on the compiled call path and on the Python reference.
pytestmark = pytest.mark.usefixtures("gen_impl")


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


class Counter(GenServer):
    def init(self, start):
        return Ok(start)

    def handle_call(self, request, from_, count):
        match request:
            case "get":
                return Reply(count, count)
            case ("add", n):
                return Reply(count + n, count + n)
            case "crash":
                raise ZeroDivisionError("bad code path")
            case ("stop", reason):
                return Stop(reason, count, reply="stopping")
            case ("later", who):
                send(who, ("deferred", from_))
                return NoReply(count)
        return Reply(("unknown", request), count)

    def handle_cast(self, msg, count):
        if msg == "crash":
            raise KeyError("cast crash")
        return NoReply(count + msg)


class Reporting(Counter):
    """Tells a watcher when terminate runs."""

    def init(self, args):
        watcher, trap = args
        if trap:
            otpvm.process_flag("trap_exit", True)
        self.watcher = watcher
        return Ok(0)

    def terminate(self, reason, state):
        send(self.watcher, ("terminated", reason, state))


@pytest.mark.parametrize("schedulers", [1, 4])
def test_call_cast_and_state(schedulers):
    async def main():
        pid = await gen_server.start_link(Counter, 10)
        gen_server.cast(pid, 5)
        assert await gen_server.call(pid, ("add", 1)) == 16
        return await gen_server.call(pid, "get")

    assert run(main, schedulers=schedulers) == 16


def test_start_registers_the_name_atomically_and_rejects_a_taken_name():
    async def main():
        pid = await gen_server.start(Counter, 1, name="counter")
        assert otpvm.whereis("counter") == pid
        assert await gen_server.call("counter", "get") == 1
        with pytest.raises(StartError) as info:
            await gen_server.start(Counter, 2, name="counter")
        return info.value.reason, pid

    reason, pid = run(main)
    assert reason == ("already_started", pid)


def test_init_failures():
    class Failing(GenServer):
        def init(self, how):
            if how == "raise":
                raise ValueError("cannot start")
            if how == "stop":
                return Stop("no_config")
            if how == "ignore":
                return Ignore
            return "not a result"

    async def main():
        otpvm.process_flag("trap_exit", True)
        outcomes = []
        for how in ["raise", "stop", "ignore", "bad"]:
            try:
                await gen_server.start_link(Failing, how)
            except StartError as exc:
                outcomes.append((how, type(exc.reason).__name__ if isinstance(
                    exc.reason, Exception) else exc.reason))
            except gen_server.Ignored:
                outcomes.append((how, "ignored"))
        return outcomes, otpvm.process_info(otpvm.self())["message_queue_len"]

    outcomes, left = run(main)
    assert outcomes == [("raise", "ValueError"), ("stop", "no_config"), ("ignore", "ignored"),
                        ("bad", "TypeError")]
    assert left == 0


def test_call_to_a_missing_server_is_noproc():
    async def main():
        with pytest.raises(CallError) as by_name:
            await gen_server.call("nobody", "get")
        pid = await gen_server.start(Counter, 0)
        await gen_server.stop(pid)
        with pytest.raises(CallError) as by_pid:
            await gen_server.call(pid, "get")
        return by_name.value.reason, by_pid.value.reason

    assert run(main) == ("noproc", "noproc")


def test_call_to_a_server_that_dies_mid_call_raises_with_its_reason(caplog):
    async def main():
        pid = await gen_server.start(Counter, 0)
        with pytest.raises(CallError) as info:
            await gen_server.call(pid, "crash")
        info_after = otpvm.process_info(otpvm.self())
        return info.value.reason, info_after["message_queue_len"], otpvm.is_alive(pid)

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason, queued, alive = run(main)
    assert isinstance(reason, ZeroDivisionError)
    assert queued == 0 and alive is False
    assert len([r for r in caplog.records if "crash report" in r.getMessage()]) == 1


def test_call_timeout_leaves_no_stray_reply_or_down():
    async def main(caller_pid_box):
        pid = await gen_server.start(Counter, 0)
        me = otpvm.self()
        with pytest.raises(TimeoutError):
            await gen_server.call(pid, ("later", me), timeout=0.05)
        # The server answers now, after the caller gave up:
        _, from_ = await receive(("deferred", ANY), timeout=5)
        gen_server.reply(from_, "too late")
        # A later call works and nothing stray is left behind.
        assert await gen_server.call(pid, "get") == 0
        await otpvm.sleep(0.02)
        return otpvm.process_info(me)["message_queue_len"]

    assert run(main, None) == 0


def test_deferred_reply_from_another_process():
    async def helper(from_):
        gen_server.reply(from_, "answered by a helper")

    class Delegating(GenServer):
        def handle_call(self, request, from_, state):
            otpvm.spawn(helper, from_)
            return NoReply(state)

    async def main():
        pid = await gen_server.start(Delegating)
        return await gen_server.call(pid, "anything")

    assert run(main) == "answered by a helper"


def test_stop_runs_terminate_and_waits():
    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Reporting, (me, False))
        await gen_server.stop(pid, "shutdown")
        msg = await receive(("terminated", ANY, ANY), timeout=5)
        return msg, otpvm.is_alive(pid)

    assert run(main) == (("terminated", "shutdown", 0), False)


def test_stop_from_handle_call_replies_first():
    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Reporting, (me, False))
        ref = otpvm.monitor(pid)
        answer = await gen_server.call(pid, ("stop", "normal"))
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return answer, down.reason, await receive(("terminated", ANY, ANY), timeout=5)

    assert run(main) == ("stopping", "normal", ("terminated", "normal", 0))


def test_parent_shutdown_runs_terminate_when_trapping_exits():
    async def parent(test_pid, trap):
        pid = await gen_server.start_link(Reporting, (test_pid, trap))
        send(test_pid, ("child", pid))
        await receive("never")

    async def main():
        me = otpvm.self()
        results = []
        for trap in (True, False):
            sup = otpvm.spawn(parent, me, trap)
            _, child = await receive(("child", ANY), timeout=5)
            ref = otpvm.monitor(child)
            otpvm.exit(sup, "shutdown")
            down = await receive(Down(ref, ANY, ANY), timeout=5)
            try:
                terminated = await receive(("terminated", ANY, ANY), timeout=0.2)
            except TimeoutError:
                terminated = None
            results.append((trap, down.reason, terminated))
        return results

    assert run(main) == [(True, "shutdown", ("terminated", "shutdown", 0)),
                         (False, "shutdown", None)]


def test_callback_crash_runs_terminate_with_the_exception():
    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Reporting, (me, False))
        gen_server.cast(pid, "crash")
        _, reason, state = await receive(("terminated", ANY, ANY), timeout=5)
        return type(reason).__name__, state

    assert run(main) == ("KeyError", 0)


def test_bad_return_value_crashes_the_server():
    class Bad(GenServer):
        def handle_call(self, request, from_, state):
            return "oops"

    async def main():
        pid = await gen_server.start(Bad)
        with pytest.raises(CallError) as info:
            await gen_server.call(pid, "x")
        return info.value.reason

    reason = run(main)
    assert isinstance(reason, TypeError) and "returned 'oops'" in str(reason)


def test_timeout_and_continue():
    class Timed(GenServer):
        def init(self, watcher):
            self.watcher = watcher
            return Ok([], continue_="warm_up")

        def handle_continue(self, what, log):
            return NoReply(log + [what])

        def handle_call(self, request, from_, log):
            if request == "arm":
                return Reply("armed", log, timeout=0.05)
            return Reply(log, log)

        def handle_info(self, msg, log):
            send(self.watcher, ("info", msg))
            return NoReply(log + [msg])

    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Timed, me)
        assert await gen_server.call(pid, "get") == ["warm_up"]
        await gen_server.call(pid, "arm")
        await receive(("info", "timeout"), timeout=5)
        await gen_server.call(pid, "arm")
        send(pid, "poke")                       # any message cancels the timeout
        await receive(("info", "poke"), timeout=5)
        await otpvm.sleep(0.1)
        return await gen_server.call(pid, "get")

    assert run(main) == ["warm_up", "timeout", "poke"]


def test_async_callbacks_can_call_other_servers():
    class Front(GenServer):
        def init(self, backend):
            return Ok(backend)

        async def handle_call(self, request, from_, backend):
            value = await gen_server.call(backend, ("add", request))
            return Reply(value * 10, backend)

    async def main():
        backend = await gen_server.start(Counter, 0)
        front = await gen_server.start(Front, backend)
        return [await gen_server.call(front, n) for n in (1, 2, 3)]

    assert run(main) == [10, 30, 60]


def test_sys_protocol_get_replace_suspend_resume():
    from otpvm import gen
    from otpvm.gen import From

    async def sys_call(pid, request):
        return await gen.call(pid, request, tag=gen.SYSTEM)

    async def main():
        pid = await gen_server.start(Counter, 3)
        state = await sys_call(pid, "get_state")
        await sys_call(pid, ("replace_state", lambda s: s * 2))
        await sys_call(pid, "suspend")
        gen_server.cast(pid, 1)                  # waits in the mailbox
        suspended_state = await sys_call(pid, "get_state")
        await sys_call(pid, "resume")
        status = await sys_call(pid, "get_status")
        return state, suspended_state, await gen_server.call(pid, "get"), status["state"]

    assert run(main) == (3, 6, 7, 7)
    assert From  # the public name exists


def test_many_concurrent_callers_on_several_schedulers():
    async def caller(server, parent, n):
        total = 0
        for _ in range(n):
            total = await gen_server.call(server, ("add", 1))
        send(parent, ("done", total))

    async def main(callers, n):
        server = await gen_server.start(Counter, 0)
        for _ in range(callers):
            otpvm.spawn(caller, server, otpvm.self(), n)
        for _ in range(callers):
            await receive(("done", ANY), timeout=30)
        return await gen_server.call(server, "get")

    assert run(main, 20, 200, schedulers=4) == 4000


@pytest.mark.usefixtures("gen_impl")
def test_call_self_fails_at_once_with_calling_self():
    """OTP's gen:call to the caller itself exits at once with calling_self
    instead of waiting for a reply that can never come (issue 13, item 4)."""
    class Selfish(GenServer):
        async def handle_call(self, request, from_, state):
            try:
                await gen_server.call(otpvm.self(), "again", timeout=None)
            except CallError as exc:
                return Reply(exc.reason, state)
            return Reply("answered?", state)

    async def main():
        pid = await gen_server.start(Selfish, None, name="selfish")
        with pytest.raises(CallError) as info:
            await gen_server.call(otpvm.self(), "x", timeout=None)
        assert info.value.reason == "calling_self"
        return await gen_server.call(pid, "go")

    assert run(main) == "calling_self"


def test_sentinels_keep_their_identity_in_messages():
    """``x is Ignore`` still holds after a send (the copier pickles such
    objects, and pickle rebuilt them as copies)."""
    from otpvm import gen_statem

    async def main():
        sentinels = (Ignore, gen_server.UNSET, gen_statem.KEEP, gen_statem.Ignore)
        send(otpvm.self(), [sentinels])
        [received] = await receive(timeout=5)
        return all(a is b for a, b in zip(received, sentinels, strict=True))

    assert run(main) is True


# -- issue 13: OTP fidelity ---------------------------------------------------


class Exiting(GenServer):
    """Calls exit(reason) from any callback; tells a watcher when terminate runs."""

    def init(self, watcher):
        self.watcher = watcher
        return Ok("s0")

    def handle_call(self, request, from_, state):
        otpvm.exit(request)

    def handle_cast(self, reason, state):
        otpvm.exit(reason)

    async def handle_info(self, reason, state):
        await otpvm.sleep(0)
        otpvm.exit(reason)

    def terminate(self, reason, state):
        send(self.watcher, ("terminated", reason, state))


@pytest.mark.parametrize("via", ["call", "cast", "async info"])
def test_exit_in_a_callback_runs_terminate_with_its_reason(via, caplog):
    # OTP: a callback ending with exit(R) runs terminate(R, State), the
    # server exits with R, and gen_server logs it (R is abnormal):
    #   handle_call(exit_me, _, S) -> exit(my_reason).
    #   catch gen_server:call(P, exit_me) -> {'EXIT', {my_reason, _}}
    #   terminate(my_reason, S) ran; {'EXIT', P, my_reason}; one error report.
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        pid = await gen_server.start_link(Exiting, me)
        reason = ("bye", via)
        if via == "call":
            with pytest.raises(CallError) as info:
                await gen_server.call(pid, reason)
            assert info.value.reason == reason
        elif via == "cast":
            gen_server.cast(pid, reason)
        else:
            send(pid, reason)
        terminated = await receive(("terminated", ANY, ANY), timeout=5)
        exited = await receive(otpvm.Exit(pid, ANY), timeout=5)
        return terminated, exited.reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        terminated, reason = run(main)
    assert terminated == ("terminated", ("bye", via), "s0")
    assert reason == ("bye", via)
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1 and f"\n  reason: {reason!r}" in reports[0]


def test_exit_normal_or_shutdown_in_a_callback_runs_terminate_and_logs_nothing(caplog):
    async def main():
        me = otpvm.self()
        out = []
        for reason in ("normal", "shutdown", ("shutdown", 1)):
            pid, ref = await gen_server.start_monitor(Exiting, me)
            gen_server.cast(pid, reason)
            out.append(await receive(("terminated", ANY, ANY), timeout=5))
            out.append((await receive(Down(ref, ANY, ANY), timeout=5)).reason)
        return out

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        out = run(main)
    assert out == [("terminated", "normal", "s0"), "normal",
                   ("terminated", "shutdown", "s0"), "shutdown",
                   ("terminated", ("shutdown", 1), "s0"), ("shutdown", 1)]
    assert caplog.records == []


class Idle(GenServer):
    """Sets an idle timeout; tells a watcher when it fires, with the time."""

    def init(self, args):
        self.watcher, self.after = args
        return Ok(0, timeout=self.after)

    def handle_info(self, msg, state):
        send(self.watcher, ("fired", msg, time.monotonic()))
        return NoReply(state + 1)


@pytest.mark.parametrize("schedulers", [1, 4])
def test_a_sys_request_keeps_the_idle_timeout_and_restarts_it(schedulers):
    # OTP: system_continue re-enters the loop with the same Time, so the
    # timeout starts again in full after each system message:
    #   init(P) -> {ok, P, 500}; at 300 ms sys:get_state(Pid)
    #   -> timeout after 812 ms (300 + 500), and only once.
    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Idle, (me, 0.2))
        await otpvm.sleep(0.05)
        asked = time.monotonic()
        assert await otpvm.sys.get_state(pid) == 0
        status = await otpvm.sys.get_status(pid)
        _, msg, fired = await receive(("fired", ANY, ANY), timeout=5)
        assert msg == "timeout" and fired - asked >= 0.19
        assert await otpvm.sys.get_state(pid) == 1
        with pytest.raises(TimeoutError):
            await receive(("fired", ANY, ANY), timeout=0.3)     # once only
        return status["state"]

    assert run(main, schedulers=schedulers) == 0


def test_suspend_stops_the_idle_timeout_and_resume_starts_it_again():
    class Rearming(Idle):
        def handle_cast(self, after, state):
            return NoReply(state, timeout=after)

    async def main():
        me = otpvm.self()
        pid = await gen_server.start(Rearming, (me, None))
        gen_server.cast(pid, 0.1)
        await otpvm.sys.suspend(pid)
        with pytest.raises(TimeoutError):
            await receive(("fired", ANY, ANY), timeout=0.3)     # suspended: no timeout
        resumed = time.monotonic()
        await otpvm.sys.resume(pid)
        _, msg, fired = await receive(("fired", ANY, ANY), timeout=5)
        assert fired - resumed >= 0.09
        with pytest.raises(TimeoutError):
            await receive(("fired", ANY, ANY), timeout=0.2)     # once only
        return msg

    assert run(main) == "timeout"


def test_a_reply_to_a_hand_made_from_is_a_plain_message():
    # OTP: gen:reply({Pid, Tag}, R) sends {Tag, R} to Pid when Tag is no alias:
    #   Ref = make_ref(), gen_server:reply({self(), Ref}, hello),
    #   receive M -> M end  =>  {Ref, hello}
    from otpvm.gen_server import From

    async def main():
        ref = otpvm.make_ref()
        gen_server.reply(From(otpvm.self(), ref), "hello")
        got = await receive((ref, ANY), timeout=5)
        # An alias that is no longer active drops the reply, as OTP's alias does.
        alias = otpvm.alias()
        otpvm.unalias(alias)
        gen_server.reply(From(otpvm.self(), alias), "late")
        with pytest.raises(TimeoutError):
            await receive((alias, ANY), timeout=0.05)
        return got[1], ref.is_alias, alias.is_alias

    assert run(main) == ("hello", False, True)


async def _enter_as_counter(name):
    gen_server.enter_loop(Counter, 7, name=name)


def test_enter_loop_turns_the_calling_process_into_a_server():
    async def main():
        pid = otpvm.spawn(_enter_as_counter, "entered")
        otpvm.register("entered", pid)      # before it runs: it checks the name
        assert await gen_server.call("entered", ("add", 3)) == 10
        gen_server.cast(pid, 5)
        assert await gen_server.call(pid, "get") == 15
        assert await otpvm.sys.get_state(pid) == 15
        ref = otpvm.monitor(pid)
        await gen_server.stop(pid, "normal")
        return (await receive(Down(ref, ANY, ANY), timeout=5)).reason

    assert run(main) == "normal"


def test_enter_loop_under_a_name_not_registered_exits_process_not_registered():
    # OTP: enter_loop(Mod, [], State, {local, Name}) in a process not
    # registered as Name exits with process_not_registered.
    async def main():
        pid = otpvm.spawn(_enter_as_counter, "nobody")
        ref = otpvm.monitor(pid)
        return (await receive(Down(ref, pid, ANY), timeout=5)).reason

    assert run(main) == "process_not_registered"


def test_enter_loop_with_a_timeout_a_parent_and_hibernate():
    class Watched(Counter):
        def handle_info(self, msg, count):
            send(otpvm.whereis("watcher"), ("info", msg))
            return NoReply(count)

        def terminate(self, reason, count):
            send(otpvm.whereis("watcher"), ("terminated", reason, count))

    async def body(parent):
        otpvm.process_flag("trap_exit", True)
        gen_server.enter_loop(Watched, 1, parent=parent, timeout=0.05, hibernate=True)

    async def main():
        otpvm.process_flag("trap_exit", True)
        otpvm.register("watcher", otpvm.self())
        pid = otpvm.spawn_link(body, otpvm.self())
        await receive(("info", "timeout"), timeout=5)
        otpvm.exit(pid, "shutdown")      # from the parent: terminate runs
        return await receive(("terminated", ANY, ANY), timeout=5)

    assert run(main) == ("terminated", "shutdown", 1)


def test_enter_loop_outside_a_coroutine_process_or_with_a_bad_class_is_an_error():
    class Inside(GenServer):
        def handle_call(self, request, from_, state):
            try:
                gen_server.enter_loop(Counter, 0)
            except TypeError as exc:
                return Reply(str(exc), state)

    async def main():
        with pytest.raises(TypeError, match="GenServer subclass"):
            gen_server.enter_loop(object, 0)
        pid = await gen_server.start(Inside)
        return await gen_server.call(pid, "try")

    assert "already a callback process" in run(main)


class Hoarder(GenServer):
    """Its state grows to a big dict, then shrinks to one key: the table stays big."""

    def init(self, _):
        return Ok({})

    def handle_call(self, request, from_, state):
        if request == "grow":
            state.update((i, None) for i in range(200_000))
            return Reply("grown", state)
        if request == "shrink":
            for i in range(1, 200_000):
                del state[i]
            return Reply("shrunk", state)
        if request == "hibernate":
            return Reply("hibernating", state, hibernate=True)
        if request == "continue":
            return Reply("continuing", state, continue_="then")
        return Reply(len(state), state)

    def handle_continue(self, what, state):
        return NoReply(state, hibernate=True)


def test_hibernate_shrinks_the_state_until_the_next_message():
    import gc
    import tracemalloc

    def info(pid):
        return otpvm.process_info(pid)["hibernating"]

    async def main():
        pid = await gen_server.start(Hoarder)
        await gen_server.call(pid, "grow")
        await gen_server.call(pid, "shrink")
        before = tracemalloc.get_traced_memory()[0]
        awake = info(pid)
        await gen_server.call(pid, "hibernate")
        await otpvm.sys.get_state(pid)     # a sys request: it hibernates again
        # Free-threaded CPython frees a table other threads may be reading
        # only at a quiescent point, which a collection is: without it the
        # old table would still count here.  (It shrinks no live dict.)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        asleep = info(pid)
        assert await gen_server.call(pid, "size") == 1     # the state is intact
        woken = info(pid)
        await gen_server.call(pid, "continue")             # handle_continue hibernates
        await otpvm.sys.get_state(pid)
        return before - after, (awake, asleep, woken, info(pid))

    tracemalloc.start()
    try:
        freed, states = run(main)
    finally:
        tracemalloc.stop()
    assert states == (False, True, False, True)
    assert freed > 4_000_000        # the 200 000-key table (about 10 MB) is gone


def test_hibernate_keeps_what_the_state_shares_and_objects_it_holds():
    class Shared(GenServer):
        def init(self, _):
            inner = [1, 2]
            self.lock = __import__("threading").Lock()    # not picklable: kept as is
            return Ok({"a": inner, "b": inner, "lock": self.lock, "self": None},
                      hibernate=True)

        def handle_call(self, request, from_, state):
            return Reply((state["a"] is state["b"], state["lock"] is self.lock), state)

    async def main():
        pid = await gen_server.start(Shared)
        return await gen_server.call(pid, "check")

    assert run(main) == (True, True)


class Stopping(GenServer):
    def handle_cast(self, reason, state):
        return Stop(reason, state)


@pytest.mark.parametrize("reason", ["bad", ("error", 1), "normal", "shutdown",
                                    ("shutdown", "x")])
def test_stop_with_an_abnormal_reason_logs_one_report(reason, caplog):
    # OTP: {stop, bad, S} from a callback runs terminate, and gen_server
    # logs "** Generic server ... terminating" (then proc_lib's crash
    # report: otpvm writes the one report); normal, shutdown and
    # {shutdown, _} log nothing.
    async def main():
        pid = await gen_server.start(Stopping, "s0")
        ref = otpvm.monitor(pid)
        gen_server.cast(pid, reason)
        return pid, (await receive(Down(ref, pid, ANY), timeout=5)).reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        pid, got = run(main)
    assert got == reason
    reports = [r.getMessage() for r in caplog.records]
    if reason in ("normal", "shutdown", ("shutdown", "x")):
        assert reports == []
    else:
        assert reports == [f"gen_server {pid!r} (Stopping) terminating\n  last message: "
                           f"{('$gen_cast', reason)!r}\n  state: 's0'\n  reason: {reason!r}"]


@pytest.mark.parametrize("bad, error", [(-1, ValueError), (float("nan"), ValueError),
                                        ("1", TypeError), (True, TypeError)])
def test_hibernate_after_must_be_seconds(bad, error):
    async def main():
        with pytest.raises(error, match="hibernate_after"):
            await gen_server.start(Stopping, hibernate_after=bad)

    run(main)


class Recorder(GenServer):
    def handle_info(self, msg, seen):
        return NoReply(seen + [msg])

    def handle_call(self, request, from_, seen):
        return Reply(seen, seen)


async def _recorder_loop(parent):
    gen_server.enter_loop(Recorder, [], parent=parent, hibernate_after=0.01)


def test_hibernate_after_timers_never_reach_the_callbacks_and_work_from_enter_loop():
    # OTP's hibernate_after is a receive timeout: the server's callbacks
    # never see it; enter_loop takes the option too.
    async def main():
        pid = otpvm.spawn_link(_recorder_loop, otpvm.self())
        sent = []
        for i in range(20):
            for _ in range(200):
                if otpvm.process_info(pid)["hibernating"]:
                    break
                await otpvm.sleep(0.005)
            else:
                raise AssertionError("not hibernating")
            send(pid, ("msg", i))
            sent.append(("msg", i))
        return sent, await gen_server.call(pid, "seen")

    sent, seen = run(main)
    assert seen == sent


class StoppingInit(GenServer):
    def init(self, reason):
        return Stop(reason)


def test_init_stop_with_an_abnormal_reason_logs_a_crash_report(caplog):
    # OTP 25: gen_server:start(M, bad, []) with init(R) -> {stop, R} gives
    # {error, bad} and one CRASH REPORT (exception exit: bad); with normal,
    # {error, normal} and nothing logged.
    async def main():
        out = []
        for reason in ("bad", "normal", "shutdown", ("shutdown", 1)):
            with pytest.raises(StartError) as info:
                await gen_server.start(StoppingInit, reason)
            out.append(info.value.reason)
        return out

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        assert run(main) == ["bad", "normal", "shutdown", ("shutdown", 1)]
    [report] = [r.getMessage() for r in caplog.records]
    assert report.startswith("crash report: process <") and report.endswith(
        " exited with 'bad' (init returned Stop)\n"
        "  initial call: test_gen_server.StoppingInit.init")
