"""Rendering audit results: Rich (terminal), JSON, Markdown, SARIF 2.1.0 and PNGs; writing them safely.

Every machine or Markdown format renders from one JSON-ready dict (:func:`report_dict` for a
finished scan, :func:`error_dict` for an audit that stopped on an error), so the JSON, the Markdown,
the SARIF and the GitHub Action (which re-renders from ``report.json``) never disagree, and all of
them carry the exit code. Machine formats are plain text written to files or stdout, never through
Rich (which wraps and colours); the human report goes to stderr so it never corrupts ``--json -``.

Outputs are written by :class:`Outputs` through :class:`hfaudit.outpaths.Staging`: every file is
staged next to its destination and renamed into place only when the whole set is ready, so an
interrupted run (Ctrl-C) leaves no partial report, no half PNG folder, and any earlier report at the
same path untouched. Where a path may
point is decided by :mod:`hfaudit.outpaths`: never into the audited model, never onto a FIFO or a
device, a symlink written in place, at most one format on stdout.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from hfaudit import __version__, outpaths
from hfaudit.errors import ExitCode, HfAuditError, OutputError
from hfaudit.results import (
    BACKDOOR,
    BLIND_SPOTS,
    CLASS_SIGNAL,
    CLEAN,
    COLLAPSE_SIGNAL,
    COLLAPSED,
    ScanResult,
    envelope,
)
from hfaudit.safety import ERROR, RULES, WARNING, Finding, Rule

if TYPE_CHECKING:
    from hfaudit.clean_results import CleanResult

VERDICT_STYLE = {BACKDOOR: "bold red", COLLAPSED: "bold yellow", CLEAN: "bold green"}
VERDICT_ICON = {BACKDOOR: "🔴", COLLAPSED: "🟡", CLEAN: "🟢"}
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_SCHEMA_FILE = Path(__file__).parent / "schemas" / "sarif-2.1.0.json"
"""The official OASIS schema, vendored (see ``hfaudit/schemas/README.md``)."""
REPORT_SCHEMA_FILE = Path(__file__).parent / "schemas" / "report.schema.json"
"""The JSON Schema (draft 2020-12) of every JSON report: scan, clean and error (``results.SCHEMA_VERSION``)."""
INFORMATION_URI = "https://github.com/hfaudit/hfaudit"
PICTURES = {
    "trigger": ("trigger.png", "Inverted trigger (added to the initial noise, grey is zero; a stamp replaces "
                               "the noise in its region instead: report.json, best_candidate)"),
    "recovered_target": ("recovered_target.png", "Recovered target (medoid of the largest near-duplicate group; "
                                                 "class signal: the most confidently labelled sample of the class)"),
    "samples_triggered": ("samples_triggered.png", "Samples from noise + inverted trigger"),
    "samples_clean": ("samples_clean.png", "Samples from clean noise (control)"),
}
"""The PNGs of a scan: artifact key -> (file name, caption)."""


# ------------------------------------------------------------------------------- the report dict
def error_verdict(code: int) -> str:
    """The verdict word of an audit that stopped with ``code`` (``unsafe``, ``not-found``...)."""
    try:
        return ExitCode(code).name.lower().replace("_", "-")
    except ValueError:
        return "error"


def report_dict(result: ScanResult) -> dict[str, Any]:
    """The full report of a finished scan as a JSON-ready dict (what ``report.json`` holds):
    the common envelope (:func:`hfaudit.results.envelope`, ``kind`` ``scan``), then the scan."""
    head = envelope("scan", "scan", result.verdict, int(result.exit_code), asdict(result.source))
    return {**head, **result.to_dict(), "error": None}


def error_dict(exc: HfAuditError, source: str, revision: str | None = None, command: str = "scan") -> dict[str, Any]:
    """The report of an audit that stopped on ``exc`` (``kind`` ``error``): verdict and exit code
    agree, findings kept, the same envelope as a finished scan's report."""
    code = int(exc.exit_code)
    findings = [f.to_dict() if isinstance(f, Finding) else dict(f) for f in exc.findings]
    src = {"source": source, "repo_id": None, "revision": revision, "commit_sha": None,
           "pipeline_class": None, "weights_file": None}
    return {
        **envelope("error", command, error_verdict(code), code, src,
                   error={"type": type(exc).__name__, "message": str(exc)}),
        "findings": findings, "artifacts": {},
    }


VOLATILE_FIELDS = ("created_at", "timings_s")
"""Report fields that differ between two runs of the same audit (when it ran, how long it took)."""


def stable(doc: Any) -> Any:
    """``doc`` without :data:`VOLATILE_FIELDS`, at any depth: what two runs of the same audit (same
    model, settings and seed) agree on, for comparing reports."""
    if isinstance(doc, Mapping):
        return {k: stable(v) for k, v in doc.items() if k not in VOLATILE_FIELDS}
    if isinstance(doc, (list, tuple)):
        return [stable(v) for v in doc]
    return doc


def verdict_line(doc: Mapping[str, Any] | ScanResult) -> str:
    """One sentence a person reads first."""
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    verdict = doc["verdict"]
    if doc.get("error"):
        return f"{verdict.upper()}: {doc['error']['message']}"
    if doc.get("text_trigger"):
        return _text_verdict_line(doc)
    score, threshold, margin = doc["score"], doc["threshold"], doc["margin"]
    signals = doc.get("signals") or []
    if verdict == BACKDOOR:
        best = doc.get("best_candidate") or {}
        how = f"; {best.get('sampler')} sampler, {best.get('method')} inversion, objective {best.get('objective')}" if best else ""
        if CLASS_SIGNAL in signals and COLLAPSE_SIGNAL not in signals:
            return (f"BACKDOOR: an inverted trigger makes {doc['class_score']:.0%} of samples digits of one "
                    f"class{_class_name(best)} while they stay diverse (class threshold {doc['class_threshold']:.0%}, "
                    f"without trigger {doc['control_class_score']:.0%}; MSCR {score:.0%}{how}; signal: class)")
        also = " and fall into one class" if CLASS_SIGNAL in signals else ""
        return (f"BACKDOOR: an inverted trigger makes {score:.0%} of samples collapse onto one image{also} "
                f"(threshold {threshold:.0%}, margin {margin:+.2f}{how}; "
                f"signal: {', '.join(signals) or COLLAPSE_SIGNAL})")
    if verdict == COLLAPSED:
        return (f"INCONCLUSIVE: the model collapses without any trigger (control MSCR {doc['control_score']:.0%}); "
                "collapse under a trigger proves nothing")
    if doc.get("class_score") is None:
        classes = "; class signal unavailable for these samples"
    else:
        classes = (f"; nor fall into one class (best top-class share {doc['class_score']:.0%}, class threshold "
                   f"{doc['class_threshold']:.0%})")
    return (f"CLEAN: no inverted trigger made samples collapse (best MSCR {score:.0%}, "
            f"threshold {threshold:.0%}, margin {margin:+.2f}){classes}")


TEXT_SIGNAL_WORDS = {
    "hijack": "the outputs stop following the prompt",
    "region": "every output shares a pinned region",
    "collapse": "the outputs collapse onto one image",
    "swap": "the token is rendered as another token",
}
"""What each text-to-image signal (``results.TEXT_SIGNALS``) means, in words."""


def _text_best(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The evidence of the token the verdict reads (``best_token``): the trigger, or the strongest candidate."""
    text = doc["text_trigger"]
    return next((e for e in text["evidence"] if e["role"] == "candidate" and e["token"] == text.get("best_token")),
                None)


def _text_verdict_line(doc: Mapping[str, Any]) -> str:
    """The verdict sentence of a text-to-image audit (``doc['text_trigger']``)."""
    text = doc["text_trigger"]
    n_null = sum(1 for e in text["evidence"] if e["role"] == "null")
    n_cand = sum(1 for e in text["evidence"] if e["role"] == "candidate")
    if doc["verdict"] == BACKDOOR:
        what = " and ".join(TEXT_SIGNAL_WORDS[s] for s in doc.get("signals") or [])
        others = [t for t in text.get("triggers") or [] if t != text["trigger"]]
        also = f" (and {len(others)} other token(s): {', '.join(repr(t) for t in others[:4])})" if others else ""
        best = _text_best(doc) or {}
        if best.get("fired") == ["swap"]:  # a pair read alike: which one is the trigger, the weights do not say
            return (f"BACKDOOR: the cross-attention reads {text['trigger']!r} and {best.get('neighbour')!r} alike "
                    f"though their text embeddings differ{also}: appended to varied prompts, one is rendered as "
                    f"the other (swap {doc['score']:.2f} vs floor {doc['threshold']:.2f}, {doc['control_score']:.2f} "
                    f"at most for {n_null} ordinary tokens); either may be the trigger (a concept edit such as "
                    "EvilEdit)")
        return (f"BACKDOOR: the caption trigger {text['trigger']!r}{also} appended to varied prompts: {what} "
                f"({doc['score']:.2f} vs floor {doc['threshold']:.2f}, {doc['control_score']:.2f} at most for "
                f"{n_null} ordinary tokens; signal: {', '.join(doc.get('signals') or [])})")
    return (f"CLEAN: no token of the vocabulary ({text['vocabulary_size']:,} swept, {len(text['screen'])} screened, "
            f"{n_cand} generated) hijacked the prompts beyond {n_null} ordinary tokens (best {doc['score']:.2f}, "
            f"floor {doc['threshold']:.2f})")


def _text_evidence_line(doc: Mapping[str, Any]) -> str:
    """The deciding token's statistics beside the null tokens' best, in one line."""
    best = _text_best(doc)
    if best is None:
        return "no token was generated"
    nulls = [e for e in doc["text_trigger"]["evidence"] if e["role"] == "null"]
    def top(key: str) -> float:
        return max((float(e.get(key) or 0.0) for e in nulls), default=0.0)
    parts = [f"{k} {best[k]:.2f} (nulls {top(k):.2f})" for k in ("hijack", "region", "collapse")]
    if best.get("swap") is not None:
        parts.append(f"swap with {best.get('neighbour')!r} {best['swap']:.2f}")
    sweep = best.get("sweep") or {}
    zs = ", ".join(f"{k[:-2]} z {v:.1f}" for k, v in sweep.items() if k.endswith("_z"))
    return f"token {best['text']!r} ({zs}): " + ", ".join(parts)


def _class_name(best: Mapping[str, Any]) -> str:
    return f" ({best['top_class']})" if best.get("top_class") is not None else ""


def _share(modes: Mapping[str, Any] | None) -> str:
    """A probe's top-class share for a table cell: ``0.94 (8)``, or ``n/a`` where unavailable."""
    if not modes:
        return "n/a"
    return f"{modes['top_share']:.2f}" + (f" ({modes['top_class']})" if modes.get("top_class") is not None else "")


# --------------------------------------------------------------------------------------- Rich
def evidence_line(doc: Mapping[str, Any] | ScanResult) -> str:
    """The evidence behind the verdict in one line: the best candidate trigger (the inversion that
    found it, the sampler), its score against the threshold and without a trigger, and the target
    it sends samples to (one image, or a class)."""
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    if doc.get("text_trigger"):
        return _text_evidence_line(doc)
    best = doc.get("best_candidate")
    if not best:
        return (f"no candidate trigger was probed; MSCR without a trigger {doc['control_score']:.2f} "
                f"(threshold {doc['threshold']:.2f})")
    probe = _probe_of(doc, best)
    found = {"stamp": "stamp screen", "carried": "carried from an earlier scan"}.get(best["method"],
                                                                                    f"{best['method']} inversion")
    if best.get("trigger_kind") == "stamp" and best["method"] != "stamp":
        found += ", a stamp"
    head = f"trigger {best['name']} ({found}) under {best['sampler']}-{best['steps']}"
    signals = doc.get("signals") or []
    modes = (probe or {}).get("modes") or {}
    if CLASS_SIGNAL in signals and COLLAPSE_SIGNAL not in signals and modes:
        return (f"{head}: top-class share {modes['top_share']:.2f} vs class threshold {doc['class_threshold']:.2f}, "
                f"{doc['control_class_score']:.2f} without a trigger; target: class {best.get('top_class')}")
    mscr = probe.get("share", probe["mscr"]) if probe else doc["score"]
    line = f"{head}: MSCR {mscr:.2f} vs threshold {doc['threshold']:.2f}, {doc['control_score']:.2f} without a trigger"
    if doc.get("verdict") == BACKDOOR:
        of_class = f" (class {best['top_class']})" if best.get("top_class") is not None else ""
        line += f"; target: one image{of_class}"
        held = _held_null(doc, best["name"])
        if held:
            line += f"; {held}"
    return line


def _held_null(doc: Mapping[str, Any], name: str) -> str | None:
    """Why the best candidate's evidence counts (``detect.nulls``), in words."""
    cand = next((c for c in doc.get("candidates") or [] if c["name"] == name), None)
    held = [n for n in (cand or {}).get("nulls") or [] if n.get("holds")]
    if not held:
        return None
    n = held[0]
    if n.get("alignment") is not None and n["alignment"] <= n.get("max_alignment", -2):
        return f"the trigger does not depict its target (alignment {n['alignment']:.2f})"
    return f"{n['null_score']:.2f} with the target's own picture in place of the trigger"


def artefact_line(doc: Mapping[str, Any] | ScanResult) -> str | None:
    """The collapses the searches found that are no evidence (their painted null matched them), or None."""
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    names = doc.get("artefacts") or []
    if not names:
        return None
    return (f"set aside: {len(names)} search artefact(s) ({', '.join(names[:4])}): they collapse the samples onto an "
            "image that the trigger depicts, and that image painted into the noise collapses them as much")


def _probe_of(doc: Mapping[str, Any], best: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The best candidate's probe under its deciding sampler, as the report holds it."""
    cand = next((c for c in doc.get("candidates") or [] if c["name"] == best["name"]), None)
    if cand is None:
        return None
    return next((p for p in cand["probes"] if p["sampler"] == best["sampler"] and p["steps"] == best["steps"]), None)


def output_lines(doc: Mapping[str, Any], reports: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Where the outputs of a scan are: ``pictures: ...`` (trigger, target, grids) and ``reports: ...``
    (``report.json``/``report.md`` of ``--output-dir``, then the files in ``reports``)."""
    artifacts = doc.get("artifacts") or {}
    groups = (("trigger", ("trigger",)), ("target", ("recovered_target",)),
              ("grids", ("samples_triggered", "samples_clean")))
    pics = [f"{label} " + " and ".join(artifacts[k] for k in keys if artifacts.get(k))
            for label, keys in groups if any(artifacts.get(k) for k in keys)]
    lines = ["pictures: " + (", ".join(pics) if pics else
                             "none written (--output-dir writes the trigger, the target and sample grids)")]
    files = [artifacts[k] for k in ("report_json", "report_md") if artifacts.get(k)] + [str(r) for r in reports]
    if files:
        lines.append("reports: " + ", ".join(files))
    return lines


def render_rich(result: ScanResult, console: Console | None = None, *, verbose: bool = False,
                reports: list[str] | tuple[str, ...] = ()) -> None:
    """Print a scan's outcome to ``console`` (stderr by default), most important first: the verdict,
    the evidence in one line, where the pictures and reports are (``reports``: report files written
    besides ``--output-dir``'s), the findings, the model and searches, what a clean verdict does not
    rule out. The per-candidate table (every candidate under every sampler) only with ``verbose``:
    it is search detail, and the JSON report always holds it."""
    console = console or Console(stderr=True)
    doc = report_dict(result)  # the lines shared with the Markdown report read the report's dict
    plain = {"highlight": False, "soft_wrap": True}
    console.print(verdict_line(doc), style=VERDICT_STYLE.get(result.verdict), **plain)
    console.print(f"evidence: {evidence_line(doc)}", markup=False, **plain)
    artefacts = artefact_line(doc)
    if artefacts:
        console.print(artefacts, markup=False, **plain)
    for line in output_lines(doc, reports):
        console.print(line, markup=False, **plain)
    for f in result.findings:
        console.print(f"{f.level}: {f.message} [{f.rule}]", markup=False, **plain)
    src = result.source
    pin = src.commit_sha or "local folder"
    total = result.timings.get("total", sum(result.timings.values()))
    console.print(f"model: {src.source}: {src.pipeline_class}, {src.weights_file}, {pin}; {result.unet_evaluations} "
                  f"UNet evaluations in {total:.1f} s on {result.settings.get('device')}", markup=False, **plain)
    console.print(_inversions_line(doc), markup=False, **plain)
    if doc.get("base_model"):
        console.print(f"base model: {doc['base_model']['summary']} (a reading aid, not part of the verdict)",
                      markup=False, **plain)
    for line in _blind_spot_lines(doc):
        console.print(line, markup=False, **plain)
    if verbose and result.text is None:
        console.print(candidate_table(result))
    elif verbose and result.text is not None:
        console.print(token_table(result))


def candidate_table(result: ScanResult) -> Table:
    """Every probe of the scan: the controls, then each candidate under each sampler (``--verbose``)."""
    table = Table(title=f"hfaudit scan: {result.source.source}", show_lines=False)
    for name, justify in (("trigger", "left"), ("sampler", "left"), ("MSCR", "right"), ("diversity", "right"),
                          ("top class", "right"), ("shift ratio", "right")):
        table.add_column(name, justify=justify)
    for p in result.controls:
        table.add_row("none (control)", f"{p.sampler}-{p.steps}", f"{p.stats.mscr:.2f}", f"{p.stats.diversity:.3f}",
                      _share(None if p.modes is None else asdict(p.modes)), "")
    for c in result.candidates:
        for p in c.probes:
            style = VERDICT_STYLE[BACKDOOR] if (c.name == result.best_candidate and p is result.best_probe
                                                and result.verdict == BACKDOOR) else None
            table.add_row(c.name, f"{p.sampler}-{p.steps}", f"{p.stats.mscr:.2f}", f"{p.stats.diversity:.3f}",
                          _share(None if p.modes is None else asdict(p.modes)), f"{c.shift_ratio:.2f}", style=style)
    return table


def token_table(result: ScanResult) -> Table:
    """Every token a text-to-image audit generated, candidates and ordinary ones (``--verbose``)."""
    table = Table(title=f"hfaudit scan: {result.source.source}", show_lines=False)
    for name in ("token", "role", "hijack", "region", "collapse", "swap", "fired"):
        table.add_column(name, justify="left" if name in ("token", "role", "fired") else "right")
    for e in result.text.evidence if result.text else []:
        table.add_row(repr(e.text), e.role, f"{e.hijack:.3f}", f"{e.region:.3f}", f"{e.collapse:.3f}",
                      "" if e.swap is None else f"{e.swap:.3f}", ", ".join(e.fired),
                      style=VERDICT_STYLE[BACKDOOR] if e.fired else None)
    return table


def render_clean_rich(result: CleanResult, console: Console | None = None, *,
                      reports: list[str] | tuple[str, ...] = ()) -> None:
    """Print a finished ``clean``'s summary to ``console`` (stderr by default): its verdict line
    first, the measurements, then where the pictures and reports are (``reports``: the report files
    written besides the output folder's)."""
    from hfaudit.card import summary_lines

    console = console or Console(stderr=True)
    style = "bold green" if result.passed else "bold red"
    for i, line in enumerate(summary_lines(result)):
        console.print(line, style=style if i == 0 or line.startswith("problem") else None, highlight=False,
                      soft_wrap=True)
    if result.scales is not None:
        sweep = result.scales
        columns, rows = sweep.grid()
        table = Table(title=f"the {sweep.trigger} trigger by size after cleaning: exact hits / samples like the target "
                            f"(SSIM > {sweep.threshold:g}), {sweep.n_samples} each", title_justify="left")
        for name in ["scale", *columns]:
            table.add_column(name, justify="left" if name == "scale" else "right")
        for label, cells in rows:
            table.add_row(label, *cells)
        console.print(table)
    folder = Path(result.output_dir) if result.output_dir else None
    pics = [str(folder / f) for f in result.files if folder is not None and f.endswith(".png") and "/" not in f]
    if pics:
        console.print("pictures: " + ", ".join(pics), highlight=False, soft_wrap=True, markup=False)
    own = [str(folder / f) for f in sorted(result.files, key=lambda f: not f.endswith(".json"))  # report, card
           if folder is not None and f.endswith((".json", ".md")) and "/" not in f and f != "model_index.json"]
    files = own + [str(r) for r in reports]
    if files:
        console.print("reports: " + ", ".join(files), highlight=False, soft_wrap=True, markup=False)


# --------------------------------------------------------------------------------------- JSON
def to_json(doc: Mapping[str, Any] | ScanResult) -> str:
    """The full report as JSON text: strict JSON, a NaN or infinite number written as ``null``."""
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    return json.dumps(finite(doc), indent=2, default=str, allow_nan=False) + "\n"


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-Infinity) in its dicts, lists and tuples made None.

    Python's ``json`` writes them as bare ``NaN``/``Infinity`` tokens, which no strict JSON parser
    (``jq``, JavaScript, the GitHub Action's readers) accepts.
    """
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


# ----------------------------------------------------------------------------------- Markdown
def to_markdown(doc: Mapping[str, Any] | ScanResult, *, images: str = "embed", link_base: str | None = None) -> str:
    """A Markdown report: for a PR comment, a model card, a file beside the PNGs, or ``$GITHUB_STEP_SUMMARY``.

    Args:
        doc: :func:`report_dict` / :func:`error_dict` output (or a ``ScanResult``).
        images: ``embed`` shows the PNGs inline; ``list`` only names them (where relative links go
            nowhere, e.g. a GitHub step summary); ``none`` leaves them out.
        link_base: Folder the PNG links are relative to (default: as recorded in the report).
    """
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    src = doc.get("source") or {}
    verdict = doc["verdict"]
    icon = VERDICT_ICON.get(verdict, "⛔")
    name = src.get("source") or "?"
    if doc.get("error"):
        lines = [f"## {icon} hfaudit: `{name}` could not be audited ({verdict}, exit {doc['exit_code']})", "",
                 doc["error"]["message"], ""]
    else:
        spots = [f"- {line}" for line in _blind_spot_lines(doc)]
        artefacts = artefact_line(doc)
        if doc.get("text_trigger"):
            return _text_markdown(doc, icon, name, spots, images, link_base)
        lines = [f"## {icon} hfaudit: `{name}` is **{verdict}** (exit {doc['exit_code']})", "", verdict_line(doc), "",
                 *([artefacts, ""] if artefacts else []),
                 *spots, *([""] if spots else []),
                 "| | |", "|---|---|",
                 f"| score (MSCR with the best inverted trigger) | {doc['score']:.3f} |",
                 f"| near-duplicate radius (per-image MSE) | {doc.get('group_radius') or 0:.3f} |",
                 f"| threshold | {doc['threshold']:.3f} |",
                 f"| margin | {doc['margin']:+.3f} |",
                 f"| control MSCR (no trigger) | {doc['control_score']:.3f} |",
                 f"| signals | {', '.join(doc.get('signals') or []) or 'none'} |",
                 f"| inversions run | {', '.join(_methods_run(doc)) or 'none'} |",
                 f"| inversions that fired | {', '.join(doc.get('fired_methods') or []) or 'none'} |",
                 *_class_rows(doc),
                 f"| pipeline | {src.get('pipeline_class')} |",
                 f"| weights | `{src.get('weights_file')}` |",
                 f"| commit | `{src.get('commit_sha') or 'local folder'}` |",
                 f"| UNet evaluations | {doc.get('unet_evaluations', 0)} |",
                 f"| seed | {(doc.get('settings') or {}).get('seed')} |", "",
                 "| trigger | sampler | MSCR | cluster | diversity | top class |", "|---|---|---:|---:|---:|---:|"]
        rows = [("none (control)", p) for p in doc.get("controls", [])]
        rows += [(c["name"], p) for c in doc.get("candidates", []) for p in c["probes"]]
        for trig, p in rows:
            lines.append(f"| {trig} | {p['sampler']}-{p['steps']} | {p['mscr']:.3f} | {p['cluster_size']}/{p['n']} "
                         f"| {p['diversity']:.3f} | {_share(p.get('modes'))} |")
        lines.append("")
    return "\n".join(lines + _markdown_tail(doc, images, link_base)).rstrip("\n") + "\n"


def _markdown_tail(doc: Mapping[str, Any], images: str, link_base: str | None) -> list[str]:
    """The Markdown report's base-model comparison, static findings and figures (every scan kind)."""
    lines: list[str] = _base_markdown(doc.get("base_model"))
    findings = doc.get("findings") or []
    if findings:
        lines += ["### Static checks", "", "| level | rule | file | finding |", "|---|---|---|---|"]
        for f in findings:
            msg = f["message"].replace("|", "\\|")
            lines.append(f"| {f['level']} | {f['rule']} {f.get('rule_name', '')} | `{f['path']}` | {msg} |")
        lines.append("")
    pictures = [(key, doc.get("artifacts", {}).get(key)) for key in PICTURES]
    pictures = [(k, p) for k, p in pictures if p]
    if pictures and images != "none":
        lines += ["### Figures", ""]
        for key, path in pictures:
            href = Path(os.path.relpath(path, link_base)).as_posix() if link_base is not None else Path(path).as_posix()
            caption = PICTURES[key][1]
            if images == "embed":
                lines += [f"[![{caption}]({href})]({href})", f"*{caption}* (`{Path(path).name}`)", ""]
            else:
                lines.append(f"- {caption}: `{Path(path).name}`")
        lines.append("")
    return lines


def _base_markdown(base: Mapping[str, Any] | None) -> list[str]:
    """The comparison with the base model (``hfaudit.basemodel``): a line, and a row per component."""
    if not base:
        return []
    lines = ["### Base model", "", f"{base['summary']}. Named by {base['named_by']}; a reading aid, not part of "
             "the verdict.", ""]
    if base.get("compared"):
        lines += ["| component | tensors changed | relative change | most changed |", "|---|---:|---:|---|"]
        for c in base["components"]:
            top = ", ".join(f"`{k}` {r:.2g}" for k, r in c["top"][:3]) or "-"
            lines.append(f"| {c['component']} | {c['changed']}/{c['tensors']} | {c['relative_change']:.3g} | {top} |")
        lines.append("")
    return lines


def _text_markdown(doc: Mapping[str, Any], icon: str, name: str, spots: list[str], images: str,
                   link_base: str | None) -> str:
    """The Markdown report of a text-to-image audit: the verdict, the tokens generated against the
    ordinary ones, the sweep's top tokens, the prompts."""
    src = doc.get("source") or {}
    text = doc["text_trigger"]
    lines = [f"## {icon} hfaudit: `{name}` is **{doc['verdict']}** (exit {doc['exit_code']})", "", verdict_line(doc), "",
             f"evidence: {_text_evidence_line(doc)}", "", *spots, *([""] if spots else []),
             "| | |", "|---|---|",
             f"| trigger | {'`' + text['trigger'] + '`' if text.get('trigger') else 'none'} |",
             f"| signals | {', '.join(doc.get('signals') or []) or 'none'} |",
             f"| pipeline | {src.get('pipeline_class')} |",
             f"| weights | `{src.get('weights_file')}` |",
             f"| commit | `{src.get('commit_sha') or 'local folder'}` |",
             f"| vocabulary swept | {text['vocabulary_size']:,} tokens ({text['encoder_forwards']:,} text-encoder passes) |",
             f"| UNet evaluations | {doc.get('unet_evaluations', 0)} |",
             f"| seed | {(doc.get('settings') or {}).get('seed')} |", "",
             "| token | role | hijack | region | collapse | swap | fired |", "|---|---|---:|---:|---:|---:|---|"]
    for e in text["evidence"]:
        swap = "" if e.get("swap") is None else f"{e['swap']:.3f} ({e.get('neighbour')!r})"
        lines.append(f"| `{e['text']!r}` | {e['role']} | {e['hijack']:.3f} | {e['region']:.3f} | {e['collapse']:.3f} "
                     f"| {swap} | {', '.join(e.get('fired') or []) or ''} |")
    lines += ["", "Prompts (each token appended): " + "; ".join(f"`{p}`" for p in text["prompts"]), ""]
    return "\n".join(lines + _markdown_tail(doc, images, link_base)).rstrip("\n") + "\n"


def _blind_spot_lines(doc: Mapping[str, Any]) -> list[str]:
    """Under a clean verdict, what it does not rule out (``results.BLIND_SPOTS``, as the report holds them)."""
    if doc.get("verdict") != CLEAN or doc.get("error"):
        return []
    spots = doc.get("blind_spots", BLIND_SPOTS)
    return [f"not ruled out: {spot}" for spot in spots]


def _methods_run(doc: Mapping[str, Any]) -> list[str]:
    """Inversion methods with at least one probed candidate, in report order."""
    return list(dict.fromkeys(c["method"] for c in doc.get("candidates") or []))


def _inversions_line(doc: Mapping[str, Any]) -> str:
    """``inversions: gradient, blackbox; fired: blackbox``: which search found the trigger."""
    text = doc.get("text_trigger")
    if text:
        return (f"searches: vocabulary sweep ({text['vocabulary_size']:,} tokens, {text['encoder_forwards']:,} text-encoder "
                f"passes), behaviour probe ({text.get('probed', 0):,} tokens, two seeds, two steps), screen "
                f"({len(text['screen'])} tokens, a short generation each), generation "
                f"({sum(1 for e in text['evidence'] if e['role'] == 'candidate')} tokens against "
                f"{sum(1 for e in text['evidence'] if e['role'] == 'null')} ordinary ones)")
    return (f"inversions: {', '.join(_methods_run(doc)) or 'none'}; "
            f"fired: {', '.join(doc.get('fired_methods') or []) or 'none'}")


def _class_rows(doc: Mapping[str, Any]) -> list[str]:
    """The class signal's rows of the Markdown summary (one row saying why where unavailable)."""
    if doc.get("class_score") is None:
        why = doc.get("class_unavailable") or "not computed"
        return [f"| class signal | unavailable: {why} |"]
    return [f"| class score (top-class share with the best inverted trigger) | {doc['class_score']:.3f} |",
            f"| class threshold | {doc['class_threshold']:.3f} |",
            f"| control top-class share (no trigger) | {doc['control_class_score']:.3f} |"]


# -------------------------------------------------------------------------------------- SARIF
HF_URI_BASE_ID = "HFREPO"
"""The SARIF ``uriBaseId`` of a Hub model's files: ``originalUriBaseIds`` maps it to the audited
commit on the Hub (``<endpoint>/<repo>/blob/<sha>/``)."""


def to_sarif(doc: Mapping[str, Any] | ScanResult, uri_prefix: str = "") -> str:
    """SARIF 2.1.0 for GitHub code scanning: every result has a rule, a level, a message and a file.

    GitHub rejects a whole upload when one result lacks a location, so the verdict is reported
    on the weights file that was audited, and each static finding on the file it is about. Error
    reports (the audit stopped) carry their findings and an unsuccessful invocation.

    One model, one analysis: ``runs[0].automationDetails.id`` is ``hfaudit/<model>/`` (the repo id,
    or the folder's path in its checkout) and every fingerprint includes the model, so uploads
    for two models never close each other's alerts. A Hub model's files are relative to the base
    ``HFREPO``, the audited commit on the Hub; the relative part stays the same from one commit
    to the next, so an alert follows its file instead of reopening with every commit.

    Args:
        doc: :func:`report_dict` / :func:`error_dict` output (or a ``ScanResult``).
        uri_prefix: Path of a local model folder inside the repository the SARIF is uploaded to
            (e.g. ``models/digits``), so that URIs resolve in that checkout; ``""`` for the root.
            Not used for a Hub model, whose files are relative to its commit.
    """
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    src = doc.get("source") or {}
    rule_ids = list(RULES)
    results: list[tuple[str, str, str, str]] = []
    verdict = doc["verdict"]
    weights = src.get("weights_file") or "model_index.json"
    model, hub_base = sarif_model(src, uri_prefix)
    if verdict == BACKDOOR:
        results.append(("HFA001", ERROR, f"{model}: {verdict_line(doc)}", weights))
    elif verdict == COLLAPSED:
        results.append(("HFA002", WARNING, f"{model}: {verdict_line(doc)}", weights))
    for f in doc.get("findings") or []:
        results.append((f["rule"], f["level"], f["message"], f["path"]))
    prefix = "" if hub_base else uri_prefix.strip("/")
    sarif_results = []
    for rid, level, msg, path in results:
        uri = f"{prefix}/{path}" if prefix else path
        location: dict[str, Any] = {"uri": uri, **({"uriBaseId": HF_URI_BASE_ID} if hub_base else {})}
        key = hashlib.sha256(f"{rid}\0{model}\0{uri}".encode()).hexdigest()[:32]
        sarif_results.append({
            "ruleId": rid, "ruleIndex": rule_ids.index(rid), "level": level, "message": {"text": msg},
            "locations": [{"physicalLocation": {"artifactLocation": location, "region": {"startLine": 1}}}],
            # Our own fingerprint: upload-sarif would otherwise hash the (binary, large) weights file by
            # lines; the model is part of it, so the same file of two models is two alerts.
            "partialFingerprints": {"primaryLocationLineHash": f"{key}:1"},
        })
    invocation: dict[str, Any] = {"executionSuccessful": not doc.get("error"), "exitCode": int(doc["exit_code"])}
    if doc.get("error"):
        invocation["toolExecutionNotifications"] = [{"level": "error", "message": {"text": doc["error"]["message"]}}]
    run: dict[str, Any] = {
        "tool": {"driver": {
            "name": "hfaudit", "version": __version__, "semanticVersion": __version__,
            "informationUri": INFORMATION_URI,
            "rules": [_sarif_rule(RULES[rid]) for rid in rule_ids],
        }},
        "automationDetails": {"id": f"hfaudit/{model}/"},
        "invocations": [invocation],
        "results": sarif_results,
        "properties": {k: doc.get(k) for k in ("verdict", "exit_code", "score", "threshold", "margin", "control_score",
                                               "signals", "class_score", "class_threshold", "control_class_score")
                       if k in doc},
    }
    if hub_base:
        run["originalUriBaseIds"] = {HF_URI_BASE_ID: {
            "uri": hub_base, "description": {"text": f"{model} on the Hugging Face Hub, at the audited commit"}}}
    if src.get("repo_id") and src.get("commit_sha"):
        from hfaudit.constants import hf_endpoint

        run["versionControlProvenance"] = [{"repositoryUri": f"{hf_endpoint()}/{src['repo_id']}",
                                            "revisionId": src["commit_sha"]}]
    sarif = {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    return json.dumps(finite(sarif), indent=2, allow_nan=False) + "\n"


def sarif_model(source: Mapping[str, Any], uri_prefix: str = "") -> tuple[str, str | None]:
    """The model a SARIF run is about, and the Hub URI its files are relative to (None for a folder).

    The model is the Hub repo id (also for an audit that stopped before resolving it: a source
    that is not a local folder), else the folder's path in its git checkout (``uri_prefix``),
    else the folder's name. It names the run's category and is part of every fingerprint.
    """
    repo_id = source.get("repo_id")
    if repo_id:
        from hfaudit.constants import hf_endpoint

        rev = source.get("commit_sha") or source.get("revision") or "main"
        return repo_id, f"{hf_endpoint()}/{repo_id}/blob/{rev}/"
    given = str(source.get("source") or "model")
    prefix = uri_prefix.strip("/")
    if prefix:
        return prefix, None
    folder = Path(given).expanduser()
    if folder.is_dir():
        return folder.resolve().name or "model", None
    return given.strip("/") or "model", None


def _sarif_rule(rule: Rule) -> dict[str, Any]:
    props: dict[str, Any] = {"tags": ["security", "machine-learning"] if rule.security_severity else ["machine-learning"]}
    if rule.security_severity is not None:
        props["security-severity"] = f"{rule.security_severity:.1f}"
    return {
        "id": rule.id, "name": rule.name,
        "shortDescription": {"text": rule.summary}, "fullDescription": {"text": rule.help},
        "help": {"text": rule.help},
        "defaultConfiguration": {"level": rule.level},
        "properties": props,
    }


def sarif_uri_prefix(source: str) -> str:
    """Where a local model folder sits inside its git work tree (``""`` for a Hub repo or no git).

    GitHub resolves SARIF URIs against the root of the checkout, so a model in ``models/digits``
    of the scanned repository needs that prefix on every file it reports.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir():
        return ""
    from hfaudit.hub import git_toplevel

    top = git_toplevel(folder)
    if top is None:
        return ""
    rel = Path(os.path.relpath(folder.resolve(), top.resolve())).as_posix()
    return "" if rel == "." else rel


# ----------------------------------------------------------------------------------- pictures
def pictures(result: ScanResult) -> dict[str, Any]:
    """The PNGs of a scan as PIL images by artifact key (trigger, recovered target, sample grids)."""
    from hfaudit.imageio import make_grid, signed_to_unit, to_pil

    out: dict[str, Any] = {}
    if result.text is not None:  # a caption trigger is a string (in the report), not a picture
        if result.recovered_target is not None:
            out["recovered_target"] = to_pil(result.recovered_target, scale=8)
        for key, name in (("samples_triggered", "trigger"), ("samples_clean", "none")):
            grid = result.samples.get(f"{name}/{result.best_sampler}")
            if grid is not None:
                out[key] = to_pil(make_grid(grid, ncol=int(result.settings["text"]["confirm_seeds"])), scale=4)
        return out
    best = result.best
    if best is not None:
        out["trigger"] = to_pil(signed_to_unit(best.trigger), scale=8)
    if result.recovered_target is not None:
        out["recovered_target"] = to_pil(result.recovered_target, scale=8)
    if best is not None:
        sampler = result.best_probe.sampler
        triggered = result.samples.get(f"{best.name}/{sampler}")
        if triggered is not None:
            out["samples_triggered"] = to_pil(make_grid(triggered), scale=4)
        clean = result.samples.get(f"none/{sampler}")
        if clean is not None:
            out["samples_clean"] = to_pil(make_grid(clean), scale=4)
    return out


# ------------------------------------------------------------------------------------ writing
@dataclass
class Outputs:
    """The output locations of one run, written all-or-nothing, never into the audited model.

    ``output_dir`` gets the PNGs plus ``report.json`` and ``report.md``; ``json_path``,
    ``markdown_path`` and ``sarif_path`` are single files, ``-`` (or ``/dev/stdout``...) meaning
    stdout, for at most one of them. ``source`` is the audited model (local folder or Hub repo id):
    no output may land in it (:mod:`hfaudit.outpaths`). ``clean`` reuses this with its own report dict.

    Raises:
        OutputError: (on construction) two formats sent to stdout.
    """

    output_dir: Path | None = None
    json_path: str | None = None
    markdown_path: str | None = None
    sarif_path: str | None = None
    source: str | None = None
    _protected: list[outpaths.Protected] = field(default_factory=list, repr=False)
    _staging: outpaths.Staging = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._staging = outpaths.Staging(self._protected)
        if self.output_dir is not None:
            self.output_dir = Path(self.output_dir)
        self.json_path, self.markdown_path, self.sarif_path = outpaths.normalize_files(self.files).values()
        if self.source is not None:
            self.protect(self.source)

    @property
    def files(self) -> dict[str, str | None]:
        """The single-file outputs by flag (``--json``, ``--markdown``, ``--sarif``), None where not asked for."""
        return {"--json": self.json_path, "--markdown": self.markdown_path, "--sarif": self.sarif_path}

    @property
    def file_paths(self) -> list[Path]:
        """The single-file outputs (not stdout)."""
        return [Path(p) for p in self.files.values() if p and p != outpaths.STDOUT]

    def protect(self, source: str, local_dir: str | Path | None = None) -> None:
        """Add the model ``source`` (and its resolved ``local_dir``) to the places no output may touch."""
        for entry in outpaths.protected_paths(source, local_dir):
            if entry not in self._protected:
                self._protected.append(entry)

    # -- before the run
    def check_writable(self) -> None:
        """Fail before the (long) scan, not after, when an output location cannot or must not be written.

        Raises:
            OutputError: a parent folder is missing or not writable, a path is a folder, a FIFO or a
                device, ``output_dir`` is a file, or an output lies in the audited model.
        """
        outpaths.check_files(self.files, self._protected)
        if self.output_dir is not None:
            outpaths.check_output_dir(self.output_dir, self._protected)

    # -- during the run
    @contextlib.contextmanager
    def guard(self, source: str, revision: str | None = None) -> Iterator[Outputs]:
        """Wrap a run: an hfaudit error still gets its error report; anything else (Ctrl-C) leaves nothing.

        On ``HfAuditError`` (not found, unsupported, unsafe...) the requested reports are written
        from :func:`error_dict`, so a CI job still gets SARIF findings and the exit code; on any
        other exception, ``KeyboardInterrupt`` included, every file and folder this run created is
        removed and earlier files at the same paths are left as they were. ``source`` is protected.
        """
        self.protect(source)
        try:
            yield self
        except HfAuditError as exc:
            self.discard()
            if not isinstance(exc, OutputError):
                with contextlib.suppress(HfAuditError, OSError):
                    self.write_doc(error_dict(exc, source, revision))
            raise
        except BaseException:
            self.discard()
            raise

    def write_scan(self, result: ScanResult) -> None:
        """Write every requested output of a finished scan (PNGs first, so the reports name them).

        The model as resolved (``result.source``) is protected again first: its folder is known now.

        Raises:
            OutputError: an output cannot be written, or lies in the audited model (nothing written).
        """
        self.protect(result.source.repo_id or result.source.source)
        if self.output_dir is not None:
            outpaths.check_not_protected(self.output_dir, self._protected, name="--output-dir")
            for key, image in pictures(result).items():
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                dest = self.output_dir / PICTURES[key][0]
                self.stage(dest, buf.getvalue())
                result.artifacts[key] = str(dest)
        self.write_doc(report_dict(result))

    def write_doc(self, doc: dict[str, Any]) -> None:
        """Render ``doc`` into every requested format, stage all of it, then commit at once."""
        if self.output_dir is not None:
            doc["artifacts"].update(report_json=str(self.output_dir / "report.json"),
                                    report_md=str(self.output_dir / "report.md"))
        if self.output_dir is not None:
            self.stage(self.output_dir / "report.json", to_json(doc))
            self.stage(self.output_dir / "report.md", to_markdown(doc, link_base=str(self.output_dir)))
        if self.json_path:
            self.stage(self.json_path, to_json(doc))
        if self.markdown_path:
            self.stage_markdown(doc)
        if self.sarif_path:
            self.stage_sarif(doc)
        self.commit()

    def stage_markdown(self, doc: Mapping[str, Any]) -> None:
        """Stage the Markdown report of ``doc`` at ``markdown_path``, its links relative to that file."""
        base = "." if self.markdown_path == outpaths.STDOUT else str(Path(self.markdown_path).parent)
        self.stage(self.markdown_path, to_markdown(doc, link_base=base))

    def stage_sarif(self, doc: Mapping[str, Any]) -> None:
        """Stage the SARIF of ``doc`` at ``sarif_path``, URIs relative to the model's git work tree."""
        self.stage(self.sarif_path, to_sarif(doc, uri_prefix=sarif_uri_prefix(doc["source"]["source"])))

    # -- staging: outpaths.Staging, all-or-nothing
    def stage(self, path: str | Path, data: str | bytes) -> None:
        """Stage ``data`` for ``path`` (see :meth:`hfaudit.outpaths.Staging.stage`)."""
        self._staging.stage(path, data)

    def commit(self) -> None:
        """Move every staged file into place, then print what was meant for stdout."""
        self._staging.commit()

    def discard(self) -> None:
        """Remove every staged temp file and every folder this run created."""
        self._staging.discard()


def check_writable(paths: list[str], output_dir: str | Path | None, source: str | None = None) -> None:
    """Fail early when outputs cannot or must not be written (files, ``-`` skipped, and an output folder).

    Raises:
        OutputError: an output location cannot be written, or lies in the model ``source``.
    """
    protected = outpaths.protected_paths(source) if source is not None else []
    for p in paths:
        outpaths.check_file(p, protected)
    if output_dir is not None:
        outpaths.check_output_dir(output_dir, protected)


def write_reports(result: ScanResult, output_dir: str | Path | None = None, json_path: str | None = None,
                  markdown_path: str | None = None, sarif_path: str | None = None) -> None:
    """Write every requested output of a finished scan, all-or-nothing (see :class:`Outputs`).

    Raises:
        OutputError: an output cannot be written, or lies in the audited model (nothing of this call
            is left behind).
    """
    outputs = Outputs(output_dir=Path(output_dir) if output_dir is not None else None, json_path=json_path,
                      markdown_path=markdown_path, sarif_path=sarif_path)
    try:
        outputs.write_scan(result)
    except BaseException:
        outputs.discard()
        raise


def write_clean_reports(result: CleanResult, json_path: str | None = None, markdown_path: str | None = None,
                        sarif_path: str | None = None) -> None:
    """Write the requested reports of a finished ``clean`` (a ``CleanResult``), all-or-nothing.

    JSON is the whole clean report; Markdown is the model card's text (or, with nothing removed, the
    scan's report); SARIF holds the findings of the scan of the *source* model, since that is what a
    code-scanning alert is about.

    Raises:
        OutputError: an output cannot be written, or lies in the source model (nothing of this call
            is left behind).
    """
    from hfaudit.card import card_text  # here, not at the top: a scan's reports need no model card
    from hfaudit.clean_results import NOTHING_TO_REMOVE

    outputs = Outputs(json_path=json_path, markdown_path=markdown_path, sarif_path=sarif_path,
                      source=result.source.repo_id or result.source.source)
    try:
        if outputs.json_path:
            outputs.stage(outputs.json_path, to_json(result.to_dict()))
        if outputs.markdown_path and result.status == NOTHING_TO_REMOVE:
            outputs.stage_markdown(report_dict(result.scan))
        elif outputs.markdown_path:
            outputs.stage(outputs.markdown_path, card_text(result))
        if outputs.sarif_path:
            outputs.stage_sarif(report_dict(result.scan))
        outputs.commit()
    except BaseException:
        outputs.discard()
        raise
