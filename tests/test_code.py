"""The code server (otpvm.code) and become(): Erlang's code loading rules."""

import importlib
import sys
import textwrap
import uuid

import pytest

import otpvm
from otpvm import ANY, Down, Exit, code, receive, self, send

PATIENCE = 30

# v1 and v2 of one module: `loop` answers with its version through a *local*
# call of `version()`, `qualified_step` through the facade (a qualified call).
MODULE = '''
import otpvm
from otpvm import receive, send

import {pkg}.m as me

__vsn__ = "{vsn}"


def version():
    return "{vsn}"


async def loop(state=0):
    while True:
        msg = await receive()
        if msg[0] == "which":
            send(msg[1], ("version", version(), state))
        elif msg[0] == "qualified":
            send(msg[1], ("version", me.version(), state))
        elif msg[0] == "become":
            otpvm.become(me.loop, state + 1)
        elif msg[0] == "stop":
            return "done"


def make_closure(n):
    return lambda: n + 1
'''


@pytest.fixture
def pkg(tmp_path, monkeypatch):
    """A fresh managed package with module m at v1; returns its name."""
    name = f"codetest_{uuid.uuid4().hex[:10]}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    (tmp_path / name / "m.py").write_text(source(name, "1"))
    monkeypatch.syspath_prepend(str(tmp_path))
    code.manage(name)
    yield name
    for mod in [m for m in sys.modules if m.startswith(name)]:
        del sys.modules[mod]


def source(pkg, vsn):
    return textwrap.dedent(MODULE.format(pkg=pkg, vsn=vsn))


async def ask(pid, kind="which"):
    send(pid, (kind, self()))
    _, vsn, state = await receive(("version", ANY, ANY), timeout=PATIENCE)
    return vsn, state


def test_two_versions_coexist(pkg):
    async def main():
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn(m.loop)
        assert await ask(p) == ("1", 0)
        v2 = await code.load_module(f"{pkg}.m", source(pkg, "2"))
        current, old = code.versions(f"{pkg}.m")
        assert (current.vsn, current.status, old.vsn, old.status) == ("2", "current", "1", "old")
        assert v2 == current
        assert await ask(p) == ("1", 0)                 # its local loop stays in v1
        assert await ask(p, "qualified") == ("2", 0)    # a qualified call reaches v2
        q = otpvm.spawn(m.loop)                         # m is the facade: v2
        assert await ask(q) == ("2", 0)
        assert await code.processes_using(f"{pkg}.m", "old") == [p]
        assert await code.processes_using(f"{pkg}.m", "current") == [q]

    otpvm.run(main)


def test_a_third_load_is_refused_while_old_code_runs(pkg):
    async def main():
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn(m.loop)
        await code.load_module(f"{pkg}.m", source(pkg, "2"))
        with pytest.raises(code.NotPurged) as info:
            await code.load_module(f"{pkg}.m", source(pkg, "3"))
        assert info.value.pids == [p]
        assert [v.vsn for v in code.versions(f"{pkg}.m")] == ["2", "1"]
        assert await ask(p) == ("1", 0)                 # untouched

    otpvm.run(main)


def test_purge_kills_old_code_users(pkg):
    async def main():
        otpvm.process_flag("trap_exit", True)
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn_link(m.loop)
        ref = otpvm.monitor(p)
        await code.load_module(f"{pkg}.m", source(pkg, "2"))
        assert await code.purge(f"{pkg}.m") is True
        assert await receive(Down(ref, p, ANY), timeout=PATIENCE) == Down(ref, p, "killed")
        assert await receive(Exit(p, ANY), timeout=PATIENCE) == Exit(p, "killed")
        assert code.versions(f"{pkg}.m")[1] is None
        await code.load_module(f"{pkg}.m", source(pkg, "3"))
        assert code.which(f"{pkg}.m").vsn == "3"
        assert await code.purge(f"{pkg}.m") is False    # nobody ran v2

    otpvm.run(main)


def test_soft_purge_refuses_then_succeeds(pkg):
    async def main():
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn(m.loop)
        ref = otpvm.monitor(p)
        await code.load_module(f"{pkg}.m", source(pkg, "2"))
        assert await code.soft_purge(f"{pkg}.m") is False
        assert [v.vsn for v in code.versions(f"{pkg}.m")] == ["2", "1"]
        send(p, ("stop", self()))
        await receive(Down(ref, p, "normal"), timeout=PATIENCE)
        assert await code.soft_purge(f"{pkg}.m") is True
        current, old = code.versions(f"{pkg}.m")
        assert (current.vsn, old) == ("2", None)

    otpvm.run(main)


def test_a_closure_in_state_counts_as_old_code(pkg):
    async def holder(main, fn):
        send(main, "holding")
        await receive("never")

    async def main():
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn(holder, self(), m.make_closure(1))
        ref = otpvm.monitor(p)
        await receive("holding", timeout=PATIENCE)      # the closure is a local now
        await code.load_module(f"{pkg}.m", source(pkg, "2"))
        assert await code.processes_using(f"{pkg}.m", "old") == []
        assert await code.processes_using(f"{pkg}.m", "old", scan_state=True) == [p]
        assert await code.check_process_code(p, f"{pkg}.m") is True
        assert await code.purge(f"{pkg}.m") is True
        assert (await receive(Down(ref, p, ANY), timeout=PATIENCE)).reason == "killed"

    otpvm.run(main)


def test_become_keeps_pid_mailbox_links_and_order(pkg):
    async def main():
        otpvm.process_flag("trap_exit", True)
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn_link(m.loop)
        ref = otpvm.monitor(p)
        await code.load_module(f"{pkg}.m", source(pkg, "2"))
        # Queued behind the become: handled by the new body, in order.
        send(p, ("become", self()))
        for _ in range(3):
            send(p, ("which", self()))
        for _ in range(3):
            assert await receive(("version", ANY, ANY), timeout=PATIENCE) == ("version", "2", 1)
        assert await code.processes_using(f"{pkg}.m", "old") == []
        assert await code.soft_purge(f"{pkg}.m") is True
        assert otpvm.process_info(p)["links"] == [self()]
        send(p, ("stop", self()))
        assert await receive(Down(ref, ANY, ANY), timeout=PATIENCE) == Down(ref, p, "normal")
        assert await receive(Exit(p, ANY), timeout=PATIENCE) == Exit(p, "normal")

    otpvm.run(main)


def test_become_runs_finally_and_rejects_non_coroutines():
    async def body(main):
        try:
            otpvm.become(after, main)
        finally:
            send(main, "finally")

    def after(main):
        return 42                       # not a coroutine: the process crashes

    async def main():
        p, ref = otpvm.spawn_monitor(body, self())
        await receive("finally", timeout=PATIENCE)
        down = await receive(Down(ref, p, ANY), timeout=PATIENCE)
        assert isinstance(down.reason, TypeError)
        assert "needs an async function" in str(down.reason)

    otpvm.run(main)


def test_become_in_a_callback_process_is_refused():
    class Handler:
        def start(self):
            pass

        def handle_message(self, msg):
            otpvm.become(Handler)

    async def main():
        pid, ref = otpvm.spawn_handler(Handler(), monitor=True)
        send(pid, "go")
        return (await receive(Down(ref, pid, ANY), timeout=PATIENCE)).reason

    reason = otpvm.run(main)
    assert isinstance(reason, TypeError) and "coroutine processes" in str(reason)


def test_delete_then_purge(pkg):
    async def main():
        m = importlib.import_module(f"{pkg}.m")
        p = otpvm.spawn(m.loop)
        ref = otpvm.monitor(p)
        await code.delete(f"{pkg}.m")
        with pytest.raises(code.ModuleDeleted, match="was deleted"):
            m.version()
        assert await ask(p) == ("1", 0)                 # running code carries on
        assert code.which(f"{pkg}.m") is None
        assert await code.purge(f"{pkg}.m") is True
        assert (await receive(Down(ref, p, ANY), timeout=PATIENCE)).reason == "killed"

    otpvm.run(main)


def test_a_failing_body_changes_nothing(pkg):
    async def main():
        m = importlib.import_module(f"{pkg}.m")
        epoch = code.epoch()
        with pytest.raises(code.LoadError, match="ZeroDivisionError"):
            await code.load_module(f"{pkg}.m", "x = 1 / 0\n")
        assert code.which(f"{pkg}.m").vsn == "1" and code.versions(f"{pkg}.m")[1] is None
        assert m.version() == "1" and code.epoch() == epoch

    otpvm.run(main)


def test_switch_and_unswitch_flip_the_facade(pkg):
    m = importlib.import_module(f"{pkg}.m")
    prepared = code.prepare(f"{pkg}.m", source(pkg, "2") + "\nADDED = True\n")
    assert prepared.status == "prepared" and m.version() == "1"     # no effect yet
    epoch = code.epoch()
    code.switch(prepared)
    assert m.version() == "2" and m.ADDED is True and code.epoch() == epoch + 1
    with pytest.raises(code.NotPurged):
        code.switch(code.prepare(f"{pkg}.m", source(pkg, "3")))
    code.unswitch(f"{pkg}.m")
    assert m.version() == "1" and not hasattr(m, "ADDED") and code.epoch() == epoch + 2
    assert code.versions(f"{pkg}.m")[1] is None


def test_current_and_refs(pkg):
    m = importlib.import_module(f"{pkg}.m")
    old_loop = m.loop
    code.switch(code.prepare(f"{pkg}.m", source(pkg, "2")))
    assert code.current(old_loop) is m.loop is not old_loop
    assert code.vsn_of(old_loop) == "1" and code.vsn_of(m.loop) == "2"
    assert code.current(len) is len                     # not managed: itself
    r = code.ref(f"{pkg}.m:version")
    assert r() == "2" and isinstance(r, str)
    with pytest.raises(ValueError, match="package.module:name"):
        code.ref("no_colon")
    with pytest.raises(LookupError, match="has no nothing"):
        code.ref(f"{pkg}.m:nothing").resolve()


def test_manage_after_import_is_refused(pkg):
    importlib.import_module(f"{pkg}.m")
    code.manage(pkg)                                    # its own modules: fine
    with pytest.raises(ValueError, match="before the first import"):
        code.manage("json")
    with pytest.raises(code.NotManaged):
        code.prepare("json", "")


def test_a_stale_class_message_fails_in_the_sender(pkg):
    extra = ("\nimport dataclasses\n\n@dataclasses.dataclass(frozen=True)\n"
             "class Point:\n    x: int\n\nclass Box:\n    def __init__(self, v):\n"
             "        self.v = v\n")
    m = importlib.import_module(f"{pkg}.m")
    code.switch(code.prepare(f"{pkg}.m", source(pkg, "1.5") + extra))
    old_point, old_box = m.Point(1), m.Box(2)

    async def main():
        await code.soft_purge(f"{pkg}.m")
        code.switch(code.prepare(f"{pkg}.m", source(pkg, "2") + extra))
        for stale in (old_point, [old_box], {"k": (1, old_point)}):
            with pytest.raises(otpvm.StaleClassError, match=r"old version of .*\.m"):
                send(self(), stale)
        send(self(), (m.Point(3), m.Box(4)))            # current classes travel
        point, box = await receive(timeout=PATIENCE)
        assert point == m.Point(3) and box.v == 4

    otpvm.run(main)
