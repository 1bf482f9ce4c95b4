"""otpvm.aio: asyncio's loop run as an otpvm process (CPython's own per-loop
tests cover asyncio's behaviour: tests/peers/test_cpython_asyncio.py).
Here: how it is selected, and what otpvm adds: asyncio code that sends,
receives, links and monitors, and a loop that holds no scheduler thread
while it waits."""

import asyncio
import concurrent.futures
import os
import signal
import socket
import sys
import threading
import time

import pytest

import otpvm
import otpvm.aio
from otpvm import ANY, Down

T = 10                  # generous: a correct run never waits this long


@pytest.fixture
def vm():
    with otpvm.VM(schedulers=1) as vm:
        yield vm


def run(vm, main):
    with asyncio.Runner(loop_factory=lambda: otpvm.aio.new_event_loop(vm)) as runner:
        return runner.run(main())


def test_the_loop_is_a_process_and_asyncio_runs_on_it(vm):
    async def main():
        assert isinstance(asyncio.get_running_loop(), otpvm.aio.Loop)
        await asyncio.sleep(0.01)
        results = await asyncio.gather(*(asyncio.sleep(0.01, i) for i in range(100)))
        return otpvm.self(), otpvm.aio.loop_pid(), results

    me, pid, results = run(vm, main)
    assert me == pid and results == list(range(100))
    assert not otpvm.is_alive(pid)      # the loop's process ends with run_forever


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_takes_it_as_loop_factory():
    async def main():
        return type(asyncio.get_running_loop())

    assert asyncio.run(main(), loop_factory=otpvm.aio.new_event_loop) is otpvm.aio.Loop
    otpvm.default_vm().stop()


def test_asyncio_code_sends_receives_and_monitors_processes(vm):
    async def echo():
        sender, msg = await otpvm.receive(timeout=T)
        otpvm.send(sender, ("echo", msg))

    async def main():
        pid = otpvm.spawn(echo)
        ref = otpvm.monitor(pid)
        otpvm.send(pid, (otpvm.self(), "hi"))
        reply = await otpvm.aio.receive_message(("echo", ANY), timeout=T)
        down = await otpvm.aio.receive_message(Down(ref, ANY, ANY), timeout=T)
        with pytest.raises(TimeoutError):
            await otpvm.aio.receive_message("never", timeout=0.01)
        # An answered receive leaves no timer behind.
        otpvm.send(otpvm.self(), "now")
        await otpvm.aio.receive_message("now", timeout=60)
        loop = asyncio.get_running_loop()
        assert not [h for h in loop._scheduled if not h.cancelled()]
        assert loop._otpvm_waiters == []
        return reply, down.reason

    assert run(vm, main) == (("echo", "hi"), "normal")


def test_a_message_kept_until_asyncio_code_asks_for_it(vm):
    async def main():
        otpvm.send(otpvm.self(), "first")
        otpvm.send(otpvm.self(), "second")
        await asyncio.sleep(0.01)           # both arrive while nobody waits
        second = await otpvm.aio.receive_message("second", timeout=T)
        first = await otpvm.aio.receive_message(timeout=T)
        return first, second

    assert run(vm, main) == ("first", "second")


def test_the_waiting_loop_holds_no_scheduler_thread(vm):
    """On one scheduler, other processes run while asyncio code waits."""
    async def counter(n):
        for _ in range(n):
            await otpvm.sleep(0.001)
        return n

    async def main():
        pid, ref = otpvm.spawn_monitor(counter, 50)
        await asyncio.sleep(0.2)            # the loop waits in otpvm.receive
        return await otpvm.aio.receive_message(Down(ref, pid, ANY), timeout=T)

    assert run(vm, main).reason == "normal"
    assert vm.rescues == 0 and vm.long_schedules == 0


def test_call_soon_threadsafe_wakes_the_loop(vm):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Timer(0.05, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
        return await asyncio.wait_for(fut, T)

    assert run(vm, main) == "woken"


def test_run_forever_inside_a_process_is_refused(vm):
    async def main():
        loop = otpvm.aio.new_event_loop(vm)
        try:
            with pytest.raises(RuntimeError, match="plain thread"):
                loop.run_forever()
        finally:
            loop.close()

    vm.run(main)


def test_loop_pid_outside_an_otpvm_loop_is_an_error():
    async def main():
        with pytest.raises(RuntimeError, match="otpvm.aio loop"):
            otpvm.aio.loop_pid()

    asyncio.run(main())


def test_a_socket_is_watched_by_its_object_as_by_its_fd(vm):
    """asyncio's add_reader and add_writer take a socket object as well as
    an fd: the second finds the key the first made (get_key by object)."""
    a, b = socket.socketpair()

    async def main():
        loop = asyncio.get_running_loop()
        readable, writable = loop.create_future(), loop.create_future()
        loop.add_reader(a, lambda: readable.done() or readable.set_result(True))
        loop.add_writer(a, lambda: writable.done() or writable.set_result(True))
        key = loop._selector.get_key(a)
        assert key.fd == a.fileno() and key is loop._selector.get_key(a.fileno())
        b.send(b"x")
        await asyncio.wait_for(asyncio.gather(readable, writable), T)
        assert loop.remove_reader(a) and loop.remove_writer(a)

    try:
        run(vm, main)
    finally:
        a.close()
        b.close()


def test_a_socket_closed_while_watched_is_let_go(vm):
    """Code may close a socket a reader still watches (AnyIO's tests close
    one during a receive), with its readiness reported and not yet
    selected.  epoll forgets a closed fd; so does the loop, which goes on,
    and still unregisters it, found by its object, when it closes (that
    failed with ValueError: its fileno() is -1)."""
    a, b = socket.socketpair()

    async def main():
        loop = asyncio.get_running_loop()
        selector = loop._selector
        loop.add_reader(a, lambda: None)
        b.send(b"x")
        assert selector.has_ready()         # loopback: readable at once
        a.close()
        assert not selector.has_ready()     # epoll forgot it
        await asyncio.sleep(0.01)           # iterations go on
        assert selector.get_key(a).fd >= 0  # still registered, found by its object
        assert loop.remove_reader(a)

    try:
        run(vm, main)                       # the runner closes the loop
    finally:
        b.close()


def test_the_loop_wakes_for_io_when_it_waited(vm):
    """Nothing ready: the loop's process waits in otpvm.receive, its
    selector's epoll fd armed in otpvm's poller.  A readiness that comes
    from another thread later wakes it (each time: the arm is one-shot and
    made again at each wait)."""
    a, b = socket.socketpair()

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        for i in range(3):
            readable = loop.create_future()
            loop.add_reader(a, lambda f=readable: f.done() or f.set_result(a.recv(1)))
            timer = threading.Timer(0.05, b.send, (b"%d" % i,))
            timer.start()
            got.append(await asyncio.wait_for(readable, T))
            loop.remove_reader(a)
            timer.join()
        return got

    try:
        assert run(vm, main) == [b"0", b"1", b"2"]
    finally:
        a.close()
        b.close()


def test_a_busy_loop_yields_its_thread_between_callbacks(vm):
    """asyncio code that keeps the loop busy with short callbacks (here
    0.1 s of them) is many slices, not one: each callback is charged to the
    loop's process as a reduction, and the process yields its scheduler
    thread when its slice is over.  Before, it held the thread until its
    next wait: a long_schedule was reported, and a process beside it ran
    only once the monitor handed their run queue to a spare thread."""
    async def ticker(parent):
        for _ in range(20):
            await otpvm.sleep(0.001)
        otpvm.send(parent, "ticked")

    async def main():
        otpvm.spawn(ticker, otpvm.self())
        callbacks = 0
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            await asyncio.sleep(0)      # never idle: a callback per iteration
            callbacks += 1
        got = await otpvm.aio.receive_message("ticked", timeout=T)
        return got, callbacks, otpvm.process_info(otpvm.self())["reductions"]

    overruns = vm.long_schedules
    got, callbacks, reductions = run(vm, main)
    assert got == "ticked"
    assert reductions >= callbacks
    assert vm.long_schedules == overruns
    with pytest.raises(otpvm.NotInProcessError):
        otpvm._vm._spend(1)


def test_asyncio_code_adds_a_signal_handler(vm):
    """loop.add_signal_handler from asyncio code (AnyIO's
    open_signal_receiver, aiohttp's run_app): asyncio does it with
    signal.set_wakeup_fd and signal.signal, which only the main thread may
    call, and the code runs on a scheduler thread (it failed: "set_wakeup_fd
    only works in main thread").  run_forever's thread, the main one here,
    does it for the loop; the signal wakes the loop through its self-pipe."""
    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        loop.add_signal_handler(signal.SIGUSR1, got.set_result, "usr1")
        try:
            os.kill(os.getpid(), signal.SIGUSR1)
            return await asyncio.wait_for(got, T)
        finally:
            assert loop.remove_signal_handler(signal.SIGUSR1)

    assert threading.current_thread() is threading.main_thread()
    assert run(vm, main) == "usr1"
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_a_loop_run_off_the_main_thread_refuses_signal_handlers(vm):
    """As asyncio's loop does, when run_forever's thread is not the main one."""
    def off_main():
        async def main():
            with pytest.raises(RuntimeError, match="main thread"):
                asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, print)
            return "refused"
        return run(vm, main)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        assert pool.submit(off_main).result(T) == "refused"


class Interrupt(Exception):
    pass


def test_a_signal_handler_runs_in_the_loop_and_what_it_raises_stops_it(vm):
    """Python runs signal handlers on the main thread, which waits in
    run_forever: the handler (here SIGUSR2's, raising Interrupt as Ctrl-C's
    raises KeyboardInterrupt) runs in the loop's process, as on asyncio's
    loop in the loop's code, and run_forever raises what it raised once the
    loop has stopped.  It used to come out of run_forever at once, leaving
    the loop running: not closable, not runnable again."""
    seen = []

    def handler(signum, frame):
        seen.append(asyncio.get_running_loop())
        raise Interrupt
    previous = signal.signal(signal.SIGUSR2, handler)
    loop = otpvm.aio.new_event_loop(vm)
    try:
        threading.Timer(0.05, signal.pthread_kill,
                        (threading.get_ident(), signal.SIGUSR2)).start()
        with pytest.raises(Interrupt):
            loop.run_until_complete(asyncio.sleep(T))
        assert seen == [loop] and not loop.is_running()
        assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"
        assert signal.getsignal(signal.SIGUSR2) is handler     # restored
    finally:
        loop.close()
        signal.signal(signal.SIGUSR2, previous)


@pytest.mark.timeout(60)
def test_ctrl_c_under_asyncio_runner_in_debug_mode(vm):
    """asyncio.Runner's SIGINT handler cancels the main task.  Run on the
    main thread while the loop's code ran on a scheduler thread, in debug
    mode its call_soon raised ('Non-thread-safe operation'), and the
    Runner's cleanup then found the loop still running.  Run in the loop,
    as on asyncio's: the task is cancelled, and run() raises
    KeyboardInterrupt."""
    async def main():
        threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
        await asyncio.sleep(T)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt), \
                asyncio.Runner(loop_factory=lambda: otpvm.aio.new_event_loop(vm),
                               debug=True) as runner:
            runner.run(main())
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_otpvm_process_awaits_asyncio_work_on_the_loop(vm):
    async def double_later(x):
        await asyncio.sleep(0.01)
        return 2 * x

    async def process(box, parent):
        # run_coroutine_threadsafe gives a concurrent.futures.Future: a
        # process awaits it with otpvm.wait_future, holding no thread.
        fut = asyncio.run_coroutine_threadsafe(double_later(21), box.value)
        otpvm.send(parent, ("doubled", await otpvm.wait_future(fut, timeout=T)))

    async def main():
        otpvm.spawn(process, otpvm.Shared(asyncio.get_running_loop()), otpvm.self())
        return await otpvm.aio.receive_message(("doubled", ANY), timeout=T)

    assert run(vm, main) == ("doubled", 42)
