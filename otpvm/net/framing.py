r"""Packet framing, as ``inet:setopts(S, [{packet, P}])`` does it.

``'raw'`` (or ``0``) delivers bytes as they come; ``'line'`` delivers one line
at a time, the ``\n`` included; ``1``, ``2`` and ``4`` are packets preceded by
a big-endian length header of that many bytes, which ``send`` adds and
``recv`` strips.  ``packet_size`` caps a packet's body (0: no cap).

Memory stays bounded in every mode: a line longer than the cap (or, without
a cap, longer than the receive buffer) is delivered in pieces when there is
no cap and is an error (``emsgsize``) when there is one, like Erlang.
"""

from __future__ import annotations

from typing import Literal

Packet = Literal["raw", "line", 0, 1, 2, 4]
PACKET_TYPES: tuple[object, ...] = ("raw", "line", 0, 1, 2, 4)


class PacketTooLarge(Exception):
    """A packet is longer than ``packet_size`` allows (Erlang's emsgsize)."""


def check_packet(packet: object) -> Packet:
    """Validates a packet option; returns it normalised (0 becomes 'raw')."""
    if isinstance(packet, bool) or packet not in PACKET_TYPES:
        raise ValueError(f"packet must be one of 'raw', 'line', 0, 1, 2 or 4, not {packet!r}")
    return "raw" if packet == 0 else packet  # type: ignore[return-value]


class Framer:
    """Splits received bytes into packets and frames packets to send."""

    __slots__ = ("_packet", "max_size", "chunk", "buf")

    def __init__(self, packet: Packet = "raw", max_size: int = 0, chunk: int = 65536) -> None:
        self.packet = packet
        self.max_size = max_size
        self.chunk = chunk          # a capless line longer than this comes in pieces
        self.buf = b""

    @property
    def packet(self) -> Packet:
        """The framing: 'raw', 'line', 1, 2 or 4 (validated when set)."""
        return self._packet

    @packet.setter
    def packet(self, value: object) -> None:
        self._packet = check_packet(value)

    def feed(self, data: bytes) -> None:
        """Adds received bytes."""
        self.buf = self.buf + data if self.buf else data

    def pop(self, length: int = 0) -> bytes | None:
        """The next complete packet, or None.  ``length`` (raw mode only)
        asks for exactly that many bytes.  Raises PacketTooLarge."""
        buf = self.buf
        if not buf:
            return None
        packet = self.packet
        if packet == "line":
            return self._pop_line(buf)
        if packet == "raw":
            if length == 0:
                self.buf = b""
                return buf
            if len(buf) < length:
                return None
            self.buf = buf[length:]
            return buf[:length]
        return self._pop_counted(buf, packet)

    def _pop_line(self, buf: bytes) -> bytes | None:
        end = buf.find(b"\n") + 1
        cap = self.max_size
        if end == 0:
            if cap and len(buf) > cap:
                raise PacketTooLarge(f"a line is longer than packet_size={cap}")
            if not cap and len(buf) >= self.chunk:
                end = self.chunk     # no cap: deliver it in pieces, as Erlang does
            else:
                return None
        elif cap and end > cap + 1:
            raise PacketTooLarge(f"a line of {end} bytes is longer than packet_size={cap}")
        if end == len(buf):
            self.buf = b""
            return buf
        self.buf = buf[end:]
        return buf[:end]

    def _pop_counted(self, buf: bytes, header: int) -> bytes | None:
        if len(buf) < header:
            return None
        size = int.from_bytes(buf[:header], "big")
        if self.max_size and size > self.max_size:
            raise PacketTooLarge(f"a packet of {size} bytes is longer than "
                                 f"packet_size={self.max_size}")
        end = header + size
        if len(buf) < end:
            return None
        self.buf = buf[end:]
        return buf[header:end]

    def rest(self) -> bytes:
        """What is left at end of stream: a partial line or raw bytes are
        delivered; an incomplete counted packet is dropped (it cannot be
        whole)."""
        buf, self.buf = self.buf, b""
        return buf if self.packet in ("raw", "line") else b""

    def encode(self, data: bytes) -> bytes:
        """Frames a packet for sending (adds the length header if any)."""
        packet = self.packet
        if packet == "raw" or packet == "line":
            return data
        size = len(data)
        if size >= 1 << (8 * packet):
            raise ValueError(f"a packet of {size} bytes does not fit a {packet}-byte header")
        return size.to_bytes(packet, "big") + data
