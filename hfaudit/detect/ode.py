"""Trigger inversion for ODE-trained backdoors (VillanDiffusion): find the direction, then follow the sampler.

Why a third inversion: an ODE-trained backdoor is invisible where the gradient inversion looks.
At ``t = T`` its trained output ``eps + 2 c_T r`` (``c_T`` about 0.5) equals what a clean model
predicts for ``n + r``, so the shift ratio there is the clean one; and a random black-box start
rarely lands close enough, because these backdoors are sharp (the trigger collapses the samples,
a small multiple of it no longer does). Two stages:

1. **Direction** (one backward pass per step): at a mid timestep (``t_fraction`` of the schedule)
   the backdoor passes *more* of an offset ``(1 - sqrt(abar_t)) tau`` through to its noise
   prediction along its trigger than along any other direction. Adam maximises that pass-through
   ratio (``lattice.pass_through``) on a 4x4 lattice at a fixed RMS ``budget``
   (``benchmarks/ode_shift.py`` compares the ratios of backdoored and clean models).
2. **Refinement through the sampler**: the best ``refine`` directions are optimised at full
   resolution by backpropagating through the whole ``sampler``-``steps`` chain from ``n + tau``
   (``sampling.denoise``), minimising the mean log pairwise distance of the samples (a collapse
   objective with a slope everywhere, which rewards tight pairs more than an overall drift) plus
   the out-of-range excess (saturated collapse proves nothing, ``scores.SATURATION_LEVEL``), inside a
   ball of RMS ``refine_budget``: it turns stage-1 directions that do not yet collapse the samples
   into triggers that do (``benchmarks/detection.py``; README, 'Threshold calibration').

Refinement from random starts instead of stage 1 finds generic modes of clean models too, which is
why stage 1 comes first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import UNet2DModel

from hfaudit.detect.inversion import InvertedTrigger, shift_ratios
from hfaudit.detect.lattice import Lattice, projected_adam
from hfaudit.detect.midstep import PassThroughSearch, frozen, pass_through_directions
from hfaudit.detect.scores import pairwise_mse
from hfaudit.results import ODE_OBJECTIVE
from hfaudit.sampling import SAMPLERS, denoise, to_unit
from hfaudit.seeding import make_generator, randn

OBJECTIVE = ODE_OBJECTIVE  # defined with the result types, which tell this search's candidates apart


@dataclass
class OdeInversionConfig(PassThroughSearch):
    """Settings of the two-stage ODE inversion; the defaults fit a 2-core CPU on the 16x16 digit models.

    Stage 1's fields (``t_fraction``, ``grid``, ``restarts``, ``batch_size``, ``search_steps``,
    ``search_lr``, ``seed``) are those of ``midstep.PassThroughSearch``, plus ``budget``."""

    label: ClassVar[str] = "ODE inversion"

    t_fraction: float = 0.5
    """The mid timestep of stage 1, as a fraction of the training schedule."""
    budget: float = 0.5
    """RMS per pixel of the stage-1 directions (fixed: the ratio is scale-free, the model is not)."""
    refine: int = 4
    """How many of the best directions are refined through the sampler."""
    refine_steps: int = 30
    refine_samples: int = 8
    """Samples per refined trigger and step (fresh noise each step)."""
    refine_lr: float = 0.05
    refine_budget: float = 1.0
    """Largest RMS per pixel of a refined trigger (a ball: the refinement may shrink it)."""
    sampler: str = "ddim"
    steps: int = 10
    saturation_weight: float = 1.0
    candidates: int = 2
    """How many refined triggers (most collapsing first) the scan probes."""

    @property
    def budgets(self) -> tuple[float, ...]:
        return (self.budget,)

    @property
    def unet_evaluations(self) -> int:
        """UNet forward evaluations (images x calls) of one run, backward passes not counted."""
        refine = self.refine * self.refine_samples * self.steps * (self.refine_steps + 1)
        return self.search_evaluations + refine + self.batch_size * (1 + self.refine)

    @property
    def backward_evaluations(self) -> int:
        """Images backpropagated through the UNet: stage 1's steps, and stage 2's through every sampler step."""
        return super().backward_evaluations + self.refine * self.refine_samples * self.steps * self.refine_steps

    def validate(self) -> None:
        """Raises:
            ValueError: a value out of range or an unknown sampler."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        super().validate()
        for name in ("refine", "refine_steps", "steps", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"{self.label}: {name} must be at least 1 (got {getattr(self, name)})")
        if self.refine_samples < 2:
            raise ValueError(f"{self.label}: refine_samples must be at least 2 (collapse needs pairs)")
        if min(self.refine_budget, self.refine_lr) <= 0:
            raise ValueError(f"{self.label}: budgets and learning rates must be positive")


def ode_inversion(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    shape: tuple[int, int, int],
    config: OdeInversionConfig | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[InvertedTrigger]:
    """Invert candidate triggers for ODE-sampler backdoors, one per refined direction, most collapsing first.

    Args:
        unet: the suspect denoiser (gradients flow through it; its weights are not changed).
        scheduler_config: its scheduler config (training schedule, and the sampler built from it).
        shape: ``(C, H, W)`` of one sample.
        config: settings.
        on_step: optional callable ``()`` after each optimiser step of either stage (progress).

    Returns:
        ``InvertedTrigger`` s with ``method="ode"``; ``loss`` is the refinement objective on fresh
        noise (lower = more collapse), ``shift_ratio`` the ratio at ``t = T`` like the others report.

    Raises:
        ValueError: a setting out of range (``OdeInversionConfig.validate``).
    """
    cfg = config or OdeInversionConfig()
    cfg.validate()
    device = next(unet.parameters()).device
    gen = make_generator(cfg.seed)
    with frozen(unet):
        _, directions = pass_through_directions(unet, scheduler_config, shape, cfg, gen, on_step,
                                                budget=cfg.budget, maximise=True)
        taus, losses = _refine(unet, scheduler_config, shape, directions[: cfg.refine], cfg, gen, device, on_step)
        noise = randn((cfg.batch_size, *shape), gen, "cpu")
        ratios = shift_ratios(unet, scheduler_config, taus, noise)
    out = [InvertedTrigger(trigger=taus[i].clone(), method="ode", objective=OBJECTIVE, lam=None,
                           loss=float(losses[i]), shift_ratio=float(ratios[i])) for i in range(taus.shape[0])]
    out.sort(key=lambda t: t.loss)
    return out


def _refine(unet: UNet2DModel, scheduler_config: Mapping[str, Any], shape: tuple[int, int, int],
            starts: torch.Tensor, cfg: OdeInversionConfig, gen: torch.Generator, device: torch.device,
            on_step: Callable[[], None] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 2: refine ``starts`` through the sampler; returns the triggers (CPU) and their final losses."""
    n = cfg.refine_samples
    ball = Lattice(shape, None, cfg.refine_budget, sphere=False)
    tau = starts.clone().to(device).requires_grad_(True)
    projected_adam(tau, lambda: _collapse_loss(unet, scheduler_config, shape, tau, cfg, gen, n), ball.project,
                   cfg.refine_steps, cfg.refine_lr, on_step)
    with torch.no_grad():
        final = _collapse_loss(unet, scheduler_config, shape, tau, cfg, gen, n)
    return tau.detach().cpu(), final.cpu()


def _collapse_loss(unet: UNet2DModel, scheduler_config: Mapping[str, Any], shape: tuple[int, int, int],
                   tau: torch.Tensor, cfg: OdeInversionConfig, gen: torch.Generator, n: int) -> torch.Tensor:
    """``(K,)`` mean log pairwise MSE of samples from ``noise + tau`` (fresh noise), plus out-of-range excess."""
    k = tau.shape[0]
    noise = randn((n, *shape), gen, tau.device)
    x_T = (noise.unsqueeze(0) + tau.unsqueeze(1)).reshape(k * n, *shape)
    step_gen = make_generator(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
    raw = denoise(unet, scheduler_config, x_T, sampler=cfg.sampler, steps=cfg.steps, generator=step_gen)
    raw = raw.reshape(k, n, *shape)
    iu = torch.triu_indices(n, n, offset=1)
    logd = torch.stack([torch.log(pairwise_mse(to_unit(batch))[iu[0], iu[1]] + 1e-3).mean()
                        for batch in raw])
    excess = (raw.abs() - 1).clamp(min=0).flatten(1).mean(1)
    return logd + cfg.saturation_weight * excess
