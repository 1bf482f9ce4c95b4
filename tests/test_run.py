"""otpvm.run / VM.run: main's crash is raised to the caller, and reported once."""

import logging
import subprocess
import sys

import pytest

import otpvm


class Bug(Exception):
    pass


async def crashing_main():
    raise Bug("main's bug")


def crash_reports(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("crash report")]


def test_mains_crash_is_raised_to_the_caller_and_not_also_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="otpvm"), pytest.raises(Bug, match="main's bug"):
        otpvm.run(crashing_main)
    assert crash_reports(caplog) == []


def test_vm_run_raises_mains_crash_without_a_crash_report_either(caplog):
    with caplog.at_level(logging.ERROR, logger="otpvm"), otpvm.VM(1) as vm:
        with pytest.raises(Bug):
            vm.run(crashing_main)
        with pytest.raises(Bug):        # a second main on the same VM too
            vm.run(crashing_main)
    assert crash_reports(caplog) == []


def test_other_processes_crashes_in_run_are_still_reported_once(caplog):
    async def child():
        raise Bug("child's bug")

    async def main():
        _, ref = otpvm.spawn_monitor(child)
        await otpvm.receive(otpvm.Down(ref, otpvm.ANY, otpvm.ANY), timeout=5)
        raise Bug("main's bug")

    with caplog.at_level(logging.ERROR, logger="otpvm"), pytest.raises(Bug, match="main's"):
        otpvm.run(main)
    reports = crash_reports(caplog)
    assert len(reports) == 1
    assert "Bug: child's bug" in reports[0]


def test_a_script_whose_main_crashes_prints_one_traceback(tmp_path):
    script = tmp_path / "crash.py"
    script.write_text(
        "import logging, otpvm\n"
        "logging.basicConfig()\n"
        "async def main():\n"
        "    raise ValueError('main crashed')\n"
        "otpvm.run(main)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.count("Traceback (most recent call last)") == 1, done.stderr
    assert done.stderr.count("ValueError: main crashed") == 1, done.stderr
    assert "crash report" not in done.stderr


def test_ctrl_c_given_to_a_scheduler_thread_still_interrupts_vm_run():
    """The kernel may hand a process-wide SIGINT to any thread that does not
    block it: here it is sent to a scheduler thread on purpose.  The thread
    waiting in run() gets its KeyboardInterrupt all the same, at once."""
    import signal
    import threading
    import time

    idents = {}

    async def main():
        idents["scheduler"] = threading.get_ident()
        await otpvm.sleep(30)

    def interrupt():
        while "scheduler" not in idents:
            time.sleep(0.01)
        signal.pthread_kill(idents["scheduler"], signal.SIGINT)

    # Python's own handler, whatever this run inherited (a shell's background
    # job starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=interrupt, daemon=True).start()
        started = time.monotonic()
        with otpvm.VM(schedulers=1) as vm, pytest.raises(KeyboardInterrupt):
            vm.run(main)
        assert time.monotonic() - started < 10
    finally:
        signal.signal(signal.SIGINT, previous)
