"""One place for randomness: every random draw in hfaudit goes through a ``torch.Generator``."""

from __future__ import annotations

import random

import numpy as np
import torch


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a generator seeded with ``seed`` on ``device``.

    Why: diffusers threads an explicit generator through every draw; so do we, so a scan
    with the same seed gives the same verdict on the same device.
    """
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch globals (for code we do not control, e.g. weight init)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Draw standard normal noise with ``generator`` and move it to ``device``.

    Drawing on the generator's own device keeps results identical whatever the target device.
    """
    shape = tuple(int(s) for s in shape)
    out = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return out.to(device)
