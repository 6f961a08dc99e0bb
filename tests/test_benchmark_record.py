"""benchmarks/record.py: a benchmark's printout lands in benchmarks/results/<name>.md with its command,
commit and machine, and still reaches the terminal."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import record


def test_recording_writes_the_printout_under_a_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    monkeypatch.delenv("HFAUDIT_BENCH_RECORD", raising=False)
    with record.recording("demo", ["benchmarks/demo.py", "--jobs", "2"]):
        print("line one")
        print("score=0.500")
    assert "score=0.500" in capsys.readouterr().out  # the terminal still gets it
    text = (tmp_path / "demo.md").read_text()
    assert text.startswith("# demo\n") and "Command: `python benchmarks/demo.py --jobs 2`" in text
    assert f"Commit: `{record.commit()}`" in text and "torch threads" in text
    assert text.rstrip().endswith("line one\nscore=0.500\n```")


def test_a_failed_run_or_a_disabled_recording_writes_nothing(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(record, "RESULTS", tmp_path)
    with pytest.raises(RuntimeError), record.recording("broken", ["x"]):
        print("half")
        raise RuntimeError("benchmark failed")
    monkeypatch.setenv("HFAUDIT_BENCH_RECORD", "0")
    with record.recording("off", ["x"]):
        print("not kept")
    assert list(tmp_path.iterdir()) == []
