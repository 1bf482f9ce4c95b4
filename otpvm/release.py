"""Releases: a node's code upgraded as one transaction (OTP's release_handler).

A *release directory* holds one folder per release, named by its version,
each a source tree of the application's packages, and ``RELEASES.json``,
which records each release's status (``current``, ``permanent``, ``old``,
``unpacked``)::

    kvstore/
      RELEASES.json
      1.0/kvstore_rel/store.py
      1.1/kvstore_rel/store.py

``otpvm run MODULE:APP --release-dir DIR`` boots the permanent release (the
only one, the first time) with its packages under the code server;
``--control SOCK`` opens the node's control channel, a Unix socket only its
owner can use, over which ``otpvm upgrade SOCK DIR/1.1`` installs a release.

``install`` is a transaction.  Every changed module is first executed as a
new version (a failing body changes nothing).  Then the callback processes
running those modules are suspended, callers before callees, the modules
switch, and each process runs ``code_change`` on the new code (OTP's
``suspend → change_code → resume``).  If any step fails -- a suspend that
times out, a ``code_change`` that raises, a new supervisor ``init`` that
returns bad specs -- every process gets its old class and state back
(``abort_code``), the modules switch back, everything resumes, and messages
sent meanwhile are handled afterwards, in order: the node stays up.  OTP's
release handler restarts the node instead.

``mode='lazy'`` (``'auto'`` picks it above 500 processes) is for large sets
of processes that run the module's classes themselves (10,000 connections):
nothing is suspended.  ``code_change`` first runs on a copy of every
process's state (a dry run); only if all pass do the modules switch, each
process migrating at its next message while the handler nudges them, 200
at a time.  If a migration still fails (the state changed since its dry
run), the modules switch back and every process that had migrated migrates
back through its new code's ``code_change(('down', vsn), ...)``: the
transaction holds, each process one message late.  Suspending 10,000
processes together would hold every one of them for the whole install
(``benchmarks/upgrade.py``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from otpvm import _vm, appup, code, gen, special, supervisor
from otpvm.gen import SYSTEM, From
from otpvm.kernel import (
    Pid,
    Ref,
    _Pacer,
    demonitor,
    monitor,
    receive,
    run_blocking,
    self,
    send,
    unalias,
)
from otpvm.terms import Down

__all__ = [
    "InstallError", "InstallReport", "ReleaseDir", "STRICT_LIMIT", "TIMEOUT", "ask_all",
    "failed", "install",
]

STRICT_LIMIT = 500
"""``mode='auto'``: up to this many processes strict, above it lazy."""

Mode = Literal["strict", "lazy", "auto"]


class InstallError(Exception):
    """An install failed; ``report`` says why (``report.reason``) and that
    everything was rolled back."""

    def __init__(self, report: InstallReport) -> None:
        super().__init__(report.reason)
        self.report = report


@dataclass
class InstallReport:
    """What an install did (or, failing, undid)."""

    from_vsn: str | None
    to_vsn: str
    mode: str = "strict"
    modules: dict[str, tuple[str, str]] = field(default_factory=dict)   # name -> (old, new vsn)
    processes: int = 0                  # callback processes switched (or to switch)
    cannot_switch: list[str] = field(default_factory=list)   # coroutine processes left on old code
    suspended_ms: float = 0.0           # how long the processes were suspended (strict)
    install_s: float = 0.0
    ok: bool = True
    rolled_back: bool = False
    reason: Any = None                  # why it failed: a tuple naming the step, then details
    plan: str = ""                      # the upgrade plan, as otpvm appup prints it
    children_added: list[str] = field(default_factory=list)     # by upgraded supervisors
    children_removed: list[str] = field(default_factory=list)
    children_failed: list[str] = field(default_factory=list)    # added, but failed to start
    dry_run_s: float | None = None      # lazy: the dry run of code_change on copies
    migrate_s: float | None = None      # lazy: from the switch until every process migrated
    purge_s: float | None = None        # lazy: the soft purge of the old versions
    not_migrated_back: list[str] = field(default_factory=list)   # lazy rollback: stuck on new
    started: float = field(default_factory=time.monotonic, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The report as JSON-ready data (reasons as their repr)."""
        data = asdict(self)
        del data["started"]
        data["reason"] = None if self.reason is None else repr(self.reason)
        return data


# -- the release directory -----------------------------------------------------------


class ReleaseDir:
    """A release directory: release folders and RELEASES.json."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).resolve()
        if not self.path.is_dir():
            raise FileNotFoundError(f"release directory {self.path} does not exist")

    @property
    def _records(self) -> Path:
        return self.path / "RELEASES.json"

    def releases(self) -> dict[str, str]:
        """Each release folder's status, by vsn (``unpacked`` if never installed)."""
        recorded = json.loads(self._records.read_text()) if self._records.exists() else {}
        found = {p.name: "unpacked" for p in self.path.iterdir()
                 if p.is_dir() and not p.name.startswith((".", "_"))}
        found.update({vsn: status for vsn, status in recorded.items() if vsn in found})
        return dict(sorted(found.items()))

    def _save(self, records: dict[str, str]) -> None:
        tmp = self._records.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, self._records)          # a crash never leaves half a file

    def with_status(self, *statuses: str) -> str | None:
        """The release with one of these statuses (``current``, ``permanent``)."""
        for vsn, status in self.releases().items():
            if status in statuses:
                return vsn
        return None

    def boot_release(self) -> str:
        """The release a node boots: the permanent one, else the only one."""
        releases = self.releases()
        permanent = self.with_status("permanent")
        if permanent is not None:
            return permanent
        if len(releases) == 1:
            vsn = next(iter(releases))
            self._save({vsn: "permanent"})
            return vsn
        raise ValueError(f"{self.path} has {len(releases)} releases and none is permanent: "
                         "make one permanent in RELEASES.json")

    def booted(self, vsn: str) -> None:
        """Records the boot: that release current (and permanent), the rest old."""
        records = self.releases()
        for other, status in records.items():
            if status in ("current", "permanent") and other != vsn:
                records[other] = "old"
        records[vsn] = "permanent"
        self._save(records)

    def installed(self, vsn: str, *, permanent: bool = False) -> None:
        """Records an install: vsn current (or permanent); the permanent one
        stays what a reboot boots unless vsn replaces it."""
        records = self.releases()
        for other, status in records.items():
            if other == vsn:
                continue
            if status == "current" or (permanent and status == "permanent"):
                records[other] = "old"
        records[vsn] = "permanent" if permanent else (
            "permanent" if records.get(vsn) == "permanent" else "current")
        self._save(records)

    def make_permanent(self, vsn: str) -> None:
        """What a reboot boots from now on (it must be the running release)."""
        records = self.releases()
        if records.get(vsn) not in ("current", "permanent"):
            raise ValueError(f"release {vsn} is not the running release "
                             f"({self.with_status('current', 'permanent')})")
        for other, status in records.items():
            if status == "permanent" and other != vsn:
                records[other] = "old"
        records[vsn] = "permanent"
        self._save(records)

    def root(self, vsn: str) -> Path:
        """The source tree of a release."""
        root = self.path / vsn
        if not root.is_dir():
            raise FileNotFoundError(f"no release {vsn!r} in {self.path}")
        return root


# -- many requests at once --------------------------------------------------------------

TIMEOUT: Any = ("timeout",)
"""ask_all's answer for a process that did not answer in time."""
_MIGRATION_CHUNK = 200          # lazy: processes nudged to migrate at a time


async def ask_all(requests: dict[Pid, Any], timeout: float) -> dict[Pid, Any]:
    """Sends each pid its system request (OTP's sys protocol) at once and
    collects the answers: pid -> reply, ``('down', reason)``, or
    ``TIMEOUT``.  One wait for all, not one per process: the suspension
    window stays short, and 10,000 requests take milliseconds."""
    pending: dict[Ref, Pid] = {}
    me, pacer = self(), _Pacer()
    for pid, request in requests.items():
        ref = monitor(pid, alias=True)
        pending[ref] = pid
        send(pid, (SYSTEM, From(me, ref), request))
        await pacer.tick()              # 10,000 requests: the others run meanwhile

    def ours(msg: Any) -> bool:         # other messages stay, for their own receive
        if type(msg) is Down:
            return msg.ref in pending
        return type(msg) is tuple and len(msg) == 2 and msg[0] in pending

    answers: dict[Pid, Any] = {}
    done: set[Ref] = set()
    deadline = time.monotonic() + timeout
    while pending:
        try:
            msg = await receive(ours, timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
        if type(msg) is Down:
            answers[pending.pop(msg.ref)] = ("down", msg.reason)
            continue
        ref = msg[0]
        # No flush here: each would scan the replies still queued (O(n**2)
        # for 10,000); a Down that came anyway is taken below.
        unalias(ref)
        demonitor(ref)
        done.add(ref)
        answers[pending.pop(ref)] = msg[1]
    for ref, pid in pending.items():
        unalias(ref)
        demonitor(ref)
        done.add(ref)
        answers[pid] = TIMEOUT
    await _flush_downs(done)
    return answers


async def _flush_downs(refs: set[Ref]) -> None:
    """Removes the Downs of these monitors that arrived before their demonitor."""
    def ours(msg: Any) -> bool:
        return isinstance(msg, Down) and msg.ref in refs
    while True:
        try:
            await receive(ours, timeout=0)
        except TimeoutError:
            return


def failed(answer: Any) -> bool:
    """Whether an ask_all answer is a failure: an error reply, the process
    gone, or no answer in time."""
    return answer is TIMEOUT or (type(answer) is tuple and len(answer) == 2
                                  and answer[0] in ("error", "down"))


# -- the install --------------------------------------------------------------------------


@dataclass
class _Change:
    name: str
    prepared: code.Version
    old_vsn: str
    pids: list[Pid] = field(default_factory=list)


def planned_changes(old_root: Path, new_root: Path) -> tuple[appup.UpgradePlan, dict[str, Path]]:
    """The plan from the running release's tree to the target's (otpvm.appup:
    comments and line numbers are no change; a downgrade is the diff the
    other way), and the loaded modules it switches: name -> the new file,
    callers first."""
    plan = appup.make_plan(old_root, new_root)
    instructions = plan.instructions
    switching = (appup.LoadModule, appup.Update, appup.UpdateSupervisor, appup.CannotSwitch)
    changed = {}
    for instruction in instructions:
        if isinstance(instruction, appup.RestartRequired):
            raise _Abort(("restart_required", instruction.module, instruction.reason))
        name = instruction.module
        if isinstance(instruction, switching) and code.which(name) is not None:
            changed[name] = new_root.joinpath(*name.split(".")).with_suffix(".py")
    return plan, changed


async def install(old_root: Path, new_root: Path, to_vsn: str, *, from_vsn: str | None = None,
                  down: bool = False, mode: Mode = "auto", extra: Any = None,
                  suspend_timeout: float = 5.0, code_change_timeout: float = 5.0
                  ) -> InstallReport:
    """Installs the release in ``new_root`` over the one running from
    ``old_root`` (see the module docstring); returns the report, or raises
    InstallError with everything rolled back.

    ``down``: a downgrade, processes get ``old_vsn=('down', to_vsn)`` and
    their running (newer) code migrates its state.  What changes, and in
    which order (callers first), is the upgrade plan's (otpvm.appup); a plan
    that needs a restart (native code, otpvm itself) is refused."""
    report = InstallReport(from_vsn, to_vsn)
    try:
        # Diffing and executing the new modules is seconds of work for a big
        # release: off the scheduler, on a thread of its own.
        report.plan, prepared = await run_blocking(_prepare_all, old_root, new_root)
    except code.LoadError as exc:
        return _fail(report, ("load_failed", str(exc)), rolled_back=False)
    except appup.AppupError as exc:
        return _fail(report, ("bad_plan", str(exc)), rolled_back=False)
    except _Abort as abort:
        return _fail(report, abort.reason, rolled_back=False)
    return await install_versions(prepared, report=report, down=down, mode=mode, extra=extra,
                                  suspend_timeout=suspend_timeout,
                                  code_change_timeout=code_change_timeout)


async def install_versions(prepared: list[code.Version], *, report: InstallReport | None = None,
                           down: bool = False, mode: Mode = "auto", extra: Any = None,
                           suspend_timeout: float = 5.0, code_change_timeout: float = 5.0
                           ) -> InstallReport:
    """Makes prepared versions (``code.prepare``; callers' modules first)
    current in the running node, as one transaction: what ``install`` does
    once the release tree is read, for versions loaded some other way."""
    if report is None:
        report = InstallReport(None, ", ".join(v.vsn for v in prepared))
    changes = []
    try:
        for version in prepared:
            current = code.which(version.name)
            if current is None:
                raise _Abort(("not_loaded", version.name))
            changes.append(_Change(version.name, version, current.vsn))
            report.modules[version.name] = (current.vsn, version.vsn)
        for change in changes:
            if not await code.soft_purge(change.name):
                users = await code.processes_using(change.name, "old", scan_state=True)
                raise _Abort(("old_processes", change.name, users))
            for pid in await code.processes_using(change.name, "current"):
                if _switchable(pid):
                    change.pids.append(pid)
                elif pid != self():
                    report.cannot_switch.append(repr(pid))
        report.processes = len({pid for c in changes for pid in c.pids})
        wrapped = [pid for c in changes for pid in c.pids if not _runs_directly(pid, c.name)]
        if mode == "auto":
            lazy = report.processes > STRICT_LIMIT and not wrapped
            mode = "lazy" if lazy else "strict"
        if mode == "lazy" and wrapped:
            # A supervisor (or event manager) runs the module's class through
            # its own: it changes code by the sys protocol, suspended.
            raise _Abort(("lazy_needs_callback_processes", wrapped[:5]))
        await _validate_supervisors(changes, code_change_timeout)
    except _Abort as abort:
        return _fail(report, abort.reason, rolled_back=False)
    report.mode = mode
    runner = _strict if mode == "strict" else _lazy
    try:
        await runner(changes, report, down, report.to_vsn, extra, suspend_timeout,
                     code_change_timeout)
    except _Abort as abort:
        return _fail(report, abort.reason, rolled_back=True)
    if mode == "strict":
        await _adjust_children(dict.fromkeys(pid for c in changes for pid in c.pids), report)
    report.install_s = time.monotonic() - report.started
    return report


def _prepare_all(old_root: Path, new_root: Path) -> tuple[str, list[code.Version]]:
    """The plan, printed, and each changed module executed as a new version
    (callers first): everything that can fail before anything changes."""
    plan, files = planned_changes(old_root, new_root)
    prepared = [code.prepare(name, path.read_text(), filename=str(path))
                for name, path in files.items()]
    return plan.format(), prepared


class _Abort(Exception):
    def __init__(self, reason: Any) -> None:
        super().__init__(reason)
        self.reason = reason


def _fail(report: InstallReport, reason: Any, *, rolled_back: bool) -> Any:
    report.ok, report.reason, report.rolled_back = False, reason, rolled_back
    report.install_s = time.monotonic() - report.started
    raise InstallError(report)


def _switchable(pid: Pid) -> bool:
    """Whether the process answers the sys protocol: a behaviour (a
    callback process), or a coroutine waiting in special.receive."""
    roots = _vm._code_roots(pid)
    if roots is None:
        return False
    if roots[1] is not None:
        return True
    return any(frame.f_code in _SPECIAL_CODE for frame in code._frames(roots[2]))


_SPECIAL_CODE = {special.receive.__code__, special._suspended.__code__}


def _runs_directly(pid: Pid, name: str) -> bool:
    """Whether the process's own callback class (or loop) is from module
    ``name``: it can migrate by itself at its next message (lazy mode)."""
    roots = _vm._code_roots(pid)
    if roots is None:
        return True                     # gone: nothing to migrate
    handler = roots[1]
    if handler is None:
        return True                     # a special process: its loop is the module's
    return getattr(getattr(handler, "cls", None), "__module__", None) == name


async def _validate_supervisors(changes: list[_Change], timeout: float) -> None:
    """Before anything changes: each supervisor whose class a module
    changes has its new init run and checked (supervisor.validate_upgrade)."""
    for change in changes:
        wrapped = [pid for pid in change.pids if not _runs_directly(pid, change.name)]
        states = await ask_all({pid: "get_state" for pid in wrapped}, timeout)
        for pid, state in states.items():
            try:
                supervisor.validate_upgrade(state, change.prepared.module)
            except Exception as exc:
                raise _Abort(("bad_supervisor_init", pid, change.name, str(exc))) from None


async def _strict(changes: list[_Change], report: InstallReport, down: bool, to_vsn: str,
                  extra: Any, suspend_timeout: float, code_change_timeout: float) -> None:
    """Suspend in waves (callers first), switch, change_code, then commit
    and resume -- or undo all of it."""
    suspended: set[Pid] = set()
    waves: list[list[Pid]] = []
    seen: set[Pid] = set()
    for change in changes:          # one wave per module, callers' modules first
        waves.append([pid for pid in dict.fromkeys(change.pids) if pid not in seen])
        seen.update(waves[-1])
    window = time.monotonic()
    try:
        for wave in waves:
            answers = await ask_all({pid: "suspend" for pid in wave}, suspend_timeout)
            suspended.update(pid for pid in wave if answers[pid] == "ok")
            for pid in wave:
                if answers[pid] != "ok":
                    raise _Abort(("suspend_failed" if answers[pid] is not TIMEOUT
                                  else "suspend_timeout", pid, answers[pid]))
        for change in changes:
            code.switch(change.prepared)
        switched = list(changes)
        changed: list[Pid] = []
        try:
            for change in changes:
                old_vsn: Any = ("down", to_vsn) if down else change.old_vsn
                answers = await ask_all(
                    {pid: ("change_code", change.name, old_vsn, extra) for pid in change.pids},
                    code_change_timeout)
                changed.extend(pid for pid in change.pids if not failed(answers[pid]))
                for pid in change.pids:
                    if failed(answers[pid]):
                        raise _Abort(("code_change_failed", pid, change.name,
                                      change.old_vsn, answers[pid]))
        except _Abort:
            await ask_all({pid: ("abort_code",) for pid in changed}, code_change_timeout)
            for change in reversed(switched):
                code.unswitch(change.name)
            raise
        await ask_all({pid: ("commit_code",) for pid in changed}, code_change_timeout)
    finally:
        for wave in reversed(waves):
            await ask_all({pid: "resume" for pid in wave if pid in suspended},
                           suspend_timeout)
        report.suspended_ms = (time.monotonic() - window) * 1e3


async def _adjust_children(pids: Iterable[Pid], report: InstallReport) -> None:
    """After the commit, each upgraded supervisor's children follow its new
    ``init``: the ids it dropped are terminated and deleted, the ids it
    added started (in the new code).  The supervisor's own code change
    starts and stops nothing, as in OTP, where the release handler does
    this too.  A child that fails to start is reported; the install stands."""
    for pid in pids:
        try:
            added, removed = await supervisor.spec_changes(pid)
        except (TypeError, gen.RequestFailed, TimeoutError):
            continue                    # not a supervisor
        for child in removed:
            await supervisor.terminate_child(pid, child)
            await supervisor.delete_child(pid, child)
        report.children_removed.extend(repr(child) for child in removed)
        for child in added:
            try:
                await supervisor.restart_child(pid, child)
            except supervisor.SupervisorError as exc:
                report.children_failed.append(f"{child!r}: {exc.reason!r}")
            else:
                report.children_added.append(repr(child))


async def _lazy(changes: list[_Change], report: InstallReport, down: bool, to_vsn: str,
                extra: Any, suspend_timeout: float, code_change_timeout: float) -> None:
    """No suspension: a dry run of code_change on a copy of every state,
    then the switch, each process migrating at its next message (nudged by
    a get_status).  If one fails to migrate (its state changed since its
    dry run), the modules switch back and every process that had migrated
    migrates back by its new code's ``code_change(('down', vsn), ...)``:
    the transaction holds, one message per process late."""
    started = time.monotonic()
    for change in changes:
        await _dry_run(change, ("down", to_vsn) if down else change.old_vsn, extra, down,
                       code_change_timeout)
    report.dry_run_s = time.monotonic() - started
    started = time.monotonic()
    for change in changes:
        code.switch(change.prepared,
                    code_change=(("down", to_vsn) if down else change.old_vsn, extra))
    stuck = await _migrated(changes, code_change_timeout)
    report.migrate_s = time.monotonic() - started
    if stuck:
        pid, change = stuck[0]
        for each in reversed(changes):
            code.unswitch(each.name, migrate_back=True, extra=extra)
        report.not_migrated_back = [repr(p) for p, _ in await _migrated(changes,
                                                                        code_change_timeout)]
        raise _Abort(("migration_failed", pid, change.name, change.old_vsn))
    started = time.monotonic()
    for change in changes:
        await code.soft_purge(change.name)
    report.purge_s = time.monotonic() - started


async def _dry_run(change: _Change, old_vsn: Any, extra: Any, down: bool,
                   timeout: float) -> None:
    """code_change on a copy of each process's state: the new class's (the
    running one's for a downgrade).  Changes nothing; raises _Abort."""
    # The state from get_state: get_status's may be trimmed by format_status.
    states = await ask_all({pid: "get_state" for pid in change.pids}, timeout)
    status = await ask_all({pid: "get_status" for pid in change.pids}, timeout)
    pacer = _Pacer()
    for pid in change.pids:
        await pacer.tick()
        if failed(states[pid]) or failed(status[pid]) or not isinstance(status[pid], dict):
            raise _Abort(("dry_run_failed", pid, change.name, status[pid]))
        try:
            _convert(status[pid]["module"], change.prepared, old_vsn, down,
                     _vm.copy_message(states[pid]), extra)
        except _Abort:
            raise
        except Exception as exc:
            raise _Abort(("code_change_failed", pid, change.name, change.old_vsn,
                          ("error", ("callback_failed", exc)))) from None


def _convert(running: Any, prepared: code.Version, old_vsn: Any, down: bool, state: Any,
             extra: Any) -> Any:
    """What the process's code_change will make of state: its callback
    class's in the new version (the running one's for a downgrade), or for
    a special process (running a loop function) its module's function."""
    if isinstance(running, type):
        converter: Any = running if down else getattr(prepared.module, running.__qualname__,
                                                      None)
        if converter is None:
            raise _Abort(("dry_run_failed", None, prepared.name,
                          f"no {running.__qualname__} in the new version"))
        return converter.__new__(converter).code_change(old_vsn, state, extra)
    names = getattr(running, "__globals__", {}) if down else vars(prepared.module)
    migrate = names.get("code_change")
    return migrate(old_vsn, state, extra) if callable(migrate) else state


async def _migrated(changes: list[_Change], timeout: float) -> list[tuple[Pid, _Change]]:
    """Nudges every process (a get_status: a message, at which it switches)
    and returns those whose class is not the current version's: their
    migration failed (each logged why)."""
    stuck = []
    for change in changes:
        target = code.which(change.name)
        answers: dict[Pid, Any] = {}
        # In chunks: 10,000 migrations at once would delay every process's
        # messages behind them (the latency spike of a live upgrade).
        for i in range(0, len(change.pids), _MIGRATION_CHUNK):
            chunk = change.pids[i:i + _MIGRATION_CHUNK]
            answers.update(await ask_all({pid: "get_status" for pid in chunk}, timeout))
        for pid, answer in answers.items():
            if failed(answer) or not isinstance(answer, dict):
                continue                # gone, or too busy to say: nothing to undo
            vsn = code.vsn_of(answer.get("module"))
            if target is not None and vsn is not None and vsn != target.vsn:
                stuck.append((pid, change))
    return stuck
