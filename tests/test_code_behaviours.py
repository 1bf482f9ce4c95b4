"""Hot code upgrade of behaviours: OTP's suspend -> change_code -> resume,
the automatic switch at the next message after a load, and late binding of
child specs and application callbacks.

Each test writes v1 of its modules into a fresh package under otpvm.code
(a unique name: versions are kept per module name for the interpreter's life)
and loads v2 from source while processes run v1."""

import importlib
import logging
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

import otpvm
from otpvm import (
    ANY,
    Down,
    application,
    code,
    gen_event,
    gen_server,
    gen_statem,
    receive,
    send,
    supervisor,
)
from otpvm import sys as otp_sys
from otpvm.gen_server import GenServer, Ok
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags
from otpvm.sys import CallbackFailed, SysError

T = 5.0          # generous: every wait is for an event, never for luck


def run(main, *args):
    return otpvm.run(main, *args, schedulers=1)


@dataclass
class Pkg:
    name: str
    root: Path

    def write(self, module: str, source: str):
        """Writes v1 of pkg.module and imports it (under the code server)."""
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        return importlib.import_module(f"{self.name}.{module}")

    def mod(self, module: str) -> str:
        return f"{self.name}.{module}"


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    name = f"upg_{uuid.uuid4().hex[:12]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    code.manage(name)
    return Pkg(name, root)


def src(text: str) -> str:
    return textwrap.dedent(text)


# -- gen_server -----------------------------------------------------------------

COUNTER_V1 = """
    __vsn__ = "1"
    from otpvm import send
    from otpvm.gen_server import GenServer, NoReply, Ok, Reply

    class Counter(GenServer):
        def init(self, args):
            n, self.watcher = args
            return Ok({"n": n})

        def handle_call(self, request, from_, state):
            return Reply(("v1", state), state)

        def handle_cast(self, k, state):
            new = {"n": state["n"] + k}
            send(self.watcher, ("v1", k, new))
            return NoReply(new)
"""

COUNTER_V2 = """
    __vsn__ = "2"
    from otpvm import send
    from otpvm.gen_server import GenServer, NoReply, Ok, Reply

    class Counter(GenServer):
        def init(self, args):
            n, self.watcher = args
            return Ok({"n": n, "max": 0})

        def handle_call(self, request, from_, state):
            return Reply(("v2", state), state)

        def handle_cast(self, k, state):
            new = {"n": state["n"] + k, "max": max(state["max"], k)}
            send(self.watcher, ("v2", k, new))
            return NoReply(new)

        def code_change(self, old_vsn, state, extra):
            if old_vsn == ("down", "1"):
                return {"n": state["n"]}
            state["max"] = extra          # in place: an abort must still restore exactly
            if extra == "fail":
                raise ValueError("cannot migrate")
            return state
"""


async def start_counter(counter_mod, n=5):
    return await gen_server.start(counter_mod.Counter, (n, otpvm.self()))


def test_change_code_on_a_running_server_is_refused_and_changes_nothing(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        with pytest.raises(SysError) as refused:
            await otp_sys.change_code(pid, pkg.mod("counter"), "1", 0)
        with pytest.raises(SysError) as abort:
            await otp_sys.abort_code(pid)
        status = await otp_sys.get_status(pid)
        return refused.value, abort.value.reason, status["module"], status["state"]

    refused, abort_reason, module, state = run(main)
    assert type(refused) is SysError and refused.reason == "running"
    assert abort_reason == "running"
    assert code.vsn_of(module) == "1" and state == {"n": 5}


def test_upgrade_with_100_casts_queued_handles_them_in_order_on_v2(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        await otp_sys.suspend(pid)
        for k in range(1, 101):
            gen_server.cast(pid, k)
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        await otp_sys.change_code(pid, pkg.mod("counter"), "1", 0)
        suspended_state = await otp_sys.get_state(pid)
        await otp_sys.commit_code(pid)
        await otp_sys.resume(pid)
        seen = [await receive(timeout=T) for _ in range(100)]
        status = await otp_sys.get_status(pid)
        return pid, suspended_state, seen, status

    pid, suspended_state, seen, status = run(main)
    assert suspended_state == {"n": 5, "max": 0}
    expected, n = [], 5
    for k in range(1, 101):
        n += k
        expected.append(("v2", k, {"n": n, "max": k}))
    assert seen == expected
    assert status["pid"] == pid and status["state"] == {"n": 5055, "max": 100}
    assert status["module"] is code.current(counter.Counter)
    assert code.vsn_of(status["module"]) == "2"


def test_a_failing_code_change_leaves_class_and_state_and_the_process_suspended(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        await otp_sys.suspend(pid)
        gen_server.cast(pid, 1)                  # waits: still suspended after the failure
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        with pytest.raises(CallbackFailed) as failed:
            await otp_sys.change_code(pid, pkg.mod("counter"), "1", "fail")
        during = await otp_sys.get_status(pid)
        await otp_sys.resume(pid)
        first = await receive(timeout=T)
        after = await gen_server.call(pid, "get")
        status = await otp_sys.get_status(pid)
        return failed.value, during, first, after, status

    failed, during, first, after, status = run(main)
    assert isinstance(failed.exc, ValueError) and str(failed.exc) == "cannot migrate"
    assert isinstance(failed.__cause__, ValueError)
    assert code.vsn_of(during["module"]) == "1" and during["state"] == {"n": 5}
    # Resumed on v1 with the old state: the queued cast first, then the call;
    # and no switch to v2 over the old state at the next message.
    assert first == ("v1", 1, {"n": 6})
    assert after == ("v1", {"n": 6})
    assert code.vsn_of(status["module"]) == "1"


def test_abort_code_restores_class_instance_and_state_exactly(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        await otp_sys.suspend(pid)
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        await otp_sys.change_code(pid, pkg.mod("counter"), "1", 7)
        changed = await otp_sys.get_state(pid)
        await otp_sys.abort_code(pid)
        await otp_sys.abort_code(pid)            # nothing left to undo: still fine
        aborted = await otp_sys.get_status(pid)
        code.unswitch(pkg.mod("counter"))        # the install is rolled back
        await otp_sys.resume(pid)
        gen_server.cast(pid, 2)
        return changed, aborted, await receive(timeout=T)

    changed, aborted, handled = run(main)
    assert changed == {"n": 5, "max": 7}
    assert aborted["state"] == {"n": 5} and code.vsn_of(aborted["module"]) == "1"
    assert handled == ("v1", 2, {"n": 7})       # the instance kept its watcher


def test_downgrade_runs_the_newer_code_change_then_switches_back(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        await otp_sys.suspend(pid)
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        await otp_sys.change_code(pid, pkg.mod("counter"), "1", 3)
        await otp_sys.commit_code(pid)
        await otp_sys.resume(pid)
        up = await gen_server.call(pid, "get")
        await otp_sys.suspend(pid)
        code.unswitch(pkg.mod("counter"))        # v1 is current again
        await otp_sys.change_code(pid, pkg.mod("counter"), ("down", "1"), None)
        await otp_sys.resume(pid)
        return up, await gen_server.call(pid, "get")

    assert run(main) == (("v2", {"n": 5, "max": 3}), ("v1", {"n": 5}))


def test_load_module_switches_a_running_server_at_its_next_message(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        before = await gen_server.call(pid, "get")
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        after = await gen_server.call(pid, "get")    # v2, over the same state (as OTP)
        return before, after, code.vsn_of((await otp_sys.get_status(pid))["module"])

    assert run(main) == (("v1", {"n": 5}), ("v2", {"n": 5}), "2")


def test_a_version_switched_with_code_change_migrates_each_server_at_its_next_message(pkg):
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        a = await start_counter(counter, 1)
        b = await start_counter(counter, 2)
        code.switch(code.prepare(pkg.mod("counter"), src(COUNTER_V2)), code_change=("1", 9))
        gen_server.cast(a, 10)
        return (await receive(timeout=T), await gen_server.call(b, "get"),
                await gen_server.call(a, "get"))

    cast_a, call_b, call_a = run(main)
    assert cast_a == ("v2", 10, {"n": 11, "max": 10})
    assert call_b == ("v2", {"n": 2, "max": 9})
    assert call_a == ("v2", {"n": 11, "max": 10})


def test_a_failing_lazy_migration_keeps_v1_and_is_reported_once(pkg, caplog):
    counter = pkg.write("counter", COUNTER_V1)
    pkg.write("other", "X = 1\n")

    async def main():
        pid = await start_counter(counter)
        code.switch(code.prepare(pkg.mod("counter"), src(COUNTER_V2)),
                    code_change=("1", "fail"))
        replies = [await gen_server.call(pid, "get") for _ in range(3)]
        await code.load_module(pkg.mod("other"), "X = 2\n")   # the epoch moves again
        replies.append(await gen_server.call(pid, "get"))
        return replies

    with caplog.at_level(logging.ERROR, logger="otpvm"):
        replies = run(main)
    assert replies == [("v1", {"n": 5})] * 4
    reports = [r.getMessage() for r in caplog.records if "switching to version" in r.getMessage()]
    assert len(reports) == 1
    assert f"switching to version 2 of {pkg.mod('counter')} failed" in reports[0]
    assert "cannot migrate" in reports[0] and "stays on its old code and state" in reports[0]


@pytest.mark.parametrize("impl", ["compiled", "python"])
def test_the_python_reference_path_switches_too(pkg, monkeypatch, impl):
    if impl == "python":
        monkeypatch.setattr(gen_server._Server, "handle_message",
                            gen_server._Server._handle_message_py)
    counter = pkg.write("counter", COUNTER_V1)

    async def main():
        pid = await start_counter(counter)
        await code.load_module(pkg.mod("counter"), src(COUNTER_V2))
        return await gen_server.call(pid, "get")

    assert run(main) == ("v2", {"n": 5})


# -- gen_statem --------------------------------------------------------------------

STATEM_V1 = """
    __vsn__ = "1"
    from otpvm.gen_statem import GenStatem, KeepState, Reply

    class Machine(GenStatem):
        def init(self, args):
            return "idle", args

        def idle(self, event_type, content, data):
            return KeepState(data, [Reply(event_type[1], ("v1 idle", data))])
"""

STATEM_V2 = """
    __vsn__ = "2"
    from otpvm.gen_statem import GenStatem, KeepState, Reply

    class Machine(GenStatem):
        def callback_mode(self):
            return "handle_event_function"

        def handle_event(self, event_type, content, state, data):
            return KeepState(data, [Reply(event_type[1], ("v2", state, data))])

        def code_change(self, old_vsn, state, data, extra):
            if extra == "fail":
                raise ValueError("cannot migrate")
            return "ready", (data, extra)
"""


def test_gen_statem_change_code_rereads_the_callback_mode(pkg):
    machine = pkg.write("machine", STATEM_V1)

    async def main():
        pid = await gen_statem.start(machine.Machine, 1)
        before = await gen_statem.call(pid, "get")
        await otp_sys.suspend(pid)
        await code.load_module(pkg.mod("machine"), src(STATEM_V2))
        with pytest.raises(CallbackFailed):
            await otp_sys.change_code(pid, pkg.mod("machine"), "1", "fail")
        failed = await otp_sys.get_state(pid)
        await otp_sys.change_code(pid, pkg.mod("machine"), "1", "x")
        await otp_sys.resume(pid)
        after = await gen_statem.call(pid, "get")
        return before, failed, after, code.vsn_of((await otp_sys.get_status(pid))["module"])

    assert run(main) == (("v1 idle", 1), ("idle", 1), ("v2", "ready", (1, "x")), "2")


def test_gen_statem_switches_at_its_next_event_after_a_load(pkg):
    machine = pkg.write("machine", STATEM_V1)

    async def main():
        pid = await gen_statem.start(machine.Machine, 1)
        code.switch(code.prepare(pkg.mod("machine"), src(STATEM_V2)), code_change=("1", "y"))
        return await gen_statem.call(pid, "get")

    assert run(main) == ("v2", "ready", (1, "y"))


def test_gen_statem_abort_code_restores_the_callback_mode(pkg):
    machine = pkg.write("machine", STATEM_V1)

    async def main():
        pid = await gen_statem.start(machine.Machine, 1)
        await otp_sys.suspend(pid)
        await code.load_module(pkg.mod("machine"), src(STATEM_V2))
        await otp_sys.change_code(pid, pkg.mod("machine"), "1", "x")
        await otp_sys.abort_code(pid)
        await otp_sys.resume(pid)
        return await gen_statem.call(pid, "get")

    assert run(main) == ("v1 idle", 1)


# -- gen_event ---------------------------------------------------------------------

HANDLERS_V1 = """
    __vsn__ = "1"
    from otpvm.gen_event import EventHandler

    class H1(EventHandler):
        def handle_event(self, event, state):
            return state + [("h1 v1", event)]

        def handle_call(self, request, state):
            return ("h1 v1", state), state

    class H2(EventHandler):
        def handle_event(self, event, state):
            return state + [("h2 v1", event)]
"""

HANDLERS_V2 = """
    __vsn__ = "2"
    from otpvm.gen_event import EventHandler

    class H1(EventHandler):
        def handle_event(self, event, state):
            return state + [("h1 v2", event)]

        def handle_call(self, request, state):
            return ("h1 v2", state), state

        def code_change(self, old_vsn, state, extra):
            state.append(("h1 migrated", old_vsn))     # in place: undone on failure
            return state

    class H2(EventHandler):
        def handle_event(self, event, state):
            return state + [("h2 v2", event)]

        def code_change(self, old_vsn, state, extra):
            if extra == "fail":
                raise ValueError("h2 cannot migrate")
            return state + [("h2 migrated", old_vsn)]
"""

OTHER_V1 = """
    from otpvm.gen_event import EventHandler

    class G(EventHandler):
        def handle_event(self, event, state):
            return state + [("g", event)]

        def code_change(self, old_vsn, state, extra):
            raise AssertionError("G is from another module: never changed")
"""


def test_gen_event_upgrades_the_handlers_of_one_module_and_leaves_the_others(pkg):
    handlers = pkg.write("handlers", HANDLERS_V1)
    other = pkg.write("other", OTHER_V1)

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, other.G, [])
        await gen_event.add_handler(mgr, handlers.H1, [])
        await gen_event.add_handler(mgr, (handlers.H2, "b"), [])
        await otp_sys.suspend(mgr)
        gen_event.notify(mgr, "e1")                 # handled after resume, on v2
        await code.load_module(pkg.mod("handlers"), src(HANDLERS_V2))
        await otp_sys.change_code(mgr, pkg.mod("handlers"), "1", None)
        await otp_sys.resume(mgr)
        reply = await gen_event.call(mgr, handlers.H1, "get")   # v1's class names it too
        return (reply, await gen_event.which_handlers(mgr), await otp_sys.get_state(mgr))

    reply, which, state = run(main)
    h1, h2 = code.current(handlers.H1), code.current(handlers.H2)
    assert code.vsn_of(h1) == "2" and reply == ("h1 v2", [("h1 migrated", "1"), ("h1 v2", "e1")])
    assert which == [(h2, "b"), h1, other.G]
    assert state == [((h2, "b"), [("h2 migrated", "1"), ("h2 v2", "e1")]),
                     (h1, [("h1 migrated", "1"), ("h1 v2", "e1")]),
                     (other.G, [("g", "e1")])]


def test_gen_event_one_failing_handler_leaves_every_handler_unchanged(pkg):
    handlers = pkg.write("handlers", HANDLERS_V1)
    other = pkg.write("other", OTHER_V1)

    async def main():
        mgr = await gen_event.start()
        await gen_event.add_handler(mgr, other.G, [])
        await gen_event.add_handler(mgr, handlers.H2, [])
        await gen_event.add_handler(mgr, handlers.H1, [])   # newest first: H1 migrates first
        gen_event.notify(mgr, "e0")
        before = await otp_sys.get_state(mgr)
        await otp_sys.suspend(mgr)
        await code.load_module(pkg.mod("handlers"), src(HANDLERS_V2))
        with pytest.raises(CallbackFailed) as failed:
            await otp_sys.change_code(mgr, pkg.mod("handlers"), "1", "fail")
        during = await otp_sys.get_state(mgr)
        await otp_sys.resume(mgr)
        gen_event.notify(mgr, "e1")
        return before, failed.value.exc, during, await otp_sys.get_state(mgr)

    h1, h2 = handlers.H1, handlers.H2               # v1's: the facade shows v2 after main
    before, exc, during, after = run(main)
    assert str(exc) == "h2 cannot migrate"
    assert before == during == [(h1, [("h1 v1", "e0")]),
                                (h2, [("h2 v1", "e0")]), (other.G, [("g", "e0")])]
    assert after == [(h1, [("h1 v1", "e0"), ("h1 v1", "e1")]),
                     (h2, [("h2 v1", "e0"), ("h2 v1", "e1")]),
                     (other.G, [("g", "e0"), ("g", "e1")])]


# -- supervisor ----------------------------------------------------------------------


class Worker(GenServer):
    """Tells its watcher each start: ('started', id, pid)."""

    def init(self, args):
        self.ident, watcher = args
        send(watcher, ("started", self.ident, otpvm.self()))
        return Ok(None)

    def handle_cast(self, msg, state):
        return gen_server.Stop(msg, state)


def sup_source(vsn: str, restart: str, extra_child: str = "", bad: bool = False) -> str:
    children = [f'ChildSpec("w", (gen_server.start_link, (Worker, ("w", watcher))), '
                f'restart="{restart}")']
    if extra_child:
        children.append(f'ChildSpec("{extra_child}", (gen_server.start_link, '
                        f'(Worker, ("{extra_child}", watcher))))')
    flags = '"garbage"' if bad else 'SupFlags("one_for_one", 10, 1)'
    return src(f"""
        __vsn__ = "{vsn}"
        from otpvm import gen_server
        from otpvm.supervisor import ChildSpec, Supervisor, SupFlags
        from test_code_behaviours import Worker

        class Sup(Supervisor):
            def init(self, watcher):
                return {flags}, [{", ".join(children)}]
        """)


async def upgrade_sup(pkg, sup, source):
    await otp_sys.suspend(sup)
    await code.load_module(pkg.mod("sup"), source)
    try:
        await otp_sys.change_code(sup, pkg.mod("sup"), "1", None)
    finally:
        await otp_sys.resume(sup)


async def wait_for_other_pid(sup, ident, old_pid):
    """The child's pid once it is no longer old_pid (None or a new one)."""
    while True:
        pid = {i: p for i, p, _, _ in await supervisor.which_children(sup)}[ident]
        if pid != old_pid:
            return pid
        await otpvm.sleep(0.001)


def test_supervisor_spec_change_takes_effect_without_restarting_children(pkg):
    sup_mod = pkg.write("sup", sup_source("1", "permanent"))

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(sup_mod.Sup, otpvm.self())
        _, _, pid = await receive(("started", "w", ANY), timeout=T)
        await upgrade_sup(pkg, sup, sup_source("2", "transient"))
        children = await supervisor.which_children(sup)
        ref = otpvm.monitor(pid)
        gen_server.cast(pid, "normal")           # a transient child's normal end
        await receive(Down(ref, ANY, ANY), timeout=T)
        now = await wait_for_other_pid(sup, "w", pid)
        return pid, children, now, await supervisor.spec_changes(sup), otpvm.process_info(
            otpvm.self())["message_queue_len"]

    pid, children, now, changes, queued = run(main)
    assert children == [("w", pid, "worker", (__name__,))]   # same pid: not restarted
    assert now is None and queued == 0                        # ... and not restarted now
    assert changes == ([], [])


def test_supervisor_permanent_child_ending_normally_is_restarted_without_the_change(pkg):
    # The control for the test above: v1's spec restarts it.
    sup_mod = pkg.write("sup", sup_source("1", "permanent"))

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(sup_mod.Sup, otpvm.self())
        _, _, pid = await receive(("started", "w", ANY), timeout=T)
        gen_server.cast(pid, "normal")
        _, _, pid2 = await receive(("started", "w", ANY), timeout=T)
        return pid != pid2 and await wait_for_other_pid(sup, "w", pid) == pid2

    assert run(main) is True


def test_supervisor_change_code_reports_added_and_removed_ids(pkg):
    sup_mod = pkg.write("sup", sup_source("1", "permanent", extra_child="old"))

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(sup_mod.Sup, otpvm.self())
        pids = {}
        for _ in range(2):
            _, ident, pid = await receive(("started", ANY, ANY), timeout=T)
            pids[ident] = pid
        await upgrade_sup(pkg, sup, sup_source("2", "permanent", extra_child="new"))
        changes = await supervisor.spec_changes(sup)
        children = await supervisor.which_children(sup)
        # What a release handler does next: start the added, remove the removed.
        new = await supervisor.restart_child(sup, "new")
        await supervisor.terminate_child(sup, "old")
        await supervisor.delete_child(sup, "old")
        return pids, changes, children, new, await supervisor.which_children(sup)

    pids, changes, children, new, final = run(main)
    assert changes == (["new"], ["old"])
    # Newest first, as OTP: init's specs in order, then the ids kept.
    assert children == [("old", pids["old"], "worker", (__name__,)),
                        ("new", None, "worker", (__name__,)),
                        ("w", pids["w"], "worker", (__name__,))]
    assert final == [("new", new, "worker", (__name__,)), ("w", pids["w"], "worker", (__name__,))]


def test_a_bad_new_supervisor_init_fails_with_nothing_changed(pkg):
    sup_mod = pkg.write("sup", sup_source("1", "permanent"))

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(sup_mod.Sup, otpvm.self())
        _, _, pid = await receive(("started", "w", ANY), timeout=T)
        before = await otp_sys.get_state(sup)
        with pytest.raises(CallbackFailed) as failed:
            await upgrade_sup(pkg, sup, sup_source("2", "transient", bad=True))
        after = await otp_sys.get_state(sup)
        gen_server.cast(pid, "normal")           # still permanent: restarted
        _, _, pid2 = await receive(("started", "w", ANY), timeout=T)
        return before, failed.value.exc, after, pid != pid2

    before, exc, after, restarted = run(main)
    assert isinstance(exc, ValueError) and "bad supervisor data" in str(exc)
    assert "expected a SupFlags, not 'garbage'" in str(exc)
    assert after.flags == before.flags and after.changes == ((), ())
    assert [(c.spec, c.pid) for c in after.children] == [(c.spec, c.pid) for c in before.children]
    assert after.children[0].spec.restart == "permanent" and restarted


WORKER_V1 = """
    __vsn__ = "1"
    from otpvm import gen_server, send
    from otpvm import self as me
    from otpvm.gen_server import GenServer, Ok, Reply

    class Worker(GenServer):
        def init(self, watcher):
            send(watcher, ("started", "v1", me()))
            return Ok(None)

        def handle_call(self, request, from_, state):
            raise RuntimeError("crash")

    async def start_link(watcher):
        return await gen_server.start_link(Worker, watcher)
"""


def test_a_child_restarted_after_an_upgrade_runs_the_new_code(pkg):
    worker = pkg.write("worker", WORKER_V1)

    class Top(Supervisor):
        def init(self, watcher):
            return SupFlags("one_for_one", 10, 1), [
                ChildSpec("by_class", (gen_server.start_link, (worker.Worker, watcher))),
                ChildSpec("by_ref", (f"{pkg.name}.worker:start_link", (watcher,))),
            ]

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(Top, otpvm.self())
        first = [await receive(("started", ANY, ANY), timeout=T) for _ in range(2)]
        await code.load_module(pkg.mod("worker"), src(WORKER_V1.replace("v1", "v2")))
        restarted = []
        for _, _, pid in first:
            with pytest.raises(otpvm.CallError):
                await gen_server.call(pid, "crash")
            restarted.append(await receive(("started", ANY, ANY), timeout=T))
        return first, restarted, await supervisor.which_children(sup)

    first, restarted, children = run(main)
    assert [vsn for _, vsn, _ in first] == ["v1", "v1"]
    assert [vsn for _, vsn, _ in restarted] == ["v2", "v2"]
    assert [(i, m) for i, _, _, m in children] == [("by_ref", (pkg.mod("worker"),)),
                                                   ("by_class", (pkg.mod("worker"),))]


def test_a_child_spec_start_string_is_a_code_ref():
    spec = ChildSpec("c", ("some.module:start_link", ()))
    assert isinstance(spec.start[0], code.CodeRef) and spec.modules == ("some.module",)
    with pytest.raises(TypeError, match="start must be"):
        ChildSpec("c", ("no_colon", ()))


# -- application -------------------------------------------------------------------

APP_V1 = """
    __vsn__ = "1"
    from otpvm import send, supervisor
    from otpvm.application import Application
    from otpvm.supervisor import Supervisor, SupFlags

    class Empty(Supervisor):
        def init(self, _):
            return SupFlags(), []

    class App(Application):
        name = "{name}"
        env = {"a": 1, "b": 2}

        async def start(self, start_type, args):
            self.watcher = "cc_watcher"
            return await supervisor.start_link(Empty)

        def stop(self, state):
            send(self.watcher, ("stop", "v1"))

        def config_change(self, changed, new, removed):
            if ("fail", True) in new:
                raise ValueError("refused")
            send(self.watcher, ("config_change", "v1", changed, new, removed))
"""


def test_application_callbacks_run_the_current_code_and_config_change(pkg):
    app_name = f"app_{uuid.uuid4().hex[:8]}"
    app = pkg.write("app", APP_V1.replace("{name}", app_name))
    v2 = src(APP_V1.replace("{name}", app_name).replace('"v1"', '"v2"'))

    async def main():
        otpvm.register("cc_watcher", otpvm.self())
        await application.start(app.App)
        await application.config_change(app_name, [("a", 10)], {"c": 3}, ["b"])
        first = await receive(timeout=T)
        env = [await application.get_env(app_name, k) for k in "abc"]
        with pytest.raises(application.ApplicationError) as failed:
            await application.config_change(app_name, [("a", 99)], [("fail", True)], [])
        kept = [await application.get_env(app_name, k) for k in ("a", "fail")]
        await code.load_module(pkg.mod("app"), v2)
        await application.config_change(app_name, [], [], ["c"])
        second = await receive(timeout=T)
        await application.stop(app_name)
        return first, env, failed.value.reason, kept, second, await receive(timeout=T)

    first, env, reason, kept, second, stopped = run(main)
    assert first == ("config_change", "v1", [("a", 10)], [("c", 3)], ["b"])
    assert env == [10, None, 3]
    assert reason[0] == "config_change_failed" and str(reason[1]) == "refused"
    assert kept == [10, None]                    # the env is back as it was
    assert second == ("config_change", "v2", [], [], ["c"])
    assert stopped == ("stop", "v2")             # stop ran the current code


def test_application_config_change_checks_its_arguments():
    async def main():
        with pytest.raises(TypeError, match="changed must be"):
            await application.config_change("x", [("a",)])
        with pytest.raises(TypeError, match="removed must be a list of keys"):
            await application.config_change("x", [], [], "abc")
        with pytest.raises(application.ApplicationError) as missing:
            await application.config_change("not_loaded_app", [], [], [])
        return missing.value.reason

    assert run(main) == ("not_loaded", "not_loaded_app")
