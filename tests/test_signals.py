"""Links, monitors and exit signals, checked against Erlang/OTP's behaviour.

Every expectation here was checked with ``erl`` (OTP 25); the Erlang
equivalent is quoted where it is not obvious.  Each test runs with one
scheduler thread and with four: the answers must be the same.

Tests wait on messages (``receive(..., timeout=T)``), never on sleeps: a
process's signals are ordered with its messages, so a reply to a message
sent after a signal proves the signal was handled.
"""

import threading

import pytest

import otpvm
from otpvm import (
    ANY,
    AnyOf,
    Down,
    Exit,
    demonitor,
    is_alive,
    link,
    monitor,
    process_flag,
    process_info,
    receive,
    register,
    self,
    send,
    spawn,
    spawn_link,
    spawn_monitor,
    unlink,
)

T = 5                       # generous: a correct run never waits this long
NEVER = "__never sent__"    # a pattern nothing matches


@pytest.fixture(params=[1, 4], ids=["sched1", "sched4"])
def run(request):
    n = request.param

    def _run(main, *args):
        return otpvm.run(main, *args, schedulers=n)

    return _run


# -- helpers -----------------------------------------------------------------

async def idle():
    """Waits forever (leaves every message in the mailbox)."""
    await receive(NEVER)


def _is_cmd(msg):
    return type(msg) is tuple and len(msg) > 0 and type(msg[0]) is str


async def puppet(top, trap=False):
    """A process driven by commands ``(op, *args)``; replies
    ``('ok', self(), result)`` to top.  Anything that is not a command (data,
    Exit and Down messages) is forwarded to top as ``('got', self(), msg)``."""
    if trap:
        process_flag("trap_exit", True)
    me = self()
    while True:
        msg = await receive()
        if not _is_cmd(msg):
            send(top, ("got", me, msg))
            continue
        op, *args = msg
        if op == "raise":
            raise ValueError(*args)
        if op == "exit":
            otpvm.exit(args[0])
        if op == "return":
            return None
        if op == "sync":
            res = None
        elif op == "trap":
            res = process_flag("trap_exit", args[0])
        elif op == "link":
            res = link(args[0])
        elif op == "unlink":
            res = unlink(args[0])
        elif op == "monitor":
            res = monitor(args[0])
        elif op == "exit2":
            res = otpvm.exit(args[0], args[1])
        elif op == "info":
            res = process_info(self())
        elif op == "spawn_link":
            res = spawn_link(puppet, top, *args)
        else:
            raise AssertionError(f"unknown puppet command {op!r}")
        send(top, ("ok", me, res))


async def call(p, *cmd):
    """Runs a puppet command and returns its result."""
    send(p, cmd)
    return (await receive(("ok", p, ANY), timeout=T))[2]


async def start(trap=False, linked=False):
    """A puppet that is running (its trap flag is set) when this returns."""
    p = (spawn_link if linked else spawn)(puppet, self(), trap)
    await call(p, "sync")
    return p


async def down(ref):
    return await receive(Down(ref, ANY, ANY), timeout=T)


async def none_left(pattern):
    """Asserts no message matching pattern is in the mailbox right now."""
    with pytest.raises(TimeoutError):
        await receive(pattern, timeout=0)


async def dead_pid():
    pid, ref = spawn_monitor(lambda: None)
    assert (await down(ref)).reason == "normal"
    return pid


def same_exception(a, b):
    return type(a) is type(b) and a.args == b.args


# -- spawn_link ----------------------------------------------------------------

def test_linked_child_crash_kills_nontrapping_parent_with_the_same_reason(run):
    boom = ValueError("boom")

    async def child():
        await receive("go")
        raise boom

    async def parent(top):
        send(top, ("child", spawn_link(child)))
        await idle()

    async def main():
        p, pref = spawn_monitor(parent, self())
        _, c = await receive(("child", ANY), timeout=T)
        cref = monitor(c)
        send(c, "go")
        return (await down(cref)).reason, (await down(pref)).reason

    creason, preason = run(main)
    assert creason is boom
    assert preason is boom


def test_linked_child_crash_becomes_exit_message_for_trapping_parent(run):
    boom = ValueError("boom")

    async def child():
        raise boom

    async def main():
        process_flag("trap_exit", True)
        c = spawn_link(child)
        msg = await receive(Exit(c, ANY), timeout=T)
        return msg, c, process_info(self())["links"]

    msg, c, links = run(main)
    assert type(msg) is Exit
    assert msg == (c, boom) and msg.reason is boom
    assert links == []


def test_linked_child_ending_normally_does_not_kill_parent(run):
    async def child():
        await receive("go")
        return 42

    async def parent(top):
        c = spawn_link(child)
        ref = monitor(c)
        send(c, "go")
        d = await down(ref)
        # The link's exit signal was sent before the Down: it was handled.
        send(top, ("survived", d.reason, process_info(self())["links"]))
        await idle()

    async def main():
        p, pref = spawn_monitor(parent, self())
        msg = await receive(AnyOf(("survived", ANY, ANY), Down(pref, ANY, ANY)), timeout=T)
        assert msg == ("survived", "normal", [])
        assert is_alive(p)

    run(main)


def test_linked_child_exit_normal_does_not_kill_parent(run):
    async def child():
        await receive("go")
        otpvm.exit("normal")

    async def parent(top):
        c = spawn_link(child)
        ref = monitor(c)
        send(c, "go")
        send(top, ("survived", (await down(ref)).reason))
        await idle()

    async def main():
        p, pref = spawn_monitor(parent, self())
        msg = await receive(AnyOf(("survived", ANY), Down(pref, ANY, ANY)), timeout=T)
        assert msg == ("survived", "normal")

    run(main)


def test_trapping_parent_gets_exit_normal_from_linked_child(run):
    async def child():
        return "done"

    async def main():
        process_flag("trap_exit", True)
        c = spawn_link(child)
        msg = await receive(Exit(c, ANY), timeout=T)
        assert type(msg) is Exit and msg == (c, "normal")

    run(main)


@pytest.mark.parametrize("reason", ["shutdown", ("custom", 1), "noproc"])
def test_linked_child_exit_reason_kills_nontrapping_parent(run, reason):
    async def main():
        p = await start()
        c = await call(p, "spawn_link")
        pref, cref = monitor(p), monitor(c)
        send(c, ("exit", reason))
        assert (await down(cref)).reason == reason
        assert (await down(pref)).reason == reason

    run(main)


def test_spawn_link_links_both_sides_at_once(run):
    async def main():
        c = spawn_link(idle)
        return c, process_info(self())["links"], process_info(c)["links"]

    c, mine, theirs = run(main)
    assert mine == [c]
    assert len(theirs) == 1


# -- exit(pid, reason) -----------------------------------------------------------

def test_exit_normal_is_ignored_by_nontrapping_target(run):
    async def main():
        p = await start()
        ref = monitor(p)
        otpvm.exit(p, "normal")
        await call(p, "sync")           # the signal came first, and did nothing
        assert is_alive(p)
        await none_left(Down(ref, ANY, ANY))
        await none_left(("got", ANY, ANY))

    run(main)


@pytest.mark.parametrize("trap", [False, True], ids=["plain", "trapping"])
def test_exit_kill_kills_with_killed(run, trap):
    async def main():
        p = await start(trap=trap)
        ref = monitor(p)
        otpvm.exit(p, "kill")
        d = await down(ref)
        assert d == (ref, p, "killed")
        # Messages p sent come before its Down: no Exit was forwarded.
        await none_left(("got", ANY, ANY))
        assert not is_alive(p)

    run(main)


@pytest.mark.parametrize("reason", ["shutdown", ("custom", 1), "killed", "noproc"])
def test_exit_reason_kills_nontrapping_target_with_that_reason(run, reason):
    async def main():
        p = await start()
        ref = monitor(p)
        otpvm.exit(p, reason)
        assert await down(ref) == (ref, p, reason)

    run(main)


def test_exit_with_an_exception_reason_kills_with_that_exception(run):
    reason = RuntimeError("told to die")

    async def main():
        p = await start()
        ref = monitor(p)
        otpvm.exit(p, reason)
        return (await down(ref)).reason

    assert run(main) is reason


@pytest.mark.parametrize("reason", ["normal", "shutdown", ("custom", 1), "killed"])
def test_trapping_target_receives_exit_from_sender(run, reason):
    async def main():
        p = await start(trap=True)
        ref = monitor(p)
        otpvm.exit(p, reason)
        _, _, msg = await receive(("got", p, ANY), timeout=T)
        assert type(msg) is Exit
        assert msg == (self(), reason)
        await call(p, "sync")
        assert is_alive(p)
        await none_left(Down(ref, ANY, ANY))

    run(main)


def test_exit_to_a_dead_pid_does_nothing(run):
    async def main():
        d = await dead_pid()
        otpvm.exit(d, "kill")
        otpvm.exit(d, "shutdown")
        return "ok"

    assert run(main) == "ok"


def test_exit_self_normal_ends_a_nontrapping_caller(run):
    # erl: exit(self(), normal) ends a process that does not trap exits,
    # with reason normal (it is not ignored as 'normal' from others is).
    async def body(top):
        otpvm.exit(self(), "normal")
        send(top, "still running")
        await receive(timeout=0.5)
        send(top, "still running")

    async def main():
        p, ref = spawn_monitor(body, self())
        msg = await receive(timeout=T)
        assert msg == Down(ref, p, "normal")

    run(main)


def test_exit_self_normal_is_a_message_when_trapping(run):
    async def main():
        process_flag("trap_exit", True)
        otpvm.exit(self(), "normal")
        msg = await receive(timeout=T)
        assert type(msg) is Exit and msg == (self(), "normal")
        return "survived"

    assert run(main) == "survived"


def test_exit_self_kill_kills_even_when_trapping(run):
    async def body(top):
        process_flag("trap_exit", True)
        otpvm.exit(self(), "kill")
        send(top, "still running")

    async def main():
        p, ref = spawn_monitor(body, self())
        assert await receive(timeout=T) == Down(ref, p, "killed")

    run(main)


def test_exit_self_shutdown_ends_a_nontrapping_caller(run):
    async def body(top):
        otpvm.exit(self(), "shutdown")
        send(top, "still running")

    async def main():
        p, ref = spawn_monitor(body, self())
        assert await receive(timeout=T) == Down(ref, p, "shutdown")

    run(main)


def test_exit_self_when_trapping_keeps_order_with_own_messages(run):
    # erl: self() ! a, exit(self(), shutdown), self() ! b
    #      -> a, {'EXIT', Self, shutdown}, b
    async def main():
        process_flag("trap_exit", True)
        send(self(), "a")
        otpvm.exit(self(), "shutdown")
        send(self(), "b")
        return [await receive(timeout=T) for _ in range(3)], self()

    got, me = run(main)
    assert got == ["a", Exit(me, "shutdown"), "b"]


def test_linked_process_ending_with_kill_sends_a_trappable_kill(run):
    # erl: a linked process that calls exit(kill) kills its non-trapping
    # partner with reason kill (not killed: only exit(Pid, kill) is special).
    async def main():
        p = await start()
        c = await call(p, "spawn_link")
        pref, cref = monitor(p), monitor(c)
        send(c, ("exit", "kill"))
        assert await down(cref) == (cref, c, "kill")
        assert await down(pref) == (pref, p, "kill")

    run(main)


def test_trapping_process_gets_exit_kill_from_link(run):
    async def main():
        process_flag("trap_exit", True)
        c = await start(linked=True)
        ref = monitor(c)
        send(c, ("exit", "kill"))
        msg = await receive(Exit(c, ANY), timeout=T)
        assert msg == (c, "kill")
        assert (await down(ref)).reason == "kill"
        return "survived"

    assert run(main) == "survived"


# -- link / unlink ------------------------------------------------------------------

def test_link_to_dead_pid_when_trapping_gives_exit_noproc(run):
    async def main():
        d = await dead_pid()
        process_flag("trap_exit", True)
        link(d)
        msg = await receive(timeout=T)
        assert type(msg) is Exit and msg == (d, "noproc")
        assert process_info(self())["links"] == []
        return "survived"

    assert run(main) == "survived"


def test_link_to_dead_pid_when_not_trapping_raises_at_the_call(run):
    # erl: catch link(Dead) -> {'EXIT', {noproc, _}}: link/1 raises noproc
    # in a caller that does not trap exits, and nothing after it runs.
    async def body(top, d):
        try:
            link(d)
        except Exception as exc:
            send(top, ("raised", repr(exc)))
            await idle()
        send(top, ("returned", None))
        await idle()

    async def main():
        d = await dead_pid()
        p, ref = spawn_monitor(body, self(), d)
        msg = await receive(AnyOf(("raised", ANY), ("returned", ANY), Down(ref, ANY, ANY)),
                            timeout=T)
        assert msg[0] == "raised", f"link() to a dead pid did not raise: got {msg!r}"
        assert is_alive(p)              # it caught the error

    run(main)


def test_link_to_dead_pid_when_not_trapping_ends_the_caller(run):
    # erl: the process ends with {noproc, Stacktrace}; here either the
    # 'noproc' atom or the exception link() raised, mentioning noproc.
    async def body(d):
        link(d)
        await idle()

    async def main():
        d = await dead_pid()
        p, ref = spawn_monitor(body, d)
        reason = (await down(ref)).reason
        assert reason == "noproc" or (
            isinstance(reason, BaseException) and "noproc" in repr(reason)), reason

    run(main)


def test_link_is_bidirectional(run):
    async def main():
        a, b = await start(), await start()
        aref, bref = monitor(a), monitor(b)
        await call(a, "link", b)
        send(b, ("raise", "from b"))
        rb = (await down(bref)).reason
        ra = (await down(aref)).reason
        assert same_exception(rb, ValueError("from b"))
        assert ra is rb

    run(main)


def test_link_to_self_and_twice_is_one_link(run):
    async def main():
        link(self())
        assert process_info(self())["links"] == []
        p = await start()
        link(p)
        link(p)
        assert process_info(self())["links"] == [p]
        await call(p, "sync")
        assert process_info(p)["links"] == [self()]
        unlink(p)                       # links are not counted
        assert process_info(self())["links"] == []
        await call(p, "sync")
        assert process_info(p)["links"] == []
        ref = monitor(p)
        send(p, ("raise", "unlinked"))
        await down(ref)
        return "survived"

    assert run(main) == "survived"


def test_unlink_right_after_kill_means_no_exit_when_trapping(run):
    # erl: exit(F, kill), unlink(F) -> DOWN killed, and no 'EXIT' message.
    async def main():
        process_flag("trap_exit", True)
        c = await start(linked=True)
        ref = monitor(c)
        otpvm.exit(c, "kill")
        unlink(c)
        assert await down(ref) == (ref, c, "killed")
        # c sent its link signal before its Down: it would be here by now.
        await none_left(Exit(c, ANY))
        await none_left(None)
        return "survived"

    assert run(main) == "survived"


def test_unlink_right_after_kill_saves_a_nontrapping_process(run):
    async def body(top):
        c = spawn_link(idle)
        ref = monitor(c)
        otpvm.exit(c, "kill")
        unlink(c)
        d = await down(ref)
        send(top, ("survived", d.reason, process_info(self())["links"]))
        await idle()

    async def main():
        p, ref = spawn_monitor(body, self())
        msg = await receive(AnyOf(("survived", ANY, ANY), Down(ref, ANY, ANY)), timeout=T)
        assert msg == ("survived", "killed", [])

    run(main)


def test_unlink_right_after_crash_request_saves_a_nontrapping_process(run):
    async def body(top):
        c = spawn_link(puppet, top)
        ref = monitor(c)
        send(c, ("raise", "gone"))
        unlink(c)
        d = await down(ref)
        send(top, ("survived", type(d.reason).__name__))
        await idle()

    async def main():
        p, ref = spawn_monitor(body, self())
        msg = await receive(AnyOf(("survived", ANY), Down(ref, ANY, ANY)), timeout=T)
        assert msg == ("survived", "ValueError")

    run(main)


def test_unlink_removes_the_link_on_both_sides(run):
    async def main():
        p = await start(linked=True)
        unlink(p)
        assert process_info(self())["links"] == []
        await call(p, "sync")
        assert process_info(p)["links"] == []
        ref = monitor(p)
        send(p, ("exit", "shutdown"))
        assert (await down(ref)).reason == "shutdown"
        return "survived"

    assert run(main) == "survived"


def test_unlink_of_an_unlinked_or_dead_pid_is_harmless(run):
    async def main():
        d = await dead_pid()
        unlink(d)
        p = await start()
        unlink(p)
        await call(p, "sync")
        return "ok"

    assert run(main) == "ok"


# -- monitors -------------------------------------------------------------------------

def test_down_reason_normal_for_a_process_that_returns(run):
    async def main():
        p = await start()
        ref = monitor(p)
        send(p, ("return",))
        assert await down(ref) == (ref, p, "normal")

    run(main)


def test_down_reason_is_the_exception_object_for_a_crash(run):
    boom = KeyError("missing")

    async def child():
        await receive("go")
        raise boom

    async def main():
        c = spawn(child)
        ref = monitor(c)
        send(c, "go")
        d = await down(ref)
        assert type(d) is Down and d.ref == ref and d.pid == c
        return d.reason

    assert run(main) is boom


@pytest.mark.parametrize("reason", ["shutdown", ("custom", [1, 2]), "normal"])
def test_down_reason_for_exit_reason(run, reason):
    async def main():
        p = await start()
        ref = monitor(p)
        send(p, ("exit", reason))
        assert await down(ref) == (ref, p, reason)

    run(main)


def test_down_reason_for_kill_is_killed(run):
    async def main():
        p = await start()
        ref = monitor(p)
        otpvm.exit(p, "kill")
        assert await down(ref) == (ref, p, "killed")

    run(main)


def test_monitor_of_a_dead_pid_gives_noproc_at_once(run):
    async def main():
        d = await dead_pid()
        ref = monitor(d)
        msg = await receive(timeout=0)
        assert type(msg) is Down and msg == (ref, d, "noproc")

    run(main)


def test_monitor_by_registered_name_gets_the_reason(run):
    async def main():
        p = await start()
        register("sig_target", p)
        ref = monitor("sig_target")
        send(p, ("exit", "bye"))
        d = await down(ref)
        assert d.reason == "bye"

    run(main)


def test_monitor_by_registered_name_down_names_the_name(run):
    # erl: monitor(process, nm) -> {'DOWN', Ref, process, {nm, node()}, bye}:
    # a monitor by name reports the name, as the noproc case here already does.
    async def main():
        p = await start()
        register("sig_target2", p)
        ref = monitor("sig_target2")
        send(p, ("exit", "bye"))
        d = await down(ref)
        assert d == (ref, "sig_target2", "bye")

    run(main)


def test_monitor_of_an_unknown_name_gives_noproc(run):
    async def main():
        ref = monitor("sig_nobody")
        msg = await receive(timeout=T)
        assert type(msg) is Down and msg == (ref, "sig_nobody", "noproc")

    run(main)


def test_demonitor_prevents_down(run):
    async def main():
        p = await start()
        ref = monitor(p)
        assert demonitor(ref) is True
        ref2 = monitor(p)
        send(p, ("exit", "bye"))
        assert (await down(ref2)).reason == "bye"
        await none_left(Down(ref, ANY, ANY))
        await none_left(None)
        assert process_info(self())["monitors"] == []

    run(main)


def test_demonitor_after_death_before_down_was_seen_drops_it(run):
    async def main():
        p = await start()
        ref = monitor(p)
        otpvm.exit(p, "kill")
        # Whether or not p is gone yet, no Down for ref may arrive from now on.
        demonitor(ref)
        ref2 = monitor(p)
        await down(ref2)
        await none_left(Down(ref, ANY, ANY))

    run(main)


def test_demonitor_flush_removes_a_delivered_down(run):
    async def main():
        p = await start()
        ref = monitor(p)
        ref2 = monitor(p)
        send(self(), "before")
        send(p, ("exit", "bye"))
        await down(ref2)                # the Down for ref is in the mailbox now
        send(self(), "after")
        # erl: demonitor(Ref, [flush, info]) -> false (it had fired).
        assert demonitor(ref, flush=True) is False
        await none_left(Down(ref, ANY, ANY))
        assert await receive(timeout=0) == "before"
        assert await receive(timeout=0) == "after"

    run(main)


def test_demonitor_without_flush_leaves_a_delivered_down(run):
    async def main():
        p = await start()
        ref = monitor(p)
        ref2 = monitor(p)
        send(p, ("exit", "bye"))
        await down(ref2)
        assert demonitor(ref) is False
        assert await receive(Down(ref, ANY, ANY), timeout=0) == (ref, p, "bye")

    run(main)


def test_demonitor_flush_of_an_active_monitor(run):
    async def main():
        p = await start()
        ref = monitor(p)
        assert demonitor(ref, flush=True) is True
        ref2 = monitor(p)
        send(p, ("exit", "bye"))
        await down(ref2)
        await none_left(Down(ref, ANY, ANY))

    run(main)


def test_demonitor_return_values(run):
    # erl: demonitor(M, [info]) -> true while active, false once removed or
    # once its DOWN was received.
    async def main():
        p = await start()
        ref = monitor(p)
        assert demonitor(ref) is True
        assert demonitor(ref) is False
        ref = monitor(p)
        send(p, ("exit", "bye"))
        await down(ref)
        assert demonitor(ref) is False
        assert demonitor(otpvm.make_ref()) is False

    run(main)

def test_an_alias_monitor_ends_its_alias_with_the_down_or_demonitor(run):
    # erl: an {alias, demonitor} monitor's alias works while the monitor is
    # active and ends with it, so a reply that comes after the Down (or after
    # demonitor) is dropped, not left in a mailbox nobody reads it from:
    #   P = spawn(fun() -> receive go -> ok end end),
    #   M = monitor(process, P, [{alias, demonitor}]), P ! go,
    #   receive {'DOWN', M, _, _, _} -> ok end, M ! late,
    #   receive late -> kept after 100 -> dropped end.        % dropped
    #   (and M2 ! early -> kept; true = demonitor(M2), M2 ! late2 -> dropped)
    async def main():
        p = await start()
        ref = monitor(p, alias=True)
        send(p, ("exit", "bye"))
        await down(ref)
        otpvm.send_alias(self(), ref, "late")
        send(self(), "marker")              # after "late": in order from us
        await receive("marker", timeout=T)
        await none_left("late")

        q = await start()
        ref = monitor(q, alias=True)
        otpvm.send_alias(self(), ref, "early")
        assert await receive("early", timeout=T) == "early"
        assert demonitor(ref) is True
        otpvm.send_alias(self(), ref, "late2")
        send(self(), "marker")
        await receive("marker", timeout=T)
        await none_left("late2")

    run(main)


def test_a_down_dropped_after_demonitor_leaves_the_mailbox_intact(run):
    # Regression: when drain() dropped a Down whose monitor was gone, it
    # freed the node and then fell through to the signal branch, which read
    # the freed node and released the Down and the node a second time (a
    # segfault, or two later messages sharing one node).  The noproc Down of
    # a monitor on a dead pid waits in our own inbox, so demonitor() right
    # after it takes that path deterministically.  (Whether the noproc Down
    # should be dropped at all is not what this test checks.)
    def nothing():
        return None

    async def main():
        dead, ref = spawn_monitor(nothing)
        await down(ref)
        for i in range(2000):
            ref = monitor(dead)
            demonitor(ref)
            send(self(), ("a", i))
            send(self(), ("b", i))
            assert await receive(timeout=T) == ("a", i)
            assert await receive(timeout=T) == ("b", i)
        return "intact"

    assert run(main) == "intact"



def test_spawn_monitor_reports_the_crash_without_linking(run):
    async def crasher():
        raise ZeroDivisionError("zero")

    async def main():
        pid, ref = spawn_monitor(crasher)
        assert type(pid) is otpvm.Pid and type(ref) is otpvm.Ref
        d = await down(ref)
        assert d.ref == ref and d.pid == pid
        assert same_exception(d.reason, ZeroDivisionError("zero"))
        assert process_info(self())["links"] == []
        assert process_info(self())["monitors"] == []
        return "survived"

    assert run(main) == "survived"


def test_spawn_monitor_of_a_function_that_returns_at_once(run):
    async def main():
        results = []
        for _ in range(50):
            pid, ref = spawn_monitor(lambda: None)
            results.append(await down(ref) == (ref, pid, "normal"))
        return results

    assert all(run(main))


def test_two_monitors_give_two_downs(run):
    async def main():
        p = await start()
        r1, r2 = monitor(p), monitor(p)
        assert r1 != r2
        send(p, ("exit", "bye"))
        assert await down(r2) == (r2, p, "bye")
        assert await down(r1) == (r1, p, "bye")
        await none_left(Down(ANY, p, ANY))

    run(main)


def test_monitor_and_link_together(run):
    async def main():
        process_flag("trap_exit", True)
        p = await start(linked=True)
        ref = monitor(p)
        send(p, ("exit", "bye"))
        first = await receive(timeout=T)
        second = await receive(timeout=T)
        # Same order as erl: the link's exit signal, then the Down.
        assert first == Exit(p, "bye") and type(first) is Exit
        assert second == Down(ref, p, "bye")

    run(main)


# -- ordering ------------------------------------------------------------------------

def test_messages_sent_before_death_arrive_before_down(run):
    async def child(top, n):
        for i in range(n):
            send(top, i)
        raise ValueError("end")

    async def main():
        pid, ref = spawn_monitor(child, self(), 1000)
        got = [await receive(timeout=T) for _ in range(1001)]
        assert got[:1000] == list(range(1000))
        assert type(got[1000]) is Down and got[1000].ref == ref

    run(main)


def test_messages_sent_before_death_arrive_before_exit(run):
    async def child(top, n):
        for i in range(n):
            send(top, i)
        otpvm.exit("done")

    async def main():
        process_flag("trap_exit", True)
        pid = spawn_link(child, self(), 1000)
        got = [await receive(timeout=T) for _ in range(1001)]
        assert got[:1000] == list(range(1000))
        assert got[1000] == Exit(pid, "done")

    run(main)


def test_exit_signal_arrives_after_earlier_messages(run):
    async def main():
        p = await start(trap=True)
        for i in range(100):
            send(p, i)
        otpvm.exit(p, "shutdown")
        send(p, 100)
        got = [(await receive(("got", p, ANY), timeout=T))[2] for _ in range(102)]
        assert got == list(range(100)) + [Exit(self(), "shutdown"), 100]

    run(main)


# A kill that arrives while the process's code runs (here from VM.stop, on
# the test's thread) is handled by its next look at its mailbox, before any
# message: Erlang's receive handles signals first.  The process spins (no
# await) until the kill is queued, so the receive or process_info after it
# finds the kill and a message both waiting.

@pytest.mark.parametrize("look", ["receive", "process_info"])
def test_a_kill_queued_while_running_ends_the_process_at_its_next_look(look):
    started = threading.Event()
    went_on = []

    async def victim():
        me = self()
        send(me, "already here")
        started.set()
        while is_alive(me):     # false as soon as the kill is queued
            pass
        went_on.append(await receive(timeout=0) if look == "receive" else process_info(me))

    with otpvm.VM(schedulers=1, slice_limit=T) as vm:     # never judged stuck: see test_stuck
        vm.spawn(victim)
        assert started.wait(T)
    assert went_on == []

def test_ten_thousand_messages_keep_their_order(run):
    async def sender(dest, n):
        for i in range(n):
            send(dest, i)

    async def main():
        spawn(sender, self(), 10_000)
        got = [await receive(timeout=T) for _ in range(10_000)]
        assert got == list(range(10_000))

    run(main)


def test_order_is_kept_per_sender_with_several_senders(run):
    async def sender(dest, tag, n):
        for i in range(n):
            send(dest, (tag, i))

    async def main():
        for tag in range(4):
            spawn(sender, self(), tag, 2_500)
        seen = {tag: [] for tag in range(4)}
        for _ in range(10_000):
            tag, i = await receive(timeout=T)
            seen[tag].append(i)
        assert all(seen[tag] == list(range(2_500)) for tag in range(4))

    run(main)


# -- chains -----------------------------------------------------------------------------

async def _chain():
    """a - b - c linked (a spawned plainly), each monitored by the caller."""
    a = await start()
    b = await call(a, "spawn_link")
    c = await call(b, "spawn_link")
    return (a, b, c), (monitor(a), monitor(b), monitor(c))


def test_chain_crash_kills_all_with_the_same_reason(run):
    async def main():
        (a, b, c), (ra, rb, rc) = await _chain()
        send(c, ("raise", "chain"))
        dc, db, da = await down(rc), await down(rb), await down(ra)
        assert same_exception(dc.reason, ValueError("chain"))
        assert db.reason is dc.reason and da.reason is dc.reason
        assert not (is_alive(a) or is_alive(b) or is_alive(c))

    run(main)


def test_chain_kill_propagates_as_killed(run):
    async def main():
        (a, b, c), (ra, rb, rc) = await _chain()
        otpvm.exit(c, "kill")
        assert (await down(rc)).reason == "killed"
        assert (await down(rb)).reason == "killed"
        assert (await down(ra)).reason == "killed"

    run(main)


def test_chain_with_a_trapping_middle_stops_the_crash(run):
    async def main():
        (a, b, c), (ra, rb, rc) = await _chain()
        assert await call(b, "trap", True) is False
        send(c, ("raise", "chain"))
        dc = await down(rc)
        _, _, msg = await receive(("got", b, ANY), timeout=T)
        assert type(msg) is Exit and msg.pid == c
        assert same_exception(msg.reason, dc.reason)
        await call(b, "sync")
        await call(a, "sync")
        assert is_alive(a) and is_alive(b)
        assert (await call(b, "info"))["links"] == [a]
        await none_left(Down(ANY, ANY, ANY))

    run(main)


def test_chain_normal_end_of_the_tail_leaves_the_rest(run):
    async def main():
        (a, b, c), (ra, rb, rc) = await _chain()
        send(c, ("return",))
        assert (await down(rc)).reason == "normal"
        await call(b, "sync")
        await call(a, "sync")
        assert is_alive(a) and is_alive(b)

    run(main)


# -- introspection ---------------------------------------------------------------------------

def test_is_alive_follows_the_process(run):
    async def main():
        assert is_alive(self())
        p = await start()
        assert is_alive(p)
        ref = monitor(p)
        send(p, ("return",))
        await down(ref)
        assert not is_alive(p)
        assert process_info(p) is None

    run(main)


def test_is_alive_is_false_right_after_exit_kill(run):
    # erl docs (is_process_alive/1): signals from the caller reach the target
    # before its aliveness is checked, so exit(P, kill), is_process_alive(P)
    # always returns false.
    async def main():
        p = await start()
        otpvm.exit(p, "kill")
        return is_alive(p)

    assert run(main) is False


def test_process_info_links_after_link_and_unlink(run):
    async def main():
        p = await start()
        link(p)
        assert process_info(self())["links"] == [p]
        await call(p, "sync")
        assert process_info(p)["links"] == [self()]
        unlink(p)
        assert process_info(self())["links"] == []
        await call(p, "sync")
        assert process_info(p)["links"] == []

    run(main)


def test_process_info_links_of_the_other_side_right_after_link(run):
    # erl: link(B), process_info(B, links) -> [Self] at once; unlink(B),
    # process_info(B, links) -> [] at once (process_info/2 on another process
    # is ordered after the caller's earlier signals to it).
    async def main():
        p = await start()
        link(p)
        after_link = process_info(p)["links"]
        unlink(p)
        after_unlink = process_info(p)["links"]
        return self(), after_link, after_unlink

    me, after_link, after_unlink = run(main)
    assert after_link == [me]
    assert after_unlink == []


def test_process_info_monitored_by_and_monitors(run):
    async def main():
        p = await start()
        ref = monitor(p)
        assert process_info(self())["monitors"] == [p]
        await call(p, "sync")
        assert process_info(p)["monitored_by"] == [self()]
        demonitor(ref)
        assert process_info(self())["monitors"] == []
        await call(p, "sync")
        assert process_info(p)["monitored_by"] == []
        ref = monitor(p)
        send(p, ("exit", "bye"))
        await down(ref)
        assert process_info(self())["monitors"] == []

    run(main)


def test_process_info_monitored_by_right_after_monitor(run):
    # erl: M = monitor(process, B), process_info(B, monitored_by) -> [Self];
    # demonitor(M), process_info(B, monitored_by) -> [].
    async def main():
        p = await start()
        ref = monitor(p)
        after_monitor = process_info(p)["monitored_by"]
        demonitor(ref)
        after_demonitor = process_info(p)["monitored_by"]
        return self(), after_monitor, after_demonitor

    me, after_monitor, after_demonitor = run(main)
    assert after_monitor == [me]
    assert after_demonitor == []


@pytest.mark.parametrize("by_name", [False, True], ids=["by_pid", "by_name"])
def test_a_dead_monitoring_process_is_no_longer_in_monitored_by(run, by_name):
    # The monitor's cleanup has no message to wait for, so the target looks
    # at itself until it is gone (bounded: about 0.5 s).
    async def target(top):
        send(top, ("ready", self()))
        watcher = await receive(otpvm.Pid, timeout=T)
        for _ in range(500):
            if watcher not in process_info(self())["monitored_by"]:
                send(top, ("clean", True))
                return
            await otpvm.sleep(0.001)
        send(top, ("clean", process_info(self())["monitored_by"]))

    async def watcher(top, what):
        monitor(what)
        send(top, ("watching", self()))
        await receive("stop", timeout=T)

    async def main():
        t = spawn(target, self())
        await receive(("ready", t), timeout=T)
        register("sig_watched", t)
        w, wref = spawn_monitor(watcher, self(), "sig_watched" if by_name else t)
        await receive(("watching", w), timeout=T)
        send(w, "stop")
        await down(wref)
        send(t, w)
        _, clean = await receive(("clean", ANY), timeout=T)
        assert clean is True, f"monitored_by still lists the dead watcher: {clean}"

    run(main)


def test_process_info_trap_exit(run):
    async def main():
        assert process_info(self())["trap_exit"] is False
        assert process_flag("trap_exit", True) is False
        assert process_info(self())["trap_exit"] is True
        assert process_flag("trap_exit", False) is True
        assert process_info(self())["trap_exit"] is False
        p = await start()
        assert process_info(p)["trap_exit"] is False
        assert await call(p, "trap", True) is False
        assert process_info(p)["trap_exit"] is True

    run(main)


def test_trap_exit_can_be_turned_off_again(run):
    async def main():
        p = await start(trap=True)
        await call(p, "trap", False)
        ref = monitor(p)
        otpvm.exit(p, "shutdown")
        assert (await down(ref)).reason == "shutdown"

    run(main)
