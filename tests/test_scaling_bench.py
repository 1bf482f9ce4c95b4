"""benchmarks/scaling.py runs end to end: a quick run at 1 and 2 schedulers.

Nothing is timed: only that every measurement ran (otpvm, and the BEAM where
erl is installed), that the tables have their rows and that the JSON holds
every run.
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCALING = REPO / "benchmarks" / "scaling.py"
WORKLOADS = ("pairs", "ring", "skynet", "calls", "cpu")
HAS_BEAM = shutil.which("erl") is not None and shutil.which("erlc") is not None


def scaling(*args, cwd):
    return subprocess.run(
        [sys.executable, str(SCALING), *args],
        capture_output=True, text=True, timeout=100, cwd=cwd, check=False,
    )


@pytest.mark.timeout(110)
def test_quick_run_at_1_and_2_schedulers(tmp_path):
    out = tmp_path / "scaling.json"
    proc = scaling("--quick", "--schedulers", "1,2", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("otpvm ")
    assert ("Erlang/OTP" in lines[0]) == HAS_BEAM
    assert "schedulers 1, 2" in lines[1]
    rows = [line for line in lines if re.match(r"\| \d+ \|", line)]
    assert [row.split("|")[1].strip() for row in rows] == ["1", "2"] * len(WORKLOADS)
    titles = [line.split(":")[0] for line in lines if re.match(r"[a-z]+: ", line)]
    assert titles == list(WORKLOADS)
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        assert len(cells) == 5
        assert cells[1] != "-" and cells[2].endswith("x")          # otpvm and its speedup
        assert (cells[3] != "-") == HAS_BEAM

    data = json.loads(out.read_text())
    assert data["quick"] is True and data["repeat"] == 1
    assert list(data["results"]) == list(WORKLOADS)
    for name in WORKLOADS:
        per_runtime = data["results"][name]
        assert [len(per_runtime["otpvm"][s]) for s in ("1", "2")] == [1, 1]
        assert [len(per_runtime["beam"][s]) for s in ("1", "2")] == ([1, 1] if HAS_BEAM else [0, 0])

    # --from measures nothing: one table of the saved runs, a column pair per run.
    proc = scaling("--from", str(out), "--from", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    columns = ["otpvm", "otpvm", "BEAM"] if HAS_BEAM else ["otpvm", "otpvm"]
    assert [c.split()[0] for c in lines[0].strip("|").split("|")[3::2]] == columns
    rows = [line.strip("|").split("|") for line in lines[2:]]
    assert [(r[0].strip(), r[2].strip()) for r in rows] == [
        (name, s) for name in WORKLOADS for s in ("1", "2")
    ]
    assert all(r[3] == r[5] for r in rows)          # the same run twice


def test_bad_scheduler_counts_are_refused(tmp_path):
    proc = scaling("--schedulers", "1,two", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--schedulers takes counts separated by commas (e.g. 1,2,8), got '1,two'" in proc.stderr
    proc = scaling("--schedulers", "0,2", cwd=tmp_path)
    assert proc.returncode == 2
    assert "scheduler counts must be 1 or more, got '0,2'" in proc.stderr
