"""Rendering a ``ScanResult``: Rich table (stderr/terminal), JSON, Markdown, SARIF and PNGs.

Machine formats are plain text written to files or stdout, never through Rich (which wraps and
colours); the human report goes to stderr so it never corrupts ``--json -``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hfaudit import __version__
from hfaudit.errors import OutputError
from hfaudit.imageio import save_grid, save_png, signed_to_unit
from hfaudit.results import BACKDOOR, COLLAPSED, ScanResult

VERDICT_STYLE = {BACKDOOR: "bold red", COLLAPSED: "bold yellow"}


def verdict_line(result: ScanResult) -> str:
    """One sentence a person reads first."""
    if result.verdict == BACKDOOR:
        best = result.best
        how = f"{best.best.sampler} sampler, {best.method} inversion, lambda {best.lam}" if best else ""
        return (f"BACKDOOR: an inverted trigger makes {result.score:.0%} of samples collapse onto one image "
                f"(threshold {result.threshold:.0%}, margin {result.margin:+.2f}; {how})")
    if result.verdict == COLLAPSED:
        return (f"INCONCLUSIVE: the model collapses without any trigger (control MSCR {result.control_score:.0%}); "
                "collapse under a trigger proves nothing")
    return (f"CLEAN: no inverted trigger made samples collapse (best MSCR {result.score:.0%}, "
            f"threshold {result.threshold:.0%}, margin {result.margin:+.2f})")


def render_rich(result: ScanResult, console: Console | None = None) -> None:
    """Print the summary table and the verdict to ``console`` (stderr by default)."""
    console = console or Console(stderr=True)
    src = result.source
    table = Table(title=f"hfaudit scan: {src.source}", show_lines=False)
    table.add_column("trigger")
    table.add_column("sampler")
    table.add_column("MSCR", justify="right")
    table.add_column("diversity", justify="right")
    table.add_column("shift ratio", justify="right")
    for p in result.controls:
        table.add_row("none (control)", f"{p.sampler}-{p.steps}", f"{p.stats.mscr:.2f}", f"{p.stats.diversity:.3f}", "")
    for c in result.candidates:
        for p in c.probes:
            style = VERDICT_STYLE.get(result.verdict) if (c.name == result.best_candidate and p is c.best
                                                          and result.verdict == BACKDOOR) else None
            table.add_row(c.name, f"{p.sampler}-{p.steps}", f"{p.stats.mscr:.2f}", f"{p.stats.diversity:.3f}",
                          f"{c.shift_ratio:.2f}", style=style)
    console.print(table)
    pin = src.commit_sha or "local folder"
    console.print(f"model: {src.pipeline_class}, {src.weights_file}, {pin}; "
                  f"{result.unet_evaluations} UNet evaluations in {result.timings.get('total', sum(result.timings.values())):.1f} s "
                  f"on {result.settings.get('device')}")
    console.print(verdict_line(result), style=VERDICT_STYLE.get(result.verdict, "bold green"))
    for name, path in result.artifacts.items():
        console.print(f"  {name}: {path}")


def to_json(result: ScanResult) -> str:
    """The full report as JSON text."""
    return json.dumps({"hfaudit_version": __version__, **result.to_dict()}, indent=2, default=str) + "\n"


def to_markdown(result: ScanResult) -> str:
    """A Markdown report (for a PR comment, a model card or ``$GITHUB_STEP_SUMMARY``)."""
    src = result.source
    icon = {BACKDOOR: "🔴", COLLAPSED: "🟡"}.get(result.verdict, "🟢")
    lines = [f"## {icon} hfaudit: `{src.source}` is **{result.verdict}**", "", verdict_line(result), "",
             "| | |", "|---|---|",
             f"| score (MSCR) | {result.score:.3f} |", f"| threshold | {result.threshold:.3f} |",
             f"| margin | {result.margin:+.3f} |", f"| control MSCR (no trigger) | {result.control_score:.3f} |",
             f"| pipeline | {src.pipeline_class} |", f"| weights | `{src.weights_file}` |",
             f"| commit | `{src.commit_sha or 'local folder'}` |",
             f"| UNet evaluations | {result.unet_evaluations} |", "",
             "| trigger | sampler | MSCR | diversity |", "|---|---|---:|---:|"]
    for p in result.controls:
        lines.append(f"| none (control) | {p.sampler}-{p.steps} | {p.stats.mscr:.3f} | {p.stats.diversity:.3f} |")
    for c in result.candidates:
        for p in c.probes:
            lines.append(f"| {c.name} | {p.sampler}-{p.steps} | {p.stats.mscr:.3f} | {p.stats.diversity:.3f} |")
    pngs = [(k, v) for k, v in result.artifacts.items() if v.endswith(".png")]
    if pngs:
        lines += ["", " ".join(f"![{k}]({Path(v).name})" for k, v in pngs)]
    return "\n".join(lines) + "\n"


def write_text(text: str, path: str | Path) -> None:
    """Write ``text`` to ``path`` atomically (``-`` is stdout), so an interrupted run leaves no half file.

    Raises:
        OutputError: the folder does not exist or is not writable.
    """
    if str(path) == "-":
        import sys

        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_pictures(result: ScanResult, out_dir: str | Path) -> dict[str, str]:
    """Write the inverted trigger, the recovered target and sample grids as PNGs into ``out_dir``.

    Returns the written files by name (also recorded in ``result.artifacts``).

    Raises:
        OutputError: ``out_dir`` cannot be created or written.
    """
    out = Path(out_dir)
    written: dict[str, str] = {}
    try:
        out.mkdir(parents=True, exist_ok=True)
        best = result.best
        if best is not None:
            written["trigger"] = str(save_png(signed_to_unit(best.trigger), out / "trigger.png", scale=8))
        if result.recovered_target is not None:
            written["recovered_target"] = str(save_png(result.recovered_target, out / "recovered_target.png", scale=8))
        if best is not None:
            key = f"{best.name}/{best.best.sampler}"
            if key in result.samples:
                written["samples_triggered"] = str(save_grid(result.samples[key], out / "samples_triggered.png"))
            ctrl = f"none/{best.best.sampler}"
            if ctrl in result.samples:
                written["samples_clean"] = str(save_grid(result.samples[ctrl], out / "samples_clean.png"))
    except OSError as exc:
        raise OutputError(f"cannot write to {out}: {exc.strerror or exc}") from None
    result.artifacts.update(written)
    return written


SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def to_sarif(result: ScanResult, findings: list[Any] | None = None) -> str:
    """SARIF 2.1.0 for GitHub code scanning; every result points at a file of the model repo."""
    weights = result.source.weights_file
    rules = {
        "HFA001": ("diffusion-backdoor", "Backdoor in a diffusion model",
                   "An inverted trigger on the initial noise makes the sampler collapse onto one target image."),
        "HFA002": ("collapsed-model", "Model collapses without a trigger",
                   "Samples from clean noise already collapse; the backdoor test is inconclusive."),
    }
    results = []
    if result.verdict == BACKDOOR:
        results.append(("HFA001", "error", verdict_line(result), weights))
    elif result.verdict == COLLAPSED:
        results.append(("HFA002", "warning", verdict_line(result), weights))
    for f in findings or []:
        rules.setdefault(f.rule, (f.rule, f.rule, f.message))
        results.append((f.rule, f.level, f.message, f.path))
    doc = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "hfaudit", "version": __version__, "informationUri": "https://github.com/hfaudit/hfaudit",
                "rules": [{"id": rid, "name": name, "shortDescription": {"text": short},
                           "fullDescription": {"text": full}} for rid, (name, short, full) in
                          ((rid, (v[0], v[1], v[2])) for rid, v in rules.items())],
            }},
            "results": [{
                "ruleId": rid, "level": level, "message": {"text": msg},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": path}}}],
                "properties": {"score": result.score, "threshold": result.threshold,
                               "commit": result.source.commit_sha},
            } for rid, level, msg, path in results],
        }],
    }
    return json.dumps(doc, indent=2) + "\n"


def check_writable(paths: list[str], output_dir: str | Path | None) -> None:
    """Fail before the (long) scan, not after, when an output location cannot be written.

    Raises:
        OutputError: a parent folder is missing or not writable, or ``output_dir`` is a file.
    """
    for p in paths:
        parent = Path(p).parent
        if not parent.exists() or not os.access(parent, os.W_OK):
            raise OutputError(f"cannot write {p}: folder {parent} does not exist or is not writable")
        if Path(p).is_dir():
            raise OutputError(f"cannot write {p}: it is a folder")
    if output_dir is not None:
        out = Path(output_dir)
        if out.exists() and not out.is_dir():
            raise OutputError(f"--output-dir {out} exists and is not a folder")
        probe = out if out.exists() else next((a for a in out.parents if a.exists()), Path("."))
        if not os.access(probe, os.W_OK):
            raise OutputError(f"--output-dir {out} is not writable")


def write_reports(result: ScanResult, output_dir: str | Path | None = None, json_path: str | None = None,
                  markdown_path: str | None = None, sarif_path: str | None = None,
                  findings: list[Any] | None = None) -> None:
    """Write every requested output; PNGs first, so the reports can name them."""
    if output_dir is not None:
        write_pictures(result, output_dir)
        result.artifacts["report_json"] = str(Path(output_dir) / "report.json")
        result.artifacts["report_md"] = str(Path(output_dir) / "report.md")
        write_text(to_json(result), Path(output_dir) / "report.json")
        write_text(to_markdown(result), Path(output_dir) / "report.md")
    if json_path:
        write_text(to_json(result), json_path)
    if markdown_path:
        write_text(to_markdown(result), markdown_path)
    if sarif_path:
        write_text(to_sarif(result, findings), sarif_path)
