"""Runs the README's shell commands verbatim, as a reader would.

    python .ci/readme_commands.py [README.md]

Run it from the root of a fresh clone, with the virtual environment to use
first on PATH (CI does).  The convention, which README.md follows:

* Every line of every ```sh block is a command: the runner gives it, exactly
  as written, to ``bash -c`` in the current folder, one after the other, and
  each must exit 0.  Blank lines and lines that start with ``#`` are skipped;
  a trailing ``# comment`` is bash's business (it ignores it).  Commands not
  meant to be run by CI belong in another kind of block (```console, ```text).
* A command whose trailing comment says ``Ctrl-C`` runs until it is stopped
  (a node, a server).  Its output must be shown in the README in the plain
  ``` block that comes next (after the ```sh block, only blank lines between):
  the transcript.  The runner starts the command, waits until every line of
  the transcript before the one that starts with ``^C`` has been printed,
  sends SIGINT (Ctrl-C), and then requires exit status 0 and every line after
  ``^C`` (less that ``^C``).  In a transcript line ``...`` stands for any text;
  the rest must appear as written, in some line of stdout or stderr.

Every command's output goes through to this script's stdout as it comes.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

COMMAND_TIMEOUT = 1800      # seconds any one command may take (pip builds, the test suite)
READY_TIMEOUT = 120         # seconds a long-running command has to print its transcript
STOP_TIMEOUT = 60           # seconds it has to stop cleanly after SIGINT
INTERRUPT = "^C"

Block = tuple[str, int, list[str]]     # a fenced block: info string, first body line, body


@dataclass
class Command:
    """One command line of a ```sh block, and for a long-running one its transcript."""

    line: str
    lineno: int
    long_running: bool = False
    before: list[str] = field(default_factory=list)     # transcript lines before ^C
    after: list[str] = field(default_factory=list)      # transcript lines after ^C


def fences(lines: list[str]) -> list[Block]:
    """The README's fenced blocks: (info string, index of the first body line, body)."""
    blocks, i = [], 0
    while i < len(lines):
        match = re.match(r"^(`{3,})\s*(\S*)", lines[i])
        if not match:
            i += 1
            continue
        fence, info, start = match.group(1), match.group(2), i + 1
        i += 1
        while i < len(lines) and not lines[i].startswith(fence):
            i += 1
        blocks.append((info, start, lines[start:i]))
        i += 1
    return blocks


def commands(readme: Path) -> list[Command]:
    """The command lines of every ```sh block, with the transcripts of long-running ones."""
    lines = readme.read_text().splitlines()
    blocks = fences(lines)
    found = []
    for index, (info, start, body) in enumerate(blocks):
        if info != "sh":
            continue
        for offset, text in enumerate(body):
            if not text.strip() or text.lstrip().startswith("#"):
                continue
            command = Command(text.strip(), start + offset + 1)
            comment = text.split(" #", 1)[1] if " #" in text else ""
            if "Ctrl-C" in comment:
                command.long_running = True
                command.before, command.after = transcript(lines, blocks, index, command)
            found.append(command)
    return found


def transcript(lines: list[str], blocks: list[Block], index: int,
               command: Command) -> tuple[list[str], list[str]]:
    """The transcript of a long-running command: the plain block right after its block,
    split at the line where Ctrl-C is pressed."""
    _, start, body = blocks[index]
    closing = start + len(body)         # the index of the block's closing fence
    following = blocks[index + 1] if index + 1 < len(blocks) else None
    between = lines[closing + 1:following[1] - 1] if following else []
    if following is None or following[0] != "" or any(s.strip() for s in between):
        fail(f"README line {command.lineno}: {command.line!r} runs until Ctrl-C, so the "
             "README must show its output in a plain ``` block right after its ```sh block")
    shown = [s for s in following[2] if s.strip()]
    marks = [i for i, s in enumerate(shown) if s.startswith(INTERRUPT)]
    if len(marks) != 1:
        fail(f"README line {command.lineno}: the transcript of {command.line!r} needs "
             f"exactly one line starting with {INTERRUPT!r} (where Ctrl-C is pressed)")
    cut = marks[0]
    after = [shown[cut][len(INTERRUPT):].strip(), *shown[cut + 1:]]
    return shown[:cut], [s for s in after if s]


def pattern(shown: str) -> re.Pattern[str]:
    """A transcript line as a regular expression: ``...`` matches any text."""
    return re.compile(".*".join(re.escape(part) for part in shown.strip().split("...")))


def fail(message: str) -> NoReturn:
    """Stops the run with the reason on stderr."""
    print(f"readme_commands: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


class Running:
    """A command whose combined output is echoed and kept, read on a thread."""

    def __init__(self, line: str) -> None:
        self.proc = subprocess.Popen(
            ["bash", "-c", line], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, text=True, bufsize=1, start_new_session=True)
        self.output: list[str] = []
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for text in self.proc.stdout:
            sys.stdout.write(text)
            sys.stdout.flush()
            self.lines.put(text.rstrip("\n"))
        self.lines.put(None)

    def next_line(self, deadline: float) -> str | None:
        """The next line of output; None at its end or at the deadline."""
        try:
            text = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            return None
        if text is None:
            self.lines.put(None)                # the end stays visible to later reads
            return None
        self.output.append(text)
        return text

    def wait_for(self, shown: list[str], timeout: float) -> list[str]:
        """Reads output until each transcript line has matched a line of it; returns
        those still missing when the output ends or the timeout passes."""
        missing = {s: pattern(s) for s in shown}
        for seen in self.output:
            missing = {s: p for s, p in missing.items() if not p.search(seen)}
        deadline = time.monotonic() + timeout
        while missing and (text := self.next_line(deadline)) is not None:
            missing = {s: p for s, p in missing.items() if not p.search(text)}
        return list(missing)

    def drain(self, timeout: float) -> None:
        """Reads the rest of the output (the process has ended)."""
        deadline = time.monotonic() + timeout
        while self.next_line(deadline) is not None:
            pass

    def kill(self) -> None:
        """Ends the command's whole process group (it was started in a session of its own)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def run(command: Command) -> None:
    """Runs one command; fails the run if it does not behave as the README says."""
    print(f"\n$ {command.line}", flush=True)
    started = time.monotonic()
    running = Running(command.line)
    try:
        if command.long_running:
            stop_after_transcript(running, command)
        else:
            try:
                code = running.proc.wait(timeout=COMMAND_TIMEOUT)
            except subprocess.TimeoutExpired:
                fail(f"{command.line!r} did not finish within {COMMAND_TIMEOUT} s")
            running.drain(STOP_TIMEOUT)
            if code != 0:
                fail(f"README line {command.lineno}: {command.line!r} exited with status {code}")
    finally:
        running.kill()
    print(f"readme_commands: ok in {time.monotonic() - started:.0f} s: {command.line}", flush=True)


def stop_after_transcript(running: Running, command: Command) -> None:
    """Waits for the transcript's lines before ^C, sends SIGINT, checks the stop."""
    missing = running.wait_for(command.before, READY_TIMEOUT)
    if missing:
        fail(f"README line {command.lineno}: {command.line!r} did not print, within "
             f"{READY_TIMEOUT} s, the README's lines {missing!r}")
    if running.proc.poll() is not None:
        fail(f"{command.line!r} ended (status {running.proc.returncode}) before Ctrl-C")
    # bash -c runs a lone command with exec, so the signal reaches the command itself;
    # the whole group gets it, as from a terminal's Ctrl-C.
    os.killpg(running.proc.pid, signal.SIGINT)
    try:
        code = running.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"{command.line!r} did not stop within {STOP_TIMEOUT} s of SIGINT")
    missing = running.wait_for(command.after, STOP_TIMEOUT)
    if code != 0:
        fail(f"{command.line!r} exited with status {code} after SIGINT, not 0")
    if missing:
        fail(f"README line {command.lineno}: after SIGINT {command.line!r} did not print "
             f"the README's lines {missing!r}")


def main(argv: list[str]) -> int:
    """Runs every command of the README (default: ./README.md) in order."""
    readme = Path(argv[0] if argv else "README.md")
    found = commands(readme)
    if not found:
        fail(f"no command found in the ```sh blocks of {readme}")
    print(f"readme_commands: {len(found)} commands from {readme}:", flush=True)
    for command in found:
        until = "   (until Ctrl-C)" if command.long_running else ""
        print(f"  {shlex.quote(command.line)}{until}")
    for command in found:
        run(command)
    print(f"readme_commands: all {len(found)} README commands behaved as the README says")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
