"""Train tiny DDPMs, clean or backdoored, with an Accelerate loop.

Used by ``examples/train_models.py``, the benchmark zoo and tests that need a model of their own.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from benchmarks.attacks.baddiffusion import BackdoorSpec
from benchmarks.attacks.trojdiff import TrojDiffSpec
from hfaudit.progress import progress_bar
from hfaudit.seeding import make_generator, seed_everything

Backdoor = BackdoorSpec | TrojDiffSpec
"""Any attack the training loop can plant: each has ``poison_rate``, ``poisoned_inputs`` and ``trigger_noise``."""


@dataclass
class UNetConfig:
    """Architecture of a tiny ``UNet2DModel``; defaults give the 0.65M-parameter 16x16 model."""

    sample_size: int = 16
    channels: int = 1
    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = False
    norm_num_groups: int = 8
    layout: str = "plain"
    """``plain``: ``DownBlock2D`` at every level (attention, if set, at the last); ``cifar``: the block
    layout of ``google/ddpm-cifar10-32`` (four levels, attention at the second, i.e. 16x16 on a 32x32
    input), whatever ``attention`` says."""


CIFAR_DOWN = ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
"""``google/ddpm-cifar10-32``'s down blocks (its up blocks are these mirrored)."""


@dataclass
class TrainConfig:
    """Optimisation settings; ``steps`` of ``batch_size`` images each."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    seed: int = 0
    ema_decay: float | None = 0.999
    extra: dict = field(default_factory=dict)


def make_unet(cfg: UNetConfig, seed: int | None = None) -> UNet2DModel:
    """Build the UNet described by ``cfg``, its initial weights drawn with ``seed``.

    With a seed the weights come from their own generator (``torch.random.fork_rng``), so they do
    not depend on what the process drew before, and the caller's random state is left as it was.
    Without one they come from torch's global generator, which a fresh process seeds at random
    (``torch.initial_seed()`` differs run to run): that made the benchmark zoo's clean members, and
    everything fine-tuned into them, different in every build (``train_ddpm`` seeds only after the
    weights exist).
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return make_unet(cfg)
    n = len(cfg.block_out_channels)
    if cfg.layout == "cifar":
        if n != len(CIFAR_DOWN):
            raise ValueError(f"the cifar layout has {len(CIFAR_DOWN)} levels, got {n} widths")
        down = list(CIFAR_DOWN)
    else:
        down = ["DownBlock2D"] * n
        if cfg.attention:
            down[-1] = "AttnDownBlock2D"
    up = [b.replace("Down", "Up") for b in reversed(down)]
    return UNet2DModel(
        sample_size=cfg.sample_size,
        in_channels=cfg.channels,
        out_channels=cfg.channels,
        layers_per_block=cfg.layers_per_block,
        block_out_channels=tuple(cfg.block_out_channels),
        down_block_types=tuple(down),
        up_block_types=tuple(up),
        norm_num_groups=cfg.norm_num_groups,
    )


def make_scheduler() -> DDPMScheduler:
    """The training schedule: 1,000 linear steps, diffusers' defaults (``clip_sample=True`` kept,
    as many published checkpoints ship it; hfaudit samples with clipping off regardless)."""
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


def train_ddpm(
    images: torch.Tensor,
    cfg: TrainConfig,
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    backdoor: Backdoor | None = None,
    description: str = "training",
) -> UNet2DModel:
    """Train ``unet`` on ``images`` (in [-1, 1]); poison a share of each batch if ``backdoor`` is set.

    Returns the EMA weights when ``cfg.ema_decay`` is set (better samples for tiny models), else the
    trained weights. The input module is not modified.
    """
    seed_everything(cfg.seed)
    accelerator = Accelerator()
    unet = copy.deepcopy(unet).requires_grad_(True)
    ema = copy.deepcopy(unet).requires_grad_(False) if cfg.ema_decay else None
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup)))
    unet, opt, sched = accelerator.prepare(unet, opt, sched)
    device = accelerator.device
    gen = make_generator(cfg.seed)
    images = images.to(device)
    if ema is not None:
        ema.to(device)
    unet.train()
    with progress_bar() as bar:
        task = bar.add_task(description, total=cfg.steps, info="")
        for step in range(cfg.steps):
            idx = torch.randint(0, images.shape[0], (cfg.batch_size,), generator=gen)
            x0 = images[idx.to(device)]
            noise = torch.randn(x0.shape, generator=gen).to(device)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
            if backdoor is not None:
                mask = (torch.rand(cfg.batch_size, generator=gen) < backdoor.poison_rate).to(device)
                x_t, target = backdoor.poisoned_inputs(scheduler, x0, noise, t, mask, gen)
            else:
                x_t, target = scheduler.add_noise(x0, noise, t), noise
            loss = F.mse_loss(unet(x_t, t).sample, target)
            opt.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            sched.step()
            if ema is not None:
                with torch.no_grad():
                    src = accelerator.unwrap_model(unet)
                    for pe, p in zip(ema.parameters(), src.parameters()):
                        pe.lerp_(p, 1 - cfg.ema_decay)
            bar.update(task, advance=1, info=f"loss {loss.item():.4f}")
    trained = ema if ema is not None else accelerator.unwrap_model(unet)
    return trained.eval().cpu()


def save_pipeline(unet: UNet2DModel, scheduler: DDPMScheduler, path: str) -> None:
    """Write a stock ``DDPMPipeline`` folder with safetensors weights."""
    DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path, safe_serialization=True)
