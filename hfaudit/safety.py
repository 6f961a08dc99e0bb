"""Checks that run before any weights are loaded: which weight files exist, and whether they are safe.

Pickle weights can run code when loaded. hfaudit never loads them by default; with an explicit
opt-in it scans them with picklescan first and then loads with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path

from hfaudit.errors import UnsafeCheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
SAFETENSORS_DTYPE_SIZES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
    "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1,
}


@dataclass
class Finding:
    """One static finding about a file of the model repo (also a SARIF result)."""

    rule: str
    level: str  # "error" | "warning" | "note"
    message: str
    path: str


@dataclass
class WeightFiles:
    """The weight files of one component folder (e.g. ``unet/``)."""

    safetensors: list[Path] = field(default_factory=list)
    pickle: list[Path] = field(default_factory=list)


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


def check_safetensors(path: Path, check_values: bool = True) -> None:
    """Validate a safetensors file's header and, optionally, that it holds no NaN/Inf.

    The header is parsed by hand first (length, dtypes, offsets inside the file, no overlaps)
    so a lying header is reported as such instead of crashing a loader.

    Raises:
        UnsafeCheckpointError: the file is truncated, its header is malformed or lies, or values
            are NaN/Inf.
    """
    name = path.name
    size = path.stat().st_size
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise UnsafeCheckpointError(f"{name}: corrupt safetensors file (shorter than its 8-byte header length)")
        (hlen,) = struct.unpack("<Q", raw)
        if hlen > size - 8 or hlen > 100_000_000:
            raise UnsafeCheckpointError(f"{name}: corrupt safetensors file (header length {hlen} exceeds file size {size})")
        try:
            header = json.loads(fh.read(hlen))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise UnsafeCheckpointError(f"{name}: corrupt safetensors file (header is not valid JSON)") from None
    if not isinstance(header, dict):
        raise UnsafeCheckpointError(f"{name}: corrupt safetensors file (header is not a JSON object)")
    data_len = size - 8 - hlen
    spans = []
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UnsafeCheckpointError(f"{name}: corrupt safetensors header entry for {key!r}") from None
        if dtype not in SAFETENSORS_DTYPE_SIZES:
            raise UnsafeCheckpointError(f"{name}: tensor {key!r} has unknown dtype {dtype!r}")
        expected = SAFETENSORS_DTYPE_SIZES[dtype] * math.prod(int(s) for s in shape)
        if not (0 <= begin <= end <= data_len) or end - begin != expected:
            raise UnsafeCheckpointError(
                f"{name}: safetensors header lies about tensor {key!r} (offsets {begin}..{end}, "
                f"{expected} bytes expected, {data_len} bytes of data): truncated or tampered file")
        spans.append((begin, end, key))
    spans.sort()
    for (b0, e0, k0), (b1, _e1, k1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise UnsafeCheckpointError(f"{name}: safetensors tensors {k0!r} and {k1!r} overlap: tampered file")
    if check_values:
        import torch
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own SafetensorError
            raise UnsafeCheckpointError(f"{name}: corrupt safetensors file ({exc})") from None
        for key, t in tensors.items():
            if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                raise UnsafeCheckpointError(f"{name}: tensor {key!r} holds NaN or Inf values")


def scan_pickle(path: Path) -> list[Finding]:
    """Scan one pickle file with picklescan; return a finding per dangerous global it imports."""
    from picklescan.scanner import scan_file_path

    result = scan_file_path(str(path), strict=True)
    findings = []
    if result.scan_err:
        findings.append(Finding("pickle-unscannable", "error", f"{path.name}: picklescan could not parse the file", path.name))
    for g in result.globals:
        level = getattr(g.safety, "name", str(g.safety)).lower()
        if level in ("dangerous", "suspicious"):
            findings.append(Finding("pickle-dangerous-global", "error",
                                    f"{path.name}: pickle imports {g.module}.{g.name} ({level})", path.name))
    return findings
