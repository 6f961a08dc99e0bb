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
from hfaudit.results import BACKDOOR, BLIND_SPOTS, CLASS_SIGNAL, CLEAN, COLLAPSE_SIGNAL, COLLAPSED, ScanResult
from hfaudit.safety import ERROR, RULES, WARNING, Finding, Rule

if TYPE_CHECKING:
    from hfaudit.clean_results import CleanResult

VERDICT_STYLE = {BACKDOOR: "bold red", COLLAPSED: "bold yellow", CLEAN: "bold green"}
VERDICT_ICON = {BACKDOOR: "🔴", COLLAPSED: "🟡", CLEAN: "🟢"}
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SARIF_SCHEMA_FILE = Path(__file__).parent / "schemas" / "sarif-2.1.0.json"
"""The official OASIS schema, vendored (see ``hfaudit/schemas/README.md``)."""
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
    """The full report of a finished scan as a JSON-ready dict (what ``report.json`` holds)."""
    return {"hfaudit_version": __version__, **result.to_dict(), "error": None}


def error_dict(exc: HfAuditError, source: str, revision: str | None = None) -> dict[str, Any]:
    """The report of an audit that stopped on ``exc``: verdict and exit code agree, findings kept."""
    code = int(exc.exit_code)
    findings = [f.to_dict() if isinstance(f, Finding) else dict(f) for f in exc.findings]
    return {
        "hfaudit_version": __version__, "tool": "hfaudit", "verdict": error_verdict(code), "exit_code": code,
        "error": {"type": type(exc).__name__, "message": str(exc)},
        "source": {"source": source, "repo_id": None, "revision": revision, "commit_sha": None,
                   "pipeline_class": None, "weights_file": None},
        "findings": findings, "artifacts": {},
    }


def verdict_line(doc: Mapping[str, Any] | ScanResult) -> str:
    """One sentence a person reads first."""
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    verdict = doc["verdict"]
    if doc.get("error"):
        return f"{verdict.upper()}: {doc['error']['message']}"
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


def _class_name(best: Mapping[str, Any]) -> str:
    return f" ({best['top_class']})" if best.get("top_class") is not None else ""


def _share(modes: Mapping[str, Any] | None) -> str:
    """A probe's top-class share for a table cell: ``0.94 (8)``, or ``n/a`` where unavailable."""
    if not modes:
        return "n/a"
    return f"{modes['top_share']:.2f}" + (f" ({modes['top_class']})" if modes.get("top_class") is not None else "")


# --------------------------------------------------------------------------------------- Rich
def render_rich(result: ScanResult, console: Console | None = None) -> None:
    """Print the summary table, the findings and the verdict to ``console`` (stderr by default)."""
    console = console or Console(stderr=True)
    doc = report_dict(result)  # the lines shared with the Markdown report read the report's dict
    src = result.source
    table = Table(title=f"hfaudit scan: {src.source}", show_lines=False)
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
    console.print(table)
    pin = src.commit_sha or "local folder"
    total = result.timings.get("total", sum(result.timings.values()))
    console.print(f"model: {src.pipeline_class}, {src.weights_file}, {pin}; {result.unet_evaluations} UNet "
                  f"evaluations in {total:.1f} s on {result.settings.get('device')}", highlight=False)
    console.print(_inversions_line(doc), highlight=False)
    for f in result.findings:
        console.print(f"  {f.level}: {f.message} [{f.rule}]", highlight=False, markup=False)
    console.print(verdict_line(doc), style=VERDICT_STYLE.get(result.verdict), highlight=False)
    for line in _blind_spot_lines(doc):
        console.print(f"  {line}", highlight=False, markup=False)
    for name, path in result.artifacts.items():
        console.print(f"  {name}: {path}", highlight=False)


def render_clean_rich(result: CleanResult, console: Console | None = None) -> None:
    """Print a finished ``clean``'s summary to ``console`` (stderr by default): its verdict line first."""
    from hfaudit.card import summary_lines

    console = console or Console(stderr=True)
    style = "bold green" if result.passed else "bold red"
    for i, line in enumerate(summary_lines(result)):
        console.print(line, style=style if i == 0 or line.startswith("problem") else None, highlight=False,
                      soft_wrap=True)


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
        lines = [f"## {icon} hfaudit: `{name}` is **{verdict}** (exit {doc['exit_code']})", "", verdict_line(doc), "",
                 *spots, *([""] if spots else []),
                 "| | |", "|---|---|",
                 f"| score (MSCR with the best inverted trigger) | {doc['score']:.3f} |",
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
    return "\n".join(lines).rstrip("\n") + "\n"


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
def to_sarif(doc: Mapping[str, Any] | ScanResult, uri_prefix: str = "") -> str:
    """SARIF 2.1.0 for GitHub code scanning: every result has a rule, a level, a message and a file.

    GitHub rejects a whole upload when one result lacks a location, so the verdict is reported
    on the weights file that was audited, and each static finding on the file it is about. Error
    reports (the audit stopped) carry their findings and an unsuccessful invocation.

    Args:
        doc: :func:`report_dict` / :func:`error_dict` output (or a ``ScanResult``).
        uri_prefix: Path of the model folder inside the repository the SARIF is uploaded to
            (e.g. ``models/digits``), so that URIs resolve in that checkout; ``""`` for the root.
    """
    doc = report_dict(doc) if isinstance(doc, ScanResult) else doc
    src = doc.get("source") or {}
    rule_ids = list(RULES)
    results: list[tuple[str, str, str, str]] = []
    verdict = doc["verdict"]
    weights = src.get("weights_file") or "model_index.json"
    if verdict == BACKDOOR:
        results.append(("HFA001", ERROR, verdict_line(doc), weights))
    elif verdict == COLLAPSED:
        results.append(("HFA002", WARNING, verdict_line(doc), weights))
    for f in doc.get("findings") or []:
        results.append((f["rule"], f["level"], f["message"], f["path"]))
    prefix = uri_prefix.strip("/")
    sarif_results = []
    for rid, level, msg, path in results:
        uri = f"{prefix}/{path}" if prefix else path
        key = hashlib.sha256(f"{rid}\0{uri}".encode()).hexdigest()[:32]
        sarif_results.append({
            "ruleId": rid, "ruleIndex": rule_ids.index(rid), "level": level, "message": {"text": msg},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}}}],
            # Our own fingerprint: upload-sarif would otherwise hash the (binary, large) weights file by lines.
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
        "invocations": [invocation],
        "results": sarif_results,
        "properties": {k: doc.get(k) for k in ("verdict", "exit_code", "score", "threshold", "margin", "control_score",
                                               "signals", "class_score", "class_threshold", "control_class_score")
                       if k in doc},
    }
    if src.get("repo_id") and src.get("commit_sha"):
        from hfaudit.constants import hf_endpoint

        run["versionControlProvenance"] = [{"repositoryUri": f"{hf_endpoint()}/{src['repo_id']}",
                                            "revisionId": src["commit_sha"]}]
    sarif = {"$schema": SARIF_SCHEMA_URI, "version": "2.1.0", "runs": [run]}
    return json.dumps(finite(sarif), indent=2, allow_nan=False) + "\n"


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
