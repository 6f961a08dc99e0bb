"""One envelope for every JSON report (scan, clean, error), checked against the schema the package ships."""

from __future__ import annotations

import fnmatch
import re
from io import StringIO
from pathlib import Path

import jsonschema
import pytest
from rich.console import Console
from typer.testing import CliRunner

from hfaudit import __version__, report
from hfaudit.cli import app
from hfaudit.errors import ExitCode, RepoNotFoundError, UnsafeCheckpointError
from hfaudit.report import Outputs, error_dict, report_dict, stable, to_json
from hfaudit.results import BACKDOOR, CLEAN, COLLAPSED, SCHEMA_VERSION
from hfaudit.safety import Finding

from helpers import FAST_SCAN_FLAGS, REPORT_SCHEMA, searches_off, validate_report
from test_report import make_result

ROOT = Path(__file__).resolve().parents[1]
ENVELOPE = ("schema_version", "kind", "command", "created_at", "tool", "hfaudit_version", "exit_code", "verdict",
            "source", "error")
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_schema_is_draft_2020_12_and_ships_in_the_package() -> None:
    jsonschema.Draft202012Validator.check_schema(REPORT_SCHEMA)
    assert REPORT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert REPORT_SCHEMA["properties"]["schema_version"]["pattern"] == "^2\\.[0-9]+$"
    assert SCHEMA_VERSION.startswith("2.")
    section = (ROOT / "pyproject.toml").read_text().split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    data = re.findall(r'"([^"]+)"', section)  # the package's data globs (no tomllib on Python 3.10)
    rel = report.REPORT_SCHEMA_FILE.relative_to(ROOT / "hfaudit").as_posix()
    assert any(fnmatch.fnmatch(rel, pattern) for pattern in data), (rel, data)


@pytest.mark.parametrize("verdict, code", [(BACKDOOR, 1), (CLEAN, 0), (COLLAPSED, 0)])
def test_a_scan_report_has_the_envelope(verdict: str, code: int) -> None:
    doc = validate_report(report_dict(make_result(verdict, repo_id="org/m")))
    assert list(doc)[:len(ENVELOPE)] == list(ENVELOPE)  # the envelope first, whatever the kind
    assert (doc["schema_version"], doc["kind"], doc["command"], doc["tool"]) == (SCHEMA_VERSION, "scan", "scan", "hfaudit")
    assert (doc["verdict"], doc["exit_code"], doc["error"], doc["hfaudit_version"]) == (verdict, code, None, __version__)
    assert doc["source"]["repo_id"] == "org/m" and doc["source"]["commit_sha"] == "a" * 40
    assert doc["created_at"].endswith("Z")
    for key in ("score", "threshold", "margin", "candidates", "controls", "best_candidate", "artifacts", "findings"):
        assert key in doc, key  # what the GitHub Action and earlier readers read: still at the top


def test_an_error_report_has_the_same_envelope() -> None:
    exc = UnsafeCheckpointError("unet/m.bin: bad", findings=[Finding("HFA211", "error", "unet/m.bin: bad", "unet/m.bin")])
    doc = validate_report(error_dict(exc, "org/m", "v1"))
    assert list(doc)[:len(ENVELOPE)] == list(ENVELOPE)
    assert (doc["kind"], doc["command"], doc["verdict"], doc["exit_code"]) == ("error", "scan", "unsafe", 5)
    assert doc["error"] == {"type": "UnsafeCheckpointError", "message": "unet/m.bin: bad"}
    assert doc["source"]["source"] == "org/m" and doc["source"]["revision"] == "v1"
    assert doc["findings"][0]["rule"] == "HFA211"


def test_the_schema_rejects_what_a_reader_could_not_read() -> None:
    good = validate_report(report_dict(make_result(BACKDOOR)))
    err = validate_report(error_dict(RepoNotFoundError("org/x: no such repo"), "org/x"))
    broken = [
        {k: v for k, v in good.items() if k != "schema_version"},
        {**good, "schema_version": "3.0"},
        {**good, "kind": "audit"},
        {**good, "created_at": "2000-01-01 00:00"},
        {**good, "error": {"type": "X", "message": "y"}},  # a finished scan has no error
        {**good, "verdict": "not-found"},
        {k: v for k, v in good.items() if k != "candidates"},
        {**err, "error": None},
        {**err, "kind": "scan"},  # an error report is not a scan report
    ]
    for doc in broken:
        with pytest.raises(jsonschema.ValidationError):
            validate_report(doc)


def test_reports_of_one_audit_differ_only_in_when(monkeypatch: pytest.MonkeyPatch) -> None:
    result = make_result(BACKDOOR)
    a, b = report_dict(result), report_dict(result)
    b["created_at"] = "2000-01-01T00:00:00Z"  # another run, another time
    assert a != b and stable(a) == stable(b)
    assert "created_at" not in stable(a) and "timings_s" not in stable(a)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")  # the reproducible-builds convention fixes the time
    assert report_dict(result)["created_at"] == "1970-01-01T00:00:00Z"
    assert to_json(report_dict(result)) == to_json(report_dict(result))


def test_reports_written_by_the_cli_validate(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off(), "-q",
                              "-o", str(tmp_path / "o"), "--json", str(tmp_path / "r.json")])
    assert res.exit_code in (0, 1), res.output
    for path in (tmp_path / "o" / "report.json", tmp_path / "r.json"):
        doc = validate_report(path.read_text())
        assert (doc["kind"], doc["exit_code"]) == ("scan", res.exit_code)
        assert doc["artifacts"]["trigger"] == str(tmp_path / "o" / "trigger.png")
    res = runner.invoke(app, ["scan", str(tmp_path / "missing"), "-o", str(tmp_path / "e")])
    assert res.exit_code == ExitCode.NOT_FOUND
    doc = validate_report((tmp_path / "e" / "report.json").read_text())
    assert (doc["kind"], doc["verdict"], doc["exit_code"]) == ("error", "not-found", 3)


def test_a_clean_report_has_the_envelope(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """A real repair of the tiny pipeline, its scans scripted (test_clean's stand-in)."""
    from hfaudit.cleaning import REPORT_NAME, clean

    from test_clean import FAST, FAST_SCAN, box_trigger, make_scan_result

    verdicts = [BACKDOOR, CLEAN, CLEAN]
    monkeypatch.setattr("hfaudit.cleaning.detect", lambda model, config=None, carried=(): make_scan_result(
        model.source.source, verdicts.pop(0), box_trigger(), repo_id=model.source.repo_id))
    out = tmp_path / "cleaned"
    result = clean(str(tiny_pipeline_dir), output_dir=out, config=FAST, scan_config=FAST_SCAN, device="cpu")
    on_disk = validate_report((out / REPORT_NAME).read_text())
    report.write_clean_reports(result, json_path=str(tmp_path / "c.json"))
    doc = validate_report((tmp_path / "c.json").read_text())
    for d in (on_disk, doc):
        assert list(d)[:len(ENVELOPE)] == list(ENVELOPE)
        assert (d["kind"], d["command"], d["verdict"], d["status"], d["exit_code"]) == (
            "clean", "clean", "cleaned", "cleaned", 0)
        assert d["scan"]["verdict"] == BACKDOOR and "schema_version" not in d["scan"]  # bodies nest bare
    buf = StringIO()
    report.render_clean_rich(result, Console(file=buf, width=100), reports=[str(tmp_path / "c.json")])
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("CLEANED: ")
    (pics,) = [line for line in lines if line.startswith("pictures: ")]
    assert str(out / "trigger.png") in pics and str(out / "target.png") in pics
    (reps,) = [line for line in lines if line.startswith("reports: ")]
    assert reps == f"reports: {out / REPORT_NAME}, {out / 'README.md'}, {tmp_path / 'c.json'}"
    nothing = clean(str(tiny_pipeline_dir), output_dir=tmp_path / "none", config=FAST, scan_config=FAST_SCAN,
                    device="cpu")
    d = validate_report(nothing.to_dict())
    assert (d["verdict"], d["exit_code"]) == ("nothing-to-remove", 0)


def test_outputs_write_the_envelope_on_an_error(tmp_path: Path) -> None:
    outputs = Outputs(json_path=str(tmp_path / "r.json"))
    with pytest.raises(RepoNotFoundError):
        with outputs.guard("org/none"):
            raise RepoNotFoundError("org/none: no such repo")
    doc = validate_report((tmp_path / "r.json").read_text())
    assert (doc["kind"], doc["verdict"], doc["source"]["source"]) == ("error", "not-found", "org/none")
