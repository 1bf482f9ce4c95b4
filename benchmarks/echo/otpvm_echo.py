"""The line echo server on otpvm: ``otpvm.net.serve`` with one process per
connection, each in ``active='once'`` mode, as the gen_tcp echo server does.

Usage::

    python benchmarks/echo/otpvm_echo.py [--port 0] [--host 127.0.0.1]
        [--acceptors 20] [--schedulers N] [--poison LINE]

Same protocol as every echo server in this folder (see asyncio_echo.py):
``READY <port>`` on stdout once listening, RLIMIT_NOFILE raised soft to hard,
SIGTERM/SIGINT stop it, backlog 4096.  ``--poison LINE`` makes a connection
that sends that line crash on a bad code path (the VM logs the crash, the
socket closes with its process).
"""

from __future__ import annotations

import argparse
import resource
import signal
import sys
from typing import Any

import otpvm
from otpvm import net
from otpvm.net import tcp

BACKLOG = 4096


async def echo(sock: net.Socket, poison: bytes | None) -> None:
    """One connection: echo lines until the peer leaves."""
    while True:
        msg = await otpvm.receive()
        if msg[0] != "tcp":
            return
        if msg[2] == poison:
            raise RuntimeError("poison line: a deliberately bad code path")
        await tcp.send(sock, msg[2])
        net.setopts(sock, active="once")


async def server(args: argparse.Namespace) -> None:
    """Serves until it gets 'stop'."""
    otpvm.register("echo_server", otpvm.self())
    poison = args.poison.encode() + b"\n" if args.poison else None
    listener = await net.serve(echo, args.port, args=(poison,), host=args.host,
                               acceptors=args.acceptors, max_connections=1_000_000,
                               backlog=BACKLOG, packet="line", active="once")
    print(f"READY {listener.port}", flush=True)
    await otpvm.receive("stop")
    await net.stop_server(listener)


def main(argv: list[str] | None = None) -> int:
    """Runs the server until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--acceptors", type=int, default=20)
    parser.add_argument("--schedulers", type=int, default=None,
                        help="scheduler threads (default: one per core)")
    parser.add_argument("--poison", default=None)
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with otpvm.VM(args.schedulers) as vm:
        def stop(*_: Any) -> None:
            vm.send("echo_server", "stop")

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        vm.run(server, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
