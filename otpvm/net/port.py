"""A socket owned by a process: Erlang's port, in Python.

A ``Socket`` wraps a non-blocking OS socket registered with the VM's C poller.
Its owner (the *controlling process*) receives its data as messages in an
active mode, or asks for it with ``recv`` in passive mode; when the owner
ends, for any reason, the socket is closed.  Readiness reports are one-shot:
the socket asks for one only while someone wants its input or output is
pending, so a passive socket nobody reads leaves the data in the kernel and
TCP's flow control slows the peer down, which is how a slow reader keeps the
server's memory bounded.

Two kinds of code touch a socket: the processes calling the API (on their
scheduler thread) and ``_io_ready`` (on whichever scheduler thread took the
poller's events).  A re-entrant lock per socket orders them, which matters
on free-threaded Python and whenever the monitor has rescued a run queue.

Results for a waiting process travel as ``(ref, result)`` messages, where
result is the value or the exception to raise; ``wait`` receives them.
"""

from __future__ import annotations

import errno
import os
import socket as _socket
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from otpvm import _vm, kernel
from otpvm.kernel import Pid, Ref, make_ref, receive
from otpvm.net.framing import (
    DEFAULT_PACKET_SIZE,
    MAX_PACKET_SIZE,
    Framer,
    PacketTooLarge,
    check_packet,
)
from otpvm.net.linger import LINGER_TIMEOUT, Linger
from otpvm.terms import ANY, NoProcError

# Readiness bits, as csrc/ovm_poll.h defines them.
IN, OUT, ERR, HUP = 1, 2, 4, 8

DEFAULT_BUFFER = 65536
DEFAULT_HIGH_WATERMARK = 256 * 1024
DEFAULT_LOW_WATERMARK = 128 * 1024


class ClosedError(ConnectionError):
    """The socket is closed: by ``close``, by its peer (a FIN, or a reset
    unless ``show_econnreset``), or by an error a send met (Erlang's
    ``{error, closed}``).  ``reason`` is ``'closed'``, or ``'econnreset'``
    for the call that met a reset on a socket with ``show_econnreset=True``.

    A ``net.serve`` handler may let it propagate: once the connection's own
    socket is closed, its process ends as ``('shutdown', reason)``, without
    a crash report."""

    def __init__(self, *args: Any, reason: str = "closed") -> None:
        super().__init__(*args)
        self.reason = reason


def is_reset(exc: BaseException) -> bool:
    """Whether an OS error means the peer reset the connection.  EPIPE is
    one too: a BSD reports a reset met by a send so, and on Linux the
    second send after a reset gets it (as inet_drv's tcp_send_error)."""
    return isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.EPIPE)


def reason_of(exc: BaseException) -> str:
    """The Erlang-style reason for an error: 'econnreset', 'emsgsize', ..."""
    if isinstance(exc, ClosedError):
        return exc.reason
    if isinstance(exc, PacketTooLarge):
        return "emsgsize"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in errno.errorcode:
        return errno.errorcode[exc.errno].lower()
    return type(exc).__name__


async def wait(ref: Ref, timeout: float | None) -> Any:
    """Waits for the ``(ref, result)`` a socket posts; raises the result if
    it is an exception, TimeoutError after ``timeout`` seconds."""
    _, result = await receive((ref, ANY), timeout=timeout)
    if isinstance(result, BaseException):
        raise result
    return result


async def flush(ref: Ref) -> Any:
    """Takes a result that was posted just as its waiter gave up (or None)."""
    try:
        return (await receive((ref, ANY), timeout=0))[1]
    except TimeoutError:
        return None


async def wait_on(sock: Socket, ref: Ref, timeout: float | None, what: str,
                  on_late: Callable[[Any], None] | None = None) -> Any:
    """``wait`` for a socket operation; on timeout the socket forgets the
    waiter, and a result that raced the timeout goes to ``on_late`` (so an
    accepted socket is closed, a packet put back) before TimeoutError."""
    try:
        return await wait(ref, timeout)
    except TimeoutError:
        sock.forget_waiter(ref)
        late = await flush(ref)
        if late is not None and on_late is not None:
            on_late(late)
        raise TimeoutError(f"{what} on {sock!r} timed out after {timeout} s") from None


def bound_socket(kind: int, host: str, port: int, reuseaddr: bool, what: str) -> _socket.socket:
    """A new OS socket bound to host:port; OSError names the address."""
    family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
    sock = _socket.socket(family, kind)
    try:
        if reuseaddr:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot {what} on {host or '*'}:{port}: {exc.strerror}") from None
    return sock


ACTIVE_TYPES = "True, False, 'once' or a positive int"


def check_active(active: object) -> bool | str | int:
    """Validates an ``active`` option value."""
    if active is True or active is False or active == "once":
        return active
    if isinstance(active, int) and not isinstance(active, bool) and active > 0:
        return active
    raise ValueError(f"active must be {ACTIVE_TYPES}, not {active!r}")


# Options that live in the OS socket: name -> (level, optname, as int).
SOCKOPTS: dict[str, tuple[int, int]] = {
    "nodelay": (_socket.IPPROTO_TCP, _socket.TCP_NODELAY),
    "keepalive": (_socket.SOL_SOCKET, _socket.SO_KEEPALIVE),
    "reuseaddr": (_socket.SOL_SOCKET, _socket.SO_REUSEADDR),
    "sndbuf": (_socket.SOL_SOCKET, _socket.SO_SNDBUF),
    "recbuf": (_socket.SOL_SOCKET, _socket.SO_RCVBUF),
    "broadcast": (_socket.SOL_SOCKET, _socket.SO_BROADCAST),
}
_C_INT_MAX = 2**31 - 1               # setsockopt takes a C int
PORT_OPTS = ("active", "packet", "packet_size", "buffer", "send_timeout",
             "high_watermark", "low_watermark", "show_econnreset")


def check_option(name: str, value: Any, kind: str = "tcp") -> Any:
    """Validates one socket option for a socket of ``kind`` ('tcp', 'udp' or
    'listen'); returns the value as the socket stores it.  ``setopts`` and
    ``net.serve`` (before anything is started) both check through here, so
    a bad option is a ValueError naming it, at the caller's line."""
    if name == "active":
        return check_active(value)
    if name == "show_econnreset":
        if not isinstance(value, bool):
            raise ValueError(f"show_econnreset must be a bool, not {value!r}")
        return value
    if name == "packet":
        if kind == "udp" and value not in ("raw", 0):
            raise ValueError("UDP sockets only take packet='raw'")
        return check_packet(value)
    if name in ("packet_size", "buffer", "high_watermark", "low_watermark"):
        low = 0 if name == "packet_size" else 1
        if isinstance(value, bool) or not isinstance(value, int) or not (
                low <= value <= MAX_PACKET_SIZE):
            sign = "non-negative" if low == 0 else "positive"
            raise ValueError(f"{name} must be a {sign} int up to {MAX_PACKET_SIZE} "
                             f"(2**31 - 1), not {value!r}")
        return value
    if name == "send_timeout":
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or value < 0):
            raise ValueError(f"send_timeout must be None or seconds >= 0, not {value!r}")
        return value
    if name in SOCKOPTS:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, int) or not 0 <= value <= _C_INT_MAX:
            raise ValueError(f"{name} must be a bool or a non-negative int up to "
                             f"{_C_INT_MAX} (2**31 - 1), not {value!r}")
        return value
    raise ValueError(f"unknown socket option {name!r} (known: "
                     f"{', '.join(PORT_OPTS + tuple(SOCKOPTS))})")


class Socket(_vm.PortCore):
    """A TCP or UDP socket (or a listening one) owned by a process.

    Use the functions of ``otpvm.net``, ``otpvm.net.tcp`` and
    ``otpvm.net.udp`` on it.  A socket travels in messages by reference, like
    an Erlang port: another process can use it, and its owner can hand it
    over with ``controlling_process``.

    Its state and data path (a packet in, a message out, a send) live in the
    compiled base ``_vm.PortCore``, which mirrors ``_PortPy`` below.
    """

    __slots__ = ()

    def __init__(self, vm: Any, sock: _socket.socket, kind: str, owner: Pid,
                 opts: dict[str, Any], *, connecting: Ref | None = None) -> None:
        """Wraps sock for owner.  ``connecting`` is the ref under which the
        owner will learn that a non-blocking connect finished: the caller
        makes it, because the socket forgets it the moment the connect
        completes, which may be before this constructor returns."""
        self.kind = kind                # 'tcp', 'udp' or 'listen'
        self.owner = owner
        self.active: bool | str | int = False
        self.send_timeout: float | None = None
        self._vm = vm
        self._sock = sock
        self._fd = sock.fileno()
        self._tag = "udp" if kind == "udp" else "tcp"
        self._name = f"#Port<{self._fd}>"
        self._lock = threading.RLock()
        self._framer = _framer_class()
        self._bufsize = DEFAULT_BUFFER
        self._high = DEFAULT_HIGH_WATERMARK
        self._low = DEFAULT_LOW_WATERMARK
        self._armed = 0
        self._closed = False
        self._eof = False
        self._show_reset = False
        self._shut_wr = False
        self._receiver: tuple[Pid, Ref, int] | None = None
        self._acceptors: deque[tuple[Pid, Ref]] = deque()
        self._connector: tuple[Pid, Ref] | None = None
        self._out: deque[Any] = deque()
        self._out_len = 0
        self._senders: deque[tuple[Pid, Ref]] = deque()
        if connecting is not None:
            self._connector = (owner, connecting)
        # From _io_add on, another scheduler thread may run _io_ready (an
        # error or hang-up is reported even while nothing is armed): the
        # lock holds it off until the socket is complete and armed.
        with self._lock:
            try:
                sock.setblocking(False)
                for name, value in opts.items():
                    self._setopt(name, value)
                self._token = vm._io_add(self, self._fd, 0)
            except BaseException:
                sock.close()                # never registered: nothing else to undo
                raise
            if not vm._own(owner, self):
                self.close()
                raise NoProcError(f"cannot give a socket to {owner!r}: it is not alive")
            self._rearm()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"owner {self.owner!r}"
        return f"<otpvm.net.Socket {self.kind} {self._name}, {state}>"

    # -- options ---------------------------------------------------------

    def setopts(self, opts: dict[str, Any]) -> None:
        """Sets options (see ``otpvm.net.setopts``)."""
        with self._lock:
            for name, value in opts.items():
                self._setopt(name, value)
            if "active" in opts or "packet" in opts:
                self._dispatch()            # packets already buffered go now
                if self._eof and self.active is not False:
                    self._ended_while_passive()
            self._rearm()

    def _setopt(self, name: str, value: Any) -> None:
        value = check_option(name, value, self.kind)
        if name == "active":
            self._set_active(value)
        elif name == "packet":
            self._framer.packet = value
        elif name == "packet_size":
            self._framer.max_size = value
        elif name == "buffer":
            self._bufsize = self._framer.chunk = value
        elif name == "high_watermark":
            self._high = value
            self._low = min(self._low, value)
        elif name == "low_watermark":
            self._low = value
            self._high = max(self._high, value)
        elif name == "send_timeout":
            self.send_timeout = value
        elif name == "show_econnreset":
            self._show_reset = value
        else:
            level, opt = SOCKOPTS[name]
            try:
                self._sock.setsockopt(level, opt, value)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot set {name}={value!r} on {self!r}: "
                                         f"{exc.strerror}") from None

    def getopts(self, names: tuple[str, ...]) -> dict[str, Any]:
        """Reads options (see ``otpvm.net.getopts``)."""
        values: dict[str, Any] = {}
        for name in names or PORT_OPTS:
            if name == "active":
                values[name] = self.active
            elif name == "packet":
                values[name] = self._framer.packet
            elif name == "packet_size":
                values[name] = self._framer.max_size
            elif name == "buffer":
                values[name] = self._bufsize
            elif name == "send_timeout":
                values[name] = self.send_timeout
            elif name == "high_watermark":
                values[name] = self._high
            elif name == "low_watermark":
                values[name] = self._low
            elif name == "show_econnreset":
                values[name] = self._show_reset
            elif name in SOCKOPTS:
                self._check_open()
                level, opt = SOCKOPTS[name]
                raw = self._sock.getsockopt(level, opt)
                values[name] = raw if name in ("sndbuf", "recbuf") else bool(raw)
            else:
                raise ValueError(f"unknown socket option {name!r}")
        return values

    # -- readiness (a scheduler thread, outside any process) -------------

    def _recvfrom_ready(self) -> None:
        try:
            data, addr = self._sock.recvfrom(self._bufsize)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            # An ICMP error (port unreachable...): reported, the socket lives on.
            self._deliver_udp(OSError(exc.errno, f"{self!r}: {exc.strerror}"))
            return
        self._deliver_udp((addr[0], addr[1], data))

    def _deliver_udp(self, result: Any) -> None:
        if self.active is not False:
            if isinstance(result, BaseException):
                self._post(self.owner, ("udp_error", self, reason_of(result)))
                return
            self._post(self.owner, ("udp", self, *result))
            self._count_active()
        elif self._receiver is not None:
            pid, ref, _ = self._receiver
            self._receiver = None
            self._post(pid, (ref, result))

    def _peer_closed(self) -> None:
        self._eof = True
        if self.active is not False:
            rest = self._framer.rest()
            if rest:
                self._post(self.owner, ("tcp", self, rest))
            self._post(self.owner, ("tcp_closed", self))
            self.close()
        else:
            self._dispatch()                # a waiting recv gets the rest, or closed

    def _broken(self, exc: BaseException) -> None:
        """An error met by a read ends the socket: the owner (in an active
        mode) or the waiting processes (passive) learn why.  As inet: a
        reset reads as a close by the peer unless show_econnreset."""
        if is_reset(exc):
            reason = "econnreset" if self._show_reset else "closed"
            self._end(ClosedError(f"{self!r}: reset by the peer", reason=reason),
                      report=self._show_reset)
        else:
            self._end(exc, report=True)

    def _send_failed(self, exc: OSError) -> BaseException:
        """A write failed; returns the exception for the sender.  As inet's
        tcp_send_error: every error closes a TCP socket and reads as
        ``closed``, but for a reset on a socket with show_econnreset.  A
        datagram's error is the sender's alone: the socket stays open."""
        if self.kind == "udp":
            return _error(exc, self)
        reason = "econnreset" if self._show_reset and is_reset(exc) else "closed"
        what = "reset by the peer" if is_reset(exc) else exc.strerror
        error = ClosedError(f"{self!r}: {what}", reason=reason)
        self._end(error, report=reason != "closed")
        return _error(error, self)

    def _end(self, why: BaseException, report: bool) -> None:
        """Closes a socket an error ended.  In an active mode the owner gets
        ``('tcp_error', S, reason)`` (when reported) then ``('tcp_closed', S)``;
        in passive mode, only once it turns active again (``_eof``)."""
        if self.active is not False:
            if report:
                self._post(self.owner, ("tcp_error", self, reason_of(why)))
            self._post(self.owner, ("tcp_closed", self))
            self._eof = False
        else:
            self._eof = True
        self.close(why)

    def _ended_while_passive(self) -> None:
        """The stream ended (the peer closed, or an error closed the socket)
        while the socket was passive, and it has just turned active: the
        owner gets the rest and ``('tcp_closed', S)``, as from inet."""
        if self._closed:
            self._eof = False
            self._post(self.owner, ("tcp_closed", self))
        else:
            self._peer_closed()

    # -- accept and connect ------------------------------------------------

    def _accept_ready(self) -> None:
        while self._acceptors:
            try:
                conn, _ = self._vm._io_accept(self._sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    pid, ref = self._acceptors.popleft()
                    error = OSError(exc.errno, f"accept on {self!r}: {exc.strerror}")
                    self._post(pid, (ref, error))
                    continue
                return                      # ECONNABORTED and the like: try again later
            pid, ref = self._acceptors.popleft()
            self._post(pid, (ref, self._adopt(conn, pid)))

    def _adopt(self, conn: _socket.socket, pid: Pid) -> Socket | BaseException:
        """An accepted connection inherits the listener's options."""
        opts = self.getopts(PORT_OPTS)
        try:
            return Socket(self._vm, conn, "tcp", pid, opts)
        except BaseException as exc:       # the acceptor died meanwhile, or no memory
            conn.close()
            return exc

    def accept(self, pid: Pid) -> Socket | Ref:
        """A connection accepted at once, or the ref ``pid`` will get it under."""
        with self._lock:
            self._check_open()
            if self.kind != "listen":
                raise ValueError(f"accept needs a listening socket, not {self!r}")
            if not self._acceptors:
                try:
                    conn, _ = self._vm._io_accept(self._sock)
                except (BlockingIOError, InterruptedError):
                    pass
                else:
                    result = self._adopt(conn, pid)
                    if isinstance(result, BaseException):
                        raise result
                    return result
            ref = make_ref()
            self._acceptors.append((pid, ref))
            self._rearm()
            return ref

    def unread(self, packet: bytes) -> None:
        """Puts back a packet that reached a recv which had given up."""
        with self._lock:
            if self._closed:
                return                      # nobody can read it any more
            self._framer.buf = self._framer.encode(packet) + self._framer.buf

    def forget_waiter(self, ref: Ref) -> None:
        """A waiter gave up (timeout): drop it."""
        with self._lock:
            self._acceptors = deque(w for w in self._acceptors if w[1] is not ref)
            self._senders = deque(w for w in self._senders if w[1] is not ref)
            if self._receiver is not None and self._receiver[1] is ref:
                self._receiver = None

    def _connected(self) -> None:
        pid, ref = self._connector  # type: ignore[misc]
        self._connector = None
        err = self._sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            self._post(pid, (ref, OSError(err, errno.errorcode.get(err, str(err)))))
            self.close()
        else:
            self._post(pid, (ref, self))

    # -- receiving and sending (from processes) -----------------------------

    def recv(self, pid: Pid, length: int) -> Any:
        """A packet available at once, or the ref ``pid`` will get it under."""
        with self._lock:
            self._check_open()
            if self.active is not False:
                raise ValueError(f"recv on {self!r} in active mode ({self.active!r}); "
                                 f"its data arrives as messages")
            if self._receiver is not None:
                raise RuntimeError(f"another process is already in recv on {self!r}")
            if length and (self.kind == "udp" or self._framer.packet != "raw"):
                raise ValueError("recv(length) needs a TCP socket with packet='raw'")
            if length > self._framer.limit:     # OTP: enomem over its 64 MiB
                raise ValueError(f"recv length must be at most {self._framer.limit} bytes "
                                 f"(packet_size, or {DEFAULT_PACKET_SIZE} while it is 0), "
                                 f"not {length}")
            ref = make_ref()
            self._receiver = (pid, ref, length)
            self._dispatch()                # buffered data answers at once
            self._rearm()
            return ref

    def _write_other(self, frame: Any) -> Any:
        """``_write`` for what the compiled path leaves to Python (datagrams)."""
        return _PortPy._write(self, frame)  # type: ignore[arg-type]

    def _wait_for_room(self) -> Ref:
        """The output queue is over the high watermark: the sender waits."""
        ref = make_ref()
        self._senders.append((kernel.self(), ref))
        return ref

    def _flush(self) -> None:
        out = self._out
        while out:
            frame = out[0]
            size = len(frame[1]) if self.kind == "udp" else len(frame)
            try:
                rest = self._write(frame)
            except OSError:
                if self._closed:
                    return                  # _send_failed closed the socket
                self._out_len -= size       # a datagram nobody waits for: dropped
                out.popleft()
                continue
            if rest is not None:
                self._out_len -= size - len(rest)
                out[0] = rest
                break
            self._out_len -= size
            out.popleft()
        if self._out_len <= self._low:
            while self._senders:
                pid, ref = self._senders.popleft()
                self._post(pid, (ref, None))
        if not out and self._shut_wr:
            self._shutdown_now(_socket.SHUT_WR)

    def shutdown(self, how: str) -> None:
        """Shuts down one or both directions (pending output is sent first)."""
        modes = {"read": _socket.SHUT_RD, "write": _socket.SHUT_WR,
                 "read_write": _socket.SHUT_RDWR}
        if how not in modes:
            raise ValueError(f"how must be 'read', 'write' or 'read_write', not {how!r}")
        with self._lock:
            self._check_open()
            if how != "read":
                self._shut_wr = True
                if self._out:
                    return                  # _flush shuts down when the queue is empty
            self._shutdown_now(modes[how])

    def _shutdown_now(self, how: int) -> None:
        try:
            self._sock.shutdown(how)
        except OSError:
            pass                            # not connected any more: nothing to shut

    # -- ownership and closing ---------------------------------------------

    def give_to(self, pid: Pid) -> None:
        """Makes pid the owner (the caller checked it is the current one)."""
        with self._lock:
            self._check_open()
            if not self._vm._own(pid, self):
                raise NoProcError(f"cannot give {self!r} to {pid!r}: it is not alive")
            self._vm._disown(self.owner, self)
            self.owner = pid

    def _owner_exited(self, reason: Any) -> None:
        # As a port's: a killed owner's pending output is dropped.
        self.close(linger=reason != "killed")

    def close(self, why: BaseException | None = None, *, linger: bool = True) -> None:
        """Closes the socket; whoever waits on it gets ClosedError (or why).

        TCP output still queued goes out after the close (see
        ``otpvm.net.linger``) unless the socket broke (why) or not linger.
        """
        with self._lock:
            if why is None:
                self._eof = False           # closed by its users: nothing to tell
            if self._closed:
                return
            self._closed = True
            self._framer.buf = b""          # unread input goes with the socket
            self._vm._io_remove(self._fd, self._token)
            self._vm._disown(self.owner, self)
            if self._out and why is None and linger and self.kind == "tcp":
                out, self._out = self._out, deque()
                limit = LINGER_TIMEOUT if self.send_timeout is None else self.send_timeout
                Linger(self._vm, self._sock, out, limit)
            else:
                self._vm._io_close(self._sock)     # the kernel's network work is not charged
            self._fail_waiters(why)

    def _fail_waiters(self, why: BaseException | None) -> None:
        waiters = list(self._acceptors) + list(self._senders)
        if self._receiver is not None:
            waiters.append(self._receiver[:2])
        if self._connector is not None:
            waiters.append(self._connector)
        self._acceptors.clear()
        self._senders.clear()
        self._out.clear()
        self._out_len = 0
        self._receiver = self._connector = None
        for pid, ref in waiters:
            exc = _error(why, self) if why is not None else ClosedError(f"{self!r} is closed")
            self._post(pid, (ref, exc))

    @property
    def closed(self) -> bool:
        """Whether the socket is closed."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    @property
    def sock(self) -> _socket.socket:
        """The OS socket (for getsockname and the like; do not read or write it)."""
        return self._sock


def _error(exc: BaseException, sock: Socket) -> BaseException:
    """A fresh exception naming the socket, of the same class as exc (one
    per waiter: each raise adds its own traceback)."""
    if isinstance(exc, ClosedError):
        return ClosedError(*exc.args, reason=exc.reason)
    if isinstance(exc, OSError) and exc.errno:
        return type(exc)(exc.errno, f"{sock!r}: {exc.strerror}")
    return type(exc)(f"{sock!r}: {exc}")


class _PortPy(Socket):
    """The Python reference of the compiled data path (``_vm.PortCore``):
    the same methods, step for step.  ``use_compiled(False)`` puts them on
    Socket in place of the compiled ones (this class is never instantiated)."""

    __slots__ = ()

    def set_active(self, value: Any) -> None:
        """``setopts(active=...)`` alone: the call every active-once loop
        makes after each packet, kept short."""
        with self._lock:
            self._set_active(value)
            if self._framer.pending:
                self._dispatch()            # a packet already buffered goes now
            if self._eof and self.active is not False:
                self._ended_while_passive()
            self._rearm()

    def _set_active(self, value: Any) -> None:
        active = check_active(value)
        if type(active) is int and type(self.active) is int:
            active += self.active               # inet: {active, N} adds to the counter
        self.active = active

    # -- readiness (a scheduler thread, outside any process) -------------

    def _io_ready(self, events: int) -> None:
        with self._lock:
            self._armed = 0
            if self._closed:
                return
            if self._connector is not None:
                self._connected()
            elif events & (IN | ERR | HUP) and self._wants_input():
                if self.kind == "listen":
                    self._accept_ready()
                elif self.kind == "udp":
                    self._recvfrom_ready()
                else:
                    self._recv_ready()
            if not self._closed and self._out and events & (OUT | ERR | HUP):
                self._flush()
            self._rearm()

    def _wants_input(self) -> bool:
        if self.kind == "listen":
            return bool(self._acceptors)
        return not self._eof and (self.active is not False or self._receiver is not None)

    def _rearm(self) -> None:
        if self._closed:
            return
        want = 0
        if self._connector is not None or self._out:
            want |= OUT
        if self._connector is None and self._wants_input():
            want |= IN
        if want & ~self._armed:
            self._armed |= want
            self._vm._io_arm(self._fd, self._token, self._armed)

    def _recv_ready(self) -> None:
        try:
            data = self._sock.recv(self._bufsize)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._broken(exc)
            return
        if data:
            self._framer.feed(data)
            self._dispatch()
        else:
            self._peer_closed()

    def _dispatch(self) -> None:
        """Hands complete packets to the owner (active) or a recv (passive)."""
        framer = self._framer
        try:
            while self.active is not False:
                packet = framer.pop()
                if packet is None:
                    return
                self._post(self.owner, ("tcp", self, packet))
                self._count_active()
            if self._receiver is not None:
                pid, ref, length = self._receiver
                packet = framer.pop(length)
                if packet is None and self._eof:
                    packet = framer.rest()
                    result: Any = packet if packet else ClosedError(f"{self!r}: closed by the peer")
                elif packet is None:
                    return
                else:
                    result = packet
                self._receiver = None
                self._post(pid, (ref, result))
        except PacketTooLarge as exc:
            self._broken(exc)

    def _count_active(self) -> None:
        active = self.active
        if active is True:
            return
        if active == "once":
            self.active = False
        elif isinstance(active, int):
            self.active = active - 1 or False
            if self.active is False:
                self._post(self.owner, (self._tag + "_passive", self))

    # -- from processes ----------------------------------------------------

    def send(self, data: bytes, dest: tuple[str, int] | None = None) -> Ref | None:
        """Queues data; returns a ref to wait under while the output queue is
        over the high watermark (the caller is the slow peer's problem, no
        one else's), else None."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"can only send bytes, not {type(data).__name__}")
        with self._lock:
            self._check_open()
            if self._shut_wr:
                raise ClosedError(f"{self!r}: shut down for writing")
            frame: Any = (dest, bytes(data)) if dest else self._framer.encode(bytes(data))
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

    def _write(self, frame: Any) -> Any:
        """Writes what the kernel takes now: None if all of it, else the rest."""
        try:
            if self.kind == "udp":
                dest, data = frame
                self._sock.sendto(data, dest)
                return None
            sent = self._sock.send(frame)
        except (BlockingIOError, InterruptedError):
            return frame
        except OSError as exc:
            raise self._send_failed(exc) from None
        return None if sent == len(frame) else frame[sent:]

    def _post(self, pid: Pid, msg: Any) -> None:
        self._vm._post(pid, msg)


_HOT_PATH = tuple(name for name in vars(_PortPy) if not name.startswith("__"))


def use_compiled(compiled: bool = True) -> None:
    """Runs sockets on the compiled data path (the default) or on its Python
    reference ``_PortPy``, which the tests also run; sockets opened from
    then on get the matching framer."""
    global _framer_class
    for name in _HOT_PATH:
        if compiled:
            if name in vars(Socket):
                delattr(Socket, name)
        else:
            setattr(Socket, name, vars(_PortPy)[name])
    _framer_class = _vm.Framer if compiled else Framer


_framer_class: type[Any] = _vm.Framer
_vm._net_setup(ClosedError=ClosedError, PacketTooLarge=PacketTooLarge, check_packet=check_packet,
               check_active=check_active, os_error=lambda err: OSError(err, os.strerror(err)))


_vm.register_handle_type(Socket)
