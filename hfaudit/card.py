"""The model card of a cleaned model: what was found, what was changed, and the before/after figures.

Built with ``huggingface_hub.ModelCard``/``ModelCardData`` so the Hub reads it: ``base_model`` with
``base_model_relation: finetune`` links the cleaned copy to the audited model, and the figures go
into ``model-index`` as evaluation results (ASR before/after, MSCR before/after, benign fidelity
before/after), so they show on the model page and stay machine-readable.
"""

from __future__ import annotations

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hfaudit import __version__
from hfaudit.clean_results import NOTHING_TO_REMOVE, CleanResult
from hfaudit.remove.finetune import FinetuneResult
from hfaudit.results import BLIND_SPOTS, CLEAN

TASK = "unconditional-image-generation"
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
        if f.ratio is None:
            lines.append(f"benign fidelity: unavailable ({f.before.reason})")
        else:
            lines.append(f"benign fidelity (Frechet distance, lower is better): {f.before.frechet_distance:.2f} -> "
                         f"{f.after.frechet_distance:.2f} (x{f.ratio:.2f})")
    if result.rescan is not None:
        lines.append(f"re-scan: {result.rescan.verdict} (MSCR {result.rescan.score:.2f}, "
                     f"threshold {result.rescan.threshold:.2f})")
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
    for i, extra in enumerate(result.rounds, start=2):
        lines += [f"Round {i}: the re-scan still found a backdoor, so {extra.steps} more steps fine-tuned against "
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
                 f"{'n/a' if result.rescan is None else f'{result.rescan.score:.2f}'} |")
    f = result.fidelity
    if f is not None and f.ratio is not None:
        lines.append(f"| benign fidelity, Frechet distance (lower is better) | {f.before.frechet_distance:.2f} | "
                     f"{f.after.frechet_distance:.2f} (x{f.ratio:.2f}) |")
    elif f is not None:
        lines.append(f"| benign fidelity | unavailable: {f.before.reason} | |")
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


def make_card(result: CleanResult) -> ModelCard:
    """The model card of a cleaned model (``ModelCard.save`` writes it as README.md)."""
    src = result.source
    data = ModelCardData(
        base_model=src.repo_id,  # None for a local folder: the Hub has nothing to link to
        base_model_relation="finetune" if src.repo_id else None,
        library_name="diffusers",
        pipeline_tag=TASK,
        tags=["hfaudit", "backdoor-removal", "diff-cleanse", "safetensors"] + ([] if result.passed else ["unverified"]),
        model_name=f"{(src.repo_id or src.source).rstrip('/').split('/')[-1]}-hfaudit-cleaned",
        eval_results=eval_results(result),
    )
    content = f"---\n{data.to_yaml()}\n---\n\n{card_text(result)}"
    return ModelCard(content)
