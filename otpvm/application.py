"""Applications: named, versioned units that start a supervision tree.

OTP's ``application`` module.  An application is a subclass of
``Application`` with a ``name``, a ``vsn``, the ``applications`` it depends on
and a default ``env``; its ``start`` returns the pid of its top supervisor::

    class Store(Application):
        name = "store"
        vsn = "1.0"
        applications = ("logger_app",)
        env = {"path": "/tmp/store"}

        async def start(self, start_type, args):
            return await supervisor.start_link(StoreSup, None, name="store_sup")

    await application.ensure_all_started(Store)

An application can be named instead of given as its class, as in OTP
(``application.start("store")``): a name not loaded yet is looked up, as OTP
looks for ``Name.app`` on the code path, first in the module of the
application that depends on it (where ``otpvm run MODULE:APP`` finds
dependencies), then in the module called like the application (imported if
need be); ``ApplicationError(('not_found', name))`` if neither defines it.

An application controller process (registered as ``application_controller``)
keeps track of what is loaded and running.  Each running application has a
master process linked to its top supervisor; when the tree dies the start type
decides what happens, as in OTP: ``permanent`` stops the whole node,
``transient`` stops it unless the reason was ``normal``, ``temporary`` only
reports it.  ``otpvm run MODULE:APP`` boots a node with an application and
keeps it up until SIGINT or SIGTERM.

The controller and the masters hold an application class from an upgradable
module (see otpvm.code) by name, never the class itself: ``prep_stop``,
``stop`` and ``config_change`` run the current version's code, and a
release upgrade tells an application its configuration changed with
``config_change``.
"""

from __future__ import annotations

import importlib
import logging
import sys
import weakref
from dataclasses import dataclass, field
from typing import Any

from otpvm import _vm, code, gen, gen_server
from otpvm.gen import From
from otpvm.gen_server import GenServer, NoReply, Ok, Reply
from otpvm.kernel import (
    Pid,
    exit,
    halt,
    link,
    make_ref,
    process_flag,
    receive,
    send,
    spawn_link,
    whereis,
)
from otpvm.kernel import self as _me
from otpvm.terms import ANY, AnyOf, Exit

__all__ = [
    "Application", "ApplicationError", "config_change", "ensure_all_started", "get_env",
    "get_supervisor", "load", "loaded_applications", "set_env", "start", "stop", "unload",
    "unset_env", "which_applications",
]

_log = logging.getLogger("otpvm")
CONTROLLER = "application_controller"
START_TYPES = ("permanent", "transient", "temporary")


class Application:
    """Base class of an application (override the class attributes and start).

    The attributes are checked when the subclass is defined: a bad one is a
    TypeError naming it (``applications = "base"`` instead of ``("base",)``
    would otherwise depend on applications 'b', 'a', 's' and 'e')."""

    name: str = ""
    vsn: str = "0"
    description: str = ""
    applications: tuple[str, ...] = ()
    env: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        what = f"Application {cls.__qualname__}"
        for attr in ("name", "vsn", "description"):
            if not isinstance(getattr(cls, attr), str):
                raise TypeError(f"{what}: {attr} must be a str, not {getattr(cls, attr)!r}")
        deps = cls.applications
        if not (isinstance(deps, (tuple, list))
                and all(isinstance(dep, str) and dep for dep in deps)):
            hint = f" (write ({deps!r},))" if isinstance(deps, str) else ""
            raise TypeError(f"{what}: applications must be a tuple of the names of the "
                            f"applications it depends on, not {deps!r}{hint}")
        cls.applications = tuple(deps)
        if not isinstance(cls.env, dict):
            raise TypeError(f"{what}: env must be a dict, not {cls.env!r}")

    async def start(self, start_type: str, args: Any) -> Pid:
        """Starts the top supervisor (linked to the caller) and returns its pid."""
        raise NotImplementedError(f"application {self.name!r} must define start()")

    def prep_stop(self, state: Any) -> Any:
        """Called before the tree is stopped."""
        return state

    def stop(self, state: Any) -> None:
        """Called after the tree has stopped."""

    def config_change(self, changed: list[tuple[str, Any]], new: list[tuple[str, Any]],
                      removed: list[str]) -> None:
        """Called, in the current code, after a release upgrade changed the
        running application's configuration (``application.config_change``):
        ``changed`` and ``new`` are the (key, value) pairs changed and
        added, ``removed`` the keys removed.  By default nothing is done."""


class ApplicationError(Exception):
    """An application operation failed: ``reason`` says why (OTP's {error, Reason})."""

    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _late(cls: type[Application]) -> Any:
    """How the class is held: by name ("pkg.mod:Name") when its module is
    upgradable, so that the current version is always the one used and no
    old version is kept alive; else the class itself."""
    module, qualname = cls.__module__, cls.__qualname__
    if code.managed(module) and "<locals>" not in qualname:
        return code.ref(f"{module}:{qualname}")
    return cls


def _resolve(ref: Any) -> type[Application]:
    cls: type[Application] = ref.resolve() if isinstance(ref, code.CodeRef) else ref
    return cls


@dataclass
class _Loaded:
    ref: Any                    # see _late
    env: dict[str, Any]

    @property
    def cls(self) -> type[Application]:
        """The application's class, in its current version."""
        return _resolve(self.ref)


@dataclass
class _Running:
    start_type: str
    master: Pid
    top: Pid | None = None          # the top supervisor (get_supervisor)


# Environments are read without a call to the controller, the way OTP reads
# them from an ETS table: an application's start may ask for its own env
# while the controller waits for that start.  One table per VM, so that
# several VMs in one interpreter keep theirs apart, held weakly so that it
# goes with its VM even when the controller was killed before terminate; it
# names its controller (by pid number: a Pid would keep its VM alive), so
# that a restarted controller does not read a dead one's.
_ENVS: weakref.WeakKeyDictionary[Any, tuple[int, dict[str, dict[str, Any]]]] = (
    weakref.WeakKeyDictionary())


def _envs() -> dict[str, dict[str, Any]]:
    """The calling controller's table."""
    return _ENVS[_vm._current_vm("application")][1]


@dataclass
class _Controller:
    loaded: dict[str, _Loaded] = field(default_factory=dict)
    running: dict[str, _Running] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)        # start order


async def _master(ref: Any, start_type: str, args: Any) -> None:
    """An application master: starts the tree and reports how it ends.

    As OTP's application master, it acts only on exits from its top
    supervisor (the tree died: prep_stop and stop run, then it exits with the
    tree's reason) and from the controller; exits of other processes that
    start linked to it are ignored.  It keeps the application's class by
    name and its instance's attributes, and makes an instance of the current
    version for each callback."""
    process_flag("trap_exit", True)
    cls = _resolve(ref)
    name = cls.name
    app = cls()
    controller = whereis(CONTROLLER)
    assert controller is not None
    try:
        top = await app.start(start_type, args)
    except Exception as exc:
        # The reason travels without its traceback: log it here, where it is.
        _log.exception("application %s: start raised", name)
        exit(("start_failed", exc))
    if not isinstance(top, Pid):
        exit(("bad_start_return", top))
    attrs = vars(app)
    del cls, app                                 # from here on, current code only
    link(top)
    send(controller, ("$app_started", name, top))
    while True:
        msg = await receive()
        if isinstance(msg, Exit) and msg.pid == top:
            _callback(ref, attrs, "stop", _callback(ref, attrs, "prep_stop", None))
            exit(msg.reason)                     # the tree died: tell the controller
        if isinstance(msg, Exit) and msg.pid == controller:
            exit(msg.reason)                     # the controller went away
        if isinstance(msg, tuple) and msg[:1] == ("$app_stop",):
            state = _callback(ref, attrs, "prep_stop", None)
            exit(top, "shutdown")                # its children stop in reverse
            await receive(Exit(top, ANY))
            _callback(ref, attrs, "stop", state)
            send(msg[1], ("$app_stopped", name))
            exit("normal")
        if isinstance(msg, tuple) and msg[:1] == ("$app_config_change",):
            _, caller, tag, changes = msg
            send(caller, (tag, _config_change(ref, attrs, changes)))


def _config_change(ref: Any, attrs: dict[str, Any], changes: tuple[Any, Any, Any]) -> Any:
    """Runs config_change in the current code: None, or the exception."""
    try:
        _instance(ref, attrs).config_change(*changes)
    except Exception as exc:
        return exc
    return None


def _instance(ref: Any, attrs: dict[str, Any]) -> Application:
    """An instance of the application's current class with attrs."""
    cls = _resolve(ref)
    app = cls.__new__(cls)
    vars(app).update(attrs)
    return app


def _callback(ref: Any, attrs: dict[str, Any], name: str, state: Any) -> Any:
    """Runs prep_stop or stop in the current code; like OTP, an exception
    is logged, not fatal (prep_stop then leaves the state as it was)."""
    try:
        return getattr(_instance(ref, attrs), name)(state)
    except Exception:
        _log.exception("application callback %s.%s failed", getattr(ref, "__qualname__", ref), name)
        return state


class _ControllerServer(GenServer):
    def init(self, _: Any) -> Any:
        process_flag("trap_exit", True)
        _ENVS[_vm._current_vm("application")] = (_me().id, {})
        return Ok(_Controller())

    def terminate(self, reason: Any, state: _Controller) -> None:
        _ENVS.pop(_vm._current_vm("application"), None)

    async def handle_call(self, request: Any, from_: From, state: _Controller) -> Any:
        op = request[0]
        if op == "load":
            return Reply(self._load(state, request[1]), state)
        if op == "unload":
            return Reply(self._unload(state, request[1]), state)
        if op == "loaded":
            return Reply([(name, loaded.cls.description, loaded.cls.vsn)
                          for name, loaded in state.loaded.items()], state)
        if op == "start":
            return Reply(await self._start(state, request[1], request[2]), state)
        if op == "stop":
            return Reply(await self._stop(state, request[1]), state)
        if op == "which":
            return Reply([(name, state.loaded[name].cls.description, state.loaded[name].cls.vsn)
                          for name in reversed(state.order)], state)
        if op in ("set_env", "unset_env"):
            app, key = request[1], request[2]
            if app not in state.loaded:
                return Reply(("error", ("not_loaded", app)), state)
            if op == "set_env":
                state.loaded[app].env[key] = request[3]
            else:
                state.loaded[app].env.pop(key, None)
            return Reply("ok", state)
        if op == "spec":
            loaded = state.loaded.get(request[1])
            return Reply(loaded.cls if loaded else None, state)
        if op == "supervisor":
            running = state.running.get(request[1])
            return Reply(running.top if running else None, state)
        if op == "config_change":
            return Reply(await self._config_change(state, *request[1:]), state)
        return Reply(("error", ("unknown_request", request)), state)

    def handle_info(self, msg: Any, state: _Controller) -> Any:
        if isinstance(msg, Exit):
            name = next((n for n, r in state.running.items() if r.master == msg.pid), None)
            if name is not None:
                self._app_exited(state, name, msg.reason)
        return NoReply(state)

    # -- operations -------------------------------------------------------

    def _load(self, state: _Controller, cls: Any) -> Any:
        if not (isinstance(cls, type) and issubclass(cls, Application)) or not cls.name:
            return ("error", f"not an Application subclass with a name: {cls!r}")
        if cls.name in state.loaded:
            return ("error", ("already_loaded", cls.name))
        state.loaded[cls.name] = _Loaded(_late(cls), dict(cls.env))
        _envs()[cls.name] = state.loaded[cls.name].env
        return "ok"

    def _unload(self, state: _Controller, name: str) -> Any:
        if name not in state.loaded:
            return ("error", ("not_loaded", name))
        if name in state.running:
            return ("error", ("running", name))
        del state.loaded[name]
        del _envs()[name]
        return "ok"

    async def _start(self, state: _Controller, name: str, start_type: str) -> Any:
        if name in state.running:
            return ("error", ("already_started", name))
        loaded = state.loaded.get(name)
        if loaded is None:
            return ("error", ("not_loaded", name))
        missing = [dep for dep in loaded.cls.applications if dep not in state.running]
        if missing:
            return ("error", ("not_started", missing[0]))
        master = spawn_link(_master, loaded.ref, start_type, None)
        msg = await receive(AnyOf(("$app_started", name, ANY), Exit(master, ANY)))
        if isinstance(msg, Exit):
            return ("error", msg.reason)
        state.running[name] = _Running(start_type, master, msg[2])
        state.order.append(name)
        return "ok"

    async def _stop(self, state: _Controller, name: str) -> Any:
        running = state.running.pop(name, None)
        if running is None:
            return ("error", ("not_started", name))
        state.order.remove(name)
        send(running.master, ("$app_stop", _me()))
        # The tree may die on its own before the master sees the request: then
        # the master's exit is the answer (and, being asked to stop, no halt).
        msg = await receive(AnyOf(("$app_stopped", name), Exit(running.master, ANY)))
        if not isinstance(msg, Exit):
            msg = await receive(Exit(running.master, ANY))
        if msg.reason == "normal":
            _log.info("application %s exited: stopped (type %s)", name, running.start_type)
        else:
            _log.error("application report: application %s exited with reason %r while "
                       "being stopped (type %s)", name, msg.reason, running.start_type)
        return "ok"

    async def _config_change(self, state: _Controller, name: str,
                             changed: list[tuple[str, Any]], new: list[tuple[str, Any]],
                             removed: list[str]) -> Any:
        """Applies the change to the env, then (if the application runs)
        has its master call config_change in the current code; if that
        raises, the env is put back and the error returned."""
        loaded = state.loaded.get(name)
        if loaded is None:
            return ("error", ("not_loaded", name))
        before = dict(loaded.env)
        loaded.env.update(changed)
        loaded.env.update(new)
        for key in removed:
            loaded.env.pop(key, None)
        running = state.running.get(name)
        if running is None:
            return "ok"
        tag = make_ref()
        send(running.master, ("$app_config_change", _me(), tag, (changed, new, removed)))
        msg = await receive(AnyOf((tag, ANY), Exit(running.master, ANY)))
        if isinstance(msg, Exit):         # its tree died meanwhile: as handle_info would
            self._app_exited(state, name, msg.reason)
            failure: Any = ("master_exited", msg.reason)
        else:
            failure = msg[1]
        if failure is None:
            return "ok"
        loaded.env.clear()
        loaded.env.update(before)
        return ("error", ("config_change_failed", failure))

    def _app_exited(self, state: _Controller, name: str, reason: Any) -> None:
        running = state.running.pop(name)
        state.order.remove(name)
        _log.error("application report: application %s exited with reason %r (type %s)",
                   name, reason, running.start_type)
        if running.start_type == "permanent" or (
                running.start_type == "transient" and reason != "normal"):
            _log.error("application %s was %s: stopping the node", name, running.start_type)
            halt()


# -- the API ------------------------------------------------------------------


async def _controller() -> Pid:
    pid = whereis(CONTROLLER)
    if pid is None:
        try:
            pid = await gen_server.start(_ControllerServer, None, name=CONTROLLER)
        except gen.StartError as exc:         # another process started it first
            if isinstance(exc.reason, tuple) and exc.reason[0] == "already_started":
                return exc.reason[1]
            raise
    return pid


async def _request(*request: Any) -> Any:
    result = await gen.call(await _controller(), request, None)
    if isinstance(result, tuple) and result and result[0] == "error":
        raise ApplicationError(result[1])
    return result


def _name(app: Any) -> str:
    if isinstance(app, type) and issubclass(app, Application):
        return app.name
    if not isinstance(app, str):
        raise TypeError(f"expected an Application subclass or an application's name, "
                        f"not {app!r}")
    return app


def _check_start_type(start_type: Any) -> None:
    if not (isinstance(start_type, str) and start_type in START_TYPES):
        raise ValueError(f"start type must be 'permanent', 'transient' or 'temporary', "
                         f"not {start_type!r}")


async def _find(name: str, near: type[Application] | None = None) -> type[Application]:
    """The Application subclass of the application called ``name``, as OTP
    finds ``Name.app`` on the code path: the one loaded already, else one
    defined in the module of ``near`` (an application depending on it, as
    ``otpvm run MODULE:APP`` finds dependencies), else the one defined in the
    module named ``name`` (imported if need be).  Raises
    ApplicationError(('not_found', name)) if there is none, or
    ('ambiguous', name, [classes]) if that module defines several.
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"an application's name is a non-empty str, not {name!r}")
    loaded: type[Application] | None = await _request("spec", name)
    if loaded is not None:
        return loaded
    if near is not None:
        found = _defined_in(sys.modules.get(near.__module__), name)
        if found is not None:
            return found
    found = _defined_in(_import(name), name)
    if found is None:
        raise ApplicationError(("not_found", name))
    return found


def _import(name: str) -> Any:
    """The module named name, or None if there is no such module (an
    error inside it is raised: a bug to show, not an application missing)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise
    except (ImportError, ValueError):   # not a module name at all (a dot at the end...)
        return None


def _defined_in(module: Any, name: str) -> type[Application] | None:
    """The Application subclass called name that module defines (or
    imports, when it defines none)."""
    if module is None:
        return None
    found = {obj for obj in vars(module).values()
             if isinstance(obj, type) and issubclass(obj, Application) and obj.name == name}
    own = {cls for cls in found if cls.__module__ == module.__name__}
    candidates = own or found
    if len(candidates) > 1:
        raise ApplicationError(("ambiguous", name, sorted(c.__qualname__ for c in candidates)))
    return next(iter(candidates), None)


async def _class(app: Any) -> type[Application]:
    """The Application subclass app is, or names (see _find)."""
    if isinstance(app, type) and issubclass(app, Application):
        return app
    if isinstance(app, str):
        return await _find(app)
    raise TypeError(f"expected an Application subclass or an application's name, not {app!r}")


async def load(app: type[Application] | str) -> None:
    """Loads an application (its spec and default env), given as its class
    or its name (found as the module docstring says); ApplicationError if
    loaded already."""
    await _request("load", await _find(app) if isinstance(app, str) else app)


async def unload(app: type[Application] | str) -> None:
    """Unloads an application (its spec and env); it must not be running."""
    await _request("unload", _name(app))


async def loaded_applications() -> list[tuple[str, str, str]]:
    """(name, description, vsn) of the loaded applications (running ones too)."""
    result: list[tuple[str, str, str]] = await _request("loaded")
    return result


async def start(app: type[Application] | str, start_type: str = "temporary") -> None:
    """Starts an application, given as its class or its name, loading it
    first if need be (as OTP does; a name is found as the module docstring says).

    Its dependencies must be running (see ensure_all_started)."""
    _check_start_type(start_type)
    if isinstance(app, str) and await _request("spec", app) is None:
        app = await _class(app)
    if isinstance(app, type):
        try:
            await load(app)
        except ApplicationError as exc:
            if not (isinstance(exc.reason, tuple) and exc.reason[0] == "already_loaded"):
                raise
    await _request("start", _name(app), start_type)


async def ensure_all_started(app: type[Application] | str, start_type: str = "temporary",
                             registry: dict[str, type[Application]] | None = None) -> list[str]:
    """Starts app (its class, or its name) and, first, the applications it
    depends on, found by name (in ``registry`` if given, else as the module
    docstring says).  Returns the names it started, in order."""
    _check_start_type(start_type)
    started: list[str] = []
    running = {name for name, _, _ in await which_applications()}
    try:
        await _ensure(await _class(app), start_type, registry or {}, running, started, ())
    except Exception:
        # As OTP: the applications started here are stopped again, newest first.
        for name in reversed(started):
            try:
                await stop(name)
            except ApplicationError:
                pass                        # it died meanwhile
        raise
    return started


async def _ensure(app: type[Application], start_type: str, registry: dict[str, Any],
                  running: set[str], started: list[str], path: tuple[str, ...]) -> None:
    if app.name in running:
        return
    if app.name in path:
        raise ApplicationError(("circular_dependencies", path + (app.name,)))
    for dep in app.applications:
        if dep in running:
            continue
        dep_cls = registry.get(dep) or await _find(dep, near=app)
        await _ensure(dep_cls, start_type, registry, running, started, path + (app.name,))
    await start(app, start_type)
    running.add(app.name)
    started.append(app.name)


async def get_supervisor(app: type[Application] | str) -> Pid | None:
    """The pid of the running application's top supervisor (what its start
    returned), or None if it is not running (OTP 26's get_supervisor)."""
    pid: Pid | None = await _request("supervisor", _name(app))
    return pid


async def stop(app: type[Application] | str) -> None:
    """Stops a running application: prep_stop, the tree in reverse, stop."""
    await _request("stop", _name(app))


async def config_change(app: type[Application] | str, changed: Any = (), new: Any = (),
                        removed: Any = ()) -> None:
    """A release upgrade changed the application's configuration (OTP's
    ``config_change``): ``changed`` and ``new`` are (key, value) pairs (or
    dicts) changed and added, ``removed`` keys.  The env is updated, then,
    if the application is running, ``Application.config_change(changed,
    new, removed)`` runs (current code, lists in the order given).  Raises
    ApplicationError(('config_change_failed', exc)) if it raised (the env
    is then as it was), or ``('not_loaded', name)``."""
    lists = (_pairs("changed", changed), _pairs("new", new), _keys(removed))
    await _request("config_change", _name(app), *lists)


def _pairs(what: str, value: Any) -> list[tuple[str, Any]]:
    items = list(value.items()) if isinstance(value, dict) else list(value)
    if not all(type(item) is tuple and len(item) == 2 and isinstance(item[0], str)
               for item in items):
        raise TypeError(f"config_change: {what} must be (key, value) pairs or a dict, "
                        f"not {value!r}")
    return items


def _keys(value: Any) -> list[str]:
    keys = list(value)
    if isinstance(value, str) or not all(isinstance(key, str) for key in keys):
        raise TypeError(f"config_change: removed must be a list of keys, not {value!r}")
    return keys


async def which_applications() -> list[tuple[str, str, str]]:
    """(name, description, vsn) of the running applications, newest first."""
    result: list[tuple[str, str, str]] = await _request("which")
    return result


async def get_env(app: type[Application] | str, key: str, default: Any = None) -> Any:
    """The application's configuration value for key (default if unset)."""
    controller = whereis(CONTROLLER)
    owner, envs = _ENVS.get(_vm._current_vm("application.get_env"), (0, {}))
    env = envs.get(_name(app), {}) if controller is not None and owner == controller.id else {}
    return env.get(key, default)


async def set_env(app: type[Application] | str, key: str, value: Any) -> None:
    """Sets a configuration value of a loaded application."""
    await _request("set_env", _name(app), key, value)


async def unset_env(app: type[Application] | str, key: str) -> None:
    """Removes a configuration value of a loaded application (get_env then
    gives the default)."""
    await _request("unset_env", _name(app), key)
