"""Device placement, in one place: Accelerate decides unless the user overrides it."""

from __future__ import annotations

import torch

from hfaudit.errors import UsageError

COMPUTE_DEVICES = ("cpu", "cuda", "mps", "xpu")
"""Device types a scan runs on; ``meta`` and the like hold no data and cannot sample."""


def resolve_device(device: str | None = None) -> torch.device:
    """Return the device to run on.

    ``None`` or ``"auto"`` asks Accelerate (CUDA, MPS, XPU... when present, else CPU), so the same
    command uses a GPU where a user has one. An explicit ``"cpu"``, ``"cuda:1"``... is honoured.

    Raises:
        UsageError: the device string is invalid or that device is not available.
    """
    if device in (None, "", "auto"):
        from accelerate import PartialState

        return PartialState().device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"device {device!r} is invalid: {exc}", param="device") from None
    if dev.type not in COMPUTE_DEVICES:
        raise UsageError(f"device {device}: not a device hfaudit can compute on (choose from "
                         f"{', '.join(COMPUTE_DEVICES)}, or leave it out)", param="device")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device}: CUDA is not available on this machine", param="device")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {device}: MPS is not available on this machine", param="device")
    if dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise UsageError(f"device {device}: XPU is not available on this machine", param="device")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                         param="device")
    return dev
