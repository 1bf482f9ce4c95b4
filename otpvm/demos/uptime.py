"""The uptime demo: N users on TCP, one hits a bug, nobody else notices.

``python -m otpvm demo`` starts a line-based echo service under a supervision
tree (``otpvm.net.serve``: acceptors, one process per connection) and a load
generator in a separate OS process (``otpvm.demos.loadgen``) that opens N
persistent connections (10,000 by default) and keeps them talking.  Midway,
one client sends ``/stats``, a command whose code path was never tested: its
connection process crashes, its socket closes with it, the crash is logged
once, and the other N-1 connections carry on as if nothing happened.  The
report shows it, with latencies before, during and after the crash, and the
exit status says whether every one of those claims held.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import subprocess
import sys
import time
from typing import Any

import otpvm
from otpvm import net
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


class ReportCounter(logging.Handler):
    """Counts the crash and supervisor reports the VM logs."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.crash_reports = 0
        self.supervisor_reports = 0

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("crash report"):
            self.crash_reports += 1
        elif text.startswith("supervisor report"):
            self.supervisor_reports += 1


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


async def run_service(args: argparse.Namespace) -> dict[str, Any]:
    """The server side: serve, run the load generator, collect the numbers."""
    listener = await net.serve(connection, 0, host="127.0.0.1", acceptors=args.acceptors,
                               max_connections=args.connections + 100, backlog=4096,
                               packet="line", active="once", packet_size=4096)
    loadgen = [sys.executable, "-m", "otpvm.demos.loadgen", "--host", "127.0.0.1",
               "--port", str(listener.port), "--connections", str(args.connections),
               "--interval", str(args.interval), "--before", str(args.before),
               "--during", str(args.during), "--after", str(args.after),
               "--poison", POISON, "--quiet"]
    result = await _run_subprocess(loadgen, timeout=args.before + args.during + args.after + 300)
    alive = await net.connection_count(listener)
    await net.stop_server(listener)
    result["server_connections_at_end"] = alive
    return result


async def _run_subprocess(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Runs the load generator; waiting for it holds no scheduler thread."""
    done = await otpvm.run_blocking(subprocess.run, cmd, capture_output=True, text=True,
                                    timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"otpvm demo: the load generator failed ({done.returncode}):\n"
                         f"{done.stderr}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def verdict(r: dict[str, Any], n: int, counter: ReportCounter) -> list[tuple[str, bool]]:
    """The claims of the demo, each with whether it held."""
    poison = r.get("poison") or {}
    return [
        (f"all {n} connections established", r["connections_established"] == n),
        (f"{n} alive before the crash", r["alive_before_poison"] == n),
        (f"{n - 1} alive after it", r["alive_at_end"] == n - 1),
        ("the poisoned connection was closed by the server",
         poison.get("outcome") in ("eof", "reset")),
        ("exactly 1 error seen by clients", r["errors"]["total"] == 1),
        ("no error on any other connection", r["errors"]["other_than_poisoned"] == 0),
        ("exactly 1 crash report logged", counter.crash_reports == 1),
        ("exactly 1 supervisor report logged", counter.supervisor_reports == 1),
        ("messages kept flowing after the crash", r["messages"]["after"] > 0),
    ]


def format_report(r: dict[str, Any], checks: list[tuple[str, bool]], seconds: float) -> str:
    """The human-readable report."""
    lines = [
        "",
        "otpvm uptime demo",
        f"  connections: {r['connections_established']} established, "
        f"{r['alive_before_poison']} alive before the crash, {r['alive_at_end']} after",
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
    """``python -m otpvm demo``: run the scenario, print the report."""
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
    args = parser.parse_args(argv)
    if args.connections < 2:
        parser.error("--connections must be at least 2")
    raise_fd_limit(args.connections + FD_MARGIN)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    counter = ReportCounter()
    logging.getLogger("otpvm").addHandler(counter)
    started = time.monotonic()
    with otpvm.VM() as vm:
        result = vm.run(run_service, args)
    checks = verdict(result, args.connections, counter)
    result["crash_reports"] = counter.crash_reports
    result["supervisor_reports"] = counter.supervisor_reports
    result["checks"] = {claim: ok for claim, ok in checks}
    if args.json:
        print(json.dumps(result))
    else:
        print(format_report(result, checks, time.monotonic() - started))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
