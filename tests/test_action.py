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
from helpers import UNET_BIN, WriteMarker

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
    """Parse ``$GITHUB_OUTPUT`` the way the runner does (``k=v`` and ``k<<DELIM`` blocks)."""
    lines = Path(path).read_text().splitlines()
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        if "<<" in lines[i] and "=" not in lines[i].split("<<")[0]:
            name, delim = lines[i].split("<<", 1)
            end = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, _, value = lines[i].partition("=")
            out[name] = value
            i += 1
    return out


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
    assert defaults.blackbox and defaults.ode and defaults.stamps and not defaults.allow_pickle


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
                                    "INPUT_BLACKBOX": "true", "INPUT_MIDSTEP": "FALSE", "INPUT_STAMPS": "false"})
    assert inputs.scan_args() == ["scan", "org/name", "--output-dir", "hfaudit-report", "--revision", "v1",
                                  "--samples", "8", "--sampler", "ddim:10", "--sampler", "ddpm:50", "--no-midstep", "--no-ode",
                                  "--no-stamps", "--allow-pickle"]
    assert inputs.fail_on == "warning" and inputs.sarif == ""
    default = ActionInputs.from_env({})
    assert default.scan_args() == ["scan", ".", "--output-dir", "hfaudit-report", "--sarif", "hfaudit.sarif"]


@pytest.mark.parametrize("env, needle", [
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
