# The compiled data path of otpvm.net's sockets.
#
# Like _gen.pxi, this mirrors a Python reference step for step: the methods
# of otpvm.net.port._PortPy (a packet in, a message out, a send, the re-arm
# of the poller) and otpvm.net.framing.Framer.  otpvm.net.port.Socket
# subclasses PortCore and keeps everything else in Python (options, accept,
# connect, close...); the rare branches here call back into it, so the two
# cannot drift apart in behaviour.  net.port.use_compiled(False) puts the
# Python reference back in place; the tests run the socket suite on both.
#
# A socket's state is read and written by the Python half too, so every
# field is public.  The syscalls are made directly on the fd (the socket is
# non-blocking) instead of through the socket object's methods: one recv
# into a buffer (on the stack when small), one send with MSG_NOSIGNAL.

from cpython.bytearray cimport (PyByteArray_AS_STRING, PyByteArray_FromStringAndSize,
                                PyByteArray_GET_SIZE)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memchr, memcpy

cdef extern from "<errno.h>" nogil:
    int EWOULDBLOCK

cdef extern from "<sys/socket.h>" nogil:
    ssize_t _c_recv "recv" (int fd, void *buf, size_t n, int flags)
    ssize_t _c_send "send" (int fd, const void *buf, size_t n, int flags)
    int MSG_NOSIGNAL

cdef enum:
    _STACK_BUFFER = 16384           # reads up to this size need no heap buffer (kept
                                    # small: musl gives threads 128 KiB of stack)
    _MODE_RAW = 0
    _MODE_LINE = -1
    _KEEP = 1024 * 1024             # framing._KEEP

# framing.DEFAULT_PACKET_SIZE (checked against it by the tests).
cdef Py_ssize_t _DEFAULT_PACKET_SIZE = 64 * 1024 * 1024

cdef object _ClosedError = None
cdef object _PacketTooLarge = None
cdef object _check_packet = None
cdef object _check_active = None
cdef object _os_error = None
cdef str _ONCE = "once"


def _net_setup(*, ClosedError, PacketTooLarge, check_packet, check_active, os_error):
    """Called once by otpvm.net: the exceptions and validators the data path uses."""
    global _ClosedError, _PacketTooLarge, _check_packet, _check_active, _os_error
    _ClosedError = ClosedError
    _PacketTooLarge = PacketTooLarge
    _check_packet = check_packet
    _check_active = check_active
    _os_error = os_error


cdef inline bint _would_block(int err) noexcept:
    return err == EAGAIN or err == EWOULDBLOCK or err == EINTR


@cython.final
cdef class Framer:
    """Splits received bytes into packets and frames packets to send.

    The compiled twin of ``otpvm.net.framing.Framer``; see it for the rules.
    The bytes waiting are ``_buf[_start:_end]``: the bytes object a read
    returned, or a bytearray with spare capacity once bytes have to be joined.
    """

    cdef object _packet
    cdef int mode                   # _MODE_RAW, _MODE_LINE or the header size
    cdef public Py_ssize_t max_size
    cdef public Py_ssize_t chunk
    cdef object _buf                # bytes or bytearray
    cdef bint _owned                # _buf is our bytearray
    cdef Py_ssize_t _start, _end
    cdef Py_ssize_t _clean          # bytes from _start known to hold no newline
    cdef public Py_ssize_t copied, searched, peak

    def __init__(self, packet="raw", Py_ssize_t max_size=0, Py_ssize_t chunk=65536):
        self.packet = packet
        self.max_size = max_size
        self.chunk = chunk
        self._buf = b""
        self._owned = False
        self._start = self._end = self._clean = 0
        self.copied = self.searched = self.peak = 0

    @property
    def packet(self):
        """The framing: 'raw', 'line', 1, 2 or 4 (validated when set)."""
        return self._packet

    @packet.setter
    def packet(self, value):
        value = _check_packet(value)
        if value == "line":
            self.mode = _MODE_LINE
        elif value == "raw":
            self.mode = _MODE_RAW
        else:
            self.mode = value
        self._packet = value
        self._clean = 0

    @property
    def limit(self):
        """The largest packet accepted: ``max_size``, or the default cap."""
        return self._limit()

    cdef inline Py_ssize_t _limit(self) noexcept:
        return self.max_size if self.max_size else _DEFAULT_PACKET_SIZE

    @property
    def pending(self):
        """How many received bytes wait to be delivered."""
        return self._end - self._start

    @property
    def capacity(self):
        """How many bytes the buffer holds now, used or not."""
        return self._size()

    @property
    def buf(self):
        """The bytes waiting (a copy); setting it replaces them."""
        return PyBytes_FromStringAndSize(self._ptr() + self._start, self._end - self._start)

    @buf.setter
    def buf(self, data):
        self._buf = bytes(data)
        self._owned = False
        self._start, self._end, self._clean = 0, PyBytes_GET_SIZE(self._buf), 0

    cdef inline char *_ptr(self) noexcept:
        if self._owned:
            return PyByteArray_AS_STRING(self._buf)
        return PyBytes_AS_STRING(self._buf)

    cdef inline Py_ssize_t _size(self) noexcept:
        if self._owned:
            return PyByteArray_GET_SIZE(self._buf)
        return PyBytes_GET_SIZE(self._buf)

    cpdef feed(self, bytes data):
        """Adds received bytes."""
        cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
        if self._start == self._end:
            self._buf, self._owned, self._start, self._end = data, False, 0, n
            self._clean = 0
            if n > self.peak:
                self.peak = n
            return
        if not self._owned or self._end + n > PyByteArray_GET_SIZE(self._buf):
            self._make_room(n)
        memcpy(PyByteArray_AS_STRING(self._buf) + self._end, PyBytes_AS_STRING(data), n)
        self._end += n
        self.copied += n

    cdef _make_room(self, Py_ssize_t n):
        """Room for n more bytes (see framing.Framer._make_room)."""
        cdef Py_ssize_t waiting = self._end - self._start
        cdef Py_ssize_t need = waiting + n
        cdef Py_ssize_t size = self._size(), wanted
        cdef char *p
        if self._owned and need <= size and self._start >= size // 2:
            p = PyByteArray_AS_STRING(self._buf)
            memcpy(p, p + self._start, waiting)         # apart: waiting <= start
        else:
            size = 2 * need
            wanted = self._wanted()
            if wanted >= need:
                size = min(size, wanted)
            new = PyByteArray_FromStringAndSize(NULL, size)
            memcpy(PyByteArray_AS_STRING(new), self._ptr() + self._start, waiting)
            self._buf, self._owned = new, True
            if size > self.peak:
                self.peak = size
        self._start, self._end = 0, waiting
        self.copied += waiting

    cdef Py_ssize_t _wanted(self):
        """The bytes the counted packet being assembled needs in all, or 0."""
        cdef Py_ssize_t size
        if self.mode <= 0 or self._end - self._start < self.mode:
            return 0
        size = self._header(self._start)
        return self.mode + size if size <= self._limit() else 0

    cdef inline Py_ssize_t _header(self, Py_ssize_t start) noexcept:
        cdef const unsigned char *p = <const unsigned char *>self._ptr() + start
        cdef Py_ssize_t size = 0
        cdef int i
        for i in range(self.mode):
            size = (size << 8) | p[i]
        return size

    cdef bytes _take(self, Py_ssize_t start, Py_ssize_t end):
        """The bytes _buf[start:end], as one bytes object."""
        if not self._owned and start == 0 and end == PyBytes_GET_SIZE(self._buf):
            return self._buf         # a whole read: no copy
        self.copied += end - start
        return PyBytes_FromStringAndSize(self._ptr() + start, end - start)

    cdef _consume(self, Py_ssize_t end):
        """Drops the bytes before end (see framing.Framer._consume)."""
        cdef Py_ssize_t size
        self._clean = max(0, self._clean - (end - self._start))
        if end == self._end:
            self._buf, self._owned, self._start, self._end = b"", False, 0, 0
            return
        self._start = end
        if self._owned:
            size = PyByteArray_GET_SIZE(self._buf)
            if size > _KEEP and (self._end - end) * 4 <= size:
                self._buf = PyBytes_FromStringAndSize(self._ptr() + end, self._end - end)
                self._owned = False
                self.copied += self._end - end
                self._start, self._end = 0, PyBytes_GET_SIZE(self._buf)

    cpdef object pop(self, Py_ssize_t length=0):
        """The next complete packet, or None (see framing.Framer.pop)."""
        cdef Py_ssize_t start = self._start, end = self._end, stop
        if start == end:
            return None
        if self.mode == _MODE_LINE:
            return self._pop_line(start, end)
        if self.mode == _MODE_RAW:
            stop = end if length == 0 else start + length
            if stop > end:
                return None
        else:
            stop = self._counted_end(start, end)
            if stop < 0:
                return None
            start += self.mode
        data = self._take(start, stop)
        self._consume(stop)
        return data

    cdef object _pop_line(self, Py_ssize_t start, Py_ssize_t end):
        cdef const char *p = self._ptr()
        cdef const char *nl = <const char *>memchr(p + start + self._clean, b'\n',
                                                   end - start - self._clean)
        cdef Py_ssize_t cap = self.max_size, stop
        self.searched += (end if nl == NULL else nl - p + 1) - start - self._clean
        if nl == NULL:
            self._clean = end - start
            if cap and end - start > cap:
                raise _PacketTooLarge(f"a line is longer than packet_size={cap}")
            if cap or end - start < self.chunk:
                return None
            stop = start + self.chunk
        else:
            self._clean = nl - p - start
            stop = nl - p + 1
            if cap and stop - start > cap + 1:
                raise _PacketTooLarge(f"a line of {stop - start} bytes is longer than "
                                      f"packet_size={cap}")
            if not cap and stop - start > self.chunk:
                stop = start + self.chunk
        data = self._take(start, stop)
        self._consume(stop)
        return data

    cdef Py_ssize_t _counted_end(self, Py_ssize_t start, Py_ssize_t end) except -2:
        """Where the counted packet at start ends, or -1 if it is not all here."""
        cdef Py_ssize_t size, stop
        if end - start < self.mode:
            return -1
        size = self._header(start)
        if size > self._limit():
            raise _PacketTooLarge(f"a packet of {size} bytes is longer than {self._cap_name()}")
        stop = start + self.mode + size
        return stop if stop <= end else -1

    cdef str _cap_name(self):
        if self.max_size:
            return f"packet_size={self.max_size}"
        return f"the default cap of {_DEFAULT_PACKET_SIZE} bytes (packet_size=0)"

    def rest(self):
        """What is left at end of stream (see framing.Framer.rest)."""
        data = self._take(self._start, self._end) if self._start < self._end else b""
        self._buf, self._owned, self._start, self._end, self._clean = b"", False, 0, 0, 0
        return data if self.mode <= 0 else b""

    cpdef bytes encode(self, bytes data):
        """Frames a packet for sending (adds the length header if any)."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(data)
        if self.mode <= 0:
            return data
        if size >= (<Py_ssize_t>1) << (8 * self.mode):
            raise ValueError(f"a packet of {size} bytes does not fit a {self.mode}-byte header")
        return int(size).to_bytes(self.mode, "big") + data


cdef class PortCore:
    """A socket's state and its data path (otpvm.net.port.Socket's base)."""

    cdef public object kind, owner, active, send_timeout
    cdef public object _vm, _sock, _lock, _framer, _tag, _name
    cdef public object _receiver, _acceptors, _connector, _out, _senders
    cdef public int _fd
    cdef public uint64_t _token
    cdef public unsigned int _armed
    cdef public bint _closed, _eof, _shut_wr, _show_reset
    cdef public Py_ssize_t _out_len, _high, _low, _bufsize
    cdef object __weakref__

    # -- readiness (a scheduler thread, outside any process) -------------

    def _io_ready(self, unsigned int events):
        with self._lock:
            self._armed = 0
            if self._closed:
                return
            if self._connector is not None:
                self._connected()
            elif events & (OVM_IO_IN | OVM_IO_ERR | OVM_IO_HUP) and self._wants_input():
                if self.kind == "listen":
                    self._accept_ready()
                elif self.kind == "udp":
                    self._recvfrom_ready()
                else:
                    self._recv_ready()
            if not self._closed and self._out and events & (OVM_IO_OUT | OVM_IO_ERR | OVM_IO_HUP):
                self._flush()
            self._rearm()

    cpdef bint _wants_input(self):
        if self.kind == "listen":
            return bool(self._acceptors)
        return not self._eof and (self.active is not False or self._receiver is not None)

    cpdef _rearm(self):
        cdef unsigned int want = 0
        if self._closed:
            return
        if self._connector is not None or self._out:
            want |= OVM_IO_OUT
        if self._connector is None and self._wants_input():
            want |= OVM_IO_IN
        if want & ~self._armed:
            self._armed |= want
            (<VM>self._vm).io_arm(self._fd, self._token, self._armed)

    cpdef _recv_ready(self):
        cdef char stack[_STACK_BUFFER]
        cdef char *buf = stack
        cdef Py_ssize_t size = self._bufsize
        cdef ssize_t n
        cdef int err
        if size > _STACK_BUFFER:
            buf = <char *>PyMem_Malloc(size)
            if buf == NULL:
                raise MemoryError(f"otpvm: no memory for a {size}-byte receive buffer")
        try:
            n = _c_recv(self._fd, buf, size, 0)
            err = errno
            if n > 0:
                self._framer.feed(PyBytes_FromStringAndSize(buf, n))
        finally:
            if buf != stack:
                PyMem_Free(buf)
        if n > 0:
            self._dispatch()
        elif n == 0:
            self._peer_closed()
        elif not _would_block(err):
            self._broken(_os_error(err))

    cpdef _dispatch(self):
        cdef Framer fast = self._framer if type(self._framer) is Framer else None
        framer = self._framer
        try:
            while self.active is not False:
                packet = fast.pop(0) if fast is not None else framer.pop()
                if packet is None:
                    return
                self._post(self.owner, ("tcp", self, packet))
                self._count_active()
            if self._receiver is not None:
                pid, ref, length = self._receiver
                packet = framer.pop(length)
                if packet is None and self._eof:
                    packet = framer.rest()
                    result = packet if packet else _ClosedError(f"{self!r}: closed by the peer")
                elif packet is None:
                    return
                else:
                    result = packet
                self._receiver = None
                self._post(pid, (ref, result))
        except _PacketTooLarge as exc:
            self._broken(exc)

    cpdef _count_active(self):
        active = self.active
        if active is True:
            return
        if active is _ONCE or active == _ONCE:
            self.active = False
        elif isinstance(active, int):
            self.active = active - 1 or False
            if self.active is False:
                self._post(self.owner, (self._tag + "_passive", self))

    cpdef _post(self, Pid pid, msg):
        (<VM>self._vm).post(pid, msg)

    # -- from processes ----------------------------------------------------

    cpdef set_active(self, value):
        """``setopts(active=...)`` alone: the call every active-once loop
        makes after each packet, kept short."""
        with self._lock:
            self._set_active(value)
            if self._framer.pending:
                self._dispatch()            # a packet already buffered goes now
            if self._eof and self.active is not False:
                self._ended_while_passive()
            self._rearm()

    cpdef _set_active(self, value):
        if value is not _ONCE and value is not True:
            value = _check_active(value)
            if type(value) is int and type(self.active) is int:
                value += self.active            # inet: {active, N} adds to the counter
        self.active = value

    cpdef send(self, data, dest=None):
        """Queues data; returns a ref to wait under while the output queue is
        over the high watermark, else None (see _PortPy.send)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"can only send bytes, not {type(data).__name__}")
        with self._lock:
            self._check_open()
            if self._shut_wr:
                raise _ClosedError(f"{self!r}: shut down for writing")
            if dest:
                frame = (dest, bytes(data))
            elif type(self._framer) is Framer:
                frame = (<Framer>self._framer).encode(bytes(data))
            else:
                frame = self._framer.encode(bytes(data))
            if not self._out:
                sent = self._write(frame)
                if sent is None:
                    return None
                frame = sent
            self._out.append(frame)
            self._out_len += len(frame[1]) if dest else len(frame)
            self._rearm()
            if self._out_len <= self._high:
                return None
            return self._wait_for_room()

    cpdef _write(self, frame):
        """Writes what the kernel takes now: None if all of it, else the rest."""
        cdef ssize_t n
        cdef int err
        if self.kind == "udp" or type(frame) is not bytes:
            return self._write_other(frame)
        ovm_kernel_io(1)        # other connections' packets are not this process's work
        n = _c_send(self._fd, PyBytes_AS_STRING(frame), PyBytes_GET_SIZE(frame), MSG_NOSIGNAL)
        err = errno
        ovm_kernel_io(0)
        if n < 0:
            if _would_block(err):
                return frame
            raise self._send_failed(_os_error(err))
        return None if n == PyBytes_GET_SIZE(frame) else frame[n:]
