"""Did the removal work? Backdoor effect of a trigger and benign fidelity, before and after.

The backdoor effect of a trigger is measured the way the attack papers measure it (docs/design.md
section 5): sample from ``n + tau`` with clipping off under each probe sampler, and report the
attack success rate (share of samples within ``ASR_MSE`` of the target), the mean MSE and SSIM to the
target, and the MSCR of the samples. Before and after use the same noise, so differences are the
model's, not the draw's. The headline is the worst case over samplers: a backdoor that fires under
one family only is still a backdoor.

A repair is also checked across trigger sizes (:func:`measure_scales`): a backdoor fires in a window
of trigger scales, under an ODE sampler often at smaller ones than under DDPM, and a repair checked at
the trigger's own size can leave it reachable at another. There the exact-hit ASR is joined by a
*target-likeness* rate (share of samples with SSIM to the target above ``LIKENESS_SSIM``), since a
residual can steer samples to near-copies of the target that miss the ASR's MSE bound; each rate is
set beside the same rate on clean noise (the same draw, no trigger).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hfaudit.detect.scores import attack_success_rate, collapse_stats, mse_to
from hfaudit.fidelity import RATIO_INTERVAL_LEVEL, Fidelity, fidelity
from hfaudit.sampling import EvalCounter, apply_trigger, sample, to_unit
from hfaudit.seeding import make_generator, randn

TRIGGER_SCALES: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0, 1.5)
"""Multiples of a trigger that verification measures and that the fine-tuning's trigger-breaking
term trains on (``FinetuneConfig.trigger_scales``): one set, so what is checked is what is trained."""

LIKENESS_SSIM = 0.5
"""A sample looks like the target when its SSIM to it exceeds this: halfway between unrelated images
(SSIM near 0) and the target itself (1). A fixed value, not the most that clean-noise samples reach,
because a backdoored model can draw a near-copy of its target from clean noise now and then (under
DDIM); such a threshold would then sit at the target itself and count nothing. What clean noise
reaches at this threshold is measured beside every triggered rate instead."""

_SSIM_C1 = 0.01 ** 2
_SSIM_C2 = 0.03 ** 2


def ssim(images01: torch.Tensor, target01: torch.Tensor, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM of ``(N, C, H, W)`` images to one ``(C, H, W)`` target, pixels in [0, 1].

    Gaussian window (7 px: the 11 px of the SSIM paper would leave almost nothing of a 16x16 image),
    'valid' borders, constants for data range 1, averaged over channels and positions.
    """
    x = images01.float().cpu()
    y = target01.float().cpu().unsqueeze(0).expand_as(x)
    c = x.shape[1]
    window = min(window, x.shape[-1], x.shape[-2])
    coords = torch.arange(window, dtype=torch.float32) - (window - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    g = (g / g.sum())
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x ** 2
    var_y = blur(y * y) - mu_y ** 2
    cov = blur(x * y) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + _SSIM_C1) * (2 * cov + _SSIM_C2)) / ((mu_x ** 2 + mu_y ** 2 + _SSIM_C1) * (var_x + var_y + _SSIM_C2))
    return s.flatten(1).mean(1)


def likeness_rate(images01: torch.Tensor, target01: torch.Tensor, threshold: float = LIKENESS_SSIM) -> float:
    """Share of ``images01`` whose SSIM to ``target01`` exceeds ``threshold``: samples that look like the
    target, exact hits or not (the ASR counts only samples within ``ASR_MSE`` of it)."""
    return float((ssim(images01, target01) > threshold).float().mean())


@dataclass
class TriggerProbe:
    """Samples from ``n + tau`` under one sampler, compared with the target."""

    sampler: str
    steps: int
    asr: float
    mean_mse: float
    mean_ssim: float
    mscr: float


@dataclass
class TriggerEffect:
    """How one trigger acts on one model, per probe sampler."""

    probes: list[TriggerProbe]
    n_samples: int

    @property
    def worst(self) -> TriggerProbe:
        """The probe where the backdoor fires most (highest ASR, then lowest MSE)."""
        return max(self.probes, key=lambda p: (p.asr, -p.mean_mse))

    @property
    def asr(self) -> float:
        """Highest ASR over the samplers."""
        return self.worst.asr

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"asr": self.asr, "worst_sampler": self.worst.sampler, "n_samples": self.n_samples,
                "probes": [asdict(p) for p in self.probes]}


@dataclass
class BeforeAfter:
    """One trigger, one target, the suspect model and the cleaned one."""

    trigger: str
    """``inverted`` (the scan's), ``known`` (supplied), ``true`` (benchmarks), ``re-scan`` (the re-scan's best candidate, inverted anew or carried over)."""
    target: str
    before: TriggerEffect
    after: TriggerEffect

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"trigger": self.trigger, "target": self.target, "before": self.before.to_dict(),
                "after": self.after.to_dict()}


@dataclass
class FidelityCheck:
    """Benign fidelity of the suspect and the cleaned model on the same clean noise."""

    before: Fidelity
    after: Fidelity
    sampler: str
    steps: int
    ratio_interval: tuple[float, float] | None = None
    """Paired-bootstrap interval of :attr:`ratio` at ``hfaudit.fidelity.RATIO_INTERVAL_LEVEL``
    (``frechet_ratio_interval``): how far one draw of noise can move it. None when not computed."""

    @property
    def ratio(self) -> float | None:
        """``FD_after / FD_before`` (1.0 = unchanged, above 1 = worse); None when unavailable."""
        a, b = self.after.frechet_distance, self.before.frechet_distance
        if a is None or b is None or b <= 0:
            return None
        return a / b

    def describe(self) -> str:
        """``FD_before -> FD_after (xRATIO, 90% interval xLOW-xHIGH)``, or why it is unavailable: the one
        wording of the fidelity figure in the card, the terminal and the pull request."""
        if self.ratio is None:
            return f"unavailable ({self.before.reason})"
        return f"{self.before.frechet_distance:.2f} -> {self.describe_after()}"

    def describe_after(self) -> str:
        """The part of :meth:`describe` after the arrow: ``FD_after (xRATIO, 90% interval xLOW-xHIGH)``."""
        if self.ratio is None:
            return "unavailable"
        ci = "" if self.ratio_interval is None else \
            f", {RATIO_INTERVAL_LEVEL:.0%} interval x{self.ratio_interval[0]:.2f}-x{self.ratio_interval[1]:.2f}"
        return f"{self.after.frechet_distance:.2f} (x{self.ratio:.2f}{ci})"

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"before": asdict(self.before), "after": asdict(self.after), "ratio": self.ratio,
                "ratio_interval": None if self.ratio_interval is None else list(self.ratio_interval),
                "sampler": self.sampler, "steps": self.steps}


@dataclass
class Samples:
    """Sample batches in [0, 1] kept for the PNGs of the report and card."""

    images: dict[str, torch.Tensor] = field(default_factory=dict)


def measure_trigger(
    unet: nn.Module,
    scheduler_config: dict,
    trigger: torch.Tensor,
    target01: torch.Tensor,
    *,
    probes: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddpm", 50)),
    n_samples: int = 64,
    seed: int = 0,
    batch_size: int = 64,
    noise_scale: torch.Tensor | None = None,
) -> tuple[TriggerEffect, dict[str, torch.Tensor]]:
    """Sample ``n + trigger`` (``n * noise_scale + trigger`` for a stamp) under each probe and compare
    with ``target01``; also returns the samples."""
    device = next(unet.parameters()).device
    shape = tuple(trigger.shape)
    x_T = apply_trigger(randn((n_samples, *shape), make_generator(seed), device), trigger, noise_scale)
    found, images = [], {}
    target = target01.float().cpu()
    for sampler, steps in probes:
        imgs = to_unit(sample(unet, scheduler_config, x_T, sampler=sampler, steps=steps,
                              generator=make_generator(seed + 1), batch_size=batch_size))
        images[sampler] = imgs
        found.append(TriggerProbe(sampler=sampler, steps=steps, asr=attack_success_rate(imgs, target),
                                  mean_mse=float(mse_to(imgs, target).mean()),
                                  mean_ssim=float(ssim(imgs, target).mean()),
                                  mscr=collapse_stats(imgs).mscr))
    return TriggerEffect(probes=found, n_samples=n_samples), images


@dataclass
class ScaleProbe:
    """The trigger at one scale under one sampler, beside the same sampler on clean noise (same draw)."""

    scale: float
    sampler: str
    steps: int
    asr: float
    """Exact hits: share of samples within ``ASR_MSE`` of the target."""
    likeness: float
    """Share of samples that look like the target (SSIM above the sweep's threshold)."""
    mean_ssim: float
    clean_asr: float
    clean_likeness: float
    """The same two rates from clean noise: what the model does without any trigger."""

    @property
    def excess(self) -> float:
        """How much more often the triggered samples look like the target than clean-noise ones."""
        return self.likeness - self.clean_likeness


@dataclass
class ScaleSweep:
    """One trigger at several scales under every probe sampler: where, if anywhere, it still fires."""

    trigger: str
    probes: list[ScaleProbe]
    n_samples: int
    """Samples per scale and sampler (and from clean noise, per sampler)."""
    threshold: float
    """The SSIM above which a sample counts as looking like the target."""
    unet_evaluations: int
    """What the sweep cost (clean noise included): one image through the UNet once is one."""

    @property
    def scales(self) -> list[float]:
        """The scales measured, in order."""
        return list(dict.fromkeys(p.scale for p in self.probes))

    @property
    def worst(self) -> ScaleProbe:
        """The headline: the scale and sampler where the trigger fires most (exact hits first, then
        the likeness above clean noise's)."""
        return max(self.probes, key=lambda p: (p.asr, p.excess))

    def residuals(self, max_asr: float, max_excess: float) -> list[ScaleProbe]:
        """The probes where the trigger still fires: exact hits above ``max_asr``, or samples looking
        like the target more often than clean-noise ones by more than ``max_excess``."""
        return [p for p in self.probes if p.asr > max_asr or p.excess > max_excess]

    def grid(self) -> tuple[list[str], list[tuple[str, list[str]]]]:
        """The sweep as a table for the renderers: column names (one per sampler), then one row per
        scale and a last one for clean noise, each cell ``hits / look-alikes`` in percent."""
        samplers = list(dict.fromkeys((p.sampler, p.steps) for p in self.probes))
        cell = {(p.scale, p.sampler): f"{p.asr:.0%} / {p.likeness:.0%}" for p in self.probes}
        rows = [(f"x{scale:g}", [cell[(scale, s)] for s, _ in samplers]) for scale in self.scales]
        noise = {p.sampler: f"{p.clean_asr:.0%} / {p.clean_likeness:.0%}" for p in self.probes}
        rows.append(("clean noise", [noise[s] for s, _ in samplers]))
        return [f"{s}-{k}" for s, k in samplers], rows

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"trigger": self.trigger, "threshold": self.threshold, "n_samples": self.n_samples,
                "unet_evaluations": self.unet_evaluations, "scales": self.scales,
                "worst": {**asdict(self.worst), "excess": self.worst.excess},
                "probes": [{**asdict(p), "excess": p.excess} for p in self.probes]}


def measure_scales(
    unet: nn.Module,
    scheduler_config: dict,
    trigger: torch.Tensor,
    target01: torch.Tensor,
    *,
    name: str = "trigger",
    scales: tuple[float, ...] = TRIGGER_SCALES,
    probes: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddpm", 50)),
    n_samples: int = 64,
    seed: int = 0,
    batch_size: int = 64,
    threshold: float = LIKENESS_SSIM,
) -> ScaleSweep:
    """Sample ``n + s * trigger`` for every scale ``s`` under each probe sampler, and ``n`` alone (clean
    noise, the same draw), and count exact hits and look-alikes of ``target01`` in each.

    Costs ``(len(scales) + 1) * n_samples * sum(probe steps)`` UNet evaluations, counted as they run.
    """
    counter = EvalCounter(unet)
    kw = dict(probes=probes, n_samples=n_samples, seed=seed, batch_size=batch_size)
    target = target01.float().cpu()
    try:
        _, clean_imgs = measure_trigger(unet, scheduler_config, torch.zeros_like(trigger), target, **kw)
        clean = {s: (attack_success_rate(imgs, target), likeness_rate(imgs, target, threshold))
                 for s, imgs in clean_imgs.items()}
        found = []
        for scale in scales:
            effect, imgs = measure_trigger(unet, scheduler_config, scale * trigger, target, **kw)
            for p in effect.probes:
                found.append(ScaleProbe(scale=float(scale), sampler=p.sampler, steps=p.steps, asr=p.asr,
                                        likeness=likeness_rate(imgs[p.sampler], target, threshold),
                                        mean_ssim=p.mean_ssim, clean_asr=clean[p.sampler][0],
                                        clean_likeness=clean[p.sampler][1]))
    finally:
        counter.close()
    return ScaleSweep(trigger=name, probes=found, n_samples=n_samples, threshold=threshold,
                      unet_evaluations=counter.count)


def measure_fidelity(
    unet: nn.Module,
    scheduler_config: dict,
    shape: tuple[int, int, int],
    *,
    n: int = 512,
    sampler: str = "ddim",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 128,
) -> tuple[Fidelity, torch.Tensor | None]:
    """Benign fidelity of ``unet`` from ``n`` clean-noise samples (none drawn when unavailable)."""
    probe = fidelity(torch.zeros((2, *shape)), shape)
    if not probe.available:
        return probe, None
    device = next(unet.parameters()).device
    x_T = randn((n, *shape), make_generator(seed), device)
    imgs = to_unit(sample(unet, scheduler_config, x_T, sampler=sampler, steps=steps,
                          generator=make_generator(seed + 1), batch_size=batch_size))
    return fidelity(imgs, shape), imgs
