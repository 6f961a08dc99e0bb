"""The hostile-input matrix (``tests/hostile_cases.py``): every case gives its documented exit code
and one line, never a traceback, never a clean verdict from broken evidence, leaves the model folder
byte-for-byte as it was, writes only valid JSON, and ends within a time (and, in a child process,
a memory) bound.

Count the cases by exit code with ``python -m pytest tests/test_hostile_inputs.py -q -rA`` or
``python tests/test_hostile_inputs.py`` (prints the table the README quotes).
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hfaudit.cli import _quiet_library_logs, app
from hostile_cases import BASES, CASES, Case
from test_hub_hostile import SERVERS, TIMEOUT_S, _serve

WALL_S = 60.0
"""No case may take longer (most are refused in well under a second)."""
CHILD_RSS = 2 * 2**30
"""Peak resident memory of a case run in a child process (the console script, torch loaded)."""
CHILD_ADDRESS_SPACE = 12 * 2**30
"""Address-space limit of the child: an attempt at a multi-gigabyte allocation fails instead of swapping."""

_quiet_library_logs()  # as the console script does before any command
pytestmark = pytest.mark.usefixtures("one_thread")


def snapshot(root: Path) -> dict[str, tuple]:
    """What is at ``root``, without opening anything that is not a regular file (FIFOs block)."""
    entries = [root, *sorted(root.rglob("*"))] if root.is_dir() else [root]
    out: dict[str, tuple] = {}
    for p in entries:
        rel = p.relative_to(root).as_posix() if p != root else "."
        mode = os.lstat(p).st_mode
        if stat.S_ISLNK(mode):
            out[rel] = ("link", os.readlink(p))
        elif stat.S_ISREG(mode):
            out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
        elif stat.S_ISDIR(mode):
            out[rel] = ("dir",)
        else:
            out[rel] = ("special", stat.S_IFMT(mode))
    return out


def strict_json(text: str) -> object:
    """Parse JSON as the standard defines it: no NaN or Infinity tokens."""
    def reject(token: str) -> None:
        raise ValueError(f"{token} is not JSON")
    return json.loads(text, parse_constant=reject)


def run_in_child(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str, float, int]:
    """The console script in a child process under ``CHILD_ADDRESS_SPACE``: ``(exit code, stdout,
    stderr, seconds, peak RSS bytes)``; killed at ``WALL_S`` (then the code is -9)."""
    env = {**os.environ, "HFAUDIT_QUIET": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    out, err = cwd / "child.out", cwd / "child.err"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (CHILD_ADDRESS_SPACE, CHILD_ADDRESS_SPACE))

    t0 = time.monotonic()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen([sys.executable, "-c", "from hfaudit.cli import main; main()", *args],
                                stdin=subprocess.DEVNULL, stdout=fo, stderr=fe, env=env, cwd=cwd,
                                preexec_fn=limit)
        timer = threading.Timer(WALL_S, proc.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    return (proc.returncode, out.read_text(), err.read_text(), time.monotonic() - t0, usage.ru_maxrss * 1024)


def run_case(case: Case, tmp: Path) -> dict:
    """Build the case in ``tmp``, run it, check the contract common to every case; returns what ran."""
    model = tmp / "model"
    shutil.copytree(BASES[case.base], model)
    scratch = tmp / "scratch"
    scratch.mkdir()
    args = case.build(model, scratch)
    before = snapshot(model) if model.exists() else {}
    if case.hub is not None:
        with _serve(SERVERS[case.hub]) as url:
            code, out, err, seconds, rss = run_in_child(args, scratch, {
                "HF_ENDPOINT": url, "HF_HUB_ETAG_TIMEOUT": str(TIMEOUT_S), "HF_HUB_DOWNLOAD_TIMEOUT": str(TIMEOUT_S),
                "HF_HOME": str(tmp / "hf"), "HF_HUB_CACHE": str(tmp / "hf" / "hub"), "HF_TOKEN": ""})
    elif case.child:
        code, out, err, seconds, rss = run_in_child(args, scratch)
    else:
        t0 = time.monotonic()
        res = CliRunner().invoke(app, args)
        code, out, err, seconds = res.exit_code, res.stdout, res.stderr, time.monotonic() - t0
        assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert seconds < WALL_S, f"{case.id}: {seconds:.0f} s"
    if case.child:
        assert rss < CHILD_RSS, f"{case.id}: peak RSS {rss / 2**20:.0f} MiB"
    expected = case.code if isinstance(case.code, tuple) else (case.code,)
    assert code in expected, (case.id, code, err)
    assert "Traceback" not in out + err, err
    if code >= 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hfaudit: error:"), err
        assert case.needle.lower() in lines[0].lower(), (case.id, lines[0])
        assert out == "", out
    assert (snapshot(model) if model.exists() else {}) == before, f"{case.id}: the model folder changed"
    if case.check is not None:
        case.check(scratch, out)
    report = scratch / "report.json"
    if report.exists():
        doc = strict_json(report.read_text())
        assert doc["exit_code"] == code, doc
    return {"id": case.id, "code": code, "seconds": round(seconds, 2)}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input(case: Case, tmp_path: Path) -> None:
    run_case(case, tmp_path)


def test_the_matrix_covers_the_issue_and_more() -> None:
    """Every case the issue listed, plus at least 20 of our own; ids unique."""
    assert len({c.id for c in CASES}) == len(CASES)
    issue = [c for c in CASES if c.issue]
    assert len(issue) >= 25 and len(CASES) - len(issue) >= 20


if __name__ == "__main__":  # the README's count: cases by exit code, recorded in benchmarks/results/
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: benchmarks.record
    from benchmarks.record import recording

    counts: Counter[str] = Counter()
    with recording("hostile_inputs"):
        for case in CASES:
            with tempfile.TemporaryDirectory() as d:
                code = run_case(case, Path(d))["code"]
                counts["scanned (not refused), exit 0 or 1" if isinstance(case.code, tuple) else f"exit {code}"] += 1
        print(f"{len(CASES)} cases ({sum(c.issue for c in CASES)} from the issue, "
              f"{sum(not c.issue for c in CASES)} of our own):")
        for what, n in sorted(counts.items()):
            print(f"  {what}: {n}")
