"""otpvm.registry: processes registered under any hashable key."""

import time

import pytest

import otpvm
from otpvm import ANY, Down, gen_server, receive, registry, send
from otpvm.gen_server import GenServer, Ok, Reply
from otpvm.registry import AlreadyRegisteredError
from otpvm.terms import UnknownNameError


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


def queue_len():
    return otpvm.process_info(otpvm.self())["message_queue_len"]


async def holder(reg, keys, parent):
    """Registers keys, reports, then echoes messages to parent until 'stop'."""
    for key in keys:
        await registry.register(reg, key, ("value", key))
    send(parent, ("registered", otpvm.self()))
    while True:
        msg = await receive()
        if msg == "stop":
            return
        send(parent, ("echo", otpvm.self(), msg))


async def start_holder(reg, keys):
    pid = otpvm.spawn(holder, reg, keys, otpvm.self())
    await receive(("registered", pid), timeout=5)
    return pid


async def eventually(check, timeout=1.0):
    """Polls an async condition until it holds (at most `timeout` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return True
        if time.monotonic() > deadline:
            return False
        await otpvm.sleep(0.001)


KEYS = [("room", 42), 7, frozenset({"a", "b"}), "plain", ("nested", (1, 2), frozenset({3}))]


@pytest.mark.parametrize("schedulers", [1, 4])
def test_any_hashable_key_registers_and_looks_up(schedulers):
    async def main():
        reg = await registry.start_link(name="reg")
        pid = await start_holder("reg", KEYS)
        found = [await registry.lookup("reg", key) for key in KEYS]
        equal_copy = await registry.lookup(reg, frozenset({"b", "a"}))
        missing = await registry.lookup(reg, ("room", 43))
        held = await registry.keys(reg, pid)
        return pid, found, equal_copy, missing, held, await registry.count(reg), queue_len()

    pid, found, equal_copy, missing, held, n, left = run(main, schedulers=schedulers)
    assert found == [(pid, ("value", key)) for key in KEYS]
    assert equal_copy == (pid, ("value", frozenset({"a", "b"})))
    assert missing is None
    assert sorted(map(repr, held)) == sorted(map(repr, KEYS))
    assert n == len(KEYS)
    assert left == 0


def test_a_taken_key_is_refused_even_to_its_holder():
    async def main():
        reg = await registry.start()
        pid = await start_holder(reg, [("job", 1)])
        with pytest.raises(AlreadyRegisteredError) as other:
            await registry.register(reg, ("job", 1), "mine")
        await registry.register(reg, ("job", 2))
        with pytest.raises(AlreadyRegisteredError) as again:
            await registry.register(reg, ("job", 2))
        owner = await registry.lookup(reg, ("job", 1))
        return pid, other.value, again.value, owner

    pid, other, again, owner = run(main)
    assert other.pid == pid and other.key == ("job", 1)
    assert "already registered" in str(other)
    assert isinstance(other, otpvm.NameRegistrationError)
    assert again.pid != pid
    assert owner == (pid, ("value", ("job", 1)))


def test_unhashable_key_is_a_type_error():
    async def main():
        reg = await registry.start()
        with pytest.raises(TypeError):
            await registry.register(reg, ["a", "list"])
        return await registry.count(reg)

    assert run(main) == 0


def test_unregister_removes_only_the_callers_key():
    async def main():
        reg = await registry.start()
        pid = await start_holder(reg, ["a"])
        await registry.unregister(reg, "a")          # not ours: nothing happens
        still = await registry.lookup(reg, "a")
        await registry.register(reg, "b", 2)
        await registry.unregister(reg, "b")
        await registry.unregister(reg, "never")
        gone = await registry.lookup(reg, "b")
        await registry.register(reg, "b", 3)        # free again
        mine = await registry.keys(reg, otpvm.self())
        return pid, still, gone, mine

    pid, still, gone, mine = run(main)
    assert still == (pid, ("value", "a"))
    assert gone is None
    assert mine == ["b"]


@pytest.mark.parametrize("how", ["normal", "crash", "kill"])
def test_keys_are_removed_when_the_holder_dies(how):
    async def main():
        reg = await registry.start_link()
        pid = await start_holder(reg, KEYS)
        other = await start_holder(reg, ["other"])
        ref = otpvm.monitor(pid)
        if how == "normal":
            send(pid, "stop")
        elif how == "crash":
            otpvm.exit(pid, "boom")
        else:
            otpvm.exit(pid, "kill")
        down = await receive(Down(ref, ANY, ANY), timeout=5)

        async def removed():
            return await registry.count(reg) == 1

        ok = await eventually(removed)
        looked = [await registry.lookup(reg, key) for key in KEYS]
        return down.reason, ok, looked, await registry.keys(reg, pid), \
            await registry.lookup(reg, "other"), other

    reason, ok, looked, held, survivor, other = run(main)
    assert reason == {"normal": "normal", "crash": "boom", "kill": "killed"}[how]
    assert ok
    assert looked == [None] * len(KEYS)
    assert held == []
    assert survivor == (other, ("value", "other"))


def test_a_dead_holders_key_is_free_before_its_down_is_handled():
    """White-box: the registry's own state, driven from this process, with
    the holder's Down still waiting in our mailbox."""

    async def main():
        server = registry.Registry()
        state = server.init(None).state
        pid = otpvm.spawn(receive)
        assert server._register(state, pid, "k", 1) == "ok"
        assert server._register(state, pid, "k2", 2) == "ok"
        ref = otpvm.monitor(pid)
        otpvm.exit(pid, "kill")
        await receive(Down(ref, ANY, ANY), timeout=5)   # the registry's Down is here too
        waiting = queue_len()
        hidden = server.handle_call(("lookup", "k"), None, state).value
        taker = otpvm.spawn(receive)
        outcome = server._register(state, taker, "k", 3)
        result = (waiting, hidden, outcome, dict(state.entries), dict(state.table),
                  list(state.owners), queue_len())
        send(taker, "stop")
        return result

    waiting, hidden, outcome, entries, table, owners, left = run(main)
    assert waiting == 1
    assert hidden is None
    assert outcome == "ok"
    assert list(entries.values()) == [(owners[0], 3)] and list(entries) == ["k"]
    assert table == {"k": owners[0]}
    assert left == 0                                     # the stale Down was flushed


@pytest.mark.parametrize("schedulers", [1, 4])
def test_concurrent_registration_has_exactly_one_winner_per_key(schedulers):
    async def contender(reg, keys, parent):
        won = []
        for key in keys:
            try:
                await registry.register(reg, key, otpvm.self())
            except AlreadyRegisteredError as exc:
                assert exc.pid != otpvm.self()
            else:
                won.append(key)
        send(parent, ("won", otpvm.self(), won))
        await receive("stop")

    async def main():
        reg = await registry.start_link()
        keys = [("k", i) for i in range(20)]
        pids = [otpvm.spawn(contender, reg, keys[i % 3:] + keys[:i % 3], otpvm.self())
                for i in range(30)]
        wins = {}
        for pid in pids:
            _, _, won = await receive(("won", pid, ANY), timeout=5)
            wins[pid] = won
        owners = {key: await registry.lookup(reg, key) for key in keys}
        for pid in pids:
            send(pid, "stop")
        return wins, owners

    wins, owners = run(main, schedulers=schedulers)
    all_won = [key for won in wins.values() for key in won]
    assert sorted(all_won) == sorted(owners)             # each key won exactly once
    for pid, won in wins.items():
        for key in won:
            assert owners[key] == (pid, pid)


def test_send_to_a_key():
    async def main():
        reg = await registry.start(name="reg")
        pid = await start_holder(reg, [("worker", 1)])
        to = await registry.send("reg", ("worker", 1), ["hello"])
        echo = await receive(("echo", pid, ANY), timeout=5)
        with pytest.raises(UnknownNameError):
            await registry.send("reg", ("worker", 2), "lost")
        return pid, to, echo

    pid, to, echo = run(main)
    assert to == pid
    assert echo == ("echo", pid, ["hello"])


def test_whereis_name_and_via_resolve_without_a_call():
    async def main():
        reg = await registry.start(name="reg")
        pid = await start_holder(reg, [("worker", 1)])
        name = registry.via("reg", ("worker", 1))
        found = (registry.whereis_name("reg", ("worker", 1)), name.whereis_name(),
                 registry.whereis_name(reg, ("worker", 2)),
                 registry.whereis_name("no_such_registry", 1))
        ref = otpvm.monitor(pid)
        otpvm.exit(pid, "kill")
        await receive(Down(ref, ANY, ANY), timeout=5)
        after = name.whereis_name()                      # dead: hidden at once
        return pid, found, after

    pid, found, after = run(main)
    assert found == (pid, pid, None, None)
    assert after is None


class Echo(GenServer):
    async def init(self, reg):
        await registry.register(reg, "echo")
        return Ok(None)

    def handle_call(self, request, from_, state):
        return Reply(("echo", request), state)


def test_gen_server_call_through_via():
    async def main():
        reg = await registry.start()
        await gen_server.start(Echo, reg)
        return await gen_server.call(registry.via(reg, "echo"), "hi")

    assert run(main) == ("echo", "hi")


def test_registry_death_clears_whereis_name():
    async def main():
        reg = await registry.start()
        await registry.register(reg, "k")
        found = registry.whereis_name(reg, "k")
        await gen_server.stop(reg)
        return found, registry.whereis_name(reg, "k")

    found, after = run(main)
    assert found is not None
    assert after is None
