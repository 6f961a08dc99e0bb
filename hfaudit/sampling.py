"""The project's one sampling loop: from a chosen ``x_T``, over any diffusers scheduler, unclipped.

Stock ``DDPMPipeline``/``DDIMPipeline`` cannot start from a chosen ``x_T``, and they clip each step
to [-1, 1], which hides part of a backdoor (docs/design.md sections 1 and 7). This loop takes the
initial noise as an argument, threads a ``torch.Generator`` through every draw, batches, and turns
clipping and thresholding off.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from hfaudit.errors import UsageError

SAMPLERS: dict[str, type[SchedulerMixin]] = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpm": DPMSolverMultistepScheduler,
    "unipc": UniPCMultistepScheduler,
}
"""Sampler families hfaudit can run; ``ddpm`` is stochastic (SDE), the others deterministic (ODE)."""

ODE_SAMPLERS = frozenset({"ddim", "dpm", "unipc"})


def make_scheduler(config: Mapping[str, Any], sampler: str) -> SchedulerMixin:
    """Build a fresh ``sampler`` scheduler from a model's scheduler config, with clipping off.

    Raises:
        UsageError: unknown sampler name.
    """
    try:
        cls = SAMPLERS[sampler]
    except KeyError:
        raise UsageError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}") from None
    overrides: dict[str, Any] = {"thresholding": False}
    if sampler in ("ddpm", "ddim"):
        overrides["clip_sample"] = False
    if sampler == "ddim":
        overrides["set_alpha_to_one"] = True
    if sampler in ("dpm", "unipc"):
        # Multistep ODE solvers on few steps are most stable with a lower-order final step.
        overrides["lower_order_final"] = True
    return cls.from_config(dict(config), **overrides)


def alphas_cumprod_of(scheduler_config: Mapping[str, Any]) -> torch.Tensor:
    """``abar_t`` of the model's training schedule (from its scheduler config)."""
    return DDPMScheduler.from_config(dict(scheduler_config)).alphas_cumprod.float()


@torch.no_grad()
def sample(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    x_T: torch.Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 20,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    on_batch: Any = None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """Denoise ``x_T`` (``(N, C, H, W)``) to images in the model's pixel space, unclipped.

    Args:
        unet: the denoiser, already on its device.
        scheduler_config: the model's scheduler config (its training schedule).
        x_T: initial noise, possibly with a trigger added; moved to the UNet's device.
        sampler: a key of ``SAMPLERS``.
        steps: number of denoising steps.
        generator: drives the stochastic samplers' noise (reproducibility).
        batch_size: images denoised at once (memory bound).
        on_batch: optional callable ``(n_done)`` for progress reporting.
        condition: ``(N, L, D)`` text embeddings for a conditional UNet (one per image; no guidance).

    Returns:
        ``(N, C, H, W)`` float32 tensor on the CPU, in the model's range (about [-1, 1]).

    Raises:
        UsageError: bad sampler name or step count.
    """
    outs = []
    for start in range(0, x_T.shape[0], batch_size):
        cond = None if condition is None else condition[start:start + batch_size]
        outs.append(denoise(unet, scheduler_config, x_T[start:start + batch_size], sampler=sampler, steps=steps,
                            generator=generator, condition=cond).cpu())
        if on_batch is not None:
            on_batch(min(start + batch_size, x_T.shape[0]))
    return torch.cat(outs)


def denoise(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    x_T: torch.Tensor,
    *,
    sampler: str = "ddim",
    steps: int = 20,
    generator: torch.Generator | None = None,
    condition: torch.Tensor | None = None,
) -> torch.Tensor:
    """One batch of :func:`sample`, on the UNet's device, with autograd left as the caller set it.

    Gradients flow from the images back to ``x_T`` when it requires them: the sampler inversion
    (``detect/ode.py``) differentiates through the whole chain.

    Raises:
        UsageError: bad sampler name or step count.
    """
    if steps < 1:
        raise UsageError(f"steps must be at least 1 (got {steps})", param="sampler_steps")
    device = next(unet.parameters()).device
    dtype = next(unet.parameters()).dtype
    sched = make_scheduler(scheduler_config, sampler)
    sched.set_timesteps(steps, device=device)
    step_kwargs = {"generator": generator} if "generator" in inspect.signature(sched.step).parameters else {}
    x = x_T.to(device=device, dtype=torch.float32) * sched.init_noise_sigma
    for t in sched.timesteps:
        model_in = sched.scale_model_input(x, t)
        if condition is None:
            eps = unet(model_in.to(dtype), t).sample.float()
        else:
            eps = unet(model_in.to(dtype), t, encoder_hidden_states=condition.to(device=device, dtype=dtype)).sample.float()
        x = sched.step(eps, t, x, **step_kwargs).prev_sample
    return x.float()


class EvalCounter:
    """Counts UNet evaluations while open: the cost measure in reports, budgets and benchmarks.

    One evaluation is one image through the UNet once; a forward pass run with gradients enabled is
    followed by its backward pass in every search (``lattice.projected_adam``), which counts as two
    more. ``count`` is ``forward + 2 * backward``.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        self.forward = 0
        self.backward = 0
        self._handle = unet.register_forward_pre_hook(self._hook)

    @property
    def count(self) -> int:
        """Evaluations so far, a backward pass counting two."""
        return self.forward + 2 * self.backward

    def _hook(self, _module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        n = int(args[0].shape[0])
        self.forward += n
        if torch.is_grad_enabled():
            self.backward += n

    def close(self) -> None:
        """Stop counting (removes the hook)."""
        self._handle.remove()


def apply_trigger(noise: torch.Tensor, trigger: torch.Tensor, noise_scale: torch.Tensor | None = None) -> torch.Tensor:
    """Initial noise with a trigger: ``noise * noise_scale + trigger`` (``noise_scale`` None: 1, i.e.
    an additive trigger). The one place triggered ``x_T`` is made, so additive triggers and ones that
    overwrite part of the noise (``detect.stamps``; TrojDiff's ``gamma n + mu``) probe alike.

    ``noise`` is ``(..., C, H, W)``; ``trigger`` and ``noise_scale`` ``(C, H, W)``, moved to its device.
    """
    if noise_scale is not None:
        noise = noise * noise_scale.to(noise.device)
    return noise + trigger.to(noise.device)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """Map model-space images ([-1, 1]) to [0, 1] pixels, clamped: the space all metrics use."""
    return ((images.float() + 1) / 2).clamp(0, 1)
