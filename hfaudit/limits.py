"""Bounds on what an audit may allocate, checked before anything is allocated.

A hostile config can ask for a 100,000-pixel image or a billion training timesteps, and a bad
flag for a billion samples; left alone, torch tries the allocation and either the machine swaps to
a halt or the kernel kills the process. Two kinds of bounds live here:

* fixed caps on config and flag values, far above any real diffusers pipeline (so they never
  refuse a real model) and far below what breaks a machine;
* a memory estimate of a scan (the model's weights plus the activations of the largest batch any
  search runs through the UNet, with and without gradients), held against the memory free on the
  device, so a model too large for this machine is refused with a number instead of an OOM kill.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

MAX_SAMPLE_SIZE = 4096
"""Largest image side (pixels) of a unet config."""
MAX_CHANNELS = 64
"""Largest ``in_channels``/``out_channels`` (images have 1-4, latents 4-16)."""
MAX_BLOCK_CHANNELS = 16384
"""Largest entry of ``block_out_channels``."""
MAX_TEXT_LAYERS = 256
"""Most transformer layers of a text encoder config (CLIP's have 12 to 32)."""
MAX_BLOCKS = 8
"""Most down (and up) blocks."""
MAX_LAYERS_PER_BLOCK = 32
MAX_PARAMETERS = 10_000_000_000
"""Most parameters a unet may declare (Stable Diffusion's is 0.86 billion)."""
MAX_TRAIN_TIMESTEPS = 100_000
"""Most training timesteps of a schedule (diffusers pipelines use 1000)."""
MAX_SAMPLES = 4096
"""Most samples per probe (``--samples``)."""
MAX_STEPS = 10_000
"""Most sampler or optimiser steps a flag may ask for."""
MAX_FINETUNE_STEPS = 1_000_000
"""Most fine-tuning steps of ``clean`` (its default is 1000)."""
MAX_SEED = 2**62
"""Seeds lie in ``[0, MAX_SEED)``: torch takes 64-bit seeds, and hfaudit derives others by adding small offsets."""
MAX_BATCH = 1 << 20

BYTES = 4
"""Activations are float32."""
FORWARD_FACTOR = 20
BACKWARD_FACTOR = 75
"""Live float32 values per feature-map element of one image through the UNet, without and with
gradients (input gradients: weights frozen). ``benchmarks/memory_model.py`` measures the real peak
beside this estimate; the factors sit at or above what it measures."""
ATTENTION_BYTES = 1
"""Bytes counted per element of the largest attention matrix: fused attention kernels never hold
the whole matrix, so it weighs far less than a float32 per element."""
HEADROOM = 0.8
"""Share of the free memory a scan may plan to use."""


@dataclass(frozen=True)
class MemoryPlan:
    """What a scan of one model is estimated to need, and what the device has free."""

    weights: int
    forward_per_image: int
    backward_per_image: int
    forward_batch: int
    backward_batch: int
    available: int | None
    """Free bytes on the device; None where unknown (then nothing is refused)."""

    @property
    def needed(self) -> int:
        """Peak bytes: the weights plus the larger of the two peak batches."""
        return self.weights + max(self.forward_per_image * self.forward_batch,
                                  self.backward_per_image * self.backward_batch)

    @property
    def fits(self) -> bool:
        """True when the estimate is within ``HEADROOM`` of the free memory (or that is unknown)."""
        return self.available is None or self.needed <= HEADROOM * self.available


def image_size(unet_config: Mapping[str, Any]) -> tuple[int, int]:
    """``(H, W)`` of the unet config's ``sample_size`` (an int or a pair)."""
    size = unet_config.get("sample_size")
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def feature_elements(unet_config: Mapping[str, Any]) -> tuple[int, int]:
    """``(conv, attention)`` elements of one image's feature maps through a ``UNet2DModel``.

    ``conv``: the sum over resolution levels of channels x height x width. ``attention``: the
    largest attention matrix (heads x tokens^2) of any level that has attention blocks (counted
    once: fused attention kernels keep one at a time).
    """
    h, w = image_size(unet_config)
    chans = list(unet_config.get("block_out_channels") or (64,))
    down = list(unet_config.get("down_block_types") or ())
    head_dim = unet_config.get("attention_head_dim") or 8
    conv, attention = 0, 0
    for i, c in enumerate(chans):
        hi, wi = max(1, h >> i), max(1, w >> i)
        conv += int(c) * hi * wi
        last = i == len(chans) - 1
        has_attn = (i < len(down) and "Attn" in str(down[i])) or (last and unet_config.get("add_attention", True))
        if has_attn:
            heads = max(1, int(c) // int(head_dim)) if isinstance(head_dim, int) and head_dim > 0 else 1
            attention = max(attention, heads * (hi * wi) ** 2)
    return conv, attention


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device``: CUDA's own count, else the host's ``MemAvailable``; None if unknown."""
    if device.type == "cuda":
        try:
            free, _total = torch.cuda.mem_get_info(device)
            return int(free)
        except (RuntimeError, AssertionError):
            return None
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def config_dict(config: Any) -> dict[str, Any]:
    """A unet's config as a plain dict (a diffusers ``FrozenDict``, a mapping or a namespace)."""
    return dict(config) if isinstance(config, Mapping) else dict(vars(config))


def plan_memory(unet_config: Mapping[str, Any], n_parameters: int, forward_batch: int, backward_batch: int,
                device: torch.device) -> MemoryPlan:
    """Estimate a scan's peak memory on ``device`` (see the module docstring)."""
    conv, attention = feature_elements(config_dict(unet_config))
    return MemoryPlan(
        weights=BYTES * n_parameters,
        forward_per_image=BYTES * FORWARD_FACTOR * conv + ATTENTION_BYTES * attention,
        backward_per_image=BYTES * BACKWARD_FACTOR * conv + ATTENTION_BYTES * attention,
        forward_batch=forward_batch, backward_batch=backward_batch,
        available=available_memory(device),
    )


def gib(n: int | float) -> str:
    """``n`` bytes as GiB for a message, e.g. ``17.3 GiB``."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**26 else f"{math.ceil(n / 2**20)} MiB"
