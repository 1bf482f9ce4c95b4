"""Processes: spawning, ending, crash reports, run() and the embeddable VM."""

import asyncio
import concurrent.futures
import logging
import re
import subprocess
import sys
import threading
import types

import pytest

import otpvm
from otpvm import ANY, Down, receive, self, send


def test_run_returns_mains_value():
    async def main(a, b):
        return a + b

    assert otpvm.run(main, 2, 3) == 5


def test_run_accepts_a_plain_function():
    def main(x):
        return x * 2

    assert otpvm.run(main, 21) == 42


def test_run_reraises_mains_exception():
    async def main():
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        otpvm.run(main)


def test_run_raises_process_exit_for_other_reasons():
    async def main():
        otpvm.exit("shutdown")

    with pytest.raises(otpvm.ProcessExit) as info:
        otpvm.run(main)
    assert info.value.reason == "shutdown"


def test_exit_normal_returns_none():
    async def main():
        otpvm.exit("normal")

    assert otpvm.run(main) is None


def test_run_kills_what_remains_when_main_ends():
    seen = []

    async def sleeper():
        try:
            await receive()
        finally:
            seen.append("unwound")

    async def main():
        pid = otpvm.spawn(sleeper)
        await otpvm.sleep(0)
        return pid

    pid = otpvm.run(main)
    assert seen == ["unwound"]
    assert isinstance(pid, otpvm.Pid)


def test_spawned_process_runs_with_its_args_and_gets_its_own_pid():
    async def child(parent, tag):
        send(parent, (tag, self()))

    async def main():
        pid = otpvm.spawn(child, self(), "hello")
        tag, reported = await receive(timeout=5)
        return pid, tag, reported

    pid, tag, reported = otpvm.run(main)
    assert tag == "hello" and reported == pid


def test_pids_are_unique_ordered_hashable_and_print_like_erlang():
    async def main():
        pids = [otpvm.spawn(lambda: None) for _ in range(100)]
        return pids

    pids = otpvm.run(main)
    assert len(set(pids)) == 100
    assert sorted(pids) == pids
    assert repr(pids[0]).startswith("<0.") and repr(pids[0]).endswith(".0>")


def test_two_running_vms_print_their_pids_apart_and_a_lone_vm_is_node_0():
    async def me():
        return otpvm.self()

    lone = otpvm.run(me)
    with otpvm.VM() as a, otpvm.VM() as b:
        pa, pb = a.run(me), b.run(me)
        assert (a.node, b.node) == (0, 1)
    with otpvm.VM() as c:                   # node 0 is free again
        pc = c.run(me)
    assert [repr(p) for p in (lone, pa, pb, pc)] == [
        f"<0.{lone.id}.0>", f"<0.{pa.id}.0>", f"<1.{pb.id}.0>", f"<0.{pc.id}.0>"]
    assert len({lone, pa, pb, pc}) == 4 and sorted([pc, pb, pa, lone]) == [lone, pa, pb, pc]


class Holder:
    """A message that is pickled when sent (not a built-in container)."""

    def __init__(self, pid):
        self.pid = pid


def test_pids_survive_pickling_and_copying_with_their_node():
    import copy
    import pickle

    async def echo_back(parent):
        holder = await receive()
        send(parent, ("alive", otpvm.is_alive(holder.pid)))

    async def main():
        pid = otpvm.spawn(echo_back, self())
        send(pid, Holder(pid))              # a pid inside a pickled message
        return await receive(timeout=5)

    with otpvm.VM() as a, otpvm.VM() as b:
        pb = b.run(lambda: otpvm.self())
        assert b.run(main) == ("alive", True)
        back = pickle.loads(pickle.dumps(pb))
        assert (back, repr(back), hash(back)) == (pb, repr(pb), hash(pb))
        assert copy.copy(pb) == copy.deepcopy(pb) == pb
        assert a.node == 0 and pb.node == 1


@pytest.mark.parametrize("call", ["send", "link", "monitor", "exit", "send_alias",
                                  "process_info", "register"])
def test_a_pid_of_another_vm_is_a_clear_error(call):
    async def park():
        await receive()

    def use(pid):
        if call == "send":
            otpvm.send(pid, "hello")
        elif call == "link":
            otpvm.link(pid)
        elif call == "monitor":
            otpvm.monitor(pid)
        elif call == "exit":
            otpvm.exit(pid, "kill")
        elif call == "send_alias":
            otpvm.send_alias(pid, otpvm.make_ref(), "hello")
        elif call == "process_info":
            otpvm.process_info(pid)
        else:
            otpvm.register("taken", pid)

    async def attempt(pid):
        try:
            use(pid)
        except otpvm.ForeignPidError as exc:
            return exc.pid, str(exc), otpvm.process_info(otpvm.self())["links"]
        return "no error"

    with otpvm.VM() as a, otpvm.VM() as b:
        other = b.spawn(park)
        pid, text, links = a.run(attempt, other)
        assert b.processes() == [other]             # nothing reached it
    assert pid == other and links == []
    assert text.endswith(
        f"{other!r}: it is a pid of another VM (node 1), not of this VM (node 0); "
        "processes of different VMs cannot reach each other: a pid is only valid in the "
        "VM that made it (do not carry pids from one VM or otpvm.run() to another)")
    assert text.startswith("cannot ")


def test_a_pid_from_an_earlier_run_is_a_clear_error_and_a_dead_one_is_not():
    async def me():
        return otpvm.self()

    async def send_to(earlier):
        dead = otpvm.spawn(lambda: None)
        ref = otpvm.monitor(dead)
        await receive(Down(ref, ANY, ANY), timeout=5)
        send(dead, "dropped silently, as in Erlang")
        send(earlier, "an error")

    earlier = otpvm.run(me)
    with pytest.raises(otpvm.ForeignPidError, match=r"^cannot send to <0\.\d+\.0>: it is a "
                       r"pid of a VM that has stopped, not of this VM \(node 0\)"):
        otpvm.run(send_to, earlier)
    with otpvm.VM() as vm, pytest.raises(otpvm.ForeignPidError, match="has stopped"):
        vm.send(earlier, "from outside too")


@pytest.mark.parametrize("bad", [42, "not callable", None])
def test_spawn_rejects_a_non_callable_body(bad):
    async def main():
        with pytest.raises(TypeError, match="callable"):
            otpvm.spawn(bad)
        return "ok"

    assert otpvm.run(main) == "ok"


def test_kernel_calls_outside_a_process_are_clear_errors():
    for call, args in [(otpvm.spawn, (print,)), (otpvm.self, ()), (otpvm.link, (None,)),
                       (otpvm.whereis, ("x",)), (otpvm.processes, ())]:
        with pytest.raises(otpvm.NotInProcessError, match=call.__name__):
            call(*args)


def _outside(fn, *args):
    """Calls fn outside any process, and runs what it returns as far as it
    goes (a coroutine's first step, as asyncio would)."""
    result = fn(*args)
    if hasattr(result, "__await__"):
        result.__await__().send(None)


def _api_calls():
    from otpvm import (
        application,
        gen,
        gen_event,
        gen_server,
        gen_statem,
        registry,
        supervisor,
        task,
    )
    from otpvm import sys as otp_sys

    name = "someone"
    return [
        ("otpvm.gen_server.call", gen_server.call, (name, "req")),
        ("otpvm.gen_server.cast", gen_server.cast, (name, "req")),
        ("otpvm.gen_server.reply", gen_server.reply, (gen.From(None, None), 1)),
        ("otpvm.gen_server.stop", gen_server.stop, (name,)),
        ("otpvm.gen_server.start", gen_server.start, (gen_server.GenServer,)),
        ("otpvm.gen.call", gen.call, (name, "req")),
        ("otpvm.gen.cast", gen.cast, (name, "req")),
        ("otpvm.gen.reply", gen.reply, (gen.From(None, None), 1)),
        ("otpvm.gen_statem.call", gen_statem.call, (name, "req")),
        ("otpvm.gen_statem.cast", gen_statem.cast, (name, "req")),
        ("otpvm.gen_event.notify", gen_event.notify, (name, "event")),
        ("otpvm.gen_event.call", gen_event.call, (name, object, "req")),
        ("otpvm.gen_event.sync_notify", gen_event.sync_notify, (name, "event")),
        ("otpvm.supervisor.which_children", supervisor.which_children, (name,)),
        ("otpvm.supervisor.start_child", supervisor.start_child, (name, ())),
        ("otpvm.supervisor.terminate_child", supervisor.terminate_child, (name, "id")),
        ("otpvm.sys.get_state", otp_sys.get_state, (name,)),
        ("otpvm.sys.suspend", otp_sys.suspend, (name,)),
        ("otpvm.sys.terminate", otp_sys.terminate, (name,)),
        ("otpvm.registry.lookup", registry.lookup, (name, "key")),
        ("otpvm.registry.whereis_name", registry.whereis_name, (name, "key")),
        ("otpvm.application.which_applications", application.which_applications, ()),
        ("otpvm.task.async_", task.async_, (print,)),
        ("otpvm.run_blocking", otpvm.run_blocking, (print,)),
    ]


@pytest.mark.parametrize("expected, fn, args", _api_calls(), ids=lambda v: v
                         if isinstance(v, str) and v.startswith("otpvm.") else "")
def test_a_call_outside_a_process_names_the_call_the_user_made(expected, fn, args):
    # Each of them fails deep inside (whereis, monitor, make_ref...), but
    # the error names what the user wrote.
    with pytest.raises(otpvm.NotInProcessError) as caught:
        _outside(fn, *args)
    assert str(caught.value).startswith(
        f"{expected}() must be called from inside an otpvm process; from ordinary code ")


def test_a_crash_is_logged_once_with_its_traceback_and_nothing_else_notices(caplog):
    async def crasher():
        raise ZeroDivisionError("bad code path")

    async def bystander(parent):
        n = await receive(timeout=5)
        send(parent, ("alive", n))

    async def main():
        others = [otpvm.spawn(bystander, self()) for _ in range(10)]
        _, ref = otpvm.spawn_monitor(crasher)
        down = await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        for i, pid in enumerate(others):
            send(pid, i)
        replies = sorted([await receive(timeout=5) for _ in others])
        return down.reason, replies

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason, replies = otpvm.run(main)
    assert isinstance(reason, ZeroDivisionError)
    assert replies == [("alive", i) for i in range(10)]
    reports = [r for r in caplog.records if "crash report" in r.getMessage()]
    assert len(reports) == 1
    text = reports[0].getMessage()
    assert "ZeroDivisionError: bad code path" in text
    assert "Traceback" in text and "crasher" in text


def test_awaiting_a_foreign_awaitable_crashes_only_that_process(caplog):
    @types.coroutine
    def foreign():
        yield "a trio or asyncio trap"

    async def bad():
        await foreign()

    async def main():
        _, ref = otpvm.spawn_monitor(bad)
        down = await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        return down.reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason = otpvm.run(main)
    assert isinstance(reason, TypeError)
    assert "cannot wait for" in str(reason)


ASYNCIO_HINT = ("asyncio does not run inside an otpvm process: use otpvm.sleep() instead of "
                "asyncio.sleep(), otpvm.receive() to wait for messages, and "
                "'await otpvm.run_blocking(fn, *args)' for a blocking call; to use otpvm "
                "from asyncio code, run the VM beside the event loop: "
                "'await loop.run_in_executor(None, vm.run, main)'")


def test_asyncio_inside_a_process_fails_saying_what_to_use_instead(caplog):
    async def uses_asyncio():
        await asyncio.sleep(0.01)

    async def main():
        pid, ref = otpvm.spawn_monitor(uses_asyncio)
        return (await otpvm.receive(otpvm.Down(ref, pid, ANY), timeout=5)).reason

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        reason = otpvm.run(main)
    assert isinstance(reason, RuntimeError) and str(reason) == "no running event loop"
    assert reason.__notes__ == [ASYNCIO_HINT]
    (report,) = [r.getMessage() for r in caplog.records]
    assert report.startswith("crash report") and ASYNCIO_HINT in report

    # main's own crash goes to run()'s caller, with the same note (and no report).
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="otpvm"):
        with pytest.raises(RuntimeError) as caught:
            otpvm.run(uses_asyncio)
    assert str(caught.value) == "no running event loop"
    assert caught.value.__notes__ == [ASYNCIO_HINT]
    assert caplog.records == []


def test_awaiting_asyncio_sleep_zero_is_a_type_error_naming_the_bare_yield():
    me = []

    async def main():
        me.append(otpvm.self())
        await asyncio.sleep(0)

    with pytest.raises(TypeError) as caught:
        otpvm.run(main)
    assert str(caught.value) == (
        f"process {me[0]!r} awaited something that yielded None to the scheduler (a bare "
        f"'yield', as asyncio.sleep(0) does), which otpvm cannot wait for. {ASYNCIO_HINT}")


def test_awaiting_an_asyncio_future_is_a_type_error_naming_it():
    loop = asyncio.new_event_loop()
    future = loop.create_future()

    async def main():
        await future            # a closure: a future cannot be sent as an argument

    try:
        with otpvm.VM() as vm:
            with pytest.raises(TypeError) as caught:
                vm.run(main)
    finally:
        loop.close()
    text = str(caught.value)
    assert f"awaited an asyncio future ({future!r}), which otpvm cannot wait for. " in text
    assert text.endswith(ASYNCIO_HINT)


def test_each_process_has_its_own_context():
    import contextvars

    var = contextvars.ContextVar("var", default="unset")

    async def child(parent):
        before = var.get()
        var.set("child")
        await otpvm.sleep(0)
        send(parent, (before, var.get()))

    async def main():
        var.set("main")
        otpvm.spawn(child, self())
        got = await receive(timeout=5)
        return got, var.get()

    assert otpvm.run(main) == (("main", "child"), "main")


def test_vm_embeds_in_threaded_code():
    results = []

    async def echo():
        while True:
            msg = await receive()
            if msg == "stop":
                return
            results.append(msg)

    with otpvm.VM(schedulers=2) as vm:
        pid = vm.spawn(echo)
        threads = [threading.Thread(target=lambda i=i: vm.send(pid, i)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def waiter():
            ref = otpvm.monitor(pid)
            otpvm.send(pid, "stop")
            return (await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)).reason

        assert vm.run(waiter) == "normal"
    assert sorted(results) == list(range(20))


def test_vm_run_from_asyncio_code():
    async def double(x):
        return 2 * x

    async def app():
        with otpvm.VM() as vm:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(None, vm.run, double, 21)

    assert asyncio.run(app()) == 42


def test_stopped_vm_refuses_work():
    vm = otpvm.VM()
    vm.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        vm.spawn(print)
    vm.stop()  # idempotent


@pytest.mark.parametrize("bad", [0, -1, "2", 1.5, True])
def test_vm_rejects_bad_scheduler_counts(bad):
    with pytest.raises(ValueError, match="schedulers"):
        otpvm.VM(schedulers=bad)


def test_send_to_a_dead_pid_is_silently_dropped():
    async def main():
        pid = otpvm.spawn(lambda: None)
        ref = otpvm.monitor(pid)
        await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        send(pid, "lost")
        return otpvm.is_alive(pid)

    assert otpvm.run(main) is False


def test_process_info_reports_the_documented_keys():
    async def idle():
        await receive("x")
        await receive("never")

    async def main():
        pid = otpvm.spawn(idle)
        otpvm.register("idler", pid)
        otpvm.link(pid)
        send(pid, "x")  # consumed
        send(pid, ("not", "matched"))
        await otpvm.sleep(0.01)
        return otpvm.process_info(pid), otpvm.process_info(self())

    info, mine = otpvm.run(main)
    for key in ("status", "message_queue_len", "reductions", "links", "monitors",
                "registered_name", "trap_exit"):
        assert key in info
    assert info["registered_name"] == "idler"
    assert info["trap_exit"] is False
    assert info["reductions"] > 0
    assert mine["status"] == "running"
    assert info["status"] == "waiting"
    assert info["message_queue_len"] == 1
    assert len(info["links"]) == 1


def test_run_blocking_holds_no_scheduler_thread():
    """A blocking call made through run_blocking leaves the scheduler free
    (no rescue can help here: the slice limit is far away), then returns its
    value or raises its exception in the caller."""
    gate = threading.Event()

    async def echo():
        caller, msg = await otpvm.receive()
        otpvm.send(caller, msg)

    async def blocked(parent):
        otpvm.send(parent, "entering")
        otpvm.send(parent, ("done", await otpvm.run_blocking(gate.wait, 10)))

    async def main():
        otpvm.spawn(blocked, otpvm.self())
        await otpvm.receive("entering", timeout=5)
        await otpvm.sleep(0.01)                  # it is inside the blocking call now
        pid = otpvm.spawn(echo)
        otpvm.send(pid, (otpvm.self(), "still scheduling"))
        echoed = await otpvm.receive("still scheduling", timeout=5)
        gate.set()
        _, done = await otpvm.receive(("done", otpvm.ANY), timeout=5)
        with pytest.raises(ZeroDivisionError):
            await otpvm.run_blocking(lambda: 1 / 0)
        return echoed, done, await otpvm.run_blocking(int, "7", base=8)

    with otpvm.VM(1, slice_limit=30.0) as vm:
        assert vm.run(main) == ("still scheduling", True, 7)


def test_wait_future_waits_for_another_threads_future_as_for_a_message():
    """A concurrent.futures.Future completed by a plain thread: its result,
    its exception, its cancellation; a timeout leaves the future alone and a
    wake-up arriving after it is dropped (the alias is gone), so nothing is
    left in the mailbox; the scheduler stays free meanwhile."""
    pool = concurrent.futures.ThreadPoolExecutor(2)
    gate = threading.Event()

    async def echo():
        caller, msg = await otpvm.receive()
        otpvm.send(caller, msg)

    async def main():
        late = concurrent.futures.Future()
        with pytest.raises(TimeoutError, match="is not done after 0.05 s"):
            await otpvm.wait_future(late, timeout=0.05)
        late.set_result("too late")             # its wake-up is dropped
        waiting = pool.submit(gate.wait, 10)
        pid = otpvm.spawn(echo)                 # runs while we wait below
        otpvm.send(pid, (otpvm.self(), "still scheduling"))
        echoed = await otpvm.receive("still scheduling", timeout=5)
        gate.set()
        got = [await otpvm.wait_future(waiting, timeout=5),
               await otpvm.wait_future(pool.submit(pow, 2, 10)), echoed]
        with pytest.raises(ZeroDivisionError):
            await otpvm.wait_future(pool.submit(lambda: 1 / 0))
        cancelled = concurrent.futures.Future()
        cancelled.cancel()
        with pytest.raises(concurrent.futures.CancelledError):
            await otpvm.wait_future(cancelled)
        with pytest.raises(TypeError, match="takes a concurrent.futures.Future"):
            await otpvm.wait_future(asyncio.Future)
        got.append(otpvm.process_info(otpvm.self())["message_queue_len"])
        return got

    try:
        with otpvm.VM(1, slice_limit=30.0) as vm:
            assert vm.run(main) == [True, 1024, "still scheduling", 0]
    finally:
        pool.shutdown()


def test_process_info_works_outside_a_process_and_processes_names_what_does():
    # Like is_alive, process_info takes a pid, which names its VM; processes()
    # has only "the caller's VM" to go by, so from outside it is VM.processes().
    async def park():
        await receive("stop")

    with otpvm.VM() as vm:
        pid = vm.spawn(park)
        info = otpvm.process_info(pid)
        assert (info["pid"], info["links"], info["registered_name"], info["trap_exit"]) == (
            pid, [], None, False)
        with pytest.raises(otpvm.NotInProcessError, match=re.escape(
                "otpvm.processes() must be called from inside an otpvm process; from ordinary "
                "code use VM.processes()")):
            otpvm.processes()
        assert vm.processes() == [pid]
    assert otpvm.process_info(pid) is None                      # its VM stopped: dead
    with pytest.raises(TypeError, match="process_info"):
        otpvm.process_info("not a pid")


# -- big mailboxes (otpvm/_core/reaper.pxi) ----------------------------------

BIG = 100_000               # over the reaper's threshold (65,536 messages)


async def sink():
    await receive("never")


def test_a_big_mailbox_is_freed_by_the_reaper_while_the_others_run():
    async def echo():
        while True:
            to, n = await receive()
            send(to, n)

    async def linker(target, test):
        otpvm.process_flag("trap_exit", True)
        otpvm.link(target)              # queued behind the messages, never looked at
        send(test, "linked")
        send(test, ("exit", (await receive(otpvm.Exit(target, ANY), timeout=30)).reason))

    async def drained_sink(test):
        await receive("ping")           # every message before it is in its queue now
        send(test, "drained")
        await receive("never")

    async def main():
        pid = otpvm.spawn(drained_sink, self())
        for i in range(BIG):
            send(pid, i)
        send(pid, "ping")
        await receive("drained", timeout=30)
        otpvm.spawn(linker, pid, self())
        await receive("linked", timeout=30)
        ref = otpvm.monitor(pid)
        vm._hold_reaper(True)
        otpvm.exit(pid, "kill")
        down = await receive(Down(ref, pid, ANY), timeout=30)
        e = otpvm.spawn(echo)
        for i in range(10):             # the others run while it waits to be freed
            send(e, (self(), i))
            assert await receive(i, timeout=30) == i
        waiting = vm.mailbox_garbage
        vm._hold_reaper(False)
        linked_exit = await receive(("exit", ANY), timeout=30)
        while vm.mailbox_garbage:
            await otpvm.sleep(0.001)
        return down.reason, waiting, linked_exit

    # A slice limit no slice reaches: the sink, scanning 100,000 messages for
    # "ping", is not a stuck process that the kill would take over.
    with otpvm.VM(1, slice_limit=30.0) as vm:
        assert vm.run(main) == ("killed", BIG, ("exit", "killed"))


def test_process_info_counts_a_big_mailbox_and_still_sees_links_on_their_way():
    async def main():
        pid = otpvm.spawn(sink)
        for i in range(BIG):
            send(pid, i)
        quiet = otpvm.process_info(pid)
        otpvm.link(pid)                 # a signal on its way, behind the messages
        send(pid, "one more")
        linked = otpvm.process_info(pid)
        otpvm.unlink(pid)
        otpvm.exit(pid, "kill")
        return (quiet["message_queue_len"], quiet["links"],
                linked["message_queue_len"], linked["links"] == [self()])

    # One scheduler, and a slice limit main cannot reach: the sink cannot run
    # (and move its messages from inbox to queue) while main reads its info,
    # as it could on another thread of a free-threaded build.
    with otpvm.VM(1, slice_limit=30.0) as vm:
        assert vm.run(main) == (BIG, [], BIG + 1, True)


# A process's inbox is read under its lock by process_info (and the monitor
# thread), to see the links and monitors on their way.  Creating Python
# objects there could start a collection whose finalisers let another thread
# take the GIL; a sender holding the GIL then waited for the inbox lock, and
# the VM froze for good (seen as a hang of the whole test run).  The scenario
# runs in a child process, so that a regression fails here instead of hanging.
_INBOX_LOCK_SCENARIO = """
import gc
import threading
import time

import otpvm
from otpvm import link, process_info, receive, send, spawn
from otpvm._vm import _current_vm


class SlowFinaliser:          # cyclic garbage whose finaliser lets other threads run

    def __init__(self):
        self.cycle = self

    def __del__(self):
        time.sleep(0.0005)


release = threading.Event()


def busy(parent):
    send(parent, "started")
    release.wait()          # in a C call: its inbox is not drained meanwhile


def flood(vm, pid, stop):
    while not stop.is_set():
        vm._post(pid, "from a thread")


async def main():
    stop = threading.Event()
    target = spawn(busy, otpvm.self())
    await receive("started", timeout=5)
    for i in range(5_000):
        send(target, i)
    link(target)                  # a signal on its way, behind the messages
    thread = threading.Thread(target=flood, args=(_current_vm("t"), target, stop))
    thread.start()
    try:
        for _ in range(3):
            for _ in range(50):
                SlowFinaliser()
            gc.set_threshold(1)
            try:
                assert otpvm.self() in process_info(target)["links"]
            finally:
                gc.set_threshold(700)
    finally:
        stop.set()
        thread.join()
        release.set()
    return "ok"


print(otpvm.run(main, schedulers=1))
"""


def test_reading_an_inbox_never_runs_python_under_its_lock(tmp_path):
    script = tmp_path / "scenario.py"
    script.write_text(_INBOX_LOCK_SCENARIO)
    try:
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("process_info deadlocked with a sender on the inbox lock")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"


@pytest.mark.parametrize("schedulers", [1, 2])
def test_halt_never_returns_and_its_caller_is_killed(schedulers):
    # erl: halt() does not return.  Here the stop runs on another thread;
    # if halt() returned, main raced the kill coming from that thread, and
    # run() either returned main's value or raised ProcessExit('killed').
    after_halt = []

    async def main():
        otpvm.spawn(otpvm.receive)            # something else to kill
        otpvm.halt()
        after_halt.append("ran")              # never
        return "main's value"

    for _ in range(20):
        with otpvm.VM(schedulers=schedulers) as vm:
            with pytest.raises(otpvm.ProcessExit) as info:
                vm.run(main)
            assert info.value.reason == "killed"
    assert after_halt == []

