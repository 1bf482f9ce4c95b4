r"""Packet framing, as ``inet:setopts(S, [{packet, P}])`` does it.

``'raw'`` (or ``0``) delivers bytes as they come; ``'line'`` delivers one line
at a time, the ``\n`` included; ``1``, ``2`` and ``4`` are packets preceded by
a big-endian length header of that many bytes, which ``send`` adds and
``recv`` strips.

Memory stays bounded and linear in what arrives, in every mode, whatever a
peer sends:

* ``packet_size`` caps a packet's body.  ``0`` (the default) means the
  default cap, ``DEFAULT_PACKET_SIZE`` (64 MiB, the largest packet OTP's
  inet driver ever receives, ``TCP_MAX_PACKET_SIZE``); a larger cap, up to
  ``MAX_PACKET_SIZE``, must be asked for.  A header announcing more than the
  cap is refused as soon as the header is in (``emsgsize``), before any of
  the body is buffered.  In raw mode the cap bounds the length a ``recv``
  may ask for.
* A line longer than ``packet_size`` is an error (``emsgsize``); without a
  ``packet_size``, a line longer than the receive buffer (``buffer``) is
  delivered in pieces of that size, like Erlang.
* A packet that arrives in pieces is assembled in a buffer that grows by
  doubling and is compacted only once half of it is consumed, and a line is
  searched for its newline only in the bytes not yet searched: the work is
  linear in the bytes received, never quadratic.

``Framer`` here is the reference; ``otpvm._vm.Framer`` (otpvm/_core/port.pxi)
is its compiled twin and does the same, step for step, counters included.
"""

from __future__ import annotations

from typing import Literal

Packet = Literal["raw", "line", 0, 1, 2, 4]
PACKET_TYPES: tuple[object, ...] = ("raw", "line", 0, 1, 2, 4)

DEFAULT_PACKET_SIZE = 64 * 1024 * 1024
"""The cap on a packet when ``packet_size`` is 0 (OTP's TCP_MAX_PACKET_SIZE)."""
MAX_PACKET_SIZE = 2**31 - 1
"""The largest ``packet_size`` (and ``buffer``): OTP's inet driver holds them
in a C int, and packets of 2 GiB or more are refused there whatever the cap."""

# A buffer at most this large is kept however little of it is in use: one
# larger, left mostly empty by a big packet, is given back.
_KEEP = 1024 * 1024


class PacketTooLarge(Exception):
    """A packet is longer than ``packet_size`` allows (Erlang's emsgsize)."""


def check_packet(packet: object) -> Packet:
    """Validates a packet option; returns it normalised (0 becomes 'raw')."""
    if isinstance(packet, bool) or packet not in PACKET_TYPES:
        raise ValueError(f"packet must be one of 'raw', 'line', 0, 1, 2 or 4, not {packet!r}")
    return "raw" if packet == 0 else packet  # type: ignore[return-value]


class Framer:
    """Splits received bytes into packets and frames packets to send.

    The bytes waiting are ``_buf[_start:_end]``.  ``_buf`` is the bytes
    object a read returned while nothing else is waiting (no copy), or a
    bytearray of spare capacity once bytes have to be joined.  ``copied`` and
    ``searched`` count the bytes copied and searched for a newline since the
    framer was made, and ``peak`` is the largest ``capacity`` it had: the
    tests read them to check that the work stays linear and the memory
    bounded.
    """

    __slots__ = ("_packet", "max_size", "chunk", "_buf", "_start", "_end", "_clean",
                 "copied", "searched", "peak")

    def __init__(self, packet: Packet = "raw", max_size: int = 0, chunk: int = 65536) -> None:
        self.packet = packet
        self.max_size = max_size    # 0: DEFAULT_PACKET_SIZE
        self.chunk = chunk          # a capless line longer than this comes in pieces
        self._buf: bytes | bytearray = b""
        self._start = self._end = 0
        self._clean = 0             # bytes from _start known to hold no newline
        self.copied = self.searched = self.peak = 0

    @property
    def packet(self) -> Packet:
        """The framing: 'raw', 'line', 1, 2 or 4 (validated when set)."""
        return self._packet

    @packet.setter
    def packet(self, value: object) -> None:
        self._packet = check_packet(value)
        self._clean = 0

    @property
    def limit(self) -> int:
        """The largest packet accepted: ``max_size``, or the default cap."""
        return self.max_size or DEFAULT_PACKET_SIZE

    @property
    def pending(self) -> int:
        """How many received bytes wait to be delivered."""
        return self._end - self._start

    @property
    def capacity(self) -> int:
        """How many bytes the buffer holds now, used or not."""
        return len(self._buf)

    @property
    def buf(self) -> bytes:
        """The bytes waiting (a copy); setting it replaces them."""
        return bytes(memoryview(self._buf)[self._start:self._end])

    @buf.setter
    def buf(self, data: bytes) -> None:
        self._buf = bytes(data)
        self._start, self._end, self._clean = 0, len(data), 0

    def feed(self, data: bytes) -> None:
        """Adds received bytes."""
        n = len(data)
        if self._start == self._end:
            self._buf, self._start, self._end = data, 0, n
            self._clean = 0
            self.peak = max(self.peak, n)
            return
        if type(self._buf) is bytes or self._end + n > len(self._buf):
            self._make_room(n)
        buf = self._buf
        assert isinstance(buf, bytearray)
        buf[self._end:self._end + n] = data
        self._end += n
        self.copied += n

    def _make_room(self, n: int) -> None:
        """Room for n more bytes after the waiting ones: in place when at
        least half the buffer is consumed (its bytes paid for the move), else
        in a new buffer of twice what is needed (what is copied there is paid
        for by the free half), but no larger than the packet being assembled
        needs.  So every byte is moved a bounded number of times, and a buffer
        is at most twice the most that waited in it."""
        buf, start, end = self._buf, self._start, self._end
        waiting = end - start
        need = waiting + n
        if type(buf) is bytearray and need <= len(buf) and start >= len(buf) // 2:
            buf[:waiting] = memoryview(buf)[start:end]     # apart: waiting <= start
        else:
            size = 2 * need
            wanted = self._wanted()
            if wanted >= need:
                size = min(size, wanted)
            new = bytearray(size)
            new[:waiting] = memoryview(buf)[start:end]
            self._buf = new
            self.peak = max(self.peak, size)
        self._start, self._end = 0, waiting
        self.copied += waiting

    def _wanted(self) -> int:
        """The bytes the counted packet being assembled needs in all (its
        header announces it), or 0 when unknown or over the cap."""
        header = self._packet
        if header == "raw" or header == "line" or self._end - self._start < header:
            return 0
        size = int.from_bytes(self._buf[self._start:self._start + header], "big")
        return header + size if size <= self.limit else 0

    def _take(self, start: int, end: int) -> bytes:
        """The bytes _buf[start:end], as one bytes object."""
        buf = self._buf
        if type(buf) is bytes and start == 0 and end == len(buf):
            return buf              # a whole read: no copy
        self.copied += end - start
        return bytes(memoryview(buf)[start:end])

    def _consume(self, end: int) -> None:
        """Drops the bytes before end; gives a big buffer back once mostly
        unused, so one big packet does not pin its memory."""
        self._clean = max(0, self._clean - (end - self._start))
        if end == self._end:
            self._buf, self._start, self._end = b"", 0, 0
            return
        self._start = end
        buf = self._buf
        if type(buf) is bytearray and len(buf) > _KEEP and (self._end - end) * 4 <= len(buf):
            self._buf = bytes(memoryview(buf)[end:self._end])
            self.copied += self._end - end
            self._start, self._end = 0, len(self._buf)

    def pop(self, length: int = 0) -> bytes | None:
        """The next complete packet, or None.  ``length`` (raw mode only)
        asks for exactly that many bytes.  Raises PacketTooLarge."""
        start, end = self._start, self._end
        if start == end:
            return None
        packet = self._packet
        if packet == "line":
            return self._pop_line(start, end)
        if packet == "raw":
            stop = end if length == 0 else start + length
            if stop > end:
                return None
        else:
            stop = self._counted_end(start, end, packet)
            if stop < 0:
                return None
            start += packet
        data = self._take(start, stop)
        self._consume(stop)
        return data

    def _pop_line(self, start: int, end: int) -> bytes | None:
        cap = self.max_size
        nl = self._buf.find(b"\n", start + self._clean, end)
        self.searched += (end if nl < 0 else nl + 1) - start - self._clean
        if nl < 0:
            self._clean = end - start
            if cap and end - start > cap:
                raise PacketTooLarge(f"a line is longer than packet_size={cap}")
            if cap or end - start < self.chunk:
                return None
            stop = start + self.chunk       # no cap: deliver it in pieces, as Erlang does
        else:
            self._clean = nl - start
            stop = nl + 1
            if cap and stop - start > cap + 1:
                raise PacketTooLarge(f"a line of {stop - start} bytes is longer than "
                                     f"packet_size={cap}")
            if not cap and stop - start > self.chunk:
                stop = start + self.chunk
        data = self._take(start, stop)
        self._consume(stop)
        return data

    def _counted_end(self, start: int, end: int, header: int) -> int:
        """Where the counted packet at start ends, or -1 if it is not all
        here yet.  Raises PacketTooLarge as soon as its header is."""
        if end - start < header:
            return -1
        size = int.from_bytes(self._buf[start:start + header], "big")
        if size > self.limit:
            raise PacketTooLarge(f"a packet of {size} bytes is longer than {self._cap_name()}")
        stop = start + header + size
        return stop if stop <= end else -1

    def _cap_name(self) -> str:
        if self.max_size:
            return f"packet_size={self.max_size}"
        return f"the default cap of {DEFAULT_PACKET_SIZE} bytes (packet_size=0)"

    def rest(self) -> bytes:
        """What is left at end of stream: a partial line or raw bytes are
        delivered; an incomplete counted packet is dropped (it cannot be
        whole)."""
        data = self._take(self._start, self._end) if self._start < self._end else b""
        self._buf, self._start, self._end, self._clean = b"", 0, 0, 0
        return data if self._packet in ("raw", "line") else b""

    def encode(self, data: bytes) -> bytes:
        """Frames a packet for sending (adds the length header if any)."""
        packet = self._packet
        if packet == "raw" or packet == "line":
            return data
        size = len(data)
        if size >= 1 << (8 * packet):
            raise ValueError(f"a packet of {size} bytes does not fit a {packet}-byte header")
        return size.to_bytes(packet, "big") + data
