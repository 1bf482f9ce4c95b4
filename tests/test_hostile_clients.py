"""Hostile clients against otpvm sockets, in every framing mode.

Each test runs a real TCP client (a plain blocking socket on its own thread)
against an otpvm socket owned by a process, on both data paths (the
``net_impl`` fixture).  A peer must never make the server buffer more than
its cap or do more than linear work: the tests check the framer's own
counters (``copied``, ``searched``, ``peak``), never the clock.
"""

from __future__ import annotations

import re
import socket
import threading

import pytest

import otpvm
from otpvm import net
from otpvm.net import PacketTooLarge, tcp
from otpvm.net.framing import DEFAULT_PACKET_SIZE, MAX_PACKET_SIZE

pytestmark = pytest.mark.usefixtures("net_impl")

T = 30.0  # generous timeout for anything awaited (megabytes go through)
MiB = 1024 * 1024


def run(main, *args):
    with otpvm.VM(1) as vm:
        return vm.run(main, *args)


class Client(threading.Thread):
    """Connects, sends chunks (small TCP segments: nodelay), then waits until
    the server closes the connection or ``done`` is set."""

    def __init__(self, port: int, chunks):
        super().__init__(daemon=True)
        self.port, self.chunks = port, chunks
        self.done = threading.Event()
        self.sent = 0
        self.closed_by_server = False

    def run(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=T) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                for chunk in self.chunks:
                    sock.sendall(chunk)
                    self.sent += len(chunk)
                sock.settimeout(0.05)
                while not self.done.is_set():
                    try:
                        if sock.recv(65536) == b"":
                            break
                    except TimeoutError:
                        continue
            except (ConnectionResetError, BrokenPipeError):
                pass
            self.closed_by_server = not self.done.is_set()


async def serve_one(chunks, **opts):
    """A server socket with these options, and the client sending chunks to it."""
    lsock = tcp.listen(0, host="127.0.0.1", **opts)
    client = Client(net.sockname(lsock)[1], chunks)
    client.start()
    server = await tcp.accept(lsock, timeout=T)
    net.close(lsock)
    return server, client


async def finish(client: Client, *, closed: bool = False) -> Client:
    """Waits for the client to end: told to (closed=False) or on seeing the
    server close the connection."""
    if not closed:
        client.done.set()
    await otpvm.run_blocking(client.join, T)
    assert not client.is_alive()
    return client


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


# -- a header announcing more than the cap -------------------------------------

OVERSIZE = [  # header size, packet_size, announced size, error text
    (4, 0, 2**32 - 1, "a packet of 4294967295 bytes is longer than the default cap "
                      "of 67108864 bytes (packet_size=0)"),
    (4, 0, DEFAULT_PACKET_SIZE + 1, "longer than the default cap"),
    (4, 1000, 1001, "a packet of 1001 bytes is longer than packet_size=1000"),
    (2, 100, 2**16 - 1, "a packet of 65535 bytes is longer than packet_size=100"),
    (1, 100, 255, "a packet of 255 bytes is longer than packet_size=100"),
]


@pytest.mark.parametrize("header, cap, announced, text", OVERSIZE)
def test_an_oversize_header_is_refused_at_once_in_active_mode(header, cap, announced, text):
    async def main():
        # The client sends the header and 3 bytes, then waits: the refusal
        # cannot depend on more of the body arriving.
        wire = announced.to_bytes(header, "big") + b"abc"
        server, client = await serve_one([wire], packet=header, packet_size=cap, active=True)
        msgs = [await otpvm.receive(timeout=T) for _ in range(2)]
        peak = server._framer.peak
        return msgs, server, peak, await finish(client, closed=True)

    msgs, server, peak, client = run(main)
    assert msgs == [("tcp_error", server, "emsgsize"), ("tcp_closed", server)]
    assert server.closed
    assert peak <= header + 3               # nothing buffered beyond what came
    assert client.closed_by_server


@pytest.mark.parametrize("header, cap, announced, text", OVERSIZE)
def test_an_oversize_header_is_refused_at_once_in_passive_mode(header, cap, announced, text):
    async def main():
        wire = announced.to_bytes(header, "big") + b"abc"
        server, client = await serve_one([wire], packet=header, packet_size=cap)
        with pytest.raises(PacketTooLarge, match=re.escape(text)):
            await tcp.recv(server, timeout=T)
        return server, server._framer.peak, await finish(client, closed=True)

    server, peak, client = run(main)
    assert server.closed
    assert peak <= header + 3
    assert client.closed_by_server


# -- a big but allowed packet, dribbled ------------------------------------------

DRIBBLES = [  # header size, body size, chunk size
    (1, 255, 1),
    (2, 65535, 64),
    (4, 8 * MiB, 4096),
]


@pytest.mark.parametrize("header, size, chunk", DRIBBLES)
def test_a_dribbled_packet_costs_linear_work_and_bounded_memory(header, size, chunk):
    async def main():
        body = bytes(range(256)) * (size // 256) + bytes(size % 256)
        wire = size.to_bytes(header, "big") + body
        server, client = await serve_one(pieces(wire, chunk), packet=header, active=True)
        msg = await otpvm.receive(timeout=T)
        framer = server._framer
        counters = framer.copied, framer.peak, framer.capacity
        net.close(server)
        return msg == ("tcp", server, body), len(wire), counters, await finish(client)

    same, total, (copied, peak, capacity), client = run(main)
    assert same
    assert client.sent == total
    assert copied <= 4 * total              # not total**2 / read size, as it was
    assert peak <= total                    # the buffer never outgrew the packet
    assert capacity == 0                    # and was let go once it was out


# -- line mode -------------------------------------------------------------------


def test_an_endless_line_comes_in_buffer_sized_pieces_without_a_cap():
    async def main():
        stream = b"z" * (4 * MiB) + b"\n"
        server, client = await serve_one(pieces(stream, 4096), packet="line", active=True)
        got, size = [], 0
        while size < len(stream):
            msg = await otpvm.receive(("tcp", server, otpvm.ANY), timeout=T)
            got.append(msg[2])
            size += len(msg[2])
        framer = server._framer
        counters = framer.copied, framer.searched, framer.peak
        net.close(server)
        return stream, got, counters, await finish(client)

    stream, got, (copied, searched, peak), client = run(main)
    assert b"".join(got) == stream
    assert [len(p) for p in got] == [65536] * 64 + [1]     # the default buffer
    # Each byte is searched once for a newline (a newline seen past a piece's
    # end is looked at again by the next piece).
    assert searched <= len(stream) + len(got)
    assert copied <= 4 * len(stream)
    assert peak <= 2 * (65536 + 65536)      # a piece and a read, doubled at most


def test_a_line_over_packet_size_is_refused_once_over_it():
    async def main():
        server, client = await serve_one(pieces(b"w" * (2 * MiB), 4096), packet="line",
                                         packet_size=MiB, active=True)
        msgs = [await otpvm.receive(timeout=T) for _ in range(2)]
        return msgs, server, server._framer.peak, await finish(client, closed=True)

    msgs, server, peak, client = run(main)
    assert msgs == [("tcp_error", server, "emsgsize"), ("tcp_closed", server)]
    assert peak <= 2 * (MiB + 65536)
    assert client.closed_by_server


def test_a_dribbled_line_under_packet_size_is_searched_once():
    async def main():
        line = b"v" * (MiB - 1) + b"\n"
        server, client = await serve_one(pieces(line, 1024), packet="line",
                                         packet_size=MiB, active=True)
        msg = await otpvm.receive(timeout=T)
        framer = server._framer
        counters = framer.copied, framer.searched, framer.peak
        net.close(server)
        return msg == ("tcp", server, line), len(line), counters, await finish(client)

    same, total, (copied, searched, peak), client = run(main)
    assert same
    assert searched == total
    assert copied <= 4 * total
    assert peak <= 2 * total


# -- raw mode --------------------------------------------------------------------


def test_a_raw_flood_is_delivered_read_by_read():
    async def main():
        stream = bytes(range(256)) * (32 * 1024)            # 8 MiB
        server, client = await serve_one(pieces(stream, 65536), active=True)
        got, size = [], 0
        while size < len(stream):
            msg = await otpvm.receive(("tcp", server, otpvm.ANY), timeout=T)
            got.append(msg[2])
            size += len(msg[2])
        framer = server._framer
        counters = framer.copied, framer.peak
        net.close(server)
        return stream, got, counters, await finish(client)

    stream, got, (copied, peak), client = run(main)
    assert b"".join(got) == stream
    assert max(len(p) for p in got) <= 65536
    assert copied == 0                      # each read goes out as it came
    assert peak <= 65536


def test_a_dribbled_raw_recv_of_a_length_costs_linear_work():
    async def main():
        data = bytes(range(256)) * (4 * 1024)               # 1 MiB
        server, client = await serve_one(pieces(data, 1024))
        got = await tcp.recv(server, len(data), timeout=T)
        framer = server._framer
        counters = framer.copied, framer.peak
        net.close(server)
        return got == data, len(data), counters, await finish(client)

    same, total, (copied, peak), client = run(main)
    assert same
    assert copied <= 4 * total
    assert peak <= 2 * total


def test_a_raw_recv_may_not_ask_for_more_than_the_cap():
    async def main():
        server, client = await serve_one([b"abc"])
        with pytest.raises(ValueError, match="recv length must be at most 67108864 bytes "
                                             r"\(packet_size, or 67108864 while it is 0\), "
                                             "not 67108865"):
            await tcp.recv(server, DEFAULT_PACKET_SIZE + 1, timeout=T)
        net.setopts(server, packet_size=2)
        with pytest.raises(ValueError, match="recv length must be at most 2 bytes"):
            await tcp.recv(server, 3, timeout=T)
        first = await tcp.recv(server, 2, timeout=T)      # the socket is still fine
        net.setopts(server, packet_size=0)
        rest = await tcp.recv(server, 1, timeout=T)
        net.close(server)
        return first, rest, await finish(client)

    first, rest, _ = run(main)
    assert (first, rest) == (b"ab", b"c")


# -- option ranges -----------------------------------------------------------------

BAD_SIZES = [
    ("packet_size", 2**63, "packet_size must be a non-negative int up to 2147483647 "
                           r"\(2\*\*31 - 1\), not 9223372036854775808"),
    ("packet_size", 2**31, "packet_size must be a non-negative int up to 2147483647"),
    ("packet_size", -1, "packet_size must be a non-negative int up to 2147483647"),
    ("buffer", 2**63, "buffer must be a positive int up to 2147483647 "
                      r"\(2\*\*31 - 1\), not 9223372036854775808"),
    ("buffer", 0, "buffer must be a positive int up to 2147483647"),
    ("high_watermark", 2**63, "high_watermark must be a positive int up to 2147483647"),
    ("low_watermark", 2**31, "low_watermark must be a positive int up to 2147483647"),
    ("recbuf", 2**63, "recbuf must be a bool or a non-negative int up to 2147483647"),
]


@pytest.mark.parametrize("name, value, text", BAD_SIZES)
def test_size_options_out_of_range_are_a_value_error_naming_them(name, value, text):
    async def main():
        server, client = await serve_one([])
        before = net.getopts(server, name)
        with pytest.raises(ValueError, match=text):
            net.setopts(server, **{name: value})
        after = net.getopts(server, name)
        with pytest.raises(ValueError, match=text):
            tcp.listen(0, host="127.0.0.1", **{name: value})
        with pytest.raises(ValueError, match=text):
            await net.serve(lambda sock: None, 0, **{name: value})
        net.close(server)
        await finish(client)
        return before, after

    before, after = run(main)
    assert before == after                  # nothing was changed


def test_the_largest_packet_size_is_accepted():
    async def main():
        server, client = await serve_one([], packet=4)
        net.setopts(server, packet_size=MAX_PACKET_SIZE)
        opts = net.getopts(server, "packet_size")
        net.close(server)
        await finish(client)
        return opts

    assert run(main) == {"packet_size": MAX_PACKET_SIZE}
