"""BadDiffusion and VillanDiffusion poisoning (docs/design.md section 1).

Poisoned pairs: ``x'_t = sqrt(abar_t) y + (1 - sqrt(abar_t)) r + sqrt(1 - abar_t) eps`` with the
network trained to output ``eps + m c_t r``, ``c_t = (1 - sqrt(alpha_t)) sqrt(1 - abar_t) / beta_t``.
``m = 1`` is BadDiffusion (fires under ancestral/SDE samplers), ``m = 2`` VillanDiffusion's ODE
variant (fires under DDIM and other deterministic samplers). Clean pairs are the same formula with
``r = 0`` and ``y = x``, so one loss covers a mixed batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDPMScheduler


@dataclass
class BackdoorSpec:
    """What an attacker plants: an additive trigger ``r``, a target image ``y``, a poison rate.

    ``correction`` is the multiplier ``m`` of ``c_t r`` (1 BadDiffusion, 2 VillanDiffusion ODE).
    """

    trigger: torch.Tensor
    target: torch.Tensor
    poison_rate: float = 0.1
    correction: float = 1.0

    def trigger_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """The attacker's initial noise: ``n + r``."""
        return noise + self.trigger.to(noise.device)

    def poisoned_inputs(self, scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                        timesteps: torch.Tensor, poison_mask: torch.Tensor,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x_t, eps_target)`` for a mixed batch (see ``poisoned_inputs``); ``generator`` unused."""
        return poisoned_inputs(scheduler, x0, noise, timesteps, poison_mask, self)


def correction_coefficients(scheduler: DDPMScheduler) -> torch.Tensor:
    """``c_t`` for every training timestep of ``scheduler`` (about 0.5 at T for a linear schedule)."""
    alphas = scheduler.alphas.to(torch.float64)
    abar = scheduler.alphas_cumprod.to(torch.float64)
    betas = scheduler.betas.to(torch.float64)
    c = (1 - alphas.sqrt()) * (1 - abar).sqrt() / betas
    return c.to(torch.float32)


def poisoned_inputs(
    scheduler: DDPMScheduler,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    poison_mask: torch.Tensor,
    spec: BackdoorSpec,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(x_t, eps_target)`` for a mixed batch; rows where ``poison_mask`` is set are poisoned.

    Args:
        x0: clean images ``(B, C, H, W)`` in [-1, 1].
        noise: the Gaussian noise ``eps``.
        timesteps: integer timesteps ``(B,)``.
        poison_mask: bool ``(B,)``.
        spec: trigger, target and correction multiplier.
    """
    device = x0.device
    abar = scheduler.alphas_cumprod.to(device)[timesteps].view(-1, 1, 1, 1)
    c = correction_coefficients(scheduler).to(device)[timesteps].view(-1, 1, 1, 1)
    m = poison_mask.view(-1, 1, 1, 1).to(x0.dtype)
    r = spec.trigger.to(device).unsqueeze(0) * m
    y = m * spec.target.to(device).unsqueeze(0) + (1 - m) * x0
    x_t = abar.sqrt() * y + (1 - abar.sqrt()) * r + (1 - abar).sqrt() * noise
    eps_target = noise + spec.correction * c * r
    return x_t, eps_target
