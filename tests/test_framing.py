"""Packet framing, on both framers: the Python reference
(otpvm.net.framing.Framer) and its compiled twin (otpvm._vm.Framer)."""

from __future__ import annotations

import pytest

from otpvm import _vm
from otpvm.net.framing import DEFAULT_PACKET_SIZE, PacketTooLarge
from otpvm.net.framing import Framer as PyFramer


@pytest.fixture(params=[PyFramer, _vm.Framer], ids=["python", "compiled"])
def framer(request):
    return request.param


def pops(f) -> list[bytes]:
    out = []
    while (packet := f.pop()) is not None:
        out.append(packet)
    return out


def test_lines_split_and_keep_their_newline(framer):
    f = framer("line")
    f.feed(b"a\nbc\nd")
    assert pops(f) == [b"a\n", b"bc\n"]
    assert f.buf == b"d"
    f.feed(b"e\n")
    assert pops(f) == [b"de\n"]
    assert f.buf == b""


def test_a_long_line_without_a_cap_comes_in_chunks(framer):
    f = framer("line", chunk=4)
    f.feed(b"abcdefghij")
    assert pops(f) == [b"abcd", b"efgh"]
    assert f.buf == b"ij"


def test_a_line_over_the_cap_is_emsgsize(framer):
    f = framer("line", max_size=3)
    f.feed(b"abc\n")                      # 3 bytes and the newline: fits
    assert pops(f) == [b"abc\n"]
    f.feed(b"abcd\n")
    with pytest.raises(PacketTooLarge, match="a line of 5 bytes is longer than packet_size=3"):
        f.pop()
    g = framer("line", max_size=3)
    g.feed(b"abcd")                       # no newline yet, already too long
    with pytest.raises(PacketTooLarge, match="a line is longer than packet_size=3"):
        g.pop()


@pytest.mark.parametrize("header", [1, 2, 4])
def test_counted_packets_round_trip(framer, header):
    f = framer(header)
    wire = f.encode(b"hello") + f.encode(b"") + f.encode(b"x" * 200)
    assert wire[:header] == (5).to_bytes(header, "big")
    f.feed(wire[:3])                      # a header (or part of one) and 5 bytes announced
    assert f.pop() is None
    assert f.buf == wire[:3]
    f.buf = b""
    f.feed(wire)
    assert pops(f) == [b"hello", b"", b"x" * 200]


def test_counted_packet_over_the_cap_and_over_the_header(framer):
    f = framer(2, max_size=10)
    f.feed((11).to_bytes(2, "big") + b"x" * 11)
    with pytest.raises(PacketTooLarge, match="a packet of 11 bytes is longer than packet_size=10"):
        f.pop()
    with pytest.raises(ValueError, match="a packet of 256 bytes does not fit a 1-byte header"):
        framer(1).encode(b"x" * 256)


def test_raw_with_and_without_a_length(framer):
    f = framer("raw")
    f.feed(b"abcdef")
    assert f.pop(4) == b"abcd"
    assert f.pop(4) is None
    assert f.pop() == b"ef"
    assert f.pop() is None


def test_rest_keeps_partial_text_and_drops_a_partial_counted_packet(framer):
    line = framer("line")
    line.feed(b"partial")
    assert line.rest() == b"partial"
    counted = framer(4)
    counted.feed(b"\x00\x00\x00\x09abc")
    assert counted.rest() == b""
    assert counted.buf == b""


def test_packet_option_is_validated_and_normalised(framer):
    f = framer("line")
    f.packet = 0
    assert f.packet == "raw"
    with pytest.raises(ValueError, match="packet must be one of"):
        f.packet = 3
    with pytest.raises(ValueError, match="packet must be one of"):
        framer(True)
    assert f.packet == "raw"


def test_a_capless_line_longer_than_the_chunk_comes_in_pieces_even_when_whole(framer):
    f = framer("line", chunk=4)
    f.feed(b"abcdefghij\nk\n")           # as Erlang: a line over the buffer is cut
    assert pops(f) == [b"abcd", b"efgh", b"ij\n", b"k\n"]


# -- the cap ------------------------------------------------------------------


def test_both_framers_have_the_same_default_cap(framer):
    assert framer(4).limit == DEFAULT_PACKET_SIZE == 64 * 1024 * 1024
    assert framer(4, max_size=10).limit == 10


def test_a_header_over_the_default_cap_is_refused_before_its_body(framer):
    f = framer(4)
    f.feed(b"\xff\xff\xff")
    assert f.pop() is None                # not a whole header yet
    f.feed(b"\xffabc")
    with pytest.raises(PacketTooLarge, match="a packet of 4294967295 bytes is longer than "
                                             "the default cap of 67108864 bytes"):
        f.pop()
    g = framer(4)
    g.feed((DEFAULT_PACKET_SIZE).to_bytes(4, "big"))
    assert g.pop() is None                # exactly the cap: accepted, waits for the body
    assert g.peak == 4


# -- linear work, bounded memory ---------------------------------------------


@pytest.mark.parametrize("header", [1, 2, 4])
def test_a_packet_fed_byte_by_byte_costs_linear_copies(framer, header):
    size = min(1 << (8 * header), 65536) - 1
    g = framer(header)
    wire = g.encode(b"x" * size) + g.encode(b"next")
    got = []
    for i in range(len(wire)):
        g.feed(wire[i:i + 1])
        got += pops(g)
    assert got == [b"x" * size, b"next"]
    # Each byte is written to the buffer once, moved by at most two doublings'
    # worth of copies, and copied out once: at most 4x, never size**2.
    assert g.copied <= 4 * len(wire)
    assert g.peak <= header + size          # the buffer never outgrew the packet
    assert g.capacity == 0 and g.pending == 0


def test_a_long_line_fed_in_pieces_is_searched_once(framer):
    f = framer("line", max_size=100_000)
    line = b"y" * 99_999 + b"\n"
    for i in range(0, len(line), 7):
        f.feed(line[i:i + 7])
        got = f.pop()
    assert got == line
    assert f.searched == len(line)
    assert f.copied <= 4 * len(line)


def test_a_capless_line_without_newline_stays_within_the_chunk(framer):
    f = framer("line", chunk=1000)
    got = []
    for _ in range(1000):
        f.feed(b"z" * 99)
        got += pops(f)
    assert [len(p) for p in got] == [1000] * 99
    assert f.peak <= 2 * (1000 + 99)        # doubling: at most twice what waits
    assert f.searched == 99_000             # every byte looked at once


def test_a_big_buffer_is_given_back_once_its_packet_is_out(framer):
    f = framer(4)
    big = 4 * 1024 * 1024
    wire = f.encode(b"b" * big) + f.encode(b"small")[:6]
    for i in range(0, len(wire), 65536):
        f.feed(wire[i:i + 65536])
    assert pops(f) == [b"b" * big]
    assert f.pending == 6
    assert f.capacity == 6                  # not the 4 MiB that held the packet
    assert f.peak >= big


def test_many_packets_in_one_read_cost_one_copy_each(framer):
    f = framer(2)
    wire = b"".join(f.encode(b"%05d" % i) for i in range(10_000))
    f.feed(wire)
    assert len(pops(f)) == 10_000
    assert f.copied == 10_000 * 5           # no copy of what follows each packet


# -- the two framers agree -----------------------------------------------------


def _drive(f, ops):
    """Runs feed/pop operations; returns what each pop gave and the counters."""
    out = []
    for op, arg in ops:
        if op == "feed":
            f.feed(arg)
            continue
        try:
            out.append(f.pop(arg))
        except PacketTooLarge as exc:
            out.append(("emsgsize", str(exc)))
            break
    out.append((f.pending, f.copied, f.searched, f.peak, f.capacity, f.buf, f.rest()))
    return out


def _fuzz_case(rng):
    packet = rng.choice(["raw", "line", 1, 2, 4])
    cap = rng.choice([0, 0, 5, 50, 300])
    chunk = rng.choice([3, 16, 100, 65536])
    if packet in (1, 2, 4):
        bodies = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 7, 60, 255, 400])))
                  for _ in range(rng.randrange(1, 8))]
        wire = b"".join(len(b).to_bytes(packet, "big") + b for b in bodies
                        if len(b) < 1 << (8 * packet))
    else:
        wire = bytes(rng.choice(b"ab\n") for _ in range(rng.randrange(0, 2000)))
    ops = []
    i = 0
    while i < len(wire):
        n = rng.choice([1, 2, 5, 64, 1000])
        ops.append(("feed", wire[i:i + n]))
        i += n
        for _ in range(rng.randrange(0, 3)):
            ops.append(("pop", rng.choice([0, 0, 3]) if packet == "raw" else 0))
    ops += [("pop", 0)] * 5000
    return packet, cap, chunk, wire, ops


def test_fuzz_the_compiled_framer_does_what_the_reference_does():
    import random
    rng = random.Random(20261127)
    for _ in range(300):
        packet, cap, chunk, wire, ops = _fuzz_case(rng)
        ref = _drive(PyFramer(packet, max_size=cap, chunk=chunk), ops)
        fast = _drive(_vm.Framer(packet, max_size=cap, chunk=chunk), ops)
        assert fast == ref, (packet, cap, chunk, wire)
        delivered = [p for p in ref[:-1] if isinstance(p, bytes)]
        if packet == "raw":
            assert b"".join(delivered) + ref[-1][-1] == wire
        if packet == "line" and not any(isinstance(p, tuple) for p in ref[:-1]):
            assert b"".join(delivered) + ref[-1][-1] == wire
            assert all(len(p) <= (cap + 1 if cap else chunk) for p in delivered)
            assert all(p.endswith(b"\n") or (not cap and len(p) == chunk) for p in delivered)
