"""otpvm.aio.new_process_task_loop: asyncio tasks as otpvm processes.

CPython's per-loop tests run on this loop too (tests/peers/
test_cpython_asyncio.py).  Here: each task is a process (its pid, its own
mailbox, its end seen by links, monitors and supervisors), asyncio's
one-step-at-a-time promise holds for steps that await, and a step that spins
no longer holds up the others.  The timing figure itself (how late a 1 ms
ticker is) is measured by benchmarks/aio_bench.py; here it is only checked
to be far from the 100 ms a spinning task costs on asyncio's own loop."""

import asyncio
import logging
import time

import pytest

import otpvm
import otpvm.aio
from otpvm import ANY, Down, supervisor
from otpvm.supervisor import Supervisor, SupFlags

T = 10                  # generous: a correct run never waits this long


@pytest.fixture
def vm():
    with otpvm.VM(schedulers=1) as vm:
        yield vm


def run(vm, main):
    with asyncio.Runner(loop_factory=lambda: otpvm.aio.new_process_task_loop(vm)) as runner:
        return runner.run(main())


async def _spin(seconds):
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass


def test_a_step_that_wakes_another_task_while_it_overruns(vm):
    """A step puts 200,000 items in a queue without awaiting, far past
    preempt_after: the first put wakes the consumer's step, which comes to
    wait for the baton after the producer has overrun it (it failed: that
    waiter slept with a negative timeout, a ValueError that ended the task
    and then the loop).  Every item still arrives, in order."""
    async def consume(queue):
        got = []
        while (item := await queue.get()) is not None:
            got.append(item)
        return got

    async def main():
        queue = asyncio.Queue()
        consumer = asyncio.create_task(consume(queue))
        await asyncio.sleep(0)          # the consumer waits on the queue
        for i in range(200_000):
            queue.put_nowait(i)
        queue.put_nowait(None)
        return await asyncio.wait_for(consumer, T)

    assert run(vm, main) == list(range(200_000))


def test_each_task_is_a_process_with_asyncios_task_api(vm):
    async def child():
        await asyncio.sleep(0)
        return otpvm.self(), asyncio.current_task()

    async def main():
        me = asyncio.current_task()
        assert isinstance(me, otpvm.aio.ProcessTask) and otpvm.self() == me.pid
        assert otpvm.self() != otpvm.aio.loop_pid()
        task = asyncio.get_running_loop().create_task(child(), name="child")
        assert task.get_name() == "child" and otpvm.is_alive(task.pid)
        assert task in asyncio.all_tasks()
        pid, current = await task
        return pid, current, task

    pid, current, task = run(vm, main)
    assert pid == task.pid and current is task and task.result()[0] == pid


def test_a_spinning_task_no_longer_holds_up_a_1ms_ticker(vm, caplog):
    caplog.set_level(logging.WARNING, logger="otpvm")
    late = []

    async def ticker():
        for _ in range(100):
            start = time.perf_counter()
            await asyncio.sleep(0.001)
            late.append(time.perf_counter() - start - 0.001)

    async def main():
        spinner = asyncio.create_task(_spin(0.1))
        await ticker()
        await spinner
        return spinner

    spinner = run(vm, main)
    assert spinner._otpvm_detached_steps == 1       # its one step lost the baton once
    # On asyncio's own loop one tick would be 100 ms late.
    assert len(late) == 100 and max(late) < 0.05, max(late)
    [report] = [r.getMessage() for r in caplog.records if "long_schedule" in r.getMessage()]
    assert "in _spin: while" in report and "`await asyncio.sleep(0)`" in report


def test_steps_that_await_still_run_one_at_a_time(vm):
    count = [0]

    async def bump():
        for i in range(500):
            seen = count[0]
            for _ in range(20):          # room for another thread to interleave
                pass
            count[0] = seen + 1
            if i % 10 == 0:
                await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(bump() for _ in range(20)))

    run(vm, main)
    assert count[0] == 20 * 500


def test_a_task_that_raises_ends_its_process_with_the_exception(vm):
    async def fail():
        await asyncio.sleep(0)
        raise ValueError("bad input")

    async def main():
        task = asyncio.create_task(fail())
        ref = otpvm.monitor(task.pid)
        with pytest.raises(ValueError, match="bad input"):
            await task
        return await otpvm.aio.receive_message(Down(ref, ANY, ANY), timeout=T)

    down = run(vm, main)
    assert isinstance(down.reason, ValueError) and down.reason.args == ("bad input",)


def test_a_cancelled_task_ends_its_process_as_a_shutdown(vm):
    entered = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            entered.append("finally")

    async def main():
        task = asyncio.create_task(forever())
        ref = otpvm.monitor(task.pid)
        await asyncio.sleep(0.01)
        task.cancel("enough")
        with pytest.raises(asyncio.CancelledError):
            await task
        down = await otpvm.aio.receive_message(Down(ref, ANY, ANY), timeout=T)
        return task, down

    task, down = run(vm, main)
    assert task.cancelled() and down.reason == ("shutdown", "cancelled")
    assert entered == ["finally"]


def test_a_killed_task_process_cancels_the_task_and_closes_its_coroutine(vm):
    entered = []

    async def forever():
        try:
            await asyncio.sleep(3600)
        finally:
            entered.append(asyncio.get_running_loop())

    async def main():
        task = asyncio.create_task(forever())
        await asyncio.sleep(0.01)
        otpvm.exit(task.pid, "kill")
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    task = run(vm, main)
    assert task.cancelled() and not otpvm.is_alive(task.pid)
    assert len(entered) == 1            # closed in the loop's process, the loop running


def test_a_task_that_exits_its_process_is_cancelled_and_the_loop_goes_on(vm):
    async def leave():
        await asyncio.sleep(0)
        otpvm.exit("done here")         # the process ends, the baton is given back

    async def main():
        task = asyncio.create_task(leave())
        ref = otpvm.monitor(task.pid)
        with pytest.raises(asyncio.CancelledError):
            await task
        down = await otpvm.aio.receive_message(Down(ref, ANY, ANY), timeout=T)
        await asyncio.gather(*(asyncio.sleep(0.001) for _ in range(10)))
        return down

    assert run(vm, main).reason == "done here"


def test_a_task_receives_from_its_own_mailbox(vm):
    async def echo():
        sender, msg = await otpvm.aio.receive_message((ANY, ANY), timeout=T)
        otpvm.send(sender, ("echo", msg))

    async def main():
        task = asyncio.create_task(echo())
        otpvm.send(task.pid, (otpvm.self(), "hi"))
        reply = await otpvm.aio.receive_message(("echo", ANY), timeout=T)
        await task
        return reply

    assert run(vm, main) == ("echo", "hi")


class TaskSup(Supervisor):
    def init(self, specs):
        return SupFlags("one_for_one", intensity=5, period=5), specs


def test_a_supervisor_restarts_a_task_that_raised(vm):
    starts = []

    async def worker(tag):
        starts.append((tag, otpvm.self()))
        await asyncio.sleep(0)
        if len(starts) == 1:
            raise RuntimeError("the first run fails")
        await asyncio.sleep(3600)

    async def main():
        loop, me = asyncio.get_running_loop(), otpvm.self()

        async def supervise():          # an otpvm process holding the supervisor
            sup = await supervisor.start_link(
                TaskSup, [otpvm.aio.task_child_spec(loop, worker, "w", id="worker")])
            otpvm.send(me, ("started", sup))
            await otpvm.receive("stop")

        otpvm.spawn(supervise)
        _, sup = await otpvm.aio.receive_message(("started", ANY), timeout=T)
        deadline = time.monotonic() + T
        while len(starts) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        return starts

    starts = run(vm, main)
    assert [tag for tag, _ in starts] == ["w", "w"] and starts[0][1] != starts[1][1]


def test_closing_the_loop_ends_the_processes_of_pending_tasks(vm):
    loop = otpvm.aio.new_process_task_loop(vm)
    task = loop.create_task(asyncio.sleep(3600))
    loop.run_until_complete(asyncio.sleep(0.01))
    pid = task.pid

    async def watch():
        ref = otpvm.monitor(pid)
        return await otpvm.receive(Down(ref, ANY, ANY), timeout=T)

    loop.close()
    assert vm.run(watch).reason in (("shutdown", "cancelled"), "noproc")
    assert task.cancelled()


def test_task_child_spec_wants_a_process_task_loop(vm):
    loop = otpvm.aio.new_event_loop(vm)
    try:
        with pytest.raises(TypeError, match="new_process_task_loop"):
            otpvm.aio.task_child_spec(loop, _spin)
    finally:
        loop.close()
    with pytest.raises(ValueError, match="preempt_after"):
        otpvm.aio.new_process_task_loop(vm, preempt_after=0)
