"""Small helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

UNET_ST = "unet/diffusion_pytorch_model.safetensors"
UNET_BIN = "unet/diffusion_pytorch_model.bin"
FAST_SCAN_FLAGS = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2"]
"""A scan budget small enough for unit tests on the tiny pipeline."""


class WriteMarker:
    """Unpickling this writes ``path``: the proof that nothing was unpickled is that it never appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))
