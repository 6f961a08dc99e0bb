"""``scan``: stage 1 of Diff-Cleanse end to end, from a repo id or folder to a verdict.

Resolve and load the pipeline safely, sample the ``tau = 0`` control, invert candidate triggers
(gradient inversion at ``t = T``, the mid-timestep inversion for SDE-trained backdoors, black-box
inversion from samples alone, the ODE inversion through the sampler, and a screen of stamps that
overwrite part of the noise), sample from each, and call a
backdoor when the triggered samples collapse onto one image (MSCR at or above the threshold)
while clean noise does not, or (digit-shaped models) when they fall into
one class (top-class share at or above ``class_threshold``) while clean noise does not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from hfaudit import hub, limits
from hfaudit.detect.blackbox import BlackboxConfig, blackbox_inversion, default_searches
from hfaudit.detect.inversion import InversionConfig, gradient_inversion
from hfaudit.detect.midstep import MidstepConfig, midstep_inversion
from hfaudit.detect.modes import mode_concentration
from hfaudit.detect.ode import OdeInversionConfig, ode_inversion
from hfaudit.detect.scores import DUPLICATE_MSE, collapse_stats, saturated_mask
from hfaudit.detect.stamps import StampConfig, stamp_screen
from hfaudit.errors import InconclusiveError, UnsupportedModelError, UsageError
from hfaudit.fidelity import classifier_input_reason
from hfaudit.pipeline import LoadedModel, load_model
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
from hfaudit.sampling import SAMPLERS, EvalCounter, apply_trigger, sample, to_unit
from hfaudit.seeding import make_generator, randn

DEFAULT_THRESHOLD = 0.5
"""MSCR at or above which triggered samples count as collapsed (README, 'Threshold calibration').

Why 0.5: it stays above every clean model's score on the benchmark zoo (``python
benchmarks/detection.py`` reports the calibrated cut and the margins), and a lower cut flags
fine-tuned models, repaired ones included, whose ODE-inversion samples partly collapse onto an
image that is not a backdoor target.
"""

DEFAULT_CLASS_THRESHOLD = 0.6
"""Top-class share (``detect.modes``) at or above which triggered samples count as one class.

Why 0.6: between the clean models' top-class shares and a class-target backdoor's, with a thin
margin over fine-tuned clean models (``python benchmarks/detection.py`` reports it). See the
README, 'Class signal' and 'Threshold calibration'.
"""


@dataclass
class ScanConfig:
    """Everything that decides a verdict; recorded in the report."""

    seed: int = 0
    n_samples: int = 32
    probes: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddpm", 50))
    """(sampler, steps) pairs: an ODE and an SDE family, since backdoors fire under one or the other."""
    threshold: float = DEFAULT_THRESHOLD
    class_threshold: float = DEFAULT_CLASS_THRESHOLD
    """Top-class share that calls a class-target backdoor (digit-shaped models only)."""
    duplicate_mse: float = DUPLICATE_MSE
    max_candidates: int = 4
    """How many inverted triggers (lowest shift ratio first) are probed by sampling."""
    batch_size: int = 64
    inversion: InversionConfig = field(default_factory=InversionConfig)
    blackbox: tuple[BlackboxConfig, ...] | BlackboxConfig | None = field(default_factory=default_searches)
    """Black-box inversions (samples only, no gradients), one per config (default: a DDPM and a DDIM
    search, ``blackbox.default_searches``); each one's best ``candidates`` triggers are probed too.
    None or ``()`` turns it off. Cost: ``phase_evaluations["blackbox"]``."""

    midstep: MidstepConfig | None = field(default_factory=MidstepConfig)
    """The mid-timestep inversion (``detect/midstep.py``: the directions the model passes least of at
    ``0.8 T``), for SDE-trained backdoors whose trigger the gradient inversion at ``t = T`` cannot
    single out; the best ``candidates`` directions of each searched RMS are probed. None turns it off.
    Cost: ``phase_evaluations["midstep"]`` (forward passes; the backward passes come on top)."""

    ode: OdeInversionConfig | None = field(default_factory=OdeInversionConfig)
    """The ODE inversion (``detect/ode.py``: mid-timestep direction, refined through DDIM), for
    ODE-trained backdoors that the other two miss; its best ``candidates`` triggers are probed.
    None turns it off. Cost: ``phase_evaluations["ode"]`` (forward passes; the backward passes come
    on top)."""

    stamps: StampConfig | None = field(default_factory=StampConfig)
    """The stamp screen (``detect/stamps.py``: each lattice cell of the noise overwritten with a
    constant), for patch triggers that replace the noise instead of adding to it (TrojDiff's),
    which no additive search reaches; the best stamp of each of its best ``candidates`` regions is
    probed. None turns it off. Cost: ``phase_evaluations["stamps"]``."""

    @property
    def searches(self) -> tuple[BlackboxConfig, ...]:
        """The black-box searches to run (``blackbox`` as a tuple)."""
        if self.blackbox is None:
            return ()
        return (self.blackbox,) if isinstance(self.blackbox, BlackboxConfig) else tuple(self.blackbox)

    @property
    def probe_evaluations(self) -> int:
        """UNet forward evaluations of probing one trigger (or the control): ``n_samples`` images
        through every probe's sampler steps."""
        return self.n_samples * sum(steps for _name, steps in self.probes)

    @property
    def phase_evaluations(self) -> dict[str, int]:
        """UNet forward evaluations per phase of :func:`detect` (each search with the probes of the
        candidates it yields; backward passes not counted), for budgeting. Each trigger carried into
        a re-scan adds ``probe_evaluations``."""
        probe = self.probe_evaluations
        inv = self.inversion
        cost = {"control": probe,
                "gradient": inv.unet_evaluations + min(self.max_candidates, inv.total_restarts) * probe}
        if self.searches:
            cost["blackbox"] = sum(bb.unet_evaluations + min(bb.candidates, bb.restarts) * probe
                                   for bb in self.searches)
        if self.midstep is not None:
            cost["midstep"] = self.midstep.unet_evaluations + self.midstep.probed * probe
        if self.ode is not None:
            cost["ode"] = self.ode.unet_evaluations + min(self.ode.candidates, self.ode.refine) * probe
        if self.stamps is not None:
            cost["stamps"] = (self.stamps.unet_evaluations
                              + min(self.stamps.candidates, self.stamps.n_regions) * probe)
        return cost

    @property
    def unet_evaluations(self) -> int:
        """UNet forward evaluations of a whole scan (``ScanResult.unet_evaluations`` counts the same)."""
        return sum(self.phase_evaluations.values())

    @property
    def sampler_steps(self) -> int:
        """The most sampler steps any probe or search runs (the schedule needs at least as many timesteps)."""
        steps = [s for _name, s in self.probes]
        steps += [bb.steps for bb in self.searches]
        steps += [c.steps for c in (self.ode, self.stamps) if c is not None]
        return max(steps)

    def peak_batches(self) -> tuple[int, int]:
        """``(forward, backward)``: the most images any phase puts through the UNet at once without
        gradients, and the most whose activations are kept for a backward pass (``hfaudit.limits``)."""
        fwd = [min(self.batch_size, self.n_samples)]
        fwd += [max(bb.screen, 2 * bb.restarts * bb.directions) * bb.n_samples for bb in self.searches]
        if self.stamps is not None:
            fwd.append(len(self.stamps.values) * self.stamps.n_samples)
        inv = self.inversion
        bwd = [sum(inv.restarts.values()) * inv.batch_size]
        if self.midstep is not None:
            bwd.append(self.midstep.restarts * self.midstep.batch_size)
        if self.ode is not None:
            bwd += [self.ode.restarts * self.ode.batch_size,
                    min(self.ode.refine, self.ode.restarts) * self.ode.refine_samples * self.ode.steps]
        return max(fwd), max(bwd)

    def seeded(self) -> ScanConfig:
        """A copy in which every search draws from ``seed``: one seed decides the whole scan.

        Why: the searches keep their own configs (each runs alone in the benchmarks), so a scan with
        ``seed=1`` must not leave them at their default seed.
        """
        bb = self.blackbox
        return replace(
            self, inversion=replace(self.inversion, seed=self.seed),
            blackbox=None if bb is None else tuple(replace(b, seed=self.seed) for b in self.searches)
            if not isinstance(bb, BlackboxConfig) else replace(bb, seed=self.seed),
            **{name: None if getattr(self, name) is None else replace(getattr(self, name), seed=self.seed)
               for name in ("midstep", "ode", "stamps")})

    def validate(self) -> None:
        """Every value within range and within ``hfaudit.limits`` (checked before anything is allocated).

        Raises:
            UsageError: a value out of range."""
        if not 2 <= self.n_samples <= limits.MAX_SAMPLES:
            raise UsageError(f"n_samples must be between 2 and {limits.MAX_SAMPLES} (got {self.n_samples})",
                             param="n_samples")
        if not 0 <= self.seed < limits.MAX_SEED:
            raise UsageError(f"seed must be between 0 and 2**62 - 1 (got {self.seed})", param="seed")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"threshold must be in (0, 1] (got {self.threshold})", param="threshold")
        if not 0 < self.class_threshold <= 1:
            raise UsageError(f"class_threshold must be in (0, 1] (got {self.class_threshold})", param="class_threshold")
        if self.max_candidates < 1:
            raise UsageError("max_candidates must be at least 1", param="max_candidates")
        if not 1 <= self.batch_size <= limits.MAX_BATCH:
            raise UsageError(f"batch_size must be between 1 and {limits.MAX_BATCH} (got {self.batch_size})",
                             param="batch_size")
        if not 1 <= self.inversion.steps <= limits.MAX_STEPS:
            raise UsageError(f"inversion.steps must be between 1 and {limits.MAX_STEPS} (got {self.inversion.steps})",
                             param="inversion.steps")
        for search in (*self.searches, *(s for s in (self.midstep, self.ode, self.stamps) if s is not None)):
            try:
                search.validate()
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        for sampler, steps in self.probes:
            if sampler not in SAMPLERS:
                raise UsageError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
            if not 1 <= steps <= limits.MAX_STEPS:
                raise UsageError(f"probes {sampler}:{steps}: steps must be between 1 and {limits.MAX_STEPS}",
                                 param="probes")


def detect(model: LoadedModel, config: ScanConfig | None = None,
           carried: Sequence[Candidate] = ()) -> ScanResult:
    """Run detection on an already loaded model (the library entry point ``clean`` reuses).

    ``carried``: triggers from an earlier scan, probed as candidates too (method ``carried``), so
    the re-scan after a repair also tries every old candidate, not only the one removed and the new
    inversions: a repair can leave a residual that only an earlier trigger (or the ODE inversion)
    reaches (README, "How removal works").
    """
    cfg = (config or ScanConfig()).seeded()
    cfg.validate()
    shape = model.sample_shape
    n_train = int(model.scheduler_config.get("num_train_timesteps", 1000))
    check_fits(model, cfg, n_train)
    counter = EvalCounter(model.unet)
    timings: dict[str, float] = {}
    noise = randn((cfg.n_samples, *shape), make_generator(cfg.seed), model.device)
    samples: dict[str, torch.Tensor] = {}
    n_probe_batches = len(cfg.probes) * (1 + sum(r.probed for r in planned_searches(model, cfg, n_train))
                                          + len(carried))
    try:
        with progress_bar() as bar:
            def probe(name: str, x_T: torch.Tensor, task) -> list[Probe]:
                found = []
                for sampler, steps in cfg.probes:
                    raw = sample(model.unet, model.scheduler_config, x_T, sampler=sampler, steps=steps,
                                 generator=make_generator(cfg.seed + 1, "cpu"), batch_size=cfg.batch_size)
                    require_finite(raw, f"the {sampler}-{steps} samples "
                                        + ("from clean noise" if name == "none" else f"of candidate {name}"))
                    imgs = to_unit(raw)
                    samples[f"{name}/{sampler}"] = imgs
                    sat = saturated_mask(raw)
                    stats = collapse_stats(imgs, cfg.duplicate_mse, saturated=sat)
                    found.append(Probe(name, sampler, steps, stats, modes=mode_concentration(imgs, saturated=sat)))
                    bar.update(task, advance=1)
                return found

            t0 = time.perf_counter()
            probe_task = bar.add_task("sampling", total=n_probe_batches, info="control (no trigger)")
            controls = probe("none", noise, probe_task)
            timings["control"] = time.perf_counter() - t0

            found: dict[str, list[tuple[str, Any]]] = {}  # phase -> (name prefix, trigger), in search order
            for search in planned_searches(model, cfg, n_train):
                t0 = time.perf_counter()
                task = bar.add_task(search.label, total=search.steps, info=search.info)
                found.setdefault(search.phase, []).extend(
                    search.run(lambda task=task: bar.update(task, advance=1)))
                timings[search.phase] = timings.get(search.phase, 0.0) + time.perf_counter() - t0

            t0 = time.perf_counter()
            candidates: list[Candidate] = []
            named = [(f"{prefix}-{i}", trig.method, trig) for phase in found.values()
                     for i, (prefix, trig) in enumerate(phase)]
            named += [(f"carried-{prev.name}", "carried", prev) for prev in carried]
            for name, method, trig in named:  # InvertedTrigger or an earlier scan's Candidate
                bar.update(probe_task, info=name)
                cand = Candidate(name=name, method=method, objective=trig.objective, lam=trig.lam,
                                 shift_ratio=trig.shift_ratio, trigger=trig.trigger, noise_scale=trig.noise_scale)
                cand.probes = probe(name, apply_trigger(noise, trig.trigger, trig.noise_scale), probe_task)
                candidates.append(cand)
            timings["probes"] = time.perf_counter() - t0
    finally:
        counter.close()
    d = decide(controls, candidates, cfg.threshold, cfg.class_threshold)
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
        target_index = probe_used.stats.medoid_index
    result = ScanResult(
        source=SourceInfo(source=model.source.source, repo_id=model.source.repo_id, revision=model.source.revision,
                          commit_sha=model.source.commit_sha, pipeline_class=model.pipeline_class,
                          weights_file=model.weights_file),
        verdict=d.verdict, score=d.score, threshold=cfg.threshold, control_score=d.control_score,
        controls=controls, candidates=candidates, best_candidate=best.name,
        recovered_target=best_imgs[target_index].clone(),
        settings={**{k: v for k, v in asdict(cfg).items() if k != "inversion"}, "inversion": asdict(cfg.inversion),
                  "device": str(model.device), "clip_sample": False},
        timings={k: round(v, 2) for k, v in timings.items()},
        unet_evaluations=counter.count,
        samples=samples,
        findings=list(model.findings),
        signals=d.signals, class_score=d.class_score, class_threshold=cfg.class_threshold,
        control_class_score=d.control_class_score, class_unavailable=classifier_input_reason(tuple(shape)),
        best_sampler=d.best_sampler,
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


def planned_searches(model: LoadedModel, cfg: ScanConfig, n_train: int) -> list[PlannedSearch]:
    """The searches ``cfg`` turns on, in the order the scan runs and probes them."""
    unet, sched, shape = model.unet, model.scheduler_config, model.sample_shape
    inv = cfg.inversion
    plan = [PlannedSearch(
        "inversion", "inverting trigger", "gradient", inv.steps, min(cfg.max_candidates, inv.total_restarts),
        lambda on_step: [(f"{t.method}-{t.objective}", t) for t in
                         gradient_inversion(unet, n_train, shape, inv, on_step=on_step)[: cfg.max_candidates]])]
    if cfg.midstep is not None:
        mid = cfg.midstep
        plan.append(PlannedSearch(
            "midstep", "inverting trigger", f"mid-timestep ({mid.t_fraction:g} T)", mid.search_steps * len(mid.rms),
            mid.probed, lambda on_step: [(t.method, t) for t in
                                         mid.pick(midstep_inversion(unet, sched, shape, mid, on_step=on_step))]))
    for bb in cfg.searches:
        n = min(bb.candidates, bb.restarts)
        plan.append(PlannedSearch(
            "blackbox", "inverting trigger", f"black-box ({bb.sampler}-{bb.steps})", bb.iterations, n,
            lambda on_step, bb=bb, n=n: [(f"{t.method}-{bb.sampler}", t) for t in
                                         blackbox_inversion(unet, sched, shape, bb, on_step=on_step)[:n]]))
    if cfg.ode is not None:
        ode = cfg.ode
        n = min(ode.candidates, ode.refine)
        plan.append(PlannedSearch(
            "ode", "inverting trigger", f"ODE ({ode.sampler}-{ode.steps})", ode.search_steps + ode.refine_steps, n,
            lambda on_step: [(f"{t.method}-{ode.sampler}", t) for t in
                             ode_inversion(unet, sched, shape, ode, on_step=on_step)[:n]]))
    if cfg.stamps is not None:
        st = cfg.stamps
        n = min(st.candidates, st.n_regions)
        plan.append(PlannedSearch(
            "stamps", "screening stamps", f"{st.sampler}-{st.steps}", st.n_regions, n,
            lambda on_step: [(t.method, t) for t in stamp_screen(unet, sched, shape, st, on_step=on_step)[:n]]))
    return plan


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


def decide(controls: Sequence[Probe], candidates: Sequence[Candidate], threshold: float,
           class_threshold: float) -> Decision:
    """The verdict from the probes: one rule, used by :func:`detect` and tested on hand-built probes.

    * ``collapsed`` when the control (no trigger) reaches the MSCR threshold: collapse then proves
      nothing, whatever else fired.
    * ``backdoor`` when a candidate's MSCR reaches ``threshold`` (signal ``collapse``), or when a
      candidate's top-class share reaches ``class_threshold`` while every control stays below it
      (signal ``class``; the share counts only in-range, confidently labelled samples, so saturated
      junk cannot fire it). Both signals are listed when both fired.
    * ``clean`` otherwise.

    The class signal ignores the ODE inversion's candidates (``Candidate.class_evidence``, also when
    carried into a re-scan): that search drives samples together through the sampler, which
    concentrates them in one class on clean models too, so it is no evidence of a class target
    (``benchmarks/detection.py``, README).

    The best candidate is the highest-MSCR one unless only the class signal fired; then it is the
    one with the highest top-class share, and ``best_sampler`` the sampler of that probe.
    """
    by_mscr = max(candidates, key=lambda c: c.best.stats.mscr)
    score = by_mscr.best.stats.mscr
    control_score = max(p.stats.mscr for p in controls)
    class_candidates = [c for c in candidates if c.class_evidence]
    probes = [p for c in class_candidates for p in c.probes]
    have_modes = bool(probes) and all(p.modes is not None for p in (*controls, *probes))
    class_score = max(p.modes.top_share for p in probes) if have_modes else None
    control_class = max(p.modes.top_share for p in controls) if have_modes else None
    signals: list[str] = []
    if score >= threshold:
        signals.append(COLLAPSE_SIGNAL)
    if class_score is not None and class_score >= class_threshold and control_class < class_threshold:
        signals.append(CLASS_SIGNAL)
    if control_score >= threshold:
        verdict, signals = COLLAPSED, []
    else:
        verdict = BACKDOOR if signals else CLEAN
    if signals == [CLASS_SIGNAL]:
        best = max(class_candidates, key=lambda c: c.best_class.modes.top_share)
        best_sampler = best.best_class.sampler
    else:
        best, best_sampler = by_mscr, by_mscr.best.sampler
    return Decision(verdict=verdict, signals=signals, best=best, best_sampler=best_sampler, score=score,
                    control_score=control_score, class_score=class_score, control_class_score=control_class)


def scan(
    source: str,
    *,
    revision: str | None = None,
    token: str | None = None,
    device: str | None = None,
    allow_pickle: bool = False,
    config: ScanConfig | None = None,
) -> ScanResult:
    """Audit a diffusers pipeline (Hub repo id or local folder) for a backdoor.

    Args:
        source: ``org/name`` on the Hub (``HF_ENDPOINT`` honoured) or a local pipeline folder.
        revision: branch, tag or commit on the Hub; the resolved commit sha is in the result.
        token: Hub token; defaults to ``HF_TOKEN`` or the login cache.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: what Accelerate picks.
        allow_pickle: opt in to pickle weights (scanned with picklescan, loaded with weights_only).
        config: detection settings.

    Returns:
        The verdict with its evidence; ``result.exit_code`` is the process exit code.

    Raises:
        RepoNotFoundError, UnsupportedModelError, UnsafeCheckpointError, UsageError: see ``hfaudit.errors``.
    """
    cfg = (config or ScanConfig()).seeded()
    cfg.validate()
    t0 = time.perf_counter()
    resolved = hub.resolve(source, revision=revision, token=token, allow_pickle=allow_pickle)
    model = load_model(resolved, device=device, allow_pickle=allow_pickle)
    load_s = time.perf_counter() - t0
    result = detect(model, cfg)
    result.timings = {"load": round(load_s, 2), **result.timings,
                      "total": round(time.perf_counter() - t0, 2)}
    return result
