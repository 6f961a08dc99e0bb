"""Trigger inversion from the model alone (DESIGN.md section 2).

Gradient inversion (after Elijah): a backdoored model's noise prediction at late timesteps on
``n + tau`` moves by about ``lambda * tau`` with ``lambda`` < 1 inside the trigger, where a clean
model moves by about ``tau`` (its prediction at ``t = T`` is nearly the input). We optimise ``tau``
so that the paired shift ``mean_b [eps(n_b + tau, t) - eps(n_b, t)]`` matches ``lambda tau``, under
a fixed L2 budget (which rules out the trivial ``tau = 0``), with the per-channel mean removed
(which rules out the uniform offset a plain port settles on), over several restarts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import UNet2DModel

from hfaudit.seeding import make_generator, randn


@dataclass
class InversionConfig:
    """Settings of the gradient inversion; defaults fit a 2-core CPU budget on the digit models."""

    steps: int = 100
    lr: float = 0.1
    batch_size: int = 16
    lambdas: tuple[float, ...] = (0.5, 1.0)
    restarts: int = 2
    budget: float = 0.6
    """L2 norm of ``tau`` per pixel (RMS), i.e. ``||tau||_2 = budget * sqrt(C*H*W)``."""
    timesteps: tuple[float, ...] = (1.0, 0.95, 0.9)
    """Late timesteps as fractions of ``num_train_timesteps - 1``."""
    seed: int = 0


@dataclass
class InvertedTrigger:
    """One candidate trigger and how it was found."""

    trigger: torch.Tensor
    """``(C, H, W)`` additive pattern on the initial noise, in the model's pixel space, on CPU."""
    method: str
    lam: float | None
    loss: float
    shift_ratio: float
    """Mean ``<D(tau), tau> / ||tau||^2`` over the late timesteps: about 1 clean, about lambda backdoored."""


def _project(tau: torch.Tensor, radius: float) -> torch.Tensor:
    tau = tau - tau.mean(dim=(-2, -1), keepdim=True)
    return tau * (radius / tau.norm().clamp(min=1e-8))


def gradient_inversion(
    unet: UNet2DModel,
    num_train_timesteps: int,
    shape: tuple[int, int, int],
    config: InversionConfig | None = None,
    on_step=None,
) -> list[InvertedTrigger]:
    """Invert candidate triggers, one per ``(lambda, restart)``, best (lowest loss) first.

    Args:
        unet: the suspect denoiser (gradients flow through it; its weights are not changed).
        num_train_timesteps: length of its training schedule.
        shape: ``(C, H, W)`` of one sample.
        config: inversion settings.
        on_step: optional callable ``()`` after each optimiser step (progress).
    """
    cfg = config or InversionConfig()
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    gen = make_generator(cfg.seed)
    radius = cfg.budget * float(torch.tensor(shape).prod()) ** 0.5
    ts = [int(round(f * (num_train_timesteps - 1))) for f in cfg.timesteps]
    noise = randn((cfg.batch_size, *shape), gen, device)
    t_batch = {t: torch.full((cfg.batch_size,), t, device=device, dtype=torch.long) for t in ts}
    with torch.no_grad():
        base = {t: unet(noise.to(dtype), t_batch[t]).sample.float() for t in ts}
    out: list[InvertedTrigger] = []
    for lam in cfg.lambdas:
        for _ in range(cfg.restarts):
            tau = _project(randn(shape, gen, device), radius).requires_grad_(True)
            opt = torch.optim.Adam([tau], lr=cfg.lr)
            for _step in range(cfg.steps):
                loss = torch.zeros((), device=device)
                for t in ts:
                    shift = (unet((noise + tau).to(dtype), t_batch[t]).sample.float() - base[t]).mean(0)
                    loss = loss + (shift - lam * tau).abs().mean()
                loss = loss / len(ts)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():
                    tau.copy_(_project(tau, radius))
                if on_step is not None:
                    on_step()
            with torch.no_grad():
                ratios, losses = [], []
                for t in ts:
                    shift = (unet((noise + tau).to(dtype), t_batch[t]).sample.float() - base[t]).mean(0)
                    ratios.append(float((shift * tau).sum() / (tau * tau).sum()))
                    losses.append(float((shift - lam * tau).abs().mean()))
            out.append(InvertedTrigger(trigger=tau.detach().cpu(), method="gradient", lam=lam,
                                       loss=sum(losses) / len(losses), shift_ratio=sum(ratios) / len(ratios)))
    out.sort(key=lambda c: c.shift_ratio)
    return out
