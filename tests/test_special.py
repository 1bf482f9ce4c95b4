"""Special processes (otpvm.special): coroutines that answer the sys protocol
and change code at resume, as an OTP special process does."""

import importlib
import sys
import textwrap
import uuid

import pytest

import otpvm
from otpvm import ANY, code, gen, receive, self, send
from otpvm import sys as otpsys

PATIENCE = 30

LOOP = '''
from otpvm import send, special

__vsn__ = "{vsn}"


async def loop(state):
    try:
        while True:
            msg = await special.receive(state=state, resume=loop)
            if msg[0] == "add":
                state = {add}
            elif msg[0] == "get":
                send(msg[1], ("{vsn}", state))
    finally:
        pass


def code_change(old_vsn, state, extra):
    {code_change}
'''

V1 = dict(vsn="1", add="state + msg[1]", code_change="return state")
V2 = dict(vsn="2", add="(state[0] + msg[1], state[1] + 1)",
          code_change="return state[0] if old_vsn == ('down', '1') else (state, extra)")
# extra is the count of adds so far, 0
V2_FAILING = dict(V2, code_change="raise ValueError('cannot')")


@pytest.fixture
def mod(tmp_path, monkeypatch):
    """The name of a fresh managed module holding LOOP v1."""
    pkg = f"specialtest_{uuid.uuid4().hex[:10]}"
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "loop.py").write_text(textwrap.dedent(LOOP.format(**V1)))
    monkeypatch.syspath_prepend(str(tmp_path))
    code.manage(pkg)
    yield f"{pkg}.loop"
    for name in [m for m in sys.modules if m.startswith(pkg)]:
        del sys.modules[name]


async def request(pid, req):
    return await gen.call(pid, req, PATIENCE, tag=gen.SYSTEM)


async def get(pid):
    send(pid, ("get", self()))
    return await receive((ANY, ANY), timeout=PATIENCE)


def test_get_state_and_suspend_keep_messages_in_order(mod):
    async def main():
        m = importlib.import_module(mod)
        pid = otpvm.spawn(m.loop, 0)
        send(pid, ("add", 5))
        assert await otpsys.get_state(pid) == 5
        await otpsys.suspend(pid)
        for n in range(10):
            send(pid, ("add", n))
        assert await otpsys.get_state(pid) == 5         # suspended: nothing handled
        await otpsys.resume(pid)
        assert await get(pid) == ("1", 50)

    otpvm.run(main)


def test_change_code_while_running_is_refused(mod):
    async def main():
        m = importlib.import_module(mod)
        pid = otpvm.spawn(m.loop, 0)
        assert await request(pid, ("change_code", mod, "1", None)) == ("error", "running")
        assert await get(pid) == ("1", 0)

    otpvm.run(main)


def test_change_code_switches_at_resume_with_the_migrated_state(mod):
    async def main():
        m = importlib.import_module(mod)
        pid, ref = otpvm.spawn_monitor(m.loop, 3)
        await otpsys.suspend(pid)
        send(pid, ("add", 4))                           # waits for the resume
        code.switch(code.prepare(mod, textwrap.dedent(LOOP.format(**V2))))
        assert await request(pid, ("change_code", mod, "1", 0)) == "ok"
        assert await request(pid, ("commit_code",)) == "ok"
        await otpsys.resume(pid)
        assert await get(pid) == ("2", (7, 1))          # migrated, then the queued add
        assert await code.processes_using(mod, "old") == []
        assert otpvm.is_alive(pid)
        otpvm.demonitor(ref)

    otpvm.run(main)


def test_a_failing_code_change_keeps_the_old_loop(mod):
    async def main():
        m = importlib.import_module(mod)
        pid = otpvm.spawn(m.loop, 3)
        await otpsys.suspend(pid)
        code.switch(code.prepare(mod, textwrap.dedent(LOOP.format(**V2_FAILING))))
        answer = await request(pid, ("change_code", mod, "1", None))
        assert answer[0] == "error" and answer[1][0] == "callback_failed"
        assert "cannot" in str(answer[1][1])
        await otpsys.resume(pid)
        send(pid, ("add", 1))
        assert await get(pid) == ("1", 4)
        assert await code.processes_using(mod, "old") == [pid]

    otpvm.run(main)
