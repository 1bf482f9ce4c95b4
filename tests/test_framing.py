"""Packet framing, on both framers: the Python reference
(otpvm.net.framing.Framer) and its compiled twin (otpvm._vm.Framer)."""

from __future__ import annotations

import pytest

from otpvm import _vm
from otpvm.net.framing import Framer as PyFramer
from otpvm.net.framing import PacketTooLarge


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
