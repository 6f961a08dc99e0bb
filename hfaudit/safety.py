"""Static checks that run before any weights are loaded (docs/design.md section 4).

What a model repo holds is read, never executed: which weight files exist (safetensors vs pickle),
whether ``model_index.json`` and the component configs parse and agree with the folders, whether
every safetensors header is honest (lengths, dtypes, offsets inside the file, no overlaps) and its
values finite, and what every pickle file would import (picklescan, strict). Each problem is a
:class:`Finding` tied to a file of the repo, so it can become a SARIF result on that file.

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
from hfaudit.modelfiles import UnreadableFile, is_lfs_pointer, kind_of, open_regular, read_json

SUPPORTED_PIPELINES = frozenset({"DDPMPipeline", "DDIMPipeline", "PNDMPipeline"})
"""Pixel-space unconditional pipelines whose ``unet`` is a ``UNet2DModel``: what the detector audits.
Deciding from ``model_index.json`` alone (:func:`index_refusal`) lets a Hub download stop before the weights."""

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16"})
"""What a ``UNet2DModel`` holds: floating-point parameters only (no integer buffers)."""
MAX_HEADER_BYTES = 8 * 1024 * 1024
"""Largest safetensors JSON header read (the format allows 100 MB). A Stable Diffusion XL unet's
header is a few hundred kilobytes; a larger one is refused before it is parsed, so a hostile
header costs bounded time and memory."""
MAX_TENSORS = 100_000
"""Most tensors one safetensors file may index."""
UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
UNET_INDEX = "unet/diffusion_pytorch_model.safetensors.index.json"
"""What ``UNet2DModel.from_pretrained(..., use_safetensors=True)`` loads: the shard index when it
exists (then every shard it names), else the single file."""
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
         "hfaudit audits unconditional pixel-space pipelines whose unet is a UNet2DModel.", ExitCode.UNSUPPORTED),
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
         "The unet folder holds neither safetensors nor pickle weights.", ExitCode.UNSUPPORTED),
    Rule("HFA108", "lfs-pointer", ERROR, "Git LFS pointer instead of the file",
         "The file is a Git LFS pointer: the folder was checked out without Git LFS, so the model's files are "
         "not there. Run `git lfs pull` in the clone (in GitHub Actions: `lfs: true` on actions/checkout).",
         ExitCode.NOT_FOUND),
    Rule("HFA200", "corrupt-safetensors", ERROR, "Corrupt or tampered safetensors file",
         "The file is truncated, or its header is malformed or lies about dtypes, shapes or offsets.",
         ExitCode.UNSAFE, 7.0),
    Rule("HFA201", "non-finite-weights", ERROR, "Weights hold NaN or Inf",
         "A floating-point tensor holds NaN or infinite values.", ExitCode.UNSAFE, 5.0),
    Rule("HFA202", "weights-mismatch", ERROR, "Weights do not match the unet",
         "A tensor's dtype is not a floating-point type, a tensor the unet config needs is missing, or "
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
    """What the static checks found, and which unet weight file a loader may use."""

    findings: list[Finding]
    pipeline_class: str | None = None
    weights: dict[str, list[str]] = field(default_factory=dict)
    """Weight files per component folder (``""`` for the root), as repo-relative paths."""
    unet_weights: str | None = None
    """Repo-relative path of the unet file to load (the shard index of a sharded checkpoint), when
    the checks allow loading."""
    unet_files: list[str] = field(default_factory=list)
    """Every weight file the loader reads for the unet (each shard of a sharded checkpoint)."""
    index: dict[str, Any] | None = None
    """``model_index.json`` as parsed by the checks: the loader uses this, never a second read."""
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each component's parsed config, by component name (``unet``, ``scheduler``...)."""
    unet_parameters: int | None = None
    """Parameters of the unet the config describes (built on the meta device: nothing allocated)."""
    unet_tensors: dict[str, list[int]] = field(default_factory=dict)
    """Every tensor that unet's state dict holds, with its shape: what the weights must provide."""
    lfs_pointers: set[str] = field(default_factory=set)
    """Files that are Git LFS pointers (HFA108): no other check reads them."""

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
        check_values: Also read every unet tensor and flag NaN/Inf.
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
        _check_unet_weights(root, set(all_files), set(on_disk), report, allow_pickle=allow_pickle,
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
    fetches any weights, so a refused repo costs one small file. ``supported`` empty means any class.
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
                       f"unconditional pixel-space pipelines ({', '.join(sorted(supported))})", "model_index.json")
    for comp in ("unet", "scheduler"):
        if not _component(index, comp):
            return Finding("HFA103", ERROR, f"{cls} has no {comp} component in model_index.json", "model_index.json")
    return None


def components(index: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """The components ``model_index.json`` names: folder name -> ``(library, class)`` (null ones left out)."""
    return {name: comp for name in sorted(index) if not name.startswith("_")
            and (comp := _component(index, name)) is not None}


def _component(index: dict[str, Any], name: str) -> tuple[str, str] | None:
    """``(library, class)`` of a component of ``model_index.json``, or None if absent or null."""
    value = index.get(name)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    return None


def _check_components(root: Path, index: dict[str, Any], report: StaticReport) -> None:
    """Each component folder and config exists, parses, and names the class model_index.json names."""
    add = report.findings.append
    for name in sorted(k for k in index if not k.startswith("_")):
        comp = _component(index, name)
        if comp is None:
            continue  # optional component set to null, or a non-component key
        _lib, cls = comp
        if not (root / name).is_dir():
            add(Finding("HFA103", ERROR, f"model_index.json names a {name} ({cls}) but there is no {name}/ folder",
                        "model_index.json"))
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


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_unet_config(cls: str, cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    """A ``UNet2DModel`` config within hfaudit's limits (``hfaudit.limits``) that builds a unet.

    The sizes are checked before the unet is built, and it is built on the meta device (no memory),
    so that a config asking for a 100,000-pixel image or a million layers costs nothing to refuse.
    """
    add = report.findings.append

    def bad(message: str) -> None:
        add(Finding("HFA105", ERROR, f"unet config: {message}", rel))

    if cls != "UNet2DModel":
        add(Finding("HFA105", ERROR, f"unet is a {cls}, not a UNet2DModel", rel))
        return
    size = cfg.get("sample_size")
    sizes = [size] if _int(size) else list(size) if isinstance(size, (list, tuple)) and len(size) == 2 else []
    if not sizes or any(not _int(s) or s <= 0 for s in sizes):
        return bad(f"invalid sample_size ({size!r}): images need a positive size")
    if max(sizes) > limits.MAX_SAMPLE_SIZE:
        return bad(f"sample_size {size!r} is beyond hfaudit's limit of {limits.MAX_SAMPLE_SIZE} pixels")
    for key in ("in_channels", "out_channels"):
        value = cfg.get(key, 3)
        if not _int(value) or not 0 < value <= limits.MAX_CHANNELS:
            return bad(f"invalid {key} ({value!r}; 1 to {limits.MAX_CHANNELS})")
    chans = cfg.get("block_out_channels", (224, 448, 672, 896))
    if (not isinstance(chans, (list, tuple)) or not 0 < len(chans) <= limits.MAX_BLOCKS
            or any(not _int(c) or not 0 < c <= limits.MAX_BLOCK_CHANNELS for c in chans)):
        return bad(f"invalid block_out_channels ({_short(chans)}; 1 to {limits.MAX_BLOCKS} blocks of 1 to "
                   f"{limits.MAX_BLOCK_CHANNELS} channels)")
    for key in ("down_block_types", "up_block_types"):
        types = cfg.get(key)
        if types is not None and (not isinstance(types, (list, tuple)) or len(types) != len(chans)
                                  or not all(isinstance(t, str) for t in types)):
            return bad(f"{key} ({_short(types)}) must name one block type per entry of block_out_channels")
    layers = cfg.get("layers_per_block", 2)
    if not _int(layers) or not 0 < layers <= limits.MAX_LAYERS_PER_BLOCK:
        return bad(f"invalid layers_per_block ({_short(layers)}; 1 to {limits.MAX_LAYERS_PER_BLOCK})")
    factor = 2 ** (len(chans) - 1)
    if any(s % factor for s in sizes):
        return bad(f"sample_size {size!r} is not divisible by {factor}, the downsampling of its "
                   f"{len(chans)} blocks")
    try:
        import torch
        from diffusers import UNet2DModel

        with torch.device("meta"):
            unet = UNet2DModel.from_config(cfg)
        n_params = sum(p.numel() for p in unet.parameters())
    except Exception as exc:  # noqa: BLE001 - diffusers raises many types for configs it cannot build
        return bad(f"does not build a UNet2DModel ({type(exc).__name__}: {first_line(exc)})")
    if n_params > limits.MAX_PARAMETERS:
        return bad(f"{n_params:,} parameters, beyond hfaudit's limit of {limits.MAX_PARAMETERS:,}")
    report.unet_parameters = n_params
    report.unet_tensors = {k: list(v.shape) for k, v in unet.state_dict().items()}


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
    if pred != "epsilon":
        add(Finding("HFA106", ERROR, f"scheduler prediction_type {_short(pred)} is not supported yet (epsilon only)", rel))


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


def _check_unet_weights(root: Path, all_files: set[str], on_disk: set[str], report: StaticReport, *,
                        allow_pickle: bool, check_values: bool) -> None:
    """Decide which unet files may load (exactly those ``from_pretrained`` reads), check all of them,
    and flag pickle-only checkpoints and pickles not scanned."""
    add = report.findings.append
    unet = sorted(f for f in all_files if PurePosixPath(f).parent == PurePosixPath("unet"))
    st = [f for f in unet if f.endswith(".safetensors")]
    pk = [f for f in unet if f.endswith(PICKLE_SUFFIXES)]
    flagged = {f.path for f in report.findings if f.level == ERROR}
    for rel in sorted(f for f in all_files if f.endswith(PICKLE_SUFFIXES) and f not in on_disk):
        add(Finding("HFA213", NOTE, f"{rel}: pickle weights in the repo were not downloaded or scanned "
                    "(pass --allow-pickle to scan them)", rel))
    if UNET_INDEX in all_files or st:
        loaded = _safetensors_to_load(root, all_files, on_disk, st, report)
        if loaded is None:
            return
        if not any(f in flagged for f in loaded):
            problem = _coverage_problem(root, loaded, report.unet_tensors)
            if problem is not None:
                add(problem)
                return
            for rel in loaded:
                problem = _dtype_problem(root / rel, rel)
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
        report.unet_files = loaded
        report.unet_weights = UNET_INDEX if UNET_INDEX in all_files else loaded[0]
        return
    if not pk:
        add(Finding("HFA107", ERROR, "unet has no weight files (no .safetensors, no pickle)", "unet/config.json"))
        return
    rel = _preferred(pk, "diffusion_pytorch_model")
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
    report.unet_weights = rel
    report.unet_files = [rel]


def _safetensors_to_load(root: Path, all_files: set[str], on_disk: set[str], st: list[str],
                         report: StaticReport) -> list[str] | None:
    """The safetensors files ``from_pretrained`` reads: every shard of the index when there is one,
    else the canonical file. None (with a finding) when they are not all there."""
    add = report.findings.append
    if UNET_INDEX not in all_files:
        if UNET_WEIGHTS in all_files:
            return [UNET_WEIGHTS]
        add(Finding("HFA107", ERROR, f"unet has no {PurePosixPath(UNET_WEIGHTS).name} (only "
                    f"{', '.join(PurePosixPath(f).name for f in st[:3])}); hfaudit loads the default variant",
                    "unet/config.json"))
        return None
    index = _read_json(root, UNET_INDEX, report) if UNET_INDEX in on_disk else None
    weight_map = index.get("weight_map") if index is not None else None
    if not isinstance(weight_map, dict) or not weight_map:
        if index is not None or UNET_INDEX not in on_disk:
            add(Finding("HFA202", ERROR, f"{UNET_INDEX} has no weight_map naming the shards", UNET_INDEX))
        return None
    shards = sorted({v if isinstance(v, str) else "" for v in weight_map.values()})
    for shard in shards:
        if (not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", "..")
                or not shard.endswith(".safetensors")):
            add(Finding("HFA202", ERROR, f"{UNET_INDEX} names a shard {_short(shard)} that is not a safetensors "
                        "file beside it", UNET_INDEX))
            return None
        if f"unet/{shard}" not in on_disk:
            add(Finding("HFA202", ERROR, f"{UNET_INDEX} names a shard unet/{shard} that is not there", UNET_INDEX))
            return None
    return [f"unet/{shard}" for shard in shards]


_LEGACY_ATTENTION_NAMES = ((".to_q.", ".query."), (".to_k.", ".key."), (".to_v.", ".value."),
                           (".to_out.0.", ".proj_attn."))
"""Attention weights of older diffusers checkpoints (``google/ddpm-cifar10-32``) under the names
``from_pretrained`` still converts: a tensor found under its old name is present."""


def _coverage_problem(root: Path, loaded: list[str], expected: dict[str, list[int]]) -> Finding | None:
    """Every tensor the unet config needs is in the weight files, with its shape.

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
    where = loaded[0] if len(loaded) == 1 else UNET_INDEX
    for key, shape in expected.items():
        names = [key] + [key.replace(new, old) for new, old in _LEGACY_ATTENTION_NAMES if new in key]
        name = next((n for n in names if n in found), None)
        if name is None:
            return Finding("HFA202", ERROR, f"{where}: the weights lack tensor {key!r} that the unet config needs",
                           where)
        have = found[name]
        if list(have) != shape and not (name != key and math.prod(have) == math.prod(shape)):
            return Finding("HFA202", ERROR, f"{where}: tensor {key!r} has shape {have}, the unet config needs "
                           f"{shape}", where)
    return None


def _dtype_problem(path: Path, rel: str) -> Finding | None:
    """A unet weight file whose header gives a tensor a non-floating-point dtype is tampered:
    ``from_pretrained`` would cast it silently into the float parameter."""
    try:
        header = _read_header(path)[0]
    except (UnreadableFile, ValueError):
        return None  # the header check already reported it
    for key, info in header.items():
        if key != "__metadata__" and info.get("dtype") not in FLOAT_DTYPES:
            return Finding("HFA202", ERROR, f"{rel}: tensor {key!r} is stored as {info.get('dtype')}, not a "
                           "floating-point type: the file does not hold unet weights (tampered header?)", rel)
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
