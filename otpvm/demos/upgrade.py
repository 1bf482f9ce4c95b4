"""``otpvm demo --upgrade``: the uptime demo's service upgraded live.

The same echo service as the uptime demo, its connections ``net.Protocol``
processes running ``otpvm.demos.echo_v1`` (a module under the code server).
After ``--before`` seconds of traffic, instead of the poison line, the demo
installs ``echo_v2.py`` as the next version of that module, whose state is
``(count, bytes)`` instead of ``count`` and whose replies carry `` v2``:

1. ``code.prepare`` executes the new source, unattached;
2. ``release.install_versions(..., mode='lazy')`` runs the new
   ``code_change('1', copy, None)`` on a copy of every connection's state
   (a dry run; the states asked for all at once);
3. if every one passes, it switches the module: each connection migrates at
   its next message, running ``code_change`` on its own state (no
   suspension); every connection is asked for its status (a message, so
   idle ones switch now), and the old code is soft-purged.  A connection
   whose migration fails would have everyone migrate back.

With ``--upgrade=failing`` the new version's ``code_change`` raises for one
connection: the dry run fails, nothing is switched (``rolled_back``), every
connection stays on v1 with its state, no client sees an error.

The load generator (``--versioned``) checks every echo as usual, reads the
version of every reply, answers for switches (v1 to v2 once, never back) and
drains every request before it ends; the server tells it when the upgrade
ran (``time.monotonic()``, shared between processes on Linux), for the
latencies before, around and after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import otpvm
from otpvm import code, net, release
from otpvm.kernel import Pid

__all__ = ["ask_all", "format_report", "install", "run_service", "summary", "verdict",
           "versions_of"]

MODULE = "otpvm.demos.echo_v1"
HANDLER = f"{MODULE}:Echo"
SOURCES = {"ok": "echo_v2.py", "failing": "echo_v2_failing.py"}
OLD_VSN, NEW_VSN = "1", "2"
ASK_TIMEOUT = 30.0


def manage() -> None:
    """Puts the echo module under the code server (before its first import)."""
    if not code.managed(MODULE):
        code.manage(MODULE)


async def ask_all(pids: Iterable[Pid], request: Any,
                  timeout: float = ASK_TIMEOUT) -> dict[Pid, Any]:
    """Sends a sys request to every pid at once, then collects the answers
    (release.ask_all); a pid that is gone, or does not answer within
    timeout, is left out."""
    answers = await release.ask_all(dict.fromkeys(pids, request), timeout)
    return {pid: answer for pid, answer in answers.items() if not release.failed(answer)}


async def versions_of(pids: Iterable[Pid]) -> dict[str, int]:
    """How many of the connections run each version of the echo module
    (asking each is also a message: a connection switches before answering)."""
    counts: dict[str, int] = {}
    vsns: dict[type, str] = {}          # vsn_of scans a class: once per class
    for status in (await ask_all(pids, "get_status")).values():
        cls = status["module"]
        vsn = vsns.get(cls) or vsns.setdefault(cls, str(code.vsn_of(cls)))
        counts[vsn] = counts.get(vsn, 0) + 1
    return dict(sorted(counts.items()))


async def install(listener: net.Listener, mode: str) -> dict[str, Any]:
    """Installs v2 lazily with release.install_versions (see the module
    docstring); what happened, with the window's ``time.monotonic()`` times."""
    t_start = time.monotonic()
    report: dict[str, Any] = {
        "t_start": t_start, "dry_run_s": None, "dry_run_checked": 0, "failure": None,
        "rolled_back": False, "migrate_s": None, "purge_s": None, "soft_purged": False}
    if mode == "none":                  # the baseline: the same service, nothing installed
        report["t_done"] = time.monotonic()
        return report
    path = Path(__file__).with_name(SOURCES[mode])
    prepared = code.prepare(MODULE, path.read_text(), filename=str(path))
    pids = await net.connection_pids(listener)
    report["dry_run_checked"] = len(pids)
    try:
        done = await release.install_versions([prepared], mode="lazy")
    except release.InstallError as exc:
        report.update(rolled_back=exc.report.rolled_back,
                      failure=_failure(exc.report.reason, pids))
    else:
        report.update(dry_run_s=_round(done.dry_run_s), migrate_s=_round(done.migrate_s),
                      purge_s=_round(done.purge_s),
                      soft_purged=code.versions(MODULE)[1] is None)
    report["t_done"] = time.monotonic()
    return report


def _failure(reason: Any, pids: list[Pid]) -> dict[str, Any]:
    """Which connection the install failed on (its index, oldest first), and why."""
    pid = reason[1] if isinstance(reason, tuple) and len(reason) > 1 else None
    exc = reason[-1][1][1] if (isinstance(reason, tuple) and reason[0] == "code_change_failed"
                               ) else reason
    error = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else repr(exc)
    return {"connection": pids.index(pid) if pid in pids else None, "pid": repr(pid),
            "error": error}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


async def run_service(loadgen: Any, args: Any) -> dict[str, Any]:
    """The server side of ``--upgrade``: serve, drive the load generator,
    install at the before/during boundary, collect the numbers."""
    manage()
    listener = await net.serve(HANDLER, 0, host="127.0.0.1", acceptors=args.acceptors,
                               max_connections=args.connections + 100, backlog=4096,
                               packet="line", active="once", packet_size=4096)
    options = ["--host", "127.0.0.1", "--port", str(listener.port),
               "--connections", str(args.connections), "--interval", str(args.interval),
               "--before", str(args.before), "--during", str(args.during),
               "--after", str(args.after), "--quiet", "--sync", "--versioned",
               "--window-from-stdin"]
    await otpvm.run_blocking(loadgen.start, options)
    await otpvm.run_blocking(loadgen.wait_established, 300.0)
    loadgen.write("go\n")
    await otpvm.sleep(args.before)
    installed = await install(listener, args.upgrade)
    t0, t1 = installed.pop("t_start"), installed.pop("t_done")
    loadgen.write(f"UPGRADE {t0!r} {t1!r}\n")
    # Before the load generator ends (its connections with it).
    versions = await versions_of(await net.connection_pids(listener))
    result = await otpvm.run_blocking(loadgen.finish, args.during + args.after + 300)
    result["server"] = {"versions_after_install": versions, "install_s": round(t1 - t0, 3),
                        **installed}
    await net.stop_server(listener)
    return result


def summary(r: dict[str, Any], n: int) -> dict[str, Any]:
    """The ``"upgrade"`` object of the JSON output."""
    server, versions, upgrade = r["server"], r["versions"], r["upgrade"] or {}
    latency = upgrade.get("latency_ms", {})
    return {
        "connections": n,
        "established": r["connections_established"],
        "alive_before": r["alive_before_poison"],
        "alive_after": r["alive_at_end"],
        "client_errors": r["errors"]["total"],
        "requests_sent": r["requests"]["sent"],
        "requests_answered": r["requests"]["answered"],
        "switched": versions["switched"],
        "switched_more_than_once": versions["switched_more_than_once"],
        "v1_replies_after_switch": versions["replies_older_than_seen"],
        "client_versions_at_end": versions["at_end"],
        "server_versions": server["versions_after_install"],
        "rolled_back": server["rolled_back"],
        "failure": server["failure"],
        "install_s": server["install_s"],
        "dry_run_s": server["dry_run_s"],
        "migrate_s": server["migrate_s"],
        "purge_s": server["purge_s"],
        "soft_purged": server["soft_purged"],
        "window_s": upgrade.get("window_s"),
        "p99_ms": {phase: (latency.get(phase) or {}).get("p99")
                   for phase in ("before", "upgrade", "after")},
        "p50_ms": {phase: (latency.get(phase) or {}).get("p50")
                   for phase in ("before", "upgrade", "after")},
        "max_ms": {phase: (latency.get(phase) or {}).get("max")
                   for phase in ("before", "upgrade", "after")},
    }


def verdict(u: dict[str, Any], mode: str, crash_reports: int,
            supervisor_reports: int) -> list[tuple[str, bool]]:
    """The claims of the upgrade demo, each with whether it held."""
    n = u["connections"]
    common = [
        (f"all {n:,} connections established", u["established"] == n),
        (f"{n:,} alive before the upgrade", u["alive_before"] == n),
        (f"{n:,} alive after it", u["alive_after"] == n),
        ("no error seen by clients", u["client_errors"] == 0),
        (f"every request answered ({u['requests_answered']:,} of {u['requests_sent']:,})",
         u["requests_sent"] == u["requests_answered"] > 0),
        ("no crash or supervisor report logged", crash_reports == supervisor_reports == 0),
    ]
    if mode == "ok":
        return [
            *common,
            (f"every connection switched from v1 to v2 exactly once ({u['switched']:,})",
             u["switched"] == n and u["switched_more_than_once"] == 0),
            ("no v1 reply after a connection's switch", u["v1_replies_after_switch"] == 0),
            (f"all {n:,} connections run v2 on the server",
             u["server_versions"] == {NEW_VSN: n}),
            ("the old code was purged (soft_purge)", u["soft_purged"]),
        ]
    if mode == "none":
        return [
            *common,
            ("nothing was switched (the baseline)",
             u["switched"] == 0 and u["client_versions_at_end"] == {"1": n}),
        ]
    return [
        *common,
        ("the dry run failed for exactly one connection", u["failure"] is not None),
        ("nothing was switched (rolled back)",
         u["rolled_back"] and u["switched"] == 0 and u["client_versions_at_end"] == {"1": n}),
        (f"all {n:,} connections still run v1 on the server",
         u["server_versions"] == {OLD_VSN: n}),
    ]


def format_report(u: dict[str, Any], mode: str, checks: list[tuple[str, bool]],
                  seconds: float) -> str:
    """The human-readable report."""
    n = u["connections"]
    if mode == "ok":
        head = (f"otpvm upgrade demo: {n:,} connections moved from echo v1 to v2 "
                f"in {u['install_s']:.3f} s")
        how = (f"  dry run {u['dry_run_s']:.3f} s, every connection migrated "
               f"{u['migrate_s']:.3f} s after the switch")
    elif mode == "none":
        head = f"otpvm upgrade demo, baseline: {n:,} connections on v1, nothing installed"
        how = "  (the same service and load as --upgrade, for comparison)"
    else:
        f = u["failure"] or {}
        head = f"otpvm upgrade demo: a failing v2 was rolled back, {n:,} connections kept v1"
        how = (f"  the dry run failed on connection #{f.get('connection')}: {f.get('error')}; "
               f"nothing switched ({u['install_s']:.3f} s)")
    lines = [
        "", head, how,
        f"  requests: {u['requests_sent']:,} sent, {u['requests_answered']:,} answered; "
        f"errors seen by clients: {u['client_errors']}",
        f"  switched: {u['switched']:,}; v1 replies after a switch: "
        f"{u['v1_replies_after_switch']}; connections per version: "
        f"{u['server_versions']}",
        "  round-trip latency (ms):     p50      p99      max",
    ]
    for phase in ("before", "upgrade", "after"):
        cells = " ".join(f"{u[k][phase]:8.2f}" if u[k][phase] is not None else "       -"
                         for k in ("p50_ms", "p99_ms", "max_ms"))
        lines.append(f"    {phase + ' the upgrade' if phase != 'upgrade' else 'during it':22} "
                     f"{cells}")
    lines.append("")
    lines.extend(f"  [{'ok' if ok else 'FAILED'}] {claim}" for claim, ok in checks)
    lines.append(f"  ({seconds:.1f} s in all)")
    return "\n".join(lines)

