"""otpvm.futures.Executor: concurrent.futures semantics, jobs as processes."""

import concurrent.futures as cf
import functools
import logging
import threading
import time

import pytest

import otpvm
from otpvm.futures import BrokenExecutor, Executor, Future

T = 30          # generous timeout for anything that should take milliseconds


def add(a, b=0):
    return a + b


async def async_add(a, b=0):
    await otpvm.sleep(0)
    return a + b


def fail(exc):
    raise exc


async def async_fail(exc):
    await otpvm.sleep(0)
    raise exc


async def receive(pattern):
    # otpvm.receive itself is a plain function: a job made of it would be
    # called on a blocking thread, outside any process.
    return await otpvm.receive(pattern)


def wait_until(cond, what):
    """Polls a condition the test cannot be told of (a future's state)."""
    deadline = time.monotonic() + T
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# The default VM lives until exit: stopped after this module (conftest.py).
pytestmark = pytest.mark.usefixtures("stop_default_vm")


@pytest.fixture
def ex():
    with Executor(max_workers=4) as executor:
        yield executor


def test_results_of_sync_and_async_jobs(ex):
    futs = [ex.submit(add, 1, b=2), ex.submit(async_add, 3, b=4)]
    assert [f.result(T) for f in futs] == [3, 7]
    assert all(isinstance(f, cf.Future) and isinstance(f, Future) for f in futs)
    assert all(isinstance(f.pid, otpvm.Pid) for f in futs)
    assert futs[0].pid != futs[1].pid                # one process per job


def test_a_callable_returning_a_coroutine_is_awaited(ex):
    assert ex.submit(functools.partial(async_add, 1), 2).result(T) == 3
    assert ex.submit(lambda: async_add(5, 6)).result(T) == 11


def test_exceptions_reach_the_future_and_are_not_logged_as_crashes(ex, caplog):
    err1, err2 = ValueError("sync"), KeyError("async")
    with caplog.at_level(logging.ERROR, logger="otpvm"):
        f1, f2 = ex.submit(fail, err1), ex.submit(async_fail, err2)
        assert f1.exception(T) is err1
        assert f2.exception(T) is err2
        with pytest.raises(ValueError, match="sync"):
            f1.result()
        assert ex.submit(add, 1, 1).result(T) == 2   # the executor carries on
    assert not [r for r in caplog.records if r.name == "otpvm"]


def test_arguments_and_results_are_shared_not_copied(ex):
    box = [threading.Lock()]                         # could not be copied
    assert ex.submit(lambda b: b, box).result(T) is box
    assert ex.submit(async_add, [1], [2]).result(T) == [1, 2]


def test_cancel_before_start():
    started, release, ran = threading.Event(), threading.Event(), []
    with Executor(max_workers=1) as ex:
        first = ex.submit(lambda: (started.set(), release.wait(T)))
        second = ex.submit(ran.append, "second ran")
        assert started.wait(T)
        assert first.running() and not first.cancel()
        assert second.cancel() and second.cancelled()
        assert second.pid is None                    # never got a process
        release.set()
        assert first.result(T) == (None, True)
    assert ran == []
    with pytest.raises(cf.CancelledError):
        second.result(0)


def test_max_workers_bounds_running_jobs_and_threads():
    release = threading.Event()
    with Executor(max_workers=2) as ex:
        futs = [ex.submit(release.wait, T) for _ in range(5)]
        wait_until(lambda: sum(f.running() for f in futs) == 2, "two running jobs")
        assert [f.running() for f in futs[2:]] == [False, False, False]
        assert len(ex._threads) == 2
        release.set()
        assert [f.result(T) for f in futs] == [True] * 5
        assert len(ex._threads) <= 2


def test_shutdown_waits_for_jobs():
    release, results = threading.Event(), []

    def job():
        release.wait(T)
        results.append("done")

    ex = Executor(max_workers=2)
    fut = ex.submit(job)
    wait_until(fut.running, "the job to run")
    threading.Timer(0.05, release.set).start()
    ex.shutdown(wait=True)
    assert results == ["done"] and fut.done()
    assert not any(t.is_alive() for t in ex._threads)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(add, 1)


def test_shutdown_without_wait_still_runs_submitted_jobs():
    release = threading.Event()
    ex = Executor(max_workers=1)
    futs = [ex.submit(release.wait, T), ex.submit(add, 1, 2)]
    ex.shutdown(wait=False)
    release.set()
    assert [f.result(T) for f in futs] == [True, 3]


def test_shutdown_cancel_futures_cancels_the_waiting_jobs():
    started, release = threading.Event(), threading.Event()
    ex = Executor(max_workers=1)
    first = ex.submit(lambda: (started.set(), release.wait(T))[1])
    assert started.wait(T)
    rest = [ex.submit(add, i) for i in range(10)]
    threading.Timer(0.05, release.set).start()
    ex.shutdown(wait=True, cancel_futures=True)
    assert first.result(0) is True
    assert all(f.cancelled() for f in rest)


def test_initializer_runs_on_each_blocking_thread_before_any_job():
    local, inits = threading.local(), []

    def init(tag):
        local.tag = tag
        inits.append(threading.current_thread())

    release = threading.Event()
    with Executor(max_workers=3, initializer=init, initargs=("ready",)) as ex:
        futs = [ex.submit(lambda: (release.wait(T), local.tag)[1]) for _ in range(3)]
        wait_until(lambda: all(f.running() for f in futs), "three running jobs")
        release.set()
        assert [f.result(T) for f in futs] == ["ready"] * 3
        assert ex.submit(async_add, 1, 1).result(T) == 2
        assert len(set(inits)) == len(inits) == 3


def test_failing_initializer_breaks_the_executor(caplog):
    def init():
        raise ValueError("no init")

    with caplog.at_level(logging.CRITICAL, logger="concurrent.futures"):
        ex = Executor(max_workers=2, initializer=init)
        futs = [ex.submit(add, 1), ex.submit(async_add, 2)]
        for f in futs:
            with pytest.raises(BrokenExecutor):
                f.result(T)
        wait_until(lambda: ex._broken, "the executor to break")
        with pytest.raises(cf.BrokenExecutor):
            ex.submit(add, 1)
        ex.shutdown(wait=True)
    assert any("Exception in initializer" in r.getMessage() and r.exc_info
               and "no init" in str(r.exc_info[1]) for r in caplog.records)


def test_map_with_timeout_and_order(ex):
    assert list(ex.map(add, range(5), range(5))) == [0, 2, 4, 6, 8]
    assert list(ex.map(async_add, range(5))) == list(range(5))
    release = threading.Event()
    results = ex.map(lambda x: x if x < 2 else release.wait(T), range(3), timeout=0.2)
    assert next(results) == 0 and next(results) == 1
    with pytest.raises(cf.TimeoutError):
        next(results)
    release.set()


def test_map_raises_the_first_failing_call(ex):
    results = ex.map(divmod, [1, 1, 1], [2, 0, 5])
    assert next(results) == (0, 1)
    with pytest.raises(ZeroDivisionError):
        next(results)


def test_max_workers_must_be_positive():
    for n in (0, -1):
        with pytest.raises(ValueError, match="max_workers must be greater than 0"):
            Executor(max_workers=n)


def test_async_jobs_run_at_once_without_threads():
    # max_workers=None: async jobs are not bounded; each holds no thread
    # while it waits, so all of them wait at once on one VM's threads.
    n = 1000
    with Executor() as ex:
        before = threading.active_count()
        futs = [ex.submit(receive, "go") for _ in range(n)]
        wait_until(lambda: all(f.running() for f in futs), f"{n} running async jobs")
        assert threading.active_count() == before
        vm = ex._vm
        for f in futs:
            vm.send(f.pid, "go")
        assert [f.result(T) for f in futs] == ["go"] * n


def test_ten_thousand_async_jobs_few_threads():
    async def job(i):
        await otpvm.sleep(0.001)
        return i

    with Executor() as ex:
        before = threading.active_count()
        futs = [ex.submit(job, i) for i in range(10_000)]
        peak = threading.active_count()
        assert sum(f.result(T) for f in futs) == sum(range(10_000))
    assert peak == before <= 16


def test_killing_a_jobs_process_fails_its_future(ex):
    fut = ex.submit(receive, "never")
    wait_until(fut.running, "the job to run")

    async def killer(pid):
        otpvm.exit(pid, "kill")

    ex._vm.run(killer, fut.pid)
    exc = fut.exception(T)
    assert isinstance(exc, otpvm.ProcessExit) and exc.reason == "killed"


def test_own_vm_and_stopping_it_fails_running_jobs():
    with otpvm.VM() as vm:
        ex = Executor(vm=vm)
        assert ex._vm is vm
        fut = ex.submit(receive, "never")
        wait_until(fut.running, "the job to run")
    assert isinstance(fut.exception(T), otpvm.ProcessExit)
    with pytest.raises(BrokenExecutor):
        ex.submit(add, 1).result(T)
    ex.shutdown()


def test_a_sync_call_outlives_its_stopped_vm(monkeypatch):
    # The job's process is killed with its VM; the call, already on its
    # blocking thread, still completes the future, and the thread ends cleanly.
    release, errors = threading.Event(), []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args))
    with otpvm.VM() as vm:
        ex = Executor(vm=vm)
        fut = ex.submit(release.wait, T)
        wait_until(fut.running, "the job to run")
    release.set()
    assert fut.result(T) is True
    ex.shutdown(wait=True)
    assert errors == []


def test_default_vm_is_shared_and_replaced_once_stopped():
    vm = otpvm.default_vm()
    assert otpvm.default_vm() is vm and not vm.stopped
    assert Executor()._vm is vm
    vm.stop()
    fresh = otpvm.default_vm()
    assert fresh is not vm and not fresh.stopped
    with Executor() as ex:
        assert ex.submit(async_add, 1, 2).result(T) == 3


def test_benchmark_runs_quick():
    """benchmarks/futures_bench.py end to end, small sizes: nothing timed,
    only that every row is there."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "benchmarks" / "futures_bench.py"
    out = subprocess.run([sys.executable, str(bench), "--quick", "--runs", "1"],
                         capture_output=True, text=True, timeout=100, check=True).stdout
    rows = [line for line in out.splitlines() if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0][2:] for r in rows[1:]] == [
        "sync", "sync", "async", "async", "async_sleep", "async_sleep"]
