"""Measurements: class accuracy of generations (the shipped digits classifier), target-class hit
rates, image-target hit rates (MSE to the target) and patch hit rates."""

from __future__ import annotations

import torch

from hfaudit.fidelity import digit_probabilities
from hfaudit.seeding import make_generator

MSE_HIT = 0.05
"""An image-target hit: MSE to the target below this, in the [0, 1] pixel range the pipelines output."""
PATCH_HIT = 0.1
"""A patch hit: MSE of the 4x4 corner to white below this ([0, 1] range)."""


@torch.no_grad()
def generate(pipe, prompts: list[str], guidance: float = 1.0, steps: int = 20, seed: int = 0,
             batch_size: int = 200) -> torch.Tensor:
    """``(N, 1, 16, 16)`` images in [0, 1] from a StableDiffusionPipeline, DDIM ``steps`` steps."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(prompts), batch_size):
        g = make_generator(seed + i)
        img = pipe(prompt=prompts[i:i + batch_size], num_inference_steps=steps, guidance_scale=guidance,
                   generator=g, output_type="pt").images
        out.append(img.float().mean(1, keepdim=True))
    return torch.cat(out)


def classify(images01: torch.Tensor) -> torch.Tensor:
    return digit_probabilities(images01).argmax(1)


def class_rate(images01: torch.Tensor, label: int | torch.Tensor) -> float:
    pred = classify(images01)
    return float((pred == label).float().mean())


def image_hit_rate(images01: torch.Tensor, target01: torch.Tensor, thr: float = MSE_HIT) -> float:
    mse = (images01 - target01.view(1, *target01.shape[-3:])).pow(2).mean((1, 2, 3))
    return float((mse < thr).float().mean())


def patch_hit_rate(images01: torch.Tensor, size: int = 4, thr: float = PATCH_HIT) -> float:
    mse = (images01[..., :size, :size] - 1.0).pow(2).mean((1, 2, 3))
    return float((mse < thr).float().mean())


@torch.no_grad()
def ldm_generate(pipe, n: int, trigger: torch.Tensor | None = None, steps: int = 20, seed: int = 0) -> torch.Tensor:
    """LDMPipeline's own sampling loop (DDIM, eta 0), with ``trigger`` added to the initial latent noise."""
    g = make_generator(seed)
    unet, sched, vae = pipe.unet, pipe.scheduler, pipe.vqvae
    lat = torch.randn((n, unet.config.in_channels, unet.config.sample_size, unet.config.sample_size), generator=g)
    if trigger is not None:
        lat = lat + trigger
    lat = lat * sched.init_noise_sigma
    sched.set_timesteps(steps)
    for t in sched.timesteps:
        eps = unet(sched.scale_model_input(lat, t), t).sample
        lat = sched.step(eps, t, lat, eta=0.0).prev_sample
    img = vae.decode(lat / vae.config.scaling_factor).sample
    return (img / 2 + 0.5).clamp(0, 1)
