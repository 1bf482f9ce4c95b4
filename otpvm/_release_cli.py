"""``otpvm upgrade``, ``otpvm releases``, ``otpvm make-permanent`` and
``otpvm call``: the client side of a node's control socket (otpvm.control)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from otpvm import control

PROG = "otpvm"


def main(command: str, argv: list[str]) -> int:
    """Runs one release command; exit status 0 on success, 1 when the node
    refused or rolled back, 2 for bad usage."""
    args = _parser(command).parse_args(argv)
    payload: dict[str, Any]
    if command == "upgrade":
        payload = {"op": "install", "mode": args.mode, "permanent": args.permanent,
                   "suspend_timeout": args.suspend_timeout,
                   "code_change_timeout": args.code_change_timeout}
        if "/" in args.release or args.release in (".", ".."):
            payload["dir"] = args.release
        else:
            payload["vsn"] = args.release
    elif command == "releases":
        payload = {"op": "releases"}
    elif command == "call":
        try:
            payload = {"op": "call", "dest": args.dest, "request": json.loads(args.request)}
        except ValueError as exc:
            print(f"{PROG} call: REQUEST is not JSON: {exc}", file=sys.stderr)
            return 2
    else:
        payload = {"op": "make_permanent", "vsn": args.vsn}
    try:
        answer = control.request(args.sock, payload, wait=args.wait)
    except OSError as exc:
        print(f"{PROG} {command}: cannot reach the node at {args.sock}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(describe(command, answer))
    return 0 if answer.get("ok") else 1


def _parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"{PROG} {command}")
    p.add_argument("sock", help="the node's control socket (otpvm run ... --control SOCK)")
    if command == "upgrade":
        p.add_argument("release", help="a release folder (its name is its version), or the "
                       "version of one already in the node's release directory")
        p.add_argument("--mode", choices=("auto", "strict", "lazy"), default="auto",
                       help="strict: suspend, change_code, resume, all or nothing; lazy: "
                       "dry run, then each process migrates at its next message "
                       "(default auto: strict up to 500 processes)")
        p.add_argument("--permanent", action="store_true",
                       help="also make it the release the node boots next time")
        p.add_argument("--suspend-timeout", type=float, default=5.0, metavar="S")
        p.add_argument("--code-change-timeout", type=float, default=5.0, metavar="S")
    elif command == "make-permanent":
        p.add_argument("vsn", help="the running release's version")
    elif command == "call":
        p.add_argument("dest", help="a registered gen_server")
        p.add_argument("request", help="the request, as JSON (arrays become tuples)")
    p.add_argument("--wait", type=float, default=0.0, metavar="S",
                   help="keep trying for S seconds while the node is not listening yet")
    p.add_argument("--json", action="store_true", help="print the node's answer as JSON")
    return p


def describe(command: str, answer: dict[str, Any]) -> str:
    """The node's answer, for people."""
    if not answer.get("ok"):
        lines = [f"{PROG} {command}: failed: {answer.get('error')}"]
        report = answer.get("report")
        if report and report.get("rolled_back"):
            lines.append(f"  rolled back: every process is on {report['from_vsn']} again, "
                         "with its old state, and resumed")
        elif report:
            lines.append("  nothing was changed")
        return "\n".join(lines)
    if command == "upgrade":
        r = answer["report"]
        lines = [f"upgraded {r['from_vsn']} -> {r['to_vsn']} in {r['install_s'] * 1e3:.1f} ms "
                 f"({r['mode']}): {r['processes']} process(es) switched"
                 + (f", suspended {r['suspended_ms']:.1f} ms" if r["mode"] == "strict" else "")]
        lines += [f"  {name}: {old} -> {new}" for name, (old, new) in r["modules"].items()]
        if r["cannot_switch"]:
            left = ", ".join(r["cannot_switch"])
            lines.append(f"  left on old code (coroutine processes): {left}")
        return "\n".join(lines)
    if command == "call":
        return str(answer["value"])
    if command == "releases":
        lines = [f"running {answer['current']}"]
        lines += [f"  {vsn:12} {status}" for vsn, status in answer["releases"].items()]
        lines += [f"  module {name} {vsn}" for name, vsn in answer["modules"].items()]
        return "\n".join(lines)
    return "\n".join(f"  {vsn:12} {status}" for vsn, status in answer["releases"].items())
