"""Supervisors, as OTP specifies them."""

import logging
import random

import pytest

import otpvm
from otpvm import ANY, Down, gen_server, receive, send, supervisor
from otpvm.gen_server import GenServer, NoReply, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupervisorError, SupFlags


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


class Worker(GenServer):
    """Tells the test process each time it starts: ('started', id, pid)."""

    def init(self, args):
        ident, watcher = args
        self.ident = ident
        send(watcher, ("started", ident, otpvm.self()))
        return Ok(0)

    def handle_call(self, request, from_, state):
        if request == "crash":
            raise RuntimeError(f"worker {self.ident} crashed")
        return Reply(("alive", self.ident), state)

    def handle_cast(self, msg, state):
        if msg == "stop_normal":
            return gen_server.Stop("normal", state)
        return NoReply(state)


async def start_worker(ident, watcher):
    return await gen_server.start_link(Worker, (ident, watcher))


def spec(ident, watcher, **kw):
    return ChildSpec(ident, (start_worker, (ident, watcher)), **kw)


class Sup(Supervisor):
    def init(self, args):
        flags, specs = args
        return flags, specs


async def started(ident=ANY):
    _, who, pid = await receive(("started", ident, ANY), timeout=5)
    return who, pid


async def kill(pid):
    otpvm.exit(pid, "kill")


async def start_sup(flags, specs, name=None):
    sup = await supervisor.start_link(Sup, (flags, specs), name=name)
    return sup


def pids_by_id(children):
    return {ident: pid for ident, pid, _, _ in children}


@pytest.mark.parametrize("strategy, killed, restarted", [
    ("one_for_one", "b", ["b"]),
    ("one_for_all", "b", ["a", "b", "c"]),
    ("rest_for_one", "b", ["b", "c"]),
    ("rest_for_one", "a", ["a", "b", "c"]),
])
def test_strategies_restart_the_right_children_in_order(strategy, killed, restarted):
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags(strategy, 5, 10), [spec(i, me) for i in "abc"])
        first = [await started() for _ in range(3)]
        assert [i for i, _ in first] == ["a", "b", "c"]          # started in order
        before = dict(first)
        await kill(before[killed])
        again = [await started() for _ in restarted]
        with pytest.raises(TimeoutError):        # and nothing else restarted
            await receive(("started", ANY, ANY), timeout=0.1)
        after = pids_by_id(await supervisor.which_children(sup))
        return [i for i, _ in again], before, after

    order, before, after = run(main)
    assert order == restarted
    for ident in "abc":
        assert (after[ident] != before[ident]) == (ident in restarted)


def test_restart_intensity_exceeded_exactly_at_the_limit(caplog):
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags("one_for_one", 3, 60), [spec("w", me)])
        ref = otpvm.monitor(sup)
        _, pid = await started()
        for _ in range(3):                    # three restarts are allowed
            await kill(pid)
            _, pid = await started()
        alive_after_three = otpvm.is_alive(sup)
        await kill(pid)                       # the fourth is one too many
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        exit_msg = await receive(otpvm.Exit(sup, ANY), timeout=5)
        return alive_after_three, down.reason, exit_msg.reason, otpvm.is_alive(pid)

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        alive, down_reason, exit_reason, worker_alive = run(main)
    assert alive is True
    assert down_reason == "shutdown" and exit_reason == "shutdown"
    assert worker_alive is False
    messages = [r.getMessage() for r in caplog.records]
    assert sum("reached_max_restart_intensity" in m for m in messages) == 1
    assert sum("child_terminated" in m for m in messages) == 4


def test_transient_child_normal_exit_vs_crash():
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags("one_for_one", 5, 10),
                              [spec("t", me, restart="transient")])
        _, pid = await started()
        with pytest.raises(otpvm.CallError):
            await gen_server.call(pid, "crash")
        _, pid2 = await started()             # restarted after a crash
        gen_server.cast(pid2, "stop_normal")
        with pytest.raises(TimeoutError):
            await receive(("started", ANY, ANY), timeout=0.2)   # not after 'normal'
        return await supervisor.which_children(sup), await supervisor.count_children(sup)

    children, counts = run(main)
    assert children == [("t", None, "worker", (start_worker.__module__,))]
    assert counts == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}


def test_temporary_child_is_never_restarted_and_forgotten():
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags(), [spec("tmp", me, restart="temporary")])
        _, pid = await started()
        await kill(pid)
        with pytest.raises(TimeoutError):
            await receive(("started", ANY, ANY), timeout=0.2)
        return await supervisor.which_children(sup)

    assert run(main) == []


def test_child_ignoring_shutdown_is_killed_after_its_timeout(caplog):
    import time

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        # A gen_server treats its parent's 'shutdown' as a stop request, so the
        # stubborn child is a raw process that traps exits and ignores it.
        async def raw(watcher):
            otpvm.process_flag("trap_exit", True)
            send(watcher, ("started", "raw", otpvm.self()))
            while True:
                await receive()

        async def start_raw(watcher):
            return otpvm.spawn_link(raw, watcher)

        sup = await start_sup(SupFlags(), [
            ChildSpec("raw", (start_raw, (me,)), shutdown=0.2)])
        _, pid = await started()
        ref = otpvm.monitor(pid)
        t = time.monotonic()
        await supervisor.terminate_child(sup, "raw")
        took = time.monotonic() - t
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return took, down.reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        took, reason = run(main)
    assert reason == "killed"
    assert took >= 0.2
    assert any("shutdown_error" in r.getMessage() for r in caplog.records)


def test_brutal_kill_and_shutdown_order_is_reverse_of_start():
    order = []

    class Noting(Worker):
        def init(self, args):
            otpvm.process_flag("trap_exit", True)
            return super().init(args)

        def terminate(self, reason, state):
            order.append((self.ident, reason))

    async def start_noting(ident, watcher):
        return await gen_server.start_link(Noting, (ident, watcher))

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags(), [
            ChildSpec(i, (start_noting, (i, me))) for i in "abc"])
        for _ in range(3):
            await started()
        ref = otpvm.monitor(sup)
        otpvm.exit(sup, "shutdown")
        return (await receive(Down(ref, ANY, ANY), timeout=5)).reason

    assert run(main) == "shutdown"
    assert order == [("c", "shutdown"), ("b", "shutdown"), ("a", "shutdown")]


def test_failed_child_start_stops_the_supervisor_and_the_started_children():
    async def bad_start():
        raise ValueError("no database")

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        with pytest.raises(gen_server.StartError) as info:
            await start_sup(SupFlags(), [spec("ok", me),
                                         ChildSpec("bad", (bad_start, ()))])
        _, pid = await started()
        return info.value.reason, otpvm.is_alive(pid)

    reason, alive = run(main)
    assert reason[0] == "shutdown" and reason[1][:2] == ("failed_to_start_child", "bad")
    assert alive is False


def test_dynamic_children_api():
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags(), [])
        pid = await supervisor.start_child(sup, spec("x", me))
        await started()
        with pytest.raises(SupervisorError) as dup:
            await supervisor.start_child(sup, spec("x", me))
        with pytest.raises(SupervisorError) as running:
            await supervisor.delete_child(sup, "x")
        await supervisor.terminate_child(sup, "x")
        stopped = await supervisor.which_children(sup)
        pid2 = await supervisor.restart_child(sup, "x")
        await started()
        await supervisor.terminate_child(sup, "x")
        await supervisor.delete_child(sup, "x")
        with pytest.raises(SupervisorError) as missing:
            await supervisor.restart_child(sup, "x")
        return (dup.value.reason, running.value.reason, stopped, pid != pid2,
                missing.value.reason, await supervisor.which_children(sup))

    dup, running, stopped, new_pid, missing, final = run(main)
    assert dup[0] == "already_started"
    assert running == "running"
    assert stopped == [("x", None, "worker", (start_worker.__module__,))]
    assert new_pid and missing == "not_found" and final == []


def test_simple_one_for_one():
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        template = ChildSpec("conn", (start_worker, ()), restart="transient")
        sup = await start_sup(SupFlags("simple_one_for_one", 5, 10), [template])
        pids = [await supervisor.start_child(sup, (f"c{i}", me)) for i in range(3)]
        for _ in range(3):
            await started()
        await kill(pids[1])
        who, _ = await started()                      # restarted with its own args
        counts = await supervisor.count_children(sup)
        await supervisor.terminate_child(sup, pids[0])
        return who, counts, await supervisor.count_children(sup)

    who, counts, after = run(main)
    assert who == "c1"
    assert counts == {"specs": 1, "active": 3, "supervisors": 0, "workers": 3}
    assert after["active"] == 2


def test_significant_child_and_auto_shutdown():
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags(auto_shutdown="any_significant"), [
            spec("main", me, restart="transient", significant=True), spec("helper", me)])
        ref = otpvm.monitor(sup)
        (_, main_pid), _ = await started("main"), await started("helper")
        gen_server.cast(main_pid, "stop_normal")
        return (await receive(Down(ref, ANY, ANY), timeout=5)).reason

    assert run(main) == "shutdown"


def test_check_childspecs_reports_problems():
    # OTP's reasons, as tuples that read as English (item 13 of issue 13).
    def check(*args):
        reason = supervisor.check_childspecs(*args)
        return reason if reason is None else (reason, str(reason))

    assert check([ChildSpec("a", (start_worker, ()))]) is None
    assert check([ChildSpec("a", (start_worker, ())), ChildSpec("a", (start_worker, ()))]) == (
        ("duplicate_child_name", "a"), "duplicate child id 'a'")
    assert check(["a"]) == (("invalid_child_spec", "a"), "expected a ChildSpec, not 'a'")
    assert check("a")[0] == ("badarg", "a")          # erl: {error, {badarg, _}}
    significant = ChildSpec("a", (start_worker, ()), restart="transient", significant=True)
    assert check([significant]) == (
        ("bad_combination", (("auto_shutdown", "never"), ("significant", True))),
        "child 'a' is significant but auto_shutdown is 'never'")
    assert check([significant], "any_significant") is None
    # A spec checks itself when made; one that came in a message was
    # unpickled without that, so check_childspecs checks again.
    bad = ChildSpec("a", (start_worker, ()))
    object.__setattr__(bad, "restart", "sometimes")
    assert check([bad]) == (
        ("invalid_restart_type", "sometimes"),
        "ChildSpec 'a': restart must be 'permanent', 'transient' or 'temporary', "
        "not 'sometimes'")


GOOD_START = (start_worker, ())


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(restart="sometimes"), ValueError,
     "ChildSpec 'c': restart must be 'permanent', 'transient' or 'temporary', not 'sometimes'"),
    (dict(shutdown=-1), ValueError,
     "ChildSpec 'c': shutdown must be 'brutal_kill', 'infinity', seconds >= 0 or None "
     "(5 s for a worker, 'infinity' for a supervisor), not -1"),
    (dict(shutdown="later"), ValueError, "shutdown must be 'brutal_kill', 'infinity', "),
    (dict(shutdown=[5]), TypeError, "shutdown must be 'brutal_kill', 'infinity', "),
    (dict(shutdown=True), TypeError, "shutdown must be 'brutal_kill', 'infinity', "),
    (dict(type="manager"), ValueError,
     "ChildSpec 'c': type must be 'worker' or 'supervisor', not 'manager'"),
    (dict(significant="yes"), TypeError,
     "ChildSpec 'c': significant must be True or False, not 'yes'"),
    (dict(significant=True), ValueError,
     "ChildSpec 'c': a significant child cannot be permanent "
     "(restart must be 'transient' or 'temporary')"),
    (dict(modules=["m"]), TypeError, "ChildSpec 'c': modules must be a tuple, not ['m']"),
    (dict(start=("nope", ())), TypeError,
     "ChildSpec 'c': start must be (fn, args), a callable and the tuple of its arguments, "
     "not ('nope', ())"),
    (dict(start=(start_worker, ["args", "in", "a", "list"])), TypeError, "start must be"),
    (dict(start=start_worker), TypeError, "start must be (fn, args)"),
    (dict(id=["unhashable"]), TypeError, "ChildSpec: id must be hashable, not ['unhashable']"),
])
def test_a_bad_child_spec_is_refused_when_made_naming_the_field(kwargs, error, message):
    fields = {"id": "c", "start": GOOD_START, **kwargs}
    with pytest.raises(error) as exc:
        ChildSpec(**fields)
    assert message in str(exc.value)


@pytest.mark.parametrize("kwargs", [
    dict(shutdown="brutal_kill"), dict(shutdown="infinity"), dict(shutdown=0),
    dict(shutdown=2.5), dict(type="supervisor"), dict(restart="temporary", significant=True),
    dict(restart="transient"), dict(modules=("m",)),
])
def test_good_child_specs_are_accepted(kwargs):
    assert ChildSpec("c", GOOD_START, **kwargs).validate() is None


@pytest.mark.parametrize("args, kwargs, error, message", [
    (("one_for_everyone",), {}, ValueError,
     "SupFlags: strategy must be 'one_for_one', 'one_for_all', 'rest_for_one' or "
     "'simple_one_for_one', not 'one_for_everyone'"),
    ((), dict(intensity=-1), ValueError, "SupFlags: intensity must be an int >= 0, not -1"),
    ((), dict(intensity=1.5), TypeError,
     "SupFlags: intensity (the restarts allowed within period) must be an int >= 0, not 1.5"),
    ((), dict(intensity=True), TypeError,
     "SupFlags: intensity (the restarts allowed within period) must be an int >= 0, not True"),
    ((), dict(period=0), ValueError, "SupFlags: period must be seconds > 0, not 0"),
    ((), dict(period=-5), ValueError, "SupFlags: period must be seconds > 0, not -5"),
    ((), dict(period="5"), TypeError,
     "SupFlags: period must be seconds > 0 (an int or a float), not '5'"),
    ((), dict(auto_shutdown="sometimes"), ValueError,
     "SupFlags: auto_shutdown must be 'never', 'any_significant' or 'all_significant', "
     "not 'sometimes'"),
])
def test_bad_sup_flags_are_refused_when_made_naming_the_field(args, kwargs, error, message):
    with pytest.raises(error) as exc:
        SupFlags(*args, **kwargs)
    assert str(exc.value) == message


def test_good_sup_flags_are_accepted():
    for flags in [SupFlags(), SupFlags("simple_one_for_one", 0, 0.5),
                  SupFlags("one_for_all", 10, 60, auto_shutdown="any_significant")]:
        assert flags.validate() is None


def test_a_supervisor_checks_what_came_unpickled_and_refuses_it_cleanly():
    # Specs and flags that crossed a process boundary were unpickled, without
    # their constructor's checks: the supervisor checks them again.
    bad_flags = SupFlags()
    object.__setattr__(bad_flags, "strategy", "one_for_everyone")
    bad_spec = ChildSpec("w", GOOD_START)
    object.__setattr__(bad_spec, "restart", "sometimes")

    async def main():
        otpvm.process_flag("trap_exit", True)
        with pytest.raises(otpvm.gen.StartError) as refused:
            await supervisor.start_link(Sup, (bad_flags, []))
        sup = await supervisor.start_link(Sup, (SupFlags(), []))
        with pytest.raises(SupervisorError) as exc:
            await supervisor.start_child(sup, bad_spec)
        return refused.value.reason, exc.value.reason

    start_reason, child_reason = run(main)
    # OTP's reasons, which read as English (item 13 of issue 13).
    assert start_reason == ("supervisor_data", ("invalid_strategy", "one_for_everyone"))
    assert str(start_reason) == (
        "Sup.init returned bad supervisor data: SupFlags: strategy must be 'one_for_one', "
        "'one_for_all', 'rest_for_one' or 'simple_one_for_one', not 'one_for_everyone'")
    assert child_reason == ("invalid_restart_type", "sometimes")
    assert str(child_reason) == ("ChildSpec 'w': restart must be 'permanent', 'transient' or "
                                 "'temporary', not 'sometimes'")


class Branch(Supervisor):
    def init(self, args):
        prefix, watcher, leaves = args
        return SupFlags("one_for_one", 1000, 1), [
            spec(f"{prefix}{i}", watcher) for i in range(leaves)]


class Trunk(Supervisor):
    def init(self, args):
        watcher, branches, leaves = args
        return SupFlags("one_for_all", 1000, 1), [
            ChildSpec(f"b{i}", (supervisor.start_link, (Branch, (f"b{i}.", watcher, leaves))),
                      type="supervisor") for i in range(branches)]


class Root(Supervisor):
    def init(self, args):
        return SupFlags("rest_for_one", 1000, 1), [
            ChildSpec("trunk", (supervisor.start_link, (Trunk, args)), type="supervisor"),
            spec("logger", args[0])]


@pytest.mark.parametrize("seed, schedulers", [(1, 1), (2, 1), (3, 4), (4, 4)])
def test_three_level_tree_heals_after_random_kills(seed, schedulers, caplog):
    rng = random.Random(seed)

    async def leaves_of(sup):
        found = []
        for ident, pid, kind, _ in await supervisor.which_children(sup):
            if kind == "supervisor":
                found += await leaves_of(pid)
            else:
                found.append((ident, pid))
        return found

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        root = await supervisor.start_link(Root, (me, 3, 4), name="root")
        kills = 0
        for _ in range(30):
            leaves = await leaves_of(root)
            victim = rng.choice(leaves)[1]
            ref = otpvm.monitor(victim)
            otpvm.exit(victim, rng.choice(["kill", "crash", "shutdown_other"]))
            await receive(Down(ref, ANY, ANY), timeout=5)
            kills += 1
        # Let restarts finish: every leaf answers a call.
        leaves = await leaves_of(root)
        answers = [await gen_server.call(pid, "ping") for _, pid in leaves]
        return kills, sorted(ident for ident, _ in leaves), answers

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        kills, idents, answers = run(main, schedulers=schedulers)
    expected = sorted([f"b{b}.{i}" for b in range(3) for i in range(4)] + ["logger"])
    assert idents == expected
    assert all(a[0] == "alive" for a in answers)
    reports = [r.getMessage() for r in caplog.records if "child_terminated" in r.getMessage()]
    assert len(reports) >= kills          # every kill was reported (one_for_all adds more)


async def start_ignored():
    return gen_server.Ignore        # a start function that starts nothing: OTP's ignore


def test_an_ignored_temporary_child_is_forgotten():
    """As OTP's supervisor (do_start_child, start_children): a temporary
    child whose start returned ignore is not kept (issue 13, item 6); a
    permanent one is, for restart_child."""
    async def main():
        sup = await start_sup(SupFlags("one_for_one"), [
            ChildSpec("t0", (start_ignored, ()), restart="temporary"),
            ChildSpec("p0", (start_ignored, ()))])
        pid = await supervisor.start_child(sup, ChildSpec("t1", (start_ignored, ()),
                                                          restart="temporary"))
        again = await supervisor.start_child(sup, ChildSpec("t1", (start_ignored, ()),
                                                            restart="temporary"))
        return pid, again, [c[0] for c in await supervisor.which_children(sup)]

    assert run(main) == (None, None, ["p0"])


def test_simple_one_for_one_administration():
    """As OTP's supervisor (issue 13, items 11 and 12): under
    simple_one_for_one children are named by pid, an id is refused with
    'simple_one_for_one', and terminating a child that already ended is ok;
    elsewhere a pid names no child ('not_found')."""
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        s1 = await start_sup(SupFlags("simple_one_for_one"),
                             [ChildSpec("conn", (start_worker, ()), restart="temporary")])
        a = await supervisor.start_child(s1, ("a", me))
        await started()
        errors = []
        for call in (supervisor.terminate_child, supervisor.restart_child,
                     supervisor.delete_child):
            with pytest.raises(SupervisorError) as info:
                await call(s1, "conn")
            errors.append(info.value.reason)
        await kill(a)
        await supervisor.terminate_child(s1, a)          # ended already: ok
        s2 = await start_sup(SupFlags("one_for_one"), [spec("w", me)])
        _, w = await started()
        with pytest.raises(SupervisorError) as info:
            await supervisor.terminate_child(s2, w)
        return errors, info.value.reason, otpvm.is_alive(w)

    errors, by_pid, alive = run(main)
    assert errors == ["simple_one_for_one"] * 3
    assert by_pid == "not_found" and alive


# -- issue 13: OTP fidelity ---------------------------------------------------


class StartGate(GenServer):
    """Decides each start of a flaky child, like OTP's supervisor_deadlock
    test module with its ets flag: answers 'ok' or 'fail' by its mode, or in
    mode 'hold' keeps the start waiting until released; tells the watcher of
    each attempt: ('attempt', n)."""

    def init(self, watcher):
        return Ok({"mode": "ok", "attempts": 0, "watcher": watcher, "held": None})

    def handle_call(self, request, from_, state):
        if request == "start?":
            state["attempts"] += 1
            send(state["watcher"], ("attempt", state["attempts"]))
            if state["mode"] == "hold":
                state["held"] = from_
                return NoReply(state)
            return Reply(state["mode"], state)
        if request[0] == "mode":
            state["mode"] = request[1]
            return Reply(state["attempts"], state)
        if request[0] == "release":
            gen_server.reply(state["held"], request[1])
            return Reply(state["attempts"], state)
        return Reply(state["attempts"], state)


async def idle_body():
    await receive("stop")


async def gated_start():
    if await gen_server.call("gate", "start?", 5) == "fail":
        raise otpvm.gen.StartError("refused")
    return otpvm.spawn_link(idle_body)


async def start_gate(mode="ok"):
    await gen_server.start_link(StartGate, otpvm.self(), name="gate")
    await gen_server.call("gate", ("mode", mode))


async def gate(*request):
    return await gen_server.call("gate", request or ("count",))


def gated(ident="a", **kw):
    return ChildSpec(ident, (gated_start, ()), shutdown="brutal_kill", **kw)


@pytest.mark.parametrize("schedulers", [1, 4])
def test_a_failing_restart_is_retried_through_messages_and_calls_are_answered(schedulers):
    """OTP-9549 (supervisor_SUITE:hanging_restart_loop): the supervisor
    answers while a restart keeps failing; the child shows as restarting,
    restart_child and delete_child answer 'restarting', terminate_child
    ends the loop."""
    async def main():
        otpvm.process_flag("trap_exit", True)
        await start_gate()
        sup = await start_sup(SupFlags("one_for_one", 1000, 10), [gated()])
        first = (await supervisor.which_children(sup))[0][1]
        await receive(("attempt", 1))
        await gate("mode", "fail")
        otpvm.exit(first, "kill")
        await receive(("attempt", 3), timeout=5)        # the loop is running
        children = await supervisor.which_children(sup)
        counts = await supervisor.count_children(sup)
        refused = []
        for call in (supervisor.restart_child, supervisor.delete_child):
            with pytest.raises(SupervisorError) as exc:
                await call(sup, "a")
            refused.append(exc.value.reason)
        with pytest.raises(SupervisorError) as present:
            await supervisor.start_child(sup, gated())
        await supervisor.terminate_child(sup, "a")
        await supervisor.which_children(sup)    # a try-again queued before is handled
        attempts = await gate()
        after = await supervisor.which_children(sup)
        assert await gate() == attempts          # no more attempts: the loop ended
        await gate("mode", "ok")
        pid = await supervisor.restart_child(sup, "a")
        return children, counts, refused, present.value.reason, after, isinstance(pid, otpvm.Pid)

    children, counts, refused, present, after, restarted = run(main, schedulers=schedulers)
    assert children == [("a", "restarting", "worker", (__name__,))]
    assert counts == {"specs": 1, "active": 0, "supervisors": 0, "workers": 1}
    assert refused == ["restarting", "restarting"]
    assert present == "already_present"
    assert after == [("a", None, "worker", (__name__,))]
    assert restarted


@pytest.mark.parametrize("strategy", ["one_for_one", "simple_one_for_one"])
def test_a_shutdown_ends_a_restart_loop(strategy):
    """The supervisor's shutdown is handled between two tries: the second
    try, held until the shutdown is queued, is the last one."""
    async def main():
        otpvm.process_flag("trap_exit", True)
        await start_gate()
        sup = await start_sup(SupFlags(strategy, 1000, 10), [gated()])
        if strategy == "simple_one_for_one":
            await supervisor.start_child(sup, ())
        first = (await supervisor.which_children(sup))[0][1]
        await receive(("attempt", 1))
        await gate("mode", "fail")
        otpvm.exit(first, "kill")
        await receive(("attempt", 2), timeout=5)
        await gate("mode", "hold")
        await receive(("attempt", 3), timeout=5)           # the first retry, held
        ref = otpvm.monitor(sup)
        otpvm.exit(sup, "shutdown")
        await gate("release", "fail")
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason, await gate()

    reason, attempts = run(main)
    assert (reason, attempts) == ("shutdown", 3)


def test_each_failed_try_counts_against_the_restart_intensity(caplog):
    """As OTP's restart/2: every try, the first and each retry, is one
    restart; past the intensity the supervisor gives up."""
    async def main():
        otpvm.process_flag("trap_exit", True)
        await start_gate()
        sup = await start_sup(SupFlags("one_for_one", 3, 60), [gated()])
        first = (await supervisor.which_children(sup))[0][1]
        await receive(("attempt", 1))
        await gate("mode", "fail")
        ref = otpvm.monitor(sup)
        otpvm.exit(first, "kill")
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason, await gate() - 1

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason, tries = run(main)
    assert (reason, tries) == ("shutdown", 3)
    contexts = [r.getMessage().split("context ")[1].split(",")[0] for r in caplog.records
                if "supervisor report" in r.getMessage()]
    assert contexts == ["child_terminated", "start_error", "start_error", "start_error",
                        "shutdown"]


@pytest.mark.parametrize("strategy, restarted_again", [
    ("one_for_all", ["a", "b"]),       # OTP: child1 shut down, both started again
    ("rest_for_one", ["b"]),           # OTP: only the child that failed, and after it
])
def test_a_sibling_failing_to_restart_is_retried_by_the_strategy(strategy, restarted_again):
    """supervisor_SUITE's one_for_all/rest_for_one_other_child_fails_restart."""
    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        await start_gate()
        sup = await start_sup(SupFlags(strategy, 10, 60), [spec("a", me), gated("b")])
        await started("a")
        await receive(("attempt", 1))
        a1 = pids_by_id(await supervisor.which_children(sup))["a"]
        await gate("mode", "fail")
        otpvm.exit(a1, "kill")
        _, a2 = await started("a")                  # a restarted, b refuses...
        await receive(("attempt", 2), timeout=5)
        ref = otpvm.monitor(a2)
        await gate("mode", "ok")                    # ...and is retried
        await receive(("attempt", 3), timeout=5)
        children = await supervisor.which_children(sup)
        again = []
        if "a" in restarted_again:
            await receive(Down(ref, ANY, "shutdown"), timeout=5)
            again.append((await started("a"))[0])
        again.append("b")
        a_now = pids_by_id(children)["a"]
        return again, a_now == a2, all(isinstance(p, otpvm.Pid) for _, p, _, _ in children)

    again, a_kept, all_running = run(main)
    assert again == restarted_again
    assert a_kept is (restarted_again == ["b"])
    assert all_running


def test_simple_one_for_one_children_get_their_shutdown_together():
    """Item 5 (OTP's terminate_dynamic_children): every child is told at
    once; each here waits for all the others to be told before ending."""
    async def patient(watcher):
        otpvm.process_flag("trap_exit", True)
        await receive(otpvm.Exit(ANY, "shutdown"))
        send(watcher, ("told", otpvm.self()))
        await receive("go")

    async def start_patient(watcher):
        return otpvm.spawn_link(patient, watcher)

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await start_sup(SupFlags("simple_one_for_one", 5, 10),
                              [ChildSpec("p", (start_patient, (me,)), shutdown=10)])
        pids = {await supervisor.start_child(sup, ()) for _ in range(10)}
        ref = otpvm.monitor(sup)
        otpvm.exit(sup, "shutdown")
        told = {(await receive(("told", ANY), timeout=5))[1] for _ in range(10)}
        for pid in told:
            send(pid, "go")
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return told == pids, down.reason

    assert run(main) == (True, "shutdown")


def test_start_child_refuses_a_significant_child_where_auto_shutdown_is_never():
    """Item 7: as OTP, at start_child as at start."""
    async def main():
        sup = await start_sup(SupFlags(), [])
        with pytest.raises(SupervisorError) as exc:
            await supervisor.start_child(sup, gated(restart="transient", significant=True))
        return exc.value.reason, await supervisor.which_children(sup)

    reason, children = run(main)
    # erl: {error,{bad_combination,[{auto_shutdown,never},{significant,true}]}}
    assert reason == ("bad_combination", (("auto_shutdown", "never"), ("significant", True)))
    assert str(reason) == "child 'a' is significant but auto_shutdown is 'never'"
    assert children == []


def test_which_children_lists_newest_first_and_which_child_finds_one():
    """Item 10: OTP lists children newest first; which_child (OTP 27)."""
    async def main():
        me = otpvm.self()
        sup = await start_sup(SupFlags(), [spec("a", me), spec("b", me)])
        c = await supervisor.start_child(sup, spec("c", me))
        listed = [i for i, _, _, _ in await supervisor.which_children(sup)]
        one = await supervisor.which_child(sup, "c")
        with pytest.raises(SupervisorError) as missing:
            await supervisor.which_child(sup, "x")
        return listed, one == ("c", c, "worker", (__name__,)), missing.value.reason

    assert run(main) == (["c", "b", "a"], True, "not_found")


def test_supervisor_start_errors_are_otps_reasons_and_read_as_english():
    """Item 13: {start_spec, R}, {bad_start_spec, Specs}, {supervisor_data, R}."""
    a = ChildSpec("a", (start_worker, ()))

    async def main():
        otpvm.process_flag("trap_exit", True)
        reasons = []
        for flags, specs in [(SupFlags(), [a, a]), (SupFlags("simple_one_for_one"), []),
                             (SupFlags(), ["child4"]), (("one_for_one", 2), [])]:
            with pytest.raises(otpvm.gen.StartError) as exc:
                await start_sup(flags, specs)
            reasons.append((exc.value.reason, str(exc.value)))
        return reasons

    assert run(main) == [
        (("start_spec", ("duplicate_child_name", "a")),
         "Sup.init returned bad supervisor data: duplicate child id 'a'"),
        (("bad_start_spec", []),
         "Sup.init returned bad supervisor data: simple_one_for_one needs exactly one "
         "child spec (the template), not 0"),
        (("start_spec", ("invalid_child_spec", "child4")),
         "Sup.init returned bad supervisor data: expected a ChildSpec, not 'child4'"),
        (("supervisor_data", ("invalid_type", ("one_for_one", 2))),
         "Sup.init returned bad supervisor data: expected a SupFlags, "
         "not ('one_for_one', 2)"),
    ]


def test_bad_specs_and_flags_carry_otps_reason():
    """Item 13: the ValueError/TypeError raised when one is made has .reason."""
    def reason(make):
        with pytest.raises((ValueError, TypeError)) as exc:
            make()
        return exc.value.reason

    assert reason(lambda: ChildSpec("c", GOOD_START, restart="prmanent")) == (
        "invalid_restart_type", "prmanent")
    assert reason(lambda: ChildSpec("c", GOOD_START, shutdown=-10)) == ("invalid_shutdown", -10)
    assert reason(lambda: ChildSpec("c", GOOD_START, type="wrker")) == (
        "invalid_child_type", "wrker")
    assert reason(lambda: ChildSpec("c", "mfa")) == ("invalid_mfa", "mfa")
    assert reason(lambda: ChildSpec("c", GOOD_START, modules="dy")) == ("invalid_modules", "dy")
    assert reason(lambda: ChildSpec("c", GOOD_START, significant="maybe")) == (
        "invalid_significant", "maybe")
    assert reason(lambda: SupFlags("none_for_one")) == ("invalid_strategy", "none_for_one")
    assert reason(lambda: SupFlags(intensity=-1)) == ("invalid_intensity", -1)
    assert reason(lambda: SupFlags(period=0)) == ("invalid_period", 0)
    assert reason(lambda: SupFlags(auto_shutdown="sometimes")) == (
        "invalid_auto_shutdown", "sometimes")


@pytest.mark.parametrize("auto_shutdown", ["any_significant", "all_significant"])
def test_simple_one_for_one_refuses_auto_shutdown(auto_shutdown):
    """Item 14: OTP 27 refuses the combination (OTP 25 and 26 accepted it)."""
    with pytest.raises(ValueError) as exc:
        SupFlags("simple_one_for_one", auto_shutdown=auto_shutdown)
    assert exc.value.reason == ("bad_combination", (
        ("auto_shutdown", auto_shutdown), ("strategy", "simple_one_for_one")))
    assert "cannot shut itself down automatically" in str(exc.value)
    unpickled = SupFlags("simple_one_for_one")
    object.__setattr__(unpickled, "auto_shutdown", auto_shutdown)

    async def main():
        otpvm.process_flag("trap_exit", True)
        with pytest.raises(otpvm.gen.StartError) as refused:
            await start_sup(unpickled, [ChildSpec("c", GOOD_START)])
        return refused.value.reason

    assert run(main) == ("supervisor_data", exc.value.reason)


def test_start_info_childspec_and_callback_module():
    """A start function may return (pid, info), OTP's {ok, Pid, Info}:
    start_child and restart_child answer it; get_childspec and
    get_callback_module as in OTP."""
    async def start_with_info(tag):
        return otpvm.spawn_link(idle_body), ("info", tag)

    async def main():
        sup = await start_sup(SupFlags(), [])
        started_info = await supervisor.start_child(
            sup, ChildSpec("i", (start_with_info, (1,))))
        await supervisor.terminate_child(sup, "i")
        restarted_info = await supervisor.restart_child(sup, "i")
        spec_ = await supervisor.get_childspec(sup, "i")
        with pytest.raises(SupervisorError) as missing:
            await supervisor.get_childspec(sup, "x")
        simple = await start_sup(SupFlags("simple_one_for_one"),
                                 [ChildSpec("t", (start_with_info, ()), type="supervisor")])
        pid, info = await supervisor.start_child(simple, (2,))
        template = await supervisor.get_childspec(simple, pid)
        return (started_info, restarted_info, spec_.shutdown, missing.value.reason, info,
                template.shutdown, await supervisor.get_callback_module(sup))

    started_info, restarted_info, shutdown, missing, info, template_shutdown, module = run(main)
    assert started_info[1] == restarted_info[1] == ("info", 1)
    assert started_info[0] != restarted_info[0]
    assert (shutdown, missing, info, template_shutdown) == (5.0, "not_found", ("info", 2),
                                                            "infinity")
    assert module is Sup
