"""Loading a diffusers pipeline for audit, safely, onto the chosen device.

Three kinds (``safety.LAYOUTS``): unconditional pixel-space pipelines (DDPM, DDIM, PNDM) and the latent
``LDMPipeline`` load as a :class:`LoadedModel`; ``StableDiffusionPipeline`` loads as a
:class:`TextToImageModel`. Every component is loaded by its own library's ``from_pretrained`` with
``use_safetensors=True`` after the static checks passed (pickle only with ``allow_pickle``, after a clean
picklescan, with ``weights_only=True``); what was loaded is checked again (present, finite), frozen and
put in eval mode on the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel, UNet2DModel

from hfaudit.devices import resolve_device
from hfaudit.errors import HfAuditError, UnsafeCheckpointError, UnsupportedModelError
from hfaudit.hub import ResolvedSource
from hfaudit.limits import HEADROOM, available_memory, gib
from hfaudit.safety import (
    MODEL_LIBRARIES,
    SUPPORTED_PIPELINES,
    TEXT_TO_IMAGE,
    TEXT_TO_IMAGE_PIPELINES,
    UNCONDITIONAL_PIPELINES,
    Finding,
    StaticReport,
    build_from_config,
    first_line,
    model_class,
    static_checks,
)

__all__ = ["SUPPORTED_PIPELINES", "LoadedModel", "TextToImageModel", "load_for_audit", "load_model",
           "load_text_to_image"]


@dataclass
class LoadedModel:
    """What an audit needs of an unconditional pipeline: the denoiser, its schedule, where it came from,
    and for a latent pipeline (``LDMPipeline``) the autoencoder that turns its samples into images."""

    unet: UNet2DModel
    scheduler_config: dict[str, Any]
    pipeline_class: str
    source: ResolvedSource
    device: torch.device
    weights_file: str
    findings: list[Finding] = field(default_factory=list)
    """Non-blocking static findings (pickle files present, ...): they go into every report."""
    vae: torch.nn.Module | None = None
    """The latent pipeline's autoencoder (``VQModel`` or ``AutoencoderKL``, model_index.json's ``vqvae``);
    None in pixel space."""
    component_files: dict[str, list[str]] = field(default_factory=dict)
    """Component -> every repo-relative weights file it was loaded from (each shard of a sharded one),
    as the static checks listed them (``StaticReport.component_files``)."""

    @property
    def latent(self) -> bool:
        """True when the unet samples latents that :meth:`decode` turns into images."""
        return self.vae is not None

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one sample of the unet (latents for a latent pipeline)."""
        return _unet_sample_shape(self.unet)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one decoded image (the sample shape in pixel space)."""
        if self.vae is None:
            return self.sample_shape
        return _decoded_shape(self.vae, self.sample_shape)

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Unet samples ``(N, C, H, W)`` -> images in [-1, 1] on the same device and dtype.

        Pixel space: the samples, clamped. Latent: what ``LDMPipeline`` does before it maps to [0, 1]
        (the latents divided by the autoencoder's ``scaling_factor``, then ``decode``, which quantises
        for a ``VQModel``), clamped.
        """
        if self.vae is None:
            return raw.clamp(-1, 1)
        return _vae_decode(self.vae, raw)


@dataclass
class TextToImageModel:
    """What an audit needs of a ``StableDiffusionPipeline``: the text side, the denoiser, the
    autoencoder and the schedule, and where they came from."""

    tokenizer: Any
    """The pipeline's CLIP tokenizer, as ``transformers`` loads it."""
    text_encoder: torch.nn.Module
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict[str, Any]
    pipeline_class: str
    source: ResolvedSource
    device: torch.device
    weights_files: dict[str, str]
    """Component -> the repo-relative weights file that was loaded (a shard index for a sharded one)."""
    component_files: dict[str, list[str]] = field(default_factory=dict)
    """Component -> every repo-relative weights file it was loaded from (``StaticReport.component_files``)."""
    findings: list[Finding] = field(default_factory=list)
    """Non-blocking static findings (pickle files present, a safety checker not loaded...)."""

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one latent the unet denoises."""
        return _unet_sample_shape(self.unet)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one decoded image."""
        return _decoded_shape(self.vae, self.latent_shape)

    @torch.no_grad()
    def encode(self, prompts: Sequence[str]) -> torch.Tensor:
        """Text embeddings ``(N, L, D)`` on the device, as ``StableDiffusionPipeline.encode_prompt``
        gives them to the unet (padded to the tokenizer's ``model_max_length``, truncated; no
        classifier-free guidance, no clip skip)."""
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        inputs = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        mask = None
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            mask = inputs.attention_mask.to(self.device)
        embeddings = self.text_encoder(inputs.input_ids.to(self.device), attention_mask=mask)[0]
        return embeddings.to(dtype=self.text_encoder.dtype, device=self.device)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(N, C, H, W)`` -> images in [-1, 1] on the same device and dtype, as the pipeline
        decodes them (divided by the autoencoder's ``scaling_factor``), clamped."""
        return _vae_decode(self.vae, latents)


def _unet_sample_shape(unet: torch.nn.Module) -> tuple[int, int, int]:
    """``(C, H, W)`` of what ``unet`` denoises, from its config (``sample_size`` an int or a pair)."""
    cfg = unet.config
    size = cfg.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return (cfg.in_channels, h, w)


def _decoded_shape(vae: torch.nn.Module, sample: tuple[int, int, int]) -> tuple[int, int, int]:
    """The image shape an autoencoder decodes a ``sample``-shaped latent to (each block but the last
    doubles the side)."""
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    _c, h, w = sample
    return (vae.config.out_channels, h * factor, w * factor)


@torch.no_grad()
def _vae_decode(vae: torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """``vae.decode(latents / scaling_factor)`` clamped to [-1, 1], in the latents' dtype: what the
    diffusers pipelines compute before they map images to [0, 1]."""
    vae_dtype = next(vae.parameters()).dtype
    images = vae.decode(latents.to(vae_dtype) / vae.config.scaling_factor).sample
    return images.clamp(-1, 1).to(latents.dtype)


# ------------------------------------------------------------------------------------- loading
def load_model(
    source: ResolvedSource,
    device: str | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Load an unconditional pipeline (pixel space, or the latent ``LDMPipeline``) from a resolved source.

    Safetensors only by default. Pickle weights load only with ``allow_pickle`` and after a clean
    picklescan, with ``weights_only=True``.

    Raises:
        UnsupportedModelError: not a (supported unconditional) pipeline, a broken config, or weights
            that do not fit in the device's free memory.
        UnsafeCheckpointError: pickle-only without opt-in, a flagged pickle, or a corrupt safetensors file.
        RepoNotFoundError: files of the model are Git LFS pointers (checked out without Git LFS).
        UsageError: bad device.
    """
    return _load_unconditional(source, _checked(source, allow_pickle, UNCONDITIONAL_PIPELINES), device, dtype)


def load_text_to_image(
    source: ResolvedSource,
    device: str | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> TextToImageModel:
    """Load a ``StableDiffusionPipeline`` (1.x/2.x layouts) from a resolved source: tokenizer, text
    encoder, unet and autoencoder; never its safety checker or feature extractor.

    Raises: as :func:`load_model`.
    """
    return _load_text_to_image(source, _checked(source, allow_pickle, TEXT_TO_IMAGE_PIPELINES), device, dtype)


def load_for_audit(
    source: ResolvedSource,
    device: str | None = None,
    allow_pickle: bool = False,
    dtype: torch.dtype = torch.float32,
) -> LoadedModel | TextToImageModel:
    """Load any pipeline hfaudit audits, as its kind needs (model_index.json's ``_class_name``).

    Raises: as :func:`load_model`.
    """
    report = _checked(source, allow_pickle, SUPPORTED_PIPELINES)
    if report.layout is not None and report.layout.kind == TEXT_TO_IMAGE:
        return _load_text_to_image(source, report, device, dtype)
    return _load_unconditional(source, report, device, dtype)


def _checked(source: ResolvedSource, allow_pickle: bool, supported: frozenset[str]) -> StaticReport:
    """The static checks of ``source`` for pipelines of ``supported``, raising for a blocking finding."""
    report = static_checks(source.local_dir, source.files, allow_pickle=allow_pickle, supported_pipelines=supported)
    report.raise_for_blocking()
    layout = report.layout
    needed = [name for name, _accepted in layout.needs] if layout is not None else ["unet", "scheduler"]
    if report.index is None or not set(needed) <= report.configs.keys() or "unet" not in report.component_weights:
        # the checks set these whenever nothing blocks; never trust that silently
        raise UnsupportedModelError("unet has no loadable weights", findings=report.findings)
    return report


def _load_unconditional(source: ResolvedSource, report: StaticReport, device: str | None,
                        dtype: torch.dtype) -> LoadedModel:
    target = resolve_device(device)
    _check_weights_fit(report, target)
    unet = _load_component(source.local_dir, report, "unet", dtype, target)
    vae = _load_component(source.local_dir, report, "vqvae", dtype, target) if "vqvae" in report.component_weights \
        else None
    return LoadedModel(unet=unet, scheduler_config=dict(report.configs["scheduler"]),
                       pipeline_class=report.index["_class_name"], source=source, device=target,
                       weights_file=report.component_weights["unet"], findings=report.findings, vae=vae,
                       component_files=dict(report.component_files))


def _load_text_to_image(source: ResolvedSource, report: StaticReport, device: str | None,
                        dtype: torch.dtype) -> TextToImageModel:
    target = resolve_device(device)
    _check_weights_fit(report, target)
    root = source.local_dir
    loaded = {name: _load_component(root, report, name, dtype, target) for name in ("text_encoder", "unet", "vae")}
    return TextToImageModel(tokenizer=_load_tokenizer(root, report), text_encoder=loaded["text_encoder"],
                            unet=loaded["unet"], vae=loaded["vae"], scheduler_config=dict(report.configs["scheduler"]),
                            pipeline_class=report.index["_class_name"], source=source, device=target,
                            weights_files=dict(report.component_weights), findings=report.findings,
                            component_files=dict(report.component_files))


def _load_component(root: Path, report: StaticReport, name: str, dtype: torch.dtype,
                    device: torch.device) -> torch.nn.Module:
    """Load one weighted component with its library's ``from_pretrained`` (safetensors), or, only with
    ``--allow-pickle`` after a clean strict picklescan of that very file, from pickle with
    ``weights_only=True``; check it, cast it, freeze it and move it to ``device``."""
    cls = report.index[name][1]
    rel = report.component_weights[name]
    transformers = MODEL_LIBRARIES[cls] == "transformers"
    pickled = not rel.endswith((".safetensors", ".json"))  # not one file or a shard index
    try:
        if transformers:
            # transformers reads pickle with weights_only=True itself, and maps older weight names
            module, info = model_class(cls).from_pretrained(
                root, subfolder=name, use_safetensors=not pickled, weights_only=True, dtype=dtype,
                output_loading_info=True, local_files_only=True)
            missing = sorted({*info.get("missing_keys", ()), *(k[0] if isinstance(k, tuple) else k
                                                                for k in info.get("mismatched_keys", ()))})
            if missing:
                raise UnsafeCheckpointError(f"{rel}: the weights lack tensor {missing[0]!r} that the {name} config "
                                            "needs", findings=report.findings)
        elif not pickled:
            module = model_class(cls).from_pretrained(root, subfolder=name, use_safetensors=True, torch_dtype=dtype)
        else:
            module = build_from_config(cls, report.configs[name])
            try:
                state = torch.load(root / rel, map_location="cpu", weights_only=True)
                module.load_state_dict(state, strict=True)
            except Exception as exc:
                raise UnsafeCheckpointError(f"{rel}: cannot load with weights_only=True ({type(exc).__name__})",
                                            findings=report.findings) from None
    except HfAuditError:
        raise
    except Exception as exc:  # mismatched shapes, missing keys...
        raise UnsafeCheckpointError(f"{rel}: weights do not load into the {name} config ({type(exc).__name__}: "
                                    f"{first_line(exc)})", findings=report.findings) from None
    _check_loaded(module, rel, report.findings, name)
    if module.dtype != dtype:
        module = module.to(dtype=dtype)
    return module.to(device).eval().requires_grad_(False)


def _load_tokenizer(root: Path, report: StaticReport) -> Any:
    """The pipeline's CLIP tokenizer, from its vocabulary and config files only (no code, no weights)."""
    import transformers

    cls = report.index["tokenizer"][1]
    try:
        return getattr(transformers, cls).from_pretrained(root, subfolder="tokenizer", local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - tokenizers raise many types for files they cannot read
        raise UnsupportedModelError(f"tokenizer: a {cls} does not load from its files ({type(exc).__name__}: "
                                    f"{first_line(exc)})", findings=report.findings) from None


def _check_weights_fit(report: StaticReport, device: torch.device) -> None:
    """Refuse a pipeline whose weights alone (every component) would not fit in the device's free memory
    (before loading)."""
    free = available_memory(device)
    n_parameters = sum(report.parameters.values()) if report.parameters else None
    if n_parameters is None or free is None:
        return
    need = 4 * n_parameters
    if need > HEADROOM * free:
        what = "unet's" if set(report.parameters) == {"unet"} else "pipeline's"
        raise UnsupportedModelError(f"the {what} {n_parameters:,} parameters need {gib(need)}, and {device} has "
                                    f"{gib(free)} free", findings=report.findings)


def _check_loaded(module: torch.nn.Module, rel: str, findings: list[Finding], name: str = "unet") -> None:
    """What was loaded is what was checked: every tensor present and finite.

    The static checks read the files; this reads the parameters the loader actually built from
    them, so that no loader quirk (a shard it skipped, a cast, a key it dropped) reaches a verdict.

    Raises:
        UnsafeCheckpointError: a tensor the config needs was not in the weights, or one holds NaN/Inf.
    """
    for tensor_name, t in (*module.named_parameters(), *module.named_buffers()):
        if t.is_meta:
            raise UnsafeCheckpointError(f"{rel}: the weights lack tensor {tensor_name!r} that the {name} config "
                                        "needs", findings=findings)
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise UnsafeCheckpointError(f"{rel}: tensor {tensor_name!r} holds NaN or Inf values once loaded",
                                        findings=findings)
