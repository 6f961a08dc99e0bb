"""The GitHub Action's script: ``python -m hfaudit.action``, run by ``action.yml``.

Kept in Python (not in the YAML) so the tests run exactly what the Action runs. It reads the
Action's inputs from ``INPUT_*`` environment variables (``action.yml`` maps each input through
``env:``, never into the script text, so an input cannot inject shell), runs ``hfaudit scan``
in-process with the same flags a person would type, then:

- writes the step outputs (verdict, score, exit code, report paths, the artifact name, whether the
  verdict cache gained an entry, the Hub commit audited) to ``$GITHUB_OUTPUT``;
- appends the Markdown report to ``$GITHUB_STEP_SUMMARY``;
- prints a workflow annotation for a backdoor, an unsafe checkpoint or a warning;
- exits according to ``fail-on`` (see :func:`decide_exit`).

The scan's progress lines (``hfaudit.progress``: a CI log is no terminal) go to stderr, straight
into the step log. With the ``hf-cache`` input set, ``HF_HUB_CACHE`` points at that folder (the one
``action.yml`` restores and saves with actions/cache) before huggingface_hub is imported.

Outside GitHub (no ``GITHUB_OUTPUT``/``GITHUB_STEP_SUMMARY``) the same script still runs and
exits; it just has nowhere to write outputs and summary.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hfaudit.errors import ExitCode, UsageError

FAIL_ON = ("backdoor", "warning", "never")
DID_NOT_RUN = frozenset({ExitCode.USAGE, ExitCode.NOT_FOUND, ExitCode.UNSUPPORTED, ExitCode.INCONCLUSIVE,
                         ExitCode.INTERNAL, ExitCode.INTERRUPTED})
"""Exit codes that mean no verdict was reached: the step fails with them whatever ``fail-on`` says."""
INPUTS = ("model", "revision", "fail-on", "sarif", "output-dir", "device", "budget", "samples", "inversion-steps",
          "samplers", "threshold", "seed", "blackbox", "midstep", "ode", "stamps", "base", "allow-pickle",
          "artifact-name", "verdict-cache", "hf-cache")
"""The Action inputs this script reads, as named in ``action.yml`` (env ``INPUT_FAIL_ON`` for ``fail-on``)."""
OUTPUTS = ("verdict", "score", "exit-code", "report-json", "report-markdown", "sarif", "output-dir",
           "artifact-name", "verdict-cache-updated", "hub-commit")
"""The step outputs this script writes to ``$GITHUB_OUTPUT``; ``action.yml`` exposes each."""
ARTIFACT_NAME_FORBIDDEN = set('":<>|*?\\/\r\n')
"""Characters actions/upload-artifact refuses in an artifact name."""
MAX_ARTIFACT_SLUG = 60
"""The model's part of a default artifact name keeps at most this many characters, from the end (the model's own name)."""


def _flag(raw: Mapping[str, str], name: str, default: bool | None) -> bool:
    """A true/false input (empty: ``default``).

    Raises:
        UsageError: any other value.
    """
    value = raw[name].lower() or str(default).lower()
    if value not in ("true", "false"):
        raise UsageError(f"input {name} must be true or false (got {raw[name]!r})")
    return value == "true"


def env_name(input_name: str) -> str:
    """The environment variable ``action.yml`` maps an input to: ``fail-on`` -> ``INPUT_FAIL_ON``."""
    return "INPUT_" + input_name.upper().replace("-", "_")


DEFAULT_SARIF = "hfaudit.sarif"
DEFAULT_OUTPUT_DIR = "hfaudit-report"
"""The defaults of the ``sarif`` and ``output-dir`` inputs: under ``RUNNER_TEMP`` on a runner."""


@dataclass
class ActionInputs:
    """The Action's inputs; numbers stay strings so ``hfaudit scan`` validates them (one place)."""

    model: str = "."
    revision: str = ""
    fail_on: str = "backdoor"
    sarif: str = DEFAULT_SARIF
    output_dir: str = DEFAULT_OUTPUT_DIR
    device: str = ""
    samples: str = ""
    inversion_steps: str = ""
    samplers: list[str] = field(default_factory=list)
    threshold: str = ""
    seed: str = ""
    budget: str = ""
    """``--budget`` (empty: hfaudit's default)."""
    blackbox: bool | None = None
    """Each search: True runs it, False skips it, None leaves it to the budget."""
    midstep: bool | None = None
    ode: bool | None = None
    stamps: bool | None = None
    allow_pickle: bool = False
    base: str = ""
    """The base model to compare with (``--base``); empty: hfaudit's default (``auto``)."""
    artifact_name: str = ""
    """The name given (empty: :func:`artifact_name` makes one unique in the run)."""
    verdict_cache: str = ""
    """The verdict cache folder (``--verdict-cache``); empty: none."""
    hf_cache: str = ""
    """The huggingface_hub cache folder the scan downloads into (``HF_HUB_CACHE``); empty: the default."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ActionInputs:
        """Read ``INPUT_*`` variables; empty means the default (for ``sarif``: unset means the default, empty none).

        Raises:
            UsageError: ``fail-on`` or a true/false input has a value outside its choices, or
                ``artifact-name`` holds a character artifact names may not.
        """
        raw = {name: env.get(env_name(name), "").strip() for name in INPUTS}
        fail_on = raw["fail-on"].lower() or "backdoor"
        if fail_on not in FAIL_ON:
            raise UsageError(f"input fail-on must be one of {', '.join(FAIL_ON)} (got {raw['fail-on']!r})")
        flags: dict[str, bool | None] = {name: _flag(raw, name, None) if raw[name] else None
                                         for name in ("blackbox", "midstep", "ode", "stamps")}
        flags["allow-pickle"] = _flag(raw, "allow-pickle", False)
        sarif = DEFAULT_SARIF if env.get(env_name("sarif")) is None else raw["sarif"]
        output_dir = raw["output-dir"] or DEFAULT_OUTPUT_DIR
        # The default outputs go to the runner's temp folder: the workspace is often the audited
        # model itself (model: .), and hfaudit never writes into the model it audits.
        temp = env.get("RUNNER_TEMP", "").strip()
        if temp:
            sarif = str(Path(temp, "hfaudit", sarif)) if sarif == DEFAULT_SARIF else sarif
            output_dir = str(Path(temp, "hfaudit", output_dir)) if output_dir == DEFAULT_OUTPUT_DIR else output_dir
        bad = sorted(ARTIFACT_NAME_FORBIDDEN & set(raw["artifact-name"]))
        if bad:
            raise UsageError(f"input artifact-name may not hold {' '.join(map(repr, bad))} (got {raw['artifact-name']!r})")
        return cls(
            artifact_name=raw["artifact-name"], verdict_cache=raw["verdict-cache"], hf_cache=raw["hf-cache"],
            model=raw["model"] or ".", revision=raw["revision"], fail_on=fail_on,
            sarif=sarif, output_dir=output_dir, device=raw["device"],
            budget=raw["budget"], samples=raw["samples"], inversion_steps=raw["inversion-steps"],
            samplers=raw["samplers"].replace(",", " ").split(), threshold=raw["threshold"], seed=raw["seed"],
            blackbox=flags["blackbox"], midstep=flags["midstep"], ode=flags["ode"], stamps=flags["stamps"],
            allow_pickle=flags["allow-pickle"], base=raw["base"],
        )

    def scan_args(self) -> list[str]:
        """The ``hfaudit scan`` command line these inputs stand for."""
        args = ["scan", self.model, "--output-dir", self.output_dir]
        if self.sarif:
            args += ["--sarif", self.sarif]
        for flag, value in (("--revision", self.revision), ("--device", self.device), ("--budget", self.budget),
                            ("--samples", self.samples),
                            ("--inversion-steps", self.inversion_steps), ("--threshold", self.threshold),
                            ("--seed", self.seed), ("--base", self.base)):
            if value:
                args += [flag, value]
        for s in self.samplers:
            args += ["--sampler", s]
        for name in ("blackbox", "midstep", "ode", "stamps"):
            on = getattr(self, name)
            if on is not None:
                args.append(f"--{name}" if on else f"--no-{name}")
        if self.allow_pickle:
            args.append("--allow-pickle")
        if self.verdict_cache:
            args += ["--verdict-cache", self.verdict_cache]
        return args

    @property
    def report_json(self) -> Path:
        return Path(self.output_dir) / "report.json"

    @property
    def report_md(self) -> Path:
        return Path(self.output_dir) / "report.md"


def artifact_name(inputs: ActionInputs, env: Mapping[str, str]) -> str:
    """The name the report folder is uploaded under: the ``artifact-name`` input, else one unique in the run.

    Artifacts are immutable and named per workflow run, so a fixed name fails the second upload: a
    matrix leg, a second use in one job, a re-run. The default is ``hfaudit-report-<model>``, then
    the job id, the matrix leg (``HFAUDIT_JOB_INDEX`` of ``HFAUDIT_JOB_TOTAL``, from the ``strategy``
    context) and the run attempt where they tell runs apart, then ``-2``, ``-3``... for a name this
    job already used (recorded under ``RUNNER_TEMP``).
    """
    if inputs.artifact_name:
        return inputs.artifact_name
    model = inputs.model.strip()
    if model in (".", "./", ""):
        model = env.get("GITHUB_REPOSITORY", "").rpartition("/")[2] or "model"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")[-MAX_ARTIFACT_SLUG:].strip("-.") or "model"
    parts = ["hfaudit-report", slug]
    job = re.sub(r"[^A-Za-z0-9._-]+", "-", env.get("GITHUB_JOB", "")).strip("-")
    if job:
        parts.append(job)
    index, total = env.get("HFAUDIT_JOB_INDEX", "").strip(), env.get("HFAUDIT_JOB_TOTAL", "").strip()
    if index.isdigit() and total.isdigit() and int(total) > 1:
        parts.append(f"{int(index) + 1}of{total}")
    attempt = env.get("GITHUB_RUN_ATTEMPT", "").strip()
    if attempt.isdigit() and int(attempt) > 1:
        parts.append(f"attempt{attempt}")
    name = "-".join(parts)
    temp = env.get("RUNNER_TEMP", "").strip()
    if not temp:
        return name
    ledger = Path(temp, "hfaudit", "artifact-names")
    try:
        used = set(ledger.read_text(encoding="utf-8").split("\n")) if ledger.is_file() else set()
        unique, n = name, 1
        while unique in used:
            n += 1
            unique = f"{name}-{n}"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        with open(ledger, "a", encoding="utf-8") as fh:
            fh.write(unique + "\n")
        return unique
    except OSError:
        return name


def _cache_state(folder: str) -> dict[str, tuple[int, int]]:
    """``{entry name: (mtime_ns, size)}`` of a verdict cache folder (empty when there is none)."""
    try:
        return {e.name: (e.stat().st_mtime_ns, e.stat().st_size) for e in os.scandir(folder)
                if e.name.endswith(".json") and e.is_file()}
    except OSError:
        return {}


def decide_exit(code: int, doc: Mapping[str, Any] | None, fail_on: str) -> int:
    """The step's exit code under the ``fail-on`` policy.

    - No verdict (usage 2, not found 3, unsupported 4, inconclusive 7, internal 70, interrupted 130):
      that code, whatever ``fail-on`` says: a gate that cannot look must not pass.
    - ``never``: 0 otherwise (report only).
    - ``backdoor`` (default): hfaudit's own code: 1 backdoor, 5 unsafe or corrupt checkpoint, else 0.
    - ``warning``: as ``backdoor``, and 1 also for an inconclusive (collapsed) verdict or any
      static finding at level warning or error.
    """
    if code in DID_NOT_RUN or code not in set(ExitCode):
        return code
    if fail_on == "never":
        return 0
    if code != ExitCode.CLEAN:
        return code
    if fail_on == "warning" and doc is not None:
        from hfaudit.results import COLLAPSED

        if doc.get("verdict") == COLLAPSED or any(f.get("level") in ("warning", "error") for f in doc.get("findings", [])):
            return int(ExitCode.BACKDOOR)
    return 0


def run_scan_cli(args: list[str]) -> int:
    """Run ``hfaudit <args>`` in this process, exactly as the console script would; return its exit code."""
    from hfaudit.cli import app

    try:
        app(args=args, prog_name="hfaudit")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else int(ExitCode.USAGE))
    return 0


def main(env: Mapping[str, str] | None = None) -> int:
    """Run the Action with ``env`` (default ``os.environ``); return the step's exit code."""
    env = os.environ if env is None else env
    summary_file = env.get("GITHUB_STEP_SUMMARY")
    output_file = env.get("GITHUB_OUTPUT")
    try:
        inputs = ActionInputs.from_env(env)
    except UsageError as exc:
        _annotate("error", str(exc))
        _append(summary_file, f"## ⛔ hfaudit: bad Action input\n\n{exc}\n")
        _write_outputs(output_file, {**dict.fromkeys(OUTPUTS, ""), "verdict": "usage", "exit-code": str(int(exc.exit_code))})
        return int(exc.exit_code)

    if inputs.sarif:
        Path(inputs.sarif).parent.mkdir(parents=True, exist_ok=True)  # the runner's temp folder, by default
    if inputs.hf_cache:
        # Read by huggingface_hub once, at import: the scan below is the first to import it.
        os.environ["HF_HUB_CACHE"] = inputs.hf_cache
    name = artifact_name(inputs, env)
    args = inputs.scan_args()
    print(f"hfaudit {shlex.join(args)}", flush=True)
    cache_before = _cache_state(inputs.verdict_cache) if inputs.verdict_cache else {}
    started_ns = time.time_ns()
    code = run_scan_cli(args)
    doc = _read_report(inputs.report_json, started_ns)
    cache_updated = bool(inputs.verdict_cache) and _cache_state(inputs.verdict_cache) != cache_before

    from hfaudit.report import error_verdict, to_markdown, verdict_line

    verdict = doc["verdict"] if doc else error_verdict(code)
    outputs = {
        "verdict": verdict,
        "score": "" if not doc or doc.get("score") is None else f"{doc['score']:.4f}",
        "exit-code": str(code),
        "report-json": str(inputs.report_json) if doc else "",
        "report-markdown": str(inputs.report_md) if doc else "",
        "sarif": inputs.sarif if inputs.sarif and doc and Path(inputs.sarif).is_file() else "",
        "output-dir": inputs.output_dir,
        "artifact-name": name,
        "verdict-cache-updated": "true" if cache_updated else "false",
        "hub-commit": _hub_commit(doc),
    }
    _write_outputs(output_file, outputs)

    if doc:
        body = to_markdown(doc, images="list")
        if doc.get("artifacts"):
            body += f"\nReports and figures: `{inputs.output_dir}/`.\n"
        _append(summary_file, body)
        serious = [f for f in doc.get("findings", []) if f.get("level") in ("warning", "error")]
        if doc.get("error") is None and verdict != "clean":
            _annotate("warning" if verdict == "collapsed" else "error", verdict_line(doc))
        elif doc.get("error") is not None and not any(f["level"] == "error" for f in serious):
            _annotate("error", verdict_line(doc))
        for f in serious:
            _annotate(f["level"], f["message"])
    else:
        _append(summary_file, f"## ⛔ hfaudit: the scan did not run (exit {code}, {verdict})\n\n"
                              "See the step log for the one-line error.\n")

    final = decide_exit(code, doc, inputs.fail_on)
    if final != code:
        print(f"hfaudit exited {code} ({verdict}); with fail-on: {inputs.fail_on} the step exits {final}", flush=True)
    return final


def _hub_commit(doc: Mapping[str, Any] | None) -> str:
    """The commit sha a Hub repo resolved to ("" for a folder, or when the audit stopped before it)."""
    source = (doc or {}).get("source") or {}
    sha = source.get("commit_sha") if source.get("repo_id") else None
    return sha if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", sha) else ""


def _read_report(path: Path, started_ns: int) -> dict[str, Any] | None:
    """This run's ``report.json``, or None (not written, or a stale one from an earlier run)."""
    try:
        if path.stat().st_mtime_ns < started_ns - 2_000_000_000:  # 2 s slack for coarse clocks
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_outputs(path: str | None, values: Mapping[str, str]) -> None:
    """Append ``name=value`` step outputs (the delimiter form for anything multi-line)."""
    if not path:
        return
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in values.items():
            if "\n" in value or "\r" in value:
                delim = f"EOF_{uuid.uuid4().hex}"
                fh.write(f"{name}<<{delim}\n{value}\n{delim}\n")
            else:
                fh.write(f"{name}={value}\n")


def _append(path: str | None, text: str) -> None:
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text if text.endswith("\n") else text + "\n")


def _annotate(level: str, message: str) -> None:
    """A workflow command (``::error::``), escaped so a message cannot end it early."""
    text = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    print(f"::{level} title=hfaudit::{text}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
