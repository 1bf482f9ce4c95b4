"""A node's control channel: a Unix socket that only its owner can use.

``otpvm run MODULE:APP --release-dir DIR --control SOCK`` listens on SOCK
(mode 0600, and each peer's uid is checked with SO_PEERCRED): no TCP port
that anyone on the network could reach.  A request is one JSON line, and so
is its answer::

    {"op": "install", "dir": "/srv/kv/1.1", "mode": "auto", "permanent": false}
    {"op": "releases"}
    {"op": "make_permanent", "vsn": "1.1"}
    {"op": "call", "dest": "cache", "request": ["get", "greeting"]}

The socket is served by a plain thread, outside the scheduler; it hands
each request to the ``release_handler`` process, which runs installs one at
a time inside the VM (otpvm.release), and waits for its answer.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import shutil
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from otpvm import code, gen_server, release
from otpvm.gen import CallError
from otpvm.kernel import VM, receive, register
from otpvm.kernel import self as _self
from otpvm.terms import UnknownNameError

__all__ = ["ControlServer", "release_handler", "request"]

_answers: dict[int, queue.Queue[dict[str, Any]]] = {}
_tokens = iter(range(1, sys.maxsize))
_tokens_lock = threading.Lock()
_log = logging.getLogger("otpvm")
BOOT_TIMEOUT = 120.0            # seconds a request waits for a booting node's handler
REQUEST_LIMIT = 1 << 16         # bytes: a request line longer than this is refused


def _version_key(vsn: str) -> tuple[Any, ...]:
    """Orders versions as people do: 1.10 after 1.9."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in vsn.replace("-", ".").split("."))


# -- the release handler (a process) ------------------------------------------------


async def release_handler(release_dir: str, vsn: str) -> None:
    """Runs the node's installs, one request at a time (registered as
    ``release_handler``)."""
    register("release_handler", _self())
    releases = release.ReleaseDir(release_dir)
    state = {"vsn": vsn}
    while True:
        _, request, token = await receive(("$control", dict, int))
        try:
            answer = await _serve(releases, state, request)
        except (ValueError, TypeError, KeyError, FileNotFoundError, CallError,
                TimeoutError) as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:        # a bug must not close the node's control channel
            _log.exception("otpvm: the release handler failed on %r", request)
            answer = {"ok": False, "error": f"internal error: {exc!r} (logged on the node)"}
        box = _answers.get(token)
        if box is not None:
            box.put(answer)


async def _serve(releases: release.ReleaseDir, state: dict[str, str],
                 request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "releases":
        return {"ok": True, "current": state["vsn"], "releases": releases.releases(),
                "modules": {name: v.vsn for name in sorted(code._entries)
                            if (v := code.which(name)) is not None}}
    if op == "make_permanent":
        releases.make_permanent(str(request["vsn"]))
        return {"ok": True, "releases": releases.releases()}
    if op == "install":
        return await _install(releases, state, request)
    if op == "call":
        value = await gen_server.call(str(request["dest"]), _from_json(request["request"]),
                                      timeout=float(request.get("timeout", 5.0)))
        return {"ok": True, "value": repr(value)}
    raise ValueError(f"unknown request {op!r}: expected install, releases, make_permanent "
                     "or call")


def _from_json(value: Any) -> Any:
    """JSON arrays as tuples: what gen_server requests are made of."""
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    if isinstance(value, dict):
        return {k: _from_json(v) for k, v in value.items()}
    return value


async def _install(releases: release.ReleaseDir, state: dict[str, str],
                   request: dict[str, Any]) -> dict[str, Any]:
    if "dir" in request:
        source = Path(str(request["dir"])).resolve()
    else:                                       # a release already in the directory
        source = releases.root(str(request["vsn"]))
    vsn = source.name
    if vsn == state["vsn"]:
        raise ValueError(f"release {vsn} is already running")
    target = releases.path / vsn
    if source != target:
        if target.exists():
            raise ValueError(f"{target} exists already and is not {source}")
        shutil.copytree(source, target)
    old_root, new_root = releases.root(state["vsn"]), releases.root(vsn)
    down = _version_key(vsn) < _version_key(state["vsn"])
    try:
        report = await release.install(
            old_root, new_root, vsn, from_vsn=state["vsn"], down=down,
            mode=request.get("mode", "auto"), extra=request.get("extra"),
            suspend_timeout=float(request.get("suspend_timeout", 5.0)),
            code_change_timeout=float(request.get("code_change_timeout", 5.0)))
    except release.InstallError as exc:
        return {"ok": False, "error": repr(exc.report.reason), "report": exc.report.to_json()}
    _swap_path(old_root, new_root)
    state["vsn"] = vsn
    releases.installed(vsn, permanent=bool(request.get("permanent")))
    return {"ok": True, "report": report.to_json(), "releases": releases.releases()}


def _swap_path(old_root: Path, new_root: Path) -> None:
    """Modules first imported from now on come from the new release."""
    old = str(old_root)
    sys.path[:] = [str(new_root) if entry == old else entry for entry in sys.path]


# -- the socket (a thread) ---------------------------------------------------------------


class ControlServer:
    """Serves the control socket until closed."""

    def __init__(self, vm: VM, path: str | os.PathLike[str], timeout: float = 600.0) -> None:
        self.vm = vm
        self.path = str(path)
        self.timeout = timeout
        with contextlib.suppress(FileNotFoundError):
            if Path(self.path).is_socket():
                os.unlink(self.path)            # left by a node that died
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)               # 0755 under the usual umask: nobody else may write
        os.chmod(self.path, 0o600)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self._serve, name="otpvm-control", daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stops listening and removes the socket file."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return                          # closed
            with conn:
                try:
                    self._one(conn)
                except (OSError, ValueError):
                    continue                    # a client that went away or spoke nonsense

    def _one(self, conn: socket.socket) -> None:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():
            _reply(conn, {"ok": False, "error": "only the node's owner may use its control socket"})
            return
        line = conn.makefile("rb").readline(REQUEST_LIMIT + 1)
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or len(line) > REQUEST_LIMIT:
                raise ValueError("a request is one JSON object on one line")
        except ValueError as exc:
            _reply(conn, {"ok": False, "error": f"bad request: {exc}"})
            return
        _reply(conn, self.ask(request))

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        """Hands a request to the release handler and waits for its answer."""
        with _tokens_lock:
            token = next(_tokens)
        box: queue.Queue[dict[str, Any]] = queue.Queue()
        _answers[token] = box
        try:
            self._hand_over(("$control", request, token))
            return box.get(timeout=self.timeout)
        except queue.Empty:
            return {"ok": False, "error": f"the node did not answer within {self.timeout} s"}
        except Exception as exc:
            return {"ok": False, "error": f"the node cannot take requests: {exc}"}
        finally:
            del _answers[token]


    def _hand_over(self, msg: Any) -> None:
        """Sends to the release handler, waiting while the node still boots
        (the socket listens before the applications have started)."""
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            try:
                self.vm.send("release_handler", msg)
                return
            except UnknownNameError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    conn.sendall(json.dumps(answer, default=repr).encode() + b"\n")


# -- the client -----------------------------------------------------------------------------


def request(path: str, payload: dict[str, Any], *, wait: float = 0.0,
            timeout: float = 600.0) -> dict[str, Any]:
    """Sends one request to a node's control socket and returns its answer;
    ``wait``: seconds to keep trying while the node is not listening yet."""
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)
    with sock:
        sock.settimeout(timeout)
        sock.sendall(json.dumps(payload).encode() + b"\n")
        line = sock.makefile("rb").readline()
    if not line:
        raise ConnectionError(f"the node at {path} closed the connection without answering")
    answer: dict[str, Any] = json.loads(line)
    return answer
