"""Static checks that run before any weights are loaded (DESIGN.md section 4).

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
import struct
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from hfaudit.errors import ExitCode, HfAuditError, UnsafeCheckpointError, UnsupportedModelError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}
MAX_HEADER_BYTES = 100_000_000
"""The safetensors format's own limit on the JSON header."""
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
         "The unet is not a UNet2DModel, or its sample size or channel counts are invalid.", ExitCode.UNSUPPORTED),
    Rule("HFA106", "invalid-scheduler-config", ERROR, "The scheduler config is unusable",
         "The scheduler config does not build a scheduler, has under 2 training timesteps, or predicts "
         "something other than the noise.", ExitCode.UNSUPPORTED),
    Rule("HFA107", "no-weights", ERROR, "A component has no weight files",
         "The unet folder holds neither safetensors nor pickle weights.", ExitCode.UNSUPPORTED),
    Rule("HFA200", "corrupt-safetensors", ERROR, "Corrupt or tampered safetensors file",
         "The file is truncated, or its header is malformed or lies about dtypes, shapes or offsets.",
         ExitCode.UNSAFE, 7.0),
    Rule("HFA201", "non-finite-weights", ERROR, "Weights hold NaN or Inf",
         "A floating-point tensor holds NaN or infinite values.", ExitCode.UNSAFE, 5.0),
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

_BLOCKING_PRIORITY = (ExitCode.UNSAFE, ExitCode.UNSUPPORTED)
"""When several findings block, unsafe wins: 'do not load this' matters more than 'cannot audit it'."""


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
    """Repo-relative path of the unet file to load, when the checks allow loading."""

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
        cls: type[HfAuditError] = UnsafeCheckpointError if first.spec.exit_code == ExitCode.UNSAFE else UnsupportedModelError
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
    on_disk = _list_files(root)
    all_files = sorted(set(files) | set(on_disk)) if files is not None else on_disk
    all_files = [f for f in all_files if not f.startswith(_IGNORED_DIRS)]
    report = StaticReport(findings=[])
    for rel in all_files:
        if rel.endswith((".safetensors", *PICKLE_SUFFIXES)):
            folder = str(PurePosixPath(rel).parent)
            report.weights.setdefault("" if folder == "." else folder, []).append(rel)

    # Every file's bytes are checked, whatever the configs say: a malicious pickle is a finding
    # even in a folder no config mentions.
    for rel in all_files:
        path = root / rel
        if rel.endswith(".safetensors") and path.is_file():
            report.findings.extend(safetensors_findings(path, rel, check_values=False))
        elif rel.endswith(PICKLE_SUFFIXES) and path.is_file():
            report.findings.extend(scan_pickle(path, rel))

    index = _check_index(root, report, supported_pipelines)
    if index is not None:
        _check_components(root, index, report)
        _check_unet_weights(root, set(all_files), set(on_disk), report, allow_pickle=allow_pickle,
                            check_values=check_values)
    return report


# ------------------------------------------------------------------------------------- configs
def _read_json(root: Path, rel: str, report: StaticReport) -> dict[str, Any] | None:
    """Parse a JSON object, or add a finding (HFA101) and return None."""
    try:
        data = json.loads((root / rel).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text"
        report.findings.append(Finding("HFA101", ERROR, f"{rel} is not valid JSON ({why})", rel))
        return None
    except OSError as exc:
        report.findings.append(Finding("HFA101", ERROR, f"{rel} cannot be read ({exc.strerror or exc})", rel))
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
    supported = frozenset(supported)
    if supported and cls not in supported:
        report.findings.append(Finding(
            "HFA102", ERROR, f"pipeline type {cls} is not supported yet; hfaudit audits unconditional pixel-space "
            f"pipelines ({', '.join(sorted(supported))})", "model_index.json"))
        return None
    for comp in ("unet", "scheduler"):
        if not _component(index, comp):
            report.findings.append(Finding("HFA103", ERROR, f"{cls} has no {comp} component in model_index.json",
                                           "model_index.json"))
            return None
    return index


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
        if cfg.get("_class_name") not in (None, cls):
            add(Finding("HFA104", ERROR, f"{rel} describes a {cfg.get('_class_name')} but model_index.json says "
                        f"{name} is a {cls}", rel))
            continue
        if name == "unet":
            _check_unet_config(cls, cfg, rel, report)
        elif name == "scheduler":
            _check_scheduler_config(cfg, rel, report)


def _check_unet_config(cls: str, cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    add = report.findings.append
    if cls != "UNet2DModel":
        add(Finding("HFA105", ERROR, f"unet is a {cls}, not a UNet2DModel", rel))
        return
    size = cfg.get("sample_size")
    sizes = [size] if isinstance(size, int) else list(size) if isinstance(size, (list, tuple)) else []
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s <= 0 for s in sizes):
        add(Finding("HFA105", ERROR, f"unet config has an invalid sample_size ({size!r}): images need a positive size", rel))
    for key in ("in_channels", "out_channels"):
        value = cfg.get(key, 3)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            add(Finding("HFA105", ERROR, f"unet config has an invalid {key} ({value!r})", rel))


def _check_scheduler_config(cfg: dict[str, Any], rel: str, report: StaticReport) -> None:
    """The schedule must build (the DDPM formulas every sampler shares) and predict the noise."""
    from diffusers import DDPMScheduler

    add = report.findings.append
    try:
        sched = DDPMScheduler.from_config(cfg)
        n_train = int(sched.config.num_train_timesteps)
    except Exception as exc:  # noqa: BLE001 - diffusers raises several types for bad configs
        add(Finding("HFA106", ERROR, f"scheduler config is unusable ({type(exc).__name__}: {_first_line(exc)})", rel))
        return
    if n_train < 2:
        add(Finding("HFA106", ERROR, f"scheduler config has {n_train} training timesteps (at least 2 needed)", rel))
    pred = cfg.get("prediction_type", "epsilon")
    if pred != "epsilon":
        add(Finding("HFA106", ERROR, f"scheduler prediction_type {pred!r} is not supported yet (epsilon only)", rel))


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
    """Decide which unet file may load, and flag pickle-only checkpoints and pickles not scanned."""
    add = report.findings.append
    unet = sorted(f for f in all_files if PurePosixPath(f).parent == PurePosixPath("unet"))
    st = [f for f in unet if f.endswith(".safetensors")]
    pk = [f for f in unet if f.endswith(PICKLE_SUFFIXES)]
    flagged = {f.path for f in report.findings if f.level == ERROR}
    for rel in sorted(f for f in all_files if f.endswith(PICKLE_SUFFIXES) and f not in on_disk):
        add(Finding("HFA213", NOTE, f"{rel}: pickle weights in the repo were not downloaded or scanned "
                    "(pass --allow-pickle to scan them)", rel))
    if st:
        rel = _preferred(st, "diffusion_pytorch_model")
        if rel not in flagged and check_values:
            report.findings.extend(safetensors_findings(root / rel, rel, check_values=True, check_header=False))
        for p in pk:
            if p in on_disk and p not in flagged:
                add(Finding("HFA214", NOTE, f"{p}: pickle weights beside the safetensors scanned clean "
                            "(picklescan, strict); they were not loaded", p))
        report.unet_weights = rel
        return
    if not pk:
        add(Finding("HFA107", ERROR, "unet has no weight files (no .safetensors, no pickle)", "unet/config.json"))
        return
    rel = _preferred(pk, "diffusion_pytorch_model")
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


def safetensors_findings(path: Path, rel: str | None = None, *, check_values: bool = True,
                         check_header: bool = True) -> list[Finding]:
    """Validate a safetensors file's header by hand and, optionally, that every value is finite.

    The header is parsed here first (length, dtypes, shapes, offsets inside the data, no overlaps,
    no unindexed bytes) so that a lying header is reported as such instead of crashing a loader.
    Values are read one tensor at a time (memory-mapped), so memory stays at one tensor.
    """
    rel = rel or path.name
    try:
        if check_header:
            problem = _safetensors_header_problem(path)
            if problem:
                return [Finding("HFA200", ERROR, f"{rel}: {problem}", rel)]
        if check_values:
            bad = _non_finite_tensor(path)
            if bad:
                return [Finding("HFA201", ERROR, f"{rel}: tensor {bad!r} holds NaN or Inf values", rel)]
    except OSError as exc:
        return [Finding("HFA200", ERROR, f"{rel}: cannot read the file ({exc.strerror or exc})", rel)]
    return []


def _safetensors_header_problem(path: Path) -> str | None:
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            return "corrupt safetensors file (shorter than its 8-byte header length)"
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > size - 8 or hlen > MAX_HEADER_BYTES:
            return f"corrupt safetensors file (header length {hlen} exceeds file size {size}): truncated or tampered"
        try:
            header = json.loads(fh.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "corrupt safetensors file (header is not valid JSON)"
    if not isinstance(header, dict):
        return "corrupt safetensors file (header is not a JSON object)"
    data_len = size - 8 - hlen
    spans: list[tuple[int, int, str]] = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
            begin, end = (int(o) for o in offsets)
            dims = [int(s) for s in shape]
        except (KeyError, TypeError, ValueError):
            return f"corrupt safetensors header entry for {key!r}"
        if dtype not in SAFETENSORS_DTYPE_SIZES:
            return f"tensor {key!r} has unknown dtype {dtype!r}"
        if any(d < 0 for d in dims):
            return f"tensor {key!r} has a negative dimension {shape}"
        expected = SAFETENSORS_DTYPE_SIZES[dtype] * math.prod(dims)
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
    """Scan one pickle file with picklescan (strict): a finding per global outside its allow-list.

    Strict mode treats every import that is not a known tensor-rebuilding helper as dangerous, so
    an exotic gadget (say ``pathlib.Path.write_text``) is caught, not only ``os.system``. Nothing is
    unpickled. picklescan's own log lines are silenced: the findings carry the same facts.
    """
    from picklescan.scanner import scan_file_path

    rel = rel or path.name
    log = logging.getLogger("picklescan")
    saved = (log.level, log.propagate, log.disabled)
    log.disabled = True
    try:
        result = scan_file_path(str(path), strict=True)
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
def _list_files(root: Path) -> list[str]:
    """Every file under ``root`` as a relative POSIX path (symlinks of a Hub snapshot included)."""
    if not root.is_dir():
        return []
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(root).parts)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]
