"""Reports: SARIF valid against the official 2.1.0 schema and fit for GitHub, Markdown, JSON, all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from hfaudit import report
from hfaudit.cli import app
from hfaudit.detect.scores import CollapseStats
from hfaudit.errors import ExitCode, RepoNotFoundError, UnsafeCheckpointError
from hfaudit.report import Outputs, error_dict, report_dict, to_markdown, to_sarif
from hfaudit.results import BACKDOOR, BLIND_SPOTS, CLEAN, COLLAPSED, Candidate, Probe, ScanResult, SourceInfo
from hfaudit.safety import RULES, Finding

from helpers import SCHEMA, searches_off, validate_sarif

SCHEMA_SHA256 = "c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e"
FAST = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2", *searches_off()]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def make_result(verdict: str = BACKDOOR, findings: list[Finding] | None = None, repo_id: str | None = None) -> ScanResult:
    """A hand-built result: each verdict without training a model."""
    gen = torch.Generator().manual_seed(0)
    mscr = {BACKDOOR: 0.9375, CLEAN: 0.0625, COLLAPSED: 0.9375}[verdict]
    control = 0.75 if verdict == COLLAPSED else 0.0625
    samples = torch.rand(16, 1, 8, 8, generator=gen)
    cand = Candidate(name="gradient-l0.5-0", method="gradient", objective="lambda=0.5", lam=0.5, shift_ratio=0.55,
                     trigger=torch.randn(1, 8, 8, generator=gen))
    cand.probes = [Probe(cand.name, "ddpm", 50, CollapseStats(16, mscr, int(mscr * 16), 0.02, 3))]
    controls = [Probe("none", "ddpm", 50, CollapseStats(16, control, int(control * 16), 0.3, 0))]
    return ScanResult(
        source=SourceInfo(source=repo_id or "models/digits", repo_id=repo_id, revision="main" if repo_id else None,
                          commit_sha="a" * 40 if repo_id else None, pipeline_class="DDPMPipeline",
                          weights_file="unet/diffusion_pytorch_model.safetensors"),
        verdict=verdict, score=mscr, threshold=0.5, control_score=control, controls=controls, candidates=[cand],
        best_candidate=cand.name, recovered_target=samples[3], settings={"seed": 0, "device": "cpu"},
        timings={"total": 1.0}, unet_evaluations=1234,
        samples={f"{cand.name}/ddpm": samples, "none/ddpm": samples.flip(0)},
        findings=findings or [],
    )


def test_the_vendored_schema_is_the_official_one() -> None:
    assert hashlib.sha256(report.SARIF_SCHEMA_FILE.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert SCHEMA["id"].startswith("https://docs.oasis-open.org/sarif/sarif/v2.1.0/")
    jsonschema.Draft4Validator.check_schema(SCHEMA)


def test_the_validator_rejects_what_github_rejects() -> None:
    """The checks can fail: a result without a location, or with a bad level, does not pass."""
    good = json.loads(to_sarif(make_result(BACKDOOR)))
    no_location = json.loads(json.dumps(good))
    del no_location["runs"][0]["results"][0]["locations"]
    bad_level = json.loads(json.dumps(good))
    bad_level["runs"][0]["results"][0]["level"] = "fatal"
    bad_version = dict(good, version="2.0.0")
    for broken in (no_location, bad_level, bad_version):
        with pytest.raises((jsonschema.ValidationError, KeyError, ValueError, AssertionError)):
            validate_sarif(json.dumps(broken))


@pytest.mark.parametrize("verdict, expected", [
    (BACKDOOR, [("HFA001", "error")]), (COLLAPSED, [("HFA002", "warning")]), (CLEAN, []),
])
def test_sarif_results_follow_the_verdict(verdict: str, expected) -> None:
    note = Finding("HFA214", "note", "unet/x.bin: scanned clean", "unet/x.bin")
    doc = validate_sarif(to_sarif(make_result(verdict, findings=[note])))
    run = doc["runs"][0]
    got = [(r["ruleId"], r["level"]) for r in run["results"]]
    assert got == expected + [("HFA214", "note")]
    if expected:
        first = run["results"][0]
        assert first["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "unet/diffusion_pytorch_model.safetensors"
        shown = make_result(verdict).control_score if verdict == COLLAPSED else make_result(verdict).score
        assert f"{shown:.0%}" in first["message"]["text"]
    assert run["invocations"] == [{"executionSuccessful": True, "exitCode": 1 if verdict == BACKDOOR else 0}]
    assert run["properties"]["verdict"] == verdict
    assert {r["id"] for r in run["tool"]["driver"]["rules"]} == set(RULES)


def test_sarif_of_an_audit_that_stopped() -> None:
    findings = [Finding("HFA211", "error", "unet/m.bin: pickle imports builtins.exec", "unet/m.bin"),
                Finding("HFA200", "error", "vae/w.safetensors: lies", "vae/w.safetensors")]
    exc = UnsafeCheckpointError("unet/m.bin: pickle imports builtins.exec", findings=findings)
    doc = validate_sarif(to_sarif(error_dict(exc, "org/model")))
    run = doc["runs"][0]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in run["results"]] == [
        ("HFA211", "unet/m.bin"), ("HFA200", "vae/w.safetensors")]
    (inv,) = run["invocations"]
    assert inv["executionSuccessful"] is False and inv["exitCode"] == 5
    # no findings at all (repo not found): still valid, no results, the reason in the invocation
    empty = validate_sarif(to_sarif(error_dict(RepoNotFoundError("repo org/x not found"), "org/x")))
    assert empty["runs"][0]["results"] == []
    assert "org/x not found" in empty["runs"][0]["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"]


def test_sarif_pins_the_hub_commit_and_prefixes_uris() -> None:
    """A Hub model's files are relative to its commit on the Hub; a folder's to its git checkout."""
    doc = validate_sarif(to_sarif(make_result(BACKDOOR, repo_id="org/digits"), uri_prefix="models/digits/"))
    run = doc["runs"][0]
    assert run["versionControlProvenance"][0]["revisionId"] == "a" * 40
    assert run["versionControlProvenance"][0]["repositoryUri"].endswith("/org/digits")
    location = run["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert location == {"uri": "unet/diffusion_pytorch_model.safetensors", "uriBaseId": report.HF_URI_BASE_ID}
    base = run["originalUriBaseIds"][report.HF_URI_BASE_ID]["uri"]
    assert base.endswith("/org/digits/blob/" + "a" * 40 + "/")  # the repo and the commit audited
    assert run["automationDetails"]["id"] == "hfaudit/org/digits/"
    assert run["results"][0]["message"]["text"].startswith("org/digits: BACKDOOR")
    local = validate_sarif(to_sarif(make_result(BACKDOOR), uri_prefix="models/digits/"))["runs"][0]
    assert local["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"] == {
        "uri": "models/digits/unet/diffusion_pytorch_model.safetensors"}
    assert local["automationDetails"]["id"] == "hfaudit/models/digits/" and "originalUriBaseIds" not in local


def test_two_models_never_share_a_fingerprint_or_a_category(tmp_path: Path) -> None:
    """GitHub closes the alerts of a category that a new upload lacks: each model is its own analysis,
    and the same file of two models is two alerts."""
    note = [Finding("HFA214", "note", "unet/x.bin: scanned clean", "unet/x.bin")]

    def run_of(doc, prefix: str = "") -> dict:
        return validate_sarif(to_sarif(doc, uri_prefix=prefix))["runs"][0]

    runs = [run_of(make_result(BACKDOOR, findings=note, repo_id=repo)) for repo in ("org/a", "org/b", "other/a")]
    a_folder, b_folder = (tmp_path / "a", tmp_path / "b")
    a_folder.mkdir(), b_folder.mkdir()
    for folder in (a_folder, b_folder):  # two folders outside any git checkout: their names
        doc = report_dict(make_result(BACKDOOR, findings=note))
        doc["source"] = {**doc["source"], "source": str(folder)}
        runs.append(run_of(doc))
    runs.append(run_of(make_result(BACKDOOR, findings=note), "models/a"))
    ids = [r["automationDetails"]["id"] for r in runs]
    assert ids[:5] == ["hfaudit/org/a/", "hfaudit/org/b/", "hfaudit/other/a/", "hfaudit/a/", "hfaudit/b/"]
    assert len(set(ids)) == len(ids), ids
    prints = [res["partialFingerprints"]["primaryLocationLineHash"] for r in runs for res in r["results"]]
    assert len(prints) == 2 * len(runs) and len(set(prints)) == len(prints)
    again = run_of(make_result(BACKDOOR, findings=note, repo_id="org/a"))  # stable: the same alerts next time
    assert [r["partialFingerprints"] for r in again["results"]] == [r["partialFingerprints"] for r in runs[0]["results"]]
    stopped = run_of(error_dict(UnsafeCheckpointError("unet/x.bin: bad", findings=note), "org/a"))
    assert stopped["automationDetails"]["id"] == "hfaudit/org/a/"  # an audit that stopped: the same analysis


def test_sarif_of_two_hub_repos_from_real_scans(hub_env, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """The same pipeline in two Hub repos: two categories, no shared fingerprint, URIs on each commit."""
    torch.save({"a": torch.zeros(2)}, tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.bin")  # a finding
    runs = []
    for name in ("one", "two"):
        repo = hub_env.new_repo_id(name)
        hub_env.add_repo(repo, tiny_pipeline_dir)
        res = runner.invoke(app, ["scan", repo, *FAST, "-q", "--sarif", str(tmp_path / f"{name}.sarif")])
        assert res.exit_code in (0, 1), res.output
        run = validate_sarif((tmp_path / f"{name}.sarif").read_text())["runs"][0]
        assert run["automationDetails"]["id"] == f"hfaudit/{repo}/"
        sha = run["versionControlProvenance"][0]["revisionId"]
        assert run["originalUriBaseIds"][report.HF_URI_BASE_ID]["uri"].endswith(f"/{repo}/blob/{sha}/")
        assert all(r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == report.HF_URI_BASE_ID
                   for r in run["results"])
        runs.append(run)
    uris = [{r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in run["results"]} for run in runs]
    assert uris[0] == uris[1] and "unet/diffusion_pytorch_model.bin" in uris[0]  # the same files...
    prints = [{r["partialFingerprints"]["primaryLocationLineHash"] for r in run["results"]} for run in runs]
    assert prints[0] and not prints[0] & prints[1]  # ...are alerts of their own model


def test_sarif_uri_prefix_is_the_folder_inside_its_git_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "models" / "digits").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    assert report.sarif_uri_prefix(str(repo / "models" / "digits")) == "models/digits"
    assert report.sarif_uri_prefix(str(repo)) == ""
    assert report.sarif_uri_prefix("org/not-a-folder") == ""
    loose = tmp_path / "loose"
    loose.mkdir()
    assert report.sarif_uri_prefix(str(loose)) == ""  # tmp is not inside a git work tree


def test_markdown_report(tmp_path: Path) -> None:
    result = make_result(BACKDOOR, findings=[Finding("HFA214", "note", "unet/a.bin: a | b", "unet/a.bin")])
    out = tmp_path / "audit"
    Outputs(output_dir=out, markdown_path=str(tmp_path / "elsewhere" / "r.md")).write_scan(result)
    md = (out / "report.md").read_text()
    assert md.startswith("## 🔴 hfaudit: `models/digits` is **backdoor** (exit 1)")
    assert "BACKDOOR: an inverted trigger makes 94% of samples collapse" in md
    assert "| margin | +0.438 |" in md and "| control MSCR (no trigger) | 0.062 |" in md
    assert "| gradient-l0.5-0 | ddpm-50 | 0.938 | 15/16 | 0.020 |" in md
    assert "`unet/a.bin` | unet/a.bin: a \\| b |" in md  # a pipe in a message does not break the table
    for name in ("trigger.png", "recovered_target.png", "samples_triggered.png", "samples_clean.png"):
        assert f"]({name})" in md, name  # beside report.md: bare names
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    other = (tmp_path / "elsewhere" / "r.md").read_text()
    assert "](../audit/trigger.png)" in other  # links resolve from where that file is
    listed = to_markdown(report_dict(result), images="list")
    assert "![" not in listed and "`trigger.png`" in listed


def test_a_clean_verdict_says_what_it_does_not_rule_out() -> None:
    from io import StringIO

    from rich.console import Console

    for verdict in (CLEAN, BACKDOOR, COLLAPSED):
        result = make_result(verdict)
        doc = report_dict(result)
        assert doc["blind_spots"] == list(BLIND_SPOTS)  # every JSON report carries them
        md = to_markdown(doc)
        out = StringIO()
        report.render_rich(result, Console(file=out, width=400))
        for text in (md, out.getvalue()):
            shown = [spot for spot in BLIND_SPOTS if f"not ruled out: {spot}" in text]
            assert shown == (list(BLIND_SPOTS) if verdict == CLEAN else []), (verdict, text)
    err = error_dict(RepoNotFoundError("org/none: no such repo"), "org/none")
    assert "not ruled out" not in to_markdown(err)  # an audit that stopped has no verdict to qualify


def test_the_terminal_report_leads_with_the_verdict_then_the_evidence_and_the_files(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    result = make_result(BACKDOOR, findings=[Finding("HFA214", "note", "unet/a.bin: scanned clean", "unet/a.bin")])
    out = tmp_path / "audit"
    Outputs(output_dir=out, sarif_path=str(tmp_path / "r.sarif")).write_scan(result)
    for verbose in (False, True):
        buf = StringIO()
        report.render_rich(result, Console(file=buf, width=100), verbose=verbose, reports=[str(tmp_path / "r.sarif")])
        lines = buf.getvalue().splitlines()
        assert lines[0].startswith("BACKDOOR: an inverted trigger makes 94% of samples collapse onto one image")
        assert lines[1] == ("evidence: trigger gradient-l0.5-0 (gradient inversion) under ddpm-50: MSCR 0.94 vs "
                            "threshold 0.50, 0.06 without a trigger; target: one image")
        assert lines[2] == (f"pictures: trigger {out / 'trigger.png'}, target {out / 'recovered_target.png'}, "
                            f"grids {out / 'samples_triggered.png'} and {out / 'samples_clean.png'}")
        assert lines[3] == f"reports: {out / 'report.json'}, {out / 'report.md'}, {tmp_path / 'r.sarif'}"
        assert lines[4] == "note: unet/a.bin: scanned clean [HFA214]"
        assert ("shift ratio" in buf.getvalue()) is verbose  # the per-candidate table: only on request
    buf = StringIO()
    report.render_rich(make_result(CLEAN), Console(file=buf, width=100))
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("CLEAN: no inverted trigger made samples collapse")
    assert lines[1].startswith("evidence: trigger gradient-l0.5-0 (gradient inversion) under ddpm-50: MSCR 0.06 vs")
    assert "target" not in lines[1] and lines[2].startswith("pictures: none written (--output-dir")


def test_the_terminal_report_of_a_cli_scan(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Through the CLI (stderr): the verdict first, the picture paths, the candidate table only with --verbose."""
    from helpers import FAST_SCAN_FLAGS

    outs = {}
    for flags in ([], ["--verbose"], ["-v"]):
        out = tmp_path / f"audit{len(outs)}"
        res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off(), "-o", str(out),
                                  *flags])
        assert res.exit_code in (0, 1), res.output
        lines = res.stderr.splitlines()
        assert lines[0].split(":")[0] in ("CLEAN", "BACKDOOR", "INCONCLUSIVE"), res.stderr
        assert lines[1].startswith("evidence: trigger ")
        assert lines[2].startswith("pictures: ") and str(out / "trigger.png") in lines[2]
        assert str(out / "samples_clean.png") in lines[2] and str(out / "report.json") in lines[3]
        outs[tuple(flags)] = res.stderr
    assert "shift ratio" not in outs[()] and "gradient-" in outs[()]  # the best trigger named, no table
    assert "shift ratio" in outs[("--verbose",)] and "shift ratio" in outs[("-v",)]


def test_json_report_and_exit_code_agree(tmp_path: Path) -> None:
    for verdict, code in ((BACKDOOR, 1), (CLEAN, 0), (COLLAPSED, 0)):
        path = tmp_path / f"{verdict}.json"
        Outputs(json_path=str(path)).write_scan(make_result(verdict))
        doc = json.loads(path.read_text())
        assert (doc["verdict"], doc["exit_code"], doc["error"]) == (verdict, code, None)
    err = error_dict(UnsafeCheckpointError("x.bin: bad", findings=[Finding("HFA211", "error", "x.bin: bad", "x.bin")]), "m")
    assert (err["verdict"], err["exit_code"]) == ("unsafe", 5)
    assert err["findings"][0]["rule_name"] == "pickle-dangerous-global"
    assert {c: report.error_verdict(c) for c in (0, 1, 2, 3, 4, 5, 70, 130, 99)} == {
        0: "clean", 1: "backdoor", 2: "usage", 3: "not-found", 4: "unsupported", 5: "unsafe", 70: "internal",
        130: "interrupted", 99: "error"}


def test_stdout_outputs_are_plain_text(tmp_path: Path, capsys) -> None:
    Outputs(json_path="-").write_scan(make_result(CLEAN))
    assert json.loads(capsys.readouterr().out)["verdict"] == CLEAN
    one = Outputs()  # a single file into a new folder: no temp file left beside it
    one.stage(tmp_path / "sub" / "a.txt", "hello\n")
    one.commit()
    assert (tmp_path / "sub" / "a.txt").read_text() == "hello\n"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.txt"]


def test_outputs_are_all_or_nothing(tmp_path: Path, monkeypatch) -> None:
    """Interrupted while writing: staged files and new folders go, an earlier report stays as it was."""
    out = tmp_path / "new" / "audit"
    old_json = tmp_path / "report.json"
    old_json.write_text('{"old": true}')
    outputs = Outputs(output_dir=out, json_path=str(old_json), sarif_path=str(tmp_path / "r.sarif"))

    def interrupted(*args, **kwargs):
        assert any(out.iterdir())  # PNGs and reports already staged when the interrupt lands
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "to_sarif", interrupted)
    with pytest.raises(KeyboardInterrupt):
        with outputs.guard("models/digits"):
            outputs.write_scan(make_result(BACKDOOR))
    assert not (tmp_path / "new").exists()
    assert old_json.read_text() == '{"old": true}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_an_error_still_gets_its_reports(tmp_path: Path) -> None:
    outputs = Outputs(output_dir=tmp_path / "o", sarif_path=str(tmp_path / "r.sarif"))
    exc = UnsafeCheckpointError("unet/m.bin: bad pickle", findings=[Finding("HFA211", "error", "unet/m.bin: bad", "unet/m.bin")])
    with pytest.raises(UnsafeCheckpointError):
        with outputs.guard("models/x"):
            raise exc
    doc = json.loads((tmp_path / "o" / "report.json").read_text())
    assert (doc["verdict"], doc["exit_code"]) == ("unsafe", 5)
    assert "could not be audited (unsafe, exit 5)" in (tmp_path / "o" / "report.md").read_text()
    validate_sarif((tmp_path / "r.sarif").read_text())


def test_report_files_have_ordinary_permissions(tmp_path: Path) -> None:
    import os

    mask = os.umask(0o022)
    try:
        Outputs(json_path=str(tmp_path / "r.json")).write_scan(make_result(CLEAN))
    finally:
        os.umask(mask)
    assert (tmp_path / "r.json").stat().st_mode & 0o777 == 0o644


def test_sarif_from_a_real_scan(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """End to end through the CLI: the SARIF GitHub would get validates, JSON and exit code agree."""
    torch.save({"a": torch.zeros(2)}, tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.bin")
    res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST, "-q", "--sarif", str(tmp_path / "r.sarif"),
                              "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md")])
    doc = json.loads((tmp_path / "r.json").read_text())
    assert res.exit_code == doc["exit_code"] and res.exit_code in (0, 1), res.output
    sarif = validate_sarif((tmp_path / "r.sarif").read_text())
    results = sarif["runs"][0]["results"]
    assert ("HFA214", "unet/diffusion_pytorch_model.bin") in [
        (r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results]
    assert [f["rule"] for f in doc["findings"]] == ["HFA214"]
    assert f"**{doc['verdict']}**" in (tmp_path / "r.md").read_text()


def test_the_docs_list_every_rule_and_exit_code() -> None:
    """docs/github-action.md is what users read: its tables must match the code."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "github-action.md").read_text()
    for rid, rule in RULES.items():
        assert f"| {rid} | {rule.name} | {rule.level}" in text, rid
    for code in ExitCode:
        assert f"| {int(code)} | `{report.error_verdict(int(code))}`" in text, code
