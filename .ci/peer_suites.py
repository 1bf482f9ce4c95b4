"""The peers' own test suites, as shipped and on otpvm, in one job.

    python .ci/peer_suites.py WORKDIR

Run with the Python of a virtual environment where otpvm (with its ``test``
extra) is installed.  For each peer pinned in ``tests/peers/suites.json``:
its sdist is downloaded (``pip download --no-binary PEER``; never
committed), unpacked in WORKDIR, its test dependencies installed, and its
suite run twice from its own folder (with the peer's ``env``, if any, added
to the environment): as shipped (the reference) and with otpvm swapped in
by the peer's plugin (``-p otpvm.testing.<peer>_swap``).
Both runs take the same arguments, so they run the same test ids: ``args``,
and a ``--deselect`` for each test of the peer's ``deselected`` in
suites.json (tests that fail or flake here as shipped, each with why: they
would tell nothing of otpvm).  The plugin's ``EXCLUDED`` tests (each with
why: they check what only the reference has) are deselected in otpvm's run
only.  The step fails when either run has a failure or an error, when
otpvm's passes fewer tests than the reference less those exclusions, or
when a count differs from the one recorded in suites.json.  Each run's whole
output is kept in the peer's folder (``pytest-<run>.log``).  A peer whose
``not_free_threaded`` says why (its test requirements do not build there)
is not run on a free-threaded build.  CPython's
concurrent.futures suite runs with the tests
(tests/peers/test_cpython_futures.py): it needs no download.
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
SUITES = json.loads((HERE / "tests/peers/suites.json").read_text())
PEER_TEST_TIMEOUT_S = 300


def run(cmd: list[str], cwd: Path | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Runs cmd (shown first, with env: added to the environment), its
    output captured."""
    print("$", *(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()), shlex.join(cmd),
          flush=True)
    return subprocess.run(cmd, cwd=cwd, text=True, capture_output=True,
                          env={**os.environ, **env} if env else None,
                          preexec_fn=_default_signals)


def _default_signals() -> None:
    """In the child: SIGINT, SIGQUIT and SIGHUP back to their defaults.  A
    job started in the background by a shell (``bash .ci/run &``) inherits
    SIGINT and SIGQUIT ignored, and one started with ``nohup`` SIGHUP: a
    Python started so installs no KeyboardInterrupt handler, and the peers'
    tests that interrupt themselves with SIGINT (AnyIO's, uvloop's) fail in
    both runs; uvloop's ``test_send_signal`` sends SIGHUP to a child that
    sleeps an hour, which then never ends (the suite hung)."""
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def fetch(name: str, version: str, work: Path) -> Path:
    """The peer's sdist, downloaded and unpacked: its folder.  Only the peer
    is taken as source: with ``:all:``, pip also built the peer's build
    requirements from source to prepare its metadata (uvloop's Cython:
    over 2 minutes)."""
    got = run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
               "--no-binary", name, "-d", str(work), f"{name}=={version}"])
    if got.returncode:
        sys.exit(f"cannot download {name}=={version}: {got.stderr.strip()}")
    [sdist] = work.glob(f"{name}-{version}.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    return work / f"{name}-{version}"


def counts(junit: Path) -> dict[str, int]:
    """passed, failed, errors and skipped, from pytest's JUnit XML: one per
    test case (the suite's ``tests`` also counts each subtest's report:
    uvloop's 229 tests made 272), a case with an error or a failure (a
    failed subtest's included) counting as such."""
    found = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome = ("errors" if case.find("error") is not None
                   else "failed" if case.find("failure") is not None
                   else "skipped" if case.find("skipped") is not None
                   else "passed")
        found[outcome] += 1
    return found


def pytest_run(folder: Path, label: str, args: list[str],
               env: dict[str, str] | None = None) -> dict[str, int]:
    """The peer's suite, run from its folder (with env added to the
    environment): the counts.  Its output is kept in the folder; its tail,
    less the skip reasons, is shown."""
    junit = folder / f"junit-{label}.xml"
    started = time.monotonic()
    # A test that hangs fails after PEER_TEST_TIMEOUT_S (pytest-timeout, of
    # otpvm's test extra), instead of holding CI until its own limit.
    done = run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                f"--timeout={PEER_TEST_TIMEOUT_S}", f"--junitxml={junit}", *args],
               cwd=folder, env=env)
    (folder / f"pytest-{label}.log").write_text(done.stdout + done.stderr)
    lines = [line for line in done.stdout.strip().splitlines()
             if not line.startswith("SKIPPED")]
    print("\n".join(lines[-25:]))
    print(f"{label}: {time.monotonic() - started:.0f} s")
    if not junit.exists():
        sys.exit(f"{label}: pytest did not run ({done.returncode}):\n{done.stderr[-3000:]}")
    return counts(junit)


def check_peer(name: str, spec: dict, work: Path) -> list[str]:
    """Runs one peer's suite both ways; returns what is wrong (nothing: ok)."""
    if spec.get("not_free_threaded") and sysconfig.get_config_var("Py_GIL_DISABLED"):
        print(f"{name}: not run on a free-threaded build: {spec['not_free_threaded']}")
        return []
    folder = fetch(name, spec["version"], work)
    if spec.get("test_requires"):
        got = run([sys.executable, "-m", "pip", "install", "-q", *spec["test_requires"]])
        if got.returncode:
            sys.exit(f"cannot install {name}'s test requirements: {got.stderr.strip()}")
    plugin = importlib.import_module(spec["plugin"])
    excluded = sorted(plugin.EXCLUDED)
    deselected = spec.get("deselected", {})
    args = [*(arg for test in sorted(deselected) for arg in ("--deselect", test)),
            *spec["args"]]
    env = spec.get("env")
    reference = pytest_run(folder, "reference", args, env)
    otpvm = pytest_run(folder, "otpvm", ["-p", spec["plugin"], *args], env)
    print(f"{name} {spec['version']}: reference {reference}; otpvm {otpvm}; "
          f"{len(deselected)} deselected in both runs, {len(excluded)} excluded for otpvm")
    for test in sorted(deselected):
        print(f"  deselected {test}: {deselected[test]}")
    for test in excluded:
        print(f"  excluded {test}: {plugin.EXCLUDED[test]}")
    problems = []
    if reference["failed"] or reference["errors"]:
        problems.append(f"{name}: {reference['failed']} failed and {reference['errors']} errors "
                        "as shipped (the reference): a test that cannot pass here goes in "
                        "suites.json's deselected, with why")
    if otpvm["failed"] or otpvm["errors"]:
        problems.append(f"{name}: {otpvm['failed']} failed and {otpvm['errors']} errors on otpvm")
    if otpvm["passed"] < reference["passed"] - len(excluded):
        problems.append(f"{name}: otpvm passed {otpvm['passed']}, fewer than the reference's "
                        f"{reference['passed']} less {len(excluded)} excluded")
    if sorted(spec["excluded"]) != excluded:
        problems.append(f"{name}: suites.json's exclusions differ from {spec['plugin']}'s")
    expected = (spec["reference_passed"], spec["otpvm_passed"])
    if (reference["passed"], otpvm["passed"]) != expected:
        problems.append(f"{name}: passed {reference['passed']} (reference) and "
                        f"{otpvm['passed']} (otpvm); suites.json records {expected}")
    return problems


def main() -> None:
    """Every peer of suites.json, both ways; exits non-zero on a problem."""
    work = Path(sys.argv[1]).resolve()
    work.mkdir(parents=True, exist_ok=True)
    problems = []
    for name, spec in SUITES["peers"].items():
        started = time.monotonic()
        problems += check_peer(name, spec, work / name)
        print(f"{name}: {time.monotonic() - started:.0f} s in all", flush=True)
    if problems:
        sys.exit("peer suites:\n  " + "\n  ".join(problems))
    print("peer suites: every count as recorded")


if __name__ == "__main__":
    main()
