"""Static checks that run before any weights are loaded (docs/design.md section 4).

What a model repo holds is read, never executed: which weight files exist (safetensors vs pickle),
whether ``model_index.json`` and the component configs parse and agree with the folders, whether
every safetensors header is honest (lengths, dtypes, offsets inside the file, no overlaps) and its
values finite, and what every pickle file would import (picklescan, strict). Each problem is a
:class:`Finding` tied to a file of the repo, so it can become a SARIF result on that file. The
weights checks run on every weighted component a pipeline class needs (:data:`LAYOUTS`: the unet, a
latent pipeline's autoencoder, Stable Diffusion's autoencoder and text encoder); components an audit
does not need (a safety checker) are neither downloaded nor loaded.

Findings at level ``error`` whose rule carries an exit code block the audit: the caller raises the
matching error (exit 4 unsupported, 5 unsafe) with all findings attached, so the reports can still
name every problem. Pickle weights are never loaded by default; with ``allow_pickle`` they load
only after a clean strict scan, with ``weights_only=True`` (see :mod:`hfaudit.pipeline`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hfaudit import limits
from hfaudit.errors import ExitCode, HfAuditError, RepoNotFoundError, UnsafeCheckpointError, UnsupportedModelError
from hfaudit.modelfiles import (
    MAX_CONFIG_BYTES,
    UnreadableFile,
    is_lfs_pointer,
    kind_of,
    open_regular,
    read_bytes,
    read_json,
)

PIXEL, LATENT, TEXT_TO_IMAGE = "pixel", "latent", "text-to-image"
"""The kinds of pipeline hfaudit audits: unconditional in pixel space; unconditional in a latent space
(an autoencoder decodes the unet's samples); text-conditioned in a latent space."""


@dataclass(frozen=True)
class Layout:
    """What an audit needs of one pipeline class: its kind, and the classes each needed component may have."""

    kind: str
    needs: tuple[tuple[str, frozenset[str] | None], ...]
    """``(component, accepted classes)`` as ``model_index.json`` names them; None accepts any class (the
    scheduler: its config is checked instead)."""
    unused: frozenset[str] = frozenset()
    """Components an audit never needs (a safety checker...): null is fine, a present one is neither
    downloaded nor loaded."""


TOKENIZER_CLASSES = frozenset({"CLIPTokenizer", "CLIPTokenizerFast"})
"""The tokenizers hfaudit loads (Stable Diffusion's); read from vocabulary and config files only."""
_SCHEDULER = ("scheduler", None)
_PIXEL_LAYOUT = Layout(PIXEL, (("unet", frozenset({"UNet2DModel"})), _SCHEDULER))
LAYOUTS: dict[str, Layout] = {
    "DDPMPipeline": _PIXEL_LAYOUT,
    "DDIMPipeline": _PIXEL_LAYOUT,
    "PNDMPipeline": _PIXEL_LAYOUT,
    "LDMPipeline": Layout(LATENT, (("unet", frozenset({"UNet2DModel"})),
                                   ("vqvae", frozenset({"VQModel", "AutoencoderKL"})), _SCHEDULER)),
    "StableDiffusionPipeline": Layout(
        TEXT_TO_IMAGE,
        (("unet", frozenset({"UNet2DConditionModel"})), ("vae", frozenset({"AutoencoderKL"})),
         ("text_encoder", frozenset({"CLIPTextModel"})), ("tokenizer", TOKENIZER_CLASSES),
         _SCHEDULER),
        unused=frozenset({"safety_checker", "feature_extractor", "image_encoder"}),
    ),
}
"""Every pipeline class hfaudit audits (Stable Diffusion 1.x/2.x layouts for the text-to-image one).
Deciding from ``model_index.json`` alone (:func:`index_refusal`) lets a Hub download stop before the weights."""
SUPPORTED_PIPELINES = frozenset(LAYOUTS)
PIXEL_PIPELINES = frozenset(c for c, layout in LAYOUTS.items() if layout.kind == PIXEL)
UNCONDITIONAL_PIPELINES = frozenset(c for c, layout in LAYOUTS.items() if layout.kind in (PIXEL, LATENT))
TEXT_TO_IMAGE_PIPELINES = frozenset(c for c, layout in LAYOUTS.items() if layout.kind == TEXT_TO_IMAGE)
MODEL_LIBRARIES: dict[str, str] = {
    "UNet2DModel": "diffusers", "UNet2DConditionModel": "diffusers", "VQModel": "diffusers",
    "AutoencoderKL": "diffusers", "CLIPTextModel": "transformers",
}
"""The weighted component classes hfaudit loads, and the library whose ``from_pretrained`` loads each."""
WEIGHT_STEMS: dict[str, tuple[str, str]] = {
    "diffusers": ("diffusion_pytorch_model", "diffusion_pytorch_model"),
    "transformers": ("model", "pytorch_model"),
}
"""The default weights' file stem of each library, safetensors and pickle (``model.safetensors``,
``pytorch_model.bin``): what its ``from_pretrained`` reads in a component folder."""
TOKENIZER_SUFFIXES = (".json", ".txt")
"""A tokenizer's files (vocabularies, merges, configs): read as configs, size-limited like them."""
_INTEGER_TENSORS: dict[str, tuple[str, ...]] = {"CLIPTextModel": ("embeddings.position_ids",)}
"""Integer tensors a class's checkpoints may hold that no float parameter loads (older transformers saved
CLIP's position ids); every other tensor must be floating-point."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
"""What a component's parameters hold: floating-point values only (see ``_INTEGER_TENSORS``)."""
MAX_HEADER_BYTES = 8 * 1024 * 1024
"""Largest safetensors JSON header read (the format allows 100 MB). A Stable Diffusion XL unet's
header is a few hundred kilobytes; a larger one is refused before it is parsed, so a hostile
header costs bounded time and memory."""
MAX_TENSORS = 100_000
"""Most tensors one safetensors file may index."""
ERROR, WARNING, NOTE = "error", "warning", "note"
"""Finding levels; the same words as SARIF ``result.level``."""
_IGNORED_DIRS = (".git/", ".cache/")


@dataclass(frozen=True)
class Rule:
    """A kind of finding: its SARIF rule, and the exit code an error-level finding of it forces."""

    id: str
    name: str
    level: str
    """Default level (a finding may be milder, e.g. a pickle that scanned clean is a note)."""
    summary: str
    help: str
    exit_code: ExitCode | None = None
    """Exit code of a blocking (error-level) finding; None: never blocks."""
    security_severity: float | None = None
    """GitHub code scanning's 0-10 severity, for security rules."""


_RULE_LIST = (
    Rule("HFA001", "diffusion-backdoor", ERROR, "Backdoor in a diffusion model",
         "An inverted trigger on the initial noise makes the sampler collapse onto one target image. "
         "Do not use the weights; `hfaudit clean` can remove the backdoor.", ExitCode.BACKDOOR, 8.8),
    Rule("HFA002", "collapsed-model", WARNING, "Model collapses without a trigger",
         "Samples from clean noise already collapse onto one image, so the backdoor test is inconclusive."),
    Rule("HFA100", "not-a-pipeline", ERROR, "Not a diffusers pipeline",
         "The folder or repo has no model_index.json.", ExitCode.UNSUPPORTED),
    Rule("HFA101", "invalid-config", ERROR, "A config file does not parse",
         "model_index.json or a component config is not a valid JSON object.", ExitCode.UNSUPPORTED),
    Rule("HFA102", "unsupported-pipeline", ERROR, "Pipeline type not supported",
         "hfaudit audits unconditional pipelines in pixel space (DDPM, DDIM, PNDM) and in a latent space "
         "(LDMPipeline), and StableDiffusionPipeline (Stable Diffusion 1.x/2.x layouts), each with the component "
         "classes it needs.", ExitCode.UNSUPPORTED),
    Rule("HFA103", "missing-component", ERROR, "A pipeline component or its config is missing",
         "model_index.json names a component whose folder or config file does not exist.", ExitCode.UNSUPPORTED),
    Rule("HFA104", "config-mismatch", ERROR, "Configs disagree with model_index.json",
         "A component config names a different class than model_index.json does.", ExitCode.UNSUPPORTED),
    Rule("HFA105", "invalid-unet-config", ERROR, "The unet config is unusable",
         "The unet is not a UNet2DModel, its sizes or channel counts are invalid or beyond hfaudit's "
         "limits, or the config does not build a unet.", ExitCode.UNSUPPORTED),
    Rule("HFA106", "invalid-scheduler-config", ERROR, "The scheduler config is unusable",
         "The scheduler config does not build a scheduler, has under 2 or too many training timesteps, "
         "a noise schedule outside (0, 1), or predicts something other than the noise.", ExitCode.UNSUPPORTED),
    Rule("HFA107", "no-weights", ERROR, "A component has no weight files",
         "The folder of a weighted component (unet, autoencoder, text encoder) holds neither safetensors nor "
         "pickle weights.", ExitCode.UNSUPPORTED),
    Rule("HFA108", "lfs-pointer", ERROR, "Git LFS pointer instead of the file",
         "The file is a Git LFS pointer: the folder was checked out without Git LFS, so the model's files are "
         "not there. Run `git lfs pull` in the clone (in GitHub Actions: `lfs: true` on actions/checkout).",
         ExitCode.NOT_FOUND),
    Rule("HFA109", "component-not-loaded", NOTE, "A component hfaudit does not need",
         "The pipeline names a component an audit never uses (a safety checker, a feature extractor): it was "
         "neither downloaded nor loaded, and nothing about it was checked."),
    Rule("HFA110", "invalid-component-config", ERROR, "An autoencoder, text encoder or tokenizer config is unusable",
         "Its sizes are invalid or beyond hfaudit's limits, it does not build the model, or the tokenizer's "
         "files are missing or unreadable.", ExitCode.UNSUPPORTED),
    Rule("HFA200", "corrupt-safetensors", ERROR, "Corrupt or tampered safetensors file",
         "The file is truncated, or its header is malformed or lies about dtypes, shapes or offsets.",
         ExitCode.UNSAFE, 7.0),
    Rule("HFA201", "non-finite-weights", ERROR, "Weights hold NaN or Inf",
         "A floating-point tensor holds NaN or infinite values.", ExitCode.UNSAFE, 5.0),
    Rule("HFA202", "weights-mismatch", ERROR, "Weights do not match their component",
         "A tensor's dtype is not a floating-point type, a tensor the component's config needs is missing, or "
         "a shard index names a shard that is not there.", ExitCode.UNSAFE, 5.0),
    Rule("HFA203", "special-file", ERROR, "A file of the model is not a regular file",
         "A FIFO, device, socket or dangling link sits where a file should be. hfaudit never opens such "
         "entries (reading a FIFO blocks, a device never ends).", ExitCode.UNSAFE, 5.0),
    Rule("HFA210", "pickle-only", ERROR, "Pickle-only checkpoint",
         "The weights exist only as pickle, which can run code when loaded. hfaudit loads them only with "
         "--allow-pickle, after a clean picklescan, with weights_only=True. Convert them to safetensors.",
         ExitCode.UNSAFE, 5.0),
    Rule("HFA211", "pickle-dangerous-global", ERROR, "Pickle imports a dangerous callable",
         "Unpickling this file would import (and may call) something outside the tensor-rebuilding allow-list "
         "(picklescan, strict): it can run code on the machine that loads it. Never load it.",
         ExitCode.UNSAFE, 9.8),
    Rule("HFA212", "pickle-unscannable", ERROR, "Pickle file cannot be scanned",
         "picklescan could not parse the file, so it cannot be shown safe.", ExitCode.UNSAFE, 7.0),
    Rule("HFA213", "pickle-not-scanned", NOTE, "Pickle weights present but not downloaded",
         "Pickle files in a Hub repo are not downloaded without --allow-pickle, so they were not scanned."),
    Rule("HFA214", "pickle-present", NOTE, "Pickle weights present",
         "Pickle weights sit beside the safetensors; they scanned clean (picklescan, strict) and were not loaded."),
)
RULES: dict[str, Rule] = {r.id: r for r in _RULE_LIST}
"""Every rule hfaudit reports, by id: the SARIF ``tool.driver.rules`` and the exit-code mapping."""

_BLOCKING_PRIORITY = (ExitCode.UNSAFE, ExitCode.NOT_FOUND, ExitCode.UNSUPPORTED)
"""When several findings block, unsafe wins: 'do not load this' matters more than 'cannot audit it'; and
'the files are not there' (LFS pointers) comes before what the missing files make look unsupported."""
_BLOCKING_ERRORS: dict[ExitCode, type[HfAuditError]] = {
    ExitCode.UNSAFE: UnsafeCheckpointError, ExitCode.NOT_FOUND: RepoNotFoundError,
    ExitCode.UNSUPPORTED: UnsupportedModelError,
}


@dataclass
class Finding:
    """One static finding about a file of the model repo (also a SARIF result on that file)."""

    rule: str
    """A key of :data:`RULES`, e.g. ``HFA211``."""
    level: str
    """``error`` | ``warning`` | ``note``."""
    message: str
    path: str
    """The file it is about, relative to the repo root, POSIX separators."""

    @property
    def spec(self) -> Rule:
        """The rule this finding belongs to."""
        return RULES[self.rule]

    @property
    def blocks(self) -> bool:
        """True when the audit must stop here (an error of a rule that carries an exit code)."""
        return self.level == ERROR and self.spec.exit_code is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the rule's name for readers without the rule table."""
        return {**asdict(self), "rule_name": self.spec.name}


@dataclass
class WeightFiles:
    """The weight files of one component folder (e.g. ``unet/``)."""

    safetensors: list[Path] = field(default_factory=list)
    pickle: list[Path] = field(default_factory=list)


@dataclass
class StaticReport:
    """What the static checks found, and which weight files a loader may use."""

    findings: list[Finding]
    pipeline_class: str | None = None
    weights: dict[str, list[str]] = field(default_factory=dict)
    """Weight files per component folder (``""`` for the root), as repo-relative paths."""
    component_weights: dict[str, str] = field(default_factory=dict)
    """Per weighted component (``unet``, ``vae``, ``text_encoder``...): the repo-relative file to load (the
    shard index of a sharded checkpoint), when the checks allow loading it."""
    component_files: dict[str, list[str]] = field(default_factory=dict)
    """Per weighted component: every weight file the loader reads (each shard of a sharded checkpoint)."""
    index: dict[str, Any] | None = None
    """``model_index.json`` as parsed by the checks: the loader uses this, never a second read."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each component's parsed config, by component name (``unet``, ``scheduler``, ``tokenizer``'s
    ``tokenizer_config.json``...)."""
    parameters: dict[str, int] = field(default_factory=dict)
    """Parameters of each weighted component its config describes (built on the meta device: nothing allocated)."""
    tensors: dict[str, dict[str, list[int]]] = field(default_factory=dict)
    """Every tensor each weighted component's state dict holds, with its shape: what the weights must provide."""
    lfs_pointers: set[str] = field(default_factory=set)
    """Files that are Git LFS pointers (HFA108): no other check reads them."""

    @property
    def layout(self) -> Layout | None:
        """What the audit needs of this pipeline class (None: not one hfaudit audits)."""
        return LAYOUTS.get(self.pipeline_class or "")

    @property
    def unet_weights(self) -> str | None:
        """The unet file to load (see ``component_weights``)."""
        return self.component_weights.get("unet")

    @property
    def unet_files(self) -> list[str]:
        """Every weight file the loader reads for the unet."""
        return self.component_files.get("unet", [])

    @property
    def unet_parameters(self) -> int | None:
        """Parameters of the unet its config describes."""
        return self.parameters.get("unet")

    @property
    def blocking(self) -> list[Finding]:
        """The findings that stop the audit."""
        return [f for f in self.findings if f.blocks]

    def raise_for_blocking(self) -> None:
        """Raise the error of the most serious blocking finding, with every finding attached.

        Raises:
            UnsafeCheckpointError: a corrupt or tampered safetensors file, NaN/Inf weights, a
                pickle-only checkpoint without opt-in, or a flagged or unscannable pickle.
            UnsupportedModelError: not a (supported) pipeline, or broken or disagreeing configs.
            RepoNotFoundError: files of the model are Git LFS pointers (a checkout without Git LFS).
        """
        blocking = self.blocking
        if not blocking:
            return
        for code in _BLOCKING_PRIORITY:
            first = next((f for f in blocking if f.spec.exit_code == code), None)
            if first is not None:
                break
        else:  # pragma: no cover - every blocking rule is listed in _BLOCKING_PRIORITY
            first = blocking[0]
        cls = _BLOCKING_ERRORS.get(first.spec.exit_code, UnsupportedModelError)  # type: ignore[arg-type]
        more = len(blocking) - 1
        suffix = f" (and {more} more blocking finding{'s' if more > 1 else ''}; see the report)" if more else ""
        raise cls(first.message + suffix, findings=self.findings)


# ------------------------------------------------------------------------------- the entry point
def static_checks(
    root: Path,
    files: Iterable[str] | None = None,
    *,
    allow_pickle: bool = False,
    supported_pipelines: Iterable[str] = (),
    check_values: bool = True,
) -> StaticReport:
    """Check a pipeline folder without loading (or unpickling) anything.

    Never raises for what the files hold: every problem is a finding (call
    :meth:`StaticReport.raise_for_blocking`). Reads only; writes nothing.

    Args:
        root: The pipeline folder on disk (a local folder or a Hub snapshot).
        files: Every file of the repo (relative POSIX paths), also those not downloaded (pickle
            weights of a Hub repo without ``allow_pickle``); default: what is on disk.
        allow_pickle: The user opted in to loading pickle weights (after a clean scan).
        supported_pipelines: Pipeline class names the detector audits; empty means any.
        check_values: Also read every tensor each weighted component loads and flag NaN/Inf.
    """
    on_disk, specials = _walk(root)
    all_files = sorted(set(files) | set(on_disk)) if files is not None else on_disk
    all_files = [f for f in all_files if not f.startswith(_IGNORED_DIRS)]
    report = StaticReport(findings=[])
    for rel, kind in specials:
        report.findings.append(Finding("HFA203", ERROR, f"{rel} is a {kind}, not a regular file: refused "
                                       "without opening it", rel))
    for rel in all_files:
        if rel.endswith((".safetensors", *PICKLE_SUFFIXES)):
            folder = str(PurePosixPath(rel).parent)
            report.weights.setdefault("" if folder == "." else folder, []).append(rel)

    # A checkout without Git LFS leaves pointers where weights (and often configs) should be: the
    # model is not there, which no header or pickle check may report as tampering.
    for rel in on_disk:
        if rel.endswith((".safetensors", ".json", *PICKLE_SUFFIXES)) and is_lfs_pointer(root / rel):
            report.lfs_pointers.add(rel)
            report.findings.append(Finding("HFA108", ERROR, f"{rel} is a Git LFS pointer, not the file itself: the "
                                           "model was checked out without Git LFS; run `git lfs pull` in it (in "
                                           "GitHub Actions: `lfs: true` on actions/checkout)", rel))

    # Every file's bytes are checked, whatever the configs say: a malicious pickle is a finding
    # even in a folder no config mentions.
    for rel in all_files:
        path = root / rel
        if rel in report.lfs_pointers:
            continue
        if rel.endswith(".safetensors") and rel in on_disk:
            report.findings.extend(safetensors_findings(path, rel, check_values=False))
        elif rel.endswith(PICKLE_SUFFIXES) and rel in on_disk:
            report.findings.extend(scan_pickle(path, rel))

    index = _check_index(root, report, supported_pipelines)
    if index is not None:
        report.index = index
        _check_components(root, index, report)
        _note_pickles_not_downloaded(all_files, on_disk, report)
        for name in _weighted(index, report.layout):
            _check_weights(root, name, set(all_files), set(on_disk), report, allow_pickle=allow_pickle,
                           check_values=check_values)
    return report


# ------------------------------------------------------------------------------------- configs
def _read_json(root: Path, rel: str, report: StaticReport) -> dict[str, Any] | None:
    """Parse a JSON object (bounded, regular files only), or add a finding (HFA101) and return None.
    An LFS pointer (already reported as HFA108) is None without a second finding."""
    if rel in report.lfs_pointers:
        return None
    try:
        data = read_json(root / rel)
    except UnreadableFile as exc:
        report.findings.append(Finding("HFA101", ERROR, f"{rel} {exc.reason}", rel))
        return None
    if not isinstance(data, dict):
        report.findings.append(Finding("HFA101", ERROR, f"{rel} is not a JSON object", rel))
        return None
    return data


def _check_index(root: Path, report: StaticReport, supported: Iterable[str]) -> dict[str, Any] | None:
    """``model_index.json`` exists, parses and names a supported pipeline with a unet and a scheduler."""
    if not (root / "model_index.json").is_file():
        report.findings.append(Finding("HFA100", ERROR, f"{root.name or root}: not a diffusers pipeline "
                                       "(no model_index.json)", "model_index.json"))
        return None
    index = _read_json(root, "model_index.json", report)
    if index is None:
        return None
    cls = index.get("_class_name")
    report.pipeline_class = cls if isinstance(cls, str) else None
    refusal = index_refusal(index, supported)
    if refusal is not None:
        report.findings.append(refusal)
        return None
    return index


def index_refusal(index: Any, supported: Iterable[str] = SUPPORTED_PIPELINES) -> Finding | None:
    """Why a parsed ``model_index.json`` names no pipeline hfaudit audits (a blocking finding), or None.

    The one place of that rule: the static checks use it, and a Hub download asks it before it
    fetches any weights, so a refused repo costs one small file. A supported class must name each
    component its layout needs (:data:`LAYOUTS`), with a class it accepts: what is there but of the
    wrong kind is reported before what is missing. ``supported`` empty means any class (then a unet
    and a scheduler).
    """
    if not isinstance(index, dict):
        return Finding("HFA101", ERROR, "model_index.json is not a JSON object", "model_index.json")
    cls = index.get("_class_name")
    supported = frozenset(supported)
    if not isinstance(cls, str):
        return Finding("HFA101", ERROR, f"model_index.json has no pipeline class name "
                       f"(_class_name is {type(cls).__name__}, not a string)", "model_index.json")
    if supported and cls not in supported:
        return Finding("HFA102", ERROR, f"pipeline type {cls} is not supported yet; hfaudit audits "
                       f"{audited_classes(supported)}", "model_index.json")
    layout = LAYOUTS.get(cls)
    needs = layout.needs if layout is not None else (("unet", None), _SCHEDULER)
    for comp, accepted in needs:
        found = _component(index, comp)
        if found is not None and accepted is not None and found[1] not in accepted:
            return Finding("HFA102", ERROR, f"{cls}'s {comp} is a {found[1]}, not a {' or '.join(sorted(accepted))}: "
                           f"hfaudit audits {cls} only with that {comp}", "model_index.json")
    for comp, _accepted in needs:
        if not _component(index, comp):
            return Finding("HFA103", ERROR, f"{cls} has no {comp} component in model_index.json", "model_index.json")
    return None


def audited_classes(supported: Iterable[str] = SUPPORTED_PIPELINES) -> str:
    """The pipeline classes of ``supported`` hfaudit audits, by kind, for one-line messages."""
    kinds = {PIXEL: "unconditional pixel-space", LATENT: "unconditional latent", TEXT_TO_IMAGE: "text-to-image"}
    parts = []
    for kind, words in kinds.items():
        names = sorted(c for c in supported if c in LAYOUTS and LAYOUTS[c].kind == kind)
        if names:
            parts.append(f"{words} pipelines ({', '.join(names)})" if len(names) > 1 else f"{words} {names[0]}")
    return "; ".join(parts) or "no pipeline"


def components(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The components ``model_index.json`` names: folder name -> ``(library, class)`` (null ones left out)."""
    return {name: comp for name in sorted(index) if not name.startswith("_")
            and (comp := _component(index, name)) is not None}


def needed_components(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The components an audit reads (:func:`components` less its layout's unused ones): what a Hub
    download fetches and the static checks check."""
    layout = LAYOUTS.get(index.get("_class_name") if isinstance(index.get("_class_name"), str) else "")
    unused = layout.unused if layout is not None else frozenset()
    return {name: comp for name, comp in components(index).items() if name not in unused}


def _component(index: dict[str, Any], name: str) -> tuple[str, str] | None:
    """``(library, class)`` of a component of ``model_index.json``, or None if absent or null."""
    value = index.get(name)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


def _weighted(index: dict[str, Any], layout: Layout | None) -> list[str]:
    """The components whose weights load: those of the layout with a model class (the unet alone for a
    class without a layout, as before layouts)."""
    if layout is None:
        return ["unet"]
    found = components(index)
    return [name for name, _accepted in layout.needs if name in found and found[name][1] in MODEL_LIBRARIES]


def _check_components(root: Path, index: dict[str, Any], report: StaticReport) -> None:
    """Each component folder and config exists, parses, and names the class model_index.json names."""
    add = report.findings.append
    needed = needed_components(index)
    for name, (_lib, cls) in components(index).items():
        if name not in needed:
            add(Finding("HFA109", NOTE, f"{name} ({cls}) was neither downloaded nor loaded: an audit of "
                        f"{index['_class_name']} does not need it", "model_index.json"))
            continue
        if not (root / name).is_dir():
            add(Finding("HFA103", ERROR, f"model_index.json names a {name} ({cls}) but there is no {name}/ folder",
                        "model_index.json"))
            continue
        if cls in TOKENIZER_CLASSES:
            _check_tokenizer(root, name, cls, report)
            continue
        rel = f"{name}/{'scheduler_config.json' if cls.endswith('Scheduler') else 'config.json'}"
        if not (root / rel).is_file():
            add(Finding("HFA103", ERROR, f"{name} config missing: {rel} not found", rel))
            continue
        cfg = _read_json(root, rel, report)
        if cfg is None:
            continue
        cfg_cls = cfg.get("_class_name")
        if cfg_cls is not None and not isinstance(cfg_cls, str):
            add(Finding("HFA101", ERROR, f"{rel}: _class_name is a {type(cfg_cls).__name__}, not a string", rel))
            continue
        if cfg_cls not in (None, cls):
            add(Finding("HFA104", ERROR, f"{rel} describes a {cfg_cls} but model_index.json says "
                        f"{name} is a {cls}", rel))
            continue
        report.configs[name] = cfg
        if name == "unet":
            _check_unet_config(cls, cfg, rel, report)
        elif name == "scheduler":
            _check_scheduler_config(cfg, rel, report)
        elif cls in MODEL_LIBRARIES and name in _weighted(index, report.layout):
            _check_component_config(name, cls, cfg, rel, report)


def _check_tokenizer(root: Path, name: str, cls: str, report: StaticReport) -> None:
    """A tokenizer folder: every vocabulary and config file a regular file within the config size limit
    (JSON ones objects), the files a CLIP tokenizer loads from, and no other tokenizer class named."""
    add = report.findings.append
    folder = root / name
    present = sorted(p.name for p in folder.iterdir() if p.name.endswith(TOKENIZER_SUFFIXES))
    for file_name in present:
        rel = f"{name}/{file_name}"
        if file_name.endswith(".json"):
            if _read_json(root, rel, report) is None:
                return
        elif rel not in report.lfs_pointers:
            try:
                read_bytes(root / rel, MAX_CONFIG_BYTES).decode("utf-8")
            except UnreadableFile as exc:
                add(Finding("HFA110", ERROR, f"{rel} {exc.reason}", rel))
                return
            except UnicodeDecodeError:
                add(Finding("HFA110", ERROR, f"{rel} is not UTF-8 text", rel))
                return
    if "tokenizer.json" not in present and not {"vocab.json", "merges.txt"} <= set(present):
        add(Finding("HFA110", ERROR, f"{name} has neither tokenizer.json nor vocab.json and merges.txt: a {cls} "
                    "cannot load", f"{name}/"))
        return
    rel = f"{name}/tokenizer_config.json"
    cfg = _read_json(root, rel, report) if "tokenizer_config.json" in present else {}
    if cfg is None:
        return
    tok_cls = cfg.get("tokenizer_class")
    if tok_cls is not None and tok_cls not in TOKENIZER_CLASSES:
        add(Finding("HFA104", ERROR, f"{rel} describes a {_short(tok_cls)} but model_index.json says {name} is a "
                    f"{cls}", rel))
        return
    report.configs[name] = cfg


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_unet_config(cls: str, cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    """A unet config (``UNet2DModel``, or Stable Diffusion's ``UNet2DConditionModel``) within hfaudit's
    limits (``hfaudit.limits``) that builds a unet.

    The sizes are checked before the unet is built, and it is built on the meta device (no memory),
    so that a config asking for a 100,000-pixel image or a million layers costs nothing to refuse.
    """
    add = report.findings.append

    def bad(message: str) -> None:
        add(Finding("HFA105", ERROR, f"unet config: {message}", rel))

    if cls not in ("UNet2DModel", "UNet2DConditionModel"):
        add(Finding("HFA105", ERROR, f"unet is a {cls}, not a UNet2DModel", rel))
        return
    problem = _model_config_problem(cfg, unet=True)
    if problem is not None:
        return bad(problem)
    _build_on_meta("unet", cls, cfg, report, bad)


def _check_component_config(name: str, cls: str, cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    """An autoencoder or text encoder config within hfaudit's limits that builds its model (on the
    meta device, after the sizes are checked, as for the unet)."""
    def bad(message: str) -> None:
        report.findings.append(Finding("HFA110", ERROR, f"{name} config: {message}", rel))

    problem = _text_config_problem(cfg) if MODEL_LIBRARIES[cls] == "transformers" else _model_config_problem(cfg)
    if problem is not None:
        return bad(problem)
    _build_on_meta(name, cls, cfg, report, bad)


def _model_config_problem(cfg: dict[str, Any], unet: bool = False) -> str | None:
    """Why a diffusers unet or autoencoder config is beyond hfaudit's limits, or None."""
    size = cfg.get("sample_size")
    sizes = [size] if _int(size) else list(size) if isinstance(size, (list, tuple)) and len(size) == 2 else []
    if not sizes or any(not _int(s) or s <= 0 for s in sizes):
        return f"invalid sample_size ({size!r}): images need a positive size"
    if max(sizes) > limits.MAX_SAMPLE_SIZE:
        return f"sample_size {size!r} is beyond hfaudit's limit of {limits.MAX_SAMPLE_SIZE} pixels"
    for key in ("in_channels", "out_channels", *(() if unet else ("latent_channels",))):
        value = cfg.get(key, 3)
        if not _int(value) or not 0 < value <= limits.MAX_CHANNELS:
            return f"invalid {key} ({value!r}; 1 to {limits.MAX_CHANNELS})"
    chans = cfg.get("block_out_channels", (224, 448, 672, 896))
    if (not isinstance(chans, (list, tuple)) or not 0 < len(chans) <= limits.MAX_BLOCKS
            or any(not _int(c) or not 0 < c <= limits.MAX_BLOCK_CHANNELS for c in chans)):
        return (f"invalid block_out_channels ({_short(chans)}; 1 to {limits.MAX_BLOCKS} blocks of 1 to "
                f"{limits.MAX_BLOCK_CHANNELS} channels)")
    for key in ("down_block_types", "up_block_types"):
        types = cfg.get(key)
        if types is not None and (not isinstance(types, (list, tuple)) or len(types) != len(chans)
                                  or not all(isinstance(t, str) for t in types)):
            return f"{key} ({_short(types)}) must name one block type per entry of block_out_channels"
    layers = cfg.get("layers_per_block", 2)
    per_block = list(layers) if isinstance(layers, (list, tuple)) and len(layers) == len(chans) else [layers]
    if not all(_int(n) and 0 < n <= limits.MAX_LAYERS_PER_BLOCK for n in per_block):
        return f"invalid layers_per_block ({_short(layers)}; 1 to {limits.MAX_LAYERS_PER_BLOCK})"
    factor = 2 ** (len(chans) - 1)
    if unet and any(s % factor for s in sizes):
        return f"sample_size {size!r} is not divisible by {factor}, the downsampling of its {len(chans)} blocks"
    return None


def _text_config_problem(cfg: dict[str, Any]) -> str | None:
    """Why a CLIP text encoder config is beyond hfaudit's limits, or None: its parameter count is
    bounded from the sizes before anything is built."""
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    values = {k: cfg.get(k) for k in keys}
    bad = next((k for k, v in values.items() if not _int(v) or v <= 0), None)
    if bad is not None:
        return f"invalid {bad} ({_short(values[bad])})"
    h, layers = values["hidden_size"], values["num_hidden_layers"]
    if layers > limits.MAX_TEXT_LAYERS:
        return f"{layers} layers, beyond hfaudit's limit of {limits.MAX_TEXT_LAYERS}"
    if h % values["num_attention_heads"]:
        return f"hidden_size {h} is not divisible by num_attention_heads {values['num_attention_heads']}"
    estimate = (values["vocab_size"] + values["max_position_embeddings"]) * h \
        + layers * (4 * h * h + 2 * h * values["intermediate_size"])
    if estimate > limits.MAX_PARAMETERS:
        return f"about {estimate:,} parameters, beyond hfaudit's limit of {limits.MAX_PARAMETERS:,}"
    return None


def model_class(cls: str) -> type:
    """The class named ``cls`` in the library that loads it (:data:`MODEL_LIBRARIES`)."""
    import importlib

    return getattr(importlib.import_module(MODEL_LIBRARIES[cls]), cls)


def build_from_config(cls: str, cfg: dict[str, Any]) -> Any:
    """A randomly initialised ``cls`` from its parsed config (on the current default device), as its
    library's ``from_pretrained`` would build it before loading the weights."""
    model_cls = model_class(cls)
    if MODEL_LIBRARIES[cls] == "transformers":
        return model_cls(model_cls.config_class.from_dict(cfg))
    return model_cls.from_config(cfg)


def _build_on_meta(name: str, cls: str, cfg: dict[str, Any], report: StaticReport, bad: Any) -> None:
    """Build the component on the meta device: its parameter count, within ``limits.MAX_PARAMETERS``,
    and the tensors its weights must hold."""
    try:
        import torch

        with torch.device("meta"):
            model = build_from_config(cls, cfg)
        n_params = sum(p.numel() for p in model.parameters())
    except Exception as exc:  # noqa: BLE001 - diffusers and transformers raise many types for configs they cannot build
        return bad(f"does not build a {cls} ({type(exc).__name__}: {first_line(exc)})")
    if n_params > limits.MAX_PARAMETERS:
        return bad(f"{n_params:,} parameters, beyond hfaudit's limit of {limits.MAX_PARAMETERS:,}")
    report.parameters[name] = n_params
    report.tensors[name] = {k: list(v.shape) for k, v in model.state_dict().items()}


def _check_scheduler_config(cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    """The schedule must be a diffusion schedule (every beta in (0, 1)) that predicts the noise.

    Built as a ``DDPMScheduler`` (the formulas every sampler shares), after its size is checked:
    a billion training timesteps would allocate gigabytes before any error.
    """
    from diffusers import DDPMScheduler

    add = report.findings.append
    n_train = cfg.get("num_train_timesteps", 1000)
    if isinstance(n_train, float) and n_train.is_integer():
        n_train = int(n_train)
    if not _int(n_train):
        add(Finding("HFA106", ERROR, f"scheduler config has an invalid num_train_timesteps ({_short(n_train)})", rel))
        return
    if n_train < 2:
        add(Finding("HFA106", ERROR, f"scheduler config has {n_train} training timesteps (at least 2 needed)", rel))
        return
    if n_train > limits.MAX_TRAIN_TIMESTEPS:
        add(Finding("HFA106", ERROR, f"scheduler config has {n_train} training timesteps, beyond hfaudit's limit "
                    f"of {limits.MAX_TRAIN_TIMESTEPS}", rel))
        return
    trained = cfg.get("trained_betas")
    if trained is not None and (not isinstance(trained, (list, tuple)) or len(trained) != n_train):
        add(Finding("HFA106", ERROR, f"scheduler config's trained_betas must list {n_train} numbers", rel))
        return
    try:
        sched = DDPMScheduler.from_config(cfg)
        betas = sched.betas.double()
        abar = sched.alphas_cumprod.double()
    except Exception as exc:  # noqa: BLE001 - diffusers raises several types for bad configs
        add(Finding("HFA106", ERROR, f"scheduler config is unusable ({type(exc).__name__}: {first_line(exc)})", rel))
        return
    if betas.numel() != n_train or not bool(((betas > 0) & (betas < 1)).all()) or not bool((abar[-1] > 0)):
        lo, hi = float(betas.min()), float(betas.max())
        add(Finding("HFA106", ERROR, f"scheduler config's noise schedule is not a diffusion schedule: betas run "
                    f"{lo:g} to {hi:g}, each must lie in (0, 1)", rel))
        return
    pred = cfg.get("prediction_type", "epsilon")
    # A text-to-image audit only samples, through the schedulers that read prediction_type themselves
    # (Stable Diffusion 2.x's 768 models predict v); the unconditional searches assume epsilon.
    text_to_image = report.layout is not None and report.layout.kind == TEXT_TO_IMAGE
    allowed = ("epsilon", "v_prediction") if text_to_image else ("epsilon",)
    if pred not in allowed:
        add(Finding("HFA106", ERROR, f"scheduler prediction_type {_short(pred)} is not supported yet (epsilon only; "
                    "v_prediction for text-to-image pipelines)", rel))


# ------------------------------------------------------------------------------------- weights
def weight_files(folder: Path) -> WeightFiles:
    """List the safetensors and pickle weight files directly inside ``folder``."""
    found = WeightFiles()
    if folder.is_dir():
        for p in sorted(folder.iterdir()):
            if p.suffix == ".safetensors":
                found.safetensors.append(p)
            elif p.suffix in PICKLE_SUFFIXES:
                found.pickle.append(p)
    return found


def _preferred(candidates: list[str], stem: str) -> str:
    """The file ``from_pretrained`` would pick: the canonical name, not a variant (``.fp16``)."""
    return next((c for c in candidates if PurePosixPath(c).stem == stem), candidates[0])


def _note_pickles_not_downloaded(all_files: Iterable[str], on_disk: Iterable[str], report: StaticReport) -> None:
    """A note per pickle file of the repo that is not on disk (a Hub repo without ``allow_pickle``)."""
    on_disk = set(on_disk)
    for rel in sorted(f for f in all_files if f.endswith(PICKLE_SUFFIXES) and f not in on_disk):
        report.findings.append(Finding("HFA213", NOTE, f"{rel}: pickle weights in the repo were not downloaded or "
                                       "scanned (pass --allow-pickle to scan them)", rel))


def _check_weights(root: Path, name: str, all_files: set[str], on_disk: set[str], report: StaticReport, *,
                   allow_pickle: bool, check_values: bool) -> None:
    """Decide which files of component ``name`` may load (exactly those its library's ``from_pretrained``
    reads), check all of them, and flag pickle-only checkpoints."""
    add = report.findings.append
    cls = (_component(report.index or {}, name) or ("", "UNet2DModel"))[1]
    st_stem, pk_stem = WEIGHT_STEMS[MODEL_LIBRARIES.get(cls, "diffusers")]
    config_rel = f"{name}/config.json"
    inside = sorted(f for f in all_files if PurePosixPath(f).parent == PurePosixPath(name))
    st = [f for f in inside if f.endswith(".safetensors")]
    pk = [f for f in inside if f.endswith(PICKLE_SUFFIXES)]
    flagged = {f.path for f in report.findings if f.level == ERROR}
    shard_index = f"{name}/{st_stem}.safetensors.index.json"
    if shard_index in all_files or st:
        loaded = _safetensors_to_load(root, name, st_stem, all_files, on_disk, st, report)
        if loaded is None:
            return
        if not any(f in flagged for f in loaded):
            problem = _coverage_problem(root, name, cls, loaded, report.tensors.get(name, {}), shard_index)
            if problem is not None:
                add(problem)
                return
            for rel in loaded:
                problem = _dtype_problem(root / rel, rel, name, cls)
                if problem is None and check_values:
                    problem = next(iter(safetensors_findings(root / rel, rel, check_values=True,
                                                             check_header=False)), None)
                if problem is not None:
                    add(problem)
                    return
        for p in pk:
            if p in on_disk and p not in flagged:
                add(Finding("HFA214", NOTE, f"{p}: pickle weights beside the safetensors scanned clean "
                            "(picklescan, strict); they were not loaded", p))
        report.component_files[name] = loaded
        report.component_weights[name] = shard_index if shard_index in all_files else loaded[0]
        return
    if not pk:
        add(Finding("HFA107", ERROR, f"{name} has no weight files (no .safetensors, no pickle)", config_rel))
        return
    rel = _preferred(pk, pk_stem)
    if rel in report.lfs_pointers:
        return  # its HFA108 finding blocks: the weights are not there to judge
    if not allow_pickle:
        add(Finding("HFA210", ERROR, f"{rel}: pickle-only checkpoint; hfaudit loads safetensors only (pass "
                    "--allow-pickle to scan it with picklescan and load it with weights_only=True)", rel))
        return
    if rel not in on_disk:
        add(Finding("HFA212", ERROR, f"{rel}: pickle weights were not downloaded, so they cannot be scanned", rel))
        return
    if rel in flagged:
        return  # its scan finding already blocks
    add(Finding("HFA210", NOTE, f"{rel}: pickle-only checkpoint, scanned clean (picklescan, strict) and loaded "
                "with weights_only=True because of --allow-pickle", rel))
    report.component_weights[name] = rel
    report.component_files[name] = [rel]


def _safetensors_to_load(root: Path, name: str, stem: str, all_files: set[str], on_disk: set[str], st: list[str],
                         report: StaticReport) -> list[str] | None:
    """The safetensors files ``from_pretrained`` reads in folder ``name``: every shard of the index when
    there is one, else the canonical file. None (with a finding) when they are not all there."""
    add = report.findings.append
    single, shard_index = f"{name}/{stem}.safetensors", f"{name}/{stem}.safetensors.index.json"
    if shard_index not in all_files:
        if single in all_files:
            return [single]
        add(Finding("HFA107", ERROR, f"{name} has no {PurePosixPath(single).name} (only "
                    f"{', '.join(PurePosixPath(f).name for f in st[:3])}); hfaudit loads the default variant",
                    f"{name}/config.json"))
        return None
    index = _read_json(root, shard_index, report) if shard_index in on_disk else None
    weight_map = index.get("weight_map") if index is not None else None
    if not isinstance(weight_map, dict) or not weight_map:
        if index is not None or shard_index not in on_disk:
            add(Finding("HFA202", ERROR, f"{shard_index} has no weight_map naming the shards", shard_index))
        return None
    shards = sorted({v if isinstance(v, str) else "" for v in weight_map.values()})
    for shard in shards:
        if (not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", "..")
                or not shard.endswith(".safetensors")):
            add(Finding("HFA202", ERROR, f"{shard_index} names a shard {_short(shard)} that is not a safetensors "
                        "file beside it", shard_index))
            return None
        if f"{name}/{shard}" not in on_disk:
            add(Finding("HFA202", ERROR, f"{shard_index} names a shard {name}/{shard} that is not there", shard_index))
            return None
    return [f"{name}/{shard}" for shard in shards]


_LEGACY_ATTENTION_NAMES = ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                           (".to_out.0.", ".proj_attn."))
"""Attention weights of older diffusers checkpoints (``google/ddpm-cifar10-32``, Stable Diffusion's
autoencoder) under the names ``from_pretrained`` still converts: a tensor found under its old name is present."""
_TRANSFORMERS_PREFIXES = {"CLIPTextModel": "text_model."}
"""The submodule older transformers nested a class's weights under, which newer releases map away:
a tensor found under the prefixed name is present."""


def _stored_names(cls: str, key: str) -> list[str]:
    """The names under which a checkpoint may store the tensor the model calls ``key``."""
    if MODEL_LIBRARIES.get(cls) == "transformers":
        prefix = _TRANSFORMERS_PREFIXES.get(cls, "")
        return [key] + ([prefix + key] if prefix and not key.startswith(prefix) else [])
    return [key] + [key.replace(new, old) for new, old in _LEGACY_ATTENTION_NAMES if new in key]


def _coverage_problem(root: Path, name: str, cls: str, loaded: list[str], expected: dict[str, list[int]],
                      shard_index: str) -> Finding | None:
    """Every tensor the component's config needs is in the weight files, with its shape.

    A missing tensor is not an error to every loader: some versions initialise it at random and go
    on, which would audit a model that is not the one published.
    """
    if not expected:
        return None
    found: dict[str, list[int]] = {}
    for rel in loaded:
        try:
            header = _read_header(root / rel)[0]
        except (UnreadableFile, ValueError):
            return None  # the header check already reported it
        found.update({k: v.get("shape") for k, v in header.items() if k != "__metadata__"})
    where = loaded[0] if len(loaded) == 1 else shard_index
    for key, shape in expected.items():
        names = _stored_names(cls, key)
        stored = next((n for n in names if n in found), None)
        if stored is None:
            return Finding("HFA202", ERROR, f"{where}: the weights lack tensor {key!r} that the {name} config needs",
                           where)
        have = found[stored]
        if list(have) != shape and not (stored != key and math.prod(have) == math.prod(shape)):
            return Finding("HFA202", ERROR, f"{where}: tensor {key!r} has shape {have}, the {name} config needs "
                           f"{shape}", where)
    return None


def _dtype_problem(path: Path, rel: str, name: str, cls: str) -> Finding | None:
    """A weight file whose header gives a tensor a non-floating-point dtype is tampered:
    ``from_pretrained`` would cast it silently into the float parameter (``_INTEGER_TENSORS`` aside)."""
    try:
        header = _read_header(path)[0]
    except (UnreadableFile, ValueError):
        return None  # the header check already reported it
    allowed = _INTEGER_TENSORS.get(cls, ())
    for key, info in header.items():
        if key != "__metadata__" and info.get("dtype") not in FLOAT_DTYPES and not key.endswith(allowed):
            return Finding("HFA202", ERROR, f"{rel}: tensor {key!r} is stored as {info.get('dtype')}, not a "
                           f"floating-point type: the file does not hold {name} weights (tampered header?)", rel)
    return None


def safetensors_findings(path: Path, rel: str | None = None, *, check_values: bool = True,
                         check_header: bool = True) -> list[Finding]:
    """Validate a safetensors file's header by hand and, optionally, that every value is finite.

    The header is parsed here first, as strictly as the Rust loader (types, lengths, dtypes, shapes,
    offsets inside the data, no overlaps, no unindexed bytes, no duplicate keys) and within
    ``MAX_HEADER_BYTES``, so that a lying header is reported as such instead of crashing a loader.
    Values are read one tensor at a time (memory-mapped), so memory stays at one tensor.
    """
    rel = rel or path.name
    try:
        if check_header:
            problem = _safetensors_header_problem(path)
            if problem:
                return [Finding("HFA200", ERROR, f"{rel}: {problem}", rel)]
        if check_values:
            open_regular_check(path)
            bad = _non_finite_tensor(path)
            if bad:
                return [Finding("HFA201", ERROR, f"{rel}: tensor {bad!r} holds NaN or Inf values", rel)]
    except UnreadableFile as exc:
        return [Finding("HFA203", ERROR, f"{rel} {exc.reason}", rel)]
    except OSError as exc:
        return [Finding("HFA200", ERROR, f"{rel}: cannot read the file ({exc.strerror or exc})", rel)]
    except Exception as exc:  # noqa: BLE001 - the Rust loader's own refusals (SafetensorError)
        return [Finding("HFA200", ERROR, f"{rel}: the safetensors loader refuses the file ({first_line(exc)})", rel)]
    return []


def open_regular_check(path: Path) -> None:
    """Raise ``UnreadableFile`` unless ``path`` is a regular file (opened without blocking)."""
    os.close(open_regular(path))


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"the header names {dup!r} twice")
    return dict(pairs)


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """``(header, header length, file size)`` of a safetensors file, read within ``MAX_HEADER_BYTES``.

    Raises:
        UnreadableFile: not a regular file.
        ValueError: a header that is not one (the message says why).
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        with os.fdopen(os.dup(fd), "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("corrupt safetensors file (shorter than its 8-byte header length)")
            (hlen,) = struct.unpack("<Q", raw)
            if hlen > size - 8:
                raise ValueError(f"corrupt safetensors file (header length {hlen} exceeds file size {size}): "
                                 "truncated or tampered")
            if hlen > MAX_HEADER_BYTES:
                raise ValueError(f"safetensors header of {hlen} bytes, beyond hfaudit's limit of {MAX_HEADER_BYTES}")
            text = fh.read(hlen)
    finally:
        os.close(fd)
    try:
        header = json.loads(text.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("corrupt safetensors file (header is not valid JSON)") from None
    except ValueError as exc:
        raise ValueError(f"corrupt safetensors file ({exc})") from None
    if not isinstance(header, dict):
        raise ValueError("corrupt safetensors file (header is not a JSON object)")
    return header, hlen, size


def _safetensors_header_problem(path: Path) -> str | None:
    try:
        header, hlen, size = _read_header(path)
    except ValueError as exc:
        return str(exc)
    if len(header) > MAX_TENSORS:
        return f"safetensors header indexes {len(header)} tensors, beyond hfaudit's limit of {MAX_TENSORS}"
    data_len = size - 8 - hlen
    spans: list[tuple[int, int, str]] = []
    for key, info in header.items():
        if key == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                return "corrupt safetensors header (__metadata__ must map strings to strings)"
            continue
        if not isinstance(info, dict):
            return f"corrupt safetensors header entry for {key!r}"
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(_int(d) for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(_int(o) for o in offsets)):
            return f"corrupt safetensors header entry for {key!r} (shape and offsets must be lists of integers)"
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPE_SIZES:
            return f"tensor {key!r} has unknown dtype {_short(dtype)}"
        if any(d < 0 for d in shape):
            return f"tensor {key!r} has a negative dimension {shape}"
        begin, end = offsets
        expected = SAFETENSORS_DTYPE_SIZES[dtype] * math.prod(shape)
        if not (0 <= begin <= end <= data_len) or end - begin != expected:
            return (f"safetensors header lies about tensor {key!r} (offsets {begin}..{end}, {expected} bytes "
                    f"expected, {data_len} bytes of data): truncated or tampered file")
        spans.append((begin, end, key))
    spans.sort()
    for (_b0, e0, k0), (b1, _e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            return f"safetensors tensors {k0!r} and {k1!r} overlap: tampered file"
    covered = max((e for _b, e, _k in spans), default=0)
    if covered != data_len:
        return f"safetensors file has {data_len - covered} bytes no tensor indexes: truncated or tampered file"
    return None


def _non_finite_tensor(path: Path) -> str | None:
    """The first floating-point tensor holding NaN or Inf, or None."""
    import torch
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        for key in fh.keys():
            t = fh.get_tensor(key)
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                return key
    return None


def check_safetensors(path: Path, check_values: bool = True) -> None:
    """Raise if a safetensors file is corrupt, tampered, or (optionally) holds NaN/Inf.

    Raises:
        UnsafeCheckpointError: the first problem found.
    """
    findings = safetensors_findings(path, path.name, check_values=check_values)
    if findings:
        raise UnsafeCheckpointError(findings[0].message, findings=findings)


# -------------------------------------------------------------------------------------- pickle
def scan_pickle(path: Path, rel: str | None = None) -> list[Finding]:
    """Scan one pickle file with picklescan, strictly: a finding per global outside its allow-list.

    Strict: every import that is not on picklescan's allow-list of tensor-rebuilding helpers is a
    finding, whether picklescan calls it dangerous or merely suspicious, so an exotic gadget (say
    ``pathlib.Path.write_text``) is caught, not only ``os.system``. hfaudit applies that rule itself
    rather than through picklescan's ``strict=`` flag (which promotes suspicious to dangerous, and
    exists only in releases that need Python 3.11): the verdict is the same with every supported
    picklescan. Nothing is unpickled. picklescan's own log lines are silenced: the findings carry
    the same facts.
    """
    from picklescan.scanner import scan_file_path

    rel = rel or path.name
    log = logging.getLogger("picklescan")
    saved = (log.level, log.propagate, log.disabled)
    log.disabled = True
    try:
        result = scan_file_path(str(path))
    except Exception as exc:  # noqa: BLE001 - a file that breaks the scanner is not shown safe
        return [Finding("HFA212", ERROR, f"{rel}: picklescan could not parse the file ({type(exc).__name__})", rel)]
    finally:
        log.level, log.propagate, log.disabled = saved
    findings: list[Finding] = []
    bad = sorted({f"{g.module}.{g.name}" for g in result.globals
                  if getattr(g.safety, "value", str(g.safety)).lower() in ("dangerous", "suspicious")})
    if bad:
        shown = ", ".join(bad[:4]) + (f" and {len(bad) - 4} more" if len(bad) > 4 else "")
        findings.append(Finding("HFA211", ERROR, f"{rel}: pickle imports {shown}: loading it can run code", rel))
    if result.scan_err:
        findings.append(Finding("HFA212", ERROR, f"{rel}: picklescan could not parse the whole file", rel))
    return findings


# ------------------------------------------------------------------------------------- helpers
def _walk(root: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """``(files, specials)`` under ``root``: regular files (links to them included, as in a Hub
    snapshot) as relative POSIX paths, and every other non-folder entry with what it is."""
    if not root.is_dir():
        return [], []
    files: list[str] = []
    specials: list[tuple[str, str]] = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if ".git" in rel.parts or p.is_dir():
            continue
        kind = kind_of(p)
        if kind is None:
            files.append(rel.as_posix())
        else:
            specials.append((rel.as_posix(), kind))
    return sorted(files), sorted(specials)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: hostile values can be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, at most 200 characters (for one-line errors)."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
