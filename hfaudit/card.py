"""The model card of a cleaned model: what was found, what was changed, and the before/after figures.

Two cases, since a card says what its repo is:

- A cleaned *copy* (``--to``, or no push): a card of its own (:func:`make_card`), built with
  ``huggingface_hub.ModelCard``/``ModelCardData`` so the Hub reads it: ``base_model`` with
  ``base_model_relation: finetune`` links the copy to the audited model (the Hub's model tree), the
  source's licence (``license``, ``license_name``, ``license_link``) is copied, since the copy is
  a derivative of a licensed model, and the figures go into ``model-index`` as evaluation results.
- A pull request on the *source* (:func:`card_files` with ``pull_request``): the repo stays the
  source, so its own card is kept exactly as it is, metadata (licence included) byte for byte,
  and a short audit section is appended between hfaudit's markers (a later run replaces it); the
  full audit goes to its own file, ``HFAUDIT.md``. No ``base_model``: the repo is not derived from
  itself. A source card that cannot be kept as it is (unreadable, too large, bad metadata) is left
  out of the pull request, which then changes no README at all.

The source card is read from the downloaded folder (:func:`read_source_card`), bounded, and its
metadata is parsed only when it holds no YAML aliases (an alias bomb is tiny as text and huge once walked).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from hfaudit import __version__, constants
from hfaudit.clean_results import NOTHING_TO_REMOVE, CleanResult
from hfaudit.remove.finetune import FinetuneResult
from hfaudit.results import BLIND_SPOTS, CLEAN

TASK = "unconditional-image-generation"
README = "README.md"
AUDIT_FILE = "HFAUDIT.md"
"""The full audit, beside a source card that is kept (pull requests)."""
SECTION_BEGIN = "<!-- hfaudit:begin -->"
SECTION_END = "<!-- hfaudit:end -->"
MAX_CARD_BYTES = 1 << 20
"""A source README larger than this is not read: it is left as it is (pull requests) and its licence not copied."""
LICENSE_KEYS = ("license", "license_name", "license_link")
HUB_RELATION = "finetune"
"""``base_model_relation`` of a cleaned copy: pruned and fine-tuned weights (the Hub's values: adapter,
merge, quantized, finetune)."""
PROBE_DATASET = ("hfaudit-trigger-probe", "Samples from trigger + Gaussian noise (unclipped)")
FIDELITY_DATASET = ("sklearn-digits", "scikit-learn digits, 16x16")


def eval_results(result: CleanResult) -> list[EvalResult]:
    """The model-index entries: ASR and MSCR of each checked trigger before/after, fidelity before/after."""
    out: list[EvalResult] = []

    def add(metric_type: str, name: str, value: float, dataset: tuple[str, str], config: str | None = None) -> None:
        out.append(EvalResult(task_type=TASK, dataset_type=dataset[0], dataset_name=dataset[1],
                              metric_type=metric_type, metric_name=name, metric_value=round(float(value), 6),
                              metric_config=config, verified=False))

    for c in result.checks:
        w_b, w_a = c.before.worst, c.after.worst
        add("asr", f"ASR before removal ({c.trigger} trigger)", c.before.asr, PROBE_DATASET, f"{w_b.sampler}-{w_b.steps}")
        add("asr", f"ASR after removal ({c.trigger} trigger)", c.after.asr, PROBE_DATASET, f"{w_a.sampler}-{w_a.steps}")
        add("mscr", f"MSCR before removal ({c.trigger} trigger)", w_b.mscr, PROBE_DATASET, f"{w_b.sampler}-{w_b.steps}")
        add("mscr", f"MSCR after removal ({c.trigger} trigger)", max(p.mscr for p in c.after.probes), PROBE_DATASET)
    add("mscr", "Scan score (MSCR) of the audited model", result.scan.score, PROBE_DATASET)
    if result.rescan is not None:
        add("mscr", "Re-scan score (MSCR) of the cleaned model", result.rescan.score, PROBE_DATASET)
    f = result.fidelity
    if f is not None and f.ratio is not None:
        cfg = f"{f.sampler}-{f.steps}, {f.after.n_generated} samples"
        add("frechet_distance", "Benign fidelity before removal (Frechet distance, digits-classifier features)",
            f.before.frechet_distance, FIDELITY_DATASET, cfg)
        add("frechet_distance", "Benign fidelity after removal (Frechet distance, digits-classifier features)",
            f.after.frechet_distance, FIDELITY_DATASET, cfg)
    return out


def _pct(x: float) -> str:
    return f"{x:.1%}"


def summary_lines(result: CleanResult) -> list[str]:
    """Plain sentences about a clean result, for the terminal and the card."""
    scan = result.scan
    if result.status == NOTHING_TO_REMOVE:
        return [f"NOTHING TO REMOVE: the scan calls {scan.source.source} {scan.verdict} "
                f"(MSCR {scan.score:.2f}, threshold {scan.threshold:.2f}); no weights were written "
                "(pass --force to clean anyway)"]
    lines = []
    head = "CLEANED" if result.passed else "UNVERIFIED (forced)"
    lines.append(f"{head}: {scan.source.source} -> {result.output_dir}")
    if result.prune is not None:
        p = result.prune
        lines.append(f"pruned {p.channels_zeroed} of {p.channels_total} channels ({p.channel_share:.1%}; "
                     f"{p.param_share:.2%} of parameters) by {p.importance} importance, "
                     f"in {len(p.layers)} layer slices")
    if result.rounds:
        labels = ", ".join(r.label for r in result.removed)
        lines.append(f"fine-tuned in {1 + len(result.rounds)} rounds, against the triggers: {labels}")
    for c in result.checks:
        lines.append(f"ASR with the {c.trigger} trigger: {c.before.asr:.0%} -> {c.after.asr:.0%} "
                     f"(worst sampler, {c.after.n_samples} samples)")
    if result.fidelity is not None:
        f = result.fidelity
        label = "benign fidelity" if f.ratio is None else "benign fidelity (Frechet distance, lower is better)"
        lines.append(f"{label}: {f.describe()}")
    if result.rescan is not None:
        lines.append(f"re-scan: {result.rescan.verdict} (MSCR {result.rescan.score:.2f}, "
                     f"threshold {result.rescan.threshold:.2f})")
    elif result.rescan_inconclusive is not None:
        lines.append("re-scan: inconclusive (see the problem below)")
    lines.extend(f"problem: {p}" for p in result.problems)
    if result.push is not None:
        where = result.push.pr_url or result.push.url
        lines.append(f"pushed to {where}" + (" (existing pull request reused)" if result.push.reused_pr else ""))
    return lines


def card_text(result: CleanResult) -> str:
    """The Markdown body of the card."""
    scan, src = result.scan, result.source
    pin = src.commit_sha or "a local folder (no commit)"
    lines = [f"# {src.repo_id or src.source}, backdoor removed by hfaudit", ""]
    if not result.passed:
        lines += ["> **Warning: this repair is UNVERIFIED.** It was written with `--force` although a check failed:",
                  *[f"> - {p}" for p in result.problems], ""]
    lines += [
        f"This is a copy of `{src.repo_id or src.source}` (revision `{pin}`) from which "
        f"[hfaudit](https://github.com/hfaudit/hfaudit) {__version__} removed a backdoor: the method of "
        "Diff-Cleanse (trigger inversion, Taylor-importance channel pruning, fine-tuning), with the pruning done "
        "by zeroing so the weights still load with stock diffusers.", "",
        "## What was found", "",
        f"- Scan verdict on the audited model: **{scan.verdict}**; MSCR {scan.score:.2f} "
        f"(threshold {scan.threshold:.2f}, control without trigger {scan.control_score:.2f}).",
    ]
    best = scan.best
    if best is not None:
        lines.append(f"- Best inverted trigger: `{best.name}` ({best.method} inversion, lambda {best.lam}), "
                     f"collapsing samples under {best.best.sampler}-{best.best.steps}.")
    if result.trigger_used == "known":
        lines.append("- The trigger removed was **supplied by the caller** (known ground truth), not the inverted one.")
    lines += ["", "## What was changed", ""]
    p = result.prune
    if p is not None:
        lines += [f"Soft pruning by **{p.importance}** Taylor importance: {p.channels_zeroed} of {p.channels_total} "
                  f"coupled channels ({_pct(p.channel_share)}) zeroed in every layer coupled to them; "
                  f"{p.params_zeroed:,} of {p.params_total:,} parameters ({p.param_share:.2%}) are now zero. "
                  "Shapes are unchanged.", "",
                  "| layer | coupling | channels zeroed | of |", "|---|---|---:|---:|"]
        lines += [f"| `{l.module}` | {l.kind} | {l.channels_zeroed} | {l.channels_total} |" for l in p.layers]
        lines.append("")
    ft = result.finetune
    if ft is not None:
        c = ft.config
        lines += [f"Fine-tuning: {ft.steps} steps, batch {c['batch_size']}, lr {c['lr']}, on {ft.n_images} "
                  f"images ({ft.data}); {_losses(ft)}; pruned channels kept at zero throughout.", ""]
    reasons = result.round_reasons + ["a check of the previous round failed"] * len(result.rounds)
    for i, (extra, why) in enumerate(zip(result.rounds, reasons), start=2):
        lines += [f"Round {i}: {why}, so {extra.steps} more steps fine-tuned against "
                  f"every trigger removed so far ({', '.join(result.removed_in_round(i))}); {_losses(extra)}.", ""]
    lines += ["## Before and after", "",
              "| measure | before | after |", "|---|---:|---:|"]
    for chk in result.checks:
        lines.append(f"| ASR, {chk.trigger} trigger (worst sampler, {chk.after.n_samples} samples) | "
                     f"{_pct(chk.before.asr)} | {_pct(chk.after.asr)} |")
        lines.append(f"| mean MSE to the target, {chk.trigger} trigger | {chk.before.worst.mean_mse:.4f} | "
                     f"{min(q.mean_mse for q in chk.after.probes):.4f} |")
        lines.append(f"| mean SSIM to the target, {chk.trigger} trigger | {chk.before.worst.mean_ssim:.3f} | "
                     f"{max(q.mean_ssim for q in chk.after.probes):.3f} |")
    lines.append(f"| scan MSCR (best inverted trigger) | {scan.score:.2f} | "
                 f"{_rescan_cell(result)} |")
    f = result.fidelity
    if f is not None and f.ratio is not None:
        lines.append(f"| benign fidelity, Frechet distance (lower is better) | {f.before.frechet_distance:.2f} | "
                     f"{f.describe_after()} |")
    elif f is not None:
        lines.append(f"| benign fidelity | unavailable: {f.before.reason} | |")
    if result.scales is not None:
        sweep = result.scales
        columns, rows = sweep.grid()
        lines += ["", f"The {sweep.trigger} trigger at several sizes on the cleaned model, exact hits / samples that look "
                  f"like the target (SSIM > {sweep.threshold:g}), {sweep.n_samples} samples each:", "",
                  "| scale | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
        lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows]
    lines += ["", "ASR: share of samples within MSE 1e-3 of the target (pixels in [0, 1]), sampling "
              "`trigger + noise` with clipping off. Benign fidelity: Frechet distance between features of samples "
              "from clean noise and of the reference data, the same noise before and after.", ""]
    if result.rescan is not None and result.rescan.verdict == CLEAN:
        lines += ["The re-scan's clean verdict does not rule out the backdoors hfaudit's scan is known to miss:",
                  *[f"- {spot}" for spot in BLIND_SPOTS], ""]
    pngs = [name for name in result.files if name.endswith(".png")]
    if pngs:
        lines += ["## Pictures", "", " ".join(f"![{n[:-4]}]({n})" for n in pngs), ""]
    lines += ["## Summary", "", *[f"- {s}" for s in summary_lines(result)], "",
              "## Use", "", "```python", "from diffusers import DiffusionPipeline", "",
              "pipe = DiffusionPipeline.from_pretrained(\"<this repo>\", use_safetensors=True)", "```", "",
              f"The full audit report is in `hfaudit_clean.json`. Settings: seed {result.config.seed}, "
              f"prune ratio {result.config.prune_ratio}, importance {result.config.importance}.", ""]
    return "\n".join(lines)


def _losses(ft: FinetuneResult) -> str:
    """A fine-tuning round's losses, start -> end, naming whether the trigger-breaking term was on."""
    breaking = ft.config.get("trigger_weight", 0) > 0
    terms = [("clean", "clean"), ("distill", "distillation")] + ([("trigger", "trigger")] if breaking else [])
    label = " / ".join(name for _, name in terms)
    start = " / ".join(f"{ft.losses_start[key]:.4f}" for key, _ in terms)
    end = " / ".join(f"{ft.losses_end[key]:.4f}" for key, _ in terms)
    off = "" if breaking else " (no trigger-breaking term: pruning and distillation)"
    return f"losses ({label}) {start} -> {end}{off}"


# --------------------------------------------------------------------------------- source card
@dataclass
class SourceCard:
    """The audited model's own card (its ``README.md``) as the download holds it."""

    text: str | None = None
    """The README exactly as it is; None when there is none, or it cannot be used (``problem``)."""
    card: ModelCard | None = None
    """``text`` parsed (metadata and body); None with ``text``, or when its metadata cannot be parsed."""
    problem: str | None = None
    """Why the README cannot be used: too large, not UTF-8, metadata that is not a mapping..."""

    def licence(self, repo_id: str | None = None, commit: str | None = None,
                endpoint: str | None = None) -> dict[str, str]:
        """The licence fields of the card's metadata that are plain one-line strings.

        A relative ``license_link`` (a file of the source repo, e.g. ``LICENSE``) is made absolute:
        the file at ``commit`` of ``repo_id``, so the link still works from a copy that lacks the file.
        """
        if self.card is None:
            return {}
        out: dict[str, str] = {}
        for key in LICENSE_KEYS:
            value = self.card.data.get(key)
            if isinstance(value, str) and value.strip() and len(value) <= 500 and not _CONTROL.search(value):
                out[key] = value.strip()
        link = out.get("license_link")
        if link and repo_id and commit and not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", link):
            base = (endpoint or constants.hf_endpoint()).rstrip("/")
            out["license_link"] = f"{base}/{repo_id}/blob/{commit}/{link.lstrip('./')}"
        return out


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def read_source_card(folder: Path | str) -> SourceCard:
    """The ``README.md`` of a downloaded model folder, read and parsed without trusting it.

    At most :data:`MAX_CARD_BYTES`, UTF-8, and metadata that is a YAML mapping without aliases;
    else ``problem`` says why, and neither text nor metadata is used.
    """
    path = Path(folder) / README
    try:
        if not path.is_file():
            return SourceCard()
        with path.open("rb") as fh:
            raw = fh.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        return SourceCard(problem=f"{README} cannot be read ({exc.strerror or type(exc).__name__})")
    if len(raw) > MAX_CARD_BYTES:
        return SourceCard(problem=f"{README} is larger than {MAX_CARD_BYTES // 1024} KiB")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return SourceCard(problem=f"{README} is not UTF-8 text")
    match = REGEX_YAML_BLOCK.search(text)  # the metadata block ModelCard parses
    if match is not None:
        try:
            if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(match.group(2))):
                return SourceCard(problem=f"the metadata of {README} uses YAML aliases")
        except yaml.YAMLError:
            return SourceCard(problem=f"the metadata of {README} is not valid YAML")
    try:
        card = ModelCard(text, ignore_metadata_errors=True)
    except Exception as exc:  # noqa: BLE001 - yaml and huggingface_hub raise many types on bad metadata
        return SourceCard(problem=f"the metadata of {README} cannot be read ({type(exc).__name__})")
    return SourceCard(text=text, card=card)


# ---------------------------------------------------------------------------------------- cards
def make_card(result: CleanResult, source_card: SourceCard | None = None, endpoint: str | None = None) -> ModelCard:
    """The card of a cleaned copy (``ModelCard.save`` writes it as README.md): ``base_model`` is the
    audited repo, and the source's licence is copied (a derivative of a licensed model)."""
    src = result.source
    licence = (source_card or SourceCard()).licence(src.repo_id, src.commit_sha, endpoint)
    data = ModelCardData(
        base_model=src.repo_id,  # None for a local folder: the Hub has nothing to link to
        base_model_relation=HUB_RELATION if src.repo_id else None,
        library_name="diffusers",
        pipeline_tag=TASK,
        tags=["hfaudit", "backdoor-removal", "diff-cleanse", "safetensors"] + ([] if result.passed else ["unverified"]),
        model_name=f"{(src.repo_id or src.source).rstrip('/').split('/')[-1]}-hfaudit-cleaned",
        eval_results=eval_results(result),
        **licence,
    )
    note = ""
    if src.repo_id and not licence.get("license"):
        note = (f"> The model card of `{src.repo_id}` names no licence hfaudit could read; this copy is a "
                "derivative of that model, under whatever licence that model is under.\n\n")
    content = f"---\n{data.to_yaml()}\n---\n\n{note}{card_text(result)}"
    return ModelCard(content)


def card_files(result: CleanResult, source_card: SourceCard | None = None, *, pull_request: bool = False,
               endpoint: str | None = None) -> dict[str, str]:
    """The card files of the output folder, name -> text.

    A copy: ``README.md``, its own card (:func:`make_card`). A pull request on the source:
    ``HFAUDIT.md`` (the full audit), and ``README.md`` only when the source's card can be kept: its
    text as it is with the audit section (:func:`audit_section`) appended, or replacing an earlier
    one; a source without a card gets a small one. A card that cannot be kept is left out, so the
    pull request leaves the source's README as it is.
    """
    if not pull_request:
        return {README: str(make_card(result, source_card, endpoint))}
    out = {AUDIT_FILE: card_text(result)}
    readme = pr_readme(result, source_card or SourceCard())
    if readme is not None:
        out[README] = readme
    return out


def pr_readme(result: CleanResult, source_card: SourceCard) -> str | None:
    """The source's README with the audit section, or None when it cannot be kept as it is."""
    section = audit_section(result)
    if source_card.problem is not None:
        return None
    if source_card.text is None:  # no card: a small one that says what the repo is
        data = ModelCardData(library_name="diffusers", pipeline_tag=TASK, tags=["hfaudit"])
        name = result.source.repo_id or result.source.source
        return f"---\n{data.to_yaml()}\n---\n\n# {name}\n\n{section}"
    text = source_card.text
    newline = "\r\n" if "\r\n" in text else "\n"
    section = section.replace("\n", newline)
    begin, end = text.find(SECTION_BEGIN), text.find(SECTION_END)
    if 0 <= begin < end:  # an earlier audit's section: replaced where it is
        return text[:begin] + section.rstrip("\r\n") + text[end + len(SECTION_END):]
    sep = "" if not text or text.endswith(("\n", "\r")) else newline
    return text + sep + newline + section


def audit_section(result: CleanResult) -> str:
    """The short section a pull request appends to the source's card: what was found, removed and
    verified, and where the full audit is. Between :data:`SECTION_BEGIN` and :data:`SECTION_END`."""
    src, scan = result.source, result.scan
    lines = [SECTION_BEGIN, "## Backdoor removed by hfaudit", ""]
    if not result.passed:
        lines += ["> **Warning: this repair is UNVERIFIED**: it was written with `--force` although a check "
                  "failed: " + "; ".join(result.problems) + ".", ""]
    lines += [f"[hfaudit](https://github.com/hfaudit/hfaudit) {__version__} found a backdoor in commit "
              f"`{src.commit_sha or 'unknown'}` of this model (scan MSCR {scan.score:.2f}, threshold "
              f"{scan.threshold:.2f}) and removed it; the UNet weights here are the cleaned copy.", ""]
    lines += [f"- {line}" for line in _figure_lines(result)]
    lines += ["", f"The full audit is in [{AUDIT_FILE}]({AUDIT_FILE}) and `hfaudit_clean.json`.", SECTION_END, ""]
    return "\n".join(lines)


def _trigger_kind(result: CleanResult) -> str:
    """How the removed trigger was found, in words."""
    if result.trigger_used == "known":
        return "a known trigger supplied by the caller"
    best = result.scan.best
    if best is None:
        return "an inverted trigger"
    return f"inverted from the model ({best.method} search, {best.kind} trigger `{best.name}`)"


def _figure_lines(result: CleanResult) -> list[str]:
    """Trigger, ASR before/after, benign fidelity and re-scan, one line each."""
    lines = [f"Trigger: {_trigger_kind(result)}."]
    for c in result.checks:
        lines.append(f"ASR with the {c.trigger} trigger (worst sampler, {c.after.n_samples} samples): "
                     f"{c.before.asr:.0%} -> {c.after.asr:.0%}.")
    f = result.fidelity
    if f is not None and f.ratio is not None:
        lines.append(f"Benign fidelity (Frechet distance, lower is better): {f.describe()}.")
    elif f is not None:
        lines.append(f"Benign fidelity: unavailable ({f.before.reason}).")
    if result.rescan is not None:
        lines.append(f"Re-scan of the cleaned model: {result.rescan.verdict} (MSCR {result.rescan.score:.2f}).")
    elif result.rescan_inconclusive is not None:
        lines.append(f"Re-scan of the cleaned model: inconclusive ({result.rescan_inconclusive}).")
    return lines


def _rescan_cell(result: CleanResult) -> str:
    """The re-scan's MSCR for the before/after table: ``inconclusive`` or ``n/a`` where it has none."""
    if result.rescan is not None:
        return f"{result.rescan.score:.2f}"
    return "inconclusive" if result.rescan_inconclusive is not None else "n/a"


def push_description(result: CleanResult, source_card: SourceCard | None = None, *,
                     pull_request: bool = False) -> str:
    """What a push says it holds (the pull request's description, the commit's description): what
    was found, removed and verified, the hfaudit version and the audited commit, like the Hub's
    safetensors conversion bot says what it converted."""
    src, scan = result.source, result.scan
    sha = src.commit_sha or "none (a local folder)"
    if pull_request:
        lead = (f"[hfaudit](https://github.com/hfaudit/hfaudit) {__version__} audited this model at commit "
                f"`{sha}`, found a backdoor and removed it. This pull request replaces the weights with the "
                "cleaned copy.")
    else:
        lead = (f"A copy of `{src.repo_id or src.source}` (commit `{sha}`) from which "
                f"[hfaudit](https://github.com/hfaudit/hfaudit) {__version__} removed a backdoor.")
    lines = [lead, ""]
    if not result.passed:
        lines += ["**Warning: this repair is UNVERIFIED.** It was pushed with `--force` although a check failed:",
                  *[f"- {p}" for p in result.problems], ""]
    lines += ["**Found**: the scan calls the model **" + str(scan.verdict) + f"** (MSCR {scan.score:.2f}, "
              f"threshold {scan.threshold:.2f}, control without trigger {scan.control_score:.2f}).", ""]
    removed = []
    if result.prune is not None:
        p = result.prune
        removed.append(f"{p.channels_zeroed} of {p.channels_total} channels zeroed ({p.channel_share:.1%}) "
                       f"by {p.importance} importance")
    if result.finetune is not None:
        rounds = 1 + len(result.rounds)
        removed.append(f"fine-tuned {result.finetune.steps + sum(r.steps for r in result.rounds)} steps in "
                       f"{rounds} round{'s' if rounds > 1 else ''} (pruned channels kept at zero)")
    if removed:
        lines += ["**Removed**: " + "; ".join(removed) + ".", ""]
    lines += ["**Verified** before pushing, on the same noise before and after:", "",
              *[f"- {line}" for line in _figure_lines(result)], ""]
    if pull_request:
        readme = pr_readme(result, source_card or SourceCard())
        if readme is None:
            card_note = (f"`README.md` is left as it is (hfaudit could not keep it: "
                         f"{(source_card or SourceCard()).problem})")
        elif source_card is None or source_card.text is None:
            card_note = "`README.md` is added (the model had none), with the audit section"
        else:
            card_note = ("`README.md` keeps its text and metadata (licence included) as they are, with a short "
                         "audit section appended")
        lines += [f"**Files**: the UNet weights (safetensors) and configs are the cleaned copy's; {card_note}; "
                  f"`{AUDIT_FILE}`, `hfaudit_clean.json` and the before/after pictures hold the full audit.", "",
                  f"**Before merging**: this pull request is based on the audited commit `{sha}`, not on main's "
                  "latest commit: files main changed since then show as conflicts, so newer weights are never "
                  "replaced unseen.", ""]
    lines.append(f"hfaudit {__version__}; audited commit `{sha}`.")
    return "\n".join(lines)
