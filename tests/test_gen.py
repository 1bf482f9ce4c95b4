"""otpvm.gen's call, cast and reply: the compiled path and the Python
reference it mirrors, on the cases where they must agree exactly."""

import asyncio
import logging

import pytest

import otpvm
from otpvm import ANY, gen, gen_server, receive, send
from otpvm.gen import CallError
from otpvm.gen_server import GenServer, NoReply, Ok, Reply, Stop

pytestmark = pytest.mark.usefixtures("gen_impl")


def run(main, *args):
    return otpvm.run(main, *args, schedulers=1)


class Server(GenServer):
    def init(self, args):
        return Ok(None)

    def handle_call(self, request, from_, state):
        match request:
            case ("echo", x):
                return Reply(x, state)
            case "crash":
                raise ZeroDivisionError("mid-call")
            case "stop_silently":
                return Stop("normal", state)
            case ("hold", who):                 # answered later, by someone else
                send(who, ("held", from_))
                return NoReply(state)
            case "hold_self":
                return NoReply(from_)           # answered at the next cast
            case "reply_with_timeout":
                return Reply("ok", state, timeout=60)
            case "reply_and_continue":
                return Reply("ok", state, continue_="go")
            case "exit_mid_call":
                otpvm.exit("gone")
        return Reply(("unknown", request), state)

    def handle_cast(self, msg, state):
        match msg:
            case ("answer", value):
                gen.reply(state, value)
                return NoReply(None)
            case ("set", value):
                return NoReply(value, timeout=60)
            case "stop":
                return Stop("normal", state)
        return NoReply(state)

    def handle_continue(self, continue_, state):
        return NoReply(state)

    def handle_info(self, msg, state):
        return NoReply(state)


async def mailbox():
    """Everything left in the caller's mailbox."""
    left = []
    while True:
        try:
            left.append(await receive(timeout=0))
        except TimeoutError:
            return left


def test_a_call_leaves_nothing_behind_whatever_its_outcome():
    async def main():
        pid = await gen_server.start(Server)
        assert await gen_server.call(pid, ("echo", [1, 2])) == [1, 2]
        assert await gen_server.call(pid, "reply_with_timeout") == "ok"
        assert await gen_server.call(pid, "reply_and_continue") == "ok"
        with pytest.raises(CallError) as info:
            await gen_server.call(pid, "crash")
        assert isinstance(info.value.reason, ZeroDivisionError)
        assert await mailbox() == []
        assert otpvm.process_info(otpvm.self())["monitors"] == []
        return "ok"

    logging.disable(logging.ERROR)
    try:
        assert run(main) == "ok"
    finally:
        logging.disable(logging.NOTSET)


@pytest.mark.parametrize(("request_", "reason"),
                         [("stop_silently", "normal"), ("exit_mid_call", "gone")])
def test_a_server_that_ends_mid_call_fails_the_call_with_its_reason(request_, reason):
    async def main():
        pid = await gen_server.start(Server)
        with pytest.raises(CallError) as info:
            await gen_server.call(pid, request_)
        assert info.value.reason == reason
        assert info.value.dest == pid and info.value.request == request_
        assert await mailbox() == []
        return "ok"

    assert run(main) == "ok"


class Keeper(GenServer):
    """Keeps what it is given and hands it back: neither side may see the
    other's changes."""

    def init(self, args):
        return Ok([])

    def handle_call(self, request, from_, state):
        if request == "get":
            return Reply(state, state)
        state.append(request)
        return Reply(state, state)

    def handle_cast(self, msg, state):
        state.append(msg)
        return NoReply(state)


def test_requests_and_replies_are_copies():
    async def main():
        pid = await gen_server.start(Keeper)
        item = ["a"]
        got = await gen_server.call(pid, item)
        item.append("changed by the caller")
        got.append("changed by the caller")
        gen_server.cast(pid, item)
        return await gen_server.call(pid, "get")

    assert run(main) == [["a"], ["a", "changed by the caller"]]


def test_calling_nobody_is_noproc():
    async def main():
        pid = await gen_server.start(Server)
        await gen_server.stop(pid)
        reasons = []
        for dest in (pid, "nobody"):
            with pytest.raises(CallError) as info:
                await gen_server.call(dest, "x")
            reasons.append(info.value.reason)
        assert await mailbox() == []
        return reasons

    assert run(main) == ["noproc", "noproc"]


def test_a_late_reply_after_a_timeout_is_dropped():
    async def main():
        pid = await gen_server.start(Server)
        with pytest.raises(TimeoutError, match="timed out after 0.05 s"):
            await gen_server.call(pid, "hold_self", timeout=0.05)
        gen_server.cast(pid, ("answer", "too late"))
        # The server has answered by the time this call returns.
        assert await gen_server.call(pid, ("echo", 1)) == 1
        assert await mailbox() == []
        with pytest.raises(TimeoutError):
            await gen_server.call(pid, "hold_self", timeout=0)
        gen_server.cast(pid, ("answer", "too late"))
        assert await gen_server.call(pid, ("echo", 2)) == 2
        assert await mailbox() == []
        return "ok"

    assert run(main) == "ok"


def test_a_deferred_reply_from_another_process():
    async def helper():
        _, from_ = await receive(("held", ANY))
        gen.reply(from_, "from the helper")

    async def main():
        pid = await gen_server.start(Server)
        other = otpvm.spawn(helper)
        assert await gen_server.call(pid, ("hold", other)) == "from the helper"
        assert await mailbox() == []
        return "ok"

    assert run(main) == "ok"


def test_a_call_finds_its_reply_behind_a_full_mailbox_and_keeps_it_in_order():
    async def main():
        me = otpvm.self()
        for i in range(1000):
            send(me, ("noise", i))
        pid = await gen_server.start(Server)
        assert await gen_server.call(pid, ("echo", "x")) == "x"
        left = await mailbox()
        assert left == [("noise", i) for i in range(1000)]
        return "ok"

    assert run(main) == "ok"


def test_casts_that_fall_back_to_the_reference_path():
    async def main():
        pid = await gen_server.start(Server, name="srv")
        gen_server.cast("srv", ("set", 42))          # by name, NoReply with a timeout
        gen_server.cast("nobody", "ignored")         # never fails
        assert await gen_server.call("srv", ("echo", 3)) == 3
        gen_server.cast(pid, "stop")
        ref = otpvm.monitor(pid)
        down = await receive(otpvm.Down(ref, ANY, ANY))
        return down.reason

    assert run(main) == "normal"


def test_a_caller_killed_mid_call_leaves_the_server_unmonitored():
    async def caller(pid):
        await gen_server.call(pid, "hold_self", timeout=None)

    async def main():
        pid = await gen_server.start(Server)
        c = otpvm.spawn(caller, pid)
        while not otpvm.process_info(pid)["monitored_by"]:
            await otpvm.sleep(0.001)
        otpvm.exit(c, "kill")
        while otpvm.process_info(pid)["monitored_by"]:
            await otpvm.sleep(0.001)
        return await gen_server.call(pid, ("echo", "alive"))

    assert run(main) == "alive"


def test_a_bad_timeout_is_a_type_error():
    async def main():
        pid = await gen_server.start(Server)
        with pytest.raises(TypeError, match="timeout"):
            await gen_server.call(pid, ("echo", 1), timeout="soon")
        return "ok"

    assert run(main) == "ok"


def test_a_call_is_lazy_and_awaited_once():
    async def main():
        pid = await gen_server.start(Server)
        pending = gen.call(pid, ("echo", 1))
        assert otpvm.process_info(pid)["monitored_by"] == []   # nothing sent yet
        assert await pending == 1
        with pytest.raises(RuntimeError):
            await pending
        return "ok"

    assert run(main) == "ok"


def test_calling_from_outside_a_process_is_a_clear_error():
    with otpvm.VM(1) as vm:
        pid = vm.spawn(otpvm.sleep, 10)
        with pytest.raises(otpvm.NotInProcessError):
            asyncio.run(gen.call(pid, "x"))
        with pytest.raises(otpvm.NotInProcessError):
            gen.cast(pid, "x")


def test_many_callers_of_a_server_killed_mid_stream_are_all_answered_and_clean():
    async def caller(parent, pid):
        outcomes = set()
        for i in range(200):
            try:
                assert await gen_server.call(pid, ("echo", i)) == i
                outcomes.add("reply")
            except CallError as exc:
                outcomes.add(exc.reason)
        send(parent, (otpvm.self(), outcomes, await mailbox()))

    async def main():
        pid = await gen_server.start(Server)
        me = otpvm.self()
        callers = {otpvm.spawn(caller, me, pid) for _ in range(20)}
        await otpvm.sleep(0.001)
        otpvm.exit(pid, "kill")
        seen = set()
        for _ in callers:
            who, outcomes, left = await receive((ANY, ANY, ANY))
            assert who in callers and left == []
            assert outcomes <= {"reply", "killed", "noproc"}
            seen |= outcomes
        return "killed" in seen or "noproc" in seen

    assert otpvm.run(main, schedulers=2) is True


def test_a_call_never_awaited_warns_and_sends_nothing(gen_impl):
    import warnings

    async def main():
        pid = await gen_server.start(Server)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gen_server.call(pid, ("hold", otpvm.self()))     # forgot the await
        with pytest.raises(TimeoutError):                   # the server never heard
            await receive(("held", ANY), timeout=0.2)
        return pid, [(w.category, str(w.message)) for w in caught]

    pid, warned = run(main)
    expected = (f"otpvm.gen.call() to {pid!r} was never awaited" if gen_impl == "compiled"
                else "coroutine '_call_py' was never awaited")
    assert warned == [(RuntimeWarning, expected)]
