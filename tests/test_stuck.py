"""Processes stuck in code that never awaits: however many there are, the
VM keeps running the others, and each can be killed like any other process
(see "killing a stuck process" in otpvm/_core/process.pxi)."""

import functools
import gc
import logging
import threading
import time

import pytest
from test_scheduler import echo, round_trips

import otpvm
from otpvm import ANY, Down, Exit, net, receive, self, send, supervisor
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

PATIENCE = 30           # seconds any wait may take on a loaded machine

# The interrupt that stops a killed process's code can land in any Python
# code its thread runs, a finaliser or weakref callback of unrelated garbage
# included (the garbage collector runs them in whichever thread allocates),
# where Python reports it as an ignored exception.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture(autouse=True)
def quiet_long_schedules():
    """The spinners are reported as long schedules: true, but not the point here."""
    log = logging.getLogger("otpvm")
    level = log.level
    log.setLevel(logging.ERROR)
    yield
    log.setLevel(level)


def spin(started=None):
    if started is not None:
        started.set()
    while True:
        pass


async def start_spinner():
    return otpvm.spawn_link(spin)


def spin_through_kills(caught):
    """Swallows every exception, as careless code does, and goes on (until
    it has swallowed three, so that its thread does not spin for the rest
    of the test session)."""
    while len(caught) < 3:
        try:
            while True:
                pass
        except BaseException:
            caught.append(1)


def wait_until(condition, what):
    deadline = time.monotonic() + PATIENCE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


async def kill_all(pids):
    """Kills pids; returns the reasons in their Downs (in pid order)."""
    refs = [otpvm.monitor(pid) for pid in pids]
    for pid in pids:
        otpvm.exit(pid, "kill")
    return [(await receive(Down(ref, ANY, ANY), timeout=PATIENCE)).reason for ref in refs]


@pytest.mark.parametrize("schedulers", [1, 2])
def test_eight_spinners_neither_freeze_the_vm_nor_survive_a_kill(schedulers):
    vm = otpvm.VM(schedulers)
    baseline = vm.scheduler_threads
    stuck = []

    async def main():
        started = [threading.Event() for _ in range(8)]
        pids = [otpvm.spawn(functools.partial(spin, e)) for e in started]
        for e in started:                   # every one runs its loop at once
            assert await otpvm.run_blocking(e.wait, PATIENCE)
        stuck.append(vm.scheduler_threads)
        await otpvm.sleep(0.05)             # timers still fire
        await round_trips(otpvm.spawn(echo), 20)
        reasons = await kill_all(pids)
        return reasons, [otpvm.is_alive(p) for p in pids], set(pids) & set(otpvm.processes())

    with vm:
        reasons, alive, left = vm.run(main)
        assert reasons == ["killed"] * 8
        assert alive == [False] * 8 and left == set()
        assert stuck[0] >= 8 + 1           # a thread in each spinner, and main's
        wait_until(lambda: vm.scheduler_threads == baseline, "the threads to retire")


def test_a_killed_spinner_that_swallows_the_exception_is_interrupted_until_it_stops():
    # Each interrupt can land in whatever Python code the thread runs, a
    # finaliser of some garbage the collector happens to run there included
    # (see pytestmark): with the collector off, this test sees only its own.
    gc.collect()
    gc.disable()
    caught = []

    async def main():
        pid = otpvm.spawn(functools.partial(spin_through_kills, caught))
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")
        assert await kill_all([pid]) == ["killed"]
        return pid

    try:
        with otpvm.VM() as vm:
            baseline = vm.scheduler_threads
            vm.run(main)
            wait_until(lambda: len(caught) == 3, "the interrupt to come again")
            wait_until(lambda: vm.scheduler_threads == baseline, "its thread to come back")
    finally:
        gc.enable()


def test_a_killed_process_runs_its_finally_blocks_but_sends_nothing_more():
    events = []

    def body(test):
        try:
            send(test, "looping")
            while True:
                pass
        finally:
            events.append("finally")
            try:
                send(test, "from the grave")
            except otpvm.ProcessExit as exc:
                events.append(exc.reason)

    async def main():
        pid = otpvm.spawn(body, self())
        await receive("looping", timeout=PATIENCE)
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")
        assert await kill_all([pid]) == ["killed"]
        await otpvm.run_blocking(wait_until, lambda: len(events) == 2, "the finally block")
        with pytest.raises(TimeoutError):
            await receive(ANY, timeout=0.2)

    with otpvm.VM() as vm:
        vm.run(main)
    assert events == ["finally", "killed"]


def test_links_of_a_stuck_process_get_its_exit_and_its_sockets_close():
    async def main():
        otpvm.process_flag("trap_exit", True)
        started = threading.Event()
        pid = otpvm.spawn_link(functools.partial(spin, started))
        lsock = net.tcp.listen(0, host="127.0.0.1")
        await net.controlling_process(lsock, pid)
        await otpvm.run_blocking(started.wait, PATIENCE)
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")
        otpvm.exit(pid, "kill")
        exit_msg = await receive(Exit(pid, ANY), timeout=PATIENCE)
        return exit_msg.reason, vm.open_sockets

    with otpvm.VM() as vm:
        assert vm.run(main) == ("killed", 0)


def test_a_stuck_process_dies_of_a_linked_crash():
    # A link to a stuck process must be made before it is stuck (a link is a
    # signal the process has to look at): spawn_link makes it at once.
    async def main():
        started = threading.Event()

        async def parent():
            otpvm.spawn_link(functools.partial(spin, started))
            await receive("go")
            raise RuntimeError("boom")

        p = otpvm.spawn(parent)
        await otpvm.run_blocking(started.wait, PATIENCE)
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")
        stuck = [q for q in otpvm.processes() if q not in (self(), p)][0]
        ref = otpvm.monitor(stuck)
        send(p, "go")
        return (await receive(Down(ref, stuck, ANY), timeout=PATIENCE)).reason

    logging.getLogger("otpvm").setLevel(logging.CRITICAL)   # the crash report
    with otpvm.VM() as vm:
        reason = vm.run(main)
    assert isinstance(reason, RuntimeError) and str(reason) == "boom"


def test_a_kill_sent_before_the_process_is_found_stuck_still_ends_it():
    async def main():
        started = threading.Event()
        pid = otpvm.spawn(functools.partial(spin, started))
        ref = otpvm.monitor(pid)
        await otpvm.run_blocking(started.wait, PATIENCE)
        otpvm.exit(pid, "kill")             # before the monitor's first look, most likely
        return (await receive(Down(ref, pid, ANY), timeout=PATIENCE)).reason

    with otpvm.VM() as vm:
        assert vm.run(main) == "killed"


@pytest.mark.parametrize("shutdown", ["brutal_kill", 0.05])
def test_a_supervisor_terminates_a_stuck_child(shutdown):
    class Sup(Supervisor):
        def init(self, _):
            return SupFlags(), [ChildSpec("spinner", (start_spinner, ()), restart="temporary",
                                          shutdown=shutdown)]

    async def main():
        sup = await supervisor.start_link(Sup, None)
        child = (await supervisor.which_children(sup))[0][1]
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")
        await supervisor.terminate_child(sup, "spinner")
        return otpvm.is_alive(child), await supervisor.which_children(sup)

    with otpvm.VM() as vm:
        alive, children = vm.run(main)
    assert alive is False and children == []        # a temporary child's spec goes too


def test_stopping_a_vm_with_spinners_kills_them_without_waiting():
    vm = otpvm.VM()

    async def main():
        started = [threading.Event() for _ in range(3)]
        for e in started:
            otpvm.spawn(functools.partial(spin, e))
        for e in started:
            await otpvm.run_blocking(e.wait, PATIENCE)

    vm.run(main)
    wait_until(lambda: vm.long_schedules >= 3, "the reports")
    t = time.monotonic()
    vm.stop(timeout=PATIENCE)
    assert time.monotonic() - t < PATIENCE / 2
    assert vm.processes() == []


def test_a_process_blocked_in_a_call_is_dead_at_once_and_its_thread_comes_back_after(caplog):
    release = threading.Event()

    def blocked(test):
        send(test, "blocking")
        release.wait(PATIENCE)              # a lock wait: no kill interrupts it

    async def main():
        pids = []
        for _ in range(2):          # the second needs a thread beyond the spare
            pids.append(otpvm.spawn(blocked, self()))
            await receive("blocking", timeout=PATIENCE)
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 2, "the reports")
        reasons = await kill_all(pids)
        return reasons, [otpvm.is_alive(pid) for pid in pids]

    with otpvm.VM(1, spare_threads=1) as vm:
        baseline = vm.scheduler_threads
        assert vm.run(main) == (["killed", "killed"], [False, False])
        assert vm.scheduler_threads > baseline
        release.set()
        wait_until(lambda: vm.scheduler_threads == baseline, "its thread to come back")


def test_stop_says_which_threads_it_abandons(caplog):
    release = threading.Event()

    def blocked(test):
        send(test, "blocking")
        release.wait(PATIENCE)

    async def main():
        otpvm.spawn(blocked, self())
        await receive("blocking", timeout=PATIENCE)
        await otpvm.run_blocking(wait_until, lambda: vm.long_schedules >= 1, "the report")

    vm = otpvm.VM()
    try:
        vm.run(main)
        with caplog.at_level(logging.WARNING, logger="otpvm"):
            vm.stop(timeout=0.2)
        lines = [r.getMessage() for r in caplog.records if "still run the code" in r.getMessage()]
        assert len(lines) == 1
        assert lines[0].startswith("the VM stopped, but 1 scheduler thread(s) still run the "
                                   "code of killed processes (<")
    finally:
        release.set()


def test_more_stuck_processes_than_max_spare_threads_wait_their_turn_and_say_so():
    records = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    handler = Collect(logging.WARNING)
    log = logging.getLogger("otpvm")
    log.addHandler(handler)
    log.setLevel(logging.WARNING)
    release = threading.Event()
    done = []

    def blocked():
        release.wait(PATIENCE)
        done.append(1)

    try:
        with otpvm.VM(1, spare_threads=1, max_spare_threads=1) as vm:
            # The run queue's thread and the one spare get stuck; the third
            # waits in the run queue with no thread left to run it.
            for _ in range(3):
                vm.spawn(blocked)
            wait_until(lambda: any("every spare" in r for r in records), "the report")
            assert done == []
            release.set()
            wait_until(lambda: len(done) == 3, "all three to end")
    finally:
        release.set()
        log.removeHandler(handler)
    assert any("every spare scheduler thread is in use, so the process queued behind it "
               "waits (VM(max_spare_threads=...) sets how many there may be)" in r
               for r in records)


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "8", 4097])
def test_max_spare_threads_is_checked(bad):
    with pytest.raises(ValueError, match="max_spare_threads must be an int from spare_threads"):
        otpvm.VM(1, spare_threads=1, max_spare_threads=bad)
    with pytest.raises(ValueError, match=r"from spare_threads \(4\)"):
        otpvm.VM(1, spare_threads=4, max_spare_threads=3)
