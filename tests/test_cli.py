"""The command line: ``otpvm run MODULE:APP`` (and ``python -m otpvm``) as a
real subprocess.

The node runs an application module written into tmp_path.  Its workers
print a line when they start and when their terminate callback runs, so the
order in which the tree came up and went down is read from stdout.  The tests
wait for lines (with generous timeouts), never on a sleep.
"""

import importlib.metadata
import os
import queue
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from pathlib import Path

import pytest

import otpvm
from otpvm.__main__ import main

T = 30      # generous: a loaded CI machine may be slow to start Python
REPO = Path(__file__).resolve().parent.parent


def otpvm_command():
    """The installed ``otpvm`` console script ([project.scripts])."""
    script = Path(sysconfig.get_path("scripts")) / "otpvm"
    if not script.exists():
        pytest.skip("the otpvm command is not installed here (pip install .)")
    return [str(script)]

APP_MODULE = '''
import threading

import otpvm
from otpvm.__main__ import main
from otpvm import application, gen_server, supervisor
from otpvm.gen_server import GenServer, Ok
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags


class Worker(GenServer):
    def init(self, name):
        otpvm.process_flag("trap_exit", True)     # so that terminate runs on shutdown
        print(f"started {name}", flush=True)
        return Ok(name)

    def terminate(self, reason, name):
        print(f"terminate {name} {reason}", flush=True)


async def doomed():
    """Dies with an abnormal reason once the application is up."""
    otpvm.send(otpvm.self(), "go")
    await otpvm.receive("go")
    otpvm.exit("boom")


async def start(cls, arg):
    return await gen_server.start_link(cls, arg)


class Sup(Supervisor):
    def init(self, children):
        return SupFlags("one_for_one", intensity=0, period=1), [
            ChildSpec(name, (start, (cls, name))) for name, cls in children]


def workers(*names):
    return [(name, Worker) for name in names]


class Base(application.Application):
    name, vsn = "base", "1.0"

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup, workers("b1", "b2"))

    def stop(self, state):
        print("stop base", flush=True)


class Web(application.Application):
    name, vsn = "web", "1.0"
    applications = ("base",)

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup, workers("w1", "w2", "w3"))

    def stop(self, state):
        print("stop web", flush=True)


class Stuck(GenServer):
    """Its terminate never returns: it waits for a message that never comes."""

    def init(self, _):
        otpvm.process_flag("trap_exit", True)
        print("started stuck", flush=True)
        return Ok(None)

    async def terminate(self, reason, state):
        print(f"terminate stuck {reason}: waiting forever", flush=True)
        await otpvm.receive("never")


class StuckSup(Supervisor):
    def init(self, _):
        # shutdown='infinity': the supervisor waits as long as terminate runs.
        return SupFlags("one_for_one"), [
            ChildSpec("stuck", (start, (Stuck, None)), shutdown="infinity")]


class Hangs(application.Application):
    name, vsn = "hangs", "1.0"

    async def start(self, start_type, args):
        return await supervisor.start_link(StuckSup)


class Blocked(Stuck):
    """Its terminate blocks its scheduler thread for good: no kill reaches it."""

    def terminate(self, reason, state):
        print(f"terminate stuck {reason}: waiting forever", flush=True)
        threading.Event().wait()


class BlockedSup(Supervisor):
    def init(self, _):
        return SupFlags("one_for_one"), [
            ChildSpec("blocked", (start, (Blocked, None)), shutdown="infinity")]


class Blocks(application.Application):
    name, vsn = "blocks", "1.0"

    async def start(self, start_type, args):
        return await supervisor.start_link(BlockedSup)


class Boom(application.Application):
    name, vsn = "boom", "1.0"

    async def start(self, start_type, args):
        return otpvm.spawn_link(doomed)


class Broken(application.Application):
    name, vsn = "broken", "1.0"

    async def start(self, start_type, args):
        raise RuntimeError("cannot start broken")


NOT_AN_APP = 42
'''


class Node:
    """A ``python -m otpvm`` subprocess (or the command given) whose output
    lines are read as they come."""

    def __init__(self, cwd, *args, command=None, env=None):
        env = {**os.environ, **(env or {})}
        if command is None:
            # The otpvm this test imported (built in place or installed), and the app.
            here = str(Path(otpvm.__file__).resolve().parent.parent)
            env["PYTHONPATH"] = os.pathsep.join([str(cwd), here])
            command = [sys.executable, "-m", "otpvm"]
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [*command, *args], cwd=cwd, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.out, self.err = [], []
        self.open = 2
        for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr)):
            threading.Thread(target=self._read, args=(name, stream), daemon=True).start()

    def _read(self, name, stream):
        for line in stream:
            self.lines.put((name, line.rstrip("\n")))
        self.lines.put((name, None))

    def _next(self, deadline):
        try:
            name, line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            pytest.fail(f"no output from the node for {T} s:\n{self.report()}")
        if line is None:
            self.open -= 1
        else:
            (self.out if name == "out" else self.err).append(line)
        return name, line

    def wait_for(self, text, stream="out"):
        """Waits for a line of the stream containing text (or finds it among
        those already read); returns it."""
        for line in self.out if stream == "out" else self.err:
            if text in line:
                return line
        deadline = time.monotonic() + T
        while self.open:
            name, line = self._next(deadline)
            if name == stream and line is not None and text in line:
                return line
        pytest.fail(f"the node ended without printing {text!r}:\n{self.report()}")

    def finish(self, timeout=T):
        """Waits for the node to exit and for all its output; returns the exit code."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.drain()
            pytest.fail(f"the node did not exit within {timeout} s:\n{self.report()}")
        self.drain()
        return code

    def drain(self):
        deadline = time.monotonic() + T
        while self.open:
            self._next(deadline)

    def report(self):
        return "\n".join(["stdout:", *self.out, "stderr:", *self.err])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def node(tmp_path):
    (tmp_path / "cli_app.py").write_text(APP_MODULE)
    started = []

    def start(*args, **kwargs):
        started.append(Node(kwargs.pop("cwd", tmp_path), *args, **kwargs))
        return started[-1]

    yield start
    for n in started:
        n.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_node_cleanly_trees_in_reverse(node, signum):
    n = node("run", "cli_app:Web")
    up = n.wait_for("otpvm node up")
    assert "started base, web" in up                    # the dependency first
    n.proc.send_signal(signum)
    code = n.finish()
    assert code == 0, n.report()
    assert [line for line in n.out if line.startswith(("started", "terminate", "stop"))] == [
        "started b1", "started b2", "started w1", "started w2", "started w3",
        "terminate w3 shutdown", "terminate w2 shutdown", "terminate w1 shutdown", "stop web",
        "terminate b2 shutdown", "terminate b1 shutdown", "stop base",
    ], n.report()
    again = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
    assert f"otpvm node: {signal.Signals(signum).name}, stopping ({again} again to force)" \
        in n.out
    assert n.out[-1] == "otpvm node: stopped web, base cleanly"
    assert not any("Traceback" in line for line in n.err), n.report()


def test_a_bad_module_app_argument_exits_nonzero_with_a_clear_message(node):
    n = node("run", "cli_app")
    code = n.finish()
    assert code != 0
    assert n.err == ["error: expected MODULE:APP, got 'cli_app'"], n.report()


@pytest.mark.parametrize("arg, message", [
    ("cli_app", "expected MODULE:APP"),
    (":Web", "expected MODULE:APP"),
    ("no_such_module_here:App", "cannot import 'no_such_module_here'"),
    ("cli_app:Missing", "'cli_app' has no 'Missing'"),
    ("cli_app:NOT_AN_APP", "is not an otpvm.Application subclass"),
    ("cli_app:Worker", "is not an otpvm.Application subclass"),
])
def test_bad_module_app_arguments_are_refused_before_any_node_boots(
        tmp_path, monkeypatch, arg, message):
    # In-process, for speed: the same code path as the command, up to the exit.
    (tmp_path / "cli_app.py").write_text(APP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cli_app", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["run", arg])
    assert message in str(exc.value.code)
    sys.modules.pop("cli_app", None)


def test_an_application_that_cannot_start_is_a_clear_error(node):
    n = node("run", "cli_app:Broken")
    code = n.finish()
    assert code == 1, n.report()
    assert n.err[-1] == ("error: cannot start 'broken': "
                         "('start_failed', RuntimeError('cannot start broken'))"), n.report()
    assert "ERROR otpvm: application broken: start raised" in n.err   # with its traceback
    assert not any("registered as 'node'" in line for line in n.err), n.report()  # no crash
    assert not any(line.startswith("otpvm node up") for line in n.out), n.report()


@pytest.mark.parametrize("start_type", ["permanent", "transient"])
def test_the_node_exits_nonzero_when_its_application_dies(node, start_type):
    # OTP: a permanent application's death (or a transient one's abnormal
    # death) terminates the node; as a command, that is a failure.
    n = node("run", "cli_app:Boom", "--type", start_type)
    code = n.finish()
    assert code == 1, n.report()
    assert f"ERROR otpvm: application boom was {start_type}: stopping the node" in n.err, \
        n.report()
    assert any(line.startswith("otpvm node: halted") for line in n.err), n.report()


def test_a_temporary_application_dying_leaves_the_node_up(node):
    n = node("run", "cli_app:Boom", "--type", "temporary")
    n.wait_for("otpvm node up")
    n.wait_for("application report: application boom exited", stream="err")
    assert n.proc.poll() is None                        # still up
    n.proc.send_signal(signal.SIGTERM)
    code = n.finish()
    assert code == 0, n.report()
    assert n.out[-1] == "otpvm node: stopped nothing cleanly", n.report()
    assert not any("ApplicationError" in line for line in n.err), n.report()


def test_help_lists_the_commands_under_the_otpvm_name(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: otpvm COMMAND [options]\n")
    assert [line.split()[0] for line in out.splitlines() if line.startswith("  ")
            and not line.lstrip().startswith("-")] == [
        "demo", "ring", "run", "upgrade", "releases", "make-permanent", "call", "appup"]


@pytest.mark.parametrize("argv, error", [
    (["bogus"], "otpvm: error: unknown command 'bogus'"),
    ([], "otpvm: error: a command is required"),
])
def test_a_missing_or_unknown_command_is_an_error_with_the_usage(capsys, argv, error):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("usage: otpvm COMMAND")
    assert captured.err.rstrip("\n").splitlines()[-1] == error


def test_version_is_the_installed_distributions(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"otpvm {otpvm.__version__}\n"
    assert otpvm.__version__ == importlib.metadata.version("otpvm")


@pytest.mark.parametrize("command", ["demo", "ring", "run", "appup"])
def test_each_command_has_its_help_under_the_otpvm_name(capsys, command):
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: otpvm {command} ")


def test_the_otpvm_command_runs_the_tutorials_kvstore_verbatim_from_the_clone(node, tmp_path):
    # From the clone's root: examples/ is found in the current folder, and the
    # uncompiled otpvm/ source folder there does not shadow the installed one.
    n = node("run", "examples.kvstore:KVStore", cwd=REPO, command=otpvm_command(),
             env={"KVSTORE_LOG": str(tmp_path / "kvstore.log")})
    n.wait_for("otpvm node up: started kvstore")
    n.wait_for("client: after the restart, greeting = hello again")
    n.proc.send_signal(signal.SIGINT)
    assert n.finish() == 0, n.report()
    assert n.out == [
        "otpvm node up: started kvstore (Ctrl-C or SIGTERM stops it)",
        "client: greeting = hello",
        "client: the cache crashed (ValueError('the cache cannot store poison')); "
        "the supervisor restarts it",
        "client: after the restart, greeting = hello again",
        "otpvm node: SIGINT, stopping (Ctrl-C again to force)",
        "kvstore: stopped",
        "otpvm node: stopped kvstore cleanly",
    ], n.report()
    assert sum("crash report" in line for line in n.err) == 1, n.report()
    assert (tmp_path / "kvstore.log").read_text() == "greeting='hello'\ngreeting='hello again'\n"


def test_python_m_otpvm_in_the_source_tree_says_what_to_do_instead():
    if list((REPO / "otpvm").glob("_vm*.so")):
        pytest.skip("this clone has a core built in place: the source tree imports fine")
    done = subprocess.run([sys.executable, "-m", "otpvm", "demo"], cwd=REPO, text=True,
                          capture_output=True, timeout=T, check=False)
    assert done.returncode == 1
    assert done.stdout == ""
    assert (f"ImportError: otpvm is imported from its source tree ({REPO / 'otpvm'}), which "
            f"has no compiled core: run `pip install .` and use the `otpvm` command, or run "
            f"from another folder") in done.stderr
    assert "partially initialized" not in done.stderr


@pytest.mark.parametrize("app, first, second", [
    ("Hangs", signal.SIGINT, signal.SIGINT), ("Hangs", signal.SIGTERM, signal.SIGTERM),
    ("Hangs", signal.SIGTERM, signal.SIGINT), ("Blocks", signal.SIGINT, signal.SIGINT)])
def test_a_second_signal_forces_the_stop_of_a_node_that_cannot_stop(node, app, first, second):
    n = node("run", f"cli_app:{app}")
    n.wait_for(f"otpvm node up: started {app.lower()}")
    n.proc.send_signal(first)
    n.wait_for("terminate stuck shutdown: waiting forever")   # it would wait forever
    assert n.proc.poll() is None
    n.proc.send_signal(second)
    assert n.finish(timeout=10) == 128 + second, n.report()
    forced = (f"otpvm node: {second.name} again, forcing the stop: every process is killed, "
              f"unfinished terminate callbacks are abandoned")
    assert n.err.count(forced) == 1, n.report()
    # Blocks' terminate holds its thread: that is a true long_schedule, whose
    # report may come before or after the forced stop's line; the kill cannot
    # interrupt a thread waiting on a lock, and the stop says so.
    others = [line for line in n.err if line != forced]
    if app == "Hangs":
        assert others == [], n.report()
    else:
        abandoned = [line for line in others if "still run the code of killed" in line]
        assert len(abandoned) == 1, n.report()
        assert abandoned[0].startswith("WARNING otpvm: the VM stopped, but 1 scheduler thread(s) "
                                       "still run the code of killed processes (<0."), n.report()
        assert all(line.startswith(("WARNING otpvm: long_schedule: process", "  "))
                   for line in others if line not in abandoned), n.report()
    assert not any(line.startswith("otpvm node: stopped") for line in n.out), n.report()
    assert not any("Traceback" in line for line in n.err), n.report()
