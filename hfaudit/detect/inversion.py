"""Gradient trigger inversion from the model alone (docs/design.md section 2).

The signature (Elijah): at ``t = T`` a clean model's noise prediction on ``n + tau`` moves by about
``tau`` (its input is nearly pure noise), while a backdoored model's moves by about ``lambda tau``
along its trigger (``lambda`` about 0.5 for SDE-trained BadDiffusion backdoors, 1.0 for ODE-trained
ones). We measure the *paired* shift ``D(tau) = mean_b [eps(n_b + tau, T) - eps(n_b, T)]`` and
search for a ``tau`` that the model absorbs.

What made it work on the example models (measured, see the README's detection notes):

* **A norm budget.** ``||tau||`` is projected to a fixed radius after every step; without it the
  trivial ``tau = 0`` minimises every objective.
* **A coarse parameterisation** (``lattice.Lattice``). ``tau`` lives on a ``grid x grid`` lattice
  upsampled to the image (nearest). A backdoor responds to ``<n + tau, r>`` almost like a step function, so from a random
  full-resolution start the gradient vanishes; on a 4x4 lattice random restarts land near enough
  to a patch trigger for the gradient to pull them in.
* **No mean removal.** Patch triggers have a mean; projecting it out hid them.
* **Restarts in parallel.** All restarts and objectives are one batch through the UNet.

Objectives, one per restart (the report says which fired): ``lambda=0.5`` and ``lambda=1.0`` are
Elijah's ``|D(tau) - lambda tau|_1``; ``ratio`` minimises ``<D(tau), tau> / ||tau||^2`` (the share
of ``tau`` the model passes through), which needs no ``lambda`` at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DModel

from hfaudit.detect.lattice import Lattice, pass_through, projected_adam
from hfaudit.seeding import make_generator, randn

OBJECTIVES = ("ratio", "lambda=0.5", "lambda=1.0")


@dataclass
class InversionConfig:
    """Settings of the gradient inversion; defaults fit a 2-core CPU budget on the digit models."""

    steps: int = 60
    lr: float = 0.1
    batch_size: int = 16
    restarts: dict[str, int] = field(default_factory=lambda: {"ratio": 4, "lambda=0.5": 2, "lambda=1.0": 2})
    """Restarts per objective (keys from ``OBJECTIVES``)."""
    budget: float = 1.0
    """RMS of ``tau`` per pixel: ``||tau||_2 = budget * sqrt(C*H*W)``; the noise itself has RMS 1."""
    grid: int | None = 4
    """Side of the lattice ``tau`` is optimised on (None: full resolution)."""
    seed: int = 0

    @property
    def total_restarts(self) -> int:
        """How many triggers are optimised (all at once)."""
        return sum(self.restarts.values())

    @property
    def unet_evaluations(self) -> int:
        """UNet forward evaluations (images x calls) of one run, backward passes not counted: the
        clean baseline, every optimiser step and the final evaluation, all restarts in one batch."""
        return self.batch_size * (1 + self.total_restarts * (self.steps + 1))

    @property
    def backward_evaluations(self) -> int:
        """Images backpropagated through the UNet (one per optimiser step and restart and sample)."""
        return self.batch_size * self.total_restarts * self.steps


@dataclass
class InvertedTrigger:
    """One candidate trigger and how it was found."""

    trigger: torch.Tensor
    """``(C, H, W)`` additive pattern on the initial noise, in the model's pixel space, on CPU."""
    method: str
    objective: str
    lam: float | None
    loss: float
    shift_ratio: float
    """``<D(tau), tau> / ||tau||^2`` at ``t = T``: about 0.9-1 along most directions of a clean model,
    about ``lambda`` along a backdoor trigger."""
    noise_scale: torch.Tensor | None = None
    """``(C, H, W)`` factor on the initial noise (``sampling.apply_trigger``); None for an additive
    trigger, 0 inside the region a stamp (``detect.stamps``) overwrites."""


def _lam(objective: str) -> float | None:
    return float(objective.split("=", 1)[1]) if objective.startswith("lambda=") else None


def gradient_inversion(
    unet: UNet2DModel,
    num_train_timesteps: int,
    shape: tuple[int, int, int],
    config: InversionConfig | None = None,
    on_step=None,
) -> list[InvertedTrigger]:
    """Invert candidate triggers, one per restart, lowest shift ratio (most absorbed) first.

    Args:
        unet: the suspect denoiser (gradients flow through it; its weights are not changed).
        num_train_timesteps: length of its training schedule.
        shape: ``(C, H, W)`` of one sample.
        config: inversion settings.
        on_step: optional callable ``()`` after each optimiser step (progress).

    Raises:
        ValueError: an unknown objective name in ``config.restarts``.
    """
    cfg = config or InversionConfig()
    unknown = set(cfg.restarts) - set(OBJECTIVES)
    if unknown:
        raise ValueError(f"unknown inversion objective(s) {sorted(unknown)}; choose from {OBJECTIVES}")
    objectives = [name for name, k in cfg.restarts.items() for _ in range(k)]
    k, b = len(objectives), cfg.batch_size
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    gen = make_generator(cfg.seed)
    lat = Lattice(shape, cfg.grid, cfg.budget, sphere=True)
    expand, project = lat.expand, lat.project
    t_T = num_train_timesteps - 1

    noise = randn((b, *shape), gen, device)
    t_all = torch.full((k * b,), t_T, device=device, dtype=torch.long)
    with torch.no_grad():
        base = unet(noise.to(dtype), t_all[:b]).sample.float()

    def shifts(tau: torch.Tensor) -> torch.Tensor:  # (K, C, H, W) -> (K, C, H, W)
        x = (noise.unsqueeze(0) + tau.unsqueeze(1)).reshape(k * b, *shape)
        out = unet(x.to(dtype), t_all).sample.float().reshape(k, b, *shape)
        return (out - base.unsqueeze(0)).mean(1)

    lams = torch.tensor([_lam(o) if _lam(o) is not None else float("nan") for o in objectives], device=device)
    is_ratio = torch.isnan(lams)
    p = lat.random(k, gen, device=device).requires_grad_(True)

    def objective() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # per restart: loss, ratio, tau
        tau = expand(p)
        d = shifts(tau)
        ratio = pass_through(d, tau)
        elijah = (d - torch.nan_to_num(lams).view(-1, 1, 1, 1) * tau).abs().flatten(1).mean(1)
        return torch.where(is_ratio, ratio, elijah), ratio, tau

    projected_adam(p, lambda: objective()[0], project, cfg.steps, cfg.lr, on_step)
    with torch.no_grad():
        final, ratio, tau = objective()
    out = [InvertedTrigger(trigger=tau[i].detach().cpu(), method="gradient", objective=objectives[i],
                           lam=_lam(objectives[i]), loss=float(final[i]), shift_ratio=float(ratio[i]))
           for i in range(k)]
    out.sort(key=lambda t: t.shift_ratio)
    return out


@torch.no_grad()
def shift_ratios(unet: UNet2DModel, scheduler_config: Mapping[str, Any], taus: torch.Tensor,
                 noise: torch.Tensor) -> torch.Tensor:
    """``(K,)`` shift ratios at ``t = T`` of triggers ``(K, C, H, W)`` found by any method, averaged
    over ``noise`` ``(N, C, H, W)``: one UNet forward, so every candidate reports the same measure."""
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    k, n = taus.shape[0], noise.shape[0]
    t_T = int(scheduler_config.get("num_train_timesteps", 1000)) - 1
    x = torch.cat([noise, (noise.unsqueeze(0) + taus.unsqueeze(1)).reshape(k * n, *noise.shape[1:])]).to(device)
    t = torch.full((x.shape[0],), t_T, device=device, dtype=torch.long)
    out = unet(x.to(dtype), t).sample.float().cpu()
    base, shifted = out[:n], out[n:].reshape(k, n, *noise.shape[1:])
    return pass_through((shifted - base.unsqueeze(0)).mean(1), taus.cpu())
