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
    """``python -m otpvm run MODULE:APP``: start it, keep it up, stop it cleanly."""
    import otpvm
    from otpvm import application

    parser = argparse.ArgumentParser(prog="python -m otpvm run")
    parser.add_argument("app", help="MODULE:CLASS of an otpvm.application.Application")
    parser.add_argument("--type", default="permanent", choices=application.START_TYPES)
    parser.add_argument("--schedulers", type=int, default=None)
    args = parser.parse_args(argv)
    cls = _import_app(args.app)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def node(cls: Any, start_type: str) -> list[str]:
        otpvm.register("node", otpvm.self())
        started = await application.ensure_all_started(cls, start_type)
        print(f"otpvm node up: started {', '.join(started)} (Ctrl-C or SIGTERM stops it)",
              flush=True)
        await otpvm.receive("stop")
        for name in reversed(started):
            await application.stop(name)
        return started

    with otpvm.VM(args.schedulers) as vm:
        def stop(signum: int, frame: Any) -> None:
            print(f"otpvm node: {signal.Signals(signum).name}, stopping", flush=True)
            try:
                vm.send("node", "stop")
            except Exception:
                vm.stop()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        try:
            stopped = vm.run(node, cls, args.type)
        except otpvm.ProcessExit as exc:
            print(f"otpvm node: stopped ({exc.reason!r})", flush=True)
            return 1
    print(f"otpvm node: stopped {', '.join(reversed(stopped))} cleanly", flush=True)
    return 0


def _import_app(spec: str) -> Any:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: expected MODULE:APP, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SystemExit(f"error: cannot import {module_name!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"error: {module_name!r} has no {attr!r}") from None


if __name__ == "__main__":
    sys.exit(main())
