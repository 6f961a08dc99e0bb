"""Loading an unconditional diffusers pipeline for audit, safely, onto the chosen device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers import UNet2DModel

from hfaudit.devices import resolve_device
from hfaudit.errors import UnsafeCheckpointError, UnsupportedModelError
from hfaudit.hub import ResolvedSource
from hfaudit.limits import HEADROOM, available_memory, gib
from hfaudit.safety import SUPPORTED_PIPELINES, Finding, first_line, static_checks


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
        RepoNotFoundError: files of the model are Git LFS pointers (checked out without Git LFS).
        UsageError: bad device.
    """
    root = source.local_dir
    report = static_checks(root, source.files, allow_pickle=allow_pickle, supported_pipelines=SUPPORTED_PIPELINES)
    report.raise_for_blocking()
    if report.unet_weights is None or report.index is None or not {"unet", "scheduler"} <= report.configs.keys():
        # the checks set these whenever nothing blocks; never trust that silently
        raise UnsupportedModelError("unet has no loadable weights", findings=report.findings)
    target = resolve_device(device)
    _check_weights_fit(report.unet_parameters, target, report.findings)
    rel = report.unet_weights
    path = root / rel
    if rel.endswith((".safetensors", ".json")):  # one file, or a shard index
        try:
            unet = UNet2DModel.from_pretrained(root, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
        except Exception as exc:  # mismatched shapes, missing keys...
            raise UnsafeCheckpointError(f"{rel}: weights do not load into the unet config ({type(exc).__name__}: "
                                        f"{first_line(exc)})", findings=report.findings) from None
    else:
        # Only reached with --allow-pickle and a clean strict picklescan of this very file.
        unet = UNet2DModel.from_config(report.configs["unet"])
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            unet.load_state_dict(state, strict=True)
        except Exception as exc:
            raise UnsafeCheckpointError(f"{rel}: cannot load with weights_only=True ({type(exc).__name__})",
                                        findings=report.findings) from None
    _check_loaded(unet, rel, report.findings)
    if unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    unet = unet.to(target).eval().requires_grad_(False)
    return LoadedModel(unet=unet, scheduler_config=dict(report.configs["scheduler"]),
                       pipeline_class=report.index["_class_name"], source=source, device=target, weights_file=rel,
                       findings=report.findings)


def _check_weights_fit(n_parameters: int | None, device: torch.device, findings: list[Finding]) -> None:
    """Refuse a unet whose weights alone would not fit in the device's free memory (before loading)."""
    free = available_memory(device)
    if n_parameters is None or free is None:
        return
    need = 4 * n_parameters
    if need > HEADROOM * free:
        raise UnsupportedModelError(f"the unet's {n_parameters:,} parameters need {gib(need)}, and {device} has "
                                    f"{gib(free)} free", findings=findings)


def _check_loaded(unet: torch.nn.Module, rel: str, findings: list[Finding]) -> None:
    """What was loaded is what was checked: every tensor present and finite.

    The static checks read the files; this reads the parameters the loader actually built from
    them, so that no loader quirk (a shard it skipped, a cast, a key it dropped) reaches a verdict.

    Raises:
        UnsafeCheckpointError: a tensor the config needs was not in the weights, or one holds NaN/Inf.
    """
    for name, t in (*unet.named_parameters(), *unet.named_buffers()):
        if t.is_meta:
            raise UnsafeCheckpointError(f"{rel}: the weights lack tensor {name!r} that the unet config needs",
                                        findings=findings)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UnsafeCheckpointError(f"{rel}: tensor {name!r} holds NaN or Inf values once loaded",
                                        findings=findings)
