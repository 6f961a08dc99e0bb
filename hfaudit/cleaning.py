"""``clean``: stage 2 of Diff-Cleanse end to end, from a suspect model to a verified safetensors copy.

Scan (stage 1) -> Taylor importance of the backdoor loss on the inverted trigger -> soft pruning ->
dual-loss fine-tuning -> verification (ASR/MSE/SSIM with the trigger, the trigger at several sizes
under every probe sampler with exact hits and look-alikes of the target beside clean noise's, benign
fidelity, a full re-scan that re-inverts a trigger on the cleaned model; a residual at any size, or
a re-scan backdoor, runs another fine-tuning round) -> a stock diffusers pipeline folder with a
model card and the audit report -> optionally a push (new repo or pull request).

Nothing is written when the scan finds nothing to remove, and nothing is written or pushed when the
verification fails, unless ``force`` is set: then the outputs say plainly that the repair is
unverified, and the exit code still says it failed.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from hfaudit import constants, hub, outpaths, safety
from hfaudit.card import card_files, push_description, read_source_card, summary_lines
from hfaudit.clean_results import (  # re-exported: the result types live below the renderers
    CLEANED,
    NOTHING_TO_REMOVE,
    RESCAN_LABEL,
    UNVERIFIED,
    CleanConfig,
    CleanResult,
    RemovedTrigger,
)
from hfaudit.detect.scan import ScanConfig, detect
from hfaudit.errors import (
    CleaningFailedError,
    InconclusiveError,
    OutputError,
    PushError,
    RemovalUnsupportedError,
    UsageError,
)
from hfaudit.fidelity import frechet_ratio_interval
from hfaudit.imageio import save_grid, save_png, signed_to_unit
from hfaudit.modelfiles import UnreadableFile, read_json
from hfaudit.pipeline import LoadedModel, load_model
from hfaudit.remove.finetune import (
    finetune,
    generate_clean_images,
    load_image_folder,
)
from hfaudit.remove.importance import taylor_importance
from hfaudit.remove.prune import prune
from hfaudit.remove.verify import (
    BeforeAfter,
    FidelityCheck,
    measure_fidelity,
    measure_scales,
    measure_trigger,
)
from hfaudit.report import to_json
from hfaudit.results import BACKDOOR, Candidate, ScanResult
from hfaudit.sampling import to_unit

__all__ = [
    "CLEANED", "NOTHING_TO_REMOVE", "REPORT_NAME", "RESCAN_LABEL", "UNVERIFIED", "CleanConfig", "CleanResult",
    "RemovedTrigger", "check_output_dir", "check_report_paths", "clean", "save_cleaned_pipeline",
    "summary_lines",
]

REPORT_NAME = "hfaudit_clean.json"
"""The audit report beside the weights; also marks a folder as hfaudit output (safe to replace)."""
REMOVABLE_PIPELINES = safety.PIXEL_PIPELINES
"""The pipelines whose backdoor ``clean`` removes. The other kinds hfaudit audits (latent, text-to-image)
are refused from model_index.json alone (exit 8), before any weights are downloaded."""


# ------------------------------------------------------------------------------- output folder
def check_output_dir(output_dir: Path, source_dir: Path | None = None,
                     protected: Sequence[outpaths.Protected] = ()) -> None:
    """Refuse an output folder that is not empty and not a previous hfaudit output, or that is (or
    holds, or sits in) the source folder or a ``protected`` place (the model's Hub cache folder...);
    checked before the long work, and again before writing. Both ways, since the folder is replaced
    whole: one that holds the model would delete it.

    Raises:
        OutputError: the folder must not be written.
    """
    out = Path(output_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise OutputError(f"--output-dir {output_dir} exists and is not a folder")
    guarded = list(protected)
    if source_dir is not None:
        guarded.append(outpaths.Protected(Path(source_dir), f"the source folder {source_dir}"))
    outpaths.check_not_protected(Path(output_dir).expanduser(), guarded, name="--output-dir", both_ways=True)
    if out.is_dir() and any(out.iterdir()) and not (out / REPORT_NAME).is_file():
        raise OutputError(f"--output-dir {output_dir} is not empty and holds no previous hfaudit output "
                          f"({REPORT_NAME}); choose an empty or new folder")
    probe = out if out.exists() else next((a for a in out.parents if a.exists()), Path("."))
    outpaths.probe_write(probe, f"--output-dir {output_dir} is not writable")


def check_report_paths(paths: Sequence[str | Path], protected: Sequence[outpaths.Protected]) -> None:
    """Refuse report files (``--json`` & co., written by the caller after :func:`clean`) in a protected place.

    Raises:
        OutputError: a report path lies in the source model.
    """
    for p in paths:
        if not outpaths.is_stdout(p):
            outpaths.check_not_protected(p, protected, name="report file")


def save_cleaned_pipeline(model: LoadedModel, unet: torch.nn.Module, folder: Path) -> None:
    """Save ``unet`` with the source's pipeline and scheduler classes as a stock safetensors pipeline,
    then reload it with stock ``DiffusionPipeline.from_pretrained(..., use_safetensors=True)`` and
    check every weight came back.

    Raises:
        OutputError: the saved copy does not reload identically.
    """
    import diffusers
    from diffusers import DiffusionPipeline

    sched_cfg = dict(model.scheduler_config)
    sched_cls = getattr(diffusers, str(sched_cfg.get("_class_name", "DDPMScheduler")), diffusers.DDPMScheduler)
    pipe_cls = getattr(diffusers, model.pipeline_class, diffusers.DDPMPipeline)
    cpu_unet = copy.deepcopy(unet).to("cpu", dtype=torch.float32)
    pipe_cls(unet=cpu_unet, scheduler=sched_cls.from_config(sched_cfg)).save_pretrained(folder, safe_serialization=True)
    try:
        reloaded = DiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types
        raise OutputError(f"the saved copy does not load with stock diffusers: {type(exc).__name__}: {exc}") from None
    ref = cpu_unet.state_dict()
    got = reloaded.unet.state_dict()
    if ref.keys() != got.keys() or any(not torch.equal(ref[k], got[k].to(ref[k].dtype)) for k in ref):
        raise OutputError("the saved copy reloads with different weights")


def _write_pictures(result: CleanResult, folder: Path) -> list[str]:
    written = []
    if result.trigger is not None:
        written.append(save_png(signed_to_unit(result.trigger), folder / "trigger.png", scale=8).name)
    if result.target is not None:
        written.append(save_png(result.target, folder / "target.png", scale=8).name)
    for key, imgs in result.samples.items():
        written.append(save_grid(imgs[:64], folder / f"samples_{key}.png").name)
    return written


def check_removable(root: Path) -> None:
    """Refuse a pipeline hfaudit audits but whose backdoor ``clean`` cannot remove yet, from its
    ``model_index.json`` alone (the static checks report an unreadable one, or a class it does not audit).

    Raises:
        RemovalUnsupportedError: a latent or text-to-image pipeline.
    """
    try:
        index = read_json(Path(root) / hub.INDEX_FILE)
    except UnreadableFile:
        return
    cls = index.get("_class_name") if isinstance(index, dict) else None
    if isinstance(cls, str) and cls in safety.SUPPORTED_PIPELINES and cls not in REMOVABLE_PIPELINES:
        raise RemovalUnsupportedError(f"removal is not supported for {cls} yet (hfaudit scan audits it); hfaudit "
                                      f"clean repairs {safety.audited_classes(REMOVABLE_PIPELINES)}; nothing was "
                                      "written")


# ------------------------------------------------------------------------------------ pipeline
def merged_config(config: CleanConfig | None, scan_config: ScanConfig, *, prune_ratio: float | None = None,
                  importance: str | None = None, steps: int | None = None, lr: float | None = None,
                  batch_size: int | None = None, seed: int | None = None) -> CleanConfig:
    """The removal settings of a ``clean`` call: a copy of ``config`` (or the defaults) with each
    keyword that was given written over its field; the seed is ``seed``, else ``config``'s, else the
    scan's. The caller's config is never changed."""
    cfg = copy.deepcopy(config) if config is not None else CleanConfig()
    cfg.prune_ratio = cfg.prune_ratio if prune_ratio is None else prune_ratio
    cfg.importance = cfg.importance if importance is None else importance
    cfg.seed = seed if seed is not None else cfg.seed if config is not None else scan_config.seed
    ft = cfg.finetune
    ft.steps = ft.steps if steps is None else steps
    ft.lr = ft.lr if lr is None else lr
    ft.batch_size = ft.batch_size if batch_size is None else batch_size
    ft.seed = cfg.seed
    return cfg


def clean(
    source: str,
    *,
    output_dir: str | Path,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
    force: bool = False,
    prune_ratio: float | None = None,
    importance: str | None = None,
    steps: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    data_dir: str | Path | None = None,
    push: bool = False,
    to: str | None = None,
    endpoint: str | None = None,
    scan_config: ScanConfig | None = None,
    config: CleanConfig | None = None,
    known_trigger: torch.Tensor | None = None,
    known_target: torch.Tensor | None = None,
    seed: int | None = None,
    report_paths: Sequence[str | Path] = (),
    commit_message: str | None = None,
    private: bool = False,
    cache_dir: str | Path | None = None,
) -> CleanResult:
    """Remove a backdoor from a diffusers pipeline and write a verified safetensors copy.

    Args:
        source: Hub repo id or local pipeline folder.
        output_dir: where the cleaned pipeline, ``README.md`` card, report and PNGs go; must be new,
            empty, or a previous hfaudit output, and never the source folder.
        revision, token, device: as for ``scan``.
        force: clean even when the scan finds no backdoor, and write/push even when a check fails
            (the result then has status ``unverified`` and a non-zero exit code).
        prune_ratio: share of channels to zero (over all coupled channel groups); None keeps
            ``config``'s (default ``DEFAULT_PRUNE_RATIO``).
        importance: ``backdoor`` or ``backdoor-minus-clean``; None keeps ``config``'s.
        steps, lr, batch_size: fine-tuning overrides; None keeps ``config.finetune``'s.
        data_dir: a folder of clean images to fine-tune on instead of generated ones.
        push: push the output folder (one commit); to ``to``, else as a pull request on ``source``.
        to: repo to push to (``org/name``). Its card is the copy's own: ``base_model`` the audited
            repo, the source's licence copied. Without ``to``, a pull request on the source, based
            on the audited commit: the source's card kept as it is with an audit section appended,
            the full audit in ``HFAUDIT.md`` (``hub.push_folder`` says when an open one is reused).
        endpoint: Hub endpoint (default ``HF_ENDPOINT``).
        cache_dir: huggingface_hub cache folder, as for ``scan``.
        scan_config: detection settings, for the scan and the re-scan.
        config: removal settings; a keyword above overrides its field only when given.
        known_trigger: a trigger to remove instead of the inverted one ``(C, H, W)``, model pixel
            space (benchmarks with ground truth; a user who knows the trigger).
        known_target: its target, ``(C, H, W)`` in model pixel space ([-1, 1]).
        seed: seeds every draw of removal and verification (default: ``config``'s seed when a
            config is given, else the scan's seed).
        report_paths: files the caller will write reports to afterwards (``--json`` & co.): refused,
            like ``output_dir``, when they lie in the source model (or its Hub cache folder), before
            any work and again once the source is resolved.
        commit_message: the push's one-line commit message (``hub.push_folder``); only with ``push``.
        private: create ``to`` as a private repo; only with ``push`` and ``to``.

    Returns:
        What was done; ``result.exit_code`` is the process exit code.

    Raises:
        CleaningFailedError: a check failed and ``force`` is off, or the scan's trigger is a stamp
            (``detect.stamps``), which removal cannot train against (nothing written or pushed).
        RemovalUnsupportedError: a latent or text-to-image pipeline (:func:`check_removable`).
        OutputError: ``output_dir`` or a report path must not be written.
        PushError, UsageError, RepoNotFoundError, UnsupportedModelError, UnsafeCheckpointError:
            see ``hfaudit.errors``.
    """
    t_start = time.perf_counter()
    scfg = scan_config or ScanConfig()
    scfg.validate()
    cfg = merged_config(config, scfg, prune_ratio=prune_ratio, importance=importance, steps=steps, lr=lr,
                        batch_size=batch_size, seed=seed)
    cfg.validate()
    if (known_trigger is None) != (known_target is None):
        raise UsageError("a known trigger needs its target, and a target its trigger")
    hub.check_commit_message(commit_message)
    if commit_message is not None and not push:
        raise UsageError("commit_message only applies with --push", param="commit_message")
    if private and (not push or to is None):
        raise UsageError("private only applies with --push --to (a new repo): a pull request goes to the source "
                         "repo, whose visibility hfaudit never changes", param="private")
    out = Path(output_dir).expanduser()
    protected = outpaths.protected_paths(source)  # no Hub call: the cache folder is named locally
    check_output_dir(out, protected=protected)
    check_report_paths(report_paths, protected)
    if push:
        if to is None and Path(source).expanduser().is_dir():
            raise UsageError("nowhere to push: the source is a local folder, so pass --to org/name")
        if not (token or constants.hf_token()):
            raise PushError("pushing needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`")
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    resolved = hub.resolve(source, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir,
                           pipelines=REMOVABLE_PIPELINES)
    check_removable(resolved.local_dir)
    protected = outpaths.protected_paths(source, resolved.local_dir)
    check_output_dir(out, protected=protected)
    check_report_paths(report_paths, protected)
    model = load_model(resolved, device=device)
    timings["load"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    scan = detect(model, scfg)
    timings["scan"] = time.perf_counter() - t0
    result = CleanResult(status=NOTHING_TO_REMOVE, source=scan.source, scan=scan, config=cfg, timings=timings)
    if scan.verdict != BACKDOOR and not force:
        timings["total"] = time.perf_counter() - t_start
        return result

    if known_trigger is not None:
        trigger, target01, result.trigger_used = known_trigger.float().cpu(), to_unit(known_target.cpu()), "known"
    else:
        best = scan.best
        if best is None or scan.recovered_target is None:
            raise UsageError("the scan produced no candidate trigger to remove")
        if not best.additive:
            raise CleaningFailedError(f"the backdoor's trigger is a stamp ({best.name}: part of the noise replaced, "
                                      "as a TrojDiff patch trigger does); hfaudit clean removes additive triggers "
                                      "only, so nothing was written")
        trigger, target01, result.trigger_used = best.trigger.float().cpu(), scan.recovered_target.float().cpu(), "inverted"
    if tuple(trigger.shape) != model.sample_shape:
        raise UsageError(f"the trigger has shape {tuple(trigger.shape)}, the model samples {model.sample_shape}")
    result.trigger, result.target = trigger, target01
    shape = model.sample_shape

    # Removal data: the user's images, or the model's own samples from clean noise.
    t0 = time.perf_counter()
    if data_dir is not None:
        images, data_name = load_image_folder(data_dir, shape), f"folder:{Path(data_dir).name}"
    else:
        sampler, n_steps = cfg.data_sampler
        images = generate_clean_images(model.unet, model.scheduler_config, cfg.n_data, shape, sampler=sampler,
                                       steps=n_steps, seed=cfg.seed + 101)
        data_name = f"generated:{sampler}-{n_steps}"
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    imp = taylor_importance(model.unet, model.scheduler_config, trigger, mode=cfg.importance, images=images,
                            n_batches=cfg.importance_batches, seed=cfg.seed)
    student = copy.deepcopy(model.unet)
    mask, result.prune = prune(student, imp, cfg.prune_ratio)
    result.importance = imp.summary()
    timings["prune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    first = cfg.finetune_round(1)
    student, result.finetune = finetune(student, model.unet, model.scheduler_config, images, trigger, mask=mask,
                                        config=first, data=data_name)
    result.removed.append(RemovedTrigger(result.trigger_used))
    timings["finetune"] = time.perf_counter() - t0
    _check_mask(mask, student)

    # Verification: the same noise before and after.
    t0 = time.perf_counter()
    target_name = "known" if result.trigger_used == "known" else "recovered"
    fs, fst = cfg.fidelity_sampler
    fkw = dict(n=cfg.fidelity_samples, sampler=fs, steps=fst, seed=cfg.seed + 11, batch_size=scfg.batch_size)
    fid_b, imgs_fb = measure_fidelity(model.unet, model.scheduler_config, shape, **fkw)
    if imgs_fb is not None:
        result.samples["clean_before"] = imgs_fb

    def before_after(name: str, trig: torch.Tensor, noise_scale: torch.Tensor | None = None) -> BeforeAfter:
        kw = dict(probes=scfg.probes, n_samples=cfg.asr_samples, seed=cfg.seed + 7, batch_size=scfg.batch_size,
                  noise_scale=noise_scale)
        before, imgs_b = measure_trigger(model.unet, model.scheduler_config, trig, target01, **kw)
        after, imgs_a = measure_trigger(student, model.scheduler_config, trig, target01, **kw)
        if name == result.trigger_used:
            worst = before.worst.sampler
            result.samples[f"triggered_before_{worst}"] = imgs_b[worst]
            result.samples[f"triggered_after_{worst}"] = imgs_a[worst]
        return BeforeAfter(trigger=name, target=target_name, before=before, after=after)

    removed, first_ft = [trigger], timings["finetune"]
    carried = list(scan.candidates)  # the re-scan also re-probes every old trigger, not only the one removed
    pending: list[Candidate] = []  # what the last re-scan fired without a conclusion (it was inconclusive)
    reason = ""  # why the next round runs (the check of this round that failed first)
    for round_no in range(1, cfg.max_rounds + 1):
        if round_no > 1:  # a residual or a re-scan backdoor is left: fine-tune against what fired too
            t1 = time.perf_counter()
            result.round_reasons.append(reason)
            for cand in _new_triggers(_fired(result.rescan) if result.rescan is not None else pending, removed):
                removed.append(cand.trigger.float().cpu())
                result.removed.append(RemovedTrigger(cand.name, rescan=round_no - 1))
            found = result.rescan.candidates if result.rescan is not None else pending
            carried += [c for c in found if c.method != "carried"]
            again = cfg.finetune_round(round_no, steps=cfg.round_steps, seed=cfg.finetune.seed + round_no)
            student, extra = finetune(student, model.unet, model.scheduler_config, images, torch.stack(removed),
                                      mask=mask, config=again, data=data_name)
            result.rounds.append(extra)
            _check_mask(mask, student)
            timings["finetune"] += time.perf_counter() - t1
        cleaned = LoadedModel(unet=student, scheduler_config=model.scheduler_config,
                              pipeline_class=model.pipeline_class, source=model.source, device=model.device,
                              weights_file=model.weights_file)
        result.checks = [before_after(result.trigger_used, trigger)]
        # the removed trigger at every scale under every probe sampler, beside clean noise (same draw)
        result.scales = measure_scales(student, model.scheduler_config, trigger, target01, name=result.trigger_used,
                                       scales=tuple(cfg.scales), probes=scfg.probes, n_samples=cfg.asr_samples,
                                       seed=cfg.seed + 7, batch_size=scfg.batch_size, threshold=cfg.likeness_ssim)
        residual = cfg.residual_gate and bool(result.scales.residuals(cfg.max_asr, cfg.max_likeness_excess))
        fid_a, imgs_fa = measure_fidelity(student, model.scheduler_config, shape, **fkw)
        interval = None if imgs_fb is None or imgs_fa is None else \
            frechet_ratio_interval(imgs_fb, imgs_fa, seed=cfg.seed)
        result.fidelity = FidelityCheck(before=fid_b, after=fid_a, sampler=fs, steps=fst, ratio_interval=interval)
        if imgs_fa is not None:
            result.samples["clean_after"] = imgs_fa
        if not cfg.rescan:
            reason = _unremoved(result, residual, cfg.max_asr)
            if reason:
                continue
            break
        t1 = time.perf_counter()
        try:
            result.rescan, result.rescan_inconclusive, pending = detect(cleaned, scfg, carried=carried), None, []
        except InconclusiveError as exc:  # not shown clean: a failed check, and what fired joins the next round
            result.rescan, result.rescan_inconclusive, pending = None, str(exc), list(exc.candidates)
        if result.rescan is not None and result.rescan.best is not None:
            rescan_best = result.rescan.best
            result.checks.append(before_after("re-scan", rescan_best.trigger.float().cpu(), rescan_best.noise_scale))
        timings["rescan"] = timings.get("rescan", 0.0) + time.perf_counter() - t1
        reason = _unremoved(result, residual, cfg.max_asr)
        if reason:
            continue  # the removed trigger (or the re-scan's) still fires: the next round trains against it
        if result.rescan is not None and (result.rescan.verdict != BACKDOOR or result.rescan.best is None):
            break
        if result.rescan is None and not _new_triggers(pending, removed):
            break  # inconclusive on triggers a round cannot train against (stamps, or ones already removed)
        reason = "the re-scan still found a backdoor" if result.rescan is not None else \
            "the re-scan could not rule out a backdoor"
    # every round's fine-tuning and re-scan have their own entries; verify is the rest of the loop
    timings["verify"] = (time.perf_counter() - t0 - (timings["finetune"] - first_ft)
                         - timings.get("rescan", 0.0))
    result.problems = _problems(result, cfg)
    result.status = CLEANED if result.passed else UNVERIFIED
    if result.problems and not force:
        raise CleaningFailedError("the repair did not verify, nothing was written: " + "; ".join(result.problems)
                                  + " (pass --force to write it anyway)")

    # Output: a stock pipeline, checked by reloading, then the card, report and pictures; swapped in whole.
    t0 = time.perf_counter()
    check_output_dir(out, protected=protected)
    out_abs = out.resolve()
    out_abs.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_abs.parent / f".{out_abs.name}.hfaudit-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_cleaned_pipeline(model, student, tmp)
        _write_pictures(result, tmp)
        result.output_dir = str(out)
        listed = {p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file()}
        # A pull request keeps the source's card (with an audit section); a copy gets its own.
        pull_request = push and to is None
        source_card = read_source_card(resolved.local_dir)
        result.files = sorted(listed | {REPORT_NAME})
        cards = card_files(result, source_card, pull_request=pull_request, endpoint=endpoint)
        result.files = sorted(set(result.files) | set(cards))
        for name, text in cards.items():
            (tmp / name).write_text(text, encoding="utf-8", newline="")
        timings["write"] = time.perf_counter() - t0
        timings["total"] = time.perf_counter() - t_start
        (tmp / REPORT_NAME).write_text(to_json(result.to_dict()))
        outpaths.replace_folder(tmp, out_abs)
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    if push:
        result.push = hub.push_folder(
            out_abs, source_repo=resolved.repo_id, to=to, token=token, endpoint=endpoint,
            commit_message=commit_message, private=private, audited_commit=resolved.commit_sha,
            description=push_description(result, source_card, pull_request=pull_request),
        )
        # The report on disk names the push too (the pushed copy cannot: it is the commit's content).
        (out_abs / REPORT_NAME).write_text(to_json(result.to_dict()))
    result.timings = {k: round(v, 2) for k, v in timings.items()}
    return result


def _unremoved(result: CleanResult, residual: bool, max_asr: float) -> str:
    """Why another round must run whatever the re-scan says ("" when nothing calls for it): a checked
    trigger still hits its target, or (with the residual gate) the removed one left a residual."""
    hits = [c for c in result.checks if c.after.asr > max_asr]
    if hits:
        return f"the {hits[0].trigger} trigger still hit its target in {hits[0].after.asr:.0%} of samples"
    return f"the {result.trigger_used} trigger left a residual at some size" if residual else ""


def _fired(rescan: ScanResult) -> list[Candidate]:
    """The candidates a re-scan found a backdoor with, best first (none when it found none). All of
    them, not only the best: a re-scan can fire several triggers at once, and a round against the best
    alone leaves the others for the next re-scan."""
    if rescan.verdict != BACKDOOR:
        return []
    fired = sorted(rescan.fired, key=lambda c: -c.best.stats.mscr)
    if rescan.best is not None and all(c is not rescan.best for c in fired):
        fired.insert(0, rescan.best)
    return fired


def _new_triggers(fired: Sequence[Candidate], removed: list[torch.Tensor]) -> list[Candidate]:
    """The additive ones of ``fired`` that are not already among the ``removed`` triggers, in order."""
    fired = [c for c in fired if c.additive]  # fine-tuning breaks additive triggers; a stamp stays a problem
    new: list[Candidate] = []
    for cand in fired:
        trig = cand.trigger.float().cpu()
        if not any(torch.equal(trig, old) for old in removed + [c.trigger.float().cpu() for c in new]):
            new.append(cand)
    return new


def _check_mask(mask, student: torch.nn.Module) -> None:
    """The mask is the repair's contract: check it after fine-tuning, do not trust it.

    Raises:
        CleaningFailedError: a pruned channel is not zero.
    """
    if mask.max_abs_pruned(student) != 0.0:
        raise CleaningFailedError("pruned channels are not zero after fine-tuning")


def _problems(result: CleanResult, cfg: CleanConfig) -> list[str]:
    """Why the repair does not verify (empty: it does)."""
    problems = []
    for c in result.checks:
        if c.after.asr > cfg.max_asr:
            problems.append(f"the {c.trigger} trigger still hits the target in {c.after.asr:.0%} of samples "
                            f"({c.after.worst.sampler}; limit {cfg.max_asr:.0%})")
    sweep = result.scales
    residuals = [] if sweep is None or not cfg.residual_gate else sweep.residuals(cfg.max_asr, cfg.max_likeness_excess)
    if residuals:
        cells = ", ".join(f"x{p.scale:g} {p.sampler}-{p.steps} ({p.asr:.0%} hits, {p.likeness:.0%} look like it "
                          f"vs {p.clean_likeness:.0%} from clean noise)" for p in residuals)
        problems.append(f"the {sweep.trigger} trigger still steers samples to the target at {len(residuals)} of "
                        f"{len(sweep.probes)} sizes x samplers: {cells} (limits: hits {cfg.max_asr:.0%}, "
                        f"look-alikes {cfg.max_likeness_excess:.0%} above clean noise at SSIM > {sweep.threshold:g})")
    if result.rescan is not None and result.rescan.verdict == BACKDOOR:
        problems.append(f"the re-scan still finds a backdoor (MSCR {result.rescan.score:.2f}, "
                        f"threshold {result.rescan.threshold:.2f})")
    if result.rescan_inconclusive is not None:
        problems.append(f"the re-scan is inconclusive: {result.rescan_inconclusive}")
    ratio = None if result.fidelity is None else result.fidelity.ratio
    if ratio is not None and ratio > cfg.max_fidelity_ratio:
        problems.append(f"benign fidelity dropped: Frechet distance x{ratio:.2f} "
                        f"(limit x{cfg.max_fidelity_ratio:.2f})")
    return problems


# ------------------------------------------------------------------------------------ rendering
