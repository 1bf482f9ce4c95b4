"""otpvm.pykka: what otpvm adds to pykka's actors (pykka's own suite, run on
otpvm by .ci/peer_suites.py, covers pykka's API): pids, supervision, async
handlers that await futures, blocking handlers, and how an actor's end
answers the asks still pending.

Each test runs its actors on a VM of its own (``otpvm_vm``), with one
scheduler thread where the point is that one actor cannot hold the others.
"""

import logging
import threading
import time

import pytest

pykka = pytest.importorskip("otpvm.pykka")

import otpvm  # noqa: E402
from otpvm import ANY, Down, receive, supervisor  # noqa: E402
from otpvm.supervisor import Supervisor, SupFlags  # noqa: E402

T = 10                  # generous: a correct run never waits this long


@pytest.fixture
def vm():
    """A VM for the test's actors; every actor stopped and the VM with them."""
    with otpvm.VM(schedulers=1) as vm:
        pykka.ThreadingActor.otpvm_vm = vm
        try:
            yield vm
        finally:
            pykka.ActorRegistry.stop_all(timeout=T)
            pykka.ThreadingActor.otpvm_vm = None


class Echo(pykka.ThreadingActor):
    def on_receive(self, message):
        if message == "boom":
            raise ValueError("boom")
        return message

    def pid_of_me(self):
        return otpvm.self()


def test_an_actor_is_a_process_and_its_ref_has_its_pid(vm):
    ref = Echo.start()
    assert isinstance(ref.pid, otpvm.Pid)
    assert ref.proxy().pid_of_me().get(timeout=T) == ref.pid
    assert otpvm.is_alive(ref.pid)
    assert ref.stop(timeout=T) is True
    assert not ref.is_alive()


def test_a_failed_actor_ends_its_process_with_the_exception(vm):
    ref = Echo.start()

    async def watch():
        otpvm.monitor(ref.pid)
        ref.tell("boom")
        return await receive(Down(ANY, ANY, ANY), timeout=T)

    down = vm.run(watch)
    assert isinstance(down.reason, ValueError) and str(down.reason) == "boom"
    assert pykka.ActorRegistry.get_by_class(Echo) == []


def test_an_ask_that_fails_answers_the_exception_and_the_actor_lives_on(vm):
    ref = Echo.start()
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=T)
    assert ref.ask("still here", timeout=T) == "still here"


class Worker(pykka.ThreadingActor):
    started = []

    def __init__(self, name):
        super().__init__()
        self.name = name

    def on_start(self):
        Worker.started.append(self.actor_ref)

    def on_receive(self, message):
        if message == "crash":
            raise RuntimeError("crash")
        return (self.name, message)


class ActorSup(Supervisor):
    def init(self, specs):
        return SupFlags("one_for_one", intensity=5, period=5), specs


def test_a_supervisor_restarts_a_crashed_actor_and_the_registry_finds_the_new_one(vm):
    Worker.started = []

    async def main():
        sup = await supervisor.start_link(ActorSup, [pykka.child_spec(Worker, "w")])
        first = Worker.started[0]
        [(ident, pid, kind, _)] = await supervisor.which_children(sup)
        assert (ident, pid, kind) == ("Worker", first.pid, "worker")
        first.tell("crash")
        while len(Worker.started) < 2:          # the restart's on_start
            await otpvm.sleep(0.001)
        second = Worker.started[1]
        [(_, pid, _, _)] = await supervisor.which_children(sup)
        assert not first.is_alive()
        assert second.pid == pid != first.pid
        # While the supervisor runs: it ends with main, and its children too.
        assert pykka.ActorRegistry.get_by_class(Worker) == [second]
        assert await second.ask("again", block=False) == ("w", "again")

    vm.run(main)


def test_an_actor_stopped_with_stop_stays_stopped_under_its_supervisor(vm):
    Worker.started = []

    async def main():
        sup = await supervisor.start_link(ActorSup, [pykka.child_spec(Worker, "w")])
        await otpvm.run_blocking(Worker.started[0].stop)
        [(_, pid, _, _)] = await supervisor.which_children(sup)
        return pid

    assert vm.run(main) is None                 # transient: a normal end is not restarted
    assert len(Worker.started) == 1


class Slow(pykka.ThreadingActor):
    def __init__(self, release):
        super().__init__()
        self.release = release

    def on_receive(self, message):
        self.release.wait(T)
        return message


def test_asks_pending_when_a_supervisor_kills_the_actor_get_actordeaderror(vm, caplog):
    release = threading.Event()

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(ActorSup, [pykka.child_spec(Slow, release,
                                                                      shutdown="brutal_kill")])
        [ref] = pykka.ActorRegistry.get_by_class(Slow)
        busy = ref.ask("busy", block=False)
        pending = [ref.ask(i, block=False) for i in range(3)]
        await supervisor.terminate_child(sup, "Slow")
        # Its thread is still in the handler: an ask now is answered at once,
        # and once only (not again when the handler returns and the actor's
        # end answers what it had).
        late = ref.ask("late", block=False)
        with pytest.raises(pykka.ActorDeadError):
            await late
        release.set()
        return ref, busy, pending + [late]

    with caplog.at_level(logging.ERROR):
        ref, busy, pending = vm.run(main)
    for future in pending:
        with pytest.raises(pykka.ActorDeadError, match="stopped before handling"):
            future.get(timeout=T)
    assert not ref.is_alive()
    assert pykka.ActorRegistry.get_by_class(Slow) == []
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("after", timeout=T)
    assert [r.getMessage() for r in caplog.records] == []


class Forwarder(pykka.ThreadingActor):
    def __init__(self, other):
        super().__init__()
        self.other = other

    async def forward(self, n):
        total = []
        for i in range(n):
            total.append(await self.other.ask(i, block=False))
        return total

    async def wait_for(self, future):
        return await future


def test_an_async_handler_awaits_futures_without_holding_its_thread(vm):
    echo = Echo.start()
    forwarder = Forwarder.start(echo)
    assert forwarder.proxy().forward(50).get(timeout=T) == list(range(50))
    # A future set by a plain thread much later: on one scheduler thread,
    # the other actor answers meanwhile, and no thread was handed over.
    later = pykka.ThreadingFuture()
    waiting = forwarder.proxy().wait_for(later)
    assert [echo.ask(i, timeout=T) for i in range(20)] == list(range(20))
    later.set("done")
    assert waiting.get(timeout=T) == "done"
    assert vm.rescues == 0


class Sleeper(pykka.ThreadingActor):
    def on_receive(self, message):
        time.sleep(0.2)             # blocks, as threaded actors may
        return message


def test_a_blocking_handler_does_not_hold_the_others_and_is_not_reported(vm, caplog):
    sleeper, echo = Sleeper.start(), Echo.start()
    with caplog.at_level(logging.WARNING, logger="otpvm"):
        slow = sleeper.ask("slow", block=False)
        started = time.monotonic()
        assert [echo.ask(i, timeout=T) for i in range(20)] == list(range(20))
        others_took = time.monotonic() - started
        assert slow.get(timeout=T) == "slow"
    assert others_took < 0.15                   # they did not wait for the sleep
    assert vm.long_schedules == 0
    assert [r for r in caplog.records if "long_schedule" in r.getMessage()] == []


def test_messages_travel_by_reference_as_in_pykka(vm):
    lock = threading.Lock()                     # cannot be copied or pickled
    assert Echo.start().ask(lock, timeout=T) is lock


def test_child_spec_checks_its_class():
    with pytest.raises(TypeError, match="subclass of otpvm.pykka.ThreadingActor"):
        pykka.child_spec(object)


def test_benchmark_runs_quick():
    """benchmarks/pykka_bench.py end to end, small sizes: nothing timed,
    only that every row is there for both runtimes."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "pykka_bench.py"
    out = subprocess.run([sys.executable, str(bench), "--quick", "--runs", "1"],
                         capture_output=True, text=True, timeout=100, check=True).stdout
    rows = [line.split(" | ") for line in out.splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert len(rows) == 9
    assert all(row[2].strip() not in ("", "n/a") for row in rows)   # otpvm: every figure
    assert sum(row[3].strip() == "n/a" for row in rows) == 1        # pykka: no async handler
