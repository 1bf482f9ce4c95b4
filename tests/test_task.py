"""otpvm.task: Elixir's Task on otpvm processes."""

import pytest

import otpvm
from otpvm import ANY, Down, Exit, receive, send, task
from otpvm.task import Task, TaskExit, TaskOwnerError


def run(main, *args, schedulers=1):
    return otpvm.run(main, *args, schedulers=schedulers)


def queue_len():
    return otpvm.process_info(otpvm.self())["message_queue_len"]


def square(x):
    return x * x


async def slow_square(x):
    await otpvm.sleep(0.001)
    return x * x


async def wait_for(tag):
    """Returns what the test sends it as (tag, value)."""
    _, value = await receive((tag, ANY))
    return value


def crash(msg):
    raise ValueError(msg)


@pytest.mark.parametrize("schedulers", [1, 4])
def test_async_and_await_plain_and_async_functions(schedulers):
    async def main():
        t1 = task.async_(square, 7)
        t2 = task.async_(slow_square, 8)
        info = otpvm.process_info(otpvm.self())
        linked = t1.pid in info["links"] and t2.pid in info["links"]
        monitored = t1.pid in info["monitors"] and t2.pid in info["monitors"]
        results = (await task.await_(t2), await task.await_(t1))
        return t1, linked, monitored, results, queue_len()

    t1, linked, monitored, results, left = run(main, schedulers=schedulers)
    assert isinstance(t1, Task)
    assert linked and monitored
    assert results == (64, 49)
    assert left == 0


def test_result_is_tagged_with_the_ref_and_the_down_is_flushed():
    async def main():
        t = task.async_(square, 3)
        ref = otpvm.monitor(t.pid)
        await receive(Down(ref, ANY, ANY), timeout=5)      # task done: result and Down wait
        waiting = queue_len()
        value = await task.await_(t)
        return t.owner == otpvm.self(), waiting, value, queue_len(), \
            otpvm.process_info(otpvm.self())["monitors"]

    owned, waiting, value, left, monitors = run(main)
    assert owned
    assert waiting == 2                 # the result and the task monitor's Down
    assert value == 9
    assert left == 0
    assert monitors == []


def test_a_crash_takes_the_owner_down_through_the_link():
    async def owner(parent):
        t = task.async_(crash, "bad")
        await task.await_(t)
        send(parent, "unreachable")

    async def main():
        pid, ref = otpvm.spawn_monitor(owner, otpvm.self())
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return down.reason, queue_len()

    reason, left = run(main)
    assert isinstance(reason, ValueError) and str(reason) == "bad"
    assert left == 0


def test_a_trapping_owner_gets_task_exit_with_the_reason():
    async def main():
        otpvm.process_flag("trap_exit", True)
        t = task.async_(crash, "bad")
        with pytest.raises(TaskExit) as info:
            await task.await_(t)
        exit_msg = await receive(Exit(t.pid, ANY), timeout=5)   # as in Elixir
        killed = task.async_(wait_for, "never")
        otpvm.exit(killed.pid, "kill")
        with pytest.raises(TaskExit) as killed_info:
            await task.await_(killed)
        await receive(Exit(killed.pid, ANY), timeout=5)
        return info.value, exit_msg, killed_info.value.reason, queue_len()

    exc, exit_msg, killed_reason, left = run(main)
    assert isinstance(exc.reason, ValueError)
    assert exc.__cause__ is exc.reason
    assert "exited with" in str(exc)
    assert exit_msg.reason is not None and isinstance(exit_msg.reason, ValueError)
    assert killed_reason == "killed"
    assert left == 0


def test_await_timeout_leaves_the_task_running_and_awaitable():
    async def main():
        t = task.async_(wait_for, "go")
        with pytest.raises(TimeoutError):
            await task.await_(t, timeout=0.01)
        alive = otpvm.is_alive(t.pid)
        send(t.pid, ("go", "late"))
        return alive, await task.await_(t), queue_len()

    assert run(main) == (True, "late", 0)


def test_yield_returns_default_on_timeout_then_the_result():
    async def main():
        t = task.async_(wait_for, "go")
        first = await task.yield_(t, 0.01)
        marker = object()
        second = await task.yield_(t, 0, default=marker) is marker
        send(t.pid, ("go", None))
        third = await task.yield_(t, 5, default=marker)
        return first, second, third, queue_len()

    assert run(main) == (None, True, None, 0)


@pytest.mark.parametrize("schedulers", [1, 4])
def test_await_many_returns_results_in_order(schedulers):
    async def main():
        tasks = [task.async_(slow_square if i % 2 else square, i) for i in range(20)]
        results = await task.await_many(reversed(tasks))
        return results, await task.await_many([]), queue_len()

    results, empty, left = run(main, schedulers=schedulers)
    assert results == [i * i for i in reversed(range(20))]
    assert empty == []
    assert left == 0


def test_await_many_times_out_overall_and_reports_a_crash():
    async def main():
        otpvm.process_flag("trap_exit", True)
        done = task.async_(square, 2)
        hang = task.async_(wait_for, "go")
        with pytest.raises(TimeoutError):
            await task.await_many([done, hang], timeout=0.02)
        send(hang.pid, ("go", 3))
        assert await task.await_(hang) == 3
        ok = task.async_(wait_for, "go")
        bad = task.async_(crash, "many")
        with pytest.raises(TaskExit) as info:
            await task.await_many([ok, bad], timeout=5)   # the crash, not the wait on ok
        return info.value.task == bad, otpvm.is_alive(ok.pid), await task.shutdown(ok)

    assert run(main) == (True, True, None)


def test_shutdown_kills_and_returns_the_result_if_it_arrived():
    async def main():
        running = task.async_(wait_for, "never")
        stopped = await task.shutdown(running)
        alive = otpvm.is_alive(running.pid)
        finished = task.async_(square, 5)
        ref = otpvm.monitor(finished.pid)
        await receive(Down(ref, ANY, ANY), timeout=5)
        collected = await task.shutdown(finished)
        awaited = task.async_(square, 6)
        await task.await_(awaited)
        again = await task.shutdown(awaited)
        return stopped, alive, collected, again, queue_len(), \
            otpvm.process_info(otpvm.self())["links"]

    assert run(main) == (None, False, 25, None, 0, [])


def test_shutdown_with_a_grace_period():
    async def stubborn():
        otpvm.process_flag("trap_exit", True)
        await receive("never")

    async def main():
        polite = task.async_(wait_for, "never")
        first = await task.shutdown(polite, timeout=5)
        hard = task.async_(stubborn)
        await otpvm.sleep(0.001)
        second = await task.shutdown(hard, timeout=0.01)
        return first, second, otpvm.is_alive(hard.pid), queue_len()

    assert run(main) == (None, None, False, 0)


def test_shutdown_of_a_crashed_task_raises_and_flushes_the_exit():
    async def main():
        otpvm.process_flag("trap_exit", True)
        t = task.async_(crash, "early")
        ref = otpvm.monitor(t.pid)
        await receive(Down(ref, ANY, ANY), timeout=5)
        with pytest.raises(TaskExit) as info:
            await task.shutdown(t)
        return info.value.reason, queue_len()

    reason, left = run(main)
    assert isinstance(reason, ValueError)
    assert left == 0


def test_only_the_owner_may_await():
    async def other(t, parent):
        outcomes = []
        for call in (task.await_(t), task.yield_(t, 0), task.await_many([t]),
                     task.shutdown(t)):
            try:
                await call
            except TaskOwnerError as exc:
                outcomes.append(str(exc))
        send(parent, ("outcomes", outcomes))

    async def main():
        t = task.async_(wait_for, "go")
        otpvm.spawn(other, t, otpvm.self())
        _, outcomes = await receive(("outcomes", ANY), timeout=5)
        send(t.pid, ("go", "mine"))
        with pytest.raises(TypeError):
            await task.await_("not a task")
        return outcomes, await task.await_(t)

    outcomes, value = run(main)
    assert len(outcomes) == 4 and all("cannot" in o for o in outcomes)
    assert value == "mine"


def test_a_task_dies_with_its_owner():
    async def owner(parent):
        t = task.async_(wait_for, "never")
        send(parent, ("task", t.pid))
        await receive("never")

    async def main():
        pid = otpvm.spawn(owner, otpvm.self())
        _, tpid = await receive(("task", ANY), timeout=5)
        ref = otpvm.monitor(tpid)
        otpvm.exit(pid, "boom")
        return (await receive(Down(ref, ANY, ANY), timeout=5)).reason

    assert run(main) == "boom"


async def echo_once(parent):
    send(parent, await receive())


def test_start_runs_detached():
    async def main():
        pid = task.start(echo_once, otpvm.self())
        ref = otpvm.monitor(pid)
        send(pid, "hello")
        msg = await receive("hello", timeout=5)
        down = await receive(Down(ref, ANY, ANY), timeout=5)
        return msg, down.reason, otpvm.process_info(otpvm.self())["links"]

    assert run(main) == ("hello", "normal", [])


def test_a_task_that_exits_normally_without_a_result():
    async def quits():
        otpvm.exit("normal")

    async def main():
        t = task.async_(quits)
        with pytest.raises(TaskExit) as info:
            await task.await_(t)
        return info.value.reason, queue_len()

    assert run(main) == ("normal", 0)



def test_task_supervisor_runs_unlinked_tasks_and_survives_their_crashes():
    async def ok(x):
        return x * 2

    async def bad():
        raise ValueError("task failed")

    async def main():
        sup = await task.supervisor_start_link()
        good = await task.async_nolink(sup, ok, 21)
        failing = await task.async_nolink(sup, bad)
        result = await task.await_(good)
        with pytest.raises(task.TaskExit) as info:
            await task.await_(failing)
        fire = await task.start_child(sup, ok, 1)
        ref = otpvm.monitor(fire)
        await otpvm.receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        counts = await otpvm.supervisor.count_children(sup)
        return result, type(info.value.reason).__name__, otpvm.is_alive(sup), counts["active"]

    assert otpvm.run(main) == (42, "ValueError", True, 0)
