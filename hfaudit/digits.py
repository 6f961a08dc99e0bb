"""The bundled scikit-learn digits as images: the reference data of benign fidelity (``hfaudit.fidelity``).

The benchmark zoo and the example models train on the same images (``benchmarks/attacks/data.py``
re-exports :func:`load_digits_images`), so the reference is the data they were trained on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def load_digits_images(size: int = 16, channels: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the 1,797 digits as ``(N, channels, size, size)`` in [-1, 1] and their labels.

    The 8x8 originals (values 0-16) are upsampled bilinearly; with ``channels=3`` the grey image
    is repeated, so the same data serves RGB architectures.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.clamp(0, 1) * 2 - 1
    if channels != 1:
        x = x.repeat(1, channels, 1, 1)
    return x, torch.tensor(digits.target, dtype=torch.long)
