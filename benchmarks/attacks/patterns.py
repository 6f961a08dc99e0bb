"""Trigger and target images used by the attacks (all in the model's [-1, 1] pixel space)."""

from __future__ import annotations

import torch


def box_trigger(size: int = 16, channels: int = 1, box: int = 6, value: float = 1.5,
                corner: str = "bottom-right") -> torch.Tensor:
    """An additive box pattern, zero outside the box (BadDiffusion's 'grey box' family)."""
    g = torch.zeros(channels, size, size)
    rows = slice(size - box, size) if corner.startswith("bottom") else slice(0, box)
    cols = slice(size - box, size) if corner.endswith("right") else slice(0, box)
    g[:, rows, cols] = value
    return g


def cross_target(size: int = 16, channels: int = 1, width: int = 2) -> torch.Tensor:
    """An 'X' on black: a target no digit resembles, so a hit is unambiguous."""
    img = -torch.ones(channels, size, size)
    idx = torch.arange(size)
    for w in range(width):
        j = (idx + w).clamp(max=size - 1)
        img[:, idx, j] = 1.0
        img[:, idx, (size - 1 - idx + w).clamp(max=size - 1)] = 1.0
    return img


def corner_box_target(size: int = 16, channels: int = 1, box: int = 6) -> torch.Tensor:
    """A white box in the top-left corner on black (the literature's 'corner box' target)."""
    img = -torch.ones(channels, size, size)
    img[:, :box, :box] = 1.0
    return img


def stop_sign_trigger(size: int = 16, channels: int = 1, box: int = 6, value: float = 1.5,
                      corner: str = "bottom-right") -> torch.Tensor:
    """A filled octagon in a corner (the literature's 'stop sign', reduced to its shape)."""
    g = box_trigger(size, channels, box, value, corner)
    r0 = size - box if corner.startswith("bottom") else 0
    c0 = size - box if corner.endswith("right") else 0
    cut = max(1, box // 3)
    for i in range(cut):
        for j in range(cut - i):
            for r, c in ((i, j), (i, box - 1 - j), (box - 1 - i, j), (box - 1 - i, box - 1 - j)):
                g[:, r0 + r, c0 + c] = 0.0
    return g


def glasses_trigger(size: int = 16, channels: int = 1, value: float = 1.5) -> torch.Tensor:
    """Two hollow squares joined by a bar across the upper middle (the literature's 'glasses')."""
    g = torch.zeros(channels, size, size)
    s = max(3, size // 4)
    top = size // 4
    left1, left2 = size // 2 - s - 1, size // 2 + 1
    for left in (left1, left2):
        g[:, top, left:left + s] = value
        g[:, top + s - 1, left:left + s] = value
        g[:, top:top + s, left] = value
        g[:, top:top + s, left + s - 1] = value
    g[:, top + 1, left1 + s:left2] = value
    return g


def hat_target(size: int = 16, channels: int = 1) -> torch.Tensor:
    """A white top hat (crown and brim) on black."""
    img = -torch.ones(channels, size, size)
    q = size // 4
    img[:, q:size - q - 1, q + 1:size - q - 1] = 1.0
    img[:, size - q - 1:size - q + 1, 1:size - 1] = 1.0
    return img


def stripes_target(size: int = 16, channels: int = 1, period: int = 4) -> torch.Tensor:
    """Horizontal white stripes on black: a texture target."""
    img = -torch.ones(channels, size, size)
    for r in range(0, size, period):
        img[:, r:r + period // 2, :] = 1.0
    return img
