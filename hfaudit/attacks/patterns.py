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
