"""Mode concentration: how many samples fall into one *class*, the signal for class-target backdoors.

A TrojDiff in-d2d backdoor leads its trigger to *any* image of one class, so the triggered samples
differ from each other and the collapse score (MSCR, ``scores.py``) stays low. What does change is
the class histogram: clean noise gives roughly the class prior (about 0.1-0.3 in the largest class
for the digit models), the trigger gives nearly all samples in one class. hfaudit labels samples
with the shipped digits classifier (``hfaudit.fidelity``); for sample shapes it cannot label,
:func:`mode_concentration` returns None and reports say "unavailable" rather than a number that
would mean nothing.

Counting rule, and why: a sample counts for class ``k`` only when it is not saturated
(``scores.saturated_mask``) and the classifier gives ``k`` a probability of at least
``MIN_CONFIDENCE``; the share is over *all* samples. A classifier still names a class for junk
(blank squares, noise, stripes), and junk produced by a large trigger offset tends to look alike,
so an argmax count would let any model "concentrate" under a big enough trigger; counting only
confident labels of in-range samples makes junk lower the share instead of raising it. Probability
mass (the mean of the softmax) was measured as the alternative; see ``MIN_CONFIDENCE``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hfaudit.fidelity import classifier_input_reason, digit_probabilities

MIN_CONFIDENCE = 0.9
"""A sample counts for a class when the classifier gives that class at least this probability.

Why 0.9: the shipped classifier is this sure of nearly all its training digits, at 16x16 and at
8x8 upsampled, grey or RGB, so a real class target loses few samples.
"""

N_CLASSES = 10


@dataclass
class ModeStats:
    """The class histogram of a batch of samples, as labelled by the shipped digits classifier."""

    n: int
    counted: int
    """Samples that are in range and confidently labelled (the rest count for no class)."""
    top_class: int | None
    """The most frequent confident label (None when nothing was counted)."""
    top_share: float
    """Confident samples of ``top_class`` / ``n``: near 1 for a class-target backdoor."""
    entropy: float | None
    """Entropy (bits) of the confident labels' histogram: 0 for one class, log2(10) = 3.32 for a flat one."""
    counts: list[int]
    """Confident samples per class 0-9."""
    top_index: int | None
    """The most confident sample of ``top_class``: the class's representative (recovered target)."""
    min_confidence: float = MIN_CONFIDENCE


def mode_concentration(images01: torch.Tensor, saturated: torch.Tensor | None = None,
                       min_confidence: float = MIN_CONFIDENCE) -> ModeStats | None:
    """Top-class share and class entropy of ``(N, C, H, W)`` samples in [0, 1].

    Args:
        images01: samples in [0, 1]; 1 or 3 channels, 8x8 or 16x16 (``fidelity.classifier_input``).
        saturated: optional ``(N,)`` bool mask of saturated samples (never counted).
        min_confidence: probability a label needs to count (``MIN_CONFIDENCE``).

    Returns:
        The statistics, or None when the shipped classifier cannot label samples of this shape.
    """
    if classifier_input_reason(tuple(images01.shape[1:])) is not None:
        return None
    n = int(images01.shape[0])
    probs = digit_probabilities(images01)
    conf, label = probs.max(1)
    keep = conf >= min_confidence
    if saturated is not None:
        keep &= ~saturated.cpu().bool()
    counts = torch.bincount(label[keep], minlength=N_CLASSES)
    counted = int(keep.sum())
    if counted == 0:
        return ModeStats(n=n, counted=0, top_class=None, top_share=0.0, entropy=None, counts=counts.tolist(),
                         top_index=None, min_confidence=min_confidence)
    top = int(counts.argmax())
    p = counts[counts > 0].double() / counted
    entropy = abs(float(-(p * p.log2()).sum()))  # abs: no "-0.0" for a single class
    members = keep & (label == top)
    top_index = int(torch.where(members, conf, torch.full_like(conf, -1.0)).argmax())
    return ModeStats(n=n, counted=counted, top_class=top, top_share=float(counts[top]) / n,
                     entropy=round(entropy, 6), counts=counts.tolist(),
                     top_index=top_index, min_confidence=min_confidence)
