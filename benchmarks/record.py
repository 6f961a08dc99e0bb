"""Benchmark printouts written where the docs read them: ``benchmarks/results/<name>.md``.

Every benchmark script runs its ``main()`` inside :func:`recording`: what it prints still goes to
the terminal, and, when it finishes, the same text is written to its results file under a header
naming the exact command, the commit (``+dirty`` when the work tree had changes), the machine and
the date. The docs link these files instead of pasting tables by hand, so a figure in the docs is
always the last printout of its command. ``HFAUDIT_BENCH_RECORD=0`` runs without writing.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


class _Tee(io.TextIOBase):
    """Writes to the terminal and keeps a copy."""

    def __init__(self, stream: io.TextIOBase) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def commit() -> str:
    """The short commit of the work tree, ``+dirty`` when it has uncommitted changes; ``unknown`` outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--short", "HEAD")
        return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """CPU cores, platform and torch build: what a reader needs to compare timings."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()}), {gpu}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


def header(name: str, argv: list[str]) -> str:
    """The Markdown header of a results file."""
    script = Path(argv[0]).resolve() if argv else RESULTS.parent / f"{name}.py"
    shown = script.relative_to(ROOT).as_posix() if script.is_relative_to(ROOT) else f"benchmarks/{name}.py"
    command = "python " + shlex.join([shown, *argv[1:]])
    return (f"# {name}\n\nCommand: `{command}`\n\nCommit: `{commit()}`. Machine: {machine()}. "
            f"Date: {datetime.date.today().isoformat()}.\n\nWritten by the command itself "
            "(`benchmarks/record.py`); the next run replaces it.\n")


@contextlib.contextmanager
def recording(name: str, argv: list[str] | None = None) -> Iterator[None]:
    """Run the body with stdout copied; on success write ``results/<name>.md`` (header + printout)."""
    argv = list(sys.argv if argv is None else argv)
    if os.environ.get("HFAUDIT_BENCH_RECORD", "1") == "0":
        yield
        return
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        yield
    RESULTS.mkdir(exist_ok=True)
    text = header(name, argv) + "\n```\n" + tee.copy.getvalue().rstrip("\n") + "\n```\n"
    out = RESULTS / f"{name}.md"
    out.write_text(text)
    print(f"(written to {out})", file=sys.stderr)


def cached_result(path: "os.PathLike[str] | str", key: list) -> dict | None:
    """The JSON result a benchmark cached at ``path``, or None when it is missing or was cached under
    another ``key`` (a member's recipe hash and the method's result version)."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc if doc.get("key") == key else None


def run_jobs(work, todo: list, jobs: int, on_result) -> None:
    """``on_result(*work(item))`` for every item of ``todo``: in ``jobs`` spawned processes (results in
    the order they finish) when ``jobs > 1``, else one after the other. ``work`` must be a module-level
    function (it is pickled)."""
    if jobs > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(jobs) as pool:
            for out in pool.imap_unordered(work, todo):
                on_result(*out)
    else:
        for item in todo:
            on_result(*work(item))
