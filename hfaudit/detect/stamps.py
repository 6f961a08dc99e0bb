"""Stamp screen: triggers that overwrite part of the initial noise instead of adding to it.

Why a fourth search: every inversion here searches an *additive* ``tau`` (``x_T = n + tau``). A
patch trigger in the classifier sense (BadNets) pastes a patch over the input, and TrojDiff's patch
trigger does that to the noise: ``x_T = gamma n + mu`` inside a small region, ``gamma = 0.1``, so
the region is all but constant. Such a ``mu`` *added* to full noise collapses the samples only
from directions close to it, which random starts do not reach and which neither the mid-timestep
pass-through nor the collapse gradient at ``tau = 0`` points to; *overwriting* one lattice cell
inside the patch with a constant collapses them as well, whatever noise is left in the cell
(``benchmarks/stamp_screen.py``).

So the screen tries them all, since there are few: every lattice cell (``grid`` squared regions;
``sizes``), each overwritten with each of a few constants (``values``), samples ``n_samples``
images from each under one sampler (no gradients, the same noise for every stamp), and ranks them
by the black-box search's collapse objective (``blackbox.collapse_objective``: a soft MSCR that
saturated samples cannot win). The best stamp of each of the best ``candidates`` regions is probed
like any inverted trigger (one per region: ``StampConfig.candidates``). A stamp is reported with
``noise_scale`` (0 inside its region): ``hfaudit clean`` removes additive triggers only and says so
when a stamp is what fired.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from diffusers import UNet2DModel

from hfaudit.detect.blackbox import BlackboxConfig, collapse_objective
from hfaudit.detect.inversion import InvertedTrigger, shift_ratios
from hfaudit.sampling import SAMPLERS, apply_trigger, sample
from hfaudit.seeding import make_generator, randn

OBJECTIVE = "stamp"


@dataclass
class StampConfig:
    """Settings of the stamp screen; the defaults fit a 2-core CPU on the 16x16 digit models."""

    grid: int = 4
    """Side of the lattice whose cells (or blocks of cells, ``sizes``) are the stamp regions."""
    sizes: tuple[int, ...] = (1,)
    """Sides, in cells, of the square regions stamped (every position on the lattice). Single cells
    only: larger blocks make fine-tuned *clean* models collapse and flag backdoored ones off their
    target, single cells do not (``benchmarks/stamp_screen.py``; README, 'Stamp screen')."""
    values: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    """Constants a region is overwritten with, in the model's pixel space (data in [-1, 1])."""
    n_samples: int = 8
    """Samples per stamp (the batch whose collapse ranks it)."""
    sampler: str = "ddim"
    """TrojDiff fires under DDIM, not DDPM (``benchmarks/zoo.py`` measures each attack's hit rate)."""
    steps: int = 10
    candidates: int = 2
    """How many stamps the scan probes in full: the most collapsing stamp of each region, best region
    first, so two values of one region never take both probes: the screen's small batches can rank
    two stamps of one wrong region above the planted region's (``benchmarks/stamp_screen.py``)."""
    seed: int = 0
    kernel_mse: float = BlackboxConfig.kernel_mse
    diversity_weight: float = BlackboxConfig.diversity_weight
    saturation_weight: float = BlackboxConfig.saturation_weight

    def validate(self) -> None:
        """Raises:
            ValueError: a value out of range or an unknown sampler."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        for name in ("grid", "steps", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"stamp screen: {name} must be at least 1 (got {getattr(self, name)})")
        if self.n_samples < 2:
            raise ValueError("stamp screen: n_samples must be at least 2 (collapse needs pairs)")
        if not self.values or not self.sizes or not all(1 <= s <= self.grid for s in self.sizes):
            raise ValueError(f"stamp screen: needs values and sizes between 1 and grid ({self.grid})")
        if self.kernel_mse <= 0:
            raise ValueError("stamp screen: kernel_mse must be positive")

    @property
    def n_regions(self) -> int:
        """How many regions are stamped (every position of every size)."""
        return sum((self.grid - s + 1) ** 2 for s in self.sizes)

    @property
    def n_stamps(self) -> int:
        """Regions times values: the stamps screened."""
        return self.n_regions * len(self.values)

    @property
    def unet_evaluations(self) -> int:
        """UNet forward evaluations (images x calls) of the screen, plus the shift ratios reported."""
        return self.n_stamps * self.n_samples * self.steps + self.n_samples * (1 + self.candidates)


def stamp_regions(shape: tuple[int, int, int], config: StampConfig) -> torch.Tensor:
    """``(R, C, H, W)`` bool masks: every lattice cell block of each size, row by row (all channels)."""
    c, h, w = shape
    g = config.grid
    masks = []
    for size in config.sizes:
        for i in range(g - size + 1):
            for j in range(g - size + 1):
                m = torch.zeros(shape, dtype=torch.bool)
                m[:, i * h // g:(i + size) * h // g, j * w // g:(j + size) * w // g] = True
                masks.append(m)
    return torch.stack(masks)


def best_per_region(score: torch.Tensor, per_region: int, count: int) -> torch.Tensor:
    """Indices into ``score`` (``per_region`` consecutive stamps a region) of the best stamp of each
    region, for the ``count`` best regions, best first (ties: the earlier stamp)."""
    picked: list[int] = []
    seen: set[int] = set()
    for i in score.argsort(descending=True, stable=True).tolist():
        if i // per_region not in seen:
            seen.add(i // per_region)
            picked.append(i)
            if len(picked) == count:
                break
    return torch.tensor(picked, dtype=torch.long)


def stamp_screen(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    shape: tuple[int, int, int],
    config: StampConfig | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[InvertedTrigger]:
    """Screen every stamp; return the most collapsing stamp of each of the ``candidates`` most
    collapsing regions, best first (``StampConfig.candidates``).

    Args:
        unet: the suspect denoiser; only sampled (no gradients).
        scheduler_config: its scheduler config (the training schedule the sampler is built from).
        shape: ``(C, H, W)`` of one sample.
        config: settings.
        on_step: optional callable ``()`` after each region's stamps are sampled (progress).

    Returns:
        ``InvertedTrigger`` s with ``method="stamp"``: ``trigger`` the constant inside the region (0
        outside), ``noise_scale`` 0 inside and 1 outside, ``loss`` minus the collapse objective.

    Raises:
        ValueError: a setting out of range (``StampConfig.validate``).
    """
    cfg = config or StampConfig()
    cfg.validate()
    device = next(unet.parameters()).device
    n, k = cfg.n_samples, len(cfg.values)
    gen = make_generator(cfg.seed)
    noise = randn((n, *shape), gen, "cpu")
    step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    values = torch.tensor(cfg.values).view(k, 1, 1, 1)
    regions = stamp_regions(shape, cfg)
    scores, triggers = [], []
    with torch.no_grad():
        for region in regions:  # one region's values per batch: the same noise, the same step noise
            trig = values * region.float()
            scale = (~region).float()
            x_T = torch.stack([apply_trigger(noise, t, scale) for t in trig]).reshape(k * n, *shape)
            raw = sample(unet, scheduler_config, x_T.to(device), sampler=cfg.sampler, steps=cfg.steps,
                         generator=make_generator(step_seed), batch_size=k * n)
            scores.append(collapse_objective(raw.reshape(k, n, *shape), cfg))
            triggers.append(trig)
            if on_step is not None:
                on_step()
    score = torch.cat(scores)
    trig_all = torch.cat(triggers)
    order = best_per_region(score, k, cfg.candidates)
    ratios = shift_ratios(unet, scheduler_config, trig_all[order], noise)
    return [InvertedTrigger(trigger=trig_all[i].clone(), method="stamp", objective=OBJECTIVE, lam=None,
                            loss=-float(score[i]), shift_ratio=float(r), noise_scale=(~regions[i // k]).float())
            for i, r in zip(order.tolist(), ratios.tolist())]
