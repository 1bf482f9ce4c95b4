"""Selective receive: patterns, order, timeouts, the ref marker."""

import time

import pytest

import otpvm
from otpvm import ANY, AnyOf, Down, receive, self, send

SCHEDULERS = [1, 3]


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


@pytest.mark.parametrize("schedulers", SCHEDULERS)
def test_unmatched_messages_stay_in_order(schedulers):
    async def main():
        me = self()
        for m in [1, "a", 2, "b", 3]:
            send(me, m)
        first_str = await receive(str)
        rest = [await receive(timeout=1) for _ in range(4)]
        return first_str, rest

    assert run(main, schedulers=schedulers) == ("a", [1, 2, "b", 3])


def test_pattern_kinds():
    async def main():
        me = self()
        msgs = [("reply", 1, "x"), ("reply", 2), ["list"], 3.5, {"k": 1}, ("reply", "s")]
        for m in msgs:
            send(me, m)
        got = [
            await receive(("reply", int)),           # tuple with a type inside
            await receive(("reply", ANY, ANY)),      # tuple with wildcards
            await receive(list),                     # a type
            await receive(lambda m: m == {"k": 1}),  # a predicate
            await receive(3.5),                      # equality
            await receive(AnyOf(("nope",), ("reply", str))),
        ]
        return got

    assert run(main) == [("reply", 2), ("reply", 1, "x"), ["list"], {"k": 1}, 3.5,
                         ("reply", "s")]


def test_tuple_subclass_pattern_requires_the_class():
    async def main():
        me = self()
        ref = otpvm.make_ref()
        send(me, (ref, me, "normal"))                    # a plain tuple
        send(me, Down(ref, me, "normal"))
        got = await receive(Down(ref, ANY, ANY), timeout=1)
        plain = await receive(timeout=1)
        return type(got).__name__, type(plain).__name__

    assert run(main) == ("Down", "tuple")


def test_nested_tuple_pattern():
    async def main():
        send(self(), ("a", ("b", 1)))
        send(self(), ("a", ("b", "x")))
        return await receive(("a", ("b", str)), timeout=1)

    assert run(main) == ("a", ("b", "x"))


def test_timeout_raises_builtin_timeout_error_and_keeps_messages():
    async def main():
        send(self(), "other")
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await receive("wanted", timeout=0.05)
        waited = time.monotonic() - start
        return waited, await receive(timeout=0)

    waited, leftover = run(main)
    assert waited >= 0.05
    assert leftover == "other"


def test_timeout_zero_polls():
    async def main():
        with pytest.raises(TimeoutError):
            await receive(timeout=0)
        send(self(), 1)
        return await receive(timeout=0)

    assert run(main) == 1


def test_message_arriving_before_timeout_wins():
    async def sender(to):
        await otpvm.sleep(0.02)
        send(to, "late but in time")

    async def main():
        otpvm.spawn(sender, self())
        return await receive(timeout=5)

    assert run(main) == "late but in time"


@pytest.mark.parametrize("bad", [-1, "1", float("nan"), True])
def test_bad_timeouts_are_clear_errors(bad):
    async def main():
        with pytest.raises((TypeError, ValueError)) as info:
            receive(timeout=bad)
        return str(info.value)

    assert "timeout" in run(main)


def test_predicate_error_raises_in_the_receiver():
    def bad(msg):
        raise KeyError("bad pattern")

    async def main():
        send(self(), 1)
        with pytest.raises(KeyError):
            await receive(bad, timeout=1)
        # and when the message arrives while the process waits:
        async def later(to):
            send(to, 2)

        otpvm.spawn(later, self())
        with pytest.raises(KeyError):
            await receive(bad, timeout=5)
        return "survived"

    assert run(main) == "survived"


class Counting:
    """A pattern element that matches anything and counts what it examined."""

    def __init__(self):
        self.examined = 0

    def __eq__(self, other):
        self.examined += 1
        return True

    __hash__ = None


@pytest.mark.parametrize("schedulers", SCHEDULERS)
def test_receive_on_a_fresh_ref_skips_100k_queued_messages(schedulers):
    """OTP's receive marker: a call's reply is found in O(1), not O(queue)."""
    n = 100_000

    async def replier():
        while True:
            to, ref = await receive()
            send(to, ("pong", ref))

    async def main():
        me = self()
        server = otpvm.spawn(replier)
        for i in range(n):
            send(me, ("noise", i))
        examined = []
        for _ in range(20):
            ref = otpvm.make_ref()
            send(server, (me, ref))
            counter = Counting()
            reply = await receive((counter, ref), timeout=5)
            assert reply == ("pong", ref)
            examined.append(counter.examined)
        # Without the ref in the pattern the receive has to scan everything.
        ref = otpvm.make_ref()
        send(server, (me, ref))
        counter = Counting()
        await receive(AnyOf((counter, ref), ("never",)), timeout=5)
        queued = otpvm.process_info(me)["message_queue_len"]
        return examined, counter.examined, queued

    examined, examined_without_marker, queued = run(main, schedulers=schedulers)
    assert examined == [1] * 20
    assert examined_without_marker == n + 1
    assert queued == n


def test_marker_survives_removal_of_the_marked_message():
    async def main():
        me = self()
        send(me, "a")
        send(me, "b")
        ref = otpvm.make_ref()          # marker after "b"
        assert await receive("b", timeout=1) == "b"   # removes the marked node
        send(me, ("reply", ref))
        got = await receive(("reply", ref), timeout=1)
        return got, await receive(timeout=0)

    got, rest = run(main)
    assert got[0] == "reply" and rest == "a"


def test_receive_outside_a_process_is_a_clear_error():
    with pytest.raises(otpvm.NotInProcessError, match="inside an otpvm process"):
        receive()
    with pytest.raises(otpvm.NotInProcessError):
        send(None, 1)


def test_awaited_values_that_look_like_stop_iteration_arguments_come_back_as_sent():
    # A receive that finds its message at once ends the await with the
    # message as StopIteration's value (awaitable.h): a tuple must not be
    # unpacked into arguments, nor an exception raised instead of returned.
    err = ValueError("a message, not an error")
    messages = [(1, 2), (7,), (), err, ValueError, StopIteration("x"), None, 0]

    async def main():
        for m in messages:
            send(self(), m)
        ready = [await receive() for _ in messages]         # already queued
        otpvm.spawn(lambda parent: [send(parent, m) for m in messages], self())
        waited = []
        for _ in messages:
            waited.append(await receive(timeout=5))         # may suspend first
        return ready, waited

    ready, waited = otpvm.run(main)
    for got in (ready, waited):
        assert [type(g) for g in got] == [type(m) for m in messages]
        assert got[:3] == [(1, 2), (7,), ()]
        assert str(got[3]) == "a message, not an error" and got[4] is ValueError
        assert got[5].args == ("x",) and got[6:] == [None, 0]


def test_a_receive_or_sleep_never_awaited_warns_like_a_forgotten_coroutine():
    import warnings

    async def main():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            msg = receive()                             # forgot the await
            del msg
            otpvm.sleep(1)                              # dropped at once
            send(self(), "ready")
            assert await receive() == "ready"           # awaited: quiet
            with pytest.raises(TimeoutError):
                await receive(timeout=0)                # awaited, failed: quiet
            await otpvm.sleep(0)
        return [(w.category, str(w.message), w.filename) for w in caught]

    assert otpvm.run(main) == [
        (RuntimeWarning, "otpvm.receive() was never awaited", __file__),
        (RuntimeWarning, "otpvm.sleep() was never awaited", __file__),
    ]


def test_a_never_awaited_receive_under_an_error_filter_is_unraisable(monkeypatch):
    import sys
    import warnings

    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(
        (type(u.exc_value), str(u.exc_value), u.object)))

    async def main():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            receive()
            return "went on"

    assert otpvm.run(main) == "went on"
    assert seen == [(RuntimeWarning, "otpvm.receive() was never awaited",
                     "otpvm.receive() was never awaited")]


def test_a_receive_suspended_when_its_process_is_killed_does_not_warn():
    import warnings

    async def main():
        pid = otpvm.spawn(receive)                      # the body is the awaitable
        waiting = otpvm.spawn(lambda: receive("never"))
        sleeper = otpvm.spawn(otpvm.sleep, 60)
        for p in (pid, waiting, sleeper):
            ref = otpvm.monitor(p)
            otpvm.exit(p, "kill")
            await receive(Down(ref, ANY, ANY), timeout=5)
        return "ok"

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert otpvm.run(main) == "ok"
    assert [str(w.message) for w in caught] == []
