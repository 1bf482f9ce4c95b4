"""The uptime demo: N users on TCP, one hits a bug, nobody else notices.

``otpvm demo`` starts a line-based echo service under a supervision
tree (``otpvm.net.serve``: acceptors, one process per connection) and a load
generator in a separate OS process (``otpvm.demos.loadgen``) that opens N
persistent connections (10,000 by default) and keeps them talking.  Midway,
one client sends ``/stats``, a command whose code path was never tested: its
connection process crashes, its socket closes with it, the crash is logged
once, and the other N-1 connections carry on as if nothing happened.  The
crash report is shown when it happens, in short; the report at the end shows
the rest, with latencies before, during and after the crash, and the exit
status says whether every one of those claims held.  Ctrl-C (or SIGTERM)
stops it at once, load generator included: exit status 130 (143).

``otpvm demo --upgrade[=failing]`` runs the same service with its handler
upgraded live instead of the crash: see ``otpvm.demos.upgrade``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import Any, TextIO

import otpvm
from otpvm import _signals, net
from otpvm.net import tcp

POISON = "/stats"
FD_MARGIN = 200          # descriptors besides the connections (listener, logs, Python)


def parse_stats(line: bytes) -> tuple[int, int]:
    """``/stats SESSIONS SECONDS``: the deliberately untested code path (a
    bare ``/stats`` does not unpack)."""
    _, sessions, seconds = line.split()
    return int(sessions), int(seconds)


async def connection(sock: net.Socket) -> None:
    """One user's connection: echo every line (the socket is line-framed and
    active once, inherited from the listener)."""
    while True:
        msg = await otpvm.receive()
        if msg[0] != "tcp":
            return                      # tcp_closed / tcp_error: the user left
        line = msg[2]
        if line.startswith(b"/stats"):
            parse_stats(line)
        await tcp.send(sock, line)
        net.setopts(sock, active="once")


_FRAME = re.compile(r'^  File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<fn>.+)$')


class DemoLog(logging.Handler):
    """Shows what the VM logs as it happens, in short, and counts the crash
    and supervisor reports: a crash report is its first line and the line of
    code that raised, a supervisor report its first line, anything else as
    it is."""

    def __init__(self, stream: TextIO, started: float) -> None:
        super().__init__(logging.WARNING)
        self.stream, self.started = stream, started
        self.crash_reports = 0
        self.supervisor_reports = 0
        self.first_crash: str | None = None        # the first crash report's first line

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        first = text.split("\n", 1)[0]
        if text.startswith("crash report"):
            self.crash_reports += 1
            self.first_crash = self.first_crash or first
            shown = [first, *where_raised(text)]
        elif text.startswith("supervisor report"):
            self.supervisor_reports += 1
            shown = [first]
        else:
            shown = [f"{record.levelname} {record.name}: {text}"]
        stamp = f"{time.monotonic() - self.started:6.1f} s  "
        self.stream.write(stamp + ("\n" + " " * len(stamp)).join(shown) + "\n")
        self.stream.flush()


def where_raised(report: str) -> list[str]:
    """The innermost frame of a crash report's traceback, as one line:
    ``at FILE:LINE in FUNCTION: CODE`` (nothing if it has none)."""
    lines = report.splitlines() + [""]
    frames = [i for i, line in enumerate(lines) if _FRAME.match(line)]
    if not frames:
        return []
    frame = _FRAME.match(lines[frames[-1]])
    assert frame is not None
    place = f"at {os.path.basename(frame['path'])}:{frame['line']} in {frame['fn']}"
    code = lines[frames[-1] + 1]
    if code.startswith("    ") and not code.strip().startswith(("^", "~")):
        return [f"{place}: {code.strip()}"]
    return [place]


def raise_fd_limit(needed: int) -> int:
    """Raises the soft fd limit to the hard one; explains when it is too low."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        if target < needed:
            raise SystemExit(
                f"otpvm demo: {needed} file descriptors are needed for this many connections "
                f"but the hard limit (ulimit -Hn) is {hard}. Use fewer --connections, or "
                f"raise the limit (as root: ulimit -Hn {needed}, or nofile in "
                f"/etc/security/limits.conf).")
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


class LoadGenerator:
    """The load generator's OS process, owned by the demo: the demo kills it
    when interrupted, and it exits by itself as soon as the demo's process
    ends, however that ends (even by SIGKILL): it watches a pipe whose write
    end only the demo holds (``--parent-fd``).  It runs in a session of its
    own, so that a terminal's Ctrl-C reaches the demo alone, which decides."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc: subprocess.Popen[str] | None = None
        self.write_end = -1                 # the --parent-fd pipe's, only we hold it
        self.cancelled = False

    def run(self, args: list[str], timeout: float) -> dict[str, Any]:
        """Runs it to the end (on a thread: see run_service); its JSON result."""
        self.start(args, stdin=False)
        return self.finish(timeout)

    def start(self, args: list[str], stdin: bool = True) -> None:
        """Starts it (``stdin``: with a pipe to ``write`` to, for ``--sync``
        and ``--window-from-stdin``)."""
        read_end, self.write_end = os.pipe()
        try:
            with self.lock:
                if self.cancelled:
                    raise SystemExit("otpvm demo: interrupted")
                # -P: run from a clone's root, "-m" would import the uncompiled
                # otpvm/ folder there instead of the installed package.
                self.proc = subprocess.Popen(
                    [sys.executable, "-P", "-m", "otpvm.demos.loadgen", *args,
                     "--parent-fd", str(read_end)],
                    pass_fds=(read_end,), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    text=True, start_new_session=True)
        finally:
            os.close(read_end)

    def wait_established(self, timeout: float) -> int:
        """With ``--sync``: waits for its ``ESTABLISHED n`` line (on a thread)."""
        assert self.proc is not None and self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break                   # it ended: finish() says why
            if line.startswith("ESTABLISHED "):
                return int(line.split()[1])
            seen.append(line)
        self.finish(1.0)
        raise SystemExit(f"otpvm demo: the load generator did not get its connections "
                         f"established:\n{''.join(seen)}")

    def write(self, line: str) -> None:
        """Writes a line to its stdin (see ``start``)."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def finish(self, timeout: float) -> dict[str, Any]:
        """Waits for it to end (on a thread); its JSON result."""
        proc = self.proc
        assert proc is not None
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        finally:
            os.close(self.write_end)
        if proc.returncode != 0:
            raise SystemExit(f"otpvm demo: the load generator failed ({proc.returncode}):\n"
                             f"{err}")
        return json.loads(out)  # type: ignore[no-any-return]

    def kill(self) -> None:
        """Ends it now (or keeps it from starting); waits for it to be gone."""
        with self.lock:
            self.cancelled = True
            proc = self.proc
        if proc is not None:
            proc.kill()
            proc.wait()


async def run_service(loadgen: LoadGenerator, args: argparse.Namespace) -> dict[str, Any]:
    """The server side: serve, run the load generator, collect the numbers."""
    listener = await net.serve(connection, 0, host="127.0.0.1", acceptors=args.acceptors,
                               max_connections=args.connections + 100, backlog=4096,
                               packet="line", active="once", packet_size=4096)
    options = ["--host", "127.0.0.1", "--port", str(listener.port),
               "--connections", str(args.connections), "--interval", str(args.interval),
               "--before", str(args.before), "--during", str(args.during),
               "--after", str(args.after), "--poison", POISON, "--quiet"]
    # Waiting for it holds no scheduler thread.
    result = await otpvm.run_blocking(loadgen.run, options,
                                      args.before + args.during + args.after + 300)
    alive = await net.connection_count(listener)
    await net.stop_server(listener)
    result["server_connections_at_end"] = alive
    return result


def verdict(r: dict[str, Any], n: int, log: DemoLog) -> list[tuple[str, bool]]:
    """The claims of the demo, each with whether it held."""
    poison = r.get("poison") or {}
    return [
        (f"all {n:,} connections established", r["connections_established"] == n),
        (f"{n:,} alive before the crash", r["alive_before_poison"] == n),
        (f"{n - 1:,} alive after it", r["alive_at_end"] == n - 1),
        ("the poisoned connection was closed by the server",
         poison.get("outcome") in ("eof", "reset")),
        ("exactly 1 error seen by clients", r["errors"]["total"] == 1),
        ("no error on any other connection", r["errors"]["other_than_poisoned"] == 0),
        ("exactly 1 crash report logged", log.crash_reports == 1),
        ("exactly 1 supervisor report logged", log.supervisor_reports == 1),
        ("messages kept flowing after the crash", r["messages"]["after"] > 0),
    ]


def format_report(r: dict[str, Any], checks: list[tuple[str, bool]], seconds: float) -> str:
    """The human-readable report."""
    lines = [
        "",
        f"otpvm uptime demo: {r['connections_established']:,} connections, "
        f"{r['crash_reports']} crashed, {r['alive_at_end']:,} carried on",
        f"  {r['crash_report'] or 'crash report: none'}",
        f"  connections: {r['connections_established']:,} established, "
        f"{r['alive_before_poison']:,} alive before the crash, {r['alive_at_end']:,} after",
        f"  messages exchanged: {r['messages']['total']:,} "
        f"({r['messages_per_second']:,.0f}/s over {r['timed_seconds']:.1f} s)",
        f"  errors seen by clients: {r['errors']['total']} "
        f"{dict(r['errors']['by_kind']) or ''}",
        "  round-trip latency (ms):     p50      p99      max",
    ]
    for phase in ("before", "during", "after"):
        lat = r["latency_ms"][phase]
        cells = " ".join(f"{lat[k]:8.2f}" if lat[k] is not None else "       -"
                         for k in ("p50", "p99", "max"))
        lines.append(f"    {phase + ' the crash':22} {cells}")
    lines.append("")
    for claim, ok in checks:
        lines.append(f"  [{'ok' if ok else 'FAILED'}] {claim}")
    lines.append(f"  ({seconds:.1f} s in all)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``otpvm demo``: run the scenario, print the report."""
    parser = argparse.ArgumentParser(prog="otpvm demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", "-n", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=0.5,
                        help="seconds between two messages of one connection (default 0.5)")
    parser.add_argument("--before", type=float, default=5.0, help="seconds before the crash")
    parser.add_argument("--during", type=float, default=2.0, help="seconds of the crash window")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after it")
    parser.add_argument("--acceptors", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--upgrade", nargs="?", const="ok", choices=("ok", "failing", "none"),
                        help="instead of the crash, upgrade the echo handler live from v1 to "
                             "v2 (otpvm.demos.upgrade); =failing: a v2 whose code_change "
                             "fails on one connection, rolled back; =none: the same service "
                             "with nothing installed (the benchmark's baseline)")
    args = parser.parse_args(argv)
    if args.connections < 2:
        parser.error("--connections must be at least 2")
    raise_fd_limit(args.connections + FD_MARGIN)
    started = time.monotonic()
    if not args.json:
        print(intro(args), flush=True)
    log = DemoLog(sys.stderr, started)
    otpvm_log = logging.getLogger("otpvm")
    otpvm_log.addHandler(log)
    otpvm_log.setLevel(logging.WARNING)
    otpvm_log.propagate = False         # shown by DemoLog alone, once
    loadgen = LoadGenerator()
    service = run_service if args.upgrade is None else _upgrade().run_service
    vm = _signals.new_vm()

    def on_signal(sig: signal.Signals) -> None:
        raise _signals.Interrupted(sig)

    try:
        # The load generator's handle goes with the function: a process's
        # arguments are copied, as messages are.
        result = _signals.run_main(vm, on_signal, functools.partial(service, loadgen), args)
    except _signals.Interrupted as interrupted:
        _signals.ignore()
        vm.stop(1.0)                    # first: its processes must not see the loss
        loadgen.kill()
        print(f"otpvm demo: interrupted by {interrupted.sig.name} after "
              f"{time.monotonic() - started:.1f} s; the load generator was stopped too",
              file=sys.stderr, flush=True)
        return 128 + interrupted.sig
    finally:
        vm.stop()
    result["crash_reports"] = log.crash_reports
    result["supervisor_reports"] = log.supervisor_reports
    result["crash_report"] = log.first_crash
    if args.upgrade is None:
        checks = verdict(result, args.connections, log)
        report = format_report(result, checks, time.monotonic() - started)
    else:
        upgrade = _upgrade()
        result["upgrade"] = summary = upgrade.summary(result, args.connections)
        checks = upgrade.verdict(summary, args.upgrade, log.crash_reports,
                                 log.supervisor_reports)
        report = upgrade.format_report(summary, args.upgrade, checks,
                                       time.monotonic() - started)
    result["checks"] = {claim: ok for claim, ok in checks}
    print(json.dumps(result) if args.json else report)
    return 0 if all(ok for _, ok in checks) else 1


def intro(args: argparse.Namespace) -> str:
    """The first line: what is about to happen."""
    n, before = f"{args.connections:,}", f"{args.before:g}"
    if args.upgrade == "ok":
        return (f"otpvm upgrade demo: {n} connections; after {before} s of traffic their "
                f"handler is upgraded live from echo v1 to v2 (state count -> (count, bytes))")
    if args.upgrade == "failing":
        return (f"otpvm upgrade demo: {n} connections; after {before} s of traffic an "
                f"upgrade to a v2 whose code_change fails on one connection is tried")
    if args.upgrade == "none":
        return (f"otpvm upgrade demo, baseline: {n} connections; the same service, nothing "
                f"is installed")
    return (f"otpvm uptime demo: {n} connections; after {before} s of traffic one of them "
            f"sends {POISON}, a command whose code was never tested")


def _upgrade() -> Any:
    # Imported only for --upgrade: that module puts the echo handler under
    # the code server, which must happen before anything imports it.
    from otpvm.demos import upgrade
    return upgrade


if __name__ == "__main__":
    sys.exit(main())
