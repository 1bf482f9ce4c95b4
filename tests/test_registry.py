"""Registered names."""

import pytest

import otpvm
from otpvm import receive, self, send


async def idle():
    await receive("stop")


def test_register_whereis_send_by_name_unregister():
    async def main():
        pid = otpvm.spawn(idle)
        otpvm.register("worker", pid)
        found = otpvm.whereis("worker")
        names = otpvm.registered()
        send("worker", "stop")
        otpvm.unregister("worker")
        return pid, found, names, otpvm.whereis("worker")

    pid, found, names, after = otpvm.run(main)
    assert found == pid and "worker" in names and after is None


def test_name_is_released_when_the_process_dies():
    async def main():
        pid = otpvm.spawn(idle)
        otpvm.register("short_lived", pid)
        ref = otpvm.monitor(pid)
        send(pid, "stop")
        await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        return otpvm.whereis("short_lived"), "short_lived" in otpvm.registered()

    assert otpvm.run(main) == (None, False)


def test_register_errors_are_clear():
    async def main():
        a = otpvm.spawn(idle)
        b = otpvm.spawn(idle)
        otpvm.register("taken", a)
        errors = []
        for name, pid in [("taken", b), ("other", a), ("", b), (42, b), ("undefined", b)]:
            with pytest.raises(otpvm.NameRegistrationError) as info:
                otpvm.register(name, pid)
            errors.append(str(info.value))
        dead = otpvm.spawn(lambda: None)
        ref = otpvm.monitor(dead)
        await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        with pytest.raises(otpvm.NameRegistrationError, match="not alive"):
            otpvm.register("ghost", dead)
        with pytest.raises(otpvm.NameRegistrationError, match="not a registered name"):
            otpvm.unregister("nobody")
        return errors

    errors = otpvm.run(main)
    assert "already registered" in errors[0] and "already registered as" in errors[1]


def test_sending_to_an_unregistered_name_raises():
    async def main():
        with pytest.raises(otpvm.UnknownNameError, match="nobody"):
            send("nobody", "hello")
        with pytest.raises(TypeError, match="destination"):
            send(42, "hello")
        return "ok"

    assert otpvm.run(main) == "ok"


def test_concurrent_registration_has_exactly_one_winner():
    async def contender(parent):
        try:
            otpvm.register("the_one", self())
            send(parent, ("won", self()))
        except otpvm.NameRegistrationError:
            send(parent, ("lost", self()))
        await receive("stop")

    async def main(n):
        pids = [otpvm.spawn(contender, self()) for _ in range(n)]
        results = [await receive(timeout=5) for _ in range(n)]
        for pid in pids:
            send(pid, "stop")
        return results

    results = otpvm.run(main, 50, schedulers=4)
    winners = [pid for outcome, pid in results if outcome == "won"]
    assert len(winners) == 1
