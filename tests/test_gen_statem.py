"""gen_statem, as OTP specifies it.

Negative checks ("this timeout never fired") use a later timer as a fence:
timers fire in deadline order, so when the fence's event arrives, an earlier
timeout that was not cancelled would already have been handled.
"""

import gc
import logging

import pytest

import otpvm
from otpvm import ANY, Down, gen_statem, receive, send
from otpvm.gen_statem import (
    CallError,
    EventTimeout,
    GenericTimeout,
    GenStatem,
    Hibernate,
    Ignore,
    Ignored,
    KeepState,
    KeepStateAndData,
    NextEvent,
    NextState,
    Postpone,
    RepeatState,
    RepeatStateAndData,
    Reply,
    StartError,
    StatemError,
    StateTimeout,
    Stop,
    StopAndReply,
)


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


# -- the code lock, OTP's example, in both callback modes ---------------------


class CodeLock(GenStatem):
    """OTP's code_lock with state functions: buttons are casts, the door
    reports to a watcher, and it locks again after a state timeout.
    """

    def init(self, args):
        code, watcher, open_time = args
        self.watcher = watcher
        self.open_time = open_time
        return "locked", {"code": code, "length": len(code), "buttons": []}

    def locked(self, event_type, content, data):
        match event_type, content:
            case "cast", ("button", button):
                buttons = (data["buttons"] + [button])[-data["length"]:]
                if buttons == data["code"]:
                    send(self.watcher, "unlocked")
                    return NextState("open", {**data, "buttons": []},
                                     StateTimeout(self.open_time, "lock"))
                return KeepState({**data, "buttons": buttons})
            case ("call", from_), "status":
                return KeepStateAndData(Reply(from_, "locked"))

    def open(self, event_type, content, data):
        match event_type, content:
            case "state_timeout", "lock":
                send(self.watcher, "locked")
                return NextState("locked", data)
            case "cast", ("button", _):
                return KeepStateAndData()      # buttons do nothing while open
            case ("call", from_), "status":
                return KeepStateAndData([Reply(from_, "open")])


class CodeLockEnter(GenStatem):
    """The same lock with handle_event and state enter calls (OTP's second
    version): entering 'locked' clears the buttons, entering 'open' arms the
    state timeout.
    """

    def callback_mode(self):
        return ["handle_event_function", "state_enter"]

    def init(self, args):
        code, watcher, open_time = args
        self.watcher = watcher
        self.open_time = open_time
        return "locked", {"code": code, "length": len(code), "buttons": []}

    def handle_event(self, event_type, content, state, data):
        match event_type, content, state:
            case "enter", _, "locked":
                send(self.watcher, ("enter", "locked"))
                return KeepState({**data, "buttons": []})
            case "enter", _, "open":
                send(self.watcher, ("enter", "open"))
                return KeepStateAndData(StateTimeout(self.open_time, "lock"))
            case "state_timeout", "lock", "open":
                return NextState("locked", data)
            case "cast", ("button", button), "locked":
                buttons = (data["buttons"] + [button])[-data["length"]:]
                if buttons == data["code"]:
                    return NextState("open", data)
                return KeepState({**data, "buttons": buttons})
            case "cast", ("button", _), "open":
                return KeepStateAndData(Postpone())   # pressed while open: for the next lock
            case ("call", from_), "status", _:
                return KeepStateAndData(Reply(from_, state))
        raise AssertionError((event_type, content, state))


@pytest.mark.parametrize("schedulers", [1, 4])
def test_code_lock_state_functions(schedulers):
    async def main():
        pid = await gen_statem.start_link(CodeLock, ([1, 2, 3], otpvm.self(), 0.05))
        for button in [9, 1, 2]:
            gen_statem.cast(pid, ("button", button))
        assert await gen_statem.call(pid, "status") == "locked"
        gen_statem.cast(pid, ("button", 3))
        await receive("unlocked", timeout=5)
        assert await gen_statem.call(pid, "status") == "open"
        gen_statem.cast(pid, ("button", 7))              # ignored while open
        await receive("locked", timeout=5)               # the state timeout
        status = await gen_statem.call(pid, "status")
        for button in [1, 2, 3]:
            gen_statem.cast(pid, ("button", button))
        await receive("unlocked", timeout=5)
        return status

    assert run(main, schedulers=schedulers) == "locked"


def test_code_lock_handle_event_with_state_enter():
    async def main():
        pid = await gen_statem.start_link(CodeLockEnter, ([1, 2], otpvm.self(), 0.05))
        first = await receive(timeout=5)                  # the initial state enter call
        gen_statem.cast(pid, ("button", 1))
        gen_statem.cast(pid, ("button", 2))
        gen_statem.cast(pid, ("button", 1))               # postponed while open
        gen_statem.cast(pid, ("button", 2))               # postponed while open
        await receive(("enter", "open"), timeout=5)
        await receive(("enter", "locked"), timeout=5)     # after the state timeout
        # the postponed buttons are retried in the new state, in order: it opens again
        await receive(("enter", "open"), timeout=5)
        return first, await gen_statem.call(pid, "status")

    assert run(main) == (("enter", "locked"), "open")


# -- a recording state machine for the precise tests ---------------------------


class Recorder(GenStatem):
    """Records every (state, event_type, content) and sends it to a watcher.
    The test scripts it: a cast ('do', result) returns that result.
    """

    def callback_mode(self):
        return ("handle_event_function", "state_enter") if self.enter else "handle_event_function"

    def init(self, args):
        self.watcher, self.enter, init = args
        return init

    def handle_event(self, event_type, content, state, data):
        if event_type == "enter":
            send(self.watcher, (state, "enter", content))
            return data.get(("enter", state), KeepStateAndData())
        if isinstance(event_type, tuple) and event_type[0] == "call":
            if content == "log":
                return KeepStateAndData(Reply(event_type[1], state))
            send(self.watcher, (state, "call", content))
            return data[content](event_type[1]) if content in data else KeepStateAndData()
        send(self.watcher, (state, event_type, content))
        if type(content) is tuple and content[0] == "do":
            return content[1]
        return data.get(content, KeepStateAndData())


async def recorder(init, enter=False):
    return await gen_statem.start_link(Recorder, (otpvm.self(), enter, init))


async def events(n):
    return [await receive(timeout=5) for _ in range(n)]


async def nothing_more():
    with pytest.raises(TimeoutError):
        await receive(timeout=0)
    return True


def test_initial_enter_call_and_init_actions_come_before_mailbox_messages():
    async def main():
        init = ("idle", {}, [NextEvent("internal", "first"), NextEvent("internal", "second")])
        pid = await recorder(init, enter=True)
        gen_statem.cast(pid, "third")
        return await events(4)

    assert run(main) == [("idle", "enter", "idle"), ("idle", "internal", "first"),
                         ("idle", "internal", "second"), ("idle", "cast", "third")]


def test_enter_calls_on_state_change_only_and_repeat_state():
    async def main():
        pid = await recorder(("a", {}), enter=True)
        await events(1)
        gen_statem.cast(pid, ("do", NextState("a", {})))      # same state: no enter call
        gen_statem.cast(pid, ("do", KeepStateAndData()))
        gen_statem.cast(pid, ("do", RepeatStateAndData()))    # enter again, old state 'a'
        gen_statem.cast(pid, ("do", NextState("b", {})))      # enter 'b' from 'a'
        gen_statem.cast(pid, ("do", RepeatState({"x": 1})))
        got = await events(8)
        assert await nothing_more()
        return got

    do = "cast"
    assert [e[:2] for e in run(main)] == [
        ("a", do), ("a", do), ("a", do), ("a", "enter"), ("a", do), ("b", "enter"),
        ("b", do), ("b", "enter")]


def test_enter_call_old_state_and_its_actions():
    async def main():
        data = {("enter", "b"): KeepStateAndData([StateTimeout(0, "armed"),
                                                    EventTimeout(0, "never")])}
        pid = await recorder(("a", data), enter=True)
        await events(1)
        gen_statem.cast(pid, ("do", NextState("b", data, NextEvent("internal", "ne"))))
        got = await events(4)
        assert await gen_statem.call(pid, "log") == "b"
        assert await nothing_more()
        return got[1:]

    # the enter call's actions join the state function's: the inserted event
    # comes first and cancels the zero event timeout; the state timeout follows
    assert run(main) == [("b", "enter", "a"), ("b", "internal", "ne"),
                         ("b", "state_timeout", "armed")]


@pytest.mark.parametrize("bad", [
    NextState("elsewhere", {}),
    KeepStateAndData(Postpone()),
    KeepStateAndData(NextEvent("internal", 1)),
])
def test_enter_call_may_not_change_state_postpone_or_insert_events(bad, caplog):
    async def main():
        data = {("enter", "b"): bad}
        pid, ref = await gen_statem.start_monitor(Recorder, (otpvm.self(), True, ("a", data)))
        gen_statem.cast(pid, ("do", NextState("b", data)))
        return (await receive(Down(ref, ANY, ANY), timeout=5)).reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason = run(main)
    assert isinstance(reason, StatemError)
    assert reason.reason[0] in ("bad_state_enter_return_from_state_function",
                                "bad_state_enter_action_from_state_function")


def test_postponed_events_are_retried_in_order_after_a_state_change():
    data = {"x": KeepStateAndData(Postpone()), "y": KeepStateAndData(Postpone()),
            "z": KeepStateAndData(Postpone())}
    data["same"] = NextState("a", data)                   # same state: nothing retried
    data["go"] = NextState("b", data, Postpone())         # retried itself, after the others

    async def main():
        pid = await recorder(("a", data))
        for content in ["x", "y", "z", "same", "go", "after"]:
            gen_statem.cast(pid, content)
        got = await events(10)
        assert await nothing_more()
        return got

    assert run(main) == [
        ("a", "cast", "x"), ("a", "cast", "y"), ("a", "cast", "z"), ("a", "cast", "same"),
        ("a", "cast", "go"),
        ("b", "cast", "x"), ("b", "cast", "y"), ("b", "cast", "z"), ("b", "cast", "go"),
        ("b", "cast", "after")]


def test_next_events_are_inserted_in_order_before_queued_events():
    async def main():
        data = {
            "x": KeepStateAndData([NextEvent("internal", "n1"), NextEvent("internal", "n2")]),
            "n1": KeepStateAndData(NextEvent("cast", "n1.1")),
        }
        pid = await recorder(("s", data))
        gen_statem.cast(pid, "x")
        gen_statem.cast(pid, "y")
        return await events(5)

    assert run(main) == [("s", "cast", "x"), ("s", "internal", "n1"), ("s", "cast", "n1.1"),
                         ("s", "internal", "n2"), ("s", "cast", "y")]


def test_next_events_go_before_retried_postponed_events():
    async def main():
        data = {"p": KeepStateAndData(Postpone()),
                "go": NextState("b", {}, NextEvent("internal", "inserted"))}
        pid = await recorder(("a", data))
        gen_statem.cast(pid, "p")
        gen_statem.cast(pid, "go")
        return await events(4)

    assert run(main) == [("a", "cast", "p"), ("a", "cast", "go"),
                         ("b", "internal", "inserted"), ("b", "cast", "p")]


# -- timeouts -----------------------------------------------------------------


def test_event_timeout_fires_when_idle_and_any_event_cancels_it():
    async def main():
        pid = await recorder(("s", {}))
        gen_statem.cast(pid, ("do", KeepStateAndData(EventTimeout(0.02, "idle"))))
        fired = await events(2)
        # armed, then cancelled by the next event (already queued behind it)
        gen_statem.cast(pid, ("do", KeepStateAndData([EventTimeout(0.02, "cancelled"),
                                                      GenericTimeout("fence", 0.1)])))
        gen_statem.cast(pid, "poke")
        fenced = await events(3)
        assert await nothing_more()
        return fired, fenced

    fired, fenced = run(main)
    assert fired[1] == ("s", "timeout", "idle")
    assert [e[1:] for e in fenced[1:]] == [("cast", "poke"), (("generic_timeout", "fence"), None)]


def test_zero_event_timeout_fires_only_if_no_event_is_queued():
    async def main():
        pid = await recorder(("s", {}))
        gen_statem.cast(pid, ("do", KeepStateAndData(EventTimeout(0, "zero"))))
        gen_statem.cast(pid, "queued")              # already in the mailbox
        first = await events(3)
        gen_statem.cast(pid, ("do", KeepStateAndData([EventTimeout(0, "never"),
                                                      NextEvent("internal", "ne")])))
        second = await events(2)
        assert await gen_statem.call(pid, "log") == "s"
        assert await nothing_more()
        return first, second

    first, second = run(main)
    assert [e[1:] for e in first[1:]] == [("timeout", "zero"), ("cast", "queued")]
    assert second[1] == ("s", "internal", "ne")


def test_state_timeout_survives_events_and_is_cancelled_by_a_state_change():
    async def main():
        pid = await recorder(("a", {}))
        gen_statem.cast(pid, ("do", KeepStateAndData(StateTimeout(0.03, "st1"))))
        gen_statem.cast(pid, "event in between")
        survived = await events(3)
        gen_statem.cast(pid, ("do", KeepStateAndData([StateTimeout(0.02, "cancelled"),
                                                      GenericTimeout("fence", 0.1)])))
        gen_statem.cast(pid, ("do", NextState("b", {})))
        cancelled = await events(3)
        # a state timeout set while changing state belongs to the new state
        gen_statem.cast(pid, ("do", NextState("c", {}, StateTimeout(0.01, "in c"))))
        new_state = await events(2)
        assert await nothing_more()
        return survived, cancelled, new_state

    survived, cancelled, new_state = run(main)
    assert survived[2] == ("a", "state_timeout", "st1")
    assert cancelled[2] == ("b", ("generic_timeout", "fence"), None)
    assert new_state[1] == ("c", "state_timeout", "in c")


def test_zero_state_timeout_is_cancelled_by_a_state_change_from_a_next_event():
    async def main():
        data = {"go": NextState("b", {})}
        pid = await recorder(("a", data))
        gen_statem.cast(pid, ("do", KeepStateAndData([StateTimeout(0, "never"),
                                                      NextEvent("internal", "go")])))
        got = await events(2)
        assert await gen_statem.call(pid, "log") == "b"
        assert await nothing_more()
        return got

    assert run(main)[1] == ("a", "internal", "go")


def test_timeout_cancel_and_update():
    async def main():
        pid = await recorder(("s", {}))
        gen_statem.cast(pid, ("do", KeepStateAndData([
            StateTimeout(0.02, "old"), GenericTimeout("g", 0.02, "old"),
            GenericTimeout("h", 0.02, "h"), GenericTimeout("fence", 0.1)])))
        gen_statem.cast(pid, ("do", KeepStateAndData([
            StateTimeout.update("new"), GenericTimeout.update("g", "new"),
            GenericTimeout.cancel("h")])))
        got = await events(5)
        # update of a timer that is not running fires at once (a zero timeout)
        gen_statem.cast(pid, ("do", KeepStateAndData(EventTimeout.update("now"))))
        got += await events(2)
        assert await nothing_more()
        return got

    got = run(main)
    assert sorted(map(repr, got[2:4])) == sorted(map(repr, [
        ("s", "state_timeout", "new"), ("s", ("generic_timeout", "g"), "new")]))
    assert got[4] == ("s", ("generic_timeout", "fence"), None)
    assert got[6] == ("s", "timeout", "now")


def test_generic_timeouts_are_named_and_survive_state_changes_and_events():
    async def main():
        pid = await recorder(("a", {}))
        gen_statem.cast(pid, ("do", NextState("b", {}, [
            GenericTimeout("one", 0.04, 1), GenericTimeout("two", 0.02, 2),
            GenericTimeout("one", 0.03, "last wins")])))
        gen_statem.cast(pid, ("do", NextState("c", {})))
        return await events(4)

    got = run(main)
    assert got[2:] == [("c", ("generic_timeout", "two"), 2),
                       ("c", ("generic_timeout", "one"), "last wins")]


def test_absolute_timeout():
    import time

    async def main():
        pid = await recorder(("s", {}))
        deadline = time.monotonic() + 0.03
        gen_statem.cast(pid, ("do", KeepStateAndData(
            GenericTimeout("abs", deadline, "at", absolute=True))))
        got = await events(2)
        return got, time.monotonic() >= deadline

    got, late_enough = run(main)
    assert got[1] == ("s", ("generic_timeout", "abs"), "at") and late_enough


# -- calls and replies ------------------------------------------------------------


class Queue(GenStatem):
    """Answers 'get' calls only in state 'ready' (postponing them before),
    and replies to several callers at once with Reply actions.
    """

    def callback_mode(self):
        return "state_functions"

    def init(self, _):
        return "waiting", []

    def waiting(self, event_type, content, data):
        match event_type, content:
            case ("call", _), "get":
                return KeepStateAndData(Postpone())
            case ("call", from_), ("put", value):
                return NextState("ready", value, [Reply(from_, "ok"), Hibernate()])
            case ("call", from_), "hold":
                return KeepState(data + [from_])
            case ("call", from_), "release":
                return KeepState([], [Reply(f, n) for n, f in enumerate(data)]
                                 + [Reply(from_, len(data))])
            case ("call", from_), "quit":
                return StopAndReply("normal", [Reply(from_, "bye")])

    def ready(self, event_type, content, data):
        match event_type, content:
            case ("call", from_), "get":
                return KeepStateAndData(Reply(from_, data))


async def get_state(pid):
    return await otpvm.gen.call(pid, "get_state", tag=otpvm.gen.SYSTEM)


async def until(pid, predicate):
    """Polls the state machine's (state, data) until predicate holds."""
    while not predicate(*(await get_state(pid))):
        await otpvm.sleep(0.001)


async def call_and_report(parent, pid, request):
    send(parent, (request, await gen_statem.call(pid, request)))


def test_postponed_calls_are_answered_after_the_state_change():
    async def main():
        pid = await gen_statem.start_link(Queue, None)
        for _ in range(2):
            otpvm.spawn(call_and_report, otpvm.self(), pid, "get")
        while len((await otpvm.gen.call(pid, "get_status", tag=otpvm.gen.SYSTEM))
                  ["postponed"]) < 2:
            await otpvm.sleep(0.001)
        put = await gen_statem.call(pid, ("put", 42))
        got = [await receive(("get", ANY), timeout=5) for _ in range(2)]
        return put, got

    assert run(main) == ("ok", [("get", 42), ("get", 42)])


def test_reply_actions_to_several_callers_then_stop_and_reply():
    async def main():
        pid, ref = await gen_statem.start_monitor(Queue, None)
        for _ in range(3):
            otpvm.spawn(call_and_report, otpvm.self(), pid, "hold")
        await until(pid, lambda state, data: len(data) == 3)
        count = await gen_statem.call(pid, "release")
        held = sorted([(await receive(("hold", ANY), timeout=5))[1] for _ in range(3)])
        bye = await gen_statem.call(pid, "quit")
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return count, held, bye, down.reason

    assert run(main) == (3, [0, 1, 2], "bye", "normal")


def test_reply_from_a_later_event():
    class Deferred(GenStatem):
        def callback_mode(self):
            return "handle_event_function"

        def init(self, _):
            return "idle", None

        def handle_event(self, event_type, content, state, data):
            match event_type, content, state:
                case ("call", from_), "ask", "idle":
                    return NextState("asked", from_)
                case "cast", ("answer", value), "asked":
                    gen_statem.reply(data, value)
                    return NextState("idle", None)

    async def main():
        pid = await gen_statem.start_link(Deferred, None)
        otpvm.spawn(call_and_report, otpvm.self(), pid, "ask")
        await until(pid, lambda state, data: state == "asked")
        gen_statem.cast(pid, ("answer", 7))
        return await receive(("ask", ANY), timeout=5)

    assert run(main) == ("ask", 7)


def test_call_to_a_dead_or_missing_statem_is_noproc():
    async def main():
        pid, ref = await gen_statem.start_monitor(Queue, None)
        await gen_statem.stop(pid)
        await receive(Down(ref, ANY, ANY), timeout=5)
        reasons = []
        for dest in (pid, "nobody"):
            with pytest.raises(CallError) as info:
                await gen_statem.call(dest, "get")
            reasons.append(info.value.reason)
        with pytest.raises(CallError) as info:
            await gen_statem.stop(pid)
        return reasons, info.value.reason

    assert run(main) == (["noproc", "noproc"], "noproc")


def test_call_timeout():
    async def main():
        pid = await gen_statem.start_link(Queue, None)
        with pytest.raises(TimeoutError):
            await gen_statem.call(pid, "get", timeout=0.02)   # postponed forever
        return await nothing_more()

    assert run(main)


# -- start, stop, terminate, crashes --------------------------------------------


class Terminating(GenStatem):
    def init(self, args):
        self.watcher, trap = args
        if trap:
            otpvm.process_flag("trap_exit", True)
        return "running", {"n": 1}

    def running(self, event_type, content, data):
        match content:
            case "crash":
                raise ZeroDivisionError("bad code path")
            case "bad return":
                return "not a result"
            case ("stop", reason):
                return Stop(reason, {"n": 2})
            case "exit":
                otpvm.exit("from exit")
        return KeepStateAndData()

    def terminate(self, reason, state, data):
        send(self.watcher, ("terminated", reason, state, data))


def test_stop_runs_terminate_and_waits():
    async def main():
        pid = await gen_statem.start(Terminating, (otpvm.self(), False), name="term")
        await gen_statem.stop("term", "shutdown", timeout=5)
        msg = await receive(timeout=0)
        return msg, otpvm.whereis("term"), otpvm.is_alive(pid)

    assert run(main) == (("terminated", "shutdown", "running", {"n": 1}), None, False)


def test_stop_result_runs_terminate_with_new_data(caplog):
    async def main():
        pid, ref = await gen_statem.start_monitor(Terminating, (otpvm.self(), False))
        gen_statem.cast(pid, ("stop", "normal"))
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return await receive(("terminated", ANY, ANY, ANY), timeout=0), down.reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        assert run(main) == (("terminated", "normal", "running", {"n": 2}), "normal")
    assert not caplog.records


def test_parent_shutdown_runs_terminate_when_trapping_exits():
    async def parent(test, trap):
        pid = await gen_statem.start_link(Terminating, (test, trap))
        send(test, ("child", pid))
        await receive()

    async def main():
        results = []
        for trap in (True, False):
            ppid = otpvm.spawn(parent, otpvm.self(), trap)
            _, child = await receive(("child", ANY), timeout=5)
            ref = otpvm.monitor(child)
            otpvm.exit(ppid, "shutdown")
            down = await receive(Down(ref, ANY, ANY), timeout=5)
            results.append((down.reason, await receive(timeout=0.05) if trap else None))
        return results

    assert run(main) == [("shutdown", ("terminated", "shutdown", "running", {"n": 1})),
                         ("shutdown", None)]


@pytest.mark.parametrize("poke", ["crash", "bad return", "exit"])
def test_crash_runs_terminate_and_is_logged_once(poke, caplog):
    async def main():
        pid, ref = await gen_statem.start_monitor(Terminating, (otpvm.self(), False))
        gen_statem.cast(pid, poke)
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        _, reason, state, _ = await receive(("terminated", ANY, ANY, ANY), timeout=0)
        return down.reason, reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        down, reason = run(main)
    assert repr(down) == repr(reason)    # each a copy of the same exception
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    if poke == "crash":
        assert isinstance(reason, ZeroDivisionError)
    elif poke == "bad return":
        assert isinstance(reason, StatemError)
        assert reason.reason == ("bad_return_from_state_function", "not a result")
    else:
        assert reason == "from exit"


def test_start_failures():
    class Failing(GenStatem):
        def init(self, how):
            match how:
                case "raise":
                    raise ValueError("no")
                case "stop":
                    return Stop("refused")
                case "ignore":
                    return Ignore
                case "bad":
                    return ["neither"]
                case "bad mode":
                    self.callback_mode = lambda: "nonsense"
                    return "s", None

    async def main():
        otpvm.process_flag("trap_exit", True)
        reasons = {}
        for how in ("raise", "stop", "bad", "bad mode"):
            with pytest.raises(StartError) as info:
                await gen_statem.start_link(Failing, how)
            reasons[how] = info.value.reason
        with pytest.raises(Ignored):
            await gen_statem.start(Failing, "ignore")
        assert await nothing_more()               # start_link flushed the Exit messages
        return reasons

    reasons = run(main)
    assert isinstance(reasons["raise"], ValueError)
    assert reasons["stop"] == "refused"
    assert reasons["bad"].reason == ("bad_return_from_init", ["neither"])
    assert reasons["bad mode"].reason == ("bad_return_from_callback_mode", "nonsense")


def test_name_conflict_is_already_started():
    async def main():
        pid = await gen_statem.start(Queue, None, name="queue")
        with pytest.raises(StartError) as info:
            await gen_statem.start_link(Queue, None, name="queue")
        return pid, info.value.reason, otpvm.whereis("queue")

    pid, reason, registered = run(main)
    assert reason == ("already_started", pid) and registered == pid


def test_concurrent_starts_with_one_name_register_exactly_once():
    async def starter(parent):
        try:
            pid = await gen_statem.start(Queue, None, name="contended")
            send(parent, ("ok", pid))
        except StartError as exc:
            send(parent, ("error", exc.reason))

    async def main():
        for _ in range(8):
            otpvm.spawn(starter, otpvm.self())
        results = [await receive(timeout=5) for _ in range(8)]
        winners = [r[1] for r in results if r[0] == "ok"]
        losers = [r[1] for r in results if r[0] == "error"]
        return winners, losers, otpvm.whereis("contended")

    winners, losers, registered = run(main, schedulers=4)
    assert winners == [registered]
    assert losers == [("already_started", registered)] * 7


# -- async callbacks -----------------------------------------------------------------


class Proxy(GenStatem):
    """Async init and async state functions that call another state machine."""

    def callback_mode(self):
        return ("state_functions", "state_enter")

    async def init(self, target):
        self.target = target
        assert await gen_statem.call(target, "log") == "s"
        return "forwarding", []

    async def forwarding(self, event_type, content, data):
        if event_type == "enter":
            return KeepStateAndData()
        _, from_ = event_type
        state = await gen_statem.call(self.target, "log")
        return KeepState(data + [content], Reply(from_, (state, data + [content])))


def test_async_init_and_state_functions():
    async def main():
        target = await recorder(("s", {}))
        pid = await gen_statem.start_link(Proxy, target)
        first = await gen_statem.call(pid, "a")
        second = await gen_statem.call(pid, "b")
        return first, second

    assert run(main) == (("s", ["a"]), ("s", ["a", "b"]))


def test_sys_get_state_and_info_events():
    async def main():
        pid = await recorder(("s", {"k": 1}))
        send(pid, "plain message")
        got = await receive(timeout=5)
        return got, await get_state(pid)

    assert run(main) == (("s", "info", "plain message"), ("s", {"k": 1}))


class Arming(GenStatem):
    """Arms the timeout a call names, then reports every event to its test."""

    def init(self, test):
        return "s", test

    def s(self, event_type, content, test):
        if event_type == "cast":
            return KeepStateAndData({"event": EventTimeout(0.2, "event"),
                                     "state": StateTimeout(0.2, "state"),
                                     "generic": GenericTimeout("g", 0.2, "generic")}[content])
        send(test, (event_type, content))
        return KeepStateAndData()


@pytest.mark.parametrize("request_kind", ["get_state", "get_status", "suspend"])
def test_system_messages_keep_pending_timeouts(request_kind):
    """OTP: system messages are not events: a get_state, get_status or
    suspend/resume arriving while a timeout runs leaves it running."""
    from otpvm import sys

    async def main():
        fired = []
        for kind in ("event", "state", "generic"):
            pid = await gen_statem.start(Arming, otpvm.self())
            gen_statem.cast(pid, kind)
            await sys.get_state(pid)                # the timeout runs now
            if request_kind == "suspend":
                await sys.suspend(pid)
                await sys.resume(pid)
            else:
                await getattr(sys, request_kind)(pid)
            fired.append(await receive(timeout=5))
            await gen_statem.stop(pid)
        return fired

    assert run(main, schedulers=2) == [("timeout", "event"), ("state_timeout", "state"),
                                       (("generic_timeout", "g"), "generic")]


def test_start_link_timeout_leaves_the_caller_alone():
    """As proc_lib: a start_link that times out unlinks before killing, so
    the caller neither dies (not trapping) nor finds an Exit (trapping)."""
    # erl (OTP 25), with init/1 sleeping 1000 ms:
    #   process_flag(trap_exit, true),
    #   {error, timeout} = gen_statem:start_link(?MODULE, [], [{timeout, 20}]),
    #   timer:sleep(100), [] = flush()
    class Slow(GenStatem):
        async def init(self, test):
            send(test, ("starting", otpvm.self()))
            await otpvm.sleep(1.0)
            return "s", None

    async def main(trap):
        otpvm.process_flag("trap_exit", trap)
        with pytest.raises(StartError) as info:
            await gen_statem.start_link(Slow, otpvm.self(), timeout=0.1)
        assert info.value.reason == "timeout"
        _, child = await receive(("starting", ANY), timeout=0)
        ref = otpvm.monitor(child)
        await receive(Down(ref, child, ANY), timeout=5)
        # an exit signal from the child, had there been one, came before its Down
        with pytest.raises(TimeoutError):
            await receive(timeout=0.05)
        return True

    assert run(main, False) is True
    assert run(main, True) is True


def test_sys_log_records_events_and_replies():
    """sys.log/get_log (and trace) work on a gen_statem as on a gen_server:
    each event handled is ('in', (type, content)), each reply ('out', value,
    to, state)."""
    from otpvm import sys

    class Echo(GenStatem):
        def init(self, _):
            return "s", None

        def s(self, event_type, content, data):
            if event_type == "cast":
                return KeepStateAndData()
            return NextState("t", data, Reply(event_type[1], content))

    async def main():
        me = otpvm.self()
        pid = await gen_statem.start(Echo)
        await sys.log(pid, True)
        await sys.trace(pid, True)
        gen_statem.cast(pid, "x")
        assert await gen_statem.call(pid, "y") == "y"
        log = await sys.get_log(pid)
        await sys.log(pid, False)
        await sys.trace(pid, False)
        assert await sys.get_log(pid) == []
        await gen_statem.stop(pid)
        return log, me

    log, me = run(main)
    assert log[0] == ("in", ("cast", "x"))
    (tag, ((call, from_), request)), out = log[1], log[2]
    assert (tag, call, from_.pid, request) == ("in", "call", me, "y")
    assert out == ("out", "y", me, "t")
    assert len(log) == 3


class _Other(GenStatem):
    def callback_mode(self):
        return "handle_event_function"

    def handle_event(self, event_type, content, state, data):
        return KeepStateAndData(Reply(event_type[1], ("other", state, data)))


class _Changer(GenStatem):
    """Changes its class on request, from a state callback or (wrongly) an enter call."""

    def callback_mode(self):
        return ("handle_event_function", "state_enter")

    def init(self, _):
        return "a", 0

    def handle_event(self, event_type, content, state, data):
        from otpvm.gen_statem import ChangeCallbackModule
        if event_type == "enter":
            if state == "b":
                return KeepStateAndData(ChangeCallbackModule(_Other))   # not allowed
            return KeepStateAndData()
        match content:
            case "change":
                return NextState("c", 1, [ChangeCallbackModule(_Other), Reply(event_type[1], "ok")])
            case "bad class":
                return KeepStateAndData(ChangeCallbackModule(int))
            case "change in enter":
                return NextState("b", data)


@pytest.mark.parametrize("request_, reason", [
    ("change", None),
    ("bad class", "bad_action_from_state_function"),
    ("change in enter", "bad_state_enter_action_from_state_function")])
def test_change_callback_module(request_, reason):
    """ChangeCallbackModule goes on with a new instance of the class; a
    non-GenStatem class is a bad action, and so is a change from a state
    enter call (OTP: callback module actions are not enter actions)."""
    async def main():
        pid, ref = await gen_statem.start_monitor(_Changer)
        if reason is None:
            assert await gen_statem.call(pid, request_) == "ok"
            return await gen_statem.call(pid, "who")
        with pytest.raises(CallError) as info:
            await gen_statem.call(pid, request_)
        return info.value.reason.reason[0]

    assert run(main) == (("other", "c", 1) if reason is None else reason)


class _Unprintable:
    def __repr__(self):
        raise RuntimeError("no repr")


def test_crash_report_survives_a_status_that_cannot_be_shown(caplog):
    """A crash still ends the process with its own exception when the
    status (here the data's repr) cannot be shown in the report."""
    class Fragile(GenStatem):
        def init(self, _):
            return "s", _Unprintable()

        def s(self, event_type, content, data):
            raise ZeroDivisionError("boom")

    async def main():
        pid, ref = await gen_statem.start_monitor(Fragile)
        gen_statem.cast(pid, "go")
        return (await receive(Down(ref, pid, ANY), timeout=5)).reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason = run(main)
    assert isinstance(reason, ZeroDivisionError)
    assert any("its status could not be shown" in r.getMessage() for r in caplog.records)


class _Entered(GenStatem):
    """Reports every event to the process named in its data."""

    def callback_mode(self):
        return ("handle_event_function", "state_enter")

    def handle_event(self, event_type, content, state, test):
        send(test, (event_type, content, state))
        if event_type == "cast":
            return Stop("done")
        return KeepStateAndData()


def test_enter_loop_runs_the_enter_call_and_actions_first():
    """enter_loop starts as init's return would: the state enter call, then
    the actions' events, then the mailbox (here a cast sent before)."""
    async def body(test):
        gen_statem.cast(otpvm.self(), "stop")           # already in the mailbox
        try:
            gen_statem.enter_loop(_Entered, "s", test, [NextEvent("internal", 1)])
        finally:
            send(test, "unwound")                       # the body unwinds first

    async def main():
        pid, ref = otpvm.spawn_monitor(body, otpvm.self())
        got = await events(4)
        return got, (await receive(Down(ref, pid, ANY), timeout=5)).reason

    assert run(main) == (["unwound", ("enter", "s", "s"), ("internal", 1, "s"),
                          ("cast", "stop", "s")], "done")


# -- hibernation --------------------------------------------------------------


def _hibernating(pid):
    return otpvm.process_info(pid)["hibernating"]


async def _asleep(pid):
    """Whether pid hibernates within 5 s: it does so after the reply that
    tells, and another scheduler thread (the VM adds one while a process
    runs long) may read before.  'Not hibernating' needs no wait: the
    message that wakes the process clears it before its reply."""
    for _ in range(1000):
        if _hibernating(pid):
            return True
        await otpvm.sleep(0.005)
    return False


class _Hoarder(GenStatem):
    """Its data grows to a big dict, then shrinks to one key: the table
    stays big until hibernation rebuilds it."""

    def init(self, _):
        return "s", {}

    def s(self, event_type, content, data):
        from_ = event_type[1]
        match content:
            case "grow":
                data.update((i, None) for i in range(200_000))
            case "shrink":
                for i in range(1, 200_000):
                    del data[i]
            case "hibernate":
                return KeepStateAndData([Reply(from_, "ok"), Hibernate()])
        return KeepStateAndData(Reply(from_, len(data)))


def test_hibernate_shrinks_the_data_until_the_next_event():
    import tracemalloc

    async def main():
        pid = await gen_statem.start(_Hoarder)
        await gen_statem.call(pid, "grow")
        await gen_statem.call(pid, "shrink")
        before = tracemalloc.get_traced_memory()[0]
        awake = _hibernating(pid)
        await gen_statem.call(pid, "hibernate")
        await otpvm.sys.get_state(pid)    # a system request: it hibernates again
        asleep = await _asleep(pid)
        gc.collect()     # free-threaded: frees the old table (see test_gen_server)
        after = tracemalloc.get_traced_memory()[0]
        assert await gen_statem.call(pid, "size") == 1    # the data is intact
        return before - after, (awake, asleep, _hibernating(pid))

    tracemalloc.start()
    try:
        freed, states = run(main)
    finally:
        tracemalloc.stop()
    assert states == (False, True, False)
    assert freed > 4_000_000        # the 200 000-key table (about 10 MB) is gone


class _Sleeper(GenStatem):
    """Hibernates as its calls say: 'then_event' hibernates and inserts an
    event that does not, 'event_hibernates' the reverse, 'enter' changes
    state and its state enter call hibernates."""

    def callback_mode(self):
        return ("handle_event_function", "state_enter")

    def init(self, _):
        return "a", None

    def handle_event(self, event_type, content, state, data):
        if event_type == "enter":
            return KeepStateAndData([Hibernate()] if state == "b" else [])
        if event_type == "internal":
            return KeepStateAndData([Hibernate(content)])
        from_ = event_type[1]
        match content:
            case "then_event":
                return KeepStateAndData([Reply(from_, "ok"), Hibernate(),
                                         NextEvent("internal", False)])
            case "event_hibernates":
                return KeepStateAndData([Reply(from_, "ok"), NextEvent("internal", True)])
            case "enter":
                return NextState("b" if state == "a" else "a", data, Reply(from_, "ok"))
        return KeepStateAndData(Reply(from_, "ok"))


def test_hibernate_is_the_last_transitions_before_waiting():
    """As OTP's: only the transition after which the state machine waits
    for an event decides (an inserted event's own transition overrides),
    and a state enter call's Hibernate counts for its transition."""
    async def main():
        pid = await gen_statem.start(_Sleeper)
        got = []
        for request, asleep in (("then_event", False), ("event_hibernates", True),
                                ("nothing", False), ("enter", True), ("enter", False),
                                ("enter", True)):
            await gen_statem.call(pid, request)
            # (a hibernation comes after the reply: waited for)
            got.append(await _asleep(pid) if asleep else _hibernating(pid))
        return got

    assert run(main) == [False, True, False, True, False, True]


def test_hibernate_after_hibernates_an_idle_state_machine_once():
    """hibernate_after: an idle state machine hibernates after that long
    (from enter_loop too), an event wakes it, and it hibernates again after
    that long idle."""
    async def body(parent):
        send(parent, "ready")
        gen_statem.enter_loop(_Sleeper, "a", None, hibernate_after=0.05)

    async def main():
        async def asleep(pid):
            for _ in range(1000):
                if _hibernating(pid):
                    return
                await otpvm.sleep(0.005)
            raise AssertionError(f"{pid!r} did not hibernate")

        pids = [await gen_statem.start(_Sleeper, hibernate_after=0.05),
                otpvm.spawn(body, otpvm.self())]
        await receive("ready", timeout=5)
        got = []
        for pid in pids:
            await asleep(pid)
            await gen_statem.call(pid, "nothing")
            got.append(_hibernating(pid))
            await asleep(pid)
            got.append(_hibernating(pid))
        return got

    assert run(main) == [False, True, False, True]


@pytest.mark.parametrize("bad, error", [(-1, ValueError), ("1", TypeError),
                                        (True, TypeError)])
def test_hibernate_after_must_be_seconds(bad, error):
    async def main():
        with pytest.raises(error, match="hibernate_after"):
            await gen_statem.start(_Sleeper, hibernate_after=bad)

    run(main)
