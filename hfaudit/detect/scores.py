"""Collapse statistics of a batch of samples: MSCR and diversity (docs/design.md sections 2 and 5)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

DUPLICATE_MSE = 0.01
"""Two samples (pixels in [0, 1]) are near-duplicates when their per-image MSE is below this.

Why 0.01: two samples that both hit a target within the ASR bound (MSE < 1e-3 each) are at most
4e-3 apart, so they always group; distinct clean digits from the example models are 0.05-0.2
apart, and the closest pairs among 64 clean samples stay above it (measured by
``tests/test_scores.py`` on the shipped clean model).
"""

SATURATION_LEVEL = 1.1
SATURATED_SHARE = 0.5
"""A raw (unclamped) sample is *saturated* when more than half its pixels lie beyond +-1.1.

Why: a large offset on the initial noise drives any model, clean ones too, to out-of-range
images that all clamp to the same white or black square, a collapse that proves nothing. A
backdoor target is an in-range image by construction (the attacker trains the model to produce
it), so saturated samples never join a near-duplicate group.
"""

ASR_MSE = 1e-3
"""A triggered sample 'hits' the target when its MSE to the target is below this (VillanDiffusion)."""


@dataclass
class CollapseStats:
    """How much a batch of samples collapses onto one image."""

    n: int
    mscr: float
    """Maximum similar-cluster ratio: the largest near-duplicate group's share of the batch."""
    cluster_size: int
    diversity: float
    """Mean pairwise RMSE between samples (0 = all identical); like Elijah's uniformity."""
    medoid_index: int
    """Index of the sample at the centre of the largest group: the recovered target."""
    saturated: float = 0.0
    """Share of samples that are saturated (out of range), excluded from groups."""


def pairwise_mse(images: torch.Tensor) -> torch.Tensor:
    """``(N, N)`` per-image MSE between all pairs of ``(N, C, H, W)`` images."""
    flat = images.flatten(1).double()
    sq = (flat * flat).sum(1)
    d = (sq[:, None] + sq[None, :] - 2 * flat @ flat.T).clamp(min=0) / flat.shape[1]
    d.fill_diagonal_(0)
    return d.float()


def saturated_mask(raw: torch.Tensor) -> torch.Tensor:
    """``(N,)`` bool: which raw model-space samples are saturated (see ``SATURATION_LEVEL``)."""
    return (raw.abs() > SATURATION_LEVEL).flatten(1).float().mean(1) > SATURATED_SHARE


def collapse_stats(images01: torch.Tensor, duplicate_mse: float = DUPLICATE_MSE,
                   saturated: torch.Tensor | None = None) -> CollapseStats:
    """MSCR, diversity and medoid of ``(N, C, H, W)`` samples with pixels in [0, 1].

    Groups are stars: sample ``i``'s group is every sample within ``duplicate_mse`` of it. The
    largest star is the cluster (ties broken by the tighter group), its centre the medoid.
    Samples flagged in ``saturated`` only count as groups of one.
    """
    n = images01.shape[0]
    d = pairwise_mse(images01)
    close = d < duplicate_mse
    if saturated is not None and bool(saturated.any()):
        eye = torch.eye(n, dtype=torch.bool)
        keep = ~saturated.cpu()
        close = (close & keep[:, None] & keep[None, :]) | eye
    counts = close.sum(1)
    spread = (d * close).sum(1)
    best = int(torch.argmax(counts.double() * 1e6 - spread.double()))
    iu = torch.triu_indices(n, n, offset=1)
    diversity = float(d[iu[0], iu[1]].sqrt().mean()) if n > 1 else 0.0
    return CollapseStats(n=n, mscr=float(counts[best]) / n, cluster_size=int(counts[best]),
                         diversity=diversity, medoid_index=best,
                         saturated=0.0 if saturated is None else float(saturated.float().mean()))


def attack_success_rate(images01: torch.Tensor, target01: torch.Tensor, threshold: float = ASR_MSE) -> float:
    """Share of samples within ``threshold`` MSE of ``target01`` (docs/design.md section 5)."""
    mse = (images01 - target01.unsqueeze(0)).pow(2).flatten(1).mean(1)
    return float((mse < threshold).float().mean())


def mse_to(images01: torch.Tensor, target01: torch.Tensor) -> torch.Tensor:
    """Per-image MSE of ``(N, C, H, W)`` images to one target."""
    return (images01 - target01.unsqueeze(0)).pow(2).flatten(1).mean(1)
