"""How long a hot upgrade takes, and how long processes are held.

Usage::

    python benchmarks/upgrade.py [--sizes 1000 10000 100000] [--runs 3] [--json FILE]

For each N it starts N idle gen_servers of release 1.0 and installs 1.1
(whose code_change changes the state's shape), once in each mode:

* strict: suspend all, switch, code_change all, resume.  ``window`` is how
  long the processes were suspended: every one of them, for the whole of it,
  since they are suspended together and resumed together;
* lazy: a dry run of code_change on a copy of each state, the switch, then
  each process migrates at its next message.  No process is suspended:
  ``window`` is 0, each pays its own code_change at its next message.

Prints a Markdown table (the median of ``--runs``, with the spread).
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import otpvm
from otpvm import code, gen_server, release

SERVER = '''
from otpvm.gen_server import GenServer, Ok, Reply

__vsn__ = "{vsn}"


class Server(GenServer):
    def init(self, n):
        return Ok({state})

    def handle_call(self, request, from_, state):
        return Reply(state, state)

    def code_change(self, old_vsn, state, extra):
        return {{"n": state, "since": old_vsn}}
'''


def make_release(root: Path, pkg: str, vsn: str, state: str) -> Path:
    """A release tree with one module, ``servers``."""
    tree = root / vsn / pkg
    tree.mkdir(parents=True)
    (tree / "__init__.py").write_text("")
    (tree / "servers.py").write_text(textwrap.dedent(SERVER.format(vsn=vsn, state=state)))
    return root / vsn


def one_run(n: int, mode: str) -> dict[str, float]:
    """Starts n servers of a fresh package and installs 1.1 over 1.0."""
    root = Path(tempfile.mkdtemp(prefix="otpvm-upgrade-bench-"))
    pkg = f"bench_{uuid.uuid4().hex[:8]}"
    make_release(root, pkg, "1.0", "n")
    make_release(root, pkg, "1.1", "{'n': n, 'since': None}")
    sys.path.insert(0, str(root / "1.0"))
    code.manage(pkg)
    servers = importlib.import_module(f"{pkg}.servers")

    async def main() -> dict[str, float]:
        pids = [await gen_server.start(servers.Server, i) for i in range(n)]
        started = time.perf_counter()
        report = await release.install(root / "1.0", root / "1.1", "1.1", mode=mode)
        installed = time.perf_counter() - started
        first = time.perf_counter()
        for pid in pids:                        # each one's next message (lazy: migrates)
            await gen_server.call(pid, "get")
        calls = time.perf_counter() - first
        assert await gen_server.call(pids[-1], "get") == {"n": n - 1, "since": "1.0"}
        return {"install_s": installed, "window_ms": report.suspended_ms,
                "next_call_us": calls / n * 1e6}

    try:
        return otpvm.run(main)
    finally:
        sys.path.remove(str(root / "1.0"))


def main(argv: list[str] | None = None) -> int:
    """Runs the sizes and prints the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    rows: list[dict[str, Any]] = []
    print("| processes | mode | install (s) | suspended window (ms) | next call (µs/process) |")
    print("|---:|---|---:|---:|---:|")
    for n in args.sizes:
        for mode in ("strict", "lazy"):
            runs = [one_run(n, mode) for _ in range(args.runs)]
            row: dict[str, Any] = {"processes": n, "mode": mode}
            for key in ("install_s", "window_ms", "next_call_us"):
                values = [r[key] for r in runs]
                row[key] = statistics.median(values)
                row[key + "_spread"] = (min(values), max(values))
            rows.append(row)
            print(f"| {n:,} | {mode} | {row['install_s']:.3f} "
                  f"({row['install_s_spread'][0]:.3f}–{row['install_s_spread'][1]:.3f}) "
                  f"| {row['window_ms']:.1f} | {row['next_call_us']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
