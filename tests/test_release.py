"""Release installs (otpvm.release): strict transactions, rollback, lazy mode,
the release directory and the control socket end to end."""

import contextlib
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

import otpvm
from otpvm import ANY, Down, code, gen_server, receive, release, self, send
from otpvm import sys as otpsys

PATIENCE = 30
ROOT = Path(__file__).resolve().parent.parent
# The otpvm command of the Python running the tests first on PATH.
CLI_ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

WORKERS = '''
from otpvm.gen_server import GenServer, NoReply, Ok, Reply

__vsn__ = "{vsn}"


class Worker(GenServer):
    def init(self, n):
        return Ok({init_state})

    def handle_call(self, request, from_, state):
        return Reply(("{vsn}", state), state)

    def handle_cast(self, msg, state):
        {cast}

    def code_change(self, old_vsn, state, extra):
        {code_change}
'''

V1 = dict(vsn="1.0", init_state="(n, [])",
          cast="return NoReply((state[0], state[1] + [msg]))",
          code_change="return state")
V2 = dict(vsn="1.1", init_state="(n, [], 'v2')",
          cast="return NoReply((state[0], state[1] + [msg], state[2]))",
          code_change="return (*state, 'v2') if old_vsn == '1.0' else state[:2]")
V2_FAILING = dict(V2, code_change=(
    "if state[0] == 150:\n            raise ValueError('no migration for 150')\n"
    "        return (*state, 'v2')"))


def write_release(root, pkg, vsn, sources):
    tree = root / vsn / pkg
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    for name, text in sources.items():
        (tree / f"{name}.py").write_text(textwrap.dedent(text))
    return root / vsn


@pytest.fixture
def releases(tmp_path, monkeypatch):
    """(package name, release dir) with 1.0 booted: on sys.path, managed."""
    pkg = f"reltest_{uuid.uuid4().hex[:10]}"
    write_release(tmp_path, pkg, "1.0", {"workers": WORKERS.format(**V1)})
    monkeypatch.syspath_prepend(str(tmp_path / "1.0"))
    code.manage(pkg)
    yield pkg, tmp_path
    for mod in [m for m in sys.modules if m.startswith(pkg)]:
        del sys.modules[mod]


async def start_workers(pkg, n):
    import importlib

    workers = importlib.import_module(f"{pkg}.workers")
    return [await gen_server.start(workers.Worker, i) for i in range(n)]


async def states(pids):
    return [await otpsys.get_state(pid) for pid in pids]


def test_strict_install_switches_every_process(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2)})

    async def main():
        pids = await start_workers(pkg, 20)
        report = await release.install(root / "1.0", root / "1.1", "1.1", from_vsn="1.0",
                                       mode="strict")
        assert (report.ok, report.mode, report.processes) == (True, "strict", 20)
        assert report.modules == {f"{pkg}.workers": ("1.0", "1.1")}
        assert [await gen_server.call(p, "which") for p in pids] == [
            ("1.1", (i, [], "v2")) for i in range(20)]
        assert await code.processes_using(f"{pkg}.workers", "old") == []

    otpvm.run(main)


def test_a_failing_code_change_rolls_everything_back(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2_FAILING)})

    async def sender(pids, rounds):
        for r in range(rounds):             # casts all through the attempt
            for pid in pids:
                gen_server.cast(pid, r)
            await otpvm.sleep(0)

    async def main():
        pids = await start_workers(pkg, 200)
        for pid in pids:
            gen_server.cast(pid, "before")
        before = await states(pids)
        casts = otpvm.monitor(otpvm.spawn(sender, pids, 20))
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1", mode="strict")
        report = info.value.report
        assert report.rolled_back and not report.ok
        kind, pid, module, old_vsn, answer = report.reason
        assert (kind, pid, module, old_vsn) == ("code_change_failed", pids[150],
                                                f"{pkg}.workers", "1.0")
        assert "no migration for 150" in repr(answer)
        assert code.which(f"{pkg}.workers").vsn == "1.0"
        assert code.versions(f"{pkg}.workers")[1] is None
        # Same pids, old code, old state, and every cast handled in order.
        # Once the sender has ended its casts are in the mailboxes, ahead
        # of the calls below.
        await receive(Down(casts, ANY, "normal"), timeout=PATIENCE)
        for pid, (n, seen) in zip(pids, before, strict=True):
            vsn, state = await gen_server.call(pid, "which")
            assert vsn == "1.0" and state == (n, [*seen, *range(20)])

    otpvm.run(main)


def test_a_suspend_timeout_aborts_with_everything_resumed(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2)})
    busy = textwrap.dedent('''
        import otpvm
        from otpvm.gen_server import GenServer, Ok, Reply

        class Busy(GenServer):
            async def handle_call(self, request, from_, state):
                await otpvm.sleep(request)
                return Reply("done", state)
    ''')
    (root / "1.0" / pkg / "busy.py").write_text(busy)
    (root / "1.1" / pkg / "busy.py").write_text(busy + "\n# 1.1\nX = 1\n")

    async def caller(pid, main):
        send(main, ("answer", await gen_server.call(pid, 10.0, timeout=PATIENCE)))

    async def main():
        import importlib

        workers = await start_workers(pkg, 5)
        busy_mod = importlib.import_module(f"{pkg}.busy")
        slow = await gen_server.start(busy_mod.Busy, None)
        otpvm.spawn(caller, slow, self())
        await otpvm.sleep(0.05)                 # it is inside its 10 s callback
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1", mode="strict",
                                  suspend_timeout=0.5)
        reason = info.value.report.reason
        assert reason[:2] == ("suspend_timeout", slow)
        assert code.which(f"{pkg}.workers").vsn == "1.0"
        assert [(await gen_server.call(p, "which"))[0] for p in workers] == ["1.0"] * 5

    otpvm.run(main)


def test_a_broken_new_body_changes_nothing(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": "raise ImportError('broken 1.1')\n"})

    async def main():
        pids = await start_workers(pkg, 3)
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1")
        assert info.value.report.reason[0] == "load_failed"
        assert "broken 1.1" in info.value.report.reason[1]
        assert not info.value.report.rolled_back         # nothing had started
        assert [(await gen_server.call(p, "which"))[0] for p in pids] == ["1.0"] * 3

    otpvm.run(main)


def test_lazy_install_migrates_each_process_at_its_next_message(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2)})

    async def main():
        pids = await start_workers(pkg, 50)
        report = await release.install(root / "1.0", root / "1.1", "1.1", mode="lazy")
        assert (report.ok, report.mode, report.processes) == (True, "lazy", 50)
        assert [await gen_server.call(p, "which") for p in pids] == [
            ("1.1", (i, [], "v2")) for i in range(50)]
        assert await code.soft_purge(f"{pkg}.workers") is True

    otpvm.run(main)


def test_lazy_install_with_a_failing_dry_run_switches_nothing(releases):
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2_FAILING)})

    async def main():
        pids = await start_workers(pkg, 200)
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1", mode="lazy")
        assert info.value.report.reason[:2] == ("code_change_failed", pids[150])
        assert code.which(f"{pkg}.workers").vsn == "1.0"
        assert [(await gen_server.call(p, "which"))[0] for p in pids] == ["1.0"] * 200

    otpvm.run(main)


def test_release_dir_records_and_permanence(tmp_path):
    for vsn in ("1.0", "1.1"):
        (tmp_path / vsn).mkdir()
    rel = release.ReleaseDir(tmp_path)
    with pytest.raises(ValueError, match="none is permanent"):
        rel.boot_release()
    rel.booted("1.0")
    assert rel.releases() == {"1.0": "permanent", "1.1": "unpacked"}
    rel.installed("1.1")
    assert rel.releases() == {"1.0": "permanent", "1.1": "current"}
    assert release.ReleaseDir(tmp_path).boot_release() == "1.0"    # a reboot: 1.0
    rel.make_permanent("1.1")
    assert rel.releases() == {"1.0": "old", "1.1": "permanent"}
    assert release.ReleaseDir(tmp_path).boot_release() == "1.1"
    with pytest.raises(ValueError, match="not the running release"):
        rel.make_permanent("1.0")


def test_the_tutorial_end_to_end(tmp_path):
    """The README's tutorial script: a node upgraded, rolled back and
    downgraded through its control socket, with the otpvm command."""
    done = subprocess.run(["bash", str(ROOT / "examples" / "upgrade" / "tutorial.sh")],
                          capture_output=True, text=True, timeout=120, env=CLI_ENV,
                          cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "upgraded 1.0 -> 1.1" in out
    assert "('hello', 1)" in out                    # 1.1 counts reads
    assert "upgrade: failed: ('code_change_failed'" in out
    assert "rolled back: every process is on 1.1 again" in out
    assert "('hello', 2)" in out                    # still 1.1, its state intact
    assert "upgraded 1.1 -> 1.0" in out
    assert "\n'hello'\n" in out                     # 1.0's answer: the plain value
    assert "running 1.0" in out


TREE = '''
from otpvm import gen_server, supervisor
from otpvm.gen_server import GenServer, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

__vsn__ = "{vsn}"


class Child(GenServer):
    def handle_call(self, request, from_, state):
        return Reply(state, state)


class Sup(Supervisor):
    def init(self, _):
        return SupFlags("one_for_one"), [
            ChildSpec(name, ("{pkg}.tree:start", (name,))) for name in {children!r}]


async def start(name):
    return await gen_server.start_link(Child, name)
'''


def write_trees(root, pkg, children_by_vsn):
    """Module tree.py (a supervisor of these children) in each release, and
    1.1 completed with 1.0's workers (unchanged)."""
    for vsn, children in children_by_vsn.items():
        (root / vsn / pkg).mkdir(parents=True, exist_ok=True)
        (root / vsn / pkg / "tree.py").write_text(textwrap.dedent(
            TREE.format(vsn=vsn, pkg=pkg, children=children)))
    (root / "1.1" / pkg / "__init__.py").write_text("")
    (root / "1.1" / pkg / "workers.py").write_text(WORKERS.format(**V1))


def test_children_added_and_removed_follow_the_new_init_and_back(releases):
    pkg, root = releases
    write_trees(root, pkg, {"1.0": ["cache", "writer"], "1.1": ["cache", "audit"]})

    async def main():
        import importlib

        from otpvm import supervisor

        tree = importlib.import_module(f"{pkg}.tree")
        sup = await supervisor.start_link(tree.Sup, None)
        before = {c[0]: c[1] for c in await supervisor.which_children(sup)}
        report = await release.install(root / "1.0", root / "1.1", "1.1")
        assert (report.children_added, report.children_removed) == (["'audit'"], ["'writer'"])
        after = {c[0]: c[1] for c in await supervisor.which_children(sup)}
        assert set(after) == {"cache", "audit"} and after["cache"] == before["cache"]
        assert not otpvm.is_alive(before["writer"])
        report = await release.install(root / "1.1", root / "1.0", "1.0", down=True)
        assert (report.children_added, report.children_removed) == (["'writer'"], ["'audit'"])
        back = {c[0]: c[1] for c in await supervisor.which_children(sup)}
        assert set(back) == {"cache", "writer"} and back["cache"] == before["cache"]

    otpvm.run(main)


CALLER = '''
from otpvm import gen_server
from otpvm.gen_server import GenServer, Ok, Reply

import {pkg}.callee

__vsn__ = "{vsn}"


class Caller(GenServer):
    async def handle_call(self, n, from_, state):
        return Reply(await gen_server.call(state, n, timeout=2.0), state)
'''

CALLEE = '''
from otpvm.gen_server import GenServer, Reply

__vsn__ = "{vsn}"


class Callee(GenServer):
    def handle_call(self, n, from_, state):
        return Reply(n + 1, state)
'''


def test_callers_are_suspended_before_callees_under_a_call_stream(releases):
    """A caller blocked in a call to a suspended callee could not answer its
    own suspend: the plan's order (callers first) avoids it."""
    pkg, root = releases
    for vsn in ("1.0", "1.1"):
        (root / vsn / pkg).mkdir(parents=True, exist_ok=True)
        (root / vsn / pkg / "__init__.py").write_text("")
        (root / vsn / pkg / "caller.py").write_text(textwrap.dedent(
            CALLER.format(pkg=pkg, vsn=vsn)))
        (root / vsn / pkg / "callee.py").write_text(textwrap.dedent(CALLEE.format(vsn=vsn)))
    (root / "1.1" / pkg / "workers.py").write_text(WORKERS.format(**V1))

    async def client(caller, main):
        n = 0
        while True:
            try:
                assert await gen_server.call(caller, n, timeout=PATIENCE) == n + 1
            except BaseException as exc:
                send(main, ("client failed", exc))
                raise
            n += 1
            if n % 50 == 0:
                send(main, ("calls", n))

    async def main():
        import importlib

        from otpvm import receive

        caller_mod = importlib.import_module(f"{pkg}.caller")
        callee_mod = importlib.import_module(f"{pkg}.callee")
        callee = await gen_server.start(callee_mod.Callee, None)
        caller = await gen_server.start(caller_mod.Caller, callee)
        clients = [otpvm.spawn(client, caller, self()) for _ in range(4)]
        await receive(("calls", 50), timeout=PATIENCE)
        for _ in range(5):
            report = await release.install(root / "1.0", root / "1.1", "1.1")
            assert report.processes == 2
            report = await release.install(root / "1.1", root / "1.0", "1.0", down=True)
        for pid in clients:
            otpvm.exit(pid, "kill")
        try:
            failure = await receive(("client failed", ANY), timeout=0)
        except TimeoutError:
            failure = None
        assert failure is None

    otpvm.run(main)


V2_FAILS_LATE = dict(V2, code_change=(
    "import otpvm\n"
    "        if state[0] == 150 and otpvm.whereis('installer') != otpvm.self():\n"
    "            raise ValueError('its state changed since the dry run')\n"
    "        return (*state, 'v2') if old_vsn == '1.0' else state[:2]"))


def test_a_lazy_install_whose_migration_fails_migrates_everyone_back(releases):
    """The dry run passes (it runs in the installer), the real migration of
    worker #150 fails: the install is rolled back, the workers that had
    migrated go back to 1.0 by 1.1's code_change(('down', '1.0'), ...)."""
    pkg, root = releases
    write_release(root, pkg, "1.1", {"workers": WORKERS.format(**V2_FAILS_LATE)})

    async def main():
        otpvm.register("installer", self())
        pids = await start_workers(pkg, 200)
        before = await states(pids)
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1", mode="lazy")
        report = info.value.report
        assert report.reason == ("migration_failed", pids[150], f"{pkg}.workers", "1.0")
        assert report.rolled_back and report.not_migrated_back == []
        assert code.which(f"{pkg}.workers").vsn == "1.0"
        assert [await gen_server.call(p, "which") for p in pids] == [
            ("1.0", state) for state in before]
        assert await code.soft_purge(f"{pkg}.workers") is True     # nobody runs 1.1

    otpvm.run(main)


@contextlib.contextmanager
def running_node(release_dir):
    """``otpvm run`` of the tutorial's application from release_dir, with
    its control socket; yields (node, socket path, its first line) once it
    is up (its Ctrl-C handler installed), stops it with Ctrl-C at the end."""
    sock = str(release_dir / "control")
    node = subprocess.Popen(["otpvm", "run", "kvstore_rel.store:KVStore", "--release-dir",
                             str(release_dir), "--control", sock], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=CLI_ENV, cwd=release_dir)
    try:
        first = node.stdout.readline()
        while "otpvm node up" not in node.stdout.readline():
            assert node.poll() is None, "the node ended before it was up"
        yield node, sock, first
    finally:
        node.send_signal(signal.SIGINT)
        node.communicate(timeout=60)


def test_a_reboot_boots_the_permanent_release(tmp_path):
    """Installed without --permanent, 1.1 runs until the node stops; the
    next boot is 1.0 again.  Made permanent, 1.1 is what boots."""
    shutil.copytree(ROOT / "examples" / "upgrade" / "1.0", tmp_path / "1.0")

    def boot_and(*upgrade_args):
        with running_node(tmp_path) as (_, sock, booted):
            if upgrade_args:
                done = subprocess.run(["otpvm", "upgrade", sock, *upgrade_args], env=CLI_ENV,
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 0, done.stdout + done.stderr
        return booted

    assert "booting release 1.0" in boot_and(str(ROOT / "examples" / "upgrade" / "1.1"))
    assert "booting release 1.0" in boot_and("1.1", "--permanent")
    assert "booting release 1.1" in boot_and()
    assert json_releases(tmp_path) == {"1.0": "old", "1.1": "permanent"}


def json_releases(path):
    import json

    return json.loads((path / "RELEASES.json").read_text())


def test_a_bad_new_supervisor_init_fails_validation_with_nothing_changed(releases):
    pkg, root = releases
    write_trees(root, pkg, {"1.0": ["cache"], "1.1": ["cache", "cache"]})    # duplicate id

    async def main():
        import importlib

        from otpvm import supervisor

        tree = importlib.import_module(f"{pkg}.tree")
        sup = await supervisor.start_link(tree.Sup, None)
        before = await supervisor.which_children(sup)
        epoch = code.epoch()
        with pytest.raises(release.InstallError) as info:
            await release.install(root / "1.0", root / "1.1", "1.1")
        kind, pid, module, why = info.value.report.reason
        assert (kind, pid, module) == ("bad_supervisor_init", sup, f"{pkg}.tree")
        assert "duplicate child id 'cache'" in why
        assert not info.value.report.rolled_back        # nothing had changed
        assert code.epoch() == epoch and code.which(f"{pkg}.tree").vsn == "1.0"
        assert await supervisor.which_children(sup) == before

    otpvm.run(main)


def test_the_control_socket_is_private_and_refuses_bad_requests(tmp_path):
    from otpvm import control

    shutil.copytree(ROOT / "examples" / "upgrade" / "1.0", tmp_path / "1.0")
    with running_node(tmp_path) as (node, sock, _):
        assert control.request(sock, {"op": "releases"})["current"] == "1.0"
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        with socket.socket(socket.AF_UNIX) as raw:
            raw.connect(sock)
            raw.sendall(b"not json\n")
            answer = raw.makefile().readline()
        assert '"ok": false' in answer and "bad request" in answer
        bad = control.request(sock, {"op": "reboot"})
        assert bad == {"ok": False, "error": "ValueError: unknown request 'reboot': expected "
                       "install, releases, make_permanent or call"}
        missing = control.request(sock, {"op": "install", "vsn": "9.9"})
        assert not missing["ok"] and "no release '9.9'" in missing["error"]
        assert control.request(sock, {"op": "releases"})["current"] == "1.0"    # still up
    assert node.returncode == 0
    assert not os.path.exists(sock)                 # removed at the stop
