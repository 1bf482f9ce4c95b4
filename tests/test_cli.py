"""The command line: ``python -m otpvm run MODULE:APP`` as a real subprocess.

The node runs an application module written into tmp_path.  Its workers
print a line when they start and when their terminate callback runs, so the
order in which the tree came up and went down is read from stdout.  The tests
wait for lines (with generous timeouts), never on a sleep.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import otpvm
from otpvm.__main__ import main

T = 30      # generous: a loaded CI machine may be slow to start Python

APP_MODULE = '''
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
    """A ``python -m otpvm`` subprocess whose output lines are read as they come."""

    def __init__(self, cwd, *args):
        env = dict(os.environ)
        # The otpvm this test imported (built in place or installed), and the app.
        here = str(Path(otpvm.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([str(cwd), here])
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otpvm", *args], cwd=cwd, env=env, text=True,
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

    def finish(self):
        """Waits for the node to exit and for all its output; returns the exit code."""
        try:
            code = self.proc.wait(timeout=T)
        except subprocess.TimeoutExpired:
            self.kill()
            self.drain()
            pytest.fail(f"the node did not exit within {T} s:\n{self.report()}")
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

    def start(*args):
        started.append(Node(tmp_path, *args))
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
    assert f"otpvm node: {signal.Signals(signum).name}, stopping" in n.out
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


@pytest.mark.parametrize("argv, code", [([], 2), (["nosuch"], 2), (["--help"], 0)])
def test_usage(capsys, argv, code):
    assert main(argv) == code
    assert capsys.readouterr().out.startswith("usage: python -m otpvm")
