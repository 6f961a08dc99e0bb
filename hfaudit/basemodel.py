"""Comparison with the base model a repo names: which components changed, and how.

A fine-tuned repo usually says what it was fine-tuned from (``base_model`` on its model card, or the
``_name_or_path`` diffusers and transformers write into each component's config). Where that base can
be read, the weights of each component are compared tensor by tensor: an unchanged UNet beside a
changed text encoder is what an encoder backdoor (Rickrolling) leaves, changed cross-attention
key/value projections alone are what a closed-form concept edit (EvilEdit, UCE) leaves. It is a
reading aid printed beside the verdict and never decides it: a repo can name any base, or none.

Only safetensors files are read, one tensor at a time, after the base passed the same static checks
as the audited model; nothing is written. Without an explicit base, a base on the Hub is not
downloaded (only a local folder, named by an absolute path, is followed), so a scan never fetches
gigabytes it was not asked for, nor reads a folder relative to wherever it was started.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

AUTO = "auto"
"""Compare with the base the repo names when it is a local folder (no download)."""
OFF = "none"
"""Do not compare."""

CHANGED = 1e-6
"""Relative change (``||W - W_base|| / ||W_base||``) from which a tensor counts as changed (float32 rounding
of a re-saved copy stays far below it)."""
TOP = 5
"""How many of a component's most changed tensors the report lists."""

_KV = re.compile(r"attn2\.(to_k|to_v)\.weight$")
"""Cross-attention key and value projections of a diffusers UNet (what closed-form edits rewrite)."""


@dataclass
class ComponentChange:
    """One component's weights against the base's."""

    component: str
    tensors: int
    """Tensors compared (present in both, same shape)."""
    changed: int
    """Of those, changed by at least ``CHANGED`` (relative)."""
    relative_change: float
    """``||W - W_base|| / ||W_base||`` over the whole component."""
    unmatched: int = 0
    """Tensors in only one of the two, or of another shape."""
    top: list[tuple[str, float]] = field(default_factory=list)
    """The most changed tensors and their relative change."""
    only_cross_attention_kv: bool = False
    """Every changed tensor is a cross-attention key or value projection."""


@dataclass
class BaseComparison:
    """What the comparison with a named base found, or why there was none."""

    base: str
    """The base as named (a Hub repo id or a folder)."""
    named_by: str
    """Where the name came from: ``--base``, ``README.md base_model``, or a component config's ``_name_or_path``."""
    compared: bool
    reason: str | None = None
    """Why it was not compared (not reachable, not a pipeline, a different architecture...)."""
    components: list[ComponentChange] = field(default_factory=list)

    @property
    def summary(self) -> str:
        """One line: which components changed, and the pattern a known attack leaves, if any."""
        if not self.compared:
            return f"base {self.base!r} not compared: {self.reason}"
        changed = [c for c in self.components if c.changed]
        if not changed:
            return f"identical to base {self.base!r} in every compared component"
        parts = ", ".join(f"{c.component} ({c.changed}/{c.tensors} tensors, {c.relative_change:.2g})" for c in changed)
        names = {c.component for c in changed}
        if names == {"text_encoder"}:
            hint = "only the text encoder changed (what an encoder backdoor leaves; also an encoder fine-tune)"
        elif names == {"unet"} and changed[0].only_cross_attention_kv:
            hint = "only the UNet's cross-attention key/value projections changed (what a closed-form concept edit leaves)"
        else:
            hint = "changed"
        return f"against base {self.base!r}: {hint}: {parts}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def named_base(root: Path, component_names: Iterable[str] = ("unet", "text_encoder", "vae", "vqvae")
               ) -> tuple[str, str] | None:
    """``(base, where it is named)``: the model card's ``base_model``, else the first component
    config's ``_name_or_path`` that names something other than the folder itself. A path that ends
    in a component folder of a pipeline (``.../unet``) names that pipeline."""
    card = root / "README.md"
    if card.is_file():
        try:
            from huggingface_hub import ModelCard

            data = ModelCard.load(card).data
            base = getattr(data, "base_model", None)
            if isinstance(base, list):
                base = base[0] if base else None
            if isinstance(base, str) and base.strip():
                return base.strip(), "README.md base_model"
        except Exception:  # a malformed card names nothing; the audit goes on
            pass
    own = root.resolve()
    for name in component_names:
        cfg = root / name / "config.json"
        if not cfg.is_file():
            continue
        try:
            value = json.loads(cfg.read_text(encoding="utf-8")).get("_name_or_path")
        except (OSError, ValueError, AttributeError):
            continue
        if not isinstance(value, str) or not value.strip():
            continue
        value = value.strip()
        path = Path(value)
        if path.name in component_names and (path.parent / "model_index.json").is_file():
            value, path = str(path.parent), path.parent
        if path.exists() and (path.resolve() == own or own in path.resolve().parents):
            continue  # the folder's own path, written when it was saved
        return value, f"{name}/config.json _name_or_path"
    return None


def compare_components(model_root: Path, model_files: dict[str, list[str]], base_root: Path,
                       base_files: dict[str, list[str]]) -> list[ComponentChange]:
    """Compare each component both sides hold, tensor by tensor (safetensors, streamed; each file
    opened once).

    ``model_files``/``base_files``: component -> every repo-relative weights file it loads from (each
    shard), as the static checks listed them (``StaticReport.component_files``).
    """
    out = []
    for name in sorted(set(model_files) & set(base_files)):
        a_files = [model_root / f for f in model_files[name] if f.endswith(".safetensors")]
        b_files = [base_root / f for f in base_files[name] if f.endswith(".safetensors")]
        if not a_files or not b_files:
            continue
        with ExitStack() as stack:
            a_where, b_where = _tensor_handles(a_files, stack), _tensor_handles(b_files, stack)
            diff2 = norm2 = 0.0
            rel: list[tuple[str, float]] = []
            unmatched = len(set(a_where) ^ set(b_where))
            for key in sorted(set(a_where) & set(b_where)):
                a, b = a_where[key].get_tensor(key).double(), b_where[key].get_tensor(key).double()
                if a.shape != b.shape:
                    unmatched += 1
                    continue
                d2, n2 = float((a - b).pow(2).sum()), float(b.pow(2).sum())
                diff2, norm2 = diff2 + d2, norm2 + n2
                rel.append((key, (d2 ** 0.5) / max(n2 ** 0.5, 1e-12)))
        changed = [(k, r) for k, r in rel if r >= CHANGED]
        changed.sort(key=lambda kr: kr[1], reverse=True)
        out.append(ComponentChange(
            component=name, tensors=len(rel), changed=len(changed),
            relative_change=round((diff2 ** 0.5) / max(norm2 ** 0.5, 1e-12), 6), unmatched=unmatched,
            top=[(k, round(r, 6)) for k, r in changed[:TOP]],
            only_cross_attention_kv=bool(changed) and all(_KV.search(k) for k, _ in changed)))
    return out


def _tensor_handles(files: list[Path], stack: ExitStack) -> dict[str, Any]:
    """Tensor name -> the open ``safe_open`` handle of the file (shard) that holds it; each file is
    opened once and closed with ``stack``."""
    from safetensors import safe_open

    where: dict[str, Any] = {}
    for f in files:
        handle = stack.enter_context(safe_open(str(f), "pt"))
        for key in handle.keys():
            where[key] = handle
    return where


def compare_with_base(model_root: Path, model_files: dict[str, list[str]], base: str, named_by: str, *,
                      explicit: bool, resolve: Callable[[str], Any]) -> BaseComparison:
    """Resolve ``base`` (``resolve``: ``hub.resolve`` with the scan's token and cache) and compare.

    Without ``explicit`` only a local folder is followed. With it, the base is fetched like any
    audited repo (component weights only). Never raises for the base: a base that cannot be read
    is a ``reason``, except that an explicit base that does not resolve raises (the user asked).

    Raises:
        HfauditError subclasses from ``resolve``: only with ``explicit``.
    """
    from hfaudit.safety import static_checks

    if explicit:
        resolved = resolve(base)
    else:
        folder = Path(base)
        if not folder.is_absolute():
            why = f"not a local folder: pass --base {base} to download it and compare"
        elif not folder.is_dir():
            why = "no such folder on this machine"
        elif not (folder / "model_index.json").is_file():
            why = "not a pipeline folder (no model_index.json)"
        else:
            try:
                resolved = resolve(base)
                why = ""
            except Exception as exc:  # an unreadable base named by the repo itself: noted, never fatal
                why = f"not readable: {exc}"
        if why:
            return BaseComparison(base, named_by, False, why)
    report = static_checks(resolved.local_dir, resolved.files, allow_pickle=False)
    if report.blocking:
        return BaseComparison(base, named_by, False, f"its files fail the static checks: {report.blocking[0].message}")
    changes = compare_components(model_root, model_files, resolved.local_dir, report.component_files)
    if not changes:
        return BaseComparison(base, named_by, False, "no component holds safetensors weights on both sides")
    differ = [c for c in changes if c.unmatched]
    if differ:  # a fine-tune keeps every tensor and its shape: this base is another architecture
        what = ", ".join(f"{c.component} ({c.unmatched} tensors not in both, or shaped differently)" for c in differ)
        return BaseComparison(base, named_by, False, f"not the same architecture: {what}", components=changes)
    return BaseComparison(base, named_by, True, components=changes)
