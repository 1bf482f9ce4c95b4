"""The otpvm command line: ``python -m otpvm demo``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Dispatches to a subcommand."""
    argv = sys.argv[1:] if argv is None else argv
    commands = {"demo": "the VM demo: a ring of 100,000 processes and a few crashes"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print("usage: python -m otpvm COMMAND [options]\n\ncommands:")
        for name, text in commands.items():
            print(f"  {name:8} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    from otpvm.demos import ring

    return ring.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
