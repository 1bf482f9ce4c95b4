"""The otpvm command line (the ``otpvm`` command, or ``python -m otpvm``).

otpvm demo [options]        the uptime demo: 10,000 TCP users, one crashes
otpvm ring [options]        the VM demo: a ring of processes, crashes
otpvm run MODULE:APP        boot a node running an application
otpvm upgrade SOCK DIR      install a release into a running node
otpvm releases SOCK         a running node's releases and module versions
otpvm make-permanent SOCK V what the node boots next time
otpvm call SOCK NAME JSON   call a registered gen_server of a running node
otpvm appup OLD NEW         the upgrade plan between two release trees
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Any

PROG = "otpvm"

COMMANDS = {
    "demo": "the uptime demo: 10,000 TCP connections, one crashes, nobody else notices",
    "ring": "the VM demo: a ring of 100,000 processes and a few crashes",
    "run": "boot a node with an application (MODULE:APP) until SIGINT/SIGTERM",
    "upgrade": "install a release (or go back to an older one) in a running node",
    "releases": "a running node's releases and the versions of its modules",
    "make-permanent": "make a running node's current release the one it boots",
    "call": "call a registered gen_server of a running node (a JSON request)",
    "appup": "print the upgrade plan from one source tree of an application to another",
}

FORCE_TIMEOUT = 0.5     # seconds a forced stop waits for killed processes to end


def usage() -> str:
    """The top-level help text."""
    lines = [f"usage: {PROG} COMMAND [options]", "", "commands:"]
    lines += [f"  {name:15} {text}" for name, text in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help  show this help and exit",
              "  --version   print the version and exit", "",
              f"`{PROG} COMMAND --help` describes a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatches to a subcommand; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else None
    if command in ("-h", "--help"):
        print(usage())
        return 0
    if command == "--version":
        import otpvm

        print(f"{PROG} {otpvm.__version__}")
        return 0
    if command not in COMMANDS:
        # argparse's shape: usage and error on stderr, status 2.
        error = "a command is required" if command is None else f"unknown command {command!r}"
        print(f"{usage()}\n{PROG}: error: {error}", file=sys.stderr)
        return 2
    if command == "demo":
        from otpvm.demos import uptime

        return uptime.main(argv[1:])
    if command == "ring":
        from otpvm.demos import ring

        return ring.main(argv[1:])
    if command == "run":
        return run_node(argv[1:])
    if command == "appup":
        from otpvm import appup

        return appup.main(argv[1:])
    from otpvm import _release_cli

    return _release_cli.main(command, argv[1:])


def run_node(argv: list[str]) -> int:
    """``otpvm run MODULE:APP``: start it, keep it up, stop it cleanly.

    The applications it depends on are looked up by name among the
    Application classes of the same module and started first.  Exits 0 after
    a clean stop on SIGINT/SIGTERM, 1 if it cannot start or if an application
    whose death stops the node died (the node halts, as in OTP).  A second
    SIGINT/SIGTERM while it stops kills every process at once (as a second
    Ctrl-C does to uvicorn): exit status 128 + the signal's number."""
    import otpvm
    from otpvm import _signals, application

    parser = argparse.ArgumentParser(
        prog=f"{PROG} run", description="Boots a node running the application MODULE:APP "
        "(and the applications it depends on, from the same module) until SIGINT/SIGTERM; "
        "a second signal forces the stop. MODULE is imported as `python -m` would: "
        "from the current folder first.")
    parser.add_argument("app", help="MODULE:CLASS of an otpvm.application.Application")
    parser.add_argument("--type", default="permanent", choices=application.START_TYPES,
                        help="the start type (default permanent: its death stops the node)")
    parser.add_argument("--schedulers", type=int, default=None,
                        help="scheduler threads (default: one per core)")
    parser.add_argument("--release-dir", default=None, metavar="DIR",
                        help="boot the permanent release of DIR, its packages upgradable "
                        "(otpvm.release)")
    parser.add_argument("--control", default=None, metavar="SOCK",
                        help="listen for `otpvm upgrade` on this Unix socket (mode 0600; "
                        "needs --release-dir)")
    args = parser.parse_args(argv)
    if args.control and not args.release_dir:
        parser.error("--control needs --release-dir")
    booted = _boot_release(args.release_dir, args.app) if args.release_dir else None
    _import_app(args.app)               # fails here, before the node boots
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    async def start(spec: str, start_type: str) -> list[str] | None:
        """Starts the applications.  A frame of its own: the node process
        then holds no Application class while it runs, which would count
        as old code after a hot upgrade of their module."""
        cls, registry = _import_app(spec)
        try:
            return await application.ensure_all_started(cls, start_type, registry)
        except application.ApplicationError as exc:
            print(f"error: cannot start {cls.name!r}: {exc.reason!r}", file=sys.stderr,
                  flush=True)
            return None

    async def node(spec: str, start_type: str) -> list[str] | None:
        otpvm.register("node", otpvm.self())
        started = await start(spec, start_type)
        if started is None:
            return None
        if booted is not None:
            otpvm.spawn(control.release_handler, args.release_dir, booted)
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

    from otpvm import control

    vm = _signals.new_vm(args.schedulers)
    server = control.ControlServer(vm, args.control) if args.control else None
    stopping: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if stopping:
            raise _signals.Interrupted(sig)
        stopping.append(sig)
        again = "Ctrl-C" if sig == signal.SIGINT else sig.name
        print(f"otpvm node: {sig.name}, stopping ({again} again to force)", flush=True)
        try:
            vm.send("node", "stop")
        except Exception:
            vm.stop()   # not up yet (or already stopped): nothing to stop cleanly

    try:
        stopped = _signals.run_main(vm, on_signal, node, args.app, args.type)
    except _signals.Interrupted as forced:
        return _force_stop(vm, forced.sig)
    except otpvm.ProcessExit as exc:
        # An application whose death stops the node did die (see its report).
        print(f"otpvm node: halted ({exc.reason!r})", file=sys.stderr, flush=True)
        return 1
    finally:
        if server is not None:
            server.close()
        vm.stop()       # after _force_stop's shorter one, this does nothing
    if stopped is None:
        return 1                        # it could not start: said so above
    print(f"otpvm node: stopped {', '.join(stopped) or 'nothing'} cleanly", flush=True)
    return 0


def _force_stop(vm: Any, sig: signal.Signals) -> int:
    """Kills every process (as VM.stop does), waiting briefly, and gives the
    exit status.  A process stuck in a call that never returns to the VM
    cannot be killed: its thread is abandoned, as the process exits."""
    from otpvm import _signals

    _signals.ignore()
    print(f"otpvm node: {sig.name} again, forcing the stop: every process is killed, "
          f"unfinished terminate callbacks are abandoned", file=sys.stderr, flush=True)
    vm.stop(FORCE_TIMEOUT)
    return 128 + sig


def _boot_release(release_dir: str, spec: str) -> str:
    """Puts the permanent release of release_dir first on sys.path with the
    application's top package under the code server; returns its vsn."""
    from otpvm import code, release

    try:
        releases = release.ReleaseDir(release_dir)
        vsn = releases.boot_release()
        root = releases.root(vsn)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    releases.booted(vsn)
    sys.path.insert(0, str(root))
    code.manage(spec.partition(":")[0].split(".")[0])
    print(f"otpvm node: booting release {vsn} from {root}", flush=True)
    return vsn


def _import_app(spec: str) -> tuple[Any, dict[str, Any]]:
    """The Application class named by MODULE:APP, and the module's Application
    classes by name: where ensure_all_started finds the dependencies."""
    from otpvm.application import Application

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SystemExit(f"error: expected MODULE:APP, got {spec!r}")
    _import_from_cwd()
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


def _import_from_cwd() -> None:
    """Lets MODULE be found in the current folder, as ``python -m`` does (the
    ``otpvm`` command's script folder is first on sys.path instead).

    The otpvm package itself cannot be shadowed by this, even run from a clone
    whose root holds the uncompiled source folder ``otpvm/``: it is already
    imported (this module is part of it), and every submodule imported later
    is looked up in that package's own ``__path__``, never on sys.path."""
    cwd = os.getcwd()
    if not any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        sys.path.insert(0, cwd)


if __name__ == "__main__":
    sys.exit(main())
