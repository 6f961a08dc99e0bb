"""Loading an unconditional diffusers pipeline for audit, safely, onto the chosen device."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DModel

from hfaudit.devices import resolve_device
from hfaudit.errors import UnsafeCheckpointError, UnsupportedModelError
from hfaudit.hub import ResolvedSource
from hfaudit.safety import Finding, static_checks

SUPPORTED_PIPELINES = frozenset({"DDPMPipeline", "DDIMPipeline", "PNDMPipeline"})
"""Pixel-space unconditional pipelines whose ``unet`` is a ``UNet2DModel``: what the detector audits."""


@dataclass
class LoadedModel:
    """What an audit needs of a pipeline: the denoiser, its schedule, and where it came from."""

    unet: UNet2DModel
    scheduler_config: dict[str, Any]
    pipeline_class: str
    source: ResolvedSource
    device: torch.device
    weights_file: str
    findings: list[Finding] = field(default_factory=list)
    """Non-blocking static findings (pickle files present, ...): they go into every report."""

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        cfg = self.unet.config
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (cfg.in_channels, h, w)


def load_model(
    source: ResolvedSource,
    device: str | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load the pipeline's UNet and scheduler config from a resolved source.

    Safetensors only by default. Pickle weights load only with ``allow_pickle`` and after a clean
    picklescan, with ``weights_only=True``.

    Raises:
        UnsupportedModelError: not a (supported) pipeline, or a broken config.
        UnsafeCheckpointError: pickle-only without opt-in, a flagged pickle, or a corrupt safetensors file.
        UsageError: bad device.
    """
    root = source.local_dir
    report = static_checks(root, source.files, allow_pickle=allow_pickle, supported_pipelines=SUPPORTED_PIPELINES)
    report.raise_for_blocking()
    if report.unet_weights is None:  # the checks set it whenever nothing blocks; never trust that silently
        raise UnsupportedModelError("unet has no loadable weights", findings=report.findings)
    index = json.loads((root / "model_index.json").read_text(encoding="utf-8"))
    sched_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text(encoding="utf-8"))
    target = resolve_device(device)
    rel = report.unet_weights
    path = root / rel
    if rel.endswith(".safetensors"):
        try:
            unet = UNet2DModel.from_pretrained(root, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
        except Exception as exc:  # mismatched shapes, missing keys...
            raise UnsafeCheckpointError(f"{rel}: weights do not load into the unet config ({type(exc).__name__}: {exc})",
                                        findings=report.findings) from None
    else:
        # Only reached with --allow-pickle and a clean strict picklescan of this very file.
        unet = UNet2DModel.from_config(UNet2DModel.load_config(root / "unet"))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            unet.load_state_dict(state, strict=True)
        except Exception as exc:
            raise UnsafeCheckpointError(f"{rel}: cannot load with weights_only=True ({type(exc).__name__})",
                                        findings=report.findings) from None
    if unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    unet = unet.to(target).eval().requires_grad_(False)
    return LoadedModel(unet=unet, scheduler_config=sched_cfg, pipeline_class=index["_class_name"],
                       source=source, device=target, weights_file=rel, findings=report.findings)
