"""SIGINT and SIGTERM for commands (otpvm/_signals.py), in real subprocesses.

A signal that comes once the clean stop is done must not change how the
program ends: the child says when it has got there (and waits, reading its
stdin, while the test sends the late signal), so the test never races it.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import otpvm

T = 30      # generous: a loaded CI machine may be slow to start Python

APP = '''
import atexit
import sys

from otpvm import application, gen_server, supervisor
from otpvm.gen_server import GenServer, Ok
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags


def linger():
    """Runs once the node's main has returned 0: the program is exiting
    cleanly.  It says so, then waits for the test's go-ahead on stdin."""
    print("exiting", flush=True)
    sys.stdin.readline()
    print("exited", flush=True)


atexit.register(linger)


class Worker(GenServer):
    def init(self, _):
        return Ok(None)


async def start_worker():
    return await gen_server.start_link(Worker, None)


class Sup(Supervisor):
    def init(self, _):
        return SupFlags(), [ChildSpec("w", (start_worker, ()))]


class App(application.Application):
    name, vsn = "app", "1.0"

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup)
'''

SCRIPT = '''
import os
import signal
import sys

import otpvm
from otpvm import _signals


async def main():
    return "done"


vm = _signals.new_vm(1)
seen = []
result = _signals.run_main(vm, seen.append, main)
vm.stop()
print(result, seen, flush=True)
for sig in (signal.SIGTERM, signal.SIGINT):     # late: main has ended
    os.kill(os.getpid(), sig)
print("survived", flush=True)
'''


def spawn(cwd, *args):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(cwd), str(Path(otpvm.__file__).resolve().parent.parent)])
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def read_until(proc, text, seen):
    """Reads stdout lines until one contains text (failing if it ends first)."""
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if text in line:
            return
    proc.wait(T)
    pytest.fail(f"no {text!r} in the output:\n" + "\n".join(seen) + proc.stderr.read())


@pytest.fixture
def child():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("late", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_once_the_clean_stop_is_done_leaves_the_exit_status_0(
        tmp_path, child, late):
    (tmp_path / "late_app.py").write_text(APP)
    proc = spawn(tmp_path, "-m", "otpvm", "run", "late_app:App", "--schedulers", "1")
    child.append(proc)
    out = []
    read_until(proc, "otpvm node up", out)
    proc.send_signal(signal.SIGTERM)
    read_until(proc, "exiting", out)          # stopped cleanly; now in its atexit hook
    proc.send_signal(late)                    # the second signal, a moment later
    stdout, stderr = proc.communicate("go\n", timeout=T)
    out += stdout.splitlines()
    assert proc.returncode == 0, "\n".join(out) + stderr
    assert "otpvm node: stopped app cleanly" in out and out[-1] == "exited"
    assert "forcing the stop" not in stderr and "Traceback" not in stderr, stderr


def test_signals_after_run_main_returned_do_nothing(tmp_path, child):
    proc = spawn(tmp_path, "-c", SCRIPT)
    child.append(proc)
    stdout, stderr = proc.communicate(timeout=T)
    assert proc.returncode == 0, stdout + stderr
    assert stdout.splitlines() == ["done []", "survived"], stdout + stderr
