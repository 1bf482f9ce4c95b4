"""The scheduler: reductions, rescue of stuck run queues, idling, threads."""

import logging
import resource
import threading
import time

import pytest

import otpvm
from otpvm import receive, self, send


def test_a_full_mailbox_yields_after_its_reduction_budget():
    progress = []
    snapshot = []

    async def consumer(n):
        for _ in range(n):
            await receive()
            progress.append(1)

    async def other():
        snapshot.append(len(progress))

    async def main(n):
        pid, ref = otpvm.spawn_monitor(consumer, n)
        for i in range(n):
            send(pid, i)
        _, ref2 = otpvm.spawn_monitor(other)
        await receive(otpvm.Down(ref2, otpvm.ANY, otpvm.ANY), timeout=10)
        await receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=10)
        return otpvm.process_info(self())["reductions"]

    reductions = otpvm.run(main, 10_000, schedulers=1)
    assert len(progress) == 10_000
    # `other` ran while `consumer` still had thousands of messages queued.
    assert 0 < snapshot[0] < 10_000
    assert snapshot[0] < 4_000
    assert reductions > 0


def test_a_process_that_never_awaits_cannot_hold_the_vm(caplog):
    release = threading.Event()
    spinning = threading.Event()

    def hog():
        spinning.set()
        x = 0
        while not release.is_set():
            x += 1
        return x

    async def echo():
        while True:
            to, n = await receive()
            send(to, n)

    async def main():
        otpvm.spawn(hog)
        pid = otpvm.spawn(echo)
        while not spinning.is_set():
            await otpvm.sleep(0.001)
        for i in range(200):
            send(pid, (self(), i))
            assert await receive(timeout=10) == i
        release.set()
        return "others kept running"

    with caplog.at_level(logging.WARNING, logger="otpvm"), otpvm.VM(schedulers=1) as vm:
        try:
            assert vm.run(main) == "others kept running"
        finally:
            release.set()
        assert vm.rescues >= 1
    assert any("long_schedule" in r.getMessage() for r in caplog.records)


def test_an_idle_vm_uses_no_cpu():
    async def idle():
        await receive()

    with otpvm.VM(schedulers=2) as vm:
        for _ in range(1000):
            vm.spawn(idle)
        time.sleep(0.2)  # let every process reach its receive
        before = resource.getrusage(resource.RUSAGE_SELF)
        time.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
    used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert used < 0.05, f"an idle VM burned {used:.3f} s of CPU in 1 s"


@pytest.mark.parametrize("schedulers", [1, 2, 4])
def test_ring_of_processes_on_several_schedulers(schedulers):
    async def node(nxt_holder):
        nxt = await receive()
        while True:
            token = await receive()
            if token == "stop":
                send(nxt, "stop")
                return
            send(nxt, token + 1)

    async def main(n, rounds):
        pids = [otpvm.spawn(node, None) for _ in range(n)]
        for i, pid in enumerate(pids):
            send(pid, pids[(i + 1) % n] if i + 1 < n else self())
        for r in range(rounds):
            send(pids[0], r * n)
            assert await receive(timeout=10) == (r + 1) * n
        send(pids[0], "stop")
        assert await receive(timeout=10) == "stop"
        return "ok"

    assert otpvm.run(main, 500, 5, schedulers=schedulers) == "ok"


def test_many_senders_one_receiver_across_threads():
    async def sender(to, base, n):
        for i in range(n):
            send(to, (base, i))

    async def main(senders, n):
        for s in range(senders):
            otpvm.spawn(sender, self(), s, n)
        last = {}
        for _ in range(senders * n):
            s, i = await receive(timeout=10)
            assert last.get(s, -1) == i - 1  # per-sender order
            last[s] = i
        return len(last)

    assert otpvm.run(main, 16, 2000, schedulers=4) == 16


# A supervisor restarting gen_servers that crash in handle_info, while every
# crash report is slow to write (the handler sleeps, with the GIL released,
# like a log file on a busy disk).  The monitor hands the crashing worker's run
# queue to a spare thread during each report, so the supervisor runs while
# the child is still dying: its Down arrives after gen.start has demonitored
# the child.  Dropping such a Down used to free its mailbox node twice, which
# segfaulted `python -m otpvm run` under load.  A crash kills the interpreter,
# so the node runs in a child process.
RESCUED_CRASHES = '''
import logging, sys, time
import otpvm
from otpvm import gen_server, supervisor
from otpvm.gen_server import GenServer, Ok
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags


class SlowReport(logging.Handler):
    def emit(self, record):
        time.sleep(0.001)


log = logging.getLogger("otpvm")
log.addHandler(SlowReport())
log.propagate = False
starts = []


class Worker(GenServer):
    def init(self, name):
        starts.append(name)
        otpvm.send(otpvm.self(), "boom")
        return Ok(name)

    def handle_info(self, msg, name):
        raise RuntimeError(f"{name} crashed on {msg!r}")


async def start(name):
    return await gen_server.start_link(Worker, name)


class Sup(Supervisor):
    def init(self, n):
        return SupFlags("one_for_one", intensity=restarts, period=3600), [
            ChildSpec(f"w{i}", (start, (f"w{i}",))) for i in range(n)]


async def main():
    # The supervisor gives up after `restarts` restarts and exits, which
    # ends the run (a kill would wait for the end of its long slice).
    otpvm.process_flag("trap_exit", True)
    sup = await supervisor.start_link(Sup, 4)
    await otpvm.receive(otpvm.Exit(sup, otpvm.ANY), timeout=60)


restarts = int(sys.argv[1])
with otpvm.VM(schedulers=1, slice_limit=0.0002) as vm:
    vm.run(main)
print(vm.rescues, len(starts))
'''


def test_rescues_during_crash_reports_of_a_restarting_supervisor(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "rescued_crashes.py"
    script.write_text(RESCUED_CRASHES)
    here = str(Path(otpvm.__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "-X", "faulthandler", str(script), "300"],
                          cwd=here, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr[-3000:])
    rescues, starts = map(int, done.stdout.split())
    assert starts > 300             # every restart was a chance to hit the window
    assert rescues >= 10            # and the window was there, many times over
