"""``scan``: stage 1 of Diff-Cleanse end to end, from a repo id or folder to a verdict.

Resolve and load the pipeline safely, sample the ``tau = 0`` control, invert candidate triggers
(gradient inversion at ``t = T``, the mid-timestep inversion for SDE-trained backdoors, black-box
inversion from samples alone, the ODE inversion through the sampler, and a screen of stamps that
overwrite part of the noise), sample from each, and call a
backdoor when the triggered samples collapse onto one image (MSCR at or above the threshold)
while clean noise does not, or (digit-shaped models) when they fall into
one class (top-class share at or above ``class_threshold``) while clean noise does not.

Which searches run, how large, and how candidates are probed is the scan's budget
(``detect.budgets``; docs/detection.md, "Budgets"): :class:`Ledger` charges every phase the UNet
evaluations it spent, skips what would pass a cap, and records why.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from hfaudit import basemodel, hub, limits
from hfaudit.basemodel import BaseComparison
from hfaudit.detect.blackbox import blackbox_inversion
from hfaudit.detect.config import DEFAULT_CLASS_THRESHOLD, DEFAULT_THRESHOLD, ScanConfig
from hfaudit.detect.inversion import gradient_inversion
from hfaudit.detect.ledger import Ledger
from hfaudit.detect.midstep import midstep_inversion
from hfaudit.detect.modes import mode_concentration
from hfaudit.detect.nulls import (
    NullCheck,
    alignment,
    near_duplicate_radius,
    painted_offset,
    random_offset,
    trigger_strength,
)
from hfaudit.detect.ode import ode_inversion
from hfaudit.detect.scores import collapse_stats, saturated_mask
from hfaudit.detect.stamps import stamp_screen
from hfaudit.detect.t2i import TextScanConfig, detect_text_to_image
from hfaudit.errors import HfAuditError, InconclusiveError, UnsupportedModelError, UsageError
from hfaudit.fidelity import classifier_input_reason
from hfaudit.pipeline import LoadedModel, TextToImageModel, load_for_audit
from hfaudit.progress import progress_bar
from hfaudit.results import (
    BACKDOOR,
    CLASS_SIGNAL,
    CLEAN,
    COLLAPSE_SIGNAL,
    COLLAPSED,
    Candidate,
    Probe,
    ScanResult,
    SourceInfo,
)
from hfaudit.sampling import EvalCounter, apply_trigger, sample, to_unit
from hfaudit.seeding import make_generator, randn

__all__ = ["DEFAULT_CLASS_THRESHOLD", "DEFAULT_THRESHOLD", "ScanConfig", "detect", "detect_captions", "scan", "scan_resolved",
           "default_config", "decide", "planned_searches"]

def detect(model: LoadedModel, config: ScanConfig | None = None,
           carried: Sequence[Candidate] = ()) -> ScanResult:
    """Run detection on an already loaded model (the library entry point ``clean`` reuses).

    ``carried``: triggers from an earlier scan, probed as candidates too (method ``carried``), so
    the re-scan after a repair also tries every old candidate, not only the one removed and the new
    inversions: a repair can leave a residual that only an earlier trigger (or the ODE inversion)
    reaches (README, "How removal works"). Each carried trigger brings its own null checks (one per
    probe sampler), beside the ``null_checks`` the searches share: probed last, they would otherwise
    find the shared pool spent and leave the re-scan inconclusive however clear they are.

    Raises:
        InconclusiveError: a candidate fired and could not be confirmed or held against its null;
            its ``candidates`` attribute lists those candidates (what a repair must still break).

    ``config`` None: every search at full size (``ScanConfig()``, what ``clean`` scans with); the
    library's :func:`scan` defaults to the ``default`` budget instead.
    """
    cfg = (config or ScanConfig()).seeded()
    cfg.validate()
    shape = model.sample_shape
    n_train = int(model.scheduler_config.get("num_train_timesteps", 1000))
    check_fits(model, cfg, n_train)
    counter = EvalCounter(model.unet)
    null_left = [cfg.null_checks]  # painted-null probes left to spend; a list so the closures can change it
    carried_nulls = [len(carried) * len(cfg.probes)]  # the carried triggers' own pool (see the docstring)
    ledger = Ledger(counter, cfg.max_evaluations, reserve=lambda: null_left[0] * cfg.null_evaluations)
    noise = randn((cfg.n_samples, *shape), make_generator(cfg.seed), model.device)
    samples: dict[str, torch.Tensor] = {}
    saturation: dict[str, torch.Tensor | None] = {}  # which samples of each batch are saturated
    latents: dict[str, torch.Tensor] = {}  # a latent model's raw samples (the painted null paints in latent space)
    plan = planned_searches(model, cfg, n_train)
    screened = cfg.screen_samples is not None and cfg.screen_samples < cfg.n_samples
    confirmations = [cfg.confirmations]  # left to spend
    radius = [cfg.duplicate_mse]  # the model's own near-duplicate radius, set from the control
    unconfirmed: list[str] = []
    unchecked: list[str] = []
    candidates: list[Candidate] = []
    try:
        with progress_bar() as bar:
            # One bar for the whole scan, in UNet evaluations: its ETA comes from the budget (the most the
            # scan can cost); screens that need no full probe and an early stop only end it sooner.
            total = cfg.unet_evaluations + len(carried) * cfg.probe_evaluations + carried_nulls[0] * cfg.null_evaluations
            scan_task = bar.add_task("scanning", total=total, info="control (no trigger)")

            def progressed(**fields: Any) -> None:
                bar.update(scan_task, completed=min(counter.count, total), **fields)

            def images_of(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
                """Samples as images in [0, 1] and which are saturated: a latent model's decoded by its
                autoencoder (whose clamped output has no saturation to tell apart: None)."""
                if not model.latent:
                    return to_unit(raw), saturated_mask(raw)
                return to_unit(model.decode(raw.to(model.device)).float().cpu()), None

            def model_space(name: str, sampler: str, centre: int) -> tuple[torch.Tensor, torch.Tensor]:
                """The sample ``centre`` of ``name``'s probe and the mean clean sample, where the trigger lives
                (the UNet's space: pixels, or a latent model's latents)."""
                if model.latent:
                    return latents[f"{name}/{sampler}"][centre], latents[f"none/{sampler}"].mean(0)
                return samples[f"{name}/{sampler}"][centre] * 2 - 1, samples[f"none/{sampler}"].mean(0) * 2 - 1

            def probe(name: str, x_T: torch.Tensor) -> list[Probe]:
                found = []
                for sampler, steps in cfg.probes:
                    raw = sample(model.unet, model.scheduler_config, x_T, sampler=sampler, steps=steps,
                                 generator=make_generator(cfg.seed + 1, "cpu"), batch_size=cfg.batch_size)
                    require_finite(raw, f"the {sampler}-{steps} samples "
                                        + ("from clean noise" if name == "none" else f"of candidate {name}"))
                    imgs, sat = images_of(raw)
                    samples[f"{name}/{sampler}"] = imgs
                    saturation[f"{name}/{sampler}"] = sat
                    if model.latent:
                        latents[f"{name}/{sampler}"] = raw
                    stats = collapse_stats(imgs, cfg.duplicate_mse, saturated=sat)
                    group = collapse_stats(imgs, radius[0], saturated=sat) if radius[0] > cfg.duplicate_mse else None
                    found.append(Probe(name, sampler, steps, stats, modes=mode_concentration(imgs, saturated=sat),
                                       group=group))
                    progressed()
                return found

            def null_probe(cand: Candidate, x_T: torch.Tensor, pools: Sequence[list[int]]) -> None:
                """Hold each fired probe of ``cand`` against its painted null (``detect.nulls``), spending
                null checks from the first of ``pools`` that has one left."""
                strength = trigger_strength(x_T, noise)
                def fired(p: Probe, signal: str) -> int | None:
                    """The centre of ``p``'s evidence for ``signal`` when it reached its threshold (else None);
                    no class null once the collapse held (the verdict already rests on it)."""
                    if signal == COLLAPSE_SIGNAL:
                        return p.centre if p.share >= cfg.threshold and not cand.holds(COLLAPSE_SIGNAL) else None
                    if (cand.class_evidence and p.modes is not None and p.modes.top_index is not None
                            and p.modes.top_share >= cfg.class_threshold and not cand.holds(COLLAPSE_SIGNAL)):
                        return p.modes.top_index
                    return None

                for signal, p in [(sig, q) for sig in (COLLAPSE_SIGNAL, CLASS_SIGNAL) for q in cand.probes]:
                    centre = fired(p, signal)
                    if centre is not None:
                        pool = next((q for q in pools if q[0] > 0), None)
                        if pool is None:
                            unchecked.append(cand.name)
                            continue
                        pool[0] -= 1
                        target, reference = model_space(cand.name, p.sampler, centre)
                        aligned = alignment((x_T - noise).mean(0), target, reference)
                        offsets = {
                            "painted": (noise, painted_offset(target, reference, strength)),
                            "random": (noise[: cfg.null_random_samples],
                                       random_offset(shape, strength, make_generator(cfg.seed + 2 + len(cand.nulls)))),
                        }
                        nulls: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
                        for kind, (base, offset) in offsets.items():
                            raw = sample(model.unet, model.scheduler_config, base + offset.to(base.device),
                                         sampler=p.sampler, steps=p.steps,
                                         generator=make_generator(cfg.seed + 1, "cpu"), batch_size=cfg.batch_size)
                            require_finite(raw, f"the {kind} null of candidate {cand.name}")
                            nulls[kind] = images_of(raw)
                            progressed()

                        def class_share(kind: str) -> float:
                            modes = mode_concentration(nulls[kind][0], saturated=nulls[kind][1])
                            return 0.0 if modes is None else modes.counts[p.modes.top_class] / modes.n

                        if signal == CLASS_SIGNAL:
                            cand.nulls.append(NullCheck(p.sampler, p.steps, signal, p.modes.top_share,
                                                        class_share("painted"), cfg.null_margin, alignment=aligned,
                                                        max_alignment=cfg.max_alignment,
                                                        random_score=class_share("random"),
                                                        threshold=cfg.class_threshold))
                            continue
                        for r, stats in ((cfg.duplicate_mse, p.stats), (radius[0], p.group)):
                            if stats is not None and stats.mscr >= cfg.threshold:
                                shares = {k: collapse_stats(im, r, saturated=sat).mscr for k, (im, sat) in nulls.items()}
                                cand.nulls.append(NullCheck(p.sampler, p.steps, signal, stats.mscr, shares["painted"],
                                                            cfg.null_margin, radius=r, alignment=aligned,
                                                            max_alignment=cfg.max_alignment,
                                                            random_score=shares["random"], threshold=cfg.threshold))

            def probe_candidate(name: str, method: str, trig: Any, screen: bool,
                                pools: Sequence[list[int]] = (null_left,)) -> Candidate:
                progressed(info=name)
                cand = Candidate(name=name, method=method, objective=trig.objective, lam=trig.lam,
                                 shift_ratio=trig.shift_ratio, trigger=trig.trigger, noise_scale=trig.noise_scale)
                x_T = apply_trigger(noise, trig.trigger, trig.noise_scale)
                if screen:
                    cand.probes = probe(name, x_T[: cfg.screen_samples])
                    full = promising(cand, cfg)
                    if full and confirmations[0] is not None:
                        if confirmations[0] == 0:
                            unconfirmed.append(name)
                            full = False
                        else:
                            confirmations[0] -= 1
                    if not full:
                        return cand
                cand.probes = probe(name, x_T)
                with ledger.phase("nulls"):
                    null_probe(cand, x_T, pools)
                return cand

            with ledger.phase("control"):
                controls = probe("none", noise)
            radius[0] = near_duplicate_radius([(samples[f"none/{p.sampler}"], saturation[f"none/{p.sampler}"])
                                               for p in controls])
            for p in controls:
                if radius[0] > cfg.duplicate_mse:
                    p.group = collapse_stats(samples[f"none/{p.sampler}"], radius[0],
                                             saturated=saturation[f"none/{p.sampler}"])
            stopped: str | None = None
            numbered: dict[str, int] = {}
            for search in plan:
                why = stopped or ledger.refusal(search.cost)
                if why is not None:
                    ledger.skip(search.phase, search.title, why)
                    progressed()
                    continue
                with ledger.phase(search.phase):
                    progressed(info=search.title)
                    task = bar.add_task(search.label, total=search.steps, info=search.info)

                    def step(task: Any = task) -> None:
                        bar.update(task, advance=1)
                        progressed()

                    found = search.run(step)
                    bar.update(task, visible=False)
                    for prefix, trig in found:  # numbered within the phase (blackbox-ddpm-0, blackbox-ddim-1)
                        index = numbered[search.phase] = numbered.get(search.phase, -1) + 1
                        cand = probe_candidate(f"{prefix}-{index}", trig.method, trig, screened)
                        candidates.append(cand)
                        if cfg.stop_margin is not None and stopped is None and _fired_by(cand, cfg):
                            stopped = (f"candidate {cand.name} already fired (collapse {cand.best.share:.2f}, "
                                       f"threshold {cfg.threshold:g} + margin {cfg.stop_margin:g}, "
                                       "above its painted null)")
            if carried:
                with ledger.phase("carried"):
                    for prev in carried:
                        candidates.append(probe_candidate(f"carried-{prev.name}", "carried", prev, False,
                                                          pools=(carried_nulls, null_left)))
    finally:
        counter.close()
    timings = ledger.seconds
    if not candidates:
        raise UsageError("the scan ran no search: turn one on, or give it a larger budget", param="max_evaluations")
    decided = [c for c in candidates if c.name not in unconfirmed]  # a screen alone never decides
    d = decide(controls, decided, cfg.threshold, cfg.class_threshold) if decided else None
    if unconfirmed and (d is None or d.verdict == CLEAN):
        exc = InconclusiveError(
            f"{len(unconfirmed)} candidate(s) ({', '.join(unconfirmed[:3])}) showed near-duplicates or one class "
            "in their screen, and the budget left no full probe to confirm or clear them: the model is not "
            "shown clean; rerun with a larger --budget")
        exc.unet_evaluations = counter.count  # what the scan spent before it stopped (benchmarks count it)
        exc.candidates = tuple(c for c in candidates if c.name in unconfirmed)
        raise exc
    unchecked = list(dict.fromkeys(unchecked))
    if unchecked and d is not None and d.verdict == CLEAN:
        exc = InconclusiveError(
            f"{len(unchecked)} candidate(s) ({', '.join(unchecked[:3])}) collapsed the samples or sent them to one "
            "class, and the budget left no painted-null probe to tell a backdoor from a search artefact: the model "
            "is not shown clean; rerun with a larger --budget")
        exc.unet_evaluations = counter.count
        exc.candidates = tuple(c for c in candidates if c.name in unchecked)
        raise exc
    assert d is not None  # decided is every candidate when none is unconfirmed
    for what, value in (("MSCR", d.score), ("control MSCR", d.control_score), ("class score", d.class_score),
                        ("control class score", d.control_class_score),
                        *((f"diversity of {p.trigger_name}/{p.sampler}", p.stats.diversity)
                          for p in (*controls, *(q for c in candidates for q in c.probes)))):
        if value is not None and not math.isfinite(value):
            raise InconclusiveError(f"the scan's {what} is {value}: no verdict can rest on it, and the model is "
                                    "not shown clean")
    best, probe_used = d.best, next(p for p in d.best.probes if p.sampler == d.best_sampler)
    best_imgs = samples[f"{best.name}/{d.best_sampler}"]
    if d.signals == [CLASS_SIGNAL] and probe_used.modes is not None and probe_used.modes.top_index is not None:
        target_index = probe_used.modes.top_index  # a class has no medoid image: its most confident sample
    else:
        target_index = probe_used.centre
    result = ScanResult(
        source=SourceInfo(source=model.source.source, repo_id=model.source.repo_id, revision=model.source.revision,
                          commit_sha=model.source.commit_sha, pipeline_class=model.pipeline_class,
                          weights_file=model.weights_file),
        verdict=d.verdict, score=d.score, threshold=cfg.threshold, control_score=d.control_score,
        controls=controls, candidates=candidates, best_candidate=best.name,
        recovered_target=best_imgs[target_index].clone(),
        settings={**asdict(cfg),
                  "device": str(model.device), "clip_sample": False},
        timings={k: round(v, 2) for k, v in timings.items()},
        evaluations=dict(ledger.evaluations), skipped=list(ledger.skipped),
        unet_evaluations=counter.count,
        samples=samples,
        findings=list(model.findings),
        signals=d.signals, class_score=d.class_score, class_threshold=cfg.class_threshold,
        control_class_score=d.control_class_score, class_unavailable=classifier_input_reason(tuple(model.image_shape)),
        best_sampler=d.best_sampler, group_radius=radius[0], artefacts=d.artefacts,
    )
    return result


@dataclass(frozen=True)
class PlannedSearch:
    """One search of a scan, as :func:`detect` runs it: every search has this one shape.

    ``run(on_step)`` returns ``(name prefix, trigger)`` pairs, best first; a candidate's name is its
    prefix and its index among the candidates of the same ``phase`` (``blackbox-ddim-1``).
    """

    phase: str
    """Its key in the report's ``timings`` (searches of one phase add up)."""
    label: str
    info: str
    steps: int
    """Progress steps: ``run`` calls ``on_step`` this many times."""
    probed: int
    """How many candidates it hands to the probes."""
    run: Callable[[Callable[[], None]], list[tuple[str, Any]]]
    cost: int = 0
    """The most UNet evaluations it and its candidates' probes can cost (``ScanConfig.search_cost``)."""

    @property
    def title(self) -> str:
        """How the report names it (``black-box (ddim-10)``, ``stamp screen (ddim-10)``)."""
        return {"inversion": "gradient inversion", "stamps": f"stamp screen ({self.info})"}.get(self.phase, self.info)


def planned_searches(model: LoadedModel, cfg: ScanConfig, n_train: int) -> list[PlannedSearch]:
    """The searches ``cfg`` turns on, in the order the scan runs and probes them."""
    unet, sched, shape = model.unet, model.scheduler_config, model.sample_shape
    inv = cfg.inversion
    plan = []
    probed = cfg.probed
    if inv is not None:
        n = probed["gradient"]
        plan.append(PlannedSearch(
            "inversion", "inverting trigger", "gradient", inv.steps, n,
            lambda on_step: [(f"{t.method}-{t.objective}", t) for t in
                             gradient_inversion(unet, n_train, shape, inv, on_step=on_step)[: cfg.max_candidates]],
            cfg.search_cost(inv, n)))
    if cfg.midstep is not None:
        mid = cfg.midstep
        plan.append(PlannedSearch(
            "midstep", "inverting trigger", f"mid-timestep ({mid.t_fraction:g} T)", mid.search_steps * len(mid.rms),
            probed["midstep"], lambda on_step: [(t.method, t) for t in
                                                mid.pick(midstep_inversion(unet, sched, shape, mid, on_step=on_step))],
            cfg.search_cost(mid, probed["midstep"])))
    for bb in cfg.searches:
        n = bb.probed
        plan.append(PlannedSearch(
            "blackbox", "inverting trigger", f"black-box ({bb.sampler}-{bb.steps})", bb.iterations, n,
            lambda on_step, bb=bb, n=n: [(f"{t.method}-{bb.sampler}", t) for t in
                                         blackbox_inversion(unet, sched, shape, bb, on_step=on_step)[:n]],
            cfg.search_cost(bb, n)))
    if cfg.ode is not None:
        ode = cfg.ode
        n = probed["ode"]
        plan.append(PlannedSearch(
            "ode", "inverting trigger", f"ODE ({ode.sampler}-{ode.steps})", ode.search_steps + ode.refine_steps, n,
            lambda on_step: [(f"{t.method}-{ode.sampler}", t) for t in
                             ode_inversion(unet, sched, shape, ode, on_step=on_step)[:n]],
            cfg.search_cost(ode, n)))
    if cfg.stamps is not None:
        st = cfg.stamps
        n = probed["stamps"]
        plan.append(PlannedSearch(
            "stamps", "screening stamps", f"{st.sampler}-{st.steps}", st.n_regions, n,
            lambda on_step: [(t.method, t) for t in stamp_screen(unet, sched, shape, st, on_step=on_step)[:n]],
            cfg.search_cost(st, n)))
    return plan


def promising(cand: Candidate, cfg: ScanConfig) -> bool:
    """Whether a candidate's screen asks for the full probe: a near-duplicate pair under some
    sampler, a group at the model's radius already at the threshold, or a top-class share at the class threshold (class evidence only). Below both, the
    full probe could still fire only if the screen were unlucky (``docs/detection.md``)."""
    for p in cand.probes:
        if p.stats.cluster_size >= 2 or (p.group is not None and p.group.mscr >= cfg.threshold):
            return True
        if cand.class_evidence and p.modes is not None and p.modes.top_share >= cfg.class_threshold:
            return True
    return False


def _fired_by(cand: Candidate, cfg: ScanConfig) -> bool:
    """Whether a fully probed candidate's collapse is past the threshold by ``stop_margin`` and held
    against its painted null."""
    return (cfg.stop_margin is not None and all(p.stats.n >= cfg.n_samples for p in cand.probes)
            and cand.best.share >= cfg.threshold + cfg.stop_margin and cand.holds(COLLAPSE_SIGNAL))


def check_fits(model: LoadedModel, cfg: ScanConfig, n_train: int) -> None:
    """Refuse, before anything is allocated, a scan the model's schedule or the device cannot hold.

    Raises:
        UnsupportedModelError: the schedule has fewer training timesteps than a sampler's steps, or
            the estimated peak memory (``hfaudit.limits``) exceeds what the device has free.
    """
    if cfg.sampler_steps > n_train:
        raise UnsupportedModelError(
            f"the model's schedule has {n_train} training timesteps, fewer than the {cfg.sampler_steps} sampler "
            f"steps this scan runs; pass --sampler with at most {n_train} steps (e.g. ddim:{min(10, n_train)})")
    n_params = sum(p.numel() for p in model.unet.parameters())
    plan = limits.plan_memory(model.unet.config, n_params, *cfg.peak_batches(), model.device)
    if not plan.fits:
        raise UnsupportedModelError(
            f"scanning this {shape_text(model.sample_shape)} model needs about {limits.gib(plan.needed)} of memory "
            f"and {model.device} has {limits.gib(plan.available or 0)} free")


def require_finite(raw: torch.Tensor, what: str) -> None:
    """A verdict must never rest on NaN or Inf samples (they compare as 'not similar', so they read clean).

    Raises:
        InconclusiveError: ``raw`` holds a non-finite value.
    """
    if not bool(torch.isfinite(raw).all()):
        raise InconclusiveError(f"{what} hold NaN or Inf values: the model's sampling is broken, no verdict "
                                "can be drawn, and the model is not shown clean")


def shape_text(shape: Sequence[int]) -> str:
    """``(C, H, W)`` as ``HxW`` for messages."""
    return f"{shape[-2]}x{shape[-1]}"


@dataclass
class Decision:
    """The verdict and what it rests on (see :func:`decide`)."""

    verdict: str
    signals: list[str]
    best: Candidate
    best_sampler: str
    score: float
    control_score: float
    class_score: float | None
    control_class_score: float | None
    artefacts: list[str] = field(default_factory=list)
    """Candidates that reached a threshold but not past their painted null (no evidence)."""


def decide(controls: Sequence[Probe], candidates: Sequence[Candidate], threshold: float,
           class_threshold: float) -> Decision:
    """The verdict from the probes: one rule, used by :func:`detect` and tested on hand-built probes.

    * ``collapsed`` when the control (no trigger) reaches the collapse threshold: collapse then
      proves nothing, whatever else fired.
    * ``backdoor`` when a candidate's collapse score (``Probe.share``: exact near-duplicates or
      copies at the model's own radius) reaches ``threshold`` and its painted null held
      (``Candidate.holds``, ``detect.nulls``; signal ``collapse``), or when a candidate's top-class
      share reaches ``class_threshold`` while every control stays below it and its null held
      (signal ``class``; the share counts only in-range, confidently labelled samples, so saturated
      junk cannot fire it). Both signals are listed when both fired.
    * ``clean`` otherwise; candidates that reached a threshold without holding against their null
      are listed as ``artefacts``.

    The class signal ignores the ODE inversion's and the stamps' candidates
    (``Candidate.class_evidence``).

    The best candidate is the strongest one whose evidence held (else the highest collapse score),
    and ``best_sampler`` the sampler of its deciding probe.
    """
    score = max(c.best.share for c in candidates)
    control_score = max(p.share for p in controls)
    class_candidates = [c for c in candidates if c.class_evidence]
    probes = [p for c in class_candidates for p in c.probes]
    have_modes = bool(probes) and all(p.modes is not None for p in (*controls, *probes))
    class_score = max(p.modes.top_share for p in probes) if have_modes else None
    control_class = max(p.modes.top_share for p in controls) if have_modes else None
    collapsed = [c for c in candidates if c.best.share >= threshold]
    held = [c for c in collapsed if c.holds(COLLAPSE_SIGNAL)]
    by_class = [c for c in class_candidates if have_modes and c.best_class.modes.top_share >= class_threshold]
    class_held = [c for c in by_class if c.holds(CLASS_SIGNAL)] if control_class is not None and \
        control_class < class_threshold else []
    signals: list[str] = []
    if held:
        signals.append(COLLAPSE_SIGNAL)
    if class_held:
        signals.append(CLASS_SIGNAL)
    reached = {c.name for c in (*collapsed, *by_class)}
    counted = {c.name for c in (*held, *class_held)}
    artefacts = [c.name for c in candidates if c.name in reached and c.name not in counted]
    if control_score >= threshold:
        verdict, signals = COLLAPSED, []
    else:
        verdict = BACKDOOR if signals else CLEAN
    if signals == [CLASS_SIGNAL]:
        best = max(class_held, key=lambda c: c.best_class.modes.top_share)
        best_sampler = best.best_class.sampler
    else:
        best = max(held or candidates, key=lambda c: c.best.share)
        best_sampler = best.best.sampler
    return Decision(verdict=verdict, signals=signals, best=best, best_sampler=best_sampler, score=score,
                    control_score=control_score, class_score=class_score, control_class_score=control_class,
                    artefacts=artefacts)


def scan(
    source: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
    allow_pickle: bool = False,
    config: ScanConfig | None = None,
    cache_dir: str | Path | None = None,
) -> ScanResult:
    """Audit a diffusers pipeline (Hub repo id or local folder) for a backdoor.

    Args:
        source: ``org/name`` on the Hub (``HF_ENDPOINT`` honoured; also ``hf://org/name[@revision]``
            or ``https://huggingface.co/org/name[/tree/revision]``) or a local pipeline folder.
        revision: branch, tag or commit on the Hub; the resolved commit sha is in the result.
        token: Hub token; defaults to ``HF_TOKEN`` or the login cache.
        cache_dir: huggingface_hub cache folder (default ``HF_HUB_CACHE``); with ``HF_HUB_OFFLINE=1``
            a repo is read from it, without any Hub call.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: what Accelerate picks.
        allow_pickle: opt in to pickle weights (scanned with picklescan, loaded with weights_only).
        config: detection settings (default: the ``default`` budget, ``detect.budgets``).

    Returns:
        The verdict with its evidence; ``result.exit_code`` is the process exit code.

    Raises:
        RepoNotFoundError, UnsupportedModelError, UnsafeCheckpointError, UsageError: see ``hfaudit.errors``.
    """
    cfg = (config or default_config()).seeded()
    cfg.validate()
    t0 = time.perf_counter()
    resolved = hub.resolve(source, revision=revision, token=token, allow_pickle=allow_pickle, cache_dir=cache_dir)
    return scan_resolved(resolved, device=device, allow_pickle=allow_pickle, config=cfg, started=t0)


def default_config() -> ScanConfig:
    """The settings of a scan given none: the ``default`` budget (what the CLI runs too)."""
    from hfaudit.detect.budgets import budget_config  # budgets builds on this module

    return budget_config()


def scan_resolved(resolved: hub.ResolvedSource, *, device: str | None = None, allow_pickle: bool = False,
                  config: ScanConfig | None = None, started: float | None = None) -> ScanResult:
    """:func:`scan` of a source ``hub.resolve`` has already pinned (the verdict cache keys on it first).

    ``started``: the ``time.perf_counter()`` the resolution began at, so ``timings["load"]`` covers it.
    """
    cfg = (config or default_config()).seeded()
    cfg.validate()
    t0 = time.perf_counter() if started is None else started
    model = load_for_audit(resolved, device=device, allow_pickle=allow_pickle)
    comparison = base_comparison(resolved, model.component_files, cfg.base)
    load_s = time.perf_counter() - t0
    result = detect(model, cfg) if isinstance(model, LoadedModel) else detect_captions(model, cfg)
    result.base = comparison
    result.timings = {"load": round(load_s, 2), **result.timings,
                      "total": round(time.perf_counter() - t0, 2)}
    return result


def base_comparison(resolved: hub.ResolvedSource, files: dict[str, list[str]], base: str) -> BaseComparison | None:
    """The weights against a base model (``ScanConfig.base``): the one the repo names (``auto``; a
    local folder only), the one given, or none (``none``, or no base named).

    Raises:
        HfAuditError subclasses: a base given explicitly that cannot be fetched.
    """
    if base == basemodel.OFF:
        return None
    named = basemodel.named_base(resolved.local_dir) if base == basemodel.AUTO else (base, "--base")
    if named is None:
        return None
    try:
        return basemodel.compare_with_base(resolved.local_dir, files, *named, explicit=base != basemodel.AUTO,
                                           resolve=hub.resolve)
    except HfAuditError as exc:  # only an explicit base raises: say that the base is what failed
        exc.message = f"base model {base!r}: {exc.message}"
        raise


def text_config(cfg: ScanConfig) -> TextScanConfig:
    """The text-to-image settings of a scan's budget: its seed, cap and prompts; ``thorough`` (no cap)
    screens and generates more tokens (docs/detection.md, "Text-to-image")."""
    base = TextScanConfig(seed=cfg.seed, max_evaluations=cfg.max_evaluations, prompts=cfg.prompts)
    if cfg.budget.startswith("fast"):
        return replace(base, screen_tokens=12, confirm_tokens=2, null_tokens=3)
    if cfg.max_evaluations is None:
        return replace(base, screen_tokens=64, confirm_tokens=6, null_tokens=6)
    return base


def detect_captions(model: TextToImageModel, config: ScanConfig | None = None) -> ScanResult:
    """:func:`detect` for a text-to-image pipeline: the caption-trigger search (``detect.t2i``) as a
    ``ScanResult`` (its ``text`` part holds the tokens; docs/detection.md, "Text-to-image")."""
    cfg = (config or default_config()).seeded()
    tcfg = text_config(cfg)
    found = detect_text_to_image(model, tcfg)
    rep = found.report
    src = model.source
    return ScanResult(
        source=SourceInfo(source=src.source, repo_id=src.repo_id, revision=src.revision, commit_sha=src.commit_sha,
                          pipeline_class=model.pipeline_class,
                          weights_file=model.weights_files.get("unet") or next(iter(model.weights_files.values()), "")),
        verdict=BACKDOOR if found.backdoor else CLEAN, score=found.score, threshold=found.threshold,
        control_score=found.control_score, controls=[], candidates=[], best_candidate=None,
        recovered_target=found.recovered_target, settings={**asdict(cfg), "text": found.settings,
                                                           "device": str(model.device)},
        timings=found.timings, evaluations=found.evaluations, unet_evaluations=found.unet_evaluations,
        samples={f"{'trigger' if k == 'trigger' else 'none'}/{tcfg.sampler}": v for k, v in found.images.items()},
        findings=list(model.findings), signals=list(rep.signals), class_unavailable="text-to-image: no class signal",
        best_sampler=tcfg.sampler, group_radius=rep.group_radius, text=rep,
    )
