"""The GitHub Action: ``action.yml`` is well-formed and safe, and its script (``python -m hfaudit.action``)
writes the step summary, the outputs and the exit code the ``fail-on`` policy asks for."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from hfaudit import action
from hfaudit.action import INPUTS, OUTPUTS, ActionInputs, decide_exit, env_name
from hfaudit.errors import ExitCode, UsageError
from helpers import UNET_BIN, WriteMarker, parse_github_output

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
FAST = {"INPUT_SAMPLES": "4", "INPUT_SAMPLERS": "ddim:2", "INPUT_INVERSION_STEPS": "2",
        **{f"INPUT_{name.upper()}": "false" for name in ("blackbox", "midstep", "ode", "stamps")}}


pytestmark = pytest.mark.usefixtures("one_thread")



def github_files(tmp_path: Path) -> dict[str, str]:
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    summary.write_text("")
    outputs.write_text("")
    return {"GITHUB_STEP_SUMMARY": str(summary), "GITHUB_OUTPUT": str(outputs)}


def read_outputs(path: str | Path) -> dict[str, str]:
    """Parse the ``$GITHUB_OUTPUT`` file at ``path`` the way the runner does."""
    return parse_github_output(Path(path).read_text())


# ------------------------------------------------------------------------------- action.yml
def _steps() -> list[dict]:
    return ACTION["runs"]["steps"]


def test_action_yml_is_a_composite_action_with_bash_steps() -> None:
    assert ACTION["runs"]["using"] == "composite"
    run_steps = [s for s in _steps() if "run" in s]
    assert run_steps and all(s.get("shell") == "bash" for s in run_steps)
    for step in run_steps:
        # Inputs reach scripts only through env: an expression inside `run` could inject shell.
        assert "${{" not in step["run"], step["name"]


def test_the_scan_step_runs_the_tested_script_with_every_input() -> None:
    (scan,) = [s for s in _steps() if s.get("id") == "scan"]
    assert scan["run"].strip() == "python -m hfaudit.action"
    env = scan["env"]
    for name in INPUTS:
        assert name in ACTION["inputs"], name
        assert env[env_name(name)] == f"${{{{ inputs.{name} }}}}", name
    assert {k for k in env if k.startswith("INPUT_")} == {env_name(n) for n in INPUTS}
    assert "inputs.hf-token" in env["HF_TOKEN"] and "env.HF_TOKEN" in env["HF_TOKEN"]
    # defaults in action.yml agree with the script's own defaults
    defaults = ActionInputs.from_env({env_name(n): ACTION["inputs"][n].get("default", "") for n in INPUTS})
    assert defaults.model == "." and defaults.fail_on == "backdoor" and defaults.sarif == "hfaudit.sarif"
    assert defaults.output_dir == ActionInputs().output_dir
    assert defaults.blackbox is defaults.ode is defaults.stamps is None and not defaults.allow_pickle  # the budget decides
    assert defaults.budget == ""
    assert defaults.artifact_name == "" and defaults.verdict_cache == "${{ runner.temp }}/hfaudit-verdicts"
    assert defaults.hf_cache == "${{ runner.temp }}/hfaudit-hf-hub"
    # the matrix leg reaches the script (a composite step's env may read the strategy context)
    assert env["HFAUDIT_JOB_INDEX"] == "${{ strategy.job-index }}"
    assert env["HFAUDIT_JOB_TOTAL"] == "${{ strategy.job-total }}"


def _step(name_part: str) -> dict:
    (step,) = [s for s in _steps() if name_part in s.get("name", "")]
    return step


def test_the_artifact_is_uploaded_under_the_name_the_script_chose() -> None:
    upload = _step("Upload the report folder")
    assert upload["with"]["name"] == "${{ steps.scan.outputs.artifact-name }}"
    assert "steps.scan.outputs.artifact-name" in _step("Link the figures")["env"]["ARTIFACT_NAME"]


def test_caches_restore_by_prefix_and_save_under_a_key_of_their_own() -> None:
    pip_restore, pip_save = _step("Restore pip's downloads"), _step("Save pip's downloads")
    assert pip_restore["uses"].startswith("actions/cache/restore@") and pip_save["uses"].startswith("actions/cache/save@")
    assert pip_restore["if"].startswith("inputs.pip-cache == 'true'") and pip_restore["with"]["key"] == pip_save["with"]["key"]
    locate = _step("Locate pip's cache")
    assert "pip cache dir" in locate["run"] and "pyproject.toml" in locate["run"]
    order = [s.get("name") for s in _steps()]
    # saved right after the install: a later failing step (a backdoor) must not cost the next run its cache
    assert order.index("Restore pip's downloads") < order.index("Install hfaudit") < order.index("Save pip's downloads")
    assert order.index("Save pip's downloads") < order.index("Scan")

    restore, save = _step("Restore the verdict cache"), _step("Save the verdict cache")
    assert restore["uses"].startswith("actions/cache/restore@") and save["uses"].startswith("actions/cache/save@")
    assert restore["with"]["path"] == save["with"]["path"] == "${{ inputs.verdict-cache }}"
    prefix = restore["with"]["restore-keys"]
    assert prefix.endswith("-") and save["with"]["key"].startswith(prefix) and restore["with"]["key"].startswith(prefix)
    for unique in ("github.run_id", "github.run_attempt", "steps.scan.outputs.artifact-name"):
        assert unique in save["with"]["key"], unique  # caches are immutable: each save needs a new key
    assert "steps.scan.outputs.verdict-cache-updated == 'true'" in save["if"] and save["if"].startswith("always()")

    hf_restore, hf_save = _step("Restore the Hub download cache"), _step("Save the Hub download cache")
    assert hf_restore["with"]["path"] == hf_save["with"]["path"] == "${{ inputs.hf-cache }}"
    assert hf_save["with"]["key"].startswith(hf_restore["with"]["restore-keys"])
    assert "steps.scan.outputs.hub-commit" in hf_save["with"]["key"]
    scan = order.index("Scan")
    assert order.index("Restore the Hub download cache") < scan < order.index("Save the Hub download cache")
    assert order.index("Restore the verdict cache") < scan < order.index("Save the verdict cache")


def test_every_input_is_used() -> None:
    text = yaml.safe_dump(ACTION["runs"])
    for name in ACTION["inputs"]:
        assert f"inputs.{name}" in text, name


def test_action_outputs_are_what_the_script_writes() -> None:
    assert tuple(ACTION["outputs"]) == OUTPUTS
    for name, spec in ACTION["outputs"].items():
        assert spec["value"] == f"${{{{ steps.scan.outputs.{name} }}}}"


def test_action_yml_documents_the_token_and_code_scanning() -> None:
    text = (ROOT / "action.yml").read_text()
    assert "HF_TOKEN" in text and "secrets.HF_TOKEN" in text
    assert "github/codeql-action/upload-sarif" in text and "security-events: write" in text


def test_example_workflow_uploads_sarif_and_passes_the_token() -> None:
    wf = yaml.safe_load((ROOT / "examples" / "github-workflow.yml").read_text())
    assert wf["permissions"]["security-events"] == "write"
    steps = wf["jobs"]["audit"]["steps"]
    audit = next(s for s in steps if s.get("id") == "hfaudit")
    assert set(audit["with"]) <= set(ACTION["inputs"])
    assert audit["with"]["hf-token"] == "${{ secrets.HF_TOKEN }}"
    upload = next(s for s in steps if "upload-sarif" in s.get("uses", ""))
    assert upload["if"].startswith("always()")  # findings are uploaded when the audit fails the job


def test_ci_workflow_installs_the_cpu_torch_wheel_then_runs_the_tests() -> None:
    ci = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    runs = [s.get("run", "") for s in ci["jobs"]["tests"]["steps"]]
    torch_step = next(i for i, r in enumerate(runs) if "torch==" in r)
    assert "torch==2.13.0" in runs[torch_step] and "download.pytorch.org/whl/cpu" in runs[torch_step]
    install = next(i for i, r in enumerate(runs) if 'pip install -e ".[dev]"' in r)
    tests = next(i for i, r in enumerate(runs) if "pytest" in r)
    assert torch_step < install < tests
    assert any(s.get("uses") == "./" for s in ci["jobs"]["action"]["steps"])  # the Action itself, in CI


@pytest.mark.parametrize("path, schema", [
    ("action.yml", "vendor.github-actions"),
    (".github/workflows/ci.yml", "vendor.github-workflows"),
    ("examples/github-workflow.yml", "vendor.github-workflows"),
])
def test_yaml_files_match_githubs_schemas(path: str, schema: str) -> None:
    """SchemaStore's schemas for action metadata and workflows, as vendored by check-jsonschema (offline)."""
    pytest.importorskip("check_jsonschema")
    run = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(ROOT / path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------------------------ inputs
def test_inputs_from_env() -> None:
    inputs = ActionInputs.from_env({"INPUT_MODEL": "org/name", "INPUT_SAMPLERS": "ddim:10, ddpm:50",
                                    "INPUT_FAIL_ON": "Warning", "INPUT_ALLOW_PICKLE": "true", "INPUT_SARIF": "",
                                    "INPUT_REVISION": "v1", "INPUT_SAMPLES": "8", "INPUT_ODE": "False",
                                    "INPUT_BLACKBOX": "true", "INPUT_MIDSTEP": "FALSE", "INPUT_STAMPS": "false",
                                    "INPUT_BUDGET": "thorough", "INPUT_BASE": "org/base"})
    assert inputs.scan_args() == ["scan", "org/name", "--output-dir", "hfaudit-report", "--revision", "v1",
                                  "--budget", "thorough", "--samples", "8", "--base", "org/base", "--sampler",
                                  "ddim:10", "--sampler",
                                  "ddpm:50", "--blackbox", "--no-midstep", "--no-ode", "--no-stamps", "--allow-pickle"]
    assert inputs.fail_on == "warning" and inputs.sarif == ""
    default = ActionInputs.from_env({})
    assert default.scan_args() == ["scan", ".", "--output-dir", "hfaudit-report", "--sarif", "hfaudit.sarif"]


def test_artifact_names_are_unique_in_a_run(tmp_path: Path) -> None:
    gh = {"GITHUB_JOB": "audit", "GITHUB_REPOSITORY": "me/my-model", "RUNNER_TEMP": str(tmp_path)}
    name = action.artifact_name
    assert name(ActionInputs.from_env({}), gh) == "hfaudit-report-my-model-audit"
    # a second use in the same job, then a second model
    assert name(ActionInputs.from_env({}), gh) == "hfaudit-report-my-model-audit-2"
    assert name(ActionInputs.from_env({"INPUT_MODEL": "org/Name v2"}), gh) == "hfaudit-report-org-Name-v2-audit"
    # matrix legs and re-runs (each leg and attempt has a RUNNER_TEMP of its own)
    leg = {**gh, "HFAUDIT_JOB_INDEX": "2", "HFAUDIT_JOB_TOTAL": "3", "RUNNER_TEMP": str(tmp_path / "leg")}
    assert name(ActionInputs.from_env({}), leg) == "hfaudit-report-my-model-audit-3of3"
    rerun = {**gh, "GITHUB_RUN_ATTEMPT": "2", "HFAUDIT_JOB_INDEX": "0", "HFAUDIT_JOB_TOTAL": "1",
             "RUNNER_TEMP": str(tmp_path / "rerun")}
    assert name(ActionInputs.from_env({}), rerun) == "hfaudit-report-my-model-audit-attempt2"
    assert name(ActionInputs.from_env({"INPUT_MODEL": "../..//"}), {}) == "hfaudit-report-model"
    # a name given is used as given
    assert name(ActionInputs.from_env({"INPUT_ARTIFACT_NAME": "audit-a"}), gh) == "audit-a"


def test_the_verdict_cache_input_becomes_the_flag() -> None:
    inputs = ActionInputs.from_env({"INPUT_VERDICT_CACHE": "/runner/tmp/verdicts"})
    assert inputs.scan_args()[-2:] == ["--verdict-cache", "/runner/tmp/verdicts"]
    assert "--verdict-cache" not in ActionInputs.from_env({"INPUT_VERDICT_CACHE": ""}).scan_args()


@pytest.mark.parametrize("env, needle", [
    ({"INPUT_ARTIFACT_NAME": "a/b"}, "artifact-name may not hold '/'"),
    ({"INPUT_FAIL_ON": "sometimes"}, "fail-on must be one of backdoor, warning, never"),
    ({"INPUT_ALLOW_PICKLE": "yes"}, "allow-pickle must be true or false"),
    ({"INPUT_ODE": "off"}, "ode must be true or false"),
    ({"INPUT_STAMPS": "maybe"}, "stamps must be true or false"),
    ({"INPUT_BLACKBOX": "0"}, "blackbox must be true or false"),
    ({"INPUT_MIDSTEP": "no"}, "midstep must be true or false"),
])
def test_bad_inputs(env, needle: str) -> None:
    with pytest.raises(UsageError, match=re.escape(needle)):
        ActionInputs.from_env(env)


@pytest.mark.parametrize("code, verdict, findings, fail_on, expected", [
    (0, "clean", [], "backdoor", 0),
    (1, "backdoor", [], "backdoor", 1),
    (1, "backdoor", [], "warning", 1),
    (1, "backdoor", [], "never", 0),
    (5, "unsafe", [], "backdoor", 5),
    (5, "unsafe", [], "never", 0),
    (0, "collapsed", [], "backdoor", 0),
    (0, "collapsed", [], "warning", 1),
    (0, "clean", ["note"], "warning", 0),
    (0, "clean", ["warning"], "warning", 1),
    (0, "clean", ["warning"], "backdoor", 0),
    (2, "usage", [], "never", 2),
    (3, "not-found", [], "never", 3),
    (4, "unsupported", [], "never", 4),
    (7, "inconclusive", [], "never", 7),
    (70, "internal", [], "never", 70),
    (130, "interrupted", [], "never", 130),
])
def test_fail_on_policy(code, verdict, findings, fail_on, expected) -> None:
    doc = {"verdict": verdict, "findings": [{"level": lvl} for lvl in findings]}
    assert decide_exit(code, doc, fail_on) == expected


# ------------------------------------------------------------------------------- the script
def test_the_action_script_end_to_end(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Exactly what action.yml runs, in a fresh process, on a model folder inside a git checkout."""
    workspace = tmp_path / "workspace"
    model = workspace / "models" / "tiny"
    shutil.copytree(tiny_pipeline_dir, model)
    torch.save(load_file(str(model / "unet" / "diffusion_pytorch_model.safetensors")), model / UNET_BIN)
    subprocess.run(["git", "init", "-q", str(workspace)], check=True)
    before = {p: p.read_bytes() for p in model.rglob("*") if p.is_file()}
    gh = github_files(tmp_path)
    env = {**os.environ, **gh, **FAST, "INPUT_MODEL": "models/tiny", "INPUT_FAIL_ON": "warning",
           "INPUT_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "HFAUDIT_QUIET": "1"}
    run = subprocess.run([sys.executable, "-m", "hfaudit.action"], cwd=workspace, env=env, capture_output=True,
                         text=True, timeout=300)

    doc = json.loads((workspace / "hfaudit-report" / "report.json").read_text())
    assert run.returncode == decide_exit(doc["exit_code"], doc, "warning"), run.stdout + run.stderr
    assert doc["verdict"] in ("clean", "backdoor", "collapsed")
    outputs = read_outputs(gh["GITHUB_OUTPUT"])
    assert tuple(outputs) == OUTPUTS
    assert outputs["verdict"] == doc["verdict"] and outputs["exit-code"] == str(doc["exit_code"])
    assert float(outputs["score"]) == pytest.approx(doc["score"], abs=1e-4)
    assert outputs["report-json"] == "hfaudit-report/report.json" and outputs["sarif"] == "hfaudit.sarif"
    summary = Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    assert summary.startswith("## ") and f"`models/tiny` is **{doc['verdict']}** (exit {doc['exit_code']})" in summary
    assert "`trigger.png`" in summary and "![" not in summary  # names, not broken image links
    assert "HFA214" in summary
    sarif = json.loads((workspace / "hfaudit.sarif").read_text())
    uris = [r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in sarif["runs"][0]["results"]]
    assert "models/tiny/" + UNET_BIN in uris  # relative to the checkout root, where GitHub resolves it
    assert run.stdout.startswith("hfaudit scan models/tiny --output-dir hfaudit-report --sarif hfaudit.sarif")
    assert {p: p.read_bytes() for p in model.rglob("*") if p.is_file()} == before


def test_the_default_outputs_go_to_the_runner_temp_folder_not_into_the_model(tiny_pipeline_dir: Path,
                                                                             tmp_path: Path) -> None:
    """With ``model: .`` the workspace is the model: the default reports land under RUNNER_TEMP, the
    model's files stay as they were, and a user-given path inside the model is refused (exit 2)."""
    workspace, temp = tmp_path / "workspace", tmp_path / "runner-temp"
    shutil.copytree(tiny_pipeline_dir, workspace)
    temp.mkdir()
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    gh = github_files(tmp_path)
    env = {**os.environ, **gh, **FAST, "RUNNER_TEMP": str(temp), "INPUT_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
           "HFAUDIT_QUIET": "1"}
    run = subprocess.run([sys.executable, "-m", "hfaudit.action"], cwd=workspace, env=env, capture_output=True,
                         text=True, timeout=300)
    outputs = read_outputs(gh["GITHUB_OUTPUT"])
    assert run.returncode in (0, 1), run.stdout + run.stderr
    assert outputs["sarif"] == str(temp / "hfaudit" / "hfaudit.sarif") and Path(outputs["sarif"]).is_file()
    assert (temp / "hfaudit" / "hfaudit-report" / "report.json").is_file()
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before
    inside = subprocess.run([sys.executable, "-m", "hfaudit.action"], cwd=workspace, capture_output=True, text=True,
                            env={**env, "INPUT_SARIF": "audit.sarif"}, timeout=300)
    assert inside.returncode == ExitCode.USAGE, inside.stdout + inside.stderr
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("fail_on, expected", [("backdoor", ExitCode.UNSAFE), ("never", 0)])
def test_an_unsafe_model_fails_the_step_unless_never(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch,
                                                     capsys, fail_on: str, expected: int) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": WriteMarker(marker)}, tiny_pipeline_dir / UNET_BIN)
    monkeypatch.chdir(tmp_path)
    gh = github_files(tmp_path)
    code = action.main({**gh, "INPUT_MODEL": str(tiny_pipeline_dir), "INPUT_FAIL_ON": fail_on})
    assert code == expected
    outputs = read_outputs(gh["GITHUB_OUTPUT"])
    assert (outputs["verdict"], outputs["exit-code"], outputs["score"]) == ("unsafe", "5", "")
    summary = Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    assert "could not be audited (unsafe, exit 5)" in summary and "HFA211" in summary
    stdout = capsys.readouterr().out
    assert f"::error title=hfaudit::{UNET_BIN}: pickle imports __builtin__.exec" in stdout
    sarif = json.loads(Path(outputs["sarif"]).read_text())
    assert sarif["runs"][0]["results"][0]["ruleId"] == "HFA211"
    assert not marker.exists()


def test_a_missing_model_fails_even_with_never(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    gh = github_files(tmp_path)
    code = action.main({**gh, "INPUT_MODEL": "./no-such-model", "INPUT_FAIL_ON": "never"})
    assert code == ExitCode.NOT_FOUND
    outputs = read_outputs(gh["GITHUB_OUTPUT"])
    assert (outputs["verdict"], outputs["exit-code"]) == ("not-found", "3")
    assert "no such folder" in Path(gh["GITHUB_STEP_SUMMARY"]).read_text()


def test_a_second_run_is_served_from_the_verdict_cache(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Two runs of the script with one verdict cache: the first stores (the cache is saved), the second
    is served from it (nothing to save), with the same outputs; the artifact names differ."""
    from hfaudit import verdict_cache

    scans = []
    real = verdict_cache.scan_resolved
    monkeypatch.setattr(verdict_cache, "scan_resolved", lambda *a, **k: scans.append(1) or real(*a, **k))
    monkeypatch.chdir(tmp_path)
    runs = []
    for i in range(2):
        (tmp_path / f"run{i}").mkdir()
        gh = github_files(tmp_path / f"run{i}")
        env = {**gh, **FAST, "INPUT_MODEL": str(tiny_pipeline_dir), "INPUT_DEVICE": "cpu", "GITHUB_JOB": "audit",
               "INPUT_VERDICT_CACHE": str(tmp_path / "verdicts"), "RUNNER_TEMP": str(tmp_path / "temp")}
        code = action.main(env)
        runs.append((code, read_outputs(gh["GITHUB_OUTPUT"])))
    (code1, first), (code2, second) = runs
    assert scans == [1] and code1 == code2
    assert first["verdict-cache-updated"] == "true" and second["verdict-cache-updated"] == "false"
    for name in ("verdict", "score", "exit-code"):
        assert first[name] == second[name], name
    assert first["artifact-name"].startswith("hfaudit-report-") and first["artifact-name"].endswith("tiny-ddpm-audit")
    assert second["artifact-name"] == first["artifact-name"] + "-2"
    assert first["hub-commit"] == "" and Path(second["report-json"]).is_file()


def test_a_stale_report_is_not_taken_for_this_run(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """The scan stops on a flag that does not parse: an old report.json must not speak for it."""
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / "hfaudit-report" / "report.json"
    stale.parent.mkdir()
    stale.write_text(json.dumps({"verdict": "clean", "exit_code": 0, "score": 0.1, "findings": []}))
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    gh = github_files(tmp_path)
    code = action.main({**gh, "INPUT_MODEL": str(tiny_pipeline_dir), "INPUT_SAMPLES": "many"})
    assert code == ExitCode.USAGE
    assert read_outputs(gh["GITHUB_OUTPUT"])["verdict"] == "usage"
    assert "did not run (exit 2, usage)" in Path(gh["GITHUB_STEP_SUMMARY"]).read_text()


def test_a_bad_input_is_reported_without_scanning(tmp_path: Path, capsys) -> None:
    gh = github_files(tmp_path)
    assert action.main({**gh, "INPUT_FAIL_ON": "always"}) == ExitCode.USAGE
    assert "fail-on must be one of" in Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    assert read_outputs(gh["GITHUB_OUTPUT"])["verdict"] == "usage"
    assert "::error title=hfaudit::input fail-on" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name, verdict", [("digits-baddiffusion", "backdoor"), ("digits-clean", "clean")])
def test_the_action_on_the_shipped_models(tmp_path: Path, name: str, verdict: str) -> None:
    """The Action's script with its default budget on the shipped example models."""
    model = ROOT / "examples" / "models" / name
    if not (model / "model_index.json").is_file():
        pytest.skip(f"{model} is not there (train it with examples/train_models.py)")
    gh = github_files(tmp_path)
    env = {**os.environ, **gh, "INPUT_MODEL": str(model), "INPUT_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
           "HFAUDIT_QUIET": "1"}
    run = subprocess.run([sys.executable, "-m", "hfaudit.action"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=3600)
    outputs = read_outputs(gh["GITHUB_OUTPUT"])
    assert outputs["verdict"] == verdict, run.stdout + run.stderr
    assert run.returncode == (1 if verdict == "backdoor" else 0)
    summary = Path(gh["GITHUB_STEP_SUMMARY"]).read_text()
    assert f"is **{verdict}**" in summary
    if verdict == "backdoor":
        assert "::error title=hfaudit::BACKDOOR" in run.stdout
        sarif = json.loads((tmp_path / outputs["sarif"]).read_text())
        assert sarif["runs"][0]["results"][0]["ruleId"] == "HFA001"
