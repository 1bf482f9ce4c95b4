"""Upgrade plans (OTP's appups), generated from a diff of two source trees.

``make_plan(old_dir, new_dir)`` compares two versions of an application
(for example ``releases/1.0/`` and ``releases/1.1/``) module by module and
returns an ``UpgradePlan``: one instruction per changed module, ordered so
that callers come before callees, with its mirror for the downgrade.
Nothing is imported or executed to build it: sources are compiled and read
with ``ast``.  ``validate(plan, new_dir)`` runs the checks that need no
running node; executing the new module bodies (``prepare_bodies``) is the
release handler's step, with ``otpvm.code.prepare``.

A committed ``upgrade.py`` in the new tree overrides the generated plan: it
holds ``PLAN = [...]`` and optionally ``DOWN = [...]``, lists of the
instruction constructors below written as data (``Update("app.cache",
advanced=True, classes=["Cache"])``).  It is parsed, never executed: any
other call or statement is refused with ``PlanFileError``.

The instructions (what the release handler does with each):

* ``AddModule(name)``: a new module, loaded.
* ``DeleteModule(name, mode='soft'|'brutal')``: removed; ``soft`` refuses
  while a process still runs its code, ``brutal`` kills those processes.
* ``LoadModule(name)``: new code, state unchanged; callback processes switch
  at their next dispatch.
* ``Update(name, advanced, extra, classes)``: suspend the processes running
  the behaviour ``classes``, ``code_change`` (``advanced``: the state changes
  shape, ``code_change(old_vsn, state, extra)`` migrates it), resume.
* ``UpdateSupervisor(name, classes)``: supervisors re-run ``init`` and merge
  their child specs by id.
* ``CannotSwitch(name, reason)``: processes running this code cannot switch
  to the new version (a hand-written receive loop); restart them.
* ``RestartRequired(name, reason)``: native code or otpvm itself changed; the
  node must restart.
* ``Apply("pkg.mod:function", args)``: the escape hatch, calls a function.

Every instruction has ``deps``: the application modules it imports, the
callees that processes using it call.
"""

from __future__ import annotations

import argparse
import ast
import dis
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import CodeType
from typing import Any, ClassVar

__all__ = [
    "AddModule", "Apply", "AppupError", "CannotSwitch", "DeleteModule", "INSTRUCTIONS",
    "Instruction", "LoadModule", "PlanFileError", "Problem", "RestartRequired", "Update",
    "UpdateSupervisor", "UpgradePlan", "load_plan_file", "main", "make_plan", "prepare_bodies",
    "validate",
]

PLAN_FILE = "upgrade.py"
NATIVE_SUFFIXES = (".so", ".pyd", ".pyx", ".pxd", ".pxi")
# Top-level files of a release folder that are not application modules.
NOT_MODULES = frozenset({PLAN_FILE, "setup.py", "conftest.py"})


class AppupError(ValueError):
    """A plan cannot be made: a missing folder or package, a bad argument."""


class PlanFileError(AppupError):
    """An ``upgrade.py`` override is not a plain list of instructions."""


# ---------------------------------------------------------------- instructions


def _check_module_name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a module name (str), not {value!r}")
    if not value or not all(part.isidentifier() for part in value.split(".")):
        raise ValueError(f"{what} must be a dotted module name like 'app.cache', not {value!r}")
    return value


def _names(value: Any, what: str, check: Callable[[Any, str], str]) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a list of names, not {value!r}")
    return tuple(check(item, what) for item in value)


def _check_identifier(value: Any, what: str) -> str:
    if not (isinstance(value, str) and value.isidentifier()):
        raise ValueError(f"{what} must be class names, not {value!r}")
    return value


@dataclass(frozen=True)
class Instruction:
    """Base of the plan instructions; ``deps`` lists the application modules
    that this one imports (its callees)."""

    deps: tuple[str, ...] = field(default=(), kw_only=True)
    summary: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "deps", _names(self.deps, "deps", _check_module_name))

    @property
    def module(self) -> str:
        """The module this instruction is about."""
        raise NotImplementedError

    def source(self) -> str:
        """The constructor call, as written in ``upgrade.py`` (defaults left out)."""
        args = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "deps" or (f.default is not MISSING and value == f.default):
                continue
            text = repr(list(value) if isinstance(value, tuple) else value)
            positional = f.default is MISSING or f.name == "args"
            args.append(text if positional else f"{f.name}={text}")
        if self.deps:
            args.append(f"deps={list(self.deps)!r}")
        return f"{type(self).__name__}({', '.join(args)})"

    def describe(self) -> str:
        """What the release handler does with it, in a few words."""
        return self.summary

    def to_dict(self) -> dict[str, Any]:
        """``{"op": "Update", "name": ..., ...}``: JSON-ready."""
        out: dict[str, Any] = {"op": type(self).__name__}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def mirror(self) -> Instruction | None:
        """The instruction that undoes it in the downgrade plan (None: nothing)."""
        return self

    def __str__(self) -> str:
        return self.source()


@dataclass(frozen=True)
class _Named(Instruction):
    name: str

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_module_name(self.name, f"{type(self).__name__}'s name")

    @property
    def module(self) -> str:
        return self.name


@dataclass(frozen=True)
class AddModule(_Named):
    """A module that the new version adds: loaded, nothing runs it yet."""

    summary: ClassVar[str] = "new module: load it"

    def mirror(self) -> Instruction:
        return DeleteModule(self.name, deps=self.deps)


@dataclass(frozen=True)
class DeleteModule(_Named):
    """A module the new version removes.  ``mode='soft'`` fails the install
    while a process still runs its code; ``'brutal'`` kills those processes."""

    mode: str = "soft"
    summary: ClassVar[str] = "removed module: purge it"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("soft", "brutal"):
            raise ValueError(f"DeleteModule's mode must be 'soft' or 'brutal', not {self.mode!r}")

    def mirror(self) -> Instruction:
        return AddModule(self.name, deps=self.deps)


@dataclass(frozen=True)
class LoadModule(_Named):
    """New code, same state: callback processes switch at their next dispatch."""

    summary: ClassVar[str] = "switch at the next dispatch, state unchanged"


@dataclass(frozen=True)
class Update(_Named):
    """Synchronised switch of the processes running behaviour ``classes``:
    suspend, ``code_change``, resume.  ``advanced``: the state changes shape
    (``state_vsn`` or ``code_change`` changed), ``code_change(old_vsn, state,
    extra)`` migrates it; downgrading, the running newer code gets
    ``old_vsn = ('down', vsn)``."""

    advanced: bool = False
    extra: Any = None
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.advanced, bool):
            raise TypeError(f"Update's advanced must be True or False, not {self.advanced!r}")
        object.__setattr__(self, "classes",
                           _names(self.classes, "Update's classes", _check_identifier))

    def describe(self) -> str:
        if self.advanced:
            return "suspend, code_change migrates the state, resume"
        return "suspend, switch keeping the state, resume"


@dataclass(frozen=True)
class UpdateSupervisor(_Named):
    """Supervisors of ``classes`` re-run ``init`` and merge their child specs
    by id (pids kept)."""

    classes: tuple[str, ...] = ()
    summary: ClassVar[str] = "supervisors re-run init, specs merged by id"

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "classes",
                           _names(self.classes, "UpdateSupervisor's classes", _check_identifier))


def _check_reason(instr: Any) -> None:
    if not isinstance(instr.reason, str):
        raise TypeError(f"{type(instr).__name__}'s reason must be a str, not {instr.reason!r}")


@dataclass(frozen=True)
class CannotSwitch(_Named):
    """Processes running this module's old code cannot switch to the new one
    (a hand-written receive loop): they keep old code until they end."""

    reason: str
    summary: ClassVar[str] = "cannot switch hot: restart its processes"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reason(self)


@dataclass(frozen=True)
class RestartRequired(_Named):
    """A change that CPython cannot load into a running node (native code,
    otpvm itself): the node restarts."""

    reason: str
    summary: ClassVar[str] = "the node must restart"

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_reason(self)


@dataclass(frozen=True)
class Apply(Instruction):
    """The escape hatch: call ``ref`` (``"pkg.mod:function"``) with ``args``.
    Not mirrored: write ``DOWN`` for what a downgrade must call."""

    ref: str
    args: tuple[Any, ...] = ()
    summary: ClassVar[str] = "call a function"

    def __post_init__(self) -> None:
        super().__post_init__()
        mod, sep, func = self.ref.partition(":") if isinstance(self.ref, str) else ("", "", "")
        if not sep or not func.isidentifier():
            raise ValueError(f"Apply's ref must be 'pkg.mod:function', not {self.ref!r}")
        _check_module_name(mod, "Apply's module")
        if not isinstance(self.args, (list, tuple)):
            raise TypeError(f"Apply's args must be a list, not {self.args!r}")
        object.__setattr__(self, "args", tuple(self.args))

    @property
    def module(self) -> str:
        return self.ref.partition(":")[0]

    def mirror(self) -> None:
        return None


INSTRUCTIONS: dict[str, type[Instruction]] = {cls.__name__: cls for cls in (
    AddModule, DeleteModule, LoadModule, Update, UpdateSupervisor, CannotSwitch,
    RestartRequired, Apply)}


def instruction_from_dict(data: dict[str, Any]) -> Instruction:
    """The inverse of ``Instruction.to_dict``; ValueError for an unknown op."""
    data = dict(data)
    op = data.pop("op", None)
    if op not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {op!r}: one of {', '.join(INSTRUCTIONS)}")
    return INSTRUCTIONS[op](**data)


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class UpgradePlan:
    """The instructions from ``from_vsn`` to ``to_vsn`` and the downgrade
    ``down`` (in which ``Update.code_change`` runs on the newer code with
    ``old_vsn = ('down', from_vsn)``).  ``source`` is ``'generated'`` or the
    override file's path; ``notes`` are remarks for the reviewer."""

    from_vsn: str
    to_vsn: str
    instructions: tuple[Instruction, ...]
    down: tuple[Instruction, ...]
    source: str = "generated"
    notes: tuple[str, ...] = ()

    def format(self) -> str:
        """A listing for review."""
        lines = [f"upgrade {self.from_vsn} -> {self.to_vsn} ({self._origin()})"]
        lines += _listing(self.instructions)
        lines += ["", f"downgrade {self.to_vsn} -> {self.from_vsn} (code_change gets old_vsn = "
                  f"('down', {self.from_vsn!r}) on the running {self.to_vsn} code)"]
        lines += _listing(self.down)
        if self.notes:
            lines += ["", "notes:"] + [f"  {note}" for note in self.notes]
        return "\n".join(lines)

    def _origin(self) -> str:
        if self.source == "generated":
            return f"generated; an {PLAN_FILE} with PLAN = [...] in the new tree overrides it"
        return f"from {self.source}"

    def to_source(self) -> str:
        """An ``upgrade.py`` holding this plan, to commit and edit."""
        def block(name: str, items: Sequence[Instruction]) -> list[str]:
            return [f"{name} = ["] + [f"    {i.source()}," for i in items] + ["]"]
        return "\n".join([f'"""Upgrade plan {self.from_vsn} -> {self.to_vsn}."""', "",
                          *block("PLAN", self.instructions), "", *block("DOWN", self.down), ""])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"from": self.from_vsn, "to": self.to_vsn, "source": self.source,
                "instructions": [i.to_dict() for i in self.instructions],
                "down": [i.to_dict() for i in self.down], "notes": list(self.notes)}

    def to_json(self, **kwargs: Any) -> str:
        """``to_dict`` as JSON (a value that JSON cannot hold is written with repr)."""
        return json.dumps(self.to_dict(), default=repr, **kwargs)


def _listing(instructions: Sequence[Instruction]) -> list[str]:
    if not instructions:
        return ["  nothing to do"]
    out = []
    for n, instr in enumerate(instructions, 1):
        out.append(f"  {n:2}. {instr.source()}")
        out.append(f"      {instr.describe()}")
    return out


def mirror(instructions: Iterable[Instruction]) -> tuple[Instruction, ...]:
    """The downgrade of ``instructions``: added <-> deleted, the same updates,
    in reverse order; ``Apply`` is dropped (it cannot be inverted)."""
    out = (instr.mirror() for instr in reversed(list(instructions)))
    return tuple(instr for instr in out if instr is not None)


# ---------------------------------------------------------------- source trees


@dataclass
class _Module:
    name: str
    path: Path
    source: bytes
    tree: ast.Module | None = None
    code: CodeType | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        try:
            self.tree = ast.parse(self.source, str(self.path))
            self.code = compile(self.tree, str(self.path), "exec", dont_inherit=True)
        except (SyntaxError, ValueError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"


@dataclass
class _Tree:
    root: Path
    modules: dict[str, _Module]
    native: dict[str, str]          # module name -> hash of its native files


def _scan(root: Path, packages: Sequence[str]) -> _Tree:
    tree = _Tree(root, {}, {})
    for pkg in packages:
        base = root / pkg
        if base.is_dir():
            files = sorted(p for p in base.rglob("*") if p.is_file()
                           and "__pycache__" not in p.relative_to(root).parts)
        else:
            files = [base.with_suffix(".py")] if base.with_suffix(".py").is_file() else []
        for path in files:
            _add_file(tree, path)
    return tree


def _add_file(tree: _Tree, path: Path) -> None:
    parts = list(path.relative_to(tree.root).parts)
    stem = parts[-1].split(".")[0]
    if not all(p.isidentifier() for p in parts[:-1] + [stem]):
        return
    if path.suffix == ".py" and parts[-1] == f"{stem}.py":
        name = ".".join(parts[:-1] if stem == "__init__" else parts[:-1] + [stem])
        tree.modules[name] = _Module(name, path, path.read_bytes())
    elif path.suffix in NATIVE_SUFFIXES:
        name = ".".join(parts[:-1] + [stem])
        digest = hashlib.sha256(tree.native.get(name, "").encode() + path.name.encode()
                                + path.read_bytes()).hexdigest()
        tree.native[name] = digest


def _default_packages(*roots: Path) -> list[str]:
    found = set()
    for root in roots:
        for entry in root.iterdir():
            if entry.is_dir() and (entry / "__init__.py").is_file() and entry.name.isidentifier():
                found.add(entry.name)
            elif (entry.suffix == ".py" and entry.name not in NOT_MODULES
                    and entry.stem.isidentifier()):
                found.add(entry.stem)
    return sorted(found)


# ---------------------------------------------------------------- code comparison


def _shape(co: CodeType) -> tuple[Any, ...]:
    """What a code object does, without where it came from: line numbers,
    positions and the file name are left out, constants (nested code
    included) compared recursively and by type (0 and 0.0 and False differ)."""
    consts = list(co.co_consts)
    line = _firstlineno_const(co)
    if line is not None:
        consts[line] = "<__firstlineno__>"     # 3.13 keeps a class's line in its body
    return (co.co_name, co.co_qualname, co.co_code, tuple(_const(c) for c in consts),
            co.co_names, co.co_varnames, co.co_freevars, co.co_cellvars, co.co_flags,
            co.co_argcount, co.co_posonlyargcount, co.co_kwonlyargcount, co.co_nlocals,
            co.co_stacksize, co.co_exceptiontable)


def _firstlineno_const(co: CodeType) -> int | None:
    """The index in co_consts of the line number a class body stores as
    ``__firstlineno__`` (Python 3.13 and later), None if it stores none."""
    if "__firstlineno__" not in co.co_names:
        return None
    previous = None
    for instruction in dis.get_instructions(co):
        if instruction.opname == "STORE_NAME" and instruction.argval == "__firstlineno__":
            if previous is not None and previous.opname == "LOAD_CONST":
                return previous.arg
            return None
        previous = instruction
    return None


def _const(value: Any) -> Any:
    if isinstance(value, CodeType):
        return ("code", _shape(value))
    if isinstance(value, tuple):
        return ("tuple", tuple(_const(v) for v in value))
    if isinstance(value, frozenset):
        return ("frozenset", tuple(sorted(repr(_const(v)) for v in value)))
    return (type(value).__name__, repr(value))


def _code_index(co: CodeType) -> dict[str, list[tuple[Any, ...]]]:
    """Each code object's shape, by qualified name (a name defined twice, or
    two lambdas, keep their order)."""
    index: dict[str, list[tuple[Any, ...]]] = {}
    stack = [co]
    while stack:
        code = stack.pop(0)
        index.setdefault(code.co_qualname, []).append(_shape(code))
        stack.extend(c for c in code.co_consts if isinstance(c, CodeType))
    return index


# ---------------------------------------------------------------- what the AST says

BEHAVIOUR_BASES = {
    "otpvm.gen_server.GenServer": "gen_server", "otpvm.GenServer": "gen_server",
    "otpvm.gen_statem.GenStatem": "gen_statem",
    "otpvm.gen_event.EventHandler": "gen_event",
    "otpvm.net.Protocol": "protocol", "otpvm.net.protocol.Protocol": "protocol",
    "otpvm.supervisor.Supervisor": "supervisor", "otpvm.Supervisor": "supervisor",
}
MUTABLE_CALLS = frozenset({
    "list", "dict", "set", "bytearray", "collections.defaultdict", "collections.deque",
    "collections.OrderedDict", "collections.Counter", "itertools.count", "itertools.cycle",
    "weakref.WeakValueDictionary", "weakref.WeakKeyDictionary", "weakref.WeakSet",
    "threading.Lock", "threading.RLock", "queue.Queue"})


@dataclass
class _Class:
    name: str
    node: ast.ClassDef
    bases: list[str]            # dotted names, resolved through the module's imports
    header: str                 # bases, keywords and decorators, for the diff
    state_vsn: str | None       # the ast of the state_vsn value, None without one
    kind: str | None = None     # BEHAVIOUR_BASES' values, 'behaviour', or None


@dataclass
class _Info:
    """What the ast of one module says (no import, no execution)."""

    name: str
    is_package: bool
    aliases: dict[str, str] = field(default_factory=dict)
    imported: set[str] = field(default_factory=set)
    classes: dict[str, _Class] = field(default_factory=dict)
    receive_loops: list[str] = field(default_factory=list)
    switches: bool = False      # calls become( or upgrade_point(

    def dotted(self, node: ast.expr) -> str | None:
        """``a.b.C`` resolved through this module's imports and classes."""
        if isinstance(node, ast.Name):
            if node.id in self.aliases:
                return self.aliases[node.id]
            return f"{self.name}.{node.id}" if node.id in self.classes else node.id
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return None if base is None else f"{base}.{node.attr}"
        if isinstance(node, ast.Subscript):         # EventHandler[int]
            return self.dotted(node.value)
        return None


def _toplevel(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Module-level statements, looking into if/try/with blocks."""
    for stmt in body:
        yield stmt
        if isinstance(stmt, (ast.If, ast.For, ast.While, ast.With, ast.AsyncWith)):
            yield from _toplevel(stmt.body + getattr(stmt, "orelse", []))
        elif isinstance(stmt, ast.Try):
            yield from _toplevel(stmt.body + stmt.orelse + stmt.finalbody
                                 + [s for h in stmt.handlers for s in h.body])


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else (
        func.attr if isinstance(func, ast.Attribute) else None)


def _analyse(mod: _Module) -> _Info:
    info = _Info(mod.name, mod.path.name == "__init__.py")
    if mod.tree is None:
        return info
    _read_imports(info, mod.tree)
    for stmt in _toplevel(mod.tree.body):
        if isinstance(stmt, ast.ClassDef):
            info.classes[stmt.name] = _Class(stmt.name, stmt, [], "", None)
        elif isinstance(stmt, ast.AsyncFunctionDef) and _is_receive_loop(stmt):
            info.receive_loops.append(stmt.name)
    for cls in info.classes.values():
        node = cls.node
        cls.bases = [b for b in map(info.dotted, node.bases) if b is not None]
        cls.header = ast.dump(ast.Tuple([*node.bases, *node.decorator_list], ast.Load())) + \
            "".join(ast.dump(k) for k in node.keywords)
        cls.state_vsn = _class_attr(node, "state_vsn")
    info.switches = any(isinstance(n, ast.Call) and _called_name(n) in ("become", "upgrade_point")
                        for n in ast.walk(mod.tree))
    return info


def _read_imports(info: _Info, tree: ast.Module) -> None:
    package = info.name if info.is_package else info.name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                info.imported.add(alias.name)       # the module itself, not its parents
                if alias.asname:
                    info.aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    info.aliases[top] = top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".") if package else []
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                if alias.name == "*":
                    info.imported.add(base)
                    continue
                full = f"{base}.{alias.name}" if base else alias.name
                # `from a import b`: module a.b if there is one, else a (trimmed later)
                info.imported.add(full)
                info.aliases[alias.asname or alias.name] = full


def _is_receive_loop(fn: ast.AsyncFunctionDef) -> bool:
    """An ``async def`` with a ``while`` loop that awaits ``receive(...)``:
    a hand-written receive loop, which cannot leave its frame to switch."""
    for loop in ast.walk(fn):
        if isinstance(loop, ast.While):
            for node in ast.walk(loop):
                if isinstance(node, ast.Await) and any(
                        isinstance(c, ast.Call) and _called_name(c) == "receive"
                        for c in ast.walk(node.value)):
                    return True
    return False


def _class_attr(node: ast.ClassDef, name: str) -> str | None:
    for stmt in node.body:
        if isinstance(stmt, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in stmt.targets):
            return ast.dump(stmt.value)
        if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
                and stmt.target.id == name and stmt.value is not None):
            return ast.dump(stmt.value)
    return None


def _has_method(cls: _Class, name: str) -> bool:
    return any(isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef)) and s.name == name
               for s in cls.node.body)


def _resolve_kinds(infos: dict[str, _Info]) -> None:
    """Which classes are behaviours: subclasses (through the application's
    own classes too) of the behaviour bases, or classes with ``code_change``."""
    by_name = {f"{i.name}.{c.name}": c for i in infos.values() for c in i.classes.values()}

    def kind(cls: _Class, seen: frozenset[str]) -> str | None:
        for base in cls.bases:
            if base in BEHAVIOUR_BASES:
                return BEHAVIOUR_BASES[base]
            parent = by_name.get(base)
            if parent is not None and base not in seen:
                found = kind(parent, seen | {base})
                if found:
                    return found
        return "behaviour" if _has_method(cls, "code_change") else None

    for qual, cls in by_name.items():
        cls.kind = kind(cls, frozenset({qual}))


# ---------------------------------------------------------------- classification


@dataclass
class _Side:
    tree: _Tree
    infos: dict[str, _Info]
    index: dict[str, dict[str, list[tuple[Any, ...]]]]


def _side(tree: _Tree) -> _Side:
    infos = {name: _analyse(mod) for name, mod in tree.modules.items()}
    _resolve_kinds(infos)
    index = {name: _code_index(mod.code) for name, mod in tree.modules.items()
             if mod.code is not None}
    return _Side(tree, infos, index)


def _changed(old: _Side, new: _Side, name: str) -> bool:
    a, b = old.tree.modules[name], new.tree.modules[name]
    if a.code is None or b.code is None:
        return a.source != b.source
    return _shape(a.code) != _shape(b.code)


def _classify(name: str, old: _Side, new: _Side) -> Instruction:
    """The instruction for a module present, and changed, in both trees."""
    if name == "otpvm" or name.startswith("otpvm."):
        return RestartRequired(name, reason="otpvm itself changed: the VM and its behaviours "
                               "are not upgraded hot")
    o_info, n_info = old.infos[name], new.infos[name]
    o_idx, n_idx = old.index.get(name, {}), new.index.get(name, {})
    if n_idx == {}:             # the new source does not compile: validate says so
        return LoadModule(name)
    stuck = [f for f in o_info.receive_loops if o_idx.get(f) != n_idx.get(f)]
    if stuck and not o_info.switches:
        return CannotSwitch(name, reason=f"coroutine body {stuck[0]}() is a hand-written "
                            "receive loop that changed: its processes keep the old code until "
                            "they end (end the loop in become(mod.loop, state) or await "
                            "upgrade_point())")
    gone = [c for c, cls in o_info.classes.items() if cls.kind and c not in n_info.classes]
    if gone:
        return CannotSwitch(name, reason=f"behaviour class {gone[0]} was removed: its processes "
                            "have no new code to switch to")
    kept = [c for c, cls in n_info.classes.items() if cls.kind and c in o_info.classes]
    supervisors = [c for c, cls in n_info.classes.items() if cls.kind == "supervisor"]
    changed = [c for c in kept if n_info.classes[c].kind != "supervisor" and (
        o_idx.get(c) != n_idx.get(c) or o_info.classes[c].header != n_info.classes[c].header)]
    if changed:
        advanced = any(o_info.classes[c].state_vsn != n_info.classes[c].state_vsn
                       or o_idx.get(f"{c}.code_change") != n_idx.get(f"{c}.code_change")
                       for c in changed)
        return Update(name, advanced=advanced, classes=tuple(kept))
    if supervisors:
        return UpdateSupervisor(name, classes=tuple(supervisors))
    return LoadModule(name)


def _diff(old: _Side, new: _Side) -> list[Instruction]:
    out: list[Instruction] = []
    o_mods, n_mods = old.tree.modules, new.tree.modules
    for name in sorted(set(o_mods) | set(n_mods) | set(old.tree.native) | set(new.tree.native)):
        if old.tree.native.get(name) != new.tree.native.get(name):
            out.append(RestartRequired(name, reason="native code (.so/.pyx) changed: CPython "
                                       "cannot hold two versions of an extension module"))
        elif name not in n_mods and name in o_mods:
            out.append(DeleteModule(name))
        elif name not in o_mods and name in n_mods:
            out.append(AddModule(name))
        elif name in o_mods and _changed(old, new, name):
            out.append(_classify(name, old, new))
    return out


# ---------------------------------------------------------------- dependencies


def _deps_graph(sides: Sequence[_Side]) -> dict[str, set[str]]:
    """Each module -> the application modules it imports (later sides win)."""
    graph: dict[str, set[str]] = {}
    for side in sides:
        known = set(side.tree.modules)
        for name, info in side.infos.items():
            deps = set()
            for imported in info.imported:
                # `import a.b.c` and `from a.b import c`: the deepest module of the app.
                parts = imported.split(".")
                while parts and ".".join(parts) not in known:
                    parts.pop()
                if parts and ".".join(parts) != name:
                    deps.add(".".join(parts))
            graph[name] = deps
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    stack = list(graph.get(start, ()))
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph.get(node, ()))
    return seen


def order(instructions: Sequence[Instruction], graph: dict[str, set[str]]
          ) -> list[Instruction]:
    """Callers before callees (a module that imports another, directly or
    through modules outside the plan, calls it); inside an import cycle the
    input order is kept, as systools does."""
    names = [i.module for i in instructions]
    reach = {n: _reach(graph, n) for n in names}
    comp = _components(names, reach)
    members: dict[int, list[int]] = {}
    for pos, c in enumerate(comp):
        members.setdefault(c, []).append(pos)
    callers: dict[int, set[int]] = {c: set() for c in members}
    for a, ca in enumerate(comp):
        for b, cb in enumerate(comp):
            if ca != cb and names[b] in reach[names[a]]:
                callers[cb].add(ca)
    done: set[int] = set()
    out: list[Instruction] = []
    while len(done) < len(members):
        # the first (in input order) component whose callers have all been placed
        ready = min((c for c in members if c not in done and callers[c] <= done),
                    key=lambda c: members[c][0])
        done.add(ready)
        out.extend(instructions[p] for p in members[ready])
    return out


def _components(names: list[str], reach: dict[str, set[str]]) -> list[int]:
    """The import cycle of each name, as the position of its first member."""
    return [next(j for j, m in enumerate(names) if m == n or (m in reach[n] and n in reach[m]))
            for n in names]


# ---------------------------------------------------------------- making a plan


def make_plan(old_dir: str | Path, new_dir: str | Path, packages: Sequence[str] | None = None,
              *, from_vsn: str | None = None, to_vsn: str | None = None,
              override: bool = True) -> UpgradePlan:
    """The plan from the tree ``old_dir`` to ``new_dir``: the override file
    ``new_dir/upgrade.py`` if there is one (and ``override``), else generated
    from the diff.  ``packages``: the top-level packages (or modules) to
    compare, by default all of both trees'.  Versions default to the folders'
    names.  AppupError for a missing folder or package."""
    old_root, new_root = _folder(old_dir, "old"), _folder(new_dir, "new")
    if packages is None:
        packages = _default_packages(old_root, new_root)
    for pkg in packages:
        _check_module_name(pkg, "a package")
        if not any((r / pkg).is_dir() or (r / f"{pkg}.py").is_file()
                   for r in (old_root, new_root)):
            raise AppupError(f"package {pkg!r} is in neither {old_root} nor {new_root}")
    old, new = _side(_scan(old_root, packages)), _side(_scan(new_root, packages))
    graph = _deps_graph([old, new])
    generated = [_with_deps(i, graph) for i in order(_diff(old, new), graph)]
    from_vsn = from_vsn or old_root.resolve().name
    to_vsn = to_vsn or new_root.resolve().name
    plan_file = new_root / PLAN_FILE
    if override and plan_file.is_file():
        up, down = load_plan_file(plan_file)
        return UpgradePlan(from_vsn, to_vsn, up, down, source=str(plan_file),
                           notes=_stale(up, generated))
    return UpgradePlan(from_vsn, to_vsn, tuple(generated), mirror(generated))


def _folder(path: str | Path, which: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise AppupError(f"the {which} tree {str(path)!r} is not a folder")
    return root


def _with_deps(instr: Instruction, graph: dict[str, set[str]]) -> Instruction:
    deps = tuple(sorted(graph.get(instr.module, ())))
    return type(instr)(**{**{f.name: getattr(instr, f.name) for f in fields(instr)},
                          "deps": deps})


def _stale(written: Sequence[Instruction], generated: Sequence[Instruction]) -> tuple[str, ...]:
    """Modules the diff finds changed that the override file does not name."""
    named = {i.module for i in written}
    return tuple(f"{i.module}: the diff says {i.source()}, {PLAN_FILE} does not mention it"
                 for i in generated if i.module not in named)


# ---------------------------------------------------------------- the override file


def load_plan_file(path: str | Path) -> tuple[tuple[Instruction, ...], tuple[Instruction, ...]]:
    """``(PLAN, DOWN)`` from an ``upgrade.py``; DOWN defaults to PLAN's mirror.

    The file is parsed, not executed: it may hold a docstring,
    ``from otpvm.appup import ...``, and the assignments ``PLAN = [...]`` and
    ``DOWN = [...]`` whose values are lists of instruction constructor calls
    with literal arguments (str, numbers, bools, None, lists, tuples, dicts).
    Anything else raises PlanFileError naming the line."""
    path = Path(path)
    try:
        tree = ast.parse(path.read_bytes(), str(path))
    except SyntaxError as exc:
        raise PlanFileError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
    found: dict[str, tuple[Instruction, ...]] = {}
    for stmt in tree.body:
        where = f"{path}:{stmt.lineno}"
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) \
                and isinstance(stmt.value.value, str):
            continue                                            # a docstring
        if isinstance(stmt, ast.ImportFrom) and stmt.module in ("otpvm.appup", "__future__"):
            continue
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id in ("PLAN", "DOWN")):
            raise PlanFileError(f"{where}: only PLAN = [...] and DOWN = [...] (and "
                                f"`from otpvm.appup import ...`) may appear in {PLAN_FILE}, "
                                f"not {ast.unparse(stmt)[:60]!r}")
        value = _literal(stmt.value, path)
        if not (isinstance(value, (list, tuple))
                and all(isinstance(i, Instruction) for i in value)):
            raise PlanFileError(f"{where}: {stmt.targets[0].id} must be a list of "
                                f"instructions ({', '.join(INSTRUCTIONS)})")
        found[stmt.targets[0].id] = tuple(value)
    if "PLAN" not in found:
        raise PlanFileError(f"{path}: no PLAN = [...] list")
    up = found["PLAN"]
    return up, found.get("DOWN", mirror(up))


def _literal(node: ast.expr, path: Path) -> Any:
    """A data literal, the only calls allowed being to the instructions."""
    where = f"{path}:{node.lineno}"
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, path) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_literal(k, path): _literal(v, path)        # type: ignore[arg-type]
                for k, v in zip(node.keys, node.values, strict=True)}
    if (isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and isinstance(node.operand.value, (int, float, complex))):
        return ast.literal_eval(node)
    if isinstance(node, ast.Call):
        func = node.func
        if not (isinstance(func, ast.Name) and func.id in INSTRUCTIONS):
            raise PlanFileError(f"{where}: only the instructions ({', '.join(INSTRUCTIONS)}) "
                                f"may be called, not {ast.unparse(func)}(...): "
                                f"{PLAN_FILE} is read as data, never executed")
        if any(isinstance(a, ast.Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords):
            raise PlanFileError(f"{where}: no *args or **kwargs in {PLAN_FILE}")
        args = [_literal(a, path) for a in node.args]
        kwargs = {k.arg: _literal(k.value, path) for k in node.keywords if k.arg}
        try:
            return INSTRUCTIONS[func.id](*args, **kwargs)
        except (TypeError, ValueError) as exc:
            raise PlanFileError(f"{where}: {exc}") from None
    raise PlanFileError(f"{where}: {ast.unparse(node)[:60]!r} is not allowed in {PLAN_FILE}: "
                        "only instructions and literals")


# ---------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    """What validation found: ``level`` is ``'error'`` (the install must not
    go ahead) or ``'warning'``; ``line`` is 0 when it is about a whole module."""

    level: str
    module: str
    message: str
    line: int = 0

    def __str__(self) -> str:
        at = f":{self.line}" if self.line else ""
        return f"{self.level}: {self.module}{at}: {self.message}"


LOADS = (AddModule, LoadModule, Update, UpdateSupervisor)


def validate(plan: UpgradePlan, new_dir: str | Path,
             prepare: Callable[..., Any] | None = None) -> list[Problem]:
    """The checks that need no running node, on the modules the plan loads.

    * each one's source is in ``new_dir`` and compiles (errors);
    * a ``DeleteModule`` whose module is still in ``new_dir`` (error);
    * mutable module state, lost at a switch (a new version starts with its
      own globals): a ``global`` statement in a function, a module-level
      ``x = []``, ``{}``, ``itertools.count()``... (warnings);
    * behaviour classes whose methods build instances of classes (Enum,
      NamedTuple, dataclasses, any class) defined in modules this plan
      upgrades: a state holding them keeps old-class instances after the
      switch, where ``isinstance`` and Enum ``==`` against the new class fail
      (warnings).  Best effort: it reads the ast of the behaviour's methods
      for calls and attribute reads of those names, so state built elsewhere
      is missed and a name used for something else is reported.

    With ``prepare`` (``otpvm.code.prepare``'s signature), the module bodies
    are executed too (``prepare_bodies``)."""
    root = _folder(new_dir, "new")
    names = sorted({i.module for i in plan.instructions if isinstance(i, LOADS)})
    tops = {i.module.split(".")[0] for i in plan.instructions}
    tree = _scan(root, sorted(tops | set(_default_packages(root))))
    problems = [Problem("error", i.name, f"DeleteModule, but it is still in {root}")
                for i in plan.instructions
                if isinstance(i, DeleteModule) and i.name in tree.modules]
    for name in names:
        mod = tree.modules.get(name)
        if mod is None:
            problems.append(Problem("error", name, f"the plan loads it, but {root} has no "
                                    "source for it"))
        elif mod.error is not None:
            problems.append(Problem("error", name, f"does not compile: {mod.error}"))
        elif mod.tree is not None:
            problems += _mutable_globals(name, mod.tree)
    upgraded = {i.module for i in plan.instructions
                if isinstance(i, (LoadModule, Update, UpdateSupervisor))}
    problems += _old_instances(tree, upgraded)
    if prepare is not None and all(p.level != "error" for p in problems):
        problems += prepare_bodies(plan, root, prepare)[1]
    return problems


def _mutable_globals(name: str, tree: ast.Module) -> list[Problem]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            out.append(Problem("warning", name, f"`global {', '.join(node.names)}` rebinds "
                               "module state, which a new version does not inherit (it starts "
                               "from its own module body)", node.lineno))
    info = _Info(name, False)
    _read_imports(info, tree)
    for stmt in _toplevel(tree.body):
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        names = [t.id for t in targets if isinstance(t, ast.Name)
                 and not (t.id.startswith("__") and t.id.endswith("__"))]
        if names and value is not None and _is_mutable(value, info):
            out.append(Problem("warning", name, f"{', '.join(names)} is mutable module state: "
                               "its contents are lost at a switch (the new version has its own)",
                               stmt.lineno))
    return out


def _is_mutable(value: ast.expr, info: _Info) -> bool:
    if isinstance(value, (ast.List, ast.Dict, ast.Set, ast.ListComp, ast.DictComp,
                          ast.SetComp)):
        return True
    return isinstance(value, ast.Call) and info.dotted(value.func) in MUTABLE_CALLS


def _old_instances(tree: _Tree, upgraded: set[str]) -> list[Problem]:
    infos = {name: _analyse(mod) for name, mod in tree.modules.items()}
    _resolve_kinds(infos)
    # classes of upgraded modules that are not behaviours: values a state may hold
    values = {f"{m}.{c}": m for m in upgraded if m in infos
              for c, cls in infos[m].classes.items() if not cls.kind}
    out = []
    for info in infos.values():
        for cls in info.classes.values():
            if cls.kind in (None, "supervisor"):
                continue
            for qual in sorted(_class_uses(info, cls.node) & values.keys()):
                out.append(Problem("warning", info.name, f"{cls.name} uses {qual} from the "
                                   f"upgraded module {values[qual]}: instances in a state keep "
                                   "the old class after the switch (isinstance and Enum == "
                                   "against the new class fail); convert them in code_change",
                                   cls.node.lineno))
    return out


def _class_uses(info: _Info, node: ast.ClassDef) -> set[str]:
    """The dotted names a class body calls (``Color(...)``) or reads
    attributes of (``Color.RED``)."""
    used = set()
    for n in ast.walk(node):
        target = n.func if isinstance(n, ast.Call) else (
            n.value if isinstance(n, ast.Attribute) else None)
        name = None if target is None else info.dotted(target)
        if name is not None:
            used.add(name)
    return used


def prepare_bodies(plan: UpgradePlan, new_dir: str | Path, prepare: Callable[..., Any]
                   ) -> tuple[dict[str, Any], list[Problem]]:
    """Executes the body of every module the plan loads with
    ``prepare(name, source, filename=path)`` (``otpvm.code.prepare``):
    returns what it returned, by name, and an error per body that raised."""
    root = _folder(new_dir, "new")
    prepared: dict[str, Any] = {}
    problems = []
    for instr in plan.instructions:
        if not isinstance(instr, LOADS) or instr.module in prepared:
            continue
        path = _source_path(root, instr.module)
        if path is None:
            problems.append(Problem("error", instr.module, f"no source in {root}"))
            continue
        try:
            prepared[instr.module] = prepare(instr.module, path.read_text("utf-8"),
                                             filename=str(path))
        except Exception as exc:
            problems.append(Problem("error", instr.module,
                                    f"its body failed: {type(exc).__name__}: {exc}"))
    return prepared, problems


def _source_path(root: Path, name: str) -> Path | None:
    base = root.joinpath(*name.split("."))
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


# ---------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    """``otpvm appup OLD NEW``: prints the plan and what validation found.
    Exit status 0, 1 if validation found errors, 2 for bad arguments."""
    parser = argparse.ArgumentParser(
        prog="otpvm appup", description="Prints the upgrade plan from the application tree "
        f"OLD to NEW (NEW/{PLAN_FILE}, if there is one, overrides the generated plan), then "
        "what validation found. Nothing is imported or executed.")
    parser.add_argument("old", help="the running version's tree (e.g. releases/1.0)")
    parser.add_argument("new", help="the new version's tree (e.g. releases/1.1)")
    parser.add_argument("--package", action="append", dest="packages", metavar="P",
                        help="a top-level package to compare (repeatable; default: all)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    try:
        plan = make_plan(args.old, args.new, args.packages)
        problems = validate(plan, args.new)
    except AppupError as exc:
        print(f"otpvm appup: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        data = plan.to_dict()
        data["problems"] = [{"level": p.level, "module": p.module, "message": p.message,
                             "line": p.line} for p in problems]
        print(json.dumps(data, default=repr, indent=2))
    else:
        print(plan.format())
        if problems:
            print("\nvalidation:")
            print("\n".join(f"  {p}" for p in problems))
    return 1 if any(p.level == "error" for p in problems) else 0
