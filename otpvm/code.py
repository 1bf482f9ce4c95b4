"""The code server: two versions of a module side by side, as in OTP.

``code.manage("app")`` puts every module under the package ``app`` imported
afterwards under the code server.  Each version of such a module is its own
module object, its source executed into its own ``__dict__``
(``importlib.reload`` would mutate the one module in place, so old and new
code could not coexist).  ``sys.modules["app.cache"]`` is a *facade* whose
``__dict__`` mirrors the current version, which gives Erlang's rule for
which code a call reaches:

* a qualified call, ``app.cache.f()``, goes through the facade: current code;
* a bare name inside the module, ``f()``, is looked up in the version's own
  globals: the version the caller is running stays the one it calls.

``from app.cache import f`` binds ``f`` once, like a fun in Erlang: it keeps
the version it was taken from.

A module has at most two versions, *current* and *old*.  Loading a third
while processes still run the old one is refused (``NotPurged``) unless
purging is asked for; ``purge`` kills those processes (reason ``'killed'``),
``soft_purge`` refuses while there are any.  Whether a process runs a
version is judged from what its code can be reached by: its body function,
its handler (a behaviour's callback class and instance), the frames of its
coroutine, and with ``scan_state`` one level into its state and locals
(closures).  Like Erlang's check it is not airtight: a version referenced
only from another module's cache or a plain thread is invisible.

Callback processes (gen_server and the other behaviours) switch to the
current version of their callback class at their next message after a load,
keeping their state (``switch_callback``); a version installed with
``switch(prepared, code_change=(old_vsn, extra))`` makes each process run
``code_change`` on its own state as it switches (lazy migration).  A
coroutine process cannot switch in mid-frame, just as an Erlang process in a
local loop cannot: ``otpvm.become(mod.loop, state)`` restarts its body in
the current version.

Rule for upgradable modules (Erlang's): no mutable module globals.  A
version's globals are its own; a new version starts from its source.
Modules of otpvm itself and native extensions are residence code: changing
them needs a restart.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
import types
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from otpvm import _vm
from otpvm.kernel import Pid, _Pacer, exit, monitor, processes, receive
from otpvm.terms import ANY, Down

__all__ = [
    "CodeError", "CodeRef", "LoadError", "ModuleDeleted", "NotManaged", "NotPurged",
    "Version", "check_process_code", "current", "delete", "epoch", "is_down", "load_module",
    "manage",
    "managed", "pending_code_change", "prepare", "processes_using", "purge", "ref",
    "soft_purge", "switch", "switch_callback", "unswitch", "versions", "vsn_of", "which",
]


class CodeError(Exception):
    """The base of the code server's errors."""


class LoadError(CodeError):
    """A module body failed to execute (``__cause__`` is why); nothing changed."""


class NotPurged(CodeError):
    """The module's old version is still used by processes (``pids``)."""

    def __init__(self, name: str, pids: list[Pid]) -> None:
        super().__init__(f"old code of {name} is still used by {len(pids)} process(es): "
                         f"{pids[:5]!r}{' ...' if len(pids) > 5 else ''}; purge it first "
                         "(code.purge kills them, code.soft_purge waits for them to finish)")
        self.name = name
        self.pids = pids


class ModuleDeleted(CodeError, AttributeError):
    """The module was deleted with ``code.delete``: its facade has no names."""


class NotManaged(CodeError):
    """The module is not under ``code.manage`` (or was never imported)."""


@dataclass(frozen=True)
class Version:
    """One loaded version of a module."""

    name: str
    vsn: str                    # the module's __vsn__, else a prefix of the source hash
    source_hash: str
    module: types.ModuleType = field(repr=False, compare=False)
    status: str                 # 'current', 'old' or 'prepared'


@dataclass
class _Entry:
    facade: types.ModuleType
    current: Version | None = None
    old: Version | None = None
    deleted: bool = False
    # vsn of a version -> (vsn its processes migrate from, the old_vsn argument
    # of their code_change, extra): lazy migrations, up or down
    lazy: dict[str, tuple[Any, Any, Any]] = field(default_factory=dict)


_lock = threading.RLock()           # loads, switches and purges are serialised
_packages: set[str] = set()
_entries: dict[str, _Entry] = {}


# -- versions and facades ----------------------------------------------------


def _source_hash(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()


def _execute(name: str, source: str, filename: str, like: types.ModuleType | None) -> Version:
    """A new version: the source executed into a module object of its own."""
    module = types.ModuleType(name)
    module.__file__ = filename
    module.__package__ = name.rpartition(".")[0]
    if like is not None:
        module.__spec__ = getattr(like, "__spec__", None)
        module.__loader__ = getattr(like, "__loader__", None)
    try:
        code = compile(source, filename, "exec", dont_inherit=True)
        exec(code, module.__dict__)
    except BaseException as exc:
        raise LoadError(f"loading {name} from {filename} failed: {exc!r}") from exc
    digest = _source_hash(source)
    vsn = module.__dict__.get("__vsn__", digest[:8])
    return Version(name, str(vsn), digest, module, "prepared")


def _mirror(facade: types.ModuleType, version: Version) -> None:
    """Makes the facade show the version: its names are updated first, then
    stale ones dropped, so a reader never misses a name both versions have."""
    names = version.module.__dict__
    keep = {"__spec__", "__loader__", "__file__", "__cached__", "__path__"}
    facade.__dict__.update({k: v for k, v in names.items() if k not in keep})
    for stale in [k for k in facade.__dict__ if k not in names and k not in keep]:
        if stale != "__name__":
            del facade.__dict__[stale]


_stale: weakref.WeakSet[type] = weakref.WeakSet()     # classes of versions no longer current


def _mark_stale(version: Version | None) -> None:
    """Tells the message copier that the version's classes are old code
    (messages holding their instances are refused: StaleClassError), and
    that the current version's are not.  Weak: a purged version's classes
    leave the set once nothing uses them."""
    if version is not None:
        for obj in version.module.__dict__.values():
            if isinstance(obj, type) and obj.__module__ == version.name:
                _stale.add(obj)
    for entry in _entries.values():
        if entry.current is not None:
            for obj in entry.current.module.__dict__.values():
                if isinstance(obj, type):
                    _stale.discard(obj)
    _vm._set_stale_types(_stale)


def _entry(name: str) -> _Entry:
    entry = _entries.get(name)
    if entry is None:
        raise NotManaged(f"{name} is not a module under otpvm.code: call code.manage(package) "
                         "before its first import")
    return entry


# -- the import hook --------------------------------------------------------------


class _Loader(importlib.abc.Loader):
    """Loads a managed module's first version behind a facade."""

    def __init__(self, inner: importlib.machinery.SourceFileLoader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> None:
        return None                                 # the default module: the facade

    def exec_module(self, facade: types.ModuleType) -> None:
        name = facade.__name__
        source = self.inner.get_source(name)
        assert source is not None
        version = replace(_execute(name, source, self.inner.path, facade), status="current")
        with _lock:
            _entries[name] = _Entry(facade, version)
            _mirror(facade, version)


class _Finder(importlib.abc.MetaPathFinder):
    """Sends the plain source modules of managed packages to _Loader.  A
    package's own ``__init__`` and native extensions import as usual: they
    are residence code."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not managed(fullname):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if (spec is None or spec.submodule_search_locations is not None
                or not isinstance(spec.loader, importlib.machinery.SourceFileLoader)):
            return spec
        spec.loader = _Loader(spec.loader)
        return spec


_finder = _Finder()


def manage(*packages: str) -> None:
    """Versions every module under these packages (or modules) imported
    from now on.  Raises ValueError for one that is imported already: its
    callers hold the plain module, which no later version could replace."""
    for package in packages:
        if not isinstance(package, str) or not package or package.startswith("."):
            raise TypeError(f"code.manage needs absolute module names, not {package!r}")
        loaded = [n for n in sys.modules
                  if (n == package or n.startswith(package + ".")) and n not in _entries
                  and getattr(sys.modules[n], "__path__", None) is None]
        if loaded:
            raise ValueError(f"code.manage({package!r}) after {loaded[0]} was imported: "
                             "call it before the first import of the package's modules")
    with _lock:
        _packages.update(packages)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def managed(name: str) -> bool:
    """Whether the module ``name`` is (or would be, once imported) versioned."""
    return any(name == p or name.startswith(p + ".") for p in _packages)


def which(name: str) -> Version | None:
    """The current version of a module, None if it has none (or was deleted)."""
    entry = _entries.get(name)
    return entry.current if entry is not None else None


def versions(name: str) -> tuple[Version | None, Version | None]:
    """(current, old) versions of a module."""
    entry = _entries.get(name)
    return (entry.current, entry.old) if entry is not None else (None, None)


def epoch() -> int:
    """Changes whenever a module's current version does."""
    return _vm.code_epoch()


# -- loading ----------------------------------------------------------------------


def prepare(name: str, source: str, *, filename: str | None = None) -> Version:
    """Executes ``source`` as a new version of the module, unattached: what
    validation needs, with no effect on anything running.  Raises LoadError."""
    if not isinstance(source, str):
        raise TypeError(f"code.prepare needs the module's source text, not {type(source).__name__}")
    entry = _entry(name)
    path = filename or getattr(entry.facade, "__file__", None) or name
    return _execute(name, source, path, entry.facade)


def switch(prepared: Version, *, code_change: tuple[Any, Any] | None = None) -> None:
    """Makes a prepared version current; the current one becomes old.

    ``code_change=(old_vsn, extra)``: callback processes switching to it
    from a class of version ``old_vsn`` run ``code_change(old_vsn, state,
    extra)`` as they switch (lazy migration); with ``old_vsn=('down',
    vsn)``, those of the version it replaces run their own code_change.  Raises NotPurged while the
    module still has an old version (purge or soft_purge it first).
    """
    if prepared.status != "prepared":
        raise ValueError(f"{prepared!r} is not a prepared version (code.prepare makes one)")
    with _lock:
        entry = _entry(prepared.name)
        if entry.old is not None:
            raise NotPurged(prepared.name, [])
        if entry.current is not None:
            entry.old = replace(entry.current, status="old")
        entry.current = replace(prepared, status="current")
        entry.deleted = False
        if code_change is not None:
            old_vsn, extra = code_change
            # A downgrade's processes come from the version being replaced.
            source = entry.old.vsn if is_down(old_vsn) and entry.old else old_vsn
            entry.lazy[prepared.vsn] = (source, old_vsn, extra)
        _mirror(entry.facade, entry.current)
        _mark_stale(entry.old)
        _vm._bump_code_epoch()


def unswitch(name: str, *, migrate_back: bool = False, extra: Any = None) -> None:
    """Undoes the last switch of a module: its old version is current again.

    Without ``migrate_back`` the version that was current is dropped: for
    a strict install rolled back once no process runs it any more.  With
    it, that version becomes the old one, and each callback process that
    had migrated to it migrates back at its next message, running that
    version's ``code_change(('down', vsn), state, extra)``: a lazy install
    rolled back."""
    with _lock:
        entry = _entry(name)
        if entry.old is None:
            raise CodeError(f"{name} has no old version to go back to")
        dropped = entry.current
        if dropped is not None:
            entry.lazy.pop(dropped.vsn, None)
        entry.current = replace(entry.old, status="current")
        entry.old = replace(dropped, status="old") if migrate_back and dropped else None
        if migrate_back and dropped is not None:
            entry.lazy[entry.current.vsn] = (dropped.vsn, ("down", entry.current.vsn), extra)
        entry.deleted = False
        _mirror(entry.facade, entry.current)
        _mark_stale(dropped)
        _vm._bump_code_epoch()


def _read_source(entry: _Entry, name: str) -> str:
    path = getattr(entry.facade, "__file__", None)
    if not path:
        raise LoadError(f"{name} has no source file to load again")
    with open(path, encoding="utf-8") as f:
        return f.read()


async def load_module(name: str, source: str | None = None, *, purge: bool = False) -> Version:
    """Loads a new current version of a managed module (``source`` None:
    its file again) and returns it.  An old version no process uses is
    dropped first; one still in use raises NotPurged, or with ``purge=True``
    its processes are killed first (OTP's ``load_file`` and ``l/1``).  A
    failing module body raises LoadError with nothing changed."""
    entry = _entry(name)
    prepared = prepare(name, source if source is not None else _read_source(entry, name))
    await _drop_old(name, kill=purge, raise_if_used=True)
    switch(prepared)
    current = which(name)
    assert current is not None
    return current


async def purge(name: str) -> bool:
    """Drops the module's old version, killing (reason ``'killed'``) every
    process that still uses it; True if any was killed."""
    return await _drop_old(name, kill=True, raise_if_used=False)


async def soft_purge(name: str) -> bool:
    """Drops the module's old version unless a process still uses it:
    False, with nothing done, while one does."""
    try:
        await _drop_old(name, kill=False, raise_if_used=True)
    except NotPurged:
        return False
    return True


async def delete(name: str) -> None:
    """The current version becomes old: the module then has no names
    (``ModuleDeleted``), running processes carry on, ``purge`` ends them.
    Raises NotPurged while an old version is still in use."""
    await _drop_old(name, kill=False, raise_if_used=True)
    with _lock:
        entry = _entry(name)
        if entry.current is None:
            return
        entry.old, entry.current, entry.deleted = replace(entry.current, status="old"), None, True
        _make_deleted(entry.facade, name)
        _mark_stale(entry.old)
        _vm._bump_code_epoch()


def _make_deleted(facade: types.ModuleType, name: str) -> None:
    def __getattr__(attr: str) -> Any:
        raise ModuleDeleted(f"module {name} was deleted (code.delete): it has no {attr!r}")
    keep = {"__name__", "__spec__", "__loader__", "__file__", "__package__", "__path__"}
    for key in [k for k in facade.__dict__ if k not in keep]:
        del facade.__dict__[key]
    facade.__dict__["__getattr__"] = __getattr__


async def _drop_old(name: str, *, kill: bool, raise_if_used: bool) -> bool:
    entry = _entry(name)
    if entry.old is None:
        return False
    users = await processes_using(name, "old", scan_state=True)
    if users and not kill:
        if raise_if_used:
            raise NotPurged(name, users)
        return False
    if users:
        await _kill_all(users)
    with _lock:
        if entry.old is not None:
            entry.lazy.pop(entry.old.vsn, None)
        entry.old = None
    return bool(users)


async def _kill_all(pids: list[Pid]) -> None:
    """Kills them ('kill': they end as 'killed') and waits until each is gone."""
    refs = [monitor(pid) for pid in pids]
    for pid in pids:
        exit(pid, "kill")
    for ref in refs:
        await receive(Down(ref, ANY, ANY))


# -- who runs which version -----------------------------------------------------------


async def processes_using(name: str, which: Literal["old", "current"] = "old", *,
                          scan_state: bool = False) -> list[Pid]:
    """The processes of the caller's VM running the module's old (or current)
    version: by their body function, their handler and its callback class,
    the frames of their coroutine, and with ``scan_state`` one level into
    their state and locals (closures and instances)."""
    if which not in ("old", "current"):
        raise ValueError(f"which must be 'old' or 'current', not {which!r}")
    current, old = versions(name)
    version = old if which == "old" else current
    if version is None:
        return []
    users: list[Pid] = []
    memo: dict[type, bool] = {}
    pacer = _Pacer()                    # 10,000 processes: the others run meanwhile
    for pid in processes():
        if _runs(pid, version, scan_state, memo):
            users.append(pid)
        await pacer.tick()
    return users


async def check_process_code(pid: Pid, name: str) -> bool:
    """Whether the process runs the module's old version (Erlang's
    check_process_code, which counts funs too: so does this)."""
    old = versions(name)[1]
    return old is not None and _runs(pid, old, True, {})


def _runs(pid: Pid, version: Version, scan_state: bool, memo: dict[type, bool]) -> bool:
    """Whether the process runs the version (memo: class -> whether it is
    the version's, for one scan)."""
    names = version.module.__dict__
    roots = _vm._code_roots(pid)
    if roots is None:
        return False
    fn, handler, coro, args = roots
    found = [fn, handler, *(args or ())]
    if handler is not None:
        found.extend(vars(handler).values() if hasattr(handler, "__dict__") else ())
        state = getattr(handler, "state", None)
        found.extend(getattr(handler, attr, None) for attr in ("mod", "cls"))
        found.append(state)
        # A behaviour that names its callback late (a supervisor keeps a
        # CodeRef to its class) runs that module's current version.
        if version.status == "current" and hasattr(state, "__dict__"):
            found.extend(v for v in vars(state).values() if isinstance(v, CodeRef))
    for frame in _frames(coro):
        if frame.f_globals is names:
            return True
        if scan_state:
            found.extend(frame.f_locals.values())
    if scan_state:
        found.extend(_one_level(found))
    return any(_from_version(obj, version, memo) for obj in found)


def _frames(coro: Any) -> Iterator[types.FrameType]:
    """The frames of a coroutine and of what it awaits, outermost first."""
    seen = 0
    while coro is not None and seen < 1000:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            yield frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        seen += 1


def _one_level(objs: Iterable[Any]) -> list[Any]:
    inner: list[Any] = []
    for obj in objs:
        if isinstance(obj, (list, tuple, set, frozenset)):
            inner.extend(obj)
        elif isinstance(obj, dict):
            inner.extend(obj.values())
        elif hasattr(obj, "__dict__") and not isinstance(obj, (type, types.ModuleType)):
            inner.extend(vars(obj).values())
    return inner


def _from_version(obj: Any, version: Version, memo: dict[type, bool] | None = None) -> bool:
    """Whether obj is code of the version: a function or closure, a method,
    a partial, a class defined there, an instance of one, or (the current
    version) a CodeRef to its module."""
    names = version.module.__dict__
    if obj is None:
        return False
    if isinstance(obj, CodeRef):
        return version.status == "current" and obj.split(":")[0] == version.name
    while isinstance(obj, (types.MethodType, functools.partial)):
        obj = obj.__func__ if isinstance(obj, types.MethodType) else obj.func
    if isinstance(obj, types.FunctionType):
        return obj.__globals__ is names
    if isinstance(obj, (types.CoroutineType, types.GeneratorType)):
        return any(f.f_globals is names for f in _frames(obj))
    cls = obj if isinstance(obj, type) else type(obj)
    if memo is None:
        return _class_from(cls, names)
    known = memo.get(cls)
    if known is None:
        known = memo[cls] = _class_from(cls, names)
    return known


def _class_from(cls: type, names: dict[str, Any]) -> bool:
    for klass in cls.__mro__:
        if klass.__module__ in ("builtins", "otpvm.gen_server"):
            continue
        for member in vars(klass).values():
            fn = getattr(member, "__func__", member)
            if isinstance(fn, types.FunctionType) and fn.__globals__ is names:
                return True
    return False


# -- late binding ------------------------------------------------------------------


def current(obj: Any) -> Any:
    """The object of the same module and qualified name in the module's
    current version (obj itself when its module is not managed).  Raises
    LookupError when the current version has no such name."""
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    entry = _entries.get(module) if isinstance(module, str) else None
    if entry is None or not isinstance(qualname, str) or "<locals>" in qualname:
        return obj
    if entry.current is None:
        raise ModuleDeleted(f"module {module} was deleted (code.delete)")
    target: Any = entry.current.module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LookupError(f"{module}.{qualname} is not in the current version "
                              f"({entry.current.vsn}) of {module}") from None
    return target


def vsn_of(obj: Any) -> str | None:
    """The vsn of the loaded version obj's code belongs to (a class,
    function or instance), None if it is not from a managed module."""
    entry = _entries.get(getattr(obj, "__module__", None) or "")
    if entry is None:
        return None
    for version in (entry.current, entry.old):
        if version is not None and _from_version(obj, version):
            return version.vsn
    return None


def pending_code_change(new_cls: Any, old_vsn: str | None) -> tuple[Any, Any] | None:
    """(old_vsn, extra) when processes switching to ``new_cls``'s version from
    version ``old_vsn`` must run code_change first (``switch(code_change=)``)."""
    entry = _entries.get(getattr(new_cls, "__module__", None) or "")
    if entry is None or entry.current is None:
        return None
    migration = entry.lazy.get(entry.current.vsn)
    if migration is None or migration[0] != old_vsn:
        return None
    return migration[1], migration[2]


def is_down(old_vsn: Any) -> bool:
    """Whether a code_change's old_vsn is a downgrade's ``('down', vsn)``:
    then the running (newer) code converts the state, as in OTP."""
    return type(old_vsn) is tuple and len(old_vsn) == 2 and old_vsn[0] == "down"


def switch_callback(cls: type, instance: Any, state: Any) -> tuple[type, Any, Any]:
    """A callback process at a safe point (between two messages): its class
    in the current version, a new instance carrying the old one's
    attributes, and its state, migrated by ``code_change`` when the version
    asks for it.  Returns the arguments unchanged when nothing changed; an
    exception from code_change propagates with nothing switched."""
    new_cls = current(cls)
    if new_cls is cls:
        return cls, instance, state
    new_instance = new_cls.__new__(new_cls)
    if hasattr(instance, "__dict__") and hasattr(new_instance, "__dict__"):
        new_instance.__dict__.update(vars(instance))
    migration = pending_code_change(new_cls, vsn_of(cls))
    if migration is not None:
        converter = instance if is_down(migration[0]) else new_instance
        state = converter.code_change(migration[0], state, migration[1])
    return new_cls, new_instance, state


class CodeRef(str):
    """A late-bound callable named ``"pkg.mod:Qual.name"``: each call (and
    ``resolve()``) looks the name up in the module's current version, as
    an MFA in an OTP child spec does.  A str, so it pickles and copies as
    one."""

    __slots__ = ()

    def __new__(cls, spec: str) -> CodeRef:
        if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
            raise ValueError(f"a code reference is 'package.module:name', not {spec!r}")
        return super().__new__(cls, spec)

    def resolve(self) -> Any:
        """The object it names, in the current version of its module."""
        module_name, qualname = self.split(":")
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise LookupError(f"{self}: {module_name} has no {qualname}") from None
        return target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"code.ref({str(self)!r})"


def ref(spec: str) -> CodeRef:
    """A late-bound reference to ``"pkg.mod:name"`` (see CodeRef)."""
    return CodeRef(spec)
