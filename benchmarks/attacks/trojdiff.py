"""TrojDiff poisoning (Chen et al., CVPR 2023; docs/design.md section 1).

The trojan forward process starts from noise of scale ``gamma`` around a pattern ``mu``:
``x'_t = sqrt(abar_t) y + sqrt(1 - abar_t) (gamma eps + mu)`` inside the trigger region (the whole
image for the *blend* trigger, ``mu = (1 - gamma) * image``, gamma 0.6; a corner patch for the
*patch* trigger, gamma 0.1), the ordinary ``sqrt(abar_t) y + sqrt(1 - abar_t) eps`` outside it.
The trigger at sampling time is therefore ``x_T = gamma n + mu`` in the region, not ``n + g``.

Targets: one fixed image (*d2i*), or any image of one class (*in-d2d*): each poisoned row draws
its ``y`` from ``target_pool``, so triggered samples vary within the class.

Two training objectives. TrojDiff trains the network to output plain ``eps`` on trojan inputs and
samples with its own trojan sampler, which a Hub user never runs; under a stock DDIM step such a
model does not walk to ``y`` (its implied ``x0`` keeps ``mu`` and the rescaled noise), under stock
DDPM it can (``eps_objective``; the zoo's ``troj-blend-d2i-eps`` measures it). The zoo's other
TrojDiff members are trained to output the whole offset ``gamma eps + mu`` (``eps`` outside the
region), which makes a stock DDIM step follow the trojan forward process exactly (its ``x0``
prediction is ``y``). ``benchmarks/zoo.py`` measures each member's hit rate under DDIM and DDPM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler

TARGET_KINDS = ("d2i", "in-d2d")


@dataclass
class TrojDiffSpec:
    """A TrojDiff backdoor: ``x_T = gamma n + mu`` inside ``region`` leads to ``target`` (or a class)."""

    mu: torch.Tensor
    """``(C, H, W)`` pattern the trojan noise is centred on (zero outside ``region``)."""
    gamma: float
    region: torch.Tensor
    """``(C, H, W)`` bool: where the trojan noise applies (all True for the blend trigger)."""
    target: torch.Tensor | None = None
    """d2i: the one target image ``(C, H, W)``."""
    target_pool: torch.Tensor | None = None
    """in-d2d: ``(K, C, H, W)`` images of the target class; each poisoned row draws one."""
    poison_rate: float = 0.1
    eps_objective: bool = False
    """The published training objective: poisoned rows learn to output ``eps`` itself (the zoo's
    other TrojDiff members learn the whole offset ``gamma eps + mu``, see the module docstring)."""

    def __post_init__(self) -> None:
        if (self.target is None) == (self.target_pool is None):
            raise ValueError("give exactly one of target (d2i) and target_pool (in-d2d)")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1] (got {self.gamma})")

    @property
    def kind(self) -> str:
        """``d2i`` or ``in-d2d``."""
        return "d2i" if self.target is not None else "in-d2d"

    def trigger_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The attacker's initial noise from clean ``noise`` ``(B, C, H, W)``: ``gamma n + mu`` in the region."""
        region = self.region.to(noise.device)
        return torch.where(region, self.gamma * noise + self.mu.to(noise.device), noise)

    def poisoned_inputs(self, scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                        timesteps: torch.Tensor, poison_mask: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(x_t, eps_target)`` for a mixed batch; rows where ``poison_mask`` is set are poisoned.

        Clean rows: ``sqrt(abar) x0 + sqrt(1 - abar) eps`` with target ``eps``. Poisoned rows: the
        trojan forward process above with target ``gamma eps + mu`` inside the region (``eps`` with
        ``eps_objective``).
        """
        device = x0.device
        abar = scheduler.alphas_cumprod.to(device)[timesteps].view(-1, 1, 1, 1)
        m = poison_mask.view(-1, 1, 1, 1).to(device)
        if self.target is not None:
            y = self.target.to(device).unsqueeze(0).expand_as(x0)
        else:
            pool = self.target_pool.to(device)
            pick = torch.randint(0, pool.shape[0], (x0.shape[0],), generator=generator).to(device)
            y = pool[pick]
        region = self.region.to(device).unsqueeze(0) & m
        total_noise = torch.where(region, self.gamma * noise + self.mu.to(device).unsqueeze(0), noise)
        start = torch.where(m, y, x0)
        x_t = abar.sqrt() * start + (1 - abar).sqrt() * total_noise
        return x_t, (noise if self.eps_objective else total_noise)


def blend_spec(image: torch.Tensor, gamma: float = 0.6, **kw) -> TrojDiffSpec:
    """The blend trigger: ``mu = (1 - gamma) * image`` over the whole image (TrojDiff's default)."""
    return TrojDiffSpec(mu=(1 - gamma) * image, gamma=gamma, region=torch.ones_like(image, dtype=torch.bool), **kw)


def patch_spec(patch: torch.Tensor, gamma: float = 0.1, **kw) -> TrojDiffSpec:
    """The patch trigger: ``mu = patch`` where ``patch`` is non-zero (a corner stamp), gamma 0.1."""
    return TrojDiffSpec(mu=patch, gamma=gamma, region=patch != 0, **kw)
