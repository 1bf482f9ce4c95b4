"""Soak test: an echo server under ``net.serve`` against churn, resets and
hostile clients, checking that memory, descriptors and processes come back.

Usage::

    python benchmarks/soak.py [--seconds 60] [--every 5] [--rss-slack-mb 8]

The server is the README's echo handler on length-prefixed packets
(``packet=4``, ``packet_size=4 MiB``, ``active='once'``) in this process; the
load generator is this script again (``--load PORT``), in a child process,
with asyncio:

* churn: connect, echo 1-4 packets (each checked byte for byte), close;
* persistent: connections held for the whole run, echoing now and then;
* resets: RST (SO_LINGER 0) at once, after one packet sent (the server's
  read or send meets it), or after an echo and one more packet;
* hostile: a header over ``packet_size`` (the server must cut it off:
  emsgsize), or half of a 4 MiB packet then an RST or a FIN; and, once the
  time is up, a last round of such half packets and RSTs, more of them than
  the server has acceptors.

A warm-up round (a few seconds of the same mix) comes first; the figures it
leaves once every connection has ended are the baseline.  A line every
``--every`` seconds shows the server's RSS, open descriptors, VM processes
and connections, and the load's counters.  At the end, once the connections
have drained, descriptors and processes must be back to the baseline and
RSS within ``--rss-slack-mb`` of it; no echo may be lost or garbled, every
hostile header must be cut off, and the VM must log no crash or supervisor
report.  Exit status 0 when all of that held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import logging
import os
import random
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any

MB = 1 << 20
PACKET_SIZE = 4 * MB                # the server's packet_size (explicit: a cap)
HOSTILE_HEADER = 64 * MB            # what an over-the-cap header claims
LINGER_0 = struct.pack("ii", 1, 0)  # close sends an RST
ACCEPTORS = 10
LAST_ROUND = ACCEPTORS + 2          # half packets then RST once the time is up


# -- the server (this process) ----------------------------------------------


class ReportCounter(logging.Handler):
    """Counts the VM's crash and supervisor reports; keeps the first of each."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        kind = text.split(":", 1)[0] if text.startswith(("crash report", "supervisor report")) \
            else "other"
        self.counts[kind] += 1
        self.first.setdefault(kind, text.splitlines()[0][:300])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class Server:
    """The echo server in a VM of its own, held by a process that stops it."""

    def __init__(self, schedulers: int | None) -> None:
        import otpvm
        self.otpvm = otpvm
        self.vm = otpvm.VM(schedulers)
        self.port: int = self.vm.run(self._start)

    async def _start(self) -> int:
        otpvm = self.otpvm
        me = otpvm.self()
        self.holder = otpvm.spawn(_hold, me)
        _, port = await otpvm.receive(("listening", otpvm.ANY), timeout=10)
        return port  # type: ignore[no-any-return]

    def connections(self) -> int:
        from otpvm import net
        return self.vm.run(net.connection_count, "soak")  # type: ignore[no-any-return]

    def processes(self) -> int:
        return len(self.vm.processes())

    def stop(self) -> None:
        self.vm.send(self.holder, "stop")
        self.vm.stop()


async def _echo(sock: Any) -> None:
    """The README's echo handler, verbatim but for its packets."""
    import otpvm
    from otpvm import net
    from otpvm.net import tcp
    while True:
        msg = await otpvm.receive()
        match msg:
            case ("tcp", _, data):
                await tcp.send(sock, data)
                net.setopts(sock, active="once")
            case ("tcp_closed", _) | ("tcp_error", _, _):
                return


async def _hold(parent: Any) -> None:
    import otpvm
    from otpvm import net
    listener = await net.serve(_echo, 0, name="soak", host="127.0.0.1", acceptors=ACCEPTORS,
                               max_connections=20_000, backlog=4096, packet=4,
                               packet_size=PACKET_SIZE, active="once")
    otpvm.send(parent, ("listening", listener.port))
    await otpvm.receive("stop")
    await net.stop_server(listener)


# -- the load generator (a child process) -----------------------------------


class Load:
    """The clients, in one asyncio loop; counters go to stdout as JSON."""

    def __init__(self, port: int, seconds: float, seed: int, last_round: int) -> None:
        self.port, self.seconds, self.last_round = port, seconds, last_round
        self.rng = random.Random(seed)
        self.stats: Counter[str] = Counter()
        self.until = 0.0

    async def run(self) -> None:
        self.until = time.monotonic() + self.seconds
        tasks = [self._loop(self._churn) for _ in range(12)]
        tasks += [self._loop(self._reset) for _ in range(6)]
        tasks += [self._loop(self._hostile) for _ in range(3)]
        tasks += [self._persistent() for _ in range(50)]
        reporter = asyncio.ensure_future(self._report())
        await asyncio.gather(*tasks)
        # Last, more hostile half packets than the server has acceptors: the
        # sockets the acceptors accepted last are ones that buffered a lot.
        await asyncio.gather(*(self._loop(self._half_packet, once=True)
                               for _ in range(self.last_round)))
        reporter.cancel()
        self._print(final=True)

    def _print(self, final: bool = False) -> None:
        print(json.dumps({**self.stats, "final": final}), flush=True)

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(1)
            self._print()

    async def _loop(self, op: Any, once: bool = False) -> None:
        while once or time.monotonic() < self.until:
            try:
                await op()
            except (ConnectionError, OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                self.stats[f"error {type(exc).__name__} in {op.__name__[1:]}"] += 1
            if once:
                return

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        conn = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", self.port), 10)
        self.stats["connections"] += 1
        return conn

    def _payload(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((1, 16, 200, 1500, 9000, 70000)))

    async def _echo(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One packet there and back; False (and counted) if it did not come back whole."""
        data = self._payload()
        writer.write(struct.pack(">I", len(data)) + data)
        try:
            size = struct.unpack(">I", await asyncio.wait_for(reader.readexactly(4), 10))[0]
            back = await asyncio.wait_for(reader.readexactly(size), 10)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            self.stats["echoes lost"] += 1
            return False
        if back != data:
            self.stats["echoes garbled"] += 1
            return False
        self.stats["echoes"] += 1
        return True

    @staticmethod
    def _rst(writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_0)
        writer.transport.abort()

    async def _churn(self) -> None:
        reader, writer = await self._connect()
        for _ in range(self.rng.randint(1, 4)):
            if not await self._echo(reader, writer):
                break
        writer.close()
        await writer.wait_closed()
        self.stats["churned"] += 1

    async def _reset(self) -> None:
        reader, writer = await self._connect()
        how = self.rng.choice(("at once", "after a packet", "after an echo"))
        if how == "after an echo":
            await self._echo(reader, writer)
        if how != "at once":
            data = self._payload()
            writer.write(struct.pack(">I", len(data)) + data)
            await writer.drain()
        self._rst(writer)
        self.stats["resets"] += 1

    async def _hostile(self) -> None:
        reader, writer = await self._connect()
        how = self.rng.choice(("over the cap", "half then RST", "half then FIN"))
        if how == "over the cap":
            writer.write(struct.pack(">I", HOSTILE_HEADER) + b"h" * 4096)
            try:                            # the server must cut it off
                await asyncio.wait_for(reader.read(), 10)
                self.stats["hostile cut off"] += 1
            except ConnectionError:
                self.stats["hostile cut off"] += 1
            except TimeoutError:
                self.stats["hostile not cut off"] += 1
            writer.close()
        else:
            await self._half_packet(reader, writer, rst=how == "half then RST")

    async def _half_packet(self, reader: asyncio.StreamReader | None = None,
                           writer: asyncio.StreamWriter | None = None, rst: bool = True) -> None:
        if writer is None:
            reader, writer = await self._connect()
        writer.write(struct.pack(">I", PACKET_SIZE - 16) + b"h" * (PACKET_SIZE // 2))
        await writer.drain()
        await asyncio.sleep(0.05)           # the server buffers it
        if rst:
            self._rst(writer)
        else:
            writer.close()
        self.stats["hostile half packets"] += 1

    async def _persistent(self) -> None:
        try:
            reader, writer = await self._connect()
        except (ConnectionError, OSError, TimeoutError) as exc:
            self.stats[f"error {type(exc).__name__} in persistent"] += 1
            return
        while time.monotonic() < self.until:
            if not await self._echo(reader, writer):
                return
            await asyncio.sleep(self.rng.uniform(0.02, 0.1))
        writer.close()
        await writer.wait_closed()


# -- the driver ---------------------------------------------------------------


class LoadProcess:
    """The load generator's process; its latest counters, read by a thread."""

    def __init__(self, port: int, seconds: float, seed: int, last_round: int) -> None:
        self.latest: dict[str, Any] = {}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--load", str(port), "--seconds", str(seconds),
             "--seed", str(seed), "--last-round", str(last_round)],
            stdout=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.latest = json.loads(line)

    def wait(self, timeout: float) -> dict[str, Any]:
        self.proc.wait(timeout)
        self.reader.join(timeout)
        assert self.proc.stdout is not None
        self.proc.stdout.close()            # its descriptor is not the server's
        return self.latest


def drain(server: Server, timeout: float = 30.0) -> int:
    """Waits until no connection is left; returns how many are."""
    deadline = time.monotonic() + timeout
    while (left := server.connections()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def trim() -> None:
    """Asks glibc to give freed memory back to the OS (malloc_trim), so that
    RSS measures what is in use, not what the allocator keeps at hand: with
    several threads freeing megabyte buffers it keeps arenas of them."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass                                # not glibc: RSS includes the allocator's cache


def settled_rss(seconds: float = 1.0) -> int:
    """The lowest RSS seen over a short while, trimmed."""
    trim()
    lowest = rss_bytes()
    for _ in range(int(seconds / 0.1)):
        time.sleep(0.1)
        lowest = min(lowest, rss_bytes())
    return lowest


def figures(server: Server) -> tuple[int, int, int]:
    return settled_rss(), open_fds(), server.processes()


def soak(args: argparse.Namespace) -> int:
    reports = ReportCounter()
    log = logging.getLogger("otpvm")
    log.addHandler(reports)
    log.propagate = False
    server = Server(args.schedulers)
    started = time.monotonic()
    try:
        warm = LoadProcess(server.port, args.warmup, args.seed + 1, 0).wait(args.warmup + 60)
        warm_left = drain(server)
        base_rss, base_fds, base_procs = figures(server)
        print(f"soak: echo server on 127.0.0.1:{server.port} (packet=4, packet_size "
              f"{PACKET_SIZE // MB} MiB, active='once'); warm-up: {warm.get('echoes', 0):,} "
              f"echoes, {warm.get('connections', 0):,} connections")
        print(f"baseline: rss {base_rss / MB:.1f} MB, {base_fds} fds, {base_procs} processes")
        print(f"{'t (s)':>6} {'rss MB':>7} {'fds':>5} {'procs':>6} {'conns':>6} {'echoes':>9} "
              f"{'churned':>8} {'resets':>7} {'hostile':>8} {'crash/sup':>9}")
        load = LoadProcess(server.port, args.seconds, args.seed, LAST_ROUND)
        t0 = time.monotonic()
        peak = base_rss
        while load.proc.poll() is None:
            time.sleep(min(args.every, 0.25))
            now = time.monotonic() - t0
            if now // args.every != (now - 0.25) // args.every or load.proc.poll() is not None:
                rss = rss_bytes()
                peak = max(peak, rss)
                s = load.latest
                hostile = s.get("hostile cut off", 0) + s.get("hostile half packets", 0)
                print(f"{now:6.1f} {rss / MB:7.1f} {open_fds():5d} {server.processes():6d} "
                      f"{server.connections():6d} {s.get('echoes', 0):9,} "
                      f"{s.get('churned', 0):8,} {s.get('resets', 0):7,} {hostile:8,} "
                      f"{reports.counts['crash report']:4d}/{reports.counts['supervisor report']}",
                      flush=True)
        stats = load.wait(60)
        left = drain(server)
        rss, fds, procs = figures(server)
    finally:
        server.stop()
    return verdict(args, stats, reports, (warm_left, left), (base_rss, base_fds, base_procs),
                   (rss, fds, procs), peak, time.monotonic() - started)


def verdict(args: argparse.Namespace, stats: dict[str, Any], reports: ReportCounter,
            left: tuple[int, int], base: tuple[int, int, int], end: tuple[int, int, int],
            peak: int, took: float) -> int:
    errors = {k: v for k, v in stats.items() if k.startswith("error")}
    slack = args.rss_slack_mb * MB
    print(f"\nsoak: {args.seconds:g} s of load: {stats.get('echoes', 0):,} echoes "
          f"({stats.get('echoes lost', 0)} lost, {stats.get('echoes garbled', 0)} garbled), "
          f"{stats.get('connections', 0):,} connections, {stats.get('churned', 0):,} churned, "
          f"{stats.get('resets', 0):,} resets, {stats.get('hostile cut off', 0):,} hostile "
          f"headers cut off, {stats.get('hostile half packets', 0):,} half packets")
    print(f"  rss {base[0] / MB:.1f} MB at the start, {peak / MB:.1f} MB at the peak, "
          f"{end[0] / MB:.1f} MB at the end ({(end[0] - base[0]) / MB:+.1f}); fds {base[1]} -> "
          f"{end[1]}; processes {base[2]} -> {end[2]}")
    for kind in ("crash report", "supervisor report", "other"):
        if kind in reports.first:
            print(f"  first {kind}: {reports.first[kind]}")
    checks = [
        (stats.get("final") is True, "the load generator finished"),
        (stats.get("echoes", 0) > 0, "echoes flowed"),
        (not stats.get("echoes lost") and not stats.get("echoes garbled"),
         "no echo lost or garbled"),
        (not stats.get("hostile not cut off"), "every over-the-cap header was cut off"),
        (not errors, f"no client error{'' if not errors else ': ' + str(errors)}"),
        (reports.counts["crash report"] == 0, "no crash report"),
        (reports.counts["supervisor report"] == 0, "no supervisor report"),
        (left == (0, 0), "every connection ended"),
        (end[1] == base[1], f"open descriptors back to {base[1]}"),
        (end[2] == base[2], f"VM processes back to {base[2]}"),
        (end[0] <= base[0] + slack, f"rss back within {args.rss_slack_mb:g} MB of the start"),
    ]
    for ok, what in checks:
        print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    print(f"  ({took:.1f} s in all)")
    return 0 if all(ok for ok, _ in checks) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between report lines")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up load")
    parser.add_argument("--rss-slack-mb", type=float, default=8.0,
                        help="how far above the baseline RSS may end")
    parser.add_argument("--schedulers", type=int, default=None, help="the VM's schedulers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--last-round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.every <= 0 or args.warmup <= 0:
        parser.error("--seconds, --every and --warmup must be positive")
    if args.load is not None:
        asyncio.run(Load(args.load, args.seconds, args.seed, args.last_round).run())
        return 0
    return soak(args)


if __name__ == "__main__":
    sys.exit(main())
