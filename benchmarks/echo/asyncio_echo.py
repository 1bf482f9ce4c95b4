"""A line echo server on asyncio (or uvloop, or otpvm.aio), written the way most people write it.

Usage::

    python benchmarks/echo/asyncio_echo.py [--port 0] [--host 127.0.0.1]
        [--style streams|protocol] [--loop asyncio|uvloop|otpvm.aio]
        [--schedulers N] [--poison LINE]

``--style streams`` (default) is ``asyncio.start_server`` with a
``readline()`` / ``write()`` / ``await drain()`` loop per connection: the
idiomatic version.  ``--style protocol`` is an ``asyncio.Protocol`` that
echoes every complete line from ``data_received`` and pauses reading while the
transport's write buffer is full: the common faster version.  ``--loop
otpvm.aio`` runs the same code on ``otpvm.aio.new_event_loop`` (a VM of
``--schedulers`` threads, default 1: the loop is one process).

Protocol shared by every echo server in this folder: ``--port 0`` picks a free
port; ``READY <port>`` is printed on stdout (flushed) once listening; the
open-files limit is raised soft to hard; SIGTERM (or SIGINT) stops the server;
the listen backlog is 4096.  ``--poison LINE``: a connection that sends that
line is closed by the server (the stand-in for a handler that crashes), and
everyone else carries on.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys

BACKLOG = 4096


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE soft to hard; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def make_stream_handler(poison: bytes | None):
    """The readline/write/drain handler for ``asyncio.start_server``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                if line == poison:
                    break
                writer.write(line)
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return handle


class EchoProtocol(asyncio.Protocol):
    """Echoes complete lines; keeps an incomplete tail until its newline arrives."""

    __slots__ = ("transport", "tail", "poison")

    def __init__(self, poison: bytes | None) -> None:
        self.transport: asyncio.Transport | None = None
        self.tail = b""
        self.poison = poison

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not isinstance-checked: uvloop's transports do not subclass asyncio.Transport.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.tail:
            data = self.tail + data
        end = data.rfind(b"\n") + 1
        if end == 0:
            self.tail = data
            return
        self.tail = data[end:]
        out = data[:end] if end != len(data) else data
        if self.poison is not None and self.poison in out.splitlines(keepends=True):
            self.transport.close()
            return
        self.transport.write(out)

    def pause_writing(self) -> None:  # the peer does not read: stop reading from it
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, style: str, poison: bytes | None) -> None:
    """Listen, print READY, serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if style == "streams":
        server = await asyncio.start_server(
            make_stream_handler(poison), host, port, backlog=BACKLOG
        )
    else:
        server = await loop.create_server(
            lambda: EchoProtocol(poison), host, port, backlog=BACKLOG
        )
    bound = server.sockets[0].getsockname()[1]
    print(f"READY {bound}", flush=True)
    async with server:
        await stop.wait()
    # Exit without waiting for the connection handlers: this is a benchmark peer.


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--style", choices=("streams", "protocol"), default="streams")
    p.add_argument("--loop", choices=("asyncio", "uvloop", "otpvm.aio"), default="asyncio")
    p.add_argument("--schedulers", type=int, default=1, help="otpvm.aio's VM's scheduler threads")
    p.add_argument("--poison", default=None, help="close a connection that sends this line")
    args = p.parse_args(argv)
    raise_nofile()
    poison = None
    if args.poison is not None:
        poison = args.poison.encode()
        if not poison.endswith(b"\n"):
            poison += b"\n"
    coro = serve(args.host, args.port, args.style, poison)
    if args.loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed", file=sys.stderr)
            return 2
        uvloop.run(coro)
    elif args.loop == "otpvm.aio":
        import otpvm
        import otpvm.aio

        vm = otpvm.VM(schedulers=args.schedulers)
        with asyncio.Runner(loop_factory=lambda: otpvm.aio.new_event_loop(vm)) as runner:
            runner.run(coro)
        vm.stop()
    else:
        asyncio.run(coro)
    return 0


if __name__ == "__main__":
    sys.exit(main())
