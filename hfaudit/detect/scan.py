"""``scan``: stage 1 of Diff-Cleanse end to end, from a repo id or folder to a verdict.

Resolve and load the pipeline safely, sample the ``tau = 0`` control, invert candidate triggers,
sample from each, and call a backdoor when the triggered samples collapse onto one image (MSCR at
or above the threshold) while clean noise does not.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from hfaudit import hub
from hfaudit.detect.inversion import InversionConfig, gradient_inversion
from hfaudit.detect.scores import DUPLICATE_MSE, collapse_stats, saturated_mask
from hfaudit.errors import UsageError
from hfaudit.pipeline import LoadedModel, load_model
from hfaudit.progress import progress_bar
from hfaudit.results import BACKDOOR, CLEAN, COLLAPSED, Candidate, Probe, ScanResult, SourceInfo
from hfaudit.sampling import SAMPLERS, sample, to_unit
from hfaudit.seeding import make_generator, randn

DEFAULT_THRESHOLD = 0.5
"""MSCR at or above which triggered samples count as collapsed (see README, 'Calibration')."""


@dataclass
class ScanConfig:
    """Everything that decides a verdict; recorded in the report."""

    seed: int = 0
    n_samples: int = 32
    probes: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddpm", 50))
    """(sampler, steps) pairs: an ODE and an SDE family, since backdoors fire under one or the other."""
    threshold: float = DEFAULT_THRESHOLD
    duplicate_mse: float = DUPLICATE_MSE
    max_candidates: int = 4
    """How many inverted triggers (lowest shift ratio first) are probed by sampling."""
    batch_size: int = 64
    inversion: InversionConfig = field(default_factory=InversionConfig)

    def validate(self) -> None:
        """Raises:
            UsageError: a value out of range."""
        if self.n_samples < 2:
            raise UsageError(f"--samples must be at least 2 (got {self.n_samples})")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"--threshold must be in (0, 1] (got {self.threshold})")
        if self.max_candidates < 1:
            raise UsageError("--candidates must be at least 1")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.inversion.steps < 1:
            raise UsageError(f"--inversion-steps must be at least 1 (got {self.inversion.steps})")
        for sampler, steps in self.probes:
            if sampler not in SAMPLERS:
                raise UsageError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
            if steps < 1:
                raise UsageError(f"--steps must be at least 1 (got {steps})")


class _EvalCounter:
    """Counts UNet evaluations (images x forward calls): the cost measure in the report."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.count = 0
        self._handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, _module, args) -> None:
        self.count += int(args[0].shape[0])

    def close(self) -> None:
        self._handle.remove()


def detect(model: LoadedModel, config: ScanConfig | None = None,
           carried: Sequence[Candidate] = ()) -> ScanResult:
    """Run detection on an already loaded model (the library entry point ``clean`` reuses).

    ``carried``: triggers from an earlier scan, probed as candidates too (method ``carried``), so
    the re-scan after a repair also tries every old candidate, not only the one removed and the new
    inversions. Measured on the shipped example after ``clean``: one old candidate drew 31 of 32
    DDIM-10 samples into one near-duplicate group once clamped (MSCR 0.97), but the raw samples
    reach -44, all 32 count as saturated, and the MSCR with the filter is 0.03: the residual
    described in the README is still not seen by the re-scan.
    """
    cfg = config or ScanConfig()
    cfg.validate()
    shape = model.sample_shape
    n_train = int(model.scheduler_config.get("num_train_timesteps", 1000))
    counter = _EvalCounter(model.unet)
    timings: dict[str, float] = {}
    noise = randn((cfg.n_samples, *shape), make_generator(cfg.seed), model.device)
    samples: dict[str, torch.Tensor] = {}
    inv = cfg.inversion
    n_inv = inv.steps
    n_probe_batches = len(cfg.probes) * (1 + cfg.max_candidates + len(carried))
    try:
        with progress_bar() as bar:
            def probe(name: str, x_T: torch.Tensor, task) -> list[Probe]:
                found = []
                for sampler, steps in cfg.probes:
                    raw = sample(model.unet, model.scheduler_config, x_T, sampler=sampler, steps=steps,
                                 generator=make_generator(cfg.seed + 1, "cpu"), batch_size=cfg.batch_size)
                    imgs = to_unit(raw)
                    samples[f"{name}/{sampler}"] = imgs
                    stats = collapse_stats(imgs, cfg.duplicate_mse, saturated=saturated_mask(raw))
                    found.append(Probe(name, sampler, steps, stats))
                    bar.update(task, advance=1)
                return found

            t0 = time.perf_counter()
            probe_task = bar.add_task("sampling", total=n_probe_batches, info="control (no trigger)")
            controls = probe("none", noise, probe_task)
            timings["control"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            inv_task = bar.add_task("inverting trigger", total=n_inv, info="gradient")
            inverted = gradient_inversion(model.unet, n_train, shape, inv, on_step=lambda: bar.update(inv_task, advance=1))
            timings["inversion"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            candidates: list[Candidate] = []
            for i, inv_trig in enumerate(inverted[: cfg.max_candidates]):
                name = f"{inv_trig.method}-{inv_trig.objective}-{i}"
                bar.update(probe_task, info=name)
                cand = Candidate(name=name, method=inv_trig.method, objective=inv_trig.objective, lam=inv_trig.lam,
                                 shift_ratio=inv_trig.shift_ratio, trigger=inv_trig.trigger)
                cand.probes = probe(name, noise + inv_trig.trigger.to(model.device), probe_task)
                candidates.append(cand)
            for prev in carried:
                name = f"carried-{prev.name}"
                bar.update(probe_task, info=name)
                cand = Candidate(name=name, method="carried", objective=prev.objective, lam=prev.lam,
                                 shift_ratio=prev.shift_ratio, trigger=prev.trigger)
                cand.probes = probe(name, noise + prev.trigger.to(model.device), probe_task)
                candidates.append(cand)
            timings["probes"] = time.perf_counter() - t0
    finally:
        counter.close()
    best = max(candidates, key=lambda c: c.best.stats.mscr)
    score = best.best.stats.mscr
    control_score = max(p.stats.mscr for p in controls)
    if control_score >= cfg.threshold:
        verdict = COLLAPSED
    elif score >= cfg.threshold:
        verdict = BACKDOOR
    else:
        verdict = CLEAN
    best_imgs = samples[f"{best.name}/{best.best.sampler}"]
    result = ScanResult(
        source=SourceInfo(source=model.source.source, repo_id=model.source.repo_id, revision=model.source.revision,
                          commit_sha=model.source.commit_sha, pipeline_class=model.pipeline_class,
                          weights_file=model.weights_file),
        verdict=verdict, score=score, threshold=cfg.threshold, control_score=control_score,
        controls=controls, candidates=candidates, best_candidate=best.name,
        recovered_target=best_imgs[best.best.stats.medoid_index].clone(),
        settings={**{k: v for k, v in asdict(cfg).items() if k != "inversion"}, "inversion": asdict(inv),
                  "device": str(model.device), "clip_sample": False},
        timings={k: round(v, 2) for k, v in timings.items()},
        unet_evaluations=counter.count,
        samples=samples,
        findings=list(model.findings),
    )
    return result


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
    cfg = config or ScanConfig()
    cfg.validate()
    t0 = time.perf_counter()
    resolved = hub.resolve(source, revision=revision, token=token, allow_pickle=allow_pickle)
    model = load_model(resolved, device=device, allow_pickle=allow_pickle)
    load_s = time.perf_counter() - t0
    result = detect(model, cfg)
    result.timings = {"load": round(load_s, 2), **result.timings,
                      "total": round(time.perf_counter() - t0, 2)}
    return result
