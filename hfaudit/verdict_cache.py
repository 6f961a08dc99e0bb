"""The verdict cache: a finished scan's report, reused when the same model is scanned the same way.

A scan costs minutes to hours on a CPU; a CI job re-runs it on every push, re-run and matrix leg.
:func:`cached_scan` keys each scan by what decides its verdict (:func:`cache_key`):

- **the model**: for a Hub repo, the endpoint, the repo id and the commit sha it resolved to (a
  commit pins every byte); for a local folder, a sha256 over the path and bytes of every file the
  audit reads (configs ``*.json``, safetensors and pickle weights; ``.git/`` and ``.cache/`` left
  out). A folder with a FIFO, a device or an unreadable model file gets no key: it is scanned
  (and refused) as always, never served;
- **the settings**: every field of the :class:`~hfaudit.detect.scan.ScanConfig` after
  ``seeded()``, batch size included (it changes the order of random draws and the floating-point
  sums, so it can move a score at the threshold), the device type (``cpu``, ``cuda``...) and
  ``allow_pickle``;
- **the software**: hfaudit's, torch's and diffusers' versions, and this module's entry format.

An entry is one JSON file ``<key>.json`` in the cache folder, written atomically (staged, then
renamed: :class:`hfaudit.outpaths.Staging`), holding the report document (opaque here but for
``verdict``, ``exit_code`` and ``source``), the PNG pictures, when it was stored and a sha256 over
both. Only finished verdicts are stored (``clean``, ``backdoor``), never an error, an inconclusive
or a ``collapsed`` verdict. Reading fails closed: an entry that does not parse, names another key,
has another format or version, fails its checksum, or holds a verdict and exit code that disagree
is ignored (with a note) and the model is scanned.

Trust: whoever can write the cache folder can forge a verdict (the checksum catches damage, not
forgery), so the folder must be writable only by those trusted to run the audit; in CI, a cache
scoped to the branch (docs/github-action.md).
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from hfaudit import __version__, hub, outpaths
from hfaudit.detect.scan import ScanConfig, default_config, scan_resolved
from hfaudit.errors import OutputError
from hfaudit.modelfiles import UnreadableFile, open_regular
from hfaudit.report import PICTURES, Outputs, pictures, report_dict
from hfaudit.results import BACKDOOR, CLEAN, ScanResult
from hfaudit.safety import PICKLE_SUFFIXES

ENTRY_FORMAT = 1
"""The layout of an entry; an entry of another format is ignored."""
CACHED_VERDICTS = {str(CLEAN): 0, str(BACKDOOR): 1}
"""The verdicts stored, with the exit code each must carry."""
MODEL_FILE_SUFFIXES = (".json", ".safetensors", *PICKLE_SUFFIXES)
"""The files of a local folder the key covers: everything the static checks and the loader read."""
MAX_ENTRY_BYTES = 256 * 1024 * 1024
"""Largest entry read (a report and four PNGs); a larger file is not an entry hfaudit wrote."""
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IGNORED_DIRS = (".git/", ".cache/")


@dataclass(frozen=True)
class CacheKey:
    """What a verdict depends on (``fields``) and its sha256 (``digest``), the entry's name."""

    digest: str
    fields: dict[str, Any]


@dataclass
class CachedVerdict:
    """An entry read back and checked: the report, its pictures (artifact key -> PNG bytes), when it was stored."""

    key: str
    doc: dict[str, Any]
    pictures: dict[str, bytes]
    stored_at: str


@dataclass
class ScanOutcome:
    """What :func:`cached_scan` did: the report it wrote, and whether it came from the cache.

    ``result`` is the fresh scan (None when served from the cache); ``notes`` are one-line messages
    for the person at the terminal (served from the cache, an entry ignored, an entry not stored).
    """

    doc: dict[str, Any]
    exit_code: int
    result: ScanResult | None
    cached: CachedVerdict | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def from_cache(self) -> bool:
        return self.cached is not None


# ------------------------------------------------------------------------------------------ keys
def canonical_json(value: Any) -> bytes:
    """One byte string per value: sorted keys, no spaces, tuples as lists (what the key hashes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True).encode()


def settings_fields(config: ScanConfig | None) -> dict[str, Any]:
    """The scan settings as the key records them: every ScanConfig field, seeded as the scan runs them."""
    return dataclasses.asdict((config or default_config()).seeded())


def folder_digest(resolved: hub.ResolvedSource) -> str | None:
    """sha256 over the path, size and bytes of every model file (``MODEL_FILE_SUFFIXES``) of a local folder.

    None when one of them is not a regular file or cannot be read: such a folder is never served
    from the cache (the scan refuses it with its own finding).
    """
    root = Path(resolved.local_dir)
    outer = hashlib.sha256()
    for rel in sorted(resolved.files):
        if rel.startswith(_IGNORED_DIRS) or not rel.endswith(MODEL_FILE_SUFFIXES):
            continue
        inner = hashlib.sha256()
        try:
            fd = open_regular(root / rel)
        except UnreadableFile:
            return None
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    inner.update(chunk)
        except OSError:
            return None
        finally:
            os.close(fd)
        outer.update(canonical_json([rel, inner.hexdigest()]) + b"\n")
    return outer.hexdigest()


def model_fields(resolved: hub.ResolvedSource, endpoint: str | None = None) -> dict[str, Any] | None:
    """What pins the audited bytes: a Hub commit, or a local folder's :func:`folder_digest` (None: no key)."""
    if not resolved.is_local:
        if not resolved.commit_sha or not resolved.repo_id:
            return None
        from hfaudit.constants import hf_endpoint

        return {"hub": (endpoint or hf_endpoint()).rstrip("/"), "repo_id": resolved.repo_id,
                "commit_sha": resolved.commit_sha}
    digest = folder_digest(resolved)
    return None if digest is None else {"folder_sha256": digest}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "unknown"


def cache_key(resolved: hub.ResolvedSource, config: ScanConfig | None, *, device_type: str,
              allow_pickle: bool, endpoint: str | None = None) -> CacheKey | None:
    """The key of a scan of ``resolved`` with ``config`` on a ``device_type`` device; None: not cacheable."""
    model = model_fields(resolved, endpoint)
    if model is None:
        return None
    fields = {"format": ENTRY_FORMAT, "hfaudit": __version__, "torch": _version("torch"),
              "diffusers": _version("diffusers"), "model": model, "device_type": device_type,
              "allow_pickle": bool(allow_pickle),
              "settings_sha256": hashlib.sha256(canonical_json(settings_fields(config))).hexdigest()}
    return CacheKey(hashlib.sha256(canonical_json(fields)).hexdigest(), fields)


# ------------------------------------------------------------------------------------ the store
class VerdictCache:
    """The cache folder: :meth:`load` an entry (checked, fail closed), :meth:`store` one (atomically)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: CacheKey | str) -> Path:
        return self.folder / f"{key.digest if isinstance(key, CacheKey) else key}.json"

    def load(self, key: CacheKey) -> tuple[CachedVerdict | None, str | None]:
        """``(entry, None)`` on a hit, ``(None, None)`` when there is none, ``(None, why)`` when one was ignored."""
        path = self.path(key)
        try:
            fd = open_regular(path)
        except UnreadableFile:
            if not os.path.lexists(path):
                return None, None
            return None, f"{path.name} is not a readable regular file"
        try:
            with os.fdopen(os.dup(fd), "rb") as fh:
                raw = fh.read(MAX_ENTRY_BYTES + 1)
        except OSError as exc:
            return None, f"{path.name} cannot be read ({exc.strerror or exc})"
        finally:
            os.close(fd)
        if len(raw) > MAX_ENTRY_BYTES:
            return None, f"{path.name} is larger than an entry can be"
        try:
            return _parse_entry(raw, key), None
        except _BadEntry as exc:
            return None, f"{path.name} {exc}"

    def store(self, key: CacheKey, doc: dict[str, Any], pngs: dict[str, bytes],
              protected: list[outpaths.Protected] | None = None) -> Path:
        """Write the entry of ``doc`` (a clean or backdoor report) and its PNGs under ``key``, atomically.

        Raises:
            ValueError: ``doc`` is not a finished clean or backdoor verdict (never cached).
            OutputError: the folder cannot be written, or lies in a protected place (the audited model).
        """
        if CACHED_VERDICTS.get(doc.get("verdict")) != doc.get("exit_code") or doc.get("error") is not None:
            raise ValueError(f"only finished clean or backdoor verdicts are cached (got {doc.get('verdict')!r})")
        payload = {"report": doc, "pictures": {k: base64.b64encode(v).decode("ascii") for k, v in pngs.items()}}
        payload = json.loads(canonical_json(payload))  # as it will read back: the checksum must match then
        entry = {"format": ENTRY_FORMAT, "key": key.digest, "key_fields": key.fields, "hfaudit_version": __version__,
                 "stored_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "sha256": hashlib.sha256(canonical_json(payload)).hexdigest(), **payload}
        staging = outpaths.Staging(list(protected or []))
        try:
            staging.stage(self.path(key), json.dumps(entry, allow_nan=True))
            staging.commit()
        except BaseException:
            staging.discard()
            raise
        return self.path(key)


class _BadEntry(Exception):
    """An entry that must be ignored; the message says why (after the file name)."""


def _parse_entry(raw: bytes, key: CacheKey) -> CachedVerdict:
    """The checked entry in ``raw`` for ``key``.

    Raises:
        _BadEntry: anything that is not exactly an entry this version wrote for this key.
    """
    try:
        entry = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise _BadEntry("is not a JSON entry") from None
    if not isinstance(entry, dict):
        raise _BadEntry("is not a JSON entry")
    if entry.get("format") != ENTRY_FORMAT or entry.get("hfaudit_version") != __version__:
        raise _BadEntry(f"was written by another hfaudit (format {entry.get('format')!r}, "
                        f"version {entry.get('hfaudit_version')!r})")
    if entry.get("key") != key.digest:
        raise _BadEntry("holds the verdict of another key")
    doc, pics = entry.get("report"), entry.get("pictures")
    if not isinstance(doc, dict) or not isinstance(pics, dict):
        raise _BadEntry("has no report")
    if entry.get("sha256") != hashlib.sha256(canonical_json({"report": doc, "pictures": pics})).hexdigest():
        raise _BadEntry("fails its checksum")
    verdict = doc.get("verdict")
    if (verdict not in CACHED_VERDICTS or doc.get("exit_code") != CACHED_VERDICTS[verdict]
            or doc.get("error") is not None or not isinstance(doc.get("source"), dict)):
        raise _BadEntry("holds no finished verdict")
    pngs: dict[str, bytes] = {}
    for name, text in pics.items():
        if name not in PICTURES or not isinstance(text, str):
            raise _BadEntry(f"holds an unknown picture {name!r}")
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _BadEntry(f"holds a broken picture {name!r}") from None
        if not data.startswith(_PNG_SIGNATURE):
            raise _BadEntry(f"holds a picture {name!r} that is no PNG")
        pngs[name] = data
    stored_at = entry.get("stored_at")
    return CachedVerdict(key=key.digest, doc=doc, pictures=pngs, stored_at=stored_at if isinstance(stored_at, str) else "?")


# ----------------------------------------------------------------------------------- the scan
def png_bytes(result: ScanResult) -> dict[str, bytes]:
    """The scan's pictures (``report.pictures``) encoded as PNG, by artifact key."""
    out = {}
    for key, image in pictures(result).items():
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        out[key] = buf.getvalue()
    return out


def cached_scan(
    source: str,
    outputs: Outputs,
    *,
    verdict_cache: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    allow_pickle: bool = False,
    config: ScanConfig | None = None,
) -> ScanOutcome:
    """``detect.scan.scan`` with its outputs written, served from the verdict cache folder ``verdict_cache``
    when it can be (``cache_dir`` is huggingface_hub's download cache, as for ``hub.resolve``).

    Without ``verdict_cache``: scan, write ``outputs``. With it: resolve the source, compute its
    :func:`cache_key`; on a hit write the cached report and pictures to ``outputs`` (the source
    fields as given now) and scan nothing; on a miss scan, write, and store a clean or backdoor
    verdict, unless the folder's files changed during the scan. A cache that cannot be written
    costs the entry, not the verdict (a note says so).

    Raises:
        OutputError: ``verdict_cache`` lies in the audited model; and what ``scan`` and ``outputs`` raise.
    """
    from hfaudit.constants import hf_endpoint
    from hfaudit.devices import resolve_device

    if verdict_cache is None:  # the plain scan, through its one entry point
        from hfaudit.detect import scan as detect_scan

        result = detect_scan.scan(source, revision=revision, token=token, cache_dir=cache_dir, device=device,
                                  allow_pickle=allow_pickle, config=config)
        outputs.write_scan(result)
        return ScanOutcome(doc=report_dict(result), exit_code=int(result.exit_code), result=result)

    cache = VerdictCache(verdict_cache)
    outpaths.check_not_protected(cache.folder, outpaths.protected_paths(source), name="--verdict-cache")
    cfg = (config or default_config()).seeded()
    cfg.validate()
    started = time.perf_counter()
    endpoint = hf_endpoint()
    resolved = hub.resolve(source, revision=revision, token=token, allow_pickle=allow_pickle, endpoint=endpoint,
                           cache_dir=cache_dir)
    protected = outpaths.protected_paths(source, resolved.local_dir)
    outpaths.check_not_protected(cache.folder, protected, name="--verdict-cache")
    device_type = resolve_device(device).type
    key = cache_key(resolved, cfg, device_type=device_type, allow_pickle=allow_pickle, endpoint=endpoint)
    notes: list[str] = []
    if key is None:
        notes.append("verdict cache: nothing pins this model's bytes (a model file that is not a regular file, "
                     "or no commit sha); scanning without the cache")
    else:
        hit, why = cache.load(key)
        if why is not None:
            notes.append(f"verdict cache: ignored entry {why}; scanning")
        if hit is not None:
            doc = _serve(hit, resolved, outputs)
            notes.append(f"verdict served from the verdict cache: scanned with the same settings and software, "
                         f"stored {hit.stored_at} (entry {cache.path(key)})")
            return ScanOutcome(doc=doc, exit_code=int(doc["exit_code"]), result=None, cached=hit, notes=notes)

    result = scan_resolved(resolved, device=device, allow_pickle=allow_pickle, config=cfg, started=started)
    outputs.write_scan(result)
    doc = report_dict(result)
    if key is not None and str(result.verdict) in CACHED_VERDICTS:
        after = cache_key(resolved, cfg, device_type=device_type, allow_pickle=allow_pickle, endpoint=endpoint)
        if after is None or after.digest != key.digest:
            notes.append("verdict cache: the model's files changed during the scan; verdict not stored")
        else:
            stored = copy.deepcopy(doc)
            stored["artifacts"] = {}  # paths of this run; a hit names its own
            try:
                cache.store(key, stored, png_bytes(result), protected)
            except OutputError as exc:
                notes.append(f"verdict cache: not stored ({exc})")
    return ScanOutcome(doc=doc, exit_code=int(result.exit_code), result=result, notes=notes)


def _serve(hit: CachedVerdict, resolved: hub.ResolvedSource, outputs: Outputs) -> dict[str, Any]:
    """Write a cached verdict to ``outputs`` as a scan would: pictures first, then every report format.

    The source fields come from this run (the path given, the revision asked, the git commit now),
    the rest of the report from the entry.
    """
    doc = copy.deepcopy(hit.doc)
    doc["source"].update(source=resolved.source, repo_id=resolved.repo_id, revision=resolved.revision,
                         commit_sha=resolved.commit_sha)
    outputs.protect(resolved.repo_id or resolved.source, resolved.local_dir)
    artifacts: dict[str, str] = {}
    if outputs.output_dir is not None:
        for name, data in hit.pictures.items():
            dest = outputs.output_dir / PICTURES[name][0]
            outputs.stage(dest, data)
            artifacts[name] = str(dest)
    doc["artifacts"] = artifacts
    outputs.write_doc(doc)
    return doc
