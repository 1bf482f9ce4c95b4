"""The otpvm command line.

python -m otpvm demo [options]        the uptime demo: 10,000 TCP users, one crashes
python -m otpvm ring [options]        the VM demo: a ring of processes, crashes
python -m otpvm run MODULE:APP        boot a node running an application
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
from typing import Any

COMMANDS = {
    "demo": "the uptime demo: 10,000 TCP connections, one crashes, nobody else notices",
    "ring": "the VM demo: a ring of 100,000 processes and a few crashes",
    "run": "boot a node with an application (MODULE:APP) until SIGINT/SIGTERM",
}


def main(argv: list[str] | None = None) -> int:
    """Dispatches to a subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: python -m otpvm COMMAND [options]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:8} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "demo":
        from otpvm.demos import uptime

        return uptime.main(argv[1:])
    if argv[0] == "ring":
        from otpvm.demos import ring

        return ring.main(argv[1:])
    return run_node(argv[1:])


def run_node(argv: list[str]) -> int:
    """``python -m otpvm run MODULE:APP``: start it, keep it up, stop it cleanly.

    The applications it depends on are looked up by name among the
    Application classes of the same module and started first.  Exits 0 after
    a clean stop on SIGINT/SIGTERM, 1 if it cannot start or if an application
    whose death stops the node died (the node halts, as in OTP)."""
    import otpvm
    from otpvm import application

    parser = argparse.ArgumentParser(prog="python -m otpvm run")
    parser.add_argument("app", help="MODULE:CLASS of an otpvm.application.Application")
    parser.add_argument("--type", default="permanent", choices=application.START_TYPES)
    parser.add_argument("--schedulers", type=int, default=None)
    args = parser.parse_args(argv)
    cls, registry = _import_app(args.app)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def node(cls: Any, start_type: str) -> list[str] | None:
        otpvm.register("node", otpvm.self())
        try:
            started = await application.ensure_all_started(cls, start_type, registry)
        except application.ApplicationError as exc:
            print(f"error: cannot start {cls.name!r}: {exc.reason!r}", file=sys.stderr,
                  flush=True)
            return None
        print(f"otpvm node up: started {', '.join(started)} (Ctrl-C or SIGTERM stops it)",
              flush=True)
        await otpvm.receive("stop")
        stopped: list[str] = []
        for name in reversed(started):
            try:
                await application.stop(name)
            except application.ApplicationError:
                continue        # it ended on its own (not permanent): already reported
            stopped.append(name)
        return stopped

    # Python runs signal handlers in the main thread, between bytecodes.  A
    # main thread blocked in vm.run would take a signal late or never: the
    # kernel may hand it to a scheduler thread, and even one aimed at the main
    # thread is lost if it comes just before the wait starts.  So the node
    # runs on a thread of its own, the VM's threads start with SIGINT and
    # SIGTERM blocked (threads inherit the mask), and the main thread waits
    # in short timed joins, so that a handler always runs.
    signals = {signal.SIGINT, signal.SIGTERM}
    outcome: list[Any] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        vm = otpvm.VM(args.schedulers)

        def stop(signum: int, frame: Any) -> None:
            print(f"otpvm node: {signal.Signals(signum).name}, stopping", flush=True)
            try:
                vm.send("node", "stop")
            except Exception:
                vm.stop()

        def run() -> None:
            try:
                outcome.append(vm.run(node, cls, args.type))
            except BaseException as exc:
                outcome.append(exc)

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        runner = threading.Thread(target=run, name="otpvm-node", daemon=True)
        runner.start()
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    with vm:
        while runner.is_alive():
            runner.join(0.25)
    stopped = outcome[0]
    if isinstance(stopped, otpvm.ProcessExit):
        # An application whose death stops the node did die (see its report).
        print(f"otpvm node: halted ({stopped.reason!r})", file=sys.stderr, flush=True)
        return 1
    if isinstance(stopped, BaseException):
        raise stopped
    if stopped is None:
        return 1                        # it could not start: said so above
    print(f"otpvm node: stopped {', '.join(stopped) or 'nothing'} cleanly", flush=True)
    return 0


def _import_app(spec: str) -> tuple[Any, dict[str, Any]]:
    """The Application class named by MODULE:APP, and the module's Application
    classes by name: where ensure_all_started finds the dependencies."""
    from otpvm.application import Application

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: expected MODULE:APP, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from exc
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"error: {module_name!r} has no {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Application) and cls.name):
        raise SystemExit(f"error: {spec!r} is not an otpvm.Application subclass with a name")
    registry = {obj.name: obj for obj in vars(module).values()
                if isinstance(obj, type) and issubclass(obj, Application) and obj.name}
    return cls, registry


if __name__ == "__main__":
    sys.exit(main())
