"""Loading an unconditional diffusers pipeline for audit, safely, onto the chosen device."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import UNet2DModel

from hfaudit.devices import resolve_device
from hfaudit.errors import UnsafeCheckpointError, UnsupportedModelError
from hfaudit.hub import ResolvedSource
from hfaudit.safety import check_safetensors, scan_pickle, weight_files

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

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample."""
        cfg = self.unet.config
        size = cfg.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (cfg.in_channels, h, w)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UnsupportedModelError(f"{what} missing: {path.name} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnsupportedModelError(f"{what} is not valid JSON ({path.name}: {exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(data, dict):
        raise UnsupportedModelError(f"{what} is not a JSON object ({path.name})")
    return data


def read_pipeline_index(root: Path) -> dict[str, Any]:
    """Read and check ``model_index.json``: it must name a supported pipeline with a ``unet``.

    Raises:
        UnsupportedModelError: not a diffusers pipeline, or a pipeline type hfaudit does not audit.
    """
    if not (root / "model_index.json").is_file():
        raise UnsupportedModelError(f"{root.name or root}: not a diffusers pipeline (no model_index.json)")
    index = _read_json(root / "model_index.json", "model_index.json")
    cls = index.get("_class_name", "?")
    if cls not in SUPPORTED_PIPELINES:
        raise UnsupportedModelError(
            f"pipeline type {cls} is not supported yet; hfaudit audits unconditional pixel-space "
            f"pipelines ({', '.join(sorted(SUPPORTED_PIPELINES))})")
    for comp in ("unet", "scheduler"):
        if comp not in index:
            raise UnsupportedModelError(f"{cls} has no {comp} component in model_index.json")
    return index


def _check_scheduler_config(cfg: dict[str, Any]) -> None:
    from diffusers import DDPMScheduler

    try:
        sched = DDPMScheduler.from_config(cfg)
    except Exception as exc:  # diffusers raises several types for bad configs
        raise UnsupportedModelError(f"scheduler config is unusable: {exc}") from None
    if int(sched.config.num_train_timesteps) < 2:
        raise UnsupportedModelError("scheduler config has fewer than 2 training timesteps")
    pred = cfg.get("prediction_type", "epsilon")
    if pred != "epsilon":
        raise UnsupportedModelError(f"prediction_type {pred!r} is not supported yet (epsilon only)")


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
    index = read_pipeline_index(root)
    sched_dir = root / "scheduler"
    sched_cfg = _read_json(sched_dir / "scheduler_config.json", "scheduler config")
    _check_scheduler_config(sched_cfg)
    unet_dir = root / "unet"
    unet_cfg = _read_json(unet_dir / "config.json", "unet config")
    if unet_cfg.get("_class_name") != "UNet2DModel":
        raise UnsupportedModelError(f"unet is a {unet_cfg.get('_class_name', '?')}, not a UNet2DModel")
    size = unet_cfg.get("sample_size")
    sizes = [size] if isinstance(size, int) else list(size or [])
    if not sizes or any(not isinstance(s, int) or s <= 0 for s in sizes):
        raise UnsupportedModelError(f"unet config has an invalid sample_size ({size!r})")
    files = weight_files(unet_dir)
    target = resolve_device(device)
    if files.safetensors:
        path = files.safetensors[0]
        check_safetensors(path)
        try:
            unet = UNet2DModel.from_pretrained(root, subfolder="unet", use_safetensors=True, torch_dtype=dtype)
        except Exception as exc:  # mismatched shapes, missing keys...
            raise UnsafeCheckpointError(f"{path.name}: weights do not load into the unet config ({type(exc).__name__}: {exc})") from None
    elif files.pickle:
        path = files.pickle[0]
        if not allow_pickle:
            raise UnsafeCheckpointError(
                f"unet/{path.name}: pickle-only checkpoint; hfaudit loads safetensors only "
                "(pass --allow-pickle to scan it with picklescan and load it with weights_only=True)")
        findings = scan_pickle(path)
        if findings:
            raise UnsafeCheckpointError(f"refusing to load: {findings[0].message}")
        unet = UNet2DModel.from_config(UNet2DModel.load_config(unet_dir))
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            unet.load_state_dict(state, strict=True)
        except Exception as exc:
            raise UnsafeCheckpointError(f"unet/{path.name}: cannot load with weights_only=True ({type(exc).__name__})") from None
    else:
        raise UnsupportedModelError("unet has no weight files")
    if unet.dtype != dtype:
        unet = unet.to(dtype=dtype)
    unet = unet.to(target).eval().requires_grad_(False)
    return LoadedModel(unet=unet, scheduler_config=sched_cfg, pipeline_class=index["_class_name"],
                       source=source, device=target, weights_file=f"unet/{path.name}")
