"""Timers: send_after, cancel_timer, sleep, receive timeouts."""

import time

import pytest

import otpvm
from otpvm import receive, self, send


def test_send_after_delivers_after_the_delay():
    async def main():
        start = time.monotonic()
        otpvm.send_after(0.05, self(), "tick")
        msg = await receive(timeout=5)
        return msg, time.monotonic() - start

    msg, waited = otpvm.run(main)
    assert msg == "tick" and waited >= 0.05


def test_timers_fire_in_deadline_order():
    async def main():
        for delay in [0.05, 0.01, 0.03, 0.02, 0.04]:
            otpvm.send_after(delay, self(), delay)
        return [await receive(timeout=5) for _ in range(5)]

    assert otpvm.run(main) == [0.01, 0.02, 0.03, 0.04, 0.05]


def test_cancel_timer_returns_time_left_then_false():
    async def main():
        tref = otpvm.send_after(10, self(), "never")
        left = otpvm.cancel_timer(tref)
        again = otpvm.cancel_timer(tref)
        fired = otpvm.send_after(0, self(), "now")
        await receive("now", timeout=5)
        with pytest.raises(TimeoutError):
            await receive("never", timeout=0.05)
        return left, again, otpvm.cancel_timer(fired)

    left, again, after_fire = otpvm.run(main)
    assert 9.0 < left <= 10.0
    assert again is False and after_fire is False


def test_send_after_to_a_name_resolves_when_it_fires():
    async def named(parent):
        otpvm.register("late", self())
        send(parent, "registered")
        send(parent, ("got", await receive(timeout=5)))

    async def main():
        otpvm.send_after(0.05, "late", "hello")   # not registered yet
        otpvm.spawn(named, self())
        await receive("registered", timeout=5)
        return await receive(timeout=5)

    assert otpvm.run(main) == ("got", "hello")


def test_send_after_validates_its_arguments():
    async def main():
        with pytest.raises(ValueError):
            otpvm.send_after(-1, self(), "x")
        with pytest.raises(TypeError):
            otpvm.send_after(1, 42, "x")
        with pytest.raises(TypeError):
            otpvm.cancel_timer("not a timer")
        return "ok"

    assert otpvm.run(main) == "ok"


def test_sleep_suspends_only_the_caller():
    async def sleeper(parent):
        await otpvm.sleep(0.1)
        send(parent, "sleeper woke")

    async def chatter(parent):
        send(parent, "chatter ran")

    async def main():
        otpvm.spawn(sleeper, self())
        otpvm.spawn(chatter, self())
        return [await receive(timeout=5), await receive(timeout=5)]

    assert otpvm.run(main) == ["chatter ran", "sleeper woke"]


def test_sleep_keeps_messages_for_later():
    async def main():
        send(self(), "kept")
        await otpvm.sleep(0.01)
        return await receive(timeout=0)

    assert otpvm.run(main) == "kept"


def test_a_satisfied_receive_leaves_no_timer_behind():
    async def main():
        for i in range(10_000):
            send(self(), i)
            await receive(timeout=60)
        return "ok"

    with otpvm.VM() as vm:
        assert vm.run(main) == "ok"
        assert vm.pending_timers == 0


def test_many_processes_sleeping_wake_exactly_once():
    async def sleeper(parent, i):
        await otpvm.sleep(0.01 * (i % 5))
        send(parent, i)

    async def main(n):
        for i in range(n):
            otpvm.spawn(sleeper, self(), i)
        return sorted([await receive(timeout=5) for _ in range(n)])

    assert otpvm.run(main, 2000, schedulers=2) == list(range(2000))


def test_a_receive_timer_kept_from_an_earlier_receive_never_changes_when_one_times_out():
    async def later(parent, delay, msg):
        await otpvm.sleep(delay)
        send(parent, msg)

    async def main():
        me = self()
        # A long timeout that waits and is satisfied: its timer stays armed...
        otpvm.spawn(later, me, 0.01, "first")
        assert await receive("first", timeout=60) == "first"
        # ...and a shorter timeout still fires on time.
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            await receive("never", timeout=0.05)
        assert time.monotonic() - t0 < 5
        # A short timeout satisfied, then a longer one: the short timer fires
        # while the long receive waits, and must not end it early.
        otpvm.spawn(later, me, 0.01, "second")
        assert await receive("second", timeout=0.05) == "second"
        otpvm.spawn(later, me, 0.15, "third")
        assert await receive("third", timeout=2) == "third"
        return "ok"

    with otpvm.VM() as vm:
        assert vm.run(main) == "ok"
        assert vm.pending_timers == 0
