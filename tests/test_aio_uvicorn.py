"""uvicorn on otpvm.aio, as a user runs it: a real server process, a real
request, a real signal.  ``uvicorn --loop otpvm.aio:new_event_loop`` serves;
for a graceful stop on SIGINT/SIGTERM the server's handlers are added with
``loop.add_signal_handler`` (uvicorn installs its own only when its code
runs on the main thread, and asyncio code on otpvm.aio runs on a scheduler
thread): the README's recipe."""

import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

pytest.importorskip("uvicorn")

T = 30                  # generous: a correct run never waits this long

APP = '''
async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                print("lifespan shutdown ran", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"served by otpvm.aio"})
'''

SERVE = '''
import asyncio, signal, sys
import uvicorn
import otpvm.aio

async def main():
    server = uvicorn.Server(uvicorn.Config("app:app", port=int(sys.argv[1])))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.handle_exit, sig, None)
    await server.serve()

with asyncio.Runner(loop_factory=otpvm.aio.new_event_loop) as runner:
    runner.run(main())
'''


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_then_signal(cmd, cwd, port, sig):
    """Starts the server, gets one page, sends sig: (page, exit status, output)."""
    server = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + T
        while True:
            try:
                page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=T).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.05)
        server.send_signal(sig)
        out, _ = server.communicate(timeout=T)
        return page, server.returncode, out
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


@pytest.fixture
def app_dir(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    (tmp_path / "serve.py").write_text(textwrap.dedent(SERVE))
    return tmp_path


def test_uvicorn_serves_with_loop_otpvm_aio(app_dir):
    port = _free_port()
    cmd = [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port),
           "--loop", "otpvm.aio:new_event_loop"]
    page, status, out = _serve_then_signal(cmd, app_dir, port, signal.SIGINT)
    assert page == b"served by otpvm.aio"
    assert status == 0, out


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_uvicorn_stops_gracefully_with_loop_signal_handlers(app_dir, sig):
    port = _free_port()
    page, status, out = _serve_then_signal([sys.executable, "serve.py", str(port)], app_dir,
                                           port, sig)
    assert page == b"served by otpvm.aio"
    assert status == 0, out
    assert "lifespan shutdown ran" in out and "Application shutdown complete" in out, out
