"""Applications, as OTP's ``application`` module specifies them.

Every application here reports what happens to it to the test's main
process, registered as ``watcher``: ('app_start', app, type), ('started',
app, child), ('terminated', app, child, reason), ('prep_stop', app), ('stop',
app, state).  The controller's application reports are forwarded there too
(the ``reports`` fixture), so a test waits for "the controller has seen the
tree die" on a message rather than on a sleep.
"""

import gc
import logging
import sys

import pytest

import otpvm
from otpvm import ANY, Down, application, gen_server, receive, send, supervisor
from otpvm.application import Application, ApplicationError
from otpvm.gen_server import GenServer, Ok, Reply
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

T = 5       # generous timeout for anything that should happen at once


def run(main, *args):
    return otpvm.run(main, *args, schedulers=1)


def tell(msg):
    """Sends msg to the watcher, if there is one."""
    pid = otpvm.whereis("watcher")
    if pid is not None:
        send(pid, msg)


class Worker(GenServer):
    """A child that reports its start and its terminate, and answers 'env'."""

    def init(self, args):
        app, ident = args
        otpvm.process_flag("trap_exit", True)       # so that terminate runs on shutdown
        tell(("started", app, ident))
        return Ok((app, ident))

    async def handle_call(self, request, from_, state):
        op, key = request
        return Reply(await application.get_env(state[0], key, "no default"), state)

    def terminate(self, reason, state):
        tell(("terminated", *state, reason))


async def start_worker(app, ident):
    return await gen_server.start_link(Worker, (app, ident), name=f"{app}_{ident}")


class Sup(Supervisor):
    def init(self, args):
        app, children = args
        return SupFlags("one_for_one", intensity=0, period=1), [
            ChildSpec(c, (start_worker, (app, c))) for c in children]


def make_app(name, applications=(), env=None, children=("a", "b", "c"), start=None):
    """An Application subclass whose top supervisor has the given children."""

    async def default_start(self, start_type, args):
        tell(("app_start", name, start_type))
        return await supervisor.start_link(Sup, (name, children), name=f"{name}_sup")

    def prep_stop(self, state):
        tell(("prep_stop", name))
        return ("prepped", name)

    def stop(self, state):
        tell(("stop", name, state))

    return type(f"App_{name}", (Application,), {
        "name": name, "vsn": "1.0", "description": f"the {name} app",
        "applications": tuple(applications), "env": dict(env or {}),
        "start": start or default_start, "prep_stop": prep_stop, "stop": stop,
    })


async def watcher():
    otpvm.register("watcher", otpvm.self())


async def expect(*patterns):
    """Receives each pattern in turn; returns the messages."""
    return [await receive(p, timeout=T) for p in patterns]


async def nothing_more(pattern=ANY):
    """Asserts that no message matching pattern is waiting."""
    with pytest.raises(TimeoutError):
        msg = await receive(pattern, timeout=0)
        pytest.fail(f"unexpected message {msg!r}")


async def names():
    return [name for name, _, _ in await application.which_applications()]


async def reason_of(call):
    """The reason of the ApplicationError that awaiting call raises."""
    try:
        await call
    except ApplicationError as exc:
        return exc.reason
    pytest.fail("no ApplicationError raised")


class _Forward(logging.Handler):
    """Sends the controller's application reports to the watcher."""

    def emit(self, record):
        text = record.getMessage()
        if text.startswith("application "):
            try:
                tell(("report", text))
            except Exception:                    # not in a process, or no VM
                pass


@pytest.fixture
def reports():
    handler = _Forward(logging.INFO)
    log = logging.getLogger("otpvm")
    old = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    yield
    log.removeHandler(handler)
    log.setLevel(old)


async def report(app):
    """Waits for the controller's report that app exited; returns its text."""
    _, text = await receive(reporting(f"application {app} exited"), timeout=T)
    return text


def reporting(text):
    """A pattern: a forwarded report containing text (tuple patterns
    compare elements by equality, so this is a predicate)."""
    return lambda m: (isinstance(m, tuple) and len(m) == 2 and m[0] == "report"
                      and text in m[1])


# -- load / unload ---------------------------------------------------------------


def test_load_makes_the_spec_and_env_known_and_unload_forgets_them():
    App = make_app("alpha", env={"port": 80})

    async def main():
        assert await application.loaded_applications() == []
        await application.load(App)
        assert await application.loaded_applications() == [("alpha", "the alpha app", "1.0")]
        assert await application.get_env("alpha", "port") == 80
        assert await names() == []                     # loaded is not started
        assert await reason_of(application.load(App)) == ("already_loaded", "alpha")
        await application.unload("alpha")
        assert await application.loaded_applications() == []
        assert await application.get_env("alpha", "port") is None
        assert await reason_of(application.unload("alpha")) == ("not_loaded", "alpha")
        # As OTP, start loads what is not loaded; no module defines an 'alpha'
        # (OTP: {error, {"no such file or directory", "alpha.app"}}).
        assert await reason_of(application.start("alpha")) == ("not_found", "alpha")
        await application.load(App)                    # and it can be loaded again
        return await application.get_env("alpha", "port")

    assert run(main) == 80


def test_a_running_application_cannot_be_unloaded():
    App = make_app("alpha", children=())

    async def main():
        await application.start(App)
        assert await reason_of(application.unload(App)) == ("running", "alpha")
        await application.stop(App)
        await application.unload(App)
        return await application.loaded_applications()

    assert run(main) == []


@pytest.mark.parametrize("bad", [object, 42, type("Nameless", (Application,), {})])
def test_load_refuses_what_is_not_a_named_application_class(bad):
    async def main():
        return await reason_of(application.load(bad))

    assert "not an Application subclass" in str(run(main))


def test_load_of_a_name_no_module_defines_is_not_found():
    async def main():
        return await reason_of(application.load("alpha"))

    assert run(main) == ("not_found", "alpha")


# -- start / stop ------------------------------------------------------------------


def test_start_runs_the_tree_and_stop_takes_it_down_in_reverse_then_calls_stop():
    App = make_app("alpha")

    async def main():
        await watcher()
        await application.start(App)                   # a class is loaded first
        await expect(("app_start", "alpha", "temporary"),
                     ("started", "alpha", "a"), ("started", "alpha", "b"),
                     ("started", "alpha", "c"))
        assert await application.which_applications() == [("alpha", "the alpha app", "1.0")]
        await application.stop("alpha")
        # stop returns once it is all done: everything is already in the mailbox.
        events = [await receive(timeout=0) for _ in range(5)]
        await nothing_more()
        assert await names() == []
        assert await application.loaded_applications() == [("alpha", "the alpha app", "1.0")]
        return events

    assert run(main) == [
        ("prep_stop", "alpha"),
        ("terminated", "alpha", "c", "shutdown"),
        ("terminated", "alpha", "b", "shutdown"),
        ("terminated", "alpha", "a", "shutdown"),
        ("stop", "alpha", ("prepped", "alpha")),
    ]


def test_which_applications_lists_running_ones_newest_first_and_they_restart():
    A, B, C = (make_app(n, children=()) for n in "abc")

    async def main():
        for app in (A, B, C):
            await application.start(app)
        first = await application.which_applications()
        await application.stop("b")
        second = await names()
        await application.start("b")                  # stopped apps stay loaded
        return first, second, await names()

    first, second, third = run(main)
    assert first == [("c", "the c app", "1.0"), ("b", "the b app", "1.0"),
                     ("a", "the a app", "1.0")]
    assert second == ["c", "a"]
    assert third == ["b", "c", "a"]


def test_start_and_stop_errors():
    App = make_app("alpha", children=())

    async def main():
        await application.start(App, "permanent")
        already = await reason_of(application.start(App))
        already_by_name = await reason_of(application.start("alpha", "transient"))
        unknown = await reason_of(application.start("nosuch"))
        await application.stop(App)
        not_started = await reason_of(application.stop(App))
        unknown_stop = await reason_of(application.stop("nosuch"))
        with pytest.raises(ValueError, match="start type"):
            await application.start(App, "forever")
        return already, already_by_name, unknown, not_started, unknown_stop

    assert run(main) == (
        ("already_started", "alpha"), ("already_started", "alpha"),
        ("not_found", "nosuch"), ("not_started", "alpha"), ("not_started", "nosuch"),
    )


def test_errors_are_application_errors_carrying_the_reason():
    err = ApplicationError(("not_started", "x"))
    assert isinstance(err, Exception)
    assert err.reason == ("not_started", "x")
    assert "not_started" in str(err)


# -- dependencies ------------------------------------------------------------------


def test_start_refuses_an_application_whose_dependency_is_not_started():
    Base = make_app("base", children=())
    Top = make_app("top", applications=("base",), children=())

    async def main():
        await watcher()
        await application.load(Base)
        missing = await reason_of(application.start(Top))
        await nothing_more()                            # Top's start never ran
        running = await names()
        await application.start(Base)
        await application.start(Top)
        return missing, running, await names()

    assert run(main) == (("not_started", "base"), [], ["top", "base"])


def test_ensure_all_started_starts_dependencies_first_and_lists_what_it_started():
    A = make_app("a", children=())
    B = make_app("b", applications=("a",), children=())
    C = make_app("c", applications=("b", "a"), children=())
    registry = {"a": A, "b": B}

    async def main():
        await watcher()
        started = await application.ensure_all_started(C, "transient", registry)
        order = await expect(("app_start", ANY, ANY), ("app_start", ANY, ANY),
                             ("app_start", ANY, ANY))
        await nothing_more()
        again = await application.ensure_all_started(C, "transient", registry)
        await nothing_more()                            # nothing started twice
        return started, order, again, await names()

    started, order, again, running = run(main)
    assert started == ["a", "b", "c"]
    assert order == [("app_start", n, "transient") for n in "abc"]
    assert again == []
    assert running == ["c", "b", "a"]


def test_ensure_all_started_skips_running_dependencies_and_finds_loaded_ones():
    A = make_app("a", children=())
    B = make_app("b", applications=("a",), children=())
    C = make_app("c", applications=("b",), children=())

    async def main():
        await watcher()
        await application.start(A)
        await application.load(B)                       # found without a registry
        await expect(("app_start", "a", "temporary"))
        started = await application.ensure_all_started(C)
        await expect(("app_start", "b", "temporary"), ("app_start", "c", "temporary"))
        await nothing_more()
        return started

    assert run(main) == ["b", "c"]


def test_ensure_all_started_errors_on_unknown_or_circular_dependencies():
    Lonely = make_app("lonely", applications=("ghost",), children=())
    X = make_app("x", applications=("y",), children=())
    Y = make_app("y", applications=("x",), children=())

    async def main():
        unknown = await reason_of(application.ensure_all_started(Lonely))
        circular = await reason_of(application.ensure_all_started(X, registry={"x": X, "y": Y}))
        return unknown, circular, await names()

    unknown, circular, running = run(main)
    assert unknown == ("not_found", "ghost")
    assert circular[0] == "circular_dependencies"
    assert running == []


def test_ensure_all_started_stops_what_it_started_when_one_fails():
    # OTP: "If an error occurs, the applications started by the function are
    # stopped to bring the set of running applications back to its initial state."
    async def broken(self, start_type, args):
        raise RuntimeError("cannot start")

    Pre = make_app("pre", children=())
    A = make_app("a", children=("w",))
    Bad = make_app("bad", applications=("pre", "a"), start=broken)

    async def main():
        await watcher()
        await application.start(Pre)
        reason = await reason_of(application.ensure_all_started(Bad, registry={"a": A}))
        await expect(("terminated", "a", "w", "shutdown"), ("stop", "a", ANY))
        return reason, await names()

    reason, running = run(main)
    assert reason[0] == "start_failed"
    assert running == ["pre"]                           # a was stopped, pre was not ours


# -- env -----------------------------------------------------------------------------


def test_env_defaults_set_unset_and_reads_from_inside_the_application():
    App = make_app("alpha", env={"port": 80, "host": "localhost"}, children=("w",))

    async def main():
        assert await application.get_env("alpha", "port", 1) == 1   # not loaded yet
        await application.load(App)
        await application.set_env("alpha", "port", 8080)            # before the start
        await application.start("alpha")
        inside = await gen_server.call("alpha_w", ("env", "port"))
        host = await gen_server.call("alpha_w", ("env", "host"))
        await application.set_env("alpha", "host", "example.org")
        host_after = await gen_server.call("alpha_w", ("env", "host"))
        await application.unset_env("alpha", "host")
        unset = await gen_server.call("alpha_w", ("env", "host"))
        missing = await application.get_env("alpha", "nokey")
        with_default = await application.get_env(App, "nokey", "dflt")
        not_loaded = await reason_of(application.set_env("nosuch", "k", 1))
        return inside, host, host_after, unset, missing, with_default, not_loaded

    assert run(main) == (8080, "localhost", "example.org", "no default", None, "dflt",
                         ("not_loaded", "nosuch"))
    assert App.env == {"port": 80, "host": "localhost"}     # the class is left alone


def test_the_start_callback_can_read_its_own_env():
    async def start(self, start_type, args):
        tell(("env_in_start", await application.get_env("alpha", "mode")))
        return await supervisor.start_link(Sup, ("alpha", ()))

    App = make_app("alpha", env={"mode": "fast"}, start=start)

    async def main():
        await watcher()
        await application.start(App)
        return await receive(("env_in_start", ANY), timeout=T)

    assert run(main) == ("env_in_start", "fast")


# -- a start that fails ----------------------------------------------------------------


def _starts_a_tree_then(outcome):
    async def start(self, start_type, args):
        sup = await supervisor.start_link(Sup, ("alpha", ("w",)))
        tell(("sup", sup))
        if outcome == "raise":
            raise RuntimeError("start went wrong")
        return "not a pid"
    return start


@pytest.mark.parametrize("outcome", ["raise", "bad_return"])
def test_a_failed_start_is_a_clear_error_and_leaves_nothing_running(outcome):
    App = make_app("alpha", start=_starts_a_tree_then(outcome))

    async def main():
        await watcher()
        before = set(otpvm.processes())
        reason = await reason_of(application.start(App, "permanent"))
        _, sup = await receive(("sup", ANY), timeout=T)
        ref = otpvm.monitor(sup)
        await receive(Down(ref, ANY, ANY), timeout=T)   # the half-built tree went down
        await expect(("terminated", "alpha", "w", ANY))
        left = set(otpvm.processes()) - before
        still = [p for p in left if otpvm.is_alive(p)
                 and p != otpvm.whereis("application_controller")]
        return reason, still, await names(), await application.loaded_applications()

    reason, still, running, loaded = run(main)   # and the node survived a permanent app
    if outcome == "raise":
        assert reason[0] == "start_failed"
        assert isinstance(reason[1], RuntimeError) and "went wrong" in str(reason[1])
    else:
        assert reason == ("bad_start_return", "not a pid")
    assert still == []
    assert running == []
    assert loaded == [("alpha", "the alpha app", "1.0")]


# -- start types -------------------------------------------------------------------------


async def _top(outcome):
    """A top process that ends as told once it gets 'go'."""
    await receive("go")
    if outcome == "normal":
        return
    if outcome == "raise":
        raise RuntimeError("the tree crashed")
    otpvm.exit(outcome)


def app_with_top(outcome):
    """An app whose top process (registered as alpha_top) ends with outcome."""
    async def start(self, start_type, args):
        if outcome == "tree":                 # a real tree: a child crash exceeds intensity 0
            return await supervisor.start_link(Sup, ("alpha", ("w",)), name="alpha_top")
        pid = otpvm.spawn_link(_top, outcome)
        otpvm.register("alpha_top", pid)
        return pid
    return make_app("alpha", start=start)


def end_the_tree(outcome, start_type):
    """Runs an app of start_type whose tree then ends with outcome.

    Returns ('up', (report, stop message, running apps)) if the node carried
    on, or ('halted', reason) if main was killed by the node stopping."""

    async def main():
        await watcher()
        await application.start(app_with_top(outcome), start_type)
        if outcome == "killed":
            otpvm.exit(otpvm.whereis("alpha_top"), "kill")
        elif outcome == "tree":
            otpvm.exit(otpvm.whereis("alpha_w"), "kill")
        else:
            send("alpha_top", "go")
        text = await report("alpha")
        stopped = await receive(("stop", "alpha", ANY), timeout=T)
        running = await names()            # the controller has finished handling it
        await nothing_more(reporting("stopping the node"))
        return text, stopped, running

    try:
        return "up", run(main)
    except otpvm.ProcessExit as exc:
        return "halted", exc.reason


@pytest.mark.parametrize("outcome, reason", [
    ("normal", "'normal'"), ("raise", "RuntimeError"), ("killed", "'killed'")])
def test_a_temporary_application_that_dies_is_only_reported(reports, outcome, reason):
    state, (text, stopped, running) = end_the_tree(outcome, "temporary")
    assert state == "up"
    assert reason in text and "temporary" in text
    assert stopped == ("stop", "alpha", ("prepped", "alpha"))    # OTP calls stop/1 too
    assert running == []


def test_a_transient_application_that_ends_normally_is_only_reported(reports):
    state, (text, _, running) = end_the_tree("normal", "transient")
    assert state == "up"
    assert "'normal'" in text and "transient" in text
    assert running == []


@pytest.mark.parametrize("start_type, outcome", [
    ("transient", "raise"), ("transient", "shutdown"), ("transient", "killed"),
    ("permanent", "normal"), ("permanent", "shutdown"), ("permanent", "raise"),
    ("permanent", "killed"), ("permanent", "tree"),
])
def test_the_node_stops_when_a_permanent_or_abnormally_ending_transient_app_dies(
        caplog, start_type, outcome):
    with caplog.at_level(logging.ERROR, logger="otpvm"):
        state, reason = end_the_tree(outcome, start_type)
    assert (state, reason) == ("halted", "killed")     # every process was killed
    texts = [r.getMessage() for r in caplog.records]
    assert f"application alpha was {start_type}: stopping the node" in texts


@pytest.mark.parametrize("start_type", ["permanent", "transient"])
def test_stopping_a_permanent_application_does_not_stop_the_node(reports, start_type):
    async def main():
        await watcher()
        await application.start(make_app("alpha"), start_type)
        await application.stop("alpha")
        await receive(reporting("exited: stopped"), timeout=T)
        await nothing_more(reporting("stopping the node"))
        return await names()

    assert run(main) == []


def test_a_linked_helper_ending_does_not_end_the_application(reports):
    # OTP's application master ignores exits from anything but its top
    # supervisor and the application controller.
    async def helper():
        await receive("go")

    async def start(self, start_type, args):
        otpvm.register("helper", otpvm.spawn_link(helper))
        return await supervisor.start_link(Sup, ("alpha", ("w",)))

    async def main():
        await watcher()
        await application.start(make_app("alpha", start=start), "permanent")
        ref = otpvm.monitor("helper")
        send("helper", "go")
        await receive(Down(ref, ANY, ANY), timeout=T)
        alive = await gen_server.call("alpha_w", ("env", "k"))
        running = await names()
        await application.stop("alpha")
        return alive, running

    assert run(main) == ("no default", ["alpha"])


def test_stop_while_the_tree_is_dying_returns():
    async def main():
        await watcher()
        for _ in range(20):
            await application.start(app_with_top("raise"), "temporary")
            send("alpha_top", "go")
            try:
                await application.stop("alpha")
            except ApplicationError as exc:
                assert exc.reason == ("not_started", "alpha")
            assert await names() == []
            await application.unload("alpha")
        return "ok"

    assert run(main) == "ok"


def test_stopped_vms_leave_no_application_env_behind():
    # VM.stop kills the controller, so its terminate never runs.
    async def main():
        await application.load(make_app("leaky", env={"k": 1}))
        return await application.get_env("leaky", "k")

    before = len(application._ENVS)
    assert [run(main) for _ in range(3)] == [1, 1, 1]
    gc.collect()
    assert len(application._ENVS) == before


# -- bad input is refused where it is written ------------------------------------


@pytest.mark.parametrize("attrs, message", [
    ({"applications": "base"}, "Application Bad: applications must be a tuple of the names of "
                               "the applications it depends on, not 'base' (write ('base',))"),
    ({"applications": ("base", 3)}, "applications must be a tuple of the names"),
    ({"applications": ("",)}, "applications must be a tuple of the names"),
    ({"env": [("key", 1)]}, "Application Bad: env must be a dict, not [('key', 1)]"),
    ({"name": 42}, "Application Bad: name must be a str, not 42"),
    ({"vsn": 1.0}, "Application Bad: vsn must be a str, not 1.0"),
])
def test_a_bad_application_attribute_is_refused_when_the_class_is_defined(attrs, message):
    with pytest.raises(TypeError) as exc:
        type("Bad", (Application,), {"name": "bad", **attrs})
    assert message in str(exc.value)


def test_a_list_of_dependencies_becomes_a_tuple():
    App = type("Listed", (Application,), {"name": "listed", "applications": ["a", "b"]})
    assert App.applications == ("a", "b")


def test_a_bad_start_type_or_app_is_refused_before_anything_starts():
    Base = make_app("base", children=())
    App = make_app("top", applications=["base"], children=())

    async def main():
        await watcher()
        with pytest.raises(ValueError) as bad_type:
            await application.ensure_all_started(App, "forever", {"base": Base})
        with pytest.raises(ApplicationError) as bad_app:    # a name no module defines
            await application.ensure_all_started("top", "permanent", {"base": Base})
        with pytest.raises(TypeError) as bad_name:
            await application.start(42)
        return (str(bad_type.value), bad_app.value.reason, str(bad_name.value),
                await application.which_applications())

    bad_type, bad_app, bad_name, running = run(main)
    assert bad_type == "start type must be 'permanent', 'transient' or 'temporary', not 'forever'"
    assert bad_app == ("not_found", "top")
    assert bad_name == "expected an Application subclass or an application's name, not 42"
    assert running == []


# -- get_supervisor (OTP 26) -------------------------------------------------------


def test_get_supervisor_gives_the_top_supervisor_of_a_running_application():
    App = make_app("alpha", children=())

    async def main():
        before = await application.get_supervisor("alpha")
        await application.start(App)
        top = await application.get_supervisor(App)
        by_name = await application.get_supervisor("alpha")
        sup = otpvm.whereis("alpha_sup")
        await application.stop(App)
        # erl (OTP 26+): undefined = application:get_supervisor(stdlib), a
        # library application that is loaded but has no supervisor.
        return before, top == sup == by_name, await application.get_supervisor("alpha"), \
            await application.get_supervisor("nosuch")

    assert run(main) == (None, True, None, None)


# -- applications found by name, without a registry ----------------------------------


class LookupBase(Application):
    name = "lookup_base"

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup, ("lookup_base", ()))


class LookupTop(Application):
    name = "lookup_top"
    applications = ("lookup_base",)

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup, ("lookup_top", ()))


def test_dependencies_are_found_beside_the_application_that_needs_them():
    async def main():
        started = await application.ensure_all_started(LookupTop)
        running = await names()
        for name in reversed(started):
            await application.stop(name)
        return started, running

    assert run(main) == (["lookup_base", "lookup_top"], ["lookup_top", "lookup_base"])


APP_MODULE = '''
from otpvm import supervisor
from otpvm.application import Application
from otpvm.supervisor import Supervisor, SupFlags


class Sup(Supervisor):
    def init(self, args):
        return SupFlags("one_for_one"), []


class App(Application):
    name = {name!r}
    applications = {deps!r}
    env = {{"from": {name!r}}}

    async def start(self, start_type, args):
        return await supervisor.start_link(Sup, None)
'''


@pytest.fixture
def app_modules(tmp_path, monkeypatch):
    """Writes modules named after applications, as OTP has Name.app files."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(name, deps=(), source=None):
        text = source if source is not None else APP_MODULE.format(name=name, deps=tuple(deps))
        (tmp_path / f"{name}.py").write_text(text)
    yield write
    for name in [m for m in sys.modules if m.startswith("otpvm_lookup_")]:
        del sys.modules[name]


def test_an_application_is_found_in_the_module_named_after_it(app_modules):
    app_modules("otpvm_lookup_db")
    app_modules("otpvm_lookup_web", deps=["otpvm_lookup_db"])
    app_modules("otpvm_lookup_cli")

    async def main():
        # erl: ok = application:start(App) loads App from App.app first, and
        # {ok, [Dep, App]} = application:ensure_all_started(App).
        await application.load("otpvm_lookup_cli")
        env = await application.get_env("otpvm_lookup_cli", "from")
        await application.start("otpvm_lookup_cli")
        started = await application.ensure_all_started("otpvm_lookup_web")
        return env, started, await names()

    assert run(main) == ("otpvm_lookup_cli", ["otpvm_lookup_db", "otpvm_lookup_web"],
                         ["otpvm_lookup_web", "otpvm_lookup_db", "otpvm_lookup_cli"])


def test_a_name_no_module_defines_is_not_found_and_nothing_starts(app_modules):
    app_modules("otpvm_lookup_web", deps=["otpvm_lookup_missing"])
    app_modules("otpvm_lookup_empty", source="x = 1\n")

    async def main():
        return (await reason_of(application.ensure_all_started("otpvm_lookup_web")),
                await reason_of(application.start("otpvm_lookup_empty")),
                await reason_of(application.start("not a module name.")),
                await names())

    assert run(main) == (("not_found", "otpvm_lookup_missing"),
                         ("not_found", "otpvm_lookup_empty"),
                         ("not_found", "not a module name."), [])


def test_a_module_that_fails_to_import_is_an_error_not_a_missing_application(app_modules):
    app_modules("otpvm_lookup_broken", source="import otpvm_lookup_nowhere\n")
    app_modules("otpvm_lookup_twice", source=APP_MODULE.format(name="otpvm_lookup_twice", deps=())
                + "\n\nclass Again(App):\n    pass\n")

    async def main():
        with pytest.raises(ModuleNotFoundError) as broken:
            await application.start("otpvm_lookup_broken")
        return broken.value.name, await reason_of(application.start("otpvm_lookup_twice"))

    assert run(main) == ("otpvm_lookup_nowhere",
                         ("ambiguous", "otpvm_lookup_twice", ["Again", "App"]))
