"""Progress where stderr is not a terminal (a CI log): plain start and end lines, never silence,
and nothing with --quiet; Rich bars stay the terminal's."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.progress import Progress

from hfaudit import progress
from hfaudit.progress import LineProgress, elapsed_text, progress_bar
from helpers import FAST_SCAN_FLAGS, searches_off

ROOT = Path(__file__).resolve().parents[1]


def test_a_phase_prints_a_line_when_it_starts_and_when_it_ends(capsys) -> None:
    with LineProgress() as bar:
        task = bar.add_task("inverting trigger", total=3, info="ODE (ddim-10)")
        for _ in range(3):
            bar.update(task, advance=1)
        other = bar.add_task("sampling", total=2, info="control (no trigger)")
        bar.update(other, advance=1, info="gradient-0")
        bar.update(other, advance=1)
    lines = capsys.readouterr().err.splitlines()
    assert lines[2] == "hfaudit: sampling: control (no trigger) ..."
    # the info moved on, so the end line names the phase, not its first item
    assert re.fullmatch(r"hfaudit: sampling done in \d+\.\d s", lines[3])
    assert len(lines) == 4


def test_a_long_phase_prints_its_count_in_between(capsys) -> None:
    with LineProgress(heartbeat_s=0) as bar:
        task = bar.add_task("fine-tuning", total=3, info="")
        bar.update(task, advance=1, info="loss 0.5")
        bar.advance(task)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "hfaudit: fine-tuning ..."
    assert re.fullmatch(r"hfaudit: fine-tuning: loss 0\.5 1/3 \(\d+\.\d s\)", lines[1])
    assert re.fullmatch(r"hfaudit: fine-tuning: loss 0\.5 2/3 \(\d+\.\d s\)", lines[2])
    assert re.fullmatch(r"hfaudit: fine-tuning done in \d+\.\d s", lines[3])  # closed before its total


def test_a_phase_stopped_by_an_error_says_so(capsys) -> None:
    with pytest.raises(KeyboardInterrupt), LineProgress() as bar:
        bar.add_task("screening stamps", total=5, info="ddim-10")
        raise KeyboardInterrupt
    lines = capsys.readouterr().err.splitlines()
    assert re.fullmatch(r"hfaudit: screening stamps: ddim-10 stopped after \d+\.\d s", lines[-1])


def test_elapsed_text() -> None:
    assert elapsed_text(12.34) == "12.3 s"
    assert elapsed_text(245) == "4 min 05 s"


def test_the_mode_follows_stderr_and_quiet(monkeypatch) -> None:
    monkeypatch.delenv("HFAUDIT_QUIET", raising=False)
    monkeypatch.setenv("FORCE_COLOR", "1")  # coloured CI logs: still a log, not a terminal
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: False)
    assert isinstance(progress_bar(), LineProgress)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    bar = progress_bar()
    assert type(bar) is Progress and not bar.disable  # a terminal keeps the Rich bars
    monkeypatch.setenv("HFAUDIT_QUIET", "1")
    bar = progress_bar()
    assert type(bar) is Progress and bar.disable


def _scan(model: Path, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HFAUDIT_QUIET"}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "hfaudit", "scan", str(model), *FAST_SCAN_FLAGS,
                           *searches_off(), "--device", "cpu", *extra],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_a_scan_in_a_ci_log_is_never_silent(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """stderr piped, as in a CI log: each phase's start and end are lines."""
    run = _scan(tiny_pipeline_dir, tmp_path)
    assert run.returncode in (0, 1), run.stderr
    lines = run.stderr.splitlines()
    assert "hfaudit: scanning: control (no trigger) ..." in lines, run.stderr
    assert "hfaudit: inverting trigger: gradient ..." in lines, run.stderr
    assert any(re.fullmatch(r"hfaudit: inverting trigger: gradient done in \d+\.\d s", ln) for ln in lines), run.stderr
    assert any(re.fullmatch(r"hfaudit: scanning done in .+ s", ln) for ln in lines), run.stderr


def test_quiet_prints_no_progress(tiny_pipeline_dir: Path, monkeypatch, capsys) -> None:
    """The same scan with --quiet (in this process, stderr captured: no terminal either) prints nothing."""
    from hfaudit.action import run_scan_cli

    monkeypatch.delenv("HFAUDIT_QUIET", raising=False)
    code = run_scan_cli(["scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off(), "--device", "cpu",
                         "--quiet"])
    assert code in (0, 1)
    assert capsys.readouterr().err == ""
