"""Image I/O in one place: tensors in [0, 1] to PNG files and grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_pil(image: torch.Tensor, scale: int = 1) -> Image.Image:
    """One ``(C, H, W)`` image in [0, 1] to a PIL image, upscaled by ``scale`` (nearest).

    Grey (C = 1) and RGB (C = 3) as they are; any other channel count (a latent model's trigger) as
    its channels side by side in grey.
    """
    arr = (image.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)
    if arr.shape[0] == 3:
        arr = np.transpose(arr, (1, 2, 0))
    else:
        arr = np.concatenate(list(arr), axis=1)
    img = Image.fromarray(arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def make_grid(images: torch.Tensor, ncol: int | None = None, pad: int = 1) -> torch.Tensor:
    """Tile ``(N, C, H, W)`` images in [0, 1] into one ``(C, H', W')`` image with a grey border."""
    n, c, h, w = images.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    grid = torch.full((c, nrow * (h + pad) + pad, ncol * (w + pad) + pad), 0.5)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, y:y + h, x:x + w] = images[i].detach().float().cpu()
    return grid


def save_png(image: torch.Tensor, path: Path, scale: int = 1) -> Path:
    """Write one ``(C, H, W)`` image in [0, 1] as a PNG; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image, scale).save(path)
    return path


def save_grid(images: torch.Tensor, path: Path, ncol: int | None = None, scale: int = 4) -> Path:
    """Write ``(N, C, H, W)`` images in [0, 1] as a PNG grid; small models are upscaled to be seen."""
    return save_png(make_grid(images, ncol), path, scale)


def signed_to_unit(pattern: torch.Tensor) -> torch.Tensor:
    """Show a signed pattern (a trigger) in [0, 1]: 0.5 is zero, symmetric scale by its max |value|."""
    m = pattern.abs().max().clamp(min=1e-8)
    return (pattern / m * 0.5 + 0.5).clamp(0, 1)
