"""gen_event, as OTP specifies it (expectations checked with ``erl``, OTP 25).

Handlers report to the test process by message, so every test waits on
messages (``receive(..., timeout=T)``), never on sleeps: a reply from the
manager proves that everything it was sent before has been handled.
"""

import gc
import logging
import threading

import pytest

import otpvm
from otpvm import ANY, Down, Exit, gen, gen_event, receive, registry, send
from otpvm import sys as otp_sys
from otpvm.gen_event import (
    BadReturn,
    CallError,
    Crash,
    EventHandler,
    GenEventExit,
    HandlerError,
    HandlerNotFound,
    Refuse,
    RemoveHandler,
    Reply,
    StartError,
    Stop,
    SwapHandler,
    Swapped,
)

T = 5                       # generous: a correct run never waits this long


@pytest.fixture(params=[1, 4], ids=["sched1", "sched4"])
def run(request):
    def _run(main, *args):
        return otpvm.run(main, *args, schedulers=request.param)

    return _run


def exit_of(handler):
    """A receive pattern for the GenEventExit about handler (a class inside a
    tuple pattern would match its instances, not itself)."""
    return lambda msg: type(msg) is GenEventExit and msg.handler == handler


def same_exc(exc, cls, *args):
    return type(exc) is cls and exc.args == args


class Recorder(EventHandler[dict]):
    """Reports everything to a watcher; its state keeps the events seen."""

    def init(self, args):
        watcher, tag = args
        return {"watcher": watcher, "tag": tag, "events": []}

    def handle_event(self, event, state):
        match event:
            case ("crash", tag) if tag == state["tag"]:
                raise ValueError(f"bad event for {tag}")
            case ("exit", tag) if tag == state["tag"]:
                otpvm.exit(("gave up", tag))
            case ("remove", tag) if tag == state["tag"]:
                return RemoveHandler()
            case ("swap", tag) if tag == state["tag"]:
                return SwapHandler("swapping", state, (Inheritor, tag), state["watcher"])
            case ("bad return", tag) if tag == state["tag"]:
                return Reply("a call's result", state)
        send(state["watcher"], ("event", state["tag"], event))
        state["events"].append(event)
        return state

    def handle_call(self, request, state):
        match request:
            case "events":
                return list(state["events"]), state
            case "reply":
                return Reply("typed", state)
            case "crash":
                raise KeyError("bad call")
            case "remove":
                return RemoveHandler("bye")
            case "swap":
                return SwapHandler("swapping", state, (Inheritor, state["tag"]),
                                   state["watcher"], reply="swapped")
            case "unsendable":
                return threading.Lock(), state
            case "bad return":
                return "not a tuple"
        return ("unknown", request), state

    def handle_info(self, msg, state):
        send(state["watcher"], ("info", state["tag"], msg))
        return state

    def terminate(self, arg, state):
        send(state["watcher"], ("terminate", state["tag"], arg))
        return ("final", state["tag"], tuple(state["events"]))


class Inheritor(EventHandler[tuple]):
    """init gets (args2, what the old handler's terminate returned)."""

    def init(self, args):
        watcher, inherited = args
        send(watcher, ("inherited", inherited))
        return (watcher, inherited)

    def handle_event(self, event, state):
        if event == "crash inheritor":
            raise RuntimeError("inheritor crashed")
        return state

    def handle_call(self, request, state):
        return state[1], state

    def terminate(self, arg, state):
        send(state[0], ("terminate", "inheritor", arg))


class Counter(EventHandler[int]):
    def handle_event(self, event, count):
        return count + event

    def handle_call(self, request, count):
        return count, count


class Refuser(EventHandler[None]):
    def init(self, args):
        if args == "raise":
            raise ValueError("will not start")
        return Refuse(("no thanks", args))


class NoInfo(EventHandler[int]):
    """No handle_info: unexpected messages are logged and ignored (as OTP)."""

    def handle_event(self, event, state):
        return state + 1

    def handle_call(self, request, state):
        return state, state


class Slow(EventHandler[list]):
    """Async callbacks: the manager waits for each before the next message."""

    async def init(self, args):
        await otpvm.sleep(0)
        return []

    async def handle_event(self, event, seen):
        await otpvm.sleep(0.001)
        return [*seen, event]

    async def handle_call(self, request, seen):
        if request == "wait for go":
            await receive("go")
            return "went", seen
        await otpvm.sleep(0)
        return list(seen), seen


async def events(watcher_msgs):
    """Takes the n event reports the test expects, in arrival order."""
    return [await receive(("event", ANY, ANY), timeout=T) for _ in range(watcher_msgs)]


# -- events, state, order -------------------------------------------------------


def test_events_fan_out_newest_handler_first(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        for tag in ("a", "b", "c"):
            await gen_event.add_handler(mgr, (Recorder, tag), (me, tag))
        gen_event.notify(mgr, 1)
        gen_event.notify(mgr, 2)
        await gen_event.sync_notify(mgr, 3)
        got = await events(9)
        calls = [await gen_event.call(mgr, (Recorder, t), "events") for t in "abc"]
        return got, calls, await gen_event.which_handlers(mgr)

    got, calls, which = run(main)
    # erl: handlers are kept newest first, and see events in that order
    assert got == [("event", t, n) for n in (1, 2, 3) for t in "cba"]
    assert calls == [[1, 2, 3]] * 3
    assert which == [(Recorder, "c"), (Recorder, "b"), (Recorder, "a")]


def test_handler_state_is_what_callbacks_return(run):
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Counter, 10)
        await gen_event.add_handler(mgr, (Counter, "other"), 100)
        for n in range(5):
            gen_event.notify(mgr, n)
        return (await gen_event.call(mgr, Counter, "get"),
                await gen_event.call(mgr, (Counter, "other"), "get"))

    assert run(main) == (20, 110)


def test_sync_notify_returns_after_every_handler_handled_it(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_handler(mgr, (Recorder, "b"), (me, "b"))
        gen_event.notify(mgr, "async")
        await gen_event.sync_notify(mgr, "sync")
        # Handlers sent their reports before the manager replied, and
        # messages from one sender arrive in order: all four are here now.
        return [await receive(("event", ANY, ANY), timeout=0) for _ in range(4)]

    assert run(main) == [("event", "b", "async"), ("event", "a", "async"),
                         ("event", "b", "sync"), ("event", "a", "sync")]


def test_notify_never_fails():
    async def main():
        mgr = await gen_event.start()
        await gen_event.stop(mgr)
        gen_event.notify(mgr, "to a dead manager")
        gen_event.notify("nobody registered this", "event")
        return "ok"

    assert otpvm.run(main) == "ok"


def test_which_handlers_lists_ids_and_duplicates_like_otp():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        empty = await gen_event.which_handlers(mgr)
        await gen_event.add_handler(mgr, Counter, 0)
        await gen_event.add_handler(mgr, (Recorder, 1), (me, 1))
        await gen_event.add_handler(mgr, Counter, 5)        # erl installs it twice
        return empty, await gen_event.which_handlers(mgr), \
            await gen_event.call(mgr, Counter, "get")

    assert otpvm.run(main) == ([], [Counter, (Recorder, 1), Counter], 5)


def test_handle_info_gets_other_messages():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_handler(mgr, (Recorder, "b"), (me, "b"))
        send(mgr, {"raw": "message"})
        return [await receive(("info", ANY, ANY), timeout=T) for _ in range(2)]

    assert otpvm.run(main) == [("info", "b", {"raw": "message"}),
                               ("info", "a", {"raw": "message"})]


def test_missing_handle_info_is_logged_and_the_handler_kept(caplog):
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, NoInfo, 0)
        send(mgr, "stray")
        gen_event.notify(mgr, "event")
        return await gen_event.call(mgr, NoInfo, "get")

    with caplog.at_level(logging.WARNING, logger="otpvm"):
        assert otpvm.run(main) == 1
    warnings = [r for r in caplog.records if "handle_info" in r.getMessage()]
    assert len(warnings) == 1 and "'stray'" in warnings[0].getMessage()


# -- calls ------------------------------------------------------------------------


def test_call_a_handler(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        return (await gen_event.call(mgr, (Recorder, "a"), "ping"),
                await gen_event.call(mgr, (Recorder, "a"), "reply"))

    assert run(main) == (("unknown", "ping"), "typed")


def test_call_to_a_missing_handler_raises_a_clear_error():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        try:
            await gen_event.call(mgr, (Recorder, "zz"), "ping")
        except HandlerNotFound as exc:
            caught = exc
        return caught, await gen_event.which_handlers(mgr)

    exc, which = otpvm.run(main)
    assert isinstance(exc, HandlerError) and isinstance(exc, LookupError)
    assert exc.handler == (Recorder, "zz") and exc.reason == "bad_module"
    assert str(exc) == "event handler (Recorder, 'zz') is not installed (bad_module)"
    assert which == [(Recorder, "a")]


def test_call_to_a_dead_manager_raises_call_error():
    async def main():
        mgr = await gen_event.start()
        await gen_event.stop(mgr)
        with pytest.raises(CallError) as info:
            await gen_event.call(mgr, Counter, "get")
        with pytest.raises(CallError) as stopped:
            await gen_event.stop(mgr)
        return info.value.reason, stopped.value.reason

    assert otpvm.run(main) == ("noproc", "noproc")


def test_call_crash_removes_the_handler_and_raises():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_handler(mgr, (Recorder, "b"), (me, "b"))
        with pytest.raises(HandlerError) as info:
            await gen_event.call(mgr, (Recorder, "a"), "crash")
        with pytest.raises(HandlerError) as bad:
            await gen_event.call(mgr, (Recorder, "b"), "bad return")
        terminated = [await receive(("terminate", ANY, ANY), timeout=T) for _ in range(2)]
        return info.value, bad.value, terminated, await gen_event.which_handlers(mgr)

    exc, bad, terminated, which = otpvm.run(main)
    assert same_exc(exc.reason, KeyError, "bad call") and exc.handler == (Recorder, "a")
    assert isinstance(exc.__cause__, KeyError)
    assert bad.reason == BadReturn("not a tuple") and bad.handler == (Recorder, "b")
    assert [t[1] for t in terminated] == ["a", "b"]
    assert type(terminated[0][2]) is Crash
    assert terminated[1][2] == BadReturn("not a tuple")     # OTP: {error, Value}
    assert which == []


def test_call_remove_handler_replies_then_removes():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, (Recorder, "a"), (me, "a"))
        answer = await gen_event.call(mgr, (Recorder, "a"), "remove")
        return (answer, await receive(("terminate", ANY, ANY), timeout=T),
                await receive(GenEventExit, timeout=T), await gen_event.which_handlers(mgr))

    assert otpvm.run(main) == ("bye", ("terminate", "a", "remove_handler"),
                               GenEventExit((Recorder, "a"), "normal"), [])


def test_call_times_out_and_a_late_reply_is_dropped():
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Slow, None)
        with pytest.raises(TimeoutError):
            await gen_event.call(mgr, Slow, "wait for go", timeout=0.05)
        send(mgr, "go")
        after = await gen_event.call(mgr, Slow, "seen")
        try:
            stray = await receive(timeout=0)
        except TimeoutError:
            stray = None
        return after, stray

    assert otpvm.run(main) == ([], None)


def test_unsendable_reply_is_an_error_not_a_manager_crash():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        with pytest.raises(TypeError):
            await gen_event.call(mgr, (Recorder, "a"), "unsendable")
        return await gen_event.call(mgr, (Recorder, "a"), "events")

    assert otpvm.run(main) == []


# -- adding and deleting ------------------------------------------------------------


def test_init_refusal_raises_and_installs_nothing():
    async def main():
        mgr = await gen_event.start()
        with pytest.raises(HandlerError) as refused:
            await gen_event.add_handler(mgr, Refuser, "politely")
        with pytest.raises(HandlerError) as raised:
            await gen_event.add_handler(mgr, Refuser, "raise")
        with pytest.raises(TypeError):
            await gen_event.add_handler(mgr, object, None)
        return refused.value, raised.value, await gen_event.which_handlers(mgr)

    refused, raised, which = otpvm.run(main)
    assert refused.handler is Refuser and refused.reason == ("no thanks", "politely")
    assert same_exc(raised.reason, ValueError, "will not start")
    assert which == []


def test_delete_handler_returns_terminate_result():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.sync_notify(mgr, "x")
        result = await gen_event.delete_handler(mgr, (Recorder, "a"), "goodbye")
        terminated = await receive(("terminate", ANY, ANY), timeout=T)
        with pytest.raises(HandlerNotFound) as missing:
            await gen_event.delete_handler(mgr, (Recorder, "a"), "again")
        return result, terminated, missing.value.reason, await gen_event.which_handlers(mgr)

    assert otpvm.run(main) == (("final", "a", ("x",)), ("terminate", "a", "goodbye"),
                               "module_not_found", [])


# -- crashes ------------------------------------------------------------------------


def test_crashing_handler_is_removed_alone_and_logged_once(run, caplog):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start(name="crash_mgr")
        for tag in ("a", "b", "c"):
            await gen_event.add_handler(mgr, (Recorder, tag), (me, tag))
        gen_event.notify(mgr, ("crash", "b"))
        gen_event.notify(mgr, "after")
        await gen_event.sync_notify(mgr, "sync")
        terminated = await receive(("terminate", ANY, ANY), timeout=T)
        return (terminated, await events(6), await gen_event.which_handlers(mgr),
                otpvm.is_alive(mgr))

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        terminated, got, which, alive = run(main)
    _, tag, arg = terminated
    assert tag == "b" and type(arg) is Crash and same_exc(arg.reason, ValueError, "bad event for b")
    assert got == [("event", "c", ("crash", "b")), ("event", "a", ("crash", "b")),
                   ("event", "c", "after"), ("event", "a", "after"),
                   ("event", "c", "sync"), ("event", "a", "sync")]
    assert which == [(Recorder, "c"), (Recorder, "a")] and alive
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    text = errors[0].getMessage()
    assert "(Recorder, 'b') crashed" in text and "ValueError: bad event for b" in text
    assert "'crash_mgr'" in text and "('crash', 'b')" in text
    assert errors[0].exc_info is not None        # with the traceback


def test_exit_in_a_callback_removes_the_handler_with_that_reason():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.sync_notify(mgr, ("exit", "a"))
        return (await receive(("terminate", ANY, ANY), timeout=T),
                await receive(GenEventExit, timeout=T), otpvm.is_alive(mgr))

    assert otpvm.run(main) == (("terminate", "a", Crash(("gave up", "a"))),
                               GenEventExit((Recorder, "a"), ("gave up", "a")), True)


def test_remove_handler_from_handle_event():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_handler(mgr, (Recorder, "b"), (me, "b"))
        await gen_event.sync_notify(mgr, ("remove", "b"))
        return (await receive(("terminate", ANY, ANY), timeout=T),
                await gen_event.which_handlers(mgr))

    assert otpvm.run(main) == (("terminate", "b", "remove_handler"), [(Recorder, "a")])


# -- supervised handlers ----------------------------------------------------------


def test_sup_handler_owner_is_told_of_crash_and_removal(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_sup_handler(mgr, (Recorder, "b"), (me, "b"))
        await gen_event.add_sup_handler(mgr, (Recorder, "c"), (me, "c"))
        await gen_event.sync_notify(mgr, ("crash", "a"))
        crashed = await receive(exit_of((Recorder, "a")), timeout=T)
        await gen_event.sync_notify(mgr, ("remove", "b"))
        removed = await receive(exit_of((Recorder, "b")), timeout=T)
        await gen_event.delete_handler(mgr, (Recorder, "c"), None)
        deleted = await receive(exit_of((Recorder, "c")), timeout=T)
        return crashed.reason, removed.reason, deleted.reason

    crashed, removed, deleted = run(main)
    assert same_exc(crashed, ValueError, "bad event for a")
    assert removed == "normal"
    assert deleted == "normal"          # erl: the owner is told even of its own delete


async def owner(mgr, parent, tag):
    """Adds a supervised handler, then ends with the reason it is sent."""
    await gen_event.add_sup_handler(mgr, (Recorder, tag), (parent, tag))
    send(parent, ("added", tag))
    reason = await receive()
    otpvm.exit(reason)


def test_sup_handler_is_removed_when_its_owner_dies(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "bystander"), (me, "bystander"))
        pid = otpvm.spawn(owner, mgr, me, "sup")
        await receive(("added", "sup"), timeout=T)
        send(pid, "owner quits")
        terminated = await receive(("terminate", "sup", ANY), timeout=T)
        info = await receive(("info", "bystander", ANY), timeout=T)
        return terminated, info, pid, await gen_event.which_handlers(mgr), otpvm.is_alive(mgr)

    terminated, info, pid, which, alive = run(main)
    assert terminated == ("terminate", "sup", Stop("owner quits"))
    assert info == ("info", "bystander", Exit(pid, "owner quits"))   # forwarded, as in erl
    assert which == [(Recorder, "bystander")] and alive


def test_sup_handler_of_a_normal_exit_owner_is_removed_too():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        pid = otpvm.spawn(owner, mgr, me, "sup")
        await receive(("added", "sup"), timeout=T)
        send(pid, "normal")
        return await receive(("terminate", "sup", ANY), timeout=T)

    assert otpvm.run(main) == ("terminate", "sup", Stop("normal"))


# -- swapping -----------------------------------------------------------------------


def test_swap_handler_passes_terminate_result_to_new_init(run):
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "old"), (me, "old"))
        await gen_event.sync_notify(mgr, "e1")
        await gen_event.swap_handler(mgr, ((Recorder, "old"), "swap args"),
                                     ((Inheritor, "new"), me))
        terminated = await receive(("terminate", "old", ANY), timeout=T)
        inherited = await receive(("inherited", ANY), timeout=T)
        return (terminated, inherited, await gen_event.which_handlers(mgr),
                await gen_event.call(mgr, (Inheritor, "new"), "what"))

    terminated, inherited, which, state = run(main)
    assert terminated == ("terminate", "old", "swap args")
    assert inherited == ("inherited", ("final", "old", ("e1",)))
    assert which == [(Inheritor, "new")] and state == ("final", "old", ("e1",))


def test_swap_from_a_missing_handler_still_adds_the_new_one():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.swap_handler(mgr, ((Recorder, "none"), None), (Inheritor, me))
        _, inherited = await receive(("inherited", ANY), timeout=T)
        return inherited, await gen_event.which_handlers(mgr)

    inherited, which = otpvm.run(main)
    assert isinstance(inherited, HandlerNotFound) and inherited.handler == (Recorder, "none")
    assert which == [Inheritor]


def test_swap_keeps_the_supervision_and_tells_the_owner():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.swap_handler(mgr, ((Recorder, "a"), None), ((Inheritor, "a"), me))
        swapped = await receive(exit_of((Recorder, "a")), timeout=T)
        await gen_event.sync_notify(mgr, "crash inheritor")
        crashed = await receive(exit_of((Inheritor, "a")), timeout=T)
        return swapped.reason, crashed.reason, me

    swapped, crashed, me = otpvm.run(main)
    assert swapped == Swapped((Inheritor, "a"), me)
    assert same_exc(crashed, RuntimeError, "inheritor crashed")


def test_swap_sup_handler_supervises_the_new_handler():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.swap_sup_handler(mgr, ((Recorder, "a"), None), ((Inheritor, "a"), me))
        await gen_event.sync_notify(mgr, "crash inheritor")
        crashed = await receive(exit_of((Inheritor, "a")), timeout=T)
        return type(crashed.reason)

    assert otpvm.run(main) is RuntimeError


def test_swap_handler_returned_by_callbacks_swaps_in_place():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        for tag in ("a", "b", "c"):
            await gen_event.add_handler(mgr, (Recorder, tag), (me, tag))
        await gen_event.sync_notify(mgr, "e1")
        await gen_event.sync_notify(mgr, ("swap", "b"))
        after_event = await gen_event.which_handlers(mgr)
        answer = await gen_event.call(mgr, (Recorder, "c"), "swap")
        inherited = [await receive(("inherited", ANY), timeout=T) for _ in range(2)]
        return after_event, answer, inherited, await gen_event.which_handlers(mgr)

    after_event, answer, inherited, which = otpvm.run(main)
    assert after_event == [(Recorder, "c"), (Inheritor, "b"), (Recorder, "a")]
    assert answer == "swapped"
    assert inherited == [("inherited", ("final", "b", ("e1",))),
                         ("inherited", ("final", "c", ("e1", ("swap", "b"))))]
    assert which == [(Inheritor, "c"), (Inheritor, "b"), (Recorder, "a")]


# -- async callbacks ------------------------------------------------------------------


def test_async_callbacks_keep_message_order(run):
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Slow, None)
        await gen_event.add_handler(mgr, Counter, 0)
        for n in range(5):
            gen_event.notify(mgr, n)
        await gen_event.sync_notify(mgr, 5)
        return (await gen_event.call(mgr, Slow, "seen"),
                await gen_event.call(mgr, Counter, "get"))

    assert run(main) == ([0, 1, 2, 3, 4, 5], 15)


# -- starting and stopping -------------------------------------------------------------


def test_stop_runs_terminate_for_all_handlers(run):
    async def main():
        me = otpvm.self()
        mgr, ref = await gen_event.start_monitor()
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_sup_handler(mgr, (Recorder, "b"), (me, "b"))
        await gen_event.stop(mgr)
        terminated = [await receive(("terminate", ANY, ANY), timeout=0) for _ in range(2)]
        told = await receive(GenEventExit, timeout=0)
        down = await receive(Down(ref, ANY, ANY), timeout=0)
        return terminated, told, down.reason, otpvm.is_alive(mgr)

    assert run(main) == ([("terminate", "b", "stop"), ("terminate", "a", "stop")],
                         GenEventExit((Recorder, "b"), "shutdown"), "normal", False)


def test_named_manager_and_already_started():
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start("events")
        await gen_event.add_handler("events", (Recorder, "a"), (me, "a"))
        gen_event.notify("events", "by name")
        got = await receive(("event", "a", ANY), timeout=T)
        with pytest.raises(StartError) as info:
            await gen_event.start_link("events")
        await gen_event.stop("events", "shutdown")
        return got, info.value.reason, mgr, otpvm.whereis("events")

    got, reason, mgr, after = otpvm.run(main)
    assert got == ("event", "a", "by name")
    assert reason == ("already_started", mgr) and after is None


async def parent_of(main):
    mgr = await gen_event.start_link()
    send(main, ("manager", mgr))
    otpvm.exit(await receive())


def test_start_link_parent_exit_stops_the_manager(run):
    async def main():
        me = otpvm.self()
        parent = otpvm.spawn(parent_of, me)
        _, mgr = await receive(("manager", ANY), timeout=T)
        ref = otpvm.monitor(mgr)
        await gen_event.add_handler(mgr, (Recorder, "a"), (me, "a"))
        send(parent, "shutdown")
        return (await receive(("terminate", ANY, ANY), timeout=T),
                (await receive(Down(ref, ANY, ANY), timeout=T)).reason)

    assert run(main) == (("terminate", "a", "stop"), "shutdown")


# -- the sys protocol ---------------------------------------------------------------------


class Versioned(EventHandler[dict]):
    def handle_event(self, event, state):
        return state

    def code_change(self, old_vsn, state, extra):
        return {**state, "vsn": (old_vsn, extra)}


def test_sys_get_state_suspend_and_code_change():
    async def sys_call(pid, request):
        return await gen.call(pid, request, tag=gen.SYSTEM)

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Versioned, {"n": 1})
        await gen_event.add_handler(mgr, Counter, 0)
        await sys_call(mgr, "suspend")
        gen_event.notify(mgr, 5)                 # waits in the mailbox
        suspended = await sys_call(mgr, "get_state")
        assert await sys_call(mgr, ("change_code", Versioned.__module__, 1, "x")) == "ok"
        await sys_call(mgr, "resume")
        return suspended, await sys_call(mgr, "get_state")

    suspended, after = otpvm.run(main)
    assert suspended == [(Counter, 0), (Versioned, {"n": 1})]
    assert after == [(Counter, 5), (Versioned, {"n": 1, "vsn": (1, "x")})]


class BadTerminate(EventHandler[int]):
    def handle_event(self, event, state):
        return state

    def terminate(self, arg, state):
        raise RuntimeError(f"terminate failed on {arg!r}")


def test_terminate_failures_reach_delete_and_swap(caplog):
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, BadTerminate, 0)
        with pytest.raises(HandlerError) as deleted:
            await gen_event.delete_handler(mgr, BadTerminate, "bye")
        await gen_event.add_handler(mgr, BadTerminate, 0)
        with pytest.raises(HandlerError) as swapped:
            await gen_event.swap_handler(mgr, (BadTerminate, "swap"), (Refuser, "new"))
        return deleted.value, swapped.value, await gen_event.which_handlers(mgr)

    with caplog.at_level(logging.WARNING, logger="otpvm"):
        deleted, swapped, which = otpvm.run(main)
    assert deleted.handler is BadTerminate
    assert same_exc(deleted.reason, RuntimeError, "terminate failed on 'bye'")
    # The old handler is gone even though the new one refused (as in erl);
    # the new init saw Crash(...) for the failed terminate.
    assert swapped.handler is Refuser and swapped.reason[0] == "no thanks"
    args2, inherited = swapped.reason[1]
    assert args2 == "new" and type(inherited) is Crash
    assert which == []


# -- bad return values, replace_state, sys debugging, format_status ------------


def test_a_handler_returning_a_bad_value_is_removed_as_in_otp(run, caplog):
    """OTP's server_update/server_call_update: a value that is none of the
    allowed shapes removes the handler with terminate({error, Value}), one
    error report, and the owner is told Value; call answers {error, Value}.

        {ok,P} = gen_event:start(), ok = gen_event:add_sup_handler(P, {ev_h,4}, [d]),
        gen_event:sync_notify(P, bad)   % handle_event(bad, S) -> {return, faulty}
        %% terminate({error,{return,faulty}}, [d]), ERROR REPORT Reason == {return,faulty},
        %% owner gets {gen_event_EXIT,{ev_h,4},{return,faulty}}
    """
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start()
        await gen_event.add_sup_handler(mgr, (Recorder, "a"), (me, "a"))
        await gen_event.add_handler(mgr, (Recorder, "b"), (me, "b"))
        await gen_event.sync_notify(mgr, ("bad return", "a"))
        terminated = await receive(("terminate", "a", ANY), timeout=T)
        told = await receive(exit_of((Recorder, "a")), timeout=T)
        other = await receive(("event", "b", ANY), timeout=T)
        return terminated, told, other, await gen_event.which_handlers(mgr)

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        terminated, told, other, which = run(main)
    assert terminated[2].value.value == "a call's result"
    assert type(terminated[2]) is BadReturn and type(told.reason) is BadReturn
    assert told.reason.value.value == "a call's result"
    assert other == ("event", "b", ("bad return", "a"))          # the others go on
    assert which == [(Recorder, "b")]
    reports = [r for r in caplog.records if "crashed and was removed" in r.getMessage()]
    assert len(reports) == 1 and "BadReturn" in reports[0].getMessage()


class Holder(EventHandler):
    def init(self, state):
        return state

    def format_status(self, status):
        return {**status, "state": "hidden"}


def test_replace_state_runs_per_handler_and_keeps_those_it_fails_on(run):
    """OTP's gen_event:system_replace_state: fun({Mod, Id, State}) per
    handler; one it raises on (or whose id it changes) keeps its state; no error.

        {ok,P} = gen_event:start(), gen_event:add_handler(P, ev_h, [a]),
        gen_event:add_handler(P, {ev_h,2}, [b]),
        sys:replace_state(P, fun({ev_h,false,S}) -> {ev_h,false,[new|S]}; (_) -> exit(fail) end)
        %% -> [{ev_h,2,[b]},{ev_h,false,[new,a]}]
        sys:replace_state(P, fun({M,I,S}) -> {M,other_id,S} end)   % -> unchanged
    """
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Holder, ["a"])
        await gen_event.add_handler(mgr, (Holder, 2), ["b"])

        def only_plain(pair):
            handler, state = pair
            if handler is not Holder:
                raise RuntimeError("fail")
            return handler, ["new", *state]

        first = await otp_sys.replace_state(mgr, only_plain)
        renamed = await otp_sys.replace_state(mgr, lambda pair: ((Holder, 3), pair[1]))
        await otp_sys.suspend(mgr)
        suspended = await otp_sys.replace_state(mgr, lambda pair: (pair[0], "s"))
        await otp_sys.resume(mgr)
        return first, renamed, suspended, await otp_sys.get_state(mgr)

    first, renamed, suspended, state = run(main)
    assert first == [((Holder, 2), ["b"]), (Holder, ["new", "a"])]
    assert renamed == first
    assert suspended == state == [((Holder, 2), "s"), (Holder, "s")]


def test_an_event_manager_answers_sys_debugging(run):
    """OTP's gen_event reports every message but system ones as {in, Msg}
    (statistics: messages_in 3, messages_out 0 for notify, sync_notify, call)."""
    async def main():
        me = otpvm.self()
        mgr = await gen_event.start(name="mgr")
        await gen_event.add_handler(mgr, Counter, 0)
        await otp_sys.statistics(mgr, True)
        await otp_sys.log(mgr, True)
        gen_event.notify(mgr, 1)
        await gen_event.sync_notify(mgr, 2)
        await gen_event.call(mgr, Counter, "get")
        stats = await otp_sys.statistics(mgr, "get")
        log = await otp_sys.get_log(mgr)
        await otp_sys.no_debug(mgr)
        return me, stats, log, await otp_sys.get_log(mgr)

    me, stats, log, after = run(main)
    assert (stats.messages_in, stats.messages_out) == (3, 0)
    assert log[0] == ("in", ("$gen_event_notify", 1))
    assert log[1][:2] == ("in", ("sync_notify", 2)) and log[1][2].pid == me
    assert log[2][:2] == ("in", ("call", Counter, "get"))
    assert otp_sys.format_event("mgr", log[0]) == "*DBG* mgr got event 1"
    assert after == []


def test_get_status_and_crash_reports_go_through_format_status(run, caplog):
    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, Holder, "secret")
        status = await otp_sys.get_status(mgr)
        gen_event.notify(mgr, "boom")           # Holder has no handle_event: it crashes
        await gen_event.sync_notify(mgr, "sync")
        return mgr, status

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        mgr, status = run(main)
    assert status["state"] == [(Holder, "hidden")] and status["pid"] == mgr
    assert status["status"] == "running" and status["name"] is None
    report = [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()]
    assert len(report) == 1
    assert "handler state: 'hidden'" in report[0] and "secret" not in report[0]


def test_a_manager_can_be_started_under_a_via_name(run):
    async def main():
        reg = await registry.start()
        name = registry.via(reg, ("events", 1))
        mgr = await gen_event.start(name)
        await gen_event.add_handler(name, Counter, 0)
        gen_event.notify(name, 2)
        got = await gen_event.call(name, Counter, "get")
        with pytest.raises(StartError) as taken:
            await gen_event.start_link(name)
        with pytest.raises(TypeError):
            await gen_event.start(42)
        await gen_event.stop(name)
        return mgr, got, taken.value.reason, registry.whereis_name(reg, ("events", 1))

    mgr, got, reason, after = run(main)
    assert got == 2 and reason == ("already_started", mgr) and after is None


# -- hibernation --------------------------------------------------------------


class _Hoarder(gen_event.EventHandler):
    """Its state grows to a big dict, then shrinks to one key; hibernates
    on request, and on any info (exit signals included)."""

    def init(self, test):
        self.test = test
        return {}

    def handle_event(self, event, state):
        if event == "grow":
            state.update((i, None) for i in range(200_000))
        elif event == "shrink":
            for i in range(1, 200_000):
                del state[i]
        elif event == "hibernate":
            return gen_event.Hibernate(state)
        return state

    def handle_call(self, request, state):
        return len(state), state

    def handle_info(self, info, state):
        send(self.test, ("info", info))
        return gen_event.Hibernate(state)


def test_hibernate_shrinks_the_handler_states_until_the_next_message():
    import tracemalloc

    def hibernating(pid):
        return otpvm.process_info(pid)["hibernating"]

    async def until_hibernating(pid):
        # it hibernates after its reply (or report): another scheduler
        # thread (the VM adds one while a process runs long) may look first
        for _ in range(1000):
            if hibernating(pid):
                return True
            await otpvm.sleep(0.005)
        return False

    async def main():
        otpvm.process_flag("trap_exit", True)
        mgr = await gen_event.start_link()
        await gen_event.add_handler(mgr, _Hoarder, otpvm.self())
        await gen_event.sync_notify(mgr, "grow")
        await gen_event.sync_notify(mgr, "shrink")
        before = tracemalloc.get_traced_memory()[0]
        awake = hibernating(mgr)
        gen_event.notify(mgr, "hibernate")
        await otp_sys.get_state(mgr)    # after the event; a sys request: again
        asleep = await until_hibernating(mgr)
        gc.collect()     # free-threaded: frees the old table (see test_gen_server)
        after = tracemalloc.get_traced_memory()[0]
        assert await gen_event.call(mgr, _Hoarder, "size") == 1    # intact
        woken = hibernating(mgr)
        send(mgr, "info")               # handle_info asks
        await receive(("info", "info"), timeout=T)
        by_info = await until_hibernating(mgr)
        # an exit signal's handle_info never hibernates the manager (OTP)
        async def linked():
            otpvm.link(mgr)
            otpvm.exit("bye")
        pid = otpvm.spawn(linked)
        await receive(("info", Exit(pid, "bye")), timeout=T)
        by_exit = hibernating(mgr)
        return before - after, (awake, asleep, woken, by_info, by_exit)

    tracemalloc.start()
    try:
        freed, states = otpvm.run(main, schedulers=1)   # no other scheduler races the checks
    finally:
        tracemalloc.stop()
    assert states == (False, True, False, True, False)
    assert freed > 4_000_000        # the 200 000-key table (about 10 MB) is gone
