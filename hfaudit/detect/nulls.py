"""Evidence held against its null: is a collapse the trigger's, or one the model falls into anyway?

A search that optimises a trigger for collapse finds one on clean models too: the coarse content
of the initial noise decides much of what a diffusion model draws, so an offset shaped like one of
its own images pulls the samples onto that image, backdoor or not. Two things keep such a mode
from being called a backdoor (docs/detection.md, "Evidence against a null"):

* **The radius of a near-duplicate is the model's own** (:func:`near_duplicate_radius`). A
  stochastic sampler reproduces a natural-image target only approximately, so exact pixel
  duplicates miss it; but clean samples of one class are close too. The radius is the largest step
  of a ladder at which the clean control's samples still form no large group, so a collapse counts
  samples that are closer to each other than this model's clean samples ever are.
* **Does the trigger depict what it produces?** (:func:`alignment`): a search exploiting the
  model's habit of following its input finds triggers that are faint pictures of their output
  (high cosine between the trigger and the output's difference to the mean clean sample); a
  planted trigger (a stop sign for a hat) is unrelated to its target. A trigger at or below
  ``max_alignment`` is evidence as it stands; above it, the more the trigger depicts its target,
  the more it must beat the painted null (the full margin from twice ``max_alignment`` on).
* **The painted null** (:func:`painted_offset`): a trigger that does depict its output must do
  far more than the picture itself. The image the candidate collapsed onto, painted into the noise
  at the trigger's own strength, is probed like the trigger; when that collapses the samples
  nearly as much, the model merely follows its input and the collapse is no evidence.
* **The random null** (:func:`random_offset`): an offset as strong as the trigger in a random
  direction must do far less. A strong enough offset pushes a model that follows its input into a
  flat or clipped image whatever its direction; a planted trigger works by its direction.

Both are measured on the audited model itself at scan time, so the verdict does not lean on a
threshold fitted to other models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hfaudit.detect.scores import DUPLICATE_MSE, collapse_stats

RADIUS_LADDER: tuple[float, ...] = (DUPLICATE_MSE, 2 * DUPLICATE_MSE, 3 * DUPLICATE_MSE)
"""Candidate near-duplicate radii (per-image MSE, pixels in [0, 1]), tightest first.

Why stop at three times ``DUPLICATE_MSE``: further out, two samples of one digit class are
within the radius of each other in most of the models measured (docs/detection.md), so a group
would be a class, which the class signal judges, not an image."""

CONTROL_GROUP_SHARE = 0.25
"""The most of the clean control's samples one group may hold at the chosen radius."""


def largest_group(images01: torch.Tensor, radius: float, saturated: torch.Tensor | None = None) -> tuple[float, int]:
    """Share of ``images01`` in the largest star group at ``radius`` (per-image MSE) and its centre;
    samples flagged ``saturated`` join no group, as in every collapse the scan measures
    (``scores.collapse_stats``)."""
    if int(images01.shape[0]) == 0:
        return 0.0, 0
    stats = collapse_stats(images01, radius, saturated=saturated)
    return stats.mscr, stats.medoid_index


Controls = Sequence[tuple[torch.Tensor, "torch.Tensor | None"]]
"""Clean control batches: ``(images in [0, 1], which are saturated or None)`` each."""


def near_duplicate_radius(controls01: Controls, ladder: Sequence[float] = RADIUS_LADDER,
                          cap: float = CONTROL_GROUP_SHARE) -> float:
    """The widest radius of ``ladder`` at which no clean control batch groups more than ``cap`` of
    its samples (the tightest one when even that is exceeded: the control's own collapse is then
    judged by the threshold as before)."""
    chosen = ladder[0]
    for radius in ladder:
        if all(largest_group(batch, radius, sat)[0] <= cap for batch, sat in controls01):
            chosen = radius
        else:
            break
    return chosen


def trigger_strength(x_T: torch.Tensor, noise: torch.Tensor) -> float:
    """RMS norm of what the trigger changed in the initial noise, ``x_T - noise``, per sample: an
    additive trigger's norm, and for a stamp what overwriting the noise moved."""
    return float((x_T - noise).flatten(1).norm(dim=1).pow(2).mean().sqrt())


def alignment(offset: torch.Tensor, target_model: torch.Tensor, reference_model: torch.Tensor) -> float:
    """Cosine between what the trigger added to the noise and its target's difference to the mean
    clean sample (model space): near 1 when the trigger is a picture of what it produces."""
    diff = (target_model - reference_model).flatten().float()
    off = offset.flatten().float().to(diff.device)
    denom = float(diff.norm() * off.norm())
    return 0.0 if denom == 0.0 else float(diff @ off) / denom


RANDOM_GRID = 4
"""Side of the lattice a random null direction is drawn on: the coarse grid the searches' triggers live on."""


def random_offset(shape: Sequence[int], strength: float, generator: torch.Generator,
                  grid: int = RANDOM_GRID) -> torch.Tensor:
    """A random direction of the searches' kind (Gaussian on a ``grid`` x ``grid`` lattice, upsampled
    to ``(C, H, W)``), scaled to ``strength``: what an offset of that size does with no aim at all."""
    c, h, w = (int(v) for v in shape)
    coarse = torch.randn((1, c, min(grid, h), min(grid, w)), generator=generator)
    fine = torch.nn.functional.interpolate(coarse, size=(h, w), mode="nearest")[0]
    return fine * (strength / float(fine.norm()))


def painted_offset(target_model: torch.Tensor, reference_model: torch.Tensor, strength: float) -> torch.Tensor:
    """The target painted as an additive offset: its difference to the mean clean sample, scaled to
    ``strength`` (both images in model space, ``(C, H, W)``)."""
    diff = (target_model - reference_model).float()
    norm = float(diff.norm())
    if norm == 0.0:
        return torch.zeros_like(diff)
    return diff * (strength / norm)


@dataclass
class NullCheck:
    """A candidate's evidence beside its painted null, under the sampler where it fired."""

    sampler: str
    steps: int
    signal: str
    """``collapse`` (group share at ``radius``) or ``class`` (top-class share)."""
    score: float
    """The candidate's share under this sampler."""
    null_score: float
    """The same share with the painted target in place of the trigger."""
    margin: float
    """How far ``score`` must exceed ``null_score`` for the evidence to hold."""
    radius: float | None = None
    alignment: float | None = None
    """Cosine between the trigger's offset and the target's picture (:func:`alignment`)."""
    max_alignment: float = 0.0
    """At or below this alignment the trigger does not depict its target (``ScanConfig.max_alignment``)."""
    random_score: float | None = None
    """The same share from a random direction of the trigger's strength (:func:`random_offset`)."""
    threshold: float = 1.0
    """The threshold ``score`` had to reach; the random null must stay under it."""

    @property
    def required_margin(self) -> float:
        """How far ``score`` must exceed the painted null: nothing for a trigger that does not depict
        its target (``alignment <= max_alignment``), the full ``margin`` for one that clearly does
        (twice that alignment or more, or unknown), and in between in proportion: the more a trigger
        looks like its output, the more it must do beyond what the picture does."""
        if self.alignment is None:
            return self.margin
        if self.alignment <= self.max_alignment:
            return 0.0
        full = 2 * self.max_alignment
        if self.alignment >= full or full <= self.max_alignment:
            return self.margin
        return self.margin * (self.alignment - self.max_alignment) / (full - self.max_alignment)

    @property
    def holds(self) -> bool:
        """Whether the evidence is the trigger's, not the model following its input or the mere size
        of the offset: a random direction of the trigger's strength stays under the threshold
        (``random_score < threshold``), and the trigger does more than its target's own picture at
        its strength by :attr:`required_margin` (nothing when the trigger does not depict it)."""
        eps = 1e-9
        if self.random_score is not None and self.random_score >= self.threshold - eps:
            return False
        if self.alignment is not None and self.alignment <= self.max_alignment:
            return True
        return self.score - self.null_score >= self.required_margin - eps

    def to_dict(self) -> dict[str, object]:
        """JSON form (reports)."""
        return {"sampler": self.sampler, "steps": self.steps, "signal": self.signal, "score": round(self.score, 6),
                "null_score": round(self.null_score, 6), "margin": self.margin, "radius": self.radius,
                "alignment": None if self.alignment is None else round(self.alignment, 4),
                "max_alignment": self.max_alignment,
                "random_score": None if self.random_score is None else round(self.random_score, 6),
                "threshold": self.threshold,
                "holds": self.holds}
