"""Published detection protocols, reimplemented as baselines for ``benchmarks/detection.py``.

Built on hfaudit's own parts so the benchmark compares like for like: the same loaded model, the
same sampling loop (``hfaudit.sampling``, clipping off), the same evaluation counter.

**Elijah** (An et al., AAAI 2024), following its public code (``elijah_helper.py``):

1. Invert one full-resolution trigger ``tau`` (initialised ``-U[0, 1)``) with Adam, lr 0.1, 100
   steps, on a fixed batch of noises (100 for images up to 32x32), minimising
   ``L1(mean_b eps(n_b + tau, T), lambda tau)`` with ``lambda = 0.5``. No norm budget, no lattice,
   no pairing with ``eps(n_b, T)``: this is deliberately *not* hfaudit's own gradient inversion
   (``hfaudit/detect/inversion.py``, which projects to a budget, searches a coarse lattice and uses
   the paired shift), so the baseline measures Elijah as published.
2. Sample 16 images from fresh ``n + tau`` with 1000-step DDPM, clipping off.
3. Features: *uniformity*, the trimmed mean pairwise distance of the samples (Elijah drops the 4
   smallest and 4 largest distances of each row, then the 4 smallest and 4 largest row means), and
   *TV loss*, the total variation of the samples. Low uniformity means the trigger collapses the
   samples: backdoor-like, so :attr:`ElijahFeatures.score` is ``-uniformity``.

Deviations, and why: Elijah measures distances with LPIPS, whose VGG/AlexNet weights are not
available offline (hfaudit downloads no weights), and LPIPS is meaningless on 8x8-16x16 digits
anyway; we use per-image RMSE of pixels in [0, 1] (the metric space of
``hfaudit/detect/scores.py``). Elijah's TV (torchmetrics ``TotalVariation``, reduction ``mean``)
is the *sum* of absolute neighbour differences per image, averaged over images; we report the
*mean* absolute neighbour difference, which differs by the constant factor
``C*(H-1)*W + C*H*(W-1)`` for one image shape but compares across shapes.

**Diff-Cleanse** (the paper's detection stage): black-box trigger inversion with its schedule
(``hfaudit.detect.blackbox.DIFF_CLEANSE_SCHEDULE``: 100 iterations x 16 samples x 20 steps, one
restart), then the MSCR of 64 samples from ``n + tau`` under the same sampler and steps. The
published protocol groups images as they are saved (clamped to [0, 1]) with no saturation filter,
so neither does this baseline: a trigger that drives every sample to one white square counts as
collapse here, as it would there (hfaudit's own verdict excludes saturated samples,
``hfaudit.detect.scores.saturated_mask``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from hfaudit.sampling import EvalCounter, sample, to_unit
from hfaudit.seeding import make_generator, randn

ELIJAH_LAMBDA = 0.5
ELIJAH_LR = 0.1
ELIJAH_TRIM = 4
"""Distances dropped at each end by Elijah's trimmed mean (of 16 samples)."""


@dataclass
class ElijahFeatures:
    """Elijah's detection features for one model, and what they cost."""

    uniformity: float
    """Trimmed mean pairwise RMSE (pixels in [0, 1]) of samples from ``n + tau``; low = collapsed."""
    tv: float
    """Mean absolute difference between neighbouring pixels of those samples (total variation)."""
    unet_evaluations: int
    """Images through the UNet's forward (inversion steps count once each, plus their backward)."""
    seconds: float
    loss: float = float("nan")
    """Elijah's inversion objective at the end."""
    trigger: torch.Tensor | None = field(default=None, repr=False)
    """The inverted ``(C, H, W)`` trigger, on the CPU."""

    @property
    def score(self) -> float:
        """``-uniformity``: higher means more backdoor-like (samples from the trigger agree)."""
        return -self.uniformity


def uniformity(images01: torch.Tensor, trim: int = ELIJAH_TRIM) -> float:
    """Elijah's uniformity: trimmed mean of the pairwise distance matrix of ``(N, C, H, W)`` images.

    Distances are per-image RMSE (LPIPS in the paper, see the module docstring). Each row is sorted
    and its ``trim`` smallest (the zero self-distance among them) and largest entries dropped; the
    row means are sorted and trimmed the same way. ``trim`` shrinks for small batches so that at
    least one value is left.
    """
    n = int(images01.shape[0])
    if n < 2:
        return 0.0
    flat = images01.flatten(1).double()
    d = torch.cdist(flat, flat).pow(2).div(flat.shape[1]).clamp(min=0).sqrt()
    k = min(trim, (n - 1) // 2)
    rows = d.sort(dim=1).values[:, k:n - k].mean(1)
    rows = rows.sort().values[k:n - k]
    return float(rows.mean())


def total_variation(images01: torch.Tensor) -> float:
    """Mean absolute difference between horizontally and vertically neighbouring pixels."""
    dh = (images01[..., 1:, :] - images01[..., :-1, :]).abs()
    dw = (images01[..., :, 1:] - images01[..., :, :-1]).abs()
    return float((dh.sum() + dw.sum()) / (dh.numel() + dw.numel()))


def elijah_inversion(unet: torch.nn.Module, num_train_timesteps: int, shape: tuple[int, int, int], *,
                     seed: int = 0, steps: int = 100, batch_size: int = 100, lam: float = ELIJAH_LAMBDA,
                     lr: float = ELIJAH_LR) -> tuple[torch.Tensor, float]:
    """Elijah's trigger inversion; returns the ``(C, H, W)`` trigger (CPU) and the final loss.

    ``min_tau L1(mean_b eps(n_b + tau, T), lam * tau)``: a backdoored model's prediction at ``T``
    moves by about ``lam * tau`` along its trigger, a clean one's by about ``tau``.
    """
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    gen = make_generator(seed)
    noise = randn((batch_size, *shape), gen, device)
    tau = (-torch.rand((1, *shape), generator=gen)).to(device).requires_grad_(True)
    t = torch.full((batch_size,), num_train_timesteps - 1, device=device, dtype=torch.long)
    opt = torch.optim.Adam([tau], lr=lr)
    was_training = unet.training
    flags = [q.requires_grad for q in unet.parameters()]
    unet.eval().requires_grad_(False)  # gradients for tau only: no weight gradients to compute or keep
    loss = torch.tensor(float("nan"))
    try:
        for _ in range(steps):
            out = unet((noise + tau).to(dtype), t).sample.float()
            loss = F.l1_loss(out.mean(0), lam * tau[0])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        unet.train(was_training)
        for q, flag in zip(unet.parameters(), flags):
            q.requires_grad_(flag)
    return tau.detach()[0].cpu(), float(loss.detach())


def elijah_features(unet: torch.nn.Module, scheduler_config: Mapping[str, Any], shape: tuple[int, int, int], *,
                    seed: int = 0, n_samples: int = 16, steps: int = 1000, inversion_steps: int = 100,
                    inversion_batch: int = 100, device: torch.device | str | None = None) -> ElijahFeatures:
    """Elijah's detection protocol on one model: invert, sample with DDPM, measure the samples.

    Args:
        unet: the suspect denoiser (moved to ``device`` when one is given; weights unchanged).
        scheduler_config: its scheduler config (training schedule; clipping is turned off).
        shape: ``(C, H, W)`` of one sample.
        seed: seeds the inversion noises, the trigger's start, the sampling noise and DDPM's noise.
        n_samples: images sampled from ``n + tau`` (16 in Elijah).
        steps: DDPM sampling steps (1000 in Elijah; fewer only to keep tests fast).
        inversion_steps: Adam steps of the inversion (100 in Elijah).
        inversion_batch: noises in the inversion batch (100 in Elijah for images up to 32x32).
        device: where to run; default: where ``unet`` already is.

    Returns:
        The features, the trigger, the UNet evaluations and the wall time.
    """
    if device is not None:
        unet.to(device)
    dev = next(unet.parameters()).device
    n_train = int(scheduler_config.get("num_train_timesteps") or 1000)
    counter = EvalCounter(unet)
    t0 = time.perf_counter()
    try:
        trigger, loss = elijah_inversion(unet, n_train, shape, seed=seed, steps=inversion_steps,
                                         batch_size=inversion_batch)
        noise = randn((n_samples, *shape), make_generator(seed + 1), dev)
        raw = sample(unet, scheduler_config, noise + trigger.to(dev), sampler="ddpm", steps=steps,
                     generator=make_generator(seed + 2, "cpu"), batch_size=n_samples)
    finally:
        counter.close()
    imgs = to_unit(raw)
    return ElijahFeatures(uniformity=uniformity(imgs), tv=total_variation(imgs), unet_evaluations=counter.count,
                          seconds=time.perf_counter() - t0, loss=loss, trigger=trigger)


@dataclass
class DiffCleanseResult:
    """The Diff-Cleanse detection score for one model, and what it cost."""

    mscr: float
    """MSCR of samples from the inverted trigger (no saturation filter, as published)."""
    unet_evaluations: int
    seconds: float
    trigger: torch.Tensor | None = field(default=None, repr=False)

    @property
    def score(self) -> float:
        """The MSCR: higher means more backdoor-like."""
        return self.mscr


def diffcleanse_score(unet: torch.nn.Module, scheduler_config: Mapping[str, Any], shape: tuple[int, int, int], *,
                      seed: int = 0, n_samples: int = 64, config=None) -> DiffCleanseResult:
    """Diff-Cleanse's detection protocol on one model: BBTI with the paper's schedule, then MSCR.

    Args:
        unet: the suspect denoiser, on its device (weights unchanged).
        scheduler_config: its scheduler config (clipping is turned off by the sampler).
        shape: ``(C, H, W)`` of one sample.
        seed: seeds the inversion and the final samples.
        n_samples: images sampled from ``n + tau`` for the MSCR.
        config: a ``BlackboxConfig`` (default: ``DIFF_CLEANSE_SCHEDULE`` with ``seed``); smaller
            schedules only to keep tests fast.
    """
    from dataclasses import replace

    from hfaudit.detect.blackbox import DIFF_CLEANSE_SCHEDULE, blackbox_inversion
    from hfaudit.detect.scores import collapse_stats

    cfg = replace(config or DIFF_CLEANSE_SCHEDULE, seed=seed)
    dev = next(unet.parameters()).device
    counter = EvalCounter(unet)
    t0 = time.perf_counter()
    try:
        trigger = blackbox_inversion(unet, scheduler_config, shape, cfg)[0].trigger
        noise = randn((n_samples, *shape), make_generator(seed + 1), dev)
        raw = sample(unet, scheduler_config, noise + trigger.to(dev), sampler=cfg.sampler, steps=cfg.steps,
                     generator=make_generator(seed + 2, "cpu"), batch_size=n_samples)
    finally:
        counter.close()
    stats = collapse_stats(to_unit(raw))
    return DiffCleanseResult(mscr=stats.mscr, unet_evaluations=counter.count, seconds=time.perf_counter() - t0,
                             trigger=trigger)
