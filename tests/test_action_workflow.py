"""The example workflow, run without GitHub: its steps and the composite Action's, in order, as a runner would.

``act`` would need Docker images from a registry this project cannot reach, so this file carries a
small runner of its own (:class:`Runner`): it evaluates the ``${{ }}`` expressions and ``if:``
conditions GitHub would (the subset these two files use), runs every ``run:`` step with bash and the
environment a runner sets (``GITHUB_OUTPUT``, ``GITHUB_STEP_SUMMARY``, ``RUNNER_TEMP``, ``INPUT_*``...),
and stands in for the actions used: ``actions/cache`` (restore by exact key or newest prefix, save
refused for a key that exists: caches are immutable), ``actions/upload-artifact`` (refuses a name
already uploaded in the run: artifacts are immutable) and ``upload-sarif`` (the file must exist).
``setup-python`` and ``checkout`` are no-ops (this Python, a prepared workspace) and the install
step is skipped (hfaudit is installed already; a test must not reinstall it).

Two workflow runs on a shipped example model with fast settings share one cache store: the first
scans and saves its verdict, the second restores it and is served from it, and uses the Action a
second time in the same job, which must not collide on the artifact name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import parse_github_output

ROOT = Path(__file__).resolve().parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())
WORKFLOW = yaml.safe_load((ROOT / "examples" / "github-workflow.yml").read_text())
MODEL = ROOT / "examples" / "models" / "digits-clean"
FAST = {"samples": "4", "samplers": "ddim:2", "inversion-steps": "2", "blackbox": "false", "midstep": "false",
        "ode": "false", "stamps": "false"}
SKIPPED_RUN_STEPS = {"Install hfaudit"}
"""Run steps this runner skips: the install (hfaudit is installed already; a test must not reinstall it)."""

_TOKEN = re.compile(r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<num>\d+(?:\.\d+)?)|(?P<op>==|!=|&&|\|\||<=|>=|[!<>(),])"
                    r"|(?P<id>[A-Za-z_][A-Za-z0-9_.\-]*))")
_EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


# ------------------------------------------------------------------------------- expressions
def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Expressions:
    """GitHub's expression language, the part these files use: contexts, literals, ``== != && || !``,
    ``always() success() failure() contains() startsWith() format()``."""

    def __init__(self, contexts: dict[str, Any], failed: bool = False) -> None:
        self.contexts = contexts
        self.failed = failed

    def get(self, path: str) -> Any:
        value: Any = self.contexts
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                return None
            value = value[part]
        return value

    def to_python(self, expr: str) -> str:
        out, pos, expr = [], 0, expr.strip()
        while pos < len(expr):
            m = _TOKEN.match(expr, pos)
            assert m and m.end() > pos, f"cannot read the expression {expr!r} at {expr[pos:]!r}"
            pos = m.end()
            if m["str"] is not None:
                out.append(repr(m["str"][1:-1].replace("''", "'")))
            elif m["num"] is not None:
                out.append(m["num"])
            elif m["op"] is not None:
                out.append({"&&": " and ", "||": " or ", "!": " not "}.get(m["op"], m["op"]))
            elif expr[pos:].lstrip().startswith("("):
                assert m["id"] in ("always", "success", "failure", "contains", "startsWith", "format"), m["id"]
                out.append("_" + m["id"])
            elif m["id"] in ("true", "false", "null"):
                out.append({"true": "True", "false": "False", "null": "None"}[m["id"]])
            else:
                out.append(f"_get({m['id']!r})")
        return "".join(out)

    def evaluate(self, expr: str) -> Any:
        names = {"_get": self.get, "_always": lambda: True, "_success": lambda: not self.failed,
                 "_failure": lambda: self.failed,
                 "_contains": lambda a, b: _as_text(b).lower() in _as_text(a).lower(),
                 "_startsWith": lambda a, b: _as_text(a).lower().startswith(_as_text(b).lower()),
                 "_format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: _as_text(a[int(m[1])]), f)}
        return eval(self.to_python(expr), {"__builtins__": {}}, names)  # noqa: S307 - our own files

    def text(self, value: Any) -> str:
        """A string with every ``${{ }}`` replaced by its value."""
        return _EXPR.sub(lambda m: _as_text(self.evaluate(m[1])), str(value))

    def condition(self, cond: str | None) -> bool:
        """An ``if:``: without a status function it holds only while nothing failed (``success() && ...``)."""
        if cond is None:
            return not self.failed
        cond = _EXPR.sub(lambda m: m[1], str(cond))
        if not re.search(r"\b(always|success|failure)\(", cond):
            cond = f"success() && ({cond})"
        return bool(self.evaluate(cond))


def test_the_expression_subset() -> None:
    e = Expressions({"inputs": {"a-b": "x", "empty": ""}, "steps": {"s": {"outputs": {"k": "v"}}}}, failed=True)
    assert e.text("${{ inputs.a-b }}/y-${{ steps.s.outputs.k }}") == "x/y-v"
    assert e.evaluate("inputs.empty || 'dflt'") == "dflt" and e.evaluate("inputs.a-b || 'dflt'") == "x"
    assert e.evaluate("format('p-{0}-{1}', inputs.a-b, steps.s.outputs.k)") == "p-x-v"
    assert e.condition("always() && !contains(inputs.a-b, ',')") and not e.condition("inputs.a-b == 'x'")
    assert not e.condition(None) and e.condition("failure()")


# ----------------------------------------------------------------------------------- the runner
@dataclass
class Run:
    """One workflow run: its number, and what its steps left (outputs, log, failure)."""

    run_id: int
    log: list[str] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    failed: bool = False


class Runner:
    """Runs the example workflow's job, and the composite Action inside it, on this machine."""

    def __init__(self, root: Path, store: Path) -> None:
        self.root = root
        self.store = store
        """The cache service: ``<store>/<n>/{key, data/}``, newest last."""
        store.mkdir(parents=True, exist_ok=True)

    # -- the services the actions stand for
    def _entries(self) -> list[tuple[int, str, Path]]:
        out = []
        for d in self.store.iterdir():
            out.append((int(d.name), (d / "key").read_text(), d / "data"))
        return sorted(out)

    def cache_restore(self, path: str, key: str, restore_keys: str) -> dict[str, str]:
        entries = self._entries()
        hit = next((e for e in reversed(entries) if e[1] == key), None)
        for prefix in [p.strip() for p in restore_keys.splitlines() if p.strip()] if hit is None else []:
            hit = next((e for e in reversed(entries) if e[1].startswith(prefix)), None)
            if hit:
                break
        if hit is None:
            return {"cache-hit": "false", "cache-primary-key": key, "cache-matched-key": ""}
        if hit[2].exists():
            shutil.copytree(hit[2], path, dirs_exist_ok=True)
        return {"cache-hit": str(hit[1] == key).lower(), "cache-primary-key": key, "cache-matched-key": hit[1]}

    def cache_save(self, path: str, key: str, log: list[str]) -> None:
        assert "," not in key and len(key) <= 512, key
        if any(k == key for _n, k, _d in self._entries()):
            log.append(f"cache: {key} exists already, not saved")  # immutable, as on GitHub (a warning)
            return
        n = len(list(self.store.iterdir()))
        (self.store / str(n)).mkdir()
        (self.store / str(n) / "key").write_text(key)
        inside = Path(path).resolve().is_relative_to(self.root.resolve())
        if Path(path).is_dir() and inside:  # pip's real cache stays where it is: only the key is kept
            shutil.copytree(path, self.store / str(n) / "data")
        log.append(f"cache: saved {key}")

    # -- steps
    def run_bash(self, script: str, env: dict[str, str], cwd: Path, run: Run, name: str) -> tuple[int, dict[str, str]]:
        step_dir = Path(env["RUNNER_TEMP"]) / "_steps" / f"{len(run.log)}"
        step_dir.mkdir(parents=True)
        (step_dir / "script.sh").write_text(script)
        out_file = step_dir / "output"
        out_file.write_text("")
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(step_dir / "script.sh")],
                              cwd=cwd, env={**env, "GITHUB_OUTPUT": str(out_file)}, capture_output=True,
                              text=True, timeout=600)
        run.log.append(f"## {name} (exit {proc.returncode})\n{proc.stdout}{proc.stderr}")
        return proc.returncode, parse_github_output(out_file.read_text())

    def base_env(self, run: Run, workspace: Path, temp: Path, attempt: int = 1) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items()
                if not k.startswith(("GITHUB_", "RUNNER_", "INPUT_", "HFAUDIT_", "ACTIONS_"))}
        return {**keep, "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_JOB": "audit",
                "GITHUB_RUN_ID": str(run.run_id), "GITHUB_RUN_ATTEMPT": str(attempt),
                "GITHUB_REPOSITORY": "me/digits-model", "GITHUB_WORKSPACE": str(workspace),
                "GITHUB_STEP_SUMMARY": str(temp / "summary.md"), "RUNNER_TEMP": str(temp), "RUNNER_OS": "Linux",
                "OMP_NUM_THREADS": "1",
                # hfaudit is importable from this checkout (the runner would have pip-installed it)
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def contexts(self, run: Run, workspace: Path, temp: Path) -> dict[str, Any]:
        return {"github": {"run_id": str(run.run_id), "run_attempt": "1", "job": "audit", "action_path": str(ROOT),
                           "workspace": str(workspace), "repository": "me/digits-model"},
                "runner": {"temp": str(temp), "os": "Linux"}, "strategy": {"job-index": 0, "job-total": 1},
                "secrets": {}, "env": {}, "steps": {}, "job": {}}

    def run_action(self, with_: dict[str, str], run: Run, workspace: Path, temp: Path,
                   outer: dict[str, Any]) -> tuple[bool, dict[str, str]]:
        """The composite Action: ``(failed, outputs)``."""
        inputs = {}
        for name, spec in ACTION["inputs"].items():
            default = Expressions(outer).text(spec.get("default", ""))
            inputs[name] = with_.get(name, default)
        ctx = {**outer, "inputs": inputs, "steps": {}}
        failed = False
        env0 = self.base_env(run, workspace, temp)
        for step in ACTION["runs"]["steps"]:
            e = Expressions(ctx, failed)
            if not e.condition(step.get("if")):
                continue
            outputs: dict[str, str] = {}
            ok = True
            if "run" in step:
                if step["name"] in SKIPPED_RUN_STEPS:
                    assert '"$ACTION_PATH"' in step["run"]
                    continue
                env = {**env0, **{k: e.text(v) for k, v in step.get("env", {}).items()}}
                code, outputs = self.run_bash(step["run"], env, workspace, run, step["name"])
                ok = code == 0
            else:
                args = {k: e.text(v) for k, v in step.get("with", {}).items()}
                uses = step["uses"].split("@")[0]
                if uses == "actions/setup-python":
                    pass
                elif uses == "actions/cache/restore":
                    outputs = self.cache_restore(args["path"], args["key"], args.get("restore-keys", ""))
                elif uses == "actions/cache/save":
                    self.cache_save(args["path"], args["key"], run.log)
                elif uses == "actions/upload-artifact":
                    if args["name"] in run.artifacts:  # upload-artifact@v4: a name is used once per run
                        run.log.append(f"upload-artifact: an artifact named {args['name']} exists already")
                        ok = False
                    else:
                        run.artifacts[args["name"]] = Path(args["path"])
                        outputs = {"artifact-url": f"https://example.invalid/artifacts/{len(run.artifacts)}"}
                else:
                    raise AssertionError(f"this runner does not stand in for {uses}")
            if step.get("id"):
                ctx["steps"][step["id"]] = {"outputs": outputs, "outcome": "success" if ok else "failure"}
            failed = failed or not ok
        e = Expressions(ctx, failed)
        return failed, {name: e.text(spec["value"]) for name, spec in ACTION["outputs"].items()}

    def run_job(self, run: Run, overrides: dict[str, str], uses_of_the_action: int = 1) -> dict[str, dict[str, str]]:
        """The example workflow's job on a fresh runner (new workspace and temp folder); the Action's
        outputs by use. ``uses_of_the_action`` > 1 runs the Action step again, as a second use in the job."""
        job_dir = self.root / f"run-{run.run_id}"
        workspace, temp = job_dir / "workspace", job_dir / "temp"
        shutil.copytree(MODEL, workspace)  # checkout: the model is the repository
        temp.mkdir()
        ctx = self.contexts(run, workspace, temp)
        results: dict[str, dict[str, str]] = {}
        steps = []
        for step in WORKFLOW["jobs"]["audit"]["steps"]:
            steps += [step] * (uses_of_the_action if step.get("id") == "hfaudit" else 1)
        for i, step in enumerate(steps):
            e = Expressions(ctx, run.failed)
            if not e.condition(step.get("if")):
                continue
            uses = step.get("uses", "").split("@")[0]
            if uses == "actions/checkout":
                continue
            if step.get("id") == "hfaudit":
                with_ = {k: e.text(v) for k, v in step["with"].items()}
                failed, outputs = self.run_action({**with_, **overrides}, run, workspace, temp, ctx)
                ctx["steps"]["hfaudit"] = {"outputs": outputs}
                results[f"use{len(results) + 1}"] = outputs
                run.failed = run.failed or failed
            elif uses == "github/codeql-action/upload-sarif":
                assert Path(e.text(step["with"]["sarif_file"])).is_file()
            elif "run" in step:
                env = {**self.base_env(run, workspace, temp), **{k: e.text(v) for k, v in step.get("env", {}).items()}}
                code, _ = self.run_bash(step["run"], env, workspace, run, step.get("name", f"step {i}"))
                run.failed = run.failed or code != 0
            else:
                raise AssertionError(f"this runner does not stand in for {uses}")
        return results


# ------------------------------------------------------------------------------------ the files
def _glob(pattern: str) -> re.Pattern[str]:
    """A ``paths:`` filter pattern (``**`` any folders, ``*`` within a name) as a regex."""
    rx = re.escape(pattern).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
    return re.compile(rx + r"\Z")


def test_every_input_is_used_and_every_with_is_an_input() -> None:
    text = yaml.safe_dump(ACTION["runs"]) + yaml.safe_dump(ACTION["outputs"])
    for name in ACTION["inputs"]:
        assert f"inputs.{name}" in text, f"input {name} is declared but never used"
    for name in re.findall(r"inputs\.([A-Za-z0-9_-]+)", text):
        assert name in ACTION["inputs"], f"inputs.{name} is used but not declared"
    audit = next(s for s in WORKFLOW["jobs"]["audit"]["steps"] if s.get("id") == "hfaudit")
    assert set(audit["with"]) <= set(ACTION["inputs"])


def test_the_example_runs_when_model_files_change_and_only_then() -> None:
    on = WORKFLOW[True]  # PyYAML reads the key `on` as True
    for event in ("push", "pull_request"):
        patterns = [_glob(p) for p in on[event]["paths"]]
        hit = lambda path: any(p.match(path) for p in patterns)  # noqa: E731
        for rel in (p.relative_to(MODEL).as_posix() for p in MODEL.rglob("*") if p.is_file()):
            assert hit(rel) and hit(f"models/digits/{rel}"), (event, rel)
        for path in ("models/x/unet/diffusion_pytorch_model.fp16.safetensors",
                     "unet/diffusion_pytorch_model.safetensors.index.json", "unet/diffusion_pytorch_model.bin",
                     ".gitattributes"):
            assert hit(path), (event, path)
        for path in ("README.md", "src/train.py", "docs/index.md"):
            assert not hit(path), (event, path)
    assert "workflow_dispatch" in on


# ------------------------------------------------------------------------------------ the run
@pytest.mark.usefixtures("one_thread")
def test_the_example_workflow_twice_second_run_served_from_the_verdict_cache(tmp_path: Path) -> None:
    if not (MODEL / "model_index.json").is_file():
        pytest.skip(f"{MODEL} is not there")
    runner = Runner(tmp_path, tmp_path / "cache-store")

    first = Run(run_id=100)
    out1 = runner.run_job(first, FAST)["use1"]
    log1 = "\n".join(first.log)
    assert out1["verdict"] in ("clean", "backdoor"), log1
    assert first.failed == (out1["verdict"] == "backdoor"), log1  # fail-on: backdoor
    assert out1["verdict-cache-updated"] == "true", log1
    assert "hfaudit: scanning: control (no trigger) ..." in log1  # progress lines reach the step log
    assert re.search(r"hfaudit: inverting trigger: gradient done in \d", log1), log1
    assert "cache: saved hfaudit-verdicts-Linux-.-100-1-" + out1["artifact-name"] in log1, log1
    assert list(first.artifacts) == [out1["artifact-name"]] == ["hfaudit-report-digits-model-audit"]
    assert f"hfaudit verdict: {out1['verdict']}" in log1  # the workflow's last step read the outputs

    second = Run(run_id=101)
    out2 = runner.run_job(second, FAST)["use1"]
    log2 = "\n".join(second.log)
    assert "served from the verdict cache" in log2, log2
    assert "hfaudit: sampling" not in log2  # no scan ran
    assert (out2["verdict"], out2["exit-code"], out2["score"]) == (out1["verdict"], out1["exit-code"], out1["score"])
    assert second.failed == first.failed
    assert out2["verdict-cache-updated"] == "false" and "cache: saved hfaudit-verdicts" not in log2  # nothing new
    report = json.loads(Path(out2["report-json"]).read_text())
    assert report["verdict"] == out1["verdict"] and Path(out2["output-dir"], "trigger.png").is_file()
    assert list(second.artifacts) == [out2["artifact-name"]]


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_a_second_use_in_one_job_gets_an_artifact_of_its_own(tmp_path: Path) -> None:
    """Artifacts are immutable per run: the second use's upload must not take the first one's name."""
    if not (MODEL / "model_index.json").is_file():
        pytest.skip(f"{MODEL} is not there")
    run = Run(run_id=7)  # fail-on: never, so a backdoor verdict does not skip the second use
    uses = Runner(tmp_path, tmp_path / "cache-store").run_job(run, {**FAST, "fail-on": "never"}, uses_of_the_action=2)
    log = "\n".join(run.log)
    assert not run.failed and len(uses) == 2, log
    assert sorted(run.artifacts) == ["hfaudit-report-digits-model-audit", "hfaudit-report-digits-model-audit-2"], log
    assert "served from the verdict cache" in log  # the second use found the first one's verdict
    assert uses["use1"]["verdict"] == uses["use2"]["verdict"]
