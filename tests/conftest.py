"""Shared fixtures."""

import pytest

import otpvm
from otpvm import gen, gen_server


@pytest.fixture(params=["compiled", "python"])
def gen_impl(request, monkeypatch):
    """Runs a test against both implementations of the call/cast path: the
    compiled fast path (otpvm/_core/gen.pxi) and the Python reference it mirrors
    (gen._call_py, gen._cast_py, gen._reply_py, _Server._handle_message_py)."""
    if request.param == "python":
        monkeypatch.setattr(gen, "call", gen._call_py)
        monkeypatch.setattr(gen, "cast", gen._cast_py)
        monkeypatch.setattr(gen_server, "cast", gen._cast_py)
        monkeypatch.setattr(gen, "reply", gen._reply_py)
        monkeypatch.setattr(gen_server._Server, "handle_message",
                            gen_server._Server._handle_message_py)
    return request.param


@pytest.fixture(params=["compiled", "python"])
def net_impl(request):
    """Runs a test against both implementations of the socket data path:
    the compiled one (otpvm/_core/port.pxi) and its Python reference
    (otpvm.net.port._PortPy, otpvm.net.framing.Framer)."""
    from otpvm import _vm
    from otpvm.net import framing, port

    compiled = request.param == "compiled"
    port.use_compiled(compiled)
    assert ("_io_ready" not in vars(port.Socket)) is compiled
    assert port._framer_class is (_vm.Framer if compiled else framing.Framer)
    yield request.param
    port.use_compiled(True)


@pytest.fixture(scope="module")
def stop_default_vm():
    """For modules whose facades run on otpvm.default_vm(): it lives until
    interpreter exit, so it is stopped after the module, and other modules'
    VMs get the node numbers they expect (<0.N.0>)."""
    yield
    if otpvm.kernel._default is not None:
        otpvm.kernel._default.stop()
