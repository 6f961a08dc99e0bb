"""The GitHub Action's script: ``python -m hfaudit.action``, run by ``action.yml``.

Kept in Python (not in the YAML) so the tests run exactly what the Action runs. It reads the
Action's inputs from ``INPUT_*`` environment variables (``action.yml`` maps each input through
``env:``, never into the script text, so an input cannot inject shell), runs ``hfaudit scan``
in-process with the same flags a person would type, then:

- writes the step outputs (verdict, score, exit code, report paths) to ``$GITHUB_OUTPUT``;
- appends the Markdown report to ``$GITHUB_STEP_SUMMARY``;
- prints a workflow annotation for a backdoor, an unsafe checkpoint or a warning;
- exits according to ``fail-on`` (see :func:`decide_exit`).

Outside GitHub (no ``GITHUB_OUTPUT``/``GITHUB_STEP_SUMMARY``) the same script still runs and
exits; it just has nowhere to write outputs and summary.
"""

from __future__ import annotations

import json
import os
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
INPUTS = ("model", "revision", "fail-on", "sarif", "output-dir", "device", "samples", "inversion-steps",
          "samplers", "threshold", "seed", "blackbox", "midstep", "ode", "stamps", "allow-pickle")
"""The Action inputs this script reads, as named in ``action.yml`` (env ``INPUT_FAIL_ON`` for ``fail-on``)."""
OUTPUTS = ("verdict", "score", "exit-code", "report-json", "report-markdown", "sarif", "output-dir")
"""The step outputs this script writes to ``$GITHUB_OUTPUT``; ``action.yml`` exposes each."""


def _flag(raw: Mapping[str, str], name: str, default: bool) -> bool:
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
    blackbox: bool = True
    midstep: bool = True
    ode: bool = True
    stamps: bool = True
    allow_pickle: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ActionInputs:
        """Read ``INPUT_*`` variables; empty means the default (for ``sarif``: unset means the default, empty none).

        Raises:
            UsageError: ``fail-on`` or ``allow-pickle`` has a value outside its choices.
        """
        raw = {name: env.get(env_name(name), "").strip() for name in INPUTS}
        fail_on = raw["fail-on"].lower() or "backdoor"
        if fail_on not in FAIL_ON:
            raise UsageError(f"input fail-on must be one of {', '.join(FAIL_ON)} (got {raw['fail-on']!r})")
        flags = {name: _flag(raw, name, default) for name, default in
                 (("blackbox", True), ("midstep", True), ("ode", True), ("stamps", True),
                                       ("allow-pickle", False))}
        sarif = DEFAULT_SARIF if env.get(env_name("sarif")) is None else raw["sarif"]
        output_dir = raw["output-dir"] or DEFAULT_OUTPUT_DIR
        # The default outputs go to the runner's temp folder: the workspace is often the audited
        # model itself (model: .), and hfaudit never writes into the model it audits.
        temp = env.get("RUNNER_TEMP", "").strip()
        if temp:
            sarif = str(Path(temp, "hfaudit", sarif)) if sarif == DEFAULT_SARIF else sarif
            output_dir = str(Path(temp, "hfaudit", output_dir)) if output_dir == DEFAULT_OUTPUT_DIR else output_dir
        return cls(
            model=raw["model"] or ".", revision=raw["revision"], fail_on=fail_on,
            sarif=sarif, output_dir=output_dir, device=raw["device"],
            samples=raw["samples"], inversion_steps=raw["inversion-steps"],
            samplers=raw["samplers"].replace(",", " ").split(), threshold=raw["threshold"], seed=raw["seed"],
            blackbox=flags["blackbox"], midstep=flags["midstep"], ode=flags["ode"], stamps=flags["stamps"],
            allow_pickle=flags["allow-pickle"],
        )

    def scan_args(self) -> list[str]:
        """The ``hfaudit scan`` command line these inputs stand for."""
        args = ["scan", self.model, "--output-dir", self.output_dir]
        if self.sarif:
            args += ["--sarif", self.sarif]
        for flag, value in (("--revision", self.revision), ("--device", self.device), ("--samples", self.samples),
                            ("--inversion-steps", self.inversion_steps), ("--threshold", self.threshold),
                            ("--seed", self.seed)):
            if value:
                args += [flag, value]
        for s in self.samplers:
            args += ["--sampler", s]
        if not self.blackbox:
            args.append("--no-blackbox")
        if not self.midstep:
            args.append("--no-midstep")
        if not self.ode:
            args.append("--no-ode")
        if not self.stamps:
            args.append("--no-stamps")
        if self.allow_pickle:
            args.append("--allow-pickle")
        return args

    @property
    def report_json(self) -> Path:
        return Path(self.output_dir) / "report.json"

    @property
    def report_md(self) -> Path:
        return Path(self.output_dir) / "report.md"


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
    args = inputs.scan_args()
    print(f"hfaudit {shlex.join(args)}", flush=True)
    started_ns = time.time_ns()
    code = run_scan_cli(args)
    doc = _read_report(inputs.report_json, started_ns)

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
