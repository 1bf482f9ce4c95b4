"""Load generator for a line-based TCP echo server.

Meant to run in its own OS process, so that the load it generates does not
share a GIL (or a scheduler) with the server it measures::

    python -m otpvm.demos.loadgen --host 127.0.0.1 --port 7000 --connections 10000 \
        --before 5 --during 2 --after 5 --poison 'crash'

(or ``python otpvm/demos/loadgen.py ...`` from a clone: it imports nothing but
the standard library).

Every connection runs request/response: it sends the line ``<id> <seq>``, waits for
exactly that line back, records the round trip, then sends the next line at
once (closed loop, ``--interval 0``) or ``--interval`` seconds later (start
times spread over one interval).  One single-threaded ``select.epoll`` loop
drives every socket; per-connection state lives in preallocated arrays and
latencies go into fixed-size histograms, so neither memory nor CPU per
message grows with the run.

Timeline::

    ramp-up (connect in batches, retry refused/EAGAIN a bounded number of times,
             one echo per connection to prove the server accepted it)
    | before | poison moment | during | after |

At the poison moment connection 0 sends the ``--poison`` line instead of its
next request and from then on expects the server to close or reset it: that
is exactly one client-seen error, and the connection is not reopened.  Any
other EOF, reset, reply timeout or wrong echo is an error too; no connection
is ever reopened once established.

Output: one JSON object on stdout (keys documented in :func:`run`) and a
human-readable table on stderr (``--human``: the table on stdout, no JSON;
``--quiet``: no table).  Exit status 0 unless the tool itself failed (bad
arguments, not enough file descriptors, cannot resolve the host): 2; 3 if
the parent it watches (``--parent-fd``) ended first.
"""

from __future__ import annotations

import argparse
import errno
import heapq
import json
import math
import os
import resource
import select
import socket
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LoadgenError", "format_table", "main", "run"]

# Connection states (one byte each in a bytearray).
_NEW = 0  # not yet connected (queued, or waiting to retry)
_CONNECTING = 1  # non-blocking connect in progress
_HELLO = 2  # connected, warm-up line sent, waiting for its echo
_READY = 3  # established, nothing outstanding (before the run, or waiting for --interval)
_WAITING = 4  # request outstanding
_POISONED = 5  # poison line sent, expecting close/reset
_DEAD = 6  # closed after an error (never reopened)
_FAILED = 7  # ramp-up gave up on it

_PARENT_GONE = 3  # exit status when --parent-fd reads end-of-file
_PHASES = ("before", "during", "after")
_FINE = 100_000  # 1 us buckets for 0 .. 100 ms
_COARSE = 100_000  # 100 us buckets for 0 .. 10 s (the first 1,000 unused)
_RETRYABLE = frozenset(
    {
        errno.ECONNREFUSED,
        errno.EAGAIN,
        errno.EADDRNOTAVAIL,
        errno.ETIMEDOUT,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EINTR,
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
    }
)
_FD_SLACK = 32  # descriptors the process needs besides the connections


class LoadgenError(Exception):
    """The tool itself cannot run as asked (not a client-seen error)."""


class _Hist:
    """Round-trip times of one phase: microsecond histograms plus exact count and max."""

    __slots__ = ("count", "fine", "coarse", "over", "max_us")

    def __init__(self) -> None:
        self.count = 0
        self.fine = array("I", [0]) * _FINE
        self.coarse = array("I", [0]) * _COARSE
        self.over: array[int] = array("q")
        self.max_us = 0


def _percentiles(hists: list[_Hist], ps: tuple[float, ...]) -> dict[str, float | None]:
    """Nearest-rank percentiles (ms) over the union of ``hists``, plus max and count."""
    total = sum(h.count for h in hists)
    mx = max((h.max_us for h in hists), default=0)
    out: dict[str, float | None] = {}
    names = [f"p{p * 100:g}" for p in ps]
    if total == 0:
        for name in names:
            out[name] = None
        out["max"] = None
        out["count"] = 0
        return out
    ranks = [max(1, math.ceil(p * total)) for p in ps]
    values: list[float] = []
    cum = 0
    k = 0

    def feed(count: int, value_us: float) -> bool:
        nonlocal cum, k
        cum += count
        while k < len(ranks) and cum >= ranks[k]:
            values.append(min(value_us, mx))
            k += 1
        return k == len(ranks)

    done = False
    for i in range(_FINE):
        c = 0
        for h in hists:
            c += h.fine[i]
        if c and feed(c, i):
            done = True
            break
    if not done:
        for i in range(_FINE // 100, _COARSE):
            c = 0
            for h in hists:
                c += h.coarse[i]
            if c and feed(c, i * 100 + 50):
                done = True
                break
    if not done:
        for v in sorted(v for h in hists for v in h.over):
            if feed(1, v):
                break
    for name, value in zip(names, values, strict=False):
        out[name] = round(value / 1000.0, 3)
    out["max"] = round(mx / 1000.0, 3)
    out["count"] = total
    return out


def _raise_nofile(needed: int) -> int:
    """Raise RLIMIT_NOFILE soft to hard; return the soft limit; fail if ``needed`` won't fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    elif hard == resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY:
        for target in (1 << 20, 1 << 16):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
                soft = target
                break
            except (ValueError, OSError):
                continue
    if soft != resource.RLIM_INFINITY and needed > soft:
        raise LoadgenError(
            f"{needed - _FD_SLACK:,} connections need about {needed:,} file descriptors, but "
            f"RLIMIT_NOFILE (open files) is soft={soft:,} hard={hard:,} even after raising the "
            f"soft limit to the hard one. Raise the hard limit: `ulimit -Hn {needed}` as root "
            f"in the launching shell, `prlimit --pid $$ --nofile={needed}:{needed}`, "
            f"LimitNOFILE= in a systemd unit, or 'nofile' in /etc/security/limits.conf "
            f"(or ask for fewer --connections)."
        )
    return int(soft)


def run(
    host: str,
    port: int,
    connections: int = 100,
    *,
    interval: float = 0.0,
    before: float = 5.0,
    during: float = 2.0,
    after: float = 5.0,
    poison: str | bytes | None = None,
    reply_timeout: float = 5.0,
    connect_batch: int = 256,
    connect_retries: int = 8,
    connect_timeout: float = 10.0,
    ramp_timeout: float = 120.0,
    on_established: Callable[[int], None] | None = None,
    max_error_ids: int = 50,
    versioned: bool = False,
    upgrade_window: Callable[[], tuple[float, float] | None] | None = None,
) -> dict[str, Any]:
    """Drive ``connections`` request/response connections against ``host:port``.

    ``poison`` is the line (newline appended if missing) connection 0 sends at
    the poison moment.  ``on_established(n)`` is called once ramp-up is over,
    before the timed phases start (the CLI's ``--sync`` uses it to let a caller
    measure the server's memory while every connection is held but idle).

    ``versioned``: a reply may also be the request with a version suffix,
    ``<id> <seq> v<N>`` (a bare echo is version 1), as a server under a code
    upgrade answers (``otpvm demo --upgrade``).  The version of every reply
    is tracked per connection, and once the timed phases end no new request
    goes out while the outstanding ones are awaited (up to ``reply_timeout``),
    so that every request sent can be answered.  ``upgrade_window()`` is then
    called for the server's ``(start, done)`` times of its upgrade, on the
    ``time.monotonic()`` clock (shared between processes on Linux), or None.

    Returns a JSON-ready dict with exactly these keys::

        host, port, interval_s, reply_timeout_s
        connections_requested   connections asked for
        connections_established connected and echoed their warm-up line
        alive_before_poison     established and not dead at the poison moment
        alive_at_end            established and not dead when the run ended
        rampup: {seconds, failures, retries, failure_kinds: {kind: n}}
        phases: {before|during|after: {start_s, end_s}}  (seconds from traffic start)
        messages: {total, before, during, after}          (completed round trips)
        messages_per_second     total / (timed seconds actually run)
        timed_seconds
        errors: {total, other_than_poisoned, by_kind: {kind: n},
                 by_phase: {phase: n}, by_connection: {"id": kind} (first
                 ``max_error_ids``), by_connection_truncated: bool}
        latency_ms: {before|during|after|overall:
                     {p50, p99, max, count}}  (ms; None when count is 0)
        poison: None, or {line, connection, sent, sent_at_s, outcome,
                 close_after_ms}; outcome is one of "eof", "reset",
                 "timeout", "echoed" (the server answered it like any line),
                 "not_sent" (connection 0 was already dead), "no_close"
                 (still open at the end).
        client: {cpu_s, cpu_percent (whole run, ramp-up included),
                 timed_cpu_s, timed_cpu_percent, timed_cpu_us_per_message
                 (the timed phases only: user + system CPU of this process),
                 rlimit_nofile, max_rss_kb}

    With ``versioned``, three more keys::

        requests: {sent, answered}       timed requests (no warm-up line) and
                                         their replies, drained at the end
        versions: {switched (connections whose replies went to a higher
                   version), switched_more_than_once, replies_older_than_seen
                   (replies of a lower version than one the connection had
                   already seen: a v1 reply after its switch), at_end:
                   {"N": connections alive whose last reply was vN}}
        upgrade: None, or {window_s: {start_s, end_s} (seconds from traffic
                 start: the server's window widened by 0.5 s each side),
                 latency_ms: {before|upgrade|after: {p50, p99, max, count}}}
                 (round trips by the time their reply came)

    Error kinds: "eof", "reset", "timeout", "bad_echo", "send_error", "error".
    """
    if connections < 1:
        raise LoadgenError("--connections must be at least 1")
    if min(interval, before, during, after) < 0 or reply_timeout <= 0:
        raise LoadgenError("durations must be >= 0 and --reply-timeout > 0")
    nofile = _raise_nofile(connections + _FD_SLACK)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise LoadgenError(f"cannot resolve {host!r}: {exc}") from exc
    family, _, proto, _, addr = infos[0]
    poison_line: bytes | None = None
    if poison is not None:
        poison_line = poison.encode() if isinstance(poison, str) else bytes(poison)
        if not poison_line.endswith(b"\n"):
            poison_line += b"\n"

    n = connections
    perf = time.perf_counter
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = perf()

    # Per-connection state, preallocated.
    state = bytearray(n)
    socks: list[socket.socket | None] = [None] * n
    fds = array("i", [-1]) * n
    seq = array("q", [0]) * n
    sent_at = array("d", [0.0]) * n
    attempts = bytearray(n)
    expected: list[bytes] = [b""] * n
    version = bytearray(n)  # the version of the connection's latest reply (versioned)
    switches = bytearray(n)  # how many times it went up
    partial: list[bytes] = [b""] * n  # received prefix of ``expected`` (rare)
    outbuf: dict[int, bytes] = {}  # unsent tail of a request (rare)
    fd_cid: dict[int, int] = {}
    ep = select.epoll(sizehint=n + 1)

    rampup_failures: dict[str, int] = {}
    retries = 0
    established = 0

    def close(cid: int) -> None:
        s = socks[cid]
        if s is not None:
            fd = fds[cid]
            try:
                ep.unregister(fd)
            except (OSError, ValueError):
                pass
            fd_cid.pop(fd, None)
            outbuf.pop(cid, None)
            s.close()
            socks[cid] = None
            fds[cid] = -1

    # ---------------------------------------------------------------- ramp-up
    ramp_start = perf()
    queue: deque[int] = deque(range(n))
    backoff: list[tuple[float, int]] = []  # heap of (due, cid)
    inflight: dict[int, float] = {}  # cid -> deadline (connecting or waiting for hello)
    settled = 0  # established + failed

    def ramp_fail(cid: int, kind: str) -> None:
        nonlocal retries, settled
        close(cid)
        inflight.pop(cid, None)
        attempts[cid] += 1
        if kind in ("refused", "eagain", "timeout", "reset", "eof", "addr", "other_retryable") \
                and attempts[cid] <= connect_retries:
            retries += 1
            state[cid] = _NEW
            delay = min(1.0, 0.02 * (2 ** (attempts[cid] - 1)))
            heapq.heappush(backoff, (perf() + delay, cid))
        else:
            state[cid] = _FAILED
            rampup_failures[kind] = rampup_failures.get(kind, 0) + 1
            settled += 1

    def errno_kind(err: int) -> str:
        if err == errno.ECONNREFUSED:
            return "refused"
        if err == errno.EAGAIN:
            return "eagain"
        if err == errno.ETIMEDOUT:
            return "timeout"
        if err in (errno.ECONNRESET, errno.ECONNABORTED):
            return "reset"
        if err == errno.EADDRNOTAVAIL:
            return "addr"
        if err in _RETRYABLE:
            return "other_retryable"
        return errno.errorcode.get(err, str(err)).lower()

    def send_hello(cid: int) -> None:
        state[cid] = _HELLO
        msg = b"%d 0\n" % cid
        expected[cid] = msg
        try:
            if os.write(fds[cid], msg) != len(msg):
                ramp_fail(cid, "short_write")
                return
        except OSError as exc:
            ramp_fail(cid, errno_kind(exc.errno or 0))
            return
        ep.modify(fds[cid], select.EPOLLIN)

    def start_connect(cid: int) -> None:
        nonlocal settled
        try:
            s = socket.socket(family, socket.SOCK_STREAM, proto)
        except OSError as exc:
            state[cid] = _FAILED
            kind = "emfile" if exc.errno == errno.EMFILE else errno_kind(exc.errno or 0)
            rampup_failures[kind] = rampup_failures.get(kind, 0) + 1
            settled += 1
            return
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[cid] = s
        fd = s.fileno()
        fds[cid] = fd
        fd_cid[fd] = cid
        err = s.connect_ex(addr)
        inflight[cid] = perf() + connect_timeout
        if err in (0, errno.EINPROGRESS, errno.EALREADY):
            state[cid] = _CONNECTING
            ep.register(fd, select.EPOLLOUT)
        else:
            ramp_fail(cid, errno_kind(err))

    while settled < n:
        now = perf()
        if now - ramp_start > ramp_timeout:
            for cid in range(n):
                if state[cid] in (_NEW, _CONNECTING, _HELLO):
                    close(cid)
                    state[cid] = _FAILED
                    rampup_failures["ramp_timeout"] = rampup_failures.get("ramp_timeout", 0) + 1
                    settled += 1
            break
        while backoff and backoff[0][0] <= now:
            queue.append(heapq.heappop(backoff)[1])
        while queue and len(inflight) < connect_batch:
            start_connect(queue.popleft())
        for cid, deadline in list(inflight.items()):
            if deadline <= now:
                ramp_fail(cid, "timeout")
        if settled >= n:
            break
        timeout = 0.05 if (backoff or inflight) else 0.0
        for fd, _ev in ep.poll(timeout, 1024):
            cid = fd_cid.get(fd, -1)
            if cid < 0:
                continue
            st = state[cid]
            s = socks[cid]
            assert s is not None
            if st == _CONNECTING:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    ramp_fail(cid, errno_kind(err))
                else:
                    send_hello(cid)
            elif st == _HELLO:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    ramp_fail(cid, errno_kind(exc.errno or 0))
                    continue
                if not data:
                    ramp_fail(cid, "eof")
                    continue
                buf = partial[cid] + data
                v = _reply_version(buf, expected[cid], versioned)
                if v > 0:
                    partial[cid] = b""
                    state[cid] = _READY
                    version[cid] = min(v, 255)
                    inflight.pop(cid, None)
                    established += 1
                    settled += 1
                elif v == 0:
                    partial[cid] = buf
                else:
                    partial[cid] = b""
                    ramp_fail(cid, "bad_echo")  # not retried: the server is wrong
            elif st == _READY:
                # Established and idle until the timed phases: anything readable
                # here is the server closing it (or talking out of turn).
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    data = b""
                    kind = errno_kind(exc.errno or 0)
                else:
                    kind = "eof" if not data else "bad_echo"
                established -= 1
                settled -= 1
                ramp_fail(cid, kind)
    rampup_seconds = perf() - ramp_start

    if on_established is not None:
        on_established(established)

    # ------------------------------------------------------------ timed phases
    hists = [_Hist(), _Hist(), _Hist()]
    err_kind: dict[str, int] = {}
    err_phase: dict[str, int] = {}
    err_ids: dict[str, str] = {}
    err_total = 0
    err_poisoned = 0
    poison_info: dict[str, Any] | None = None
    poison_armed = False
    poison_sent_t = 0.0
    alive = established
    alive_before_poison = -1
    draining = False  # versioned: the timed phases are over, replies still awaited
    drain_left = 0
    older_replies = 0
    reply_t: array[float] = array("d")  # versioned: each timed round trip's reply time
    reply_us: array[int] = array("q")  # ... and its duration

    ru_t0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = perf()
    bounds = (t0 + before, t0 + before + during, t0 + before + during + after)
    phase = 0
    # Skip zero-length leading phases.
    while phase < 3 and bounds[phase] <= t0:
        phase += 1

    if poison_line is not None:
        poison_info = {
            "line": poison_line.decode(errors="replace"),
            "connection": 0,
            "sent": False,
            "sent_at_s": None,
            "outcome": None,
            "close_after_ms": None,
        }

    def fail(cid: int, kind: str) -> None:
        nonlocal alive, err_total, err_poisoned, drain_left
        st = state[cid]
        if draining and (st == _WAITING or st == _POISONED):
            drain_left -= 1
        close(cid)
        state[cid] = _DEAD
        alive -= 1
        err_total += 1
        err_kind[kind] = err_kind.get(kind, 0) + 1
        pname = _PHASES[min(phase, 2)]
        err_phase[pname] = err_phase.get(pname, 0) + 1
        if len(err_ids) < max_error_ids:
            err_ids[str(cid)] = kind
        if st == _POISONED and poison_info is not None:
            err_poisoned += 1
            poison_info["outcome"] = kind
            poison_info["close_after_ms"] = round((perf() - poison_sent_t) * 1000.0, 3)

    def send(cid: int, msg: bytes, t: float, new_state: int) -> None:
        """Send one request (slow path: partial writes and errors)."""
        expected[cid] = msg
        sent_at[cid] = t
        state[cid] = new_state
        try:
            k = os.write(fds[cid], msg)
        except BlockingIOError:
            k = 0
        except (ConnectionResetError, BrokenPipeError):
            fail(cid, "reset")
            return
        except OSError:
            fail(cid, "send_error")
            return
        if k != len(msg):
            outbuf[cid] = msg[k:]
            ep.modify(fds[cid], select.EPOLLIN | select.EPOLLOUT)

    def send_poison(t: float) -> None:
        nonlocal poison_sent_t
        assert poison_line is not None and poison_info is not None
        poison_sent_t = t
        poison_info["sent"] = True
        poison_info["sent_at_s"] = round(t - t0, 6)
        send(0, poison_line, t, _POISONED)

    def note_version(cid: int, v: int) -> None:
        nonlocal older_replies
        seen = version[cid]
        if v > seen:
            if seen:
                switches[cid] = min(switches[cid] + 1, 255)
            version[cid] = min(v, 255)
        elif v < seen:
            older_replies += 1

    def at_poison_moment(t: float) -> None:
        nonlocal alive_before_poison, poison_armed
        alive_before_poison = alive
        if poison_line is None or poison_info is None:
            return
        st = state[0]
        if st == _READY:
            send_poison(t)
        elif st == _WAITING:
            poison_armed = True  # sent the moment its outstanding reply arrives
        else:
            poison_info["outcome"] = "not_sent"

    # First requests.
    timers: deque[int] = deque()
    due = array("d", [0.0]) * n
    live = [cid for cid in range(n) if state[cid] == _READY]
    if phase == 0:
        pass
    else:
        at_poison_moment(t0)
    if phase < 3:
        if interval > 0:
            step = interval / max(1, len(live))
            for k, cid in enumerate(live):
                due[cid] = t0 + k * step
                timers.append(cid)
        else:
            for cid in live:
                if state[cid] != _READY:
                    continue
                t = perf()
                seq[cid] = 1
                send(cid, b"%d 1\n" % cid, t, _WAITING)
    del live

    check_every = min(0.25, reply_timeout / 4)
    next_check = t0 + check_every
    poll = ep.poll
    read = os.read
    write = os.write
    maxevents = min(n, 4096)
    h = hists[min(phase, 2)]
    fine = h.fine
    coarse = h.coarse
    over_append = h.over.append
    count = 0
    mx = 0
    closed_loop = interval <= 0
    phase_bounds = bounds

    while phase < 3:
        now = perf()
        if now >= bounds[phase]:
            h.count += count
            if mx > h.max_us:
                h.max_us = mx
            while phase < 3 and bounds[phase] <= now:
                phase += 1
                if phase == 1:
                    at_poison_moment(now)
            if phase >= 3:
                if not versioned or draining:
                    break
                # Drain: no new request, the outstanding ones still count
                # (as the last phase's).
                draining = True
                timers.clear()
                drain_left = sum(1 for c in range(n) if state[c] in (_WAITING, _POISONED))
                if drain_left <= 0:
                    break
                phase = 2
                bounds = (bounds[0], bounds[1], now + reply_timeout)
            h = hists[phase]
            fine, coarse, over_append = h.fine, h.coarse, h.over.append
            count = 0
            mx = 0
        if now >= next_check:
            next_check = now + check_every
            limit = now - reply_timeout
            for cid in range(n):
                st = state[cid]
                if (st == _WAITING or st == _POISONED) and sent_at[cid] < limit:
                    fail(cid, "timeout")
        while timers and due[timers[0]] <= now:
            cid = timers.popleft()
            if state[cid] != _READY:
                continue
            if poison_armed and cid == 0:
                poison_armed = False
                send_poison(now)
                continue
            seq[cid] += 1
            send(cid, b"%d %d\n" % (cid, seq[cid]), now, _WAITING)
        wait = min(bounds[phase], next_check) - now
        if timers:
            wait = min(wait, due[timers[0]] - now)
        for fd, ev in poll(wait if wait > 0 else 0, maxevents):
            cid = fd_cid.get(fd, -1)
            if cid < 0:
                continue
            if ev & select.EPOLLOUT and cid in outbuf:
                rest = outbuf.pop(cid)
                try:
                    k = write(fd, rest)
                except BlockingIOError:
                    k = 0
                except OSError:
                    fail(cid, "send_error")
                    continue
                if k != len(rest):
                    outbuf[cid] = rest[k:]
                else:
                    ep.modify(fd, select.EPOLLIN)
                if not ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    continue
            try:
                data = read(fd, 4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                fail(cid, "reset")
                continue
            except OSError as exc:
                fail(cid, "timeout" if exc.errno == errno.ETIMEDOUT else "error")
                continue
            if not data:
                fail(cid, "eof")
                continue
            st = state[cid]
            exp = expected[cid]
            v = 1
            if data != exp:
                buf = partial[cid] + data
                v = _reply_version(buf, exp, versioned)
                if v == 0 and st != _READY:
                    partial[cid] = buf
                    continue
                partial[cid] = b""
                if v <= 0 or st == _READY:
                    fail(cid, "bad_echo")
                    continue
            if versioned and v != version[cid]:
                note_version(cid, v)
            t = perf()
            if st == _POISONED:
                if poison_info is not None:
                    poison_info["outcome"] = "echoed"
                st = _WAITING  # back to ordinary traffic, the reply is not timed
            elif st == _WAITING:
                us = int((t - sent_at[cid]) * 1e6)
                if us < _FINE:
                    fine[us] += 1
                elif us < 100 * _COARSE:
                    coarse[us // 100] += 1
                else:
                    over_append(us)
                if us > mx:
                    mx = us
                count += 1
                if versioned:
                    reply_t.append(t)
                    reply_us.append(us)
            else:  # _READY or anything else: nothing was outstanding
                fail(cid, "bad_echo")
                continue
            if draining:
                state[cid] = _READY
                drain_left -= 1
                continue
            if poison_armed and cid == 0:
                poison_armed = False
                send_poison(t)
            elif closed_loop:
                next_seq = seq[cid] + 1
                seq[cid] = next_seq
                msg = b"%d %d\n" % (cid, next_seq)
                expected[cid] = msg
                sent_at[cid] = t
                state[cid] = _WAITING
                try:
                    k = write(fd, msg)
                except OSError:
                    send(cid, msg, t, _WAITING)  # slow path sorts the error out
                    continue
                if k != len(msg):
                    outbuf[cid] = msg[k:]
                    ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)
            else:
                state[cid] = _READY
                due[cid] = t + interval
                timers.append(cid)
        if draining and drain_left <= 0:
            h.count += count
            if mx > h.max_us:
                h.max_us = mx
            break
    t_end = perf()
    timed = t_end - t0
    ru_t1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu_timed = (ru_t1.ru_utime - ru_t0.ru_utime) + (ru_t1.ru_stime - ru_t0.ru_stime)

    if alive_before_poison < 0:
        alive_before_poison = alive
    if poison_info is not None and poison_info["outcome"] is None:
        poison_info["outcome"] = "no_close" if poison_info["sent"] else "not_sent"

    for cid in range(n):
        close(cid)
    ep.close()

    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    wall = perf() - wall0
    if versioned:
        answered = sum(h.count for h in hists)
        extra: dict[str, Any] = {
            "requests": {"sent": sum(seq), "answered": answered},
            "versions": _versions(version, switches, state, older_replies),
            "upgrade": _upgrade_phases(reply_t, reply_us, t0, upgrade_window),
        }
    else:
        extra = {}
    msgs = {name: hists[i].count for i, name in enumerate(_PHASES)}
    total = sum(msgs.values())
    latency = {name: _percentiles([hists[i]], (0.5, 0.99)) for i, name in enumerate(_PHASES)}
    latency["overall"] = _percentiles(hists, (0.5, 0.99))
    return {
        "host": host,
        "port": port,
        "interval_s": interval,
        "reply_timeout_s": reply_timeout,
        "connections_requested": n,
        "connections_established": established,
        "alive_before_poison": alive_before_poison,
        "alive_at_end": alive,
        "rampup": {
            "seconds": round(rampup_seconds, 3),
            "failures": sum(rampup_failures.values()),
            "retries": retries,
            "failure_kinds": rampup_failures,
        },
        "phases": {
            name: {
                "start_s": round(([t0] + list(phase_bounds))[i] - t0, 3),
                "end_s": round(phase_bounds[i] - t0, 3),
            }
            for i, name in enumerate(_PHASES)
        },
        "messages": {"total": total, **msgs},
        "messages_per_second": round(total / timed, 1) if timed > 0 else 0.0,
        "timed_seconds": round(timed, 3),
        "errors": {
            "total": err_total,
            "other_than_poisoned": err_total - err_poisoned,
            "by_kind": err_kind,
            "by_phase": err_phase,
            "by_connection": err_ids,
            "by_connection_truncated": err_total > len(err_ids),
        },
        "latency_ms": latency,
        "poison": poison_info,
        "client": {
            "cpu_s": round(cpu, 3),
            "cpu_percent": round(100.0 * cpu / wall, 1) if wall > 0 else 0.0,
            "timed_cpu_s": round(cpu_timed, 3),
            "timed_cpu_percent": round(100.0 * cpu_timed / timed, 1) if timed > 0 else 0.0,
            "timed_cpu_us_per_message": round(1e6 * cpu_timed / total, 2) if total else None,
            "rlimit_nofile": nofile,
            "max_rss_kb": ru1.ru_maxrss,
        },
        **extra,
    }


def _reply_version(buf: bytes, exp: bytes, versioned: bool) -> int:
    """What ``buf`` is as the reply to the request ``exp`` (its echo): 1 the
    bare echo, N the echo with a `` vN`` suffix before its newline (only when
    ``versioned``), 0 the start of one of those, -1 anything else."""
    if buf == exp:
        return 1
    if not versioned:
        return 0 if len(buf) < len(exp) and exp.startswith(buf) else -1
    head = exp[:-1] + b" v"
    if not buf.startswith(head):
        return 0 if head.startswith(buf) else -1
    digits = buf[len(head):]
    if digits.endswith(b"\n"):
        digits = digits[:-1]
        return int(digits) if digits.isdigit() and digits[:1] != b"0" else -1
    return 0 if digits.isdigit() or not digits else -1


def _versions(version: bytearray, switches: bytearray, state: bytearray,
              older_replies: int) -> dict[str, Any]:
    """The ``versions`` key of a versioned run."""
    at_end: dict[str, int] = {}
    for cid, v in enumerate(version):
        if state[cid] in (_READY, _WAITING, _POISONED):
            at_end[str(v)] = at_end.get(str(v), 0) + 1
    return {
        "switched": sum(1 for k in switches if k),
        "switched_more_than_once": sum(1 for k in switches if k > 1),
        "replies_older_than_seen": older_replies,
        "at_end": dict(sorted(at_end.items())),
    }


def _upgrade_phases(reply_t: array[float], reply_us: array[int], t0: float,
                    window: Callable[[], tuple[float, float] | None] | None) -> Any:
    """The ``upgrade`` key: round trips before, during and after the
    server's upgrade window, widened by 0.5 s each side."""
    got = window() if window is not None else None
    if got is None:
        return None
    # perf_counter and monotonic are both CLOCK_MONOTONIC on Linux; the
    # offset keeps this right wherever they differ.
    offset = time.monotonic() - time.perf_counter()
    start, end = got[0] - offset - 0.5, got[1] - offset + 0.5
    hists = {name: _Hist() for name in ("before", "upgrade", "after")}
    for t, us in zip(reply_t, reply_us, strict=True):
        h = hists["before" if t < start else "upgrade" if t <= end else "after"]
        h.count += 1
        if us < _FINE:
            h.fine[us] += 1
        elif us < 100 * _COARSE:
            h.coarse[us // 100] += 1
        else:
            h.over.append(us)
        h.max_us = max(h.max_us, us)
    return {
        "window_s": {"start_s": round(start - t0, 3), "end_s": round(end - t0, 3)},
        "latency_ms": {name: _percentiles([h], (0.5, 0.99)) for name, h in hists.items()},
    }


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def format_table(r: dict[str, Any]) -> str:
    """A human-readable summary of a :func:`run` result."""
    lines = [
        f"load generator -> {r['host']}:{r['port']}  "
        f"(interval {r['interval_s']} s, reply timeout {r['reply_timeout_s']} s)",
        f"connections: requested {r['connections_requested']:,}, "
        f"established {r['connections_established']:,} "
        f"(ramp-up {r['rampup']['seconds']} s, {r['rampup']['failures']} failures "
        f"{r['rampup']['failure_kinds'] or ''}, {r['rampup']['retries']} retries), "
        f"alive before poison {r['alive_before_poison']:,}, "
        f"alive at end {r['alive_at_end']:,}",
        f"messages: {r['messages']['total']:,} in {r['timed_seconds']} s = "
        f"{r['messages_per_second']:,.0f} msg/s",
        "",
        f"{'phase':<8} {'window s':>13} {'messages':>11} {'p50 ms':>9} {'p99 ms':>9} "
        f"{'max ms':>9} {'errors':>6}",
    ]
    for name in (*_PHASES, "overall"):
        lat = r["latency_ms"][name]
        if name == "overall":
            window = f"0-{r['timed_seconds']:g}"
            msgs = r["messages"]["total"]
            errs = r["errors"]["total"]
        else:
            ph = r["phases"][name]
            window = f"{ph['start_s']:g}-{ph['end_s']:g}"
            msgs = r["messages"][name]
            errs = r["errors"]["by_phase"].get(name, 0)
        lines.append(
            f"{name:<8} {window:>13} {msgs:>11,} {_ms(lat['p50']):>9} {_ms(lat['p99']):>9} "
            f"{_ms(lat['max']):>9} {errs:>6}"
        )
    e = r["errors"]
    lines.append("")
    lines.append(
        f"client-seen errors: {e['total']} (other than the poisoned connection: "
        f"{e['other_than_poisoned']}) by kind {e['by_kind'] or '{}'}"
        + (f", by connection {e['by_connection']}" if e["by_connection"] else "")
        + (" (truncated)" if e["by_connection_truncated"] else "")
    )
    p = r["poison"]
    if p is not None:
        lines.append(
            f"poison {p['line']!r} on connection {p['connection']}: sent={p['sent']} "
            f"at {p['sent_at_s']} s, outcome {p['outcome']}, "
            f"closed after {_ms(p['close_after_ms'])} ms"
        )
    c = r["client"]
    lines.append(
        f"client: {c['cpu_s']} s CPU ({c['cpu_percent']}% of one core; timed phases "
        f"{c['timed_cpu_percent']}%, {c['timed_cpu_us_per_message']} us/message), "
        f"max RSS {c['max_rss_kb'] / 1024:.0f} MB, RLIMIT_NOFILE {c['rlimit_nofile']:,}"
    )
    return "\n".join(lines)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m otpvm.demos.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--connections", "-n", type=int, default=100)
    p.add_argument("--interval", type=float, default=0.0,
                   help="seconds between a reply and the next request (0: closed loop)")
    p.add_argument("--before", type=float, default=5.0, help="seconds before the poison moment")
    p.add_argument("--during", type=float, default=2.0,
                   help="seconds of the window right after the poison moment")
    p.add_argument("--after", type=float, default=5.0, help="seconds after that window")
    p.add_argument("--poison", default=None,
                   help="line connection 0 sends at the poison moment (e.g. 'crash')")
    p.add_argument("--reply-timeout", type=float, default=5.0,
                   help="seconds without the reply to an outstanding line before it is an error")
    p.add_argument("--connect-batch", type=int, default=256,
                   help="connections in progress at once during ramp-up")
    p.add_argument("--connect-retries", type=int, default=8,
                   help="retries per connection during ramp-up (refused, EAGAIN, timeout, reset)")
    p.add_argument("--connect-timeout", type=float, default=10.0,
                   help="seconds per connect + warm-up echo attempt")
    p.add_argument("--ramp-timeout", type=float, default=120.0,
                   help="give up ramping up after this many seconds")
    p.add_argument("--sync", action="store_true",
                   help="after ramp-up print 'ESTABLISHED <n>' on stderr and wait for a line "
                        "on stdin before starting the timed phases")
    p.add_argument("--parent-fd", type=int, default=None,
                   help="the read end of a pipe whose write end only the parent process "
                        "holds: exit at once when it reads end-of-file, that is as soon as "
                        "the parent ends, however it ends")
    p.add_argument("--versioned", action="store_true",
                   help="accept replies with a ' vN' version suffix, track each connection's "
                        "version, and answer every request before exiting (see run())")
    p.add_argument("--window-from-stdin", action="store_true",
                   help="with --versioned: at the end read the server's upgrade window from "
                        "stdin, a line 'UPGRADE START DONE' (time.monotonic() seconds) or "
                        "'NONE'")
    p.add_argument("--human", action="store_true", help="print the table on stdout, no JSON")
    p.add_argument("--quiet", action="store_true", help="no table on stderr")
    return p.parse_args(argv)


def _wait_for_go(n: int) -> None:
    print(f"ESTABLISHED {n}", file=sys.stderr, flush=True)
    sys.stdin.readline()


def _window_from_stdin() -> tuple[float, float] | None:
    """The line ``UPGRADE START DONE`` on stdin (None for ``NONE``, EOF or
    nothing within a minute)."""
    ready, _, _ = select.select([sys.stdin], [], [], 60.0)
    words = sys.stdin.readline().split() if ready else []
    if len(words) == 3 and words[0] == "UPGRADE":
        return float(words[1]), float(words[2])
    return None


def _exit_with_parent(fd: int) -> None:
    """Exits this process (status 3) when ``fd`` reads end-of-file: its
    writer, the parent, has ended.  Unlike prctl(PR_SET_PDEATHSIG) this is
    portable and tied to the parent process, not to the thread that forked."""

    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 1):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(_PARENT_GONE)

    threading.Thread(target=watch, name="loadgen-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    args = _parse_args(argv)
    if args.parent_fd is not None:
        _exit_with_parent(args.parent_fd)
    try:
        result = run(
            args.host,
            args.port,
            args.connections,
            interval=args.interval,
            before=args.before,
            during=args.during,
            after=args.after,
            poison=args.poison,
            reply_timeout=args.reply_timeout,
            connect_batch=args.connect_batch,
            connect_retries=args.connect_retries,
            connect_timeout=args.connect_timeout,
            ramp_timeout=args.ramp_timeout,
            on_established=_wait_for_go if args.sync else None,
            versioned=args.versioned,
            upgrade_window=_window_from_stdin if args.window_from_stdin else None,
        )
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    if args.human:
        print(format_table(result), flush=True)
    else:
        print(json.dumps(result), flush=True)
        if not args.quiet:
            print(format_table(result), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
