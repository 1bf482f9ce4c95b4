"""Echo servers side by side: otpvm, asyncio, uvloop and the BEAM under the same load.

Usage::

    python benchmarks/echo/compare.py [--connections 10000] [--duration 10]
        [--interval 0] [--servers NAME,NAME,...] [--json FILE|-]

For each server: start it as a subprocess, wait for its ``READY <port>`` line,
read its RSS (``VmRSS`` in ``/proc/PID/status``), ramp up the connections with
the load generator (``otpvm/demos/loadgen.py`` in its own process, ``--sync``:
every connection connected and echoed one line, then idle), read the RSS
again -- the difference divided by the connections held is the server's
memory per connection -- then run ``--duration`` seconds of request/response
traffic and print one Markdown row per server.  Servers:

    otpvm             benchmarks/echo/otpvm_echo.py (skipped while it or
                      ``otpvm.net`` is missing)
    otpvm-s1          the same on one scheduler thread
    asyncio-streams   asyncio.start_server, readline/write/drain
    asyncio-protocol  asyncio.Protocol
    uvloop-streams    the same two on uvloop, when uvloop is importable
    uvloop-protocol
    otpvm.aio-streams the same two on otpvm.aio's loop (one scheduler thread)
    otpvm.aio-protocol
    erl               gen_tcp, {packet, line}, {active, once}; all schedulers
    erl-s1            the same on one scheduler (+S 1:1), one core like the
                      Python servers

"server KB/conn" is (RSS with every connection held, idle, after one echo
each - RSS before any connection) / connections: what the server keeps per
connection in user space (kernel socket buffers are not in RSS).  "KB/conn
after run" uses the RSS after the traffic instead (buffers, heaps and
allocator caches grown under load).

The load generator and the server share this machine's cores: look at the
"loadgen CPU" column (its user + system CPU during the timed traffic)
before reading a server's msgs/s as its ceiling (near 100 % means the
client, not the server, was the limit).  "server CPU µs/msg" is the
server's user + system CPU during the traffic divided by the messages
echoed: the cost of one echo, which depends far less than msgs/s on what
else the machine was doing.  No figure here is asserted on; this is a
measuring tool.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOADGEN = REPO / "otpvm" / "demos" / "loadgen.py"
OTPVM_ECHO = HERE / "otpvm_echo.py"
ALL_SERVERS = (
    "otpvm",
    "otpvm-s1",
    "asyncio-streams",
    "asyncio-protocol",
    "uvloop-streams",
    "uvloop-protocol",
    "otpvm.aio-streams",
    "otpvm.aio-protocol",
    "erl",
    "erl-s1",
)


def _probe_otpvm(env: dict[str, str] | None) -> str:
    """'' if ``import otpvm.net, otpvm.aio`` works from this folder with ``env``, else why not."""
    probe = subprocess.run(
        [sys.executable, "-c", "import otpvm.net, otpvm.aio"], cwd=HERE, env=env,
        capture_output=True, text=True,
    )
    if probe.returncode == 0:
        return ""
    return (probe.stderr.strip().splitlines() or ["?"])[-1]


def otpvm_environment() -> tuple[dict[str, str] | None, str]:
    """The environment a server script finds otpvm in: None (an installed
    otpvm, probed from this folder, which is what the script's sys.path[0]
    will be); else one with this clone on PYTHONPATH, if it is built in
    place.  Or (None, why not)."""
    why = _probe_otpvm(None)
    if not why:
        return None, ""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
    )
    if not _probe_otpvm(env):
        return env, ""
    return None, f"otpvm is not importable ({why})"


def server_command(name: str) -> tuple[list[str] | None, dict[str, str] | None, str]:
    """How to start server ``name`` on a free port: (command, environment, ""),
    or (None, None, why not)."""
    py = sys.executable
    if name in ("otpvm", "otpvm-s1"):
        env, why = otpvm_environment()
        if why:
            return None, None, why
        cmd = [py, str(OTPVM_ECHO), "--port", "0"]
        if name == "otpvm-s1":
            cmd += ["--schedulers", "1"]
        return cmd, env, ""
    if name.startswith(("asyncio-", "uvloop-", "otpvm.aio-")):
        loop, style = name.split("-")
        env = None
        if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
            return None, None, "uvloop is not installed in this Python"
        if loop == "otpvm.aio":
            env, why = otpvm_environment()
            if why:
                return None, None, why
        return [py, str(HERE / "asyncio_echo.py"), "--port", "0", "--style", style,
                "--loop", loop], env, ""
    if name in ("erl", "erl-s1"):
        missing = [tool for tool in ("erl", "erlc") if shutil.which(tool) is None]
        if missing:
            return None, None, f"{' and '.join(missing)} not on PATH"
        cmd = ["sh", str(HERE / "erl_echo.sh"), "--port", "0"]
        if name == "erl-s1":
            cmd += ["--schedulers", "1"]
        return cmd, None, ""
    return None, None, f"unknown server {name!r}"


def rss_kb(pid: int) -> int:
    """VmRSS of ``pid`` in KiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds ``pid`` has used so far ((0, 0) if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wait_for_line(fd: int, prefix: bytes, timeout: float, seen: bytearray) -> bytes | None:
    """Read ``fd`` (raw) until a line starting with ``prefix``; None on EOF or timeout.

    Everything read is appended to ``seen`` (for error messages).
    """
    deadline = time.monotonic() + timeout
    buf = b""
    while True:
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.startswith(prefix):
                return line
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            return None
        seen += chunk
        buf += chunk


def stop(proc: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM the server (its own process group), SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def measure(
    name: str, cmd: list[str], env: dict[str, str] | None, args: argparse.Namespace
) -> dict[str, Any]:
    """One server: start, hold the connections, run the traffic, stop."""
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
        bufsize=0, start_new_session=True,
    )
    try:
        assert server.stdout is not None
        seen = bytearray()
        line = wait_for_line(server.stdout.fileno(), b"READY ", args.ready_timeout, seen)
        if line is None:
            log.seek(0)
            raise RuntimeError(f"no READY line within {args.ready_timeout} s; stdout "
                               f"{bytes(seen)[-500:]!r}, stderr {log.read()[-2000:]!r}")
        port = int(line.split()[1])
        rss_idle = rss_kb(server.pid)
        lg_cmd = [
            sys.executable, str(LOADGEN), "--host", "127.0.0.1", "--port", str(port),
            "--connections", str(args.connections), "--before", str(args.duration),
            "--during", "0", "--after", "0", "--interval", str(args.interval),
            "--reply-timeout", str(args.reply_timeout), "--sync", "--quiet",
        ]
        loadgen = subprocess.Popen(
            lg_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            bufsize=0,
        )
        assert loadgen.stderr is not None
        lg_seen = bytearray()
        est = wait_for_line(loadgen.stderr.fileno(), b"ESTABLISHED ", args.ramp_timeout,
                            lg_seen)
        if est is None:
            loadgen.kill()
            loadgen.wait()
            raise RuntimeError(f"load generator did not ramp up: {bytes(lg_seen)[-2000:]!r}")
        held = int(est.split()[1])
        if held == 0:
            loadgen.kill()
            loadgen.wait()
            log.seek(0)
            raise RuntimeError(f"no connection could be established: "
                               f"{bytes(lg_seen)[-500:]!r}; server stderr "
                               f"{log.read()[-2000:]!r}")
        rss_held = rss_kb(server.pid)
        cpu_before = cpu_seconds(server.pid)
        out, err = loadgen.communicate(b"go\n", timeout=args.duration + 120)
        cpu_after = cpu_seconds(server.pid)
        if loadgen.returncode != 0:
            raise RuntimeError(f"load generator failed ({loadgen.returncode}): "
                               f"{(bytes(lg_seen) + err)[-2000:]!r}")
        result = json.loads(out)
        rss_after = rss_kb(server.pid)
    finally:
        stop(server)
        log.close()
    lat = result["latency_ms"]["overall"]
    messages = result["messages_per_second"] * args.duration
    user, system = (after - before for after, before in zip(cpu_after, cpu_before, strict=True))
    return {
        "server": name,
        "connections_requested": args.connections,
        "connections_held": held,
        "alive_at_end": result["alive_at_end"],
        "messages_per_second": result["messages_per_second"],
        "p50_ms": lat["p50"],
        "p99_ms": lat["p99"],
        "max_ms": lat["max"],
        "server_rss_kb": {"idle": rss_idle, "held": rss_held, "after_run": rss_after},
        "server_kb_per_connection": round((rss_held - rss_idle) / held, 2) if held else None,
        "client_errors": result["errors"]["total"],
        "rampup_failures": result["rampup"]["failures"],
        "server_kb_per_connection_after_run": (
            round((rss_after - rss_idle) / held, 2) if held else None),
        "loadgen_cpu_percent": result["client"]["timed_cpu_percent"],
        "server_cpu_us_per_message": {
            "user": round(1e6 * user / messages, 1) if messages else None,
            "system": round(1e6 * system / messages, 1) if messages else None,
        },
        "loadgen": result,
    }


def _fmt(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def _cpu(r: dict[str, Any]) -> str:
    cpu = r["server_cpu_us_per_message"]
    if cpu["user"] is None:
        return "-"
    return f"{cpu['user'] + cpu['system']:.1f} ({cpu['user']:.1f}+{cpu['system']:.1f})"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    head = ("| server | connections held | msgs/s | p50 ms | p99 ms | server KB/conn "
            "| KB/conn after run | client errors | ramp-up failures | loadgen CPU % "
            "| server CPU µs/msg (user+sys) |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['server']} | {r['alive_at_end']:,} / {r['connections_requested']:,} "
            f"| {_fmt(r['messages_per_second'], ',.0f')} | {_fmt(r['p50_ms'], '.2f')} "
            f"| {_fmt(r['p99_ms'], '.2f')} | {_fmt(r['server_kb_per_connection'], '.1f')} "
            f"| {_fmt(r['server_kb_per_connection_after_run'], '.1f')} "
            f"| {r['client_errors']} | {r['rampup_failures']} "
            f"| {_fmt(r['loadgen_cpu_percent'], '.0f')} | {_cpu(r)} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of traffic per server")
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between a reply and the next request (0: closed loop)")
    p.add_argument("--servers", default=",".join(ALL_SERVERS),
                   help=f"comma-separated subset of {','.join(ALL_SERVERS)}")
    p.add_argument("--reply-timeout", type=float, default=10.0)
    p.add_argument("--ready-timeout", type=float, default=60.0,
                   help="seconds to wait for a server's READY line")
    p.add_argument("--ramp-timeout", type=float, default=300.0,
                   help="seconds to wait for the connections to be established")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write every figure (with the full loadgen output) to FILE "
                        "('-': stdout, instead of the table)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; exit status 1 if a server could not be measured."""
    args = parse_args(argv)
    names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = [s for s in names if s not in ALL_SERVERS]
    if unknown:
        print(f"unknown server(s) {unknown}; choose from {', '.join(ALL_SERVERS)}",
              file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    failed: dict[str, str] = {}
    for name in names:
        cmd, env, why = server_command(name)
        if cmd is None:
            print(f"skipping {name}: {why}", file=sys.stderr)
            skipped[name] = why
            continue
        print(f"{name}: {args.connections:,} connections, {args.duration:g} s ...",
              file=sys.stderr, flush=True)
        try:
            row = measure(name, cmd, env, args)
        except Exception as exc:  # report and go on with the next server
            print(f"{name} FAILED: {exc}", file=sys.stderr)
            failed[name] = str(exc)
            continue
        print(f"  {row['messages_per_second']:,.0f} msg/s, p99 {row['p99_ms']} ms, "
              f"{row['server_kb_per_connection']} KB/conn, {row['client_errors']} errors",
              file=sys.stderr, flush=True)
        rows.append(row)
    info = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "connections": args.connections,
        "duration_s": args.duration,
        "interval_s": args.interval,
    }
    if args.json != "-":
        print(f"\n{args.connections:,} connections, {args.duration:g} s closed-loop "
              f"request/response per server, Python {info['python']}, {info['cpus']} CPUs "
              f"shared by the load generator and the server\n")
        print(markdown(rows) if rows else "(no server was measured)")
    if args.json is not None:
        doc = json.dumps({"info": info, "results": rows, "skipped": skipped,
                          "failed": failed}, indent=2)
        if args.json == "-":
            print(doc)
        else:
            Path(args.json).write_text(doc + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
