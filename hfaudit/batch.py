"""Several models in one run: ``hfaudit scan org/a org/b ...`` and ``hfaudit scan --from FILE``.

:func:`scan_many` audits each model as ``hfaudit scan MODEL -o DIR/<name>`` would (through
:func:`hfaudit.verdict_cache.cached_scan`, so a verdict cache serves what it already holds), one
report folder per model under the output folder, and writes one summary (``summary.json``,
``summary.md``). A model that cannot be audited (not found, unsupported, unsafe...) gets its row
with its exit code, and the run goes on; the run's exit code is the worst of them
(:func:`hfaudit.errors.worst_exit_code`).

Under ``accelerate launch`` the models are spread over the processes with Accelerate's own
``PartialState.split_between_processes``: each process audits its shard and writes its models'
reports; the others then hand their rows to the main process through a file in the output folder
(``.hfaudit-shard-<i>-of-<n>.json``, which the main process removes), and after
``wait_for_everyone`` the main process writes the summary. The output folder must therefore be one
that every process sees. With one process (no launcher) the split is the whole list, the wait is
nothing and no shard file is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, ContextManager, Protocol

from rich.table import Table

from hfaudit import __version__, interrupts, outpaths, sources as srcs
from hfaudit.detect.scan import ScanConfig
from hfaudit.errors import ExitCode, HfAuditError, UsageError, worst_exit_code
from hfaudit.hub import is_repo_id
from hfaudit.report import Outputs, error_verdict, finite, verdict_line
from hfaudit.results import created_at
from hfaudit.verdict_cache import cached_scan

SUMMARY_FILES = ("summary.json", "summary.md")
"""What the main process writes at the top of the output folder; no model's folder takes these names."""
MAX_SOURCES = 10_000
"""Most models one run takes (a larger list is not a list of models someone means to audit)."""
MAX_FROM_BYTES = 4 * 1024 * 1024
"""Largest ``--from`` file read."""
MAX_NAME = 96
"""Longest report folder name (before a ``-2``... suffix that keeps it unique)."""
SHARD_WAIT = timedelta(days=7)
"""How long a process that finished its shard waits for the others (the process group's timeout):
the shards take as long as their models, which is hours on a CPU."""
SHARD_FORMAT = 1
_SHARD_FILE = ".hfaudit-shard-{index}-of-{total}.json"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._@+=-]+")
_WINDOWS_DEVICES = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                              *(f"LPT{i}" for i in range(10))})


# ---------------------------------------------------------------------------------- results
@dataclass
class ModelResult:
    """One model's row: what its audit said, where its reports are, what it cost in this run.

    ``verdict`` is the report's (``clean``, ``backdoor``, ``collapsed``, ``inconclusive``) or the
    word of the error that stopped it (``not-found``, ``unsafe``...); ``score``, ``threshold`` and
    ``unet_evaluations`` are None when no scan finished. ``seconds`` is this run's wall time for the
    model; ``from_cache``: the verdict was served from the verdict cache (no UNet work in this run,
    ``unet_evaluations`` is the cached scan's). ``error`` is the one-line message of a failed audit.
    """

    source: str
    report_dir: str
    verdict: str
    exit_code: int
    headline: str
    score: float | None = None
    threshold: float | None = None
    unet_evaluations: int | None = None
    seconds: float = 0.0
    from_cache: bool = False
    commit_sha: str | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    """What :func:`scan_many` did.

    On the main process ``models`` holds every model's row in the order given and ``summary_files``
    the summary written; on another process of an ``accelerate launch`` only its own shard's rows,
    and no summary. ``exit_code`` is the worst of ``models`` (:func:`hfaudit.errors.worst_exit_code`).
    """

    models: list[ModelResult]
    output_dir: Path
    is_main_process: bool = True
    process_index: int = 0
    num_processes: int = 1
    summary_files: list[Path] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    """Sources left out because an earlier one names the same model (:func:`unique_sources`)."""

    @property
    def exit_code(self) -> int:
        return worst_exit_code(m.exit_code for m in self.models)

    @property
    def process_exit_code(self) -> int:
        """The code this process ends with: the run's worst on the main process, 0 on the others.

        Why 0: their rows are in the main process's summary, and a worker that exits non-zero makes
        the launcher stop the others, possibly before the summary is written.
        """
        return self.exit_code if self.is_main_process else 0


class ProcessState(Protocol):
    """The part of ``accelerate.PartialState`` the batch uses (tests pass a fake with two processes)."""

    num_processes: int
    process_index: int

    @property
    def is_main_process(self) -> bool: ...

    def split_between_processes(self, inputs: list[str], apply_padding: bool = False) -> ContextManager[list[str]]: ...

    def wait_for_everyone(self) -> None: ...


def process_state(device: str | None = None) -> ProcessState:
    """Accelerate's ``PartialState``: this process's place under ``accelerate launch``, else one process.

    Created with a process-group timeout of :data:`SHARD_WAIT` when it is the first (an existing
    state is returned as it is). Launched as several processes on the CPU (``--device cpu``,
    ``accelerate launch --cpu``, or no accelerator on the machine), the state is asked for CPU
    processes, which Accelerate does not count otherwise.

    Raises:
        UsageError: the launcher says there are several processes (``WORLD_SIZE``...) and Accelerate
            sees another number: each process would audit every model and overwrite the others' reports.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import get_int_from_env, parse_flag_from_env

    try:  # the variables Accelerate reads: torchrun's, then MPI's
        launched = get_int_from_env(["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"], 1)
    except ValueError:
        launched = 1
    cpu = False
    if launched > 1:
        accelerator = getattr(torch, "accelerator", None)
        has_accelerator = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
        cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not has_accelerator or _device_type(device) == "cpu"
    state = PartialState(cpu=cpu, timeout=SHARD_WAIT)
    if launched > 1 and state.num_processes != launched:
        raise UsageError(f"launched as {launched} processes, but Accelerate sees "
                         f"{state.num_processes}; launch with `accelerate launch` (add --cpu on a machine "
                         "without GPUs)")
    return state


def _device_type(device: str | None) -> str | None:
    """``cpu``, ``cuda``... of a ``--device`` value; None when left to Accelerate or invalid (checked later)."""
    import torch

    if device in (None, "", "auto"):
        return None
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return None


# ---------------------------------------------------------------------------------- sources
def read_sources(path: str | os.PathLike[str]) -> list[str]:
    """The models listed in the file ``path`` (``-``: stdin): one repo id, URI or folder a line.

    Blank lines and comments are skipped: a line whose first non-blank character is ``#``, and the
    rest of a line from a ``#`` that follows a blank. Leading and trailing blanks are stripped.

    Raises:
        UsageError: the file cannot be read, is not UTF-8 text, is too large, or a line holds a
            control character.
    """
    shown = "stdin" if os.fspath(path) == outpaths.STDOUT else os.fspath(path)
    try:
        if os.fspath(path) == outpaths.STDOUT:
            raw = sys.stdin.buffer.read(MAX_FROM_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_FROM_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"--from {shown}: cannot read it ({exc.strerror or exc})") from None
    if len(raw) > MAX_FROM_BYTES:
        raise UsageError(f"--from {shown}: larger than {MAX_FROM_BYTES // (1024 * 1024)} MiB; not a list of models")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"--from {shown}: not UTF-8 text") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = re.split(r"(?:^|\s)#", line, maxsplit=1)[0].strip()
        if not line:
            continue
        if _CONTROL.search(line):
            raise UsageError(f"--from {shown}: line {number} holds a control character")
        out.append(line)
    return out


def source_key(source: str, revision: str | None = None) -> tuple[str, ...]:
    """What ``source`` names, for spotting duplicates: an existing folder by its real path, a Hub
    repo (id, ``hf://`` URI or page address) by repo id and revision, anything else by its text."""
    text = source.strip()
    folder = os.path.expanduser(text)
    with contextlib.suppress(OSError, ValueError):
        if os.path.isdir(folder) and not srcs.is_uri(text):
            return ("folder", os.path.realpath(folder))
    if srcs.is_uri(text):
        try:
            parsed = srcs.parse_uri(text, revision)
        except UsageError:
            return ("text", text)
        return ("hub", parsed.repo_id, parsed.revision or "")
    if is_repo_id(text):
        return ("hub", text, revision or "")
    return ("text", text)


def unique_sources(sources: Sequence[str], revision: str | None = None) -> tuple[list[str], list[str]]:
    """``(kept, dropped)``: ``sources`` stripped, blanks skipped, each model once (the first way it
    was written kept, by :func:`source_key`); ``dropped`` are the later duplicates."""
    kept, dropped, seen = [], [], set()
    for source in sources:
        text = source.strip()
        if not text:
            continue
        key = source_key(text, revision)
        if key in seen:
            dropped.append(text)
        else:
            seen.add(key)
            kept.append(text)
    return kept, dropped


def folder_name(source: str) -> str:
    """A safe name for ``source``'s report folder: a repo id ``org/name`` gives ``org--name`` (with
    ``@revision`` when the source names one), a folder its own name; only ``A-Z a-z 0-9 . _ @ + = -``,
    no leading dot or dash, at most :data:`MAX_NAME` characters, never a Windows device name."""
    text = source.strip()
    folder = os.path.expanduser(text)
    name = None
    if srcs.is_uri(text):
        with contextlib.suppress(UsageError):
            parsed = srcs.parse_uri(text)
            name = parsed.repo_id + (f"@{parsed.revision}" if parsed.revision else "")
    if name is None:
        with contextlib.suppress(OSError, ValueError):
            if os.path.isdir(folder):
                name = os.path.basename(os.path.realpath(folder))
    if name is None:
        name = text
    name = _UNSAFE_CHARS.sub("-", name.replace("/", "--")).strip(".-")[:MAX_NAME].strip(".-")
    if not name:
        return "model"
    if name.split(".")[0].upper() in _WINDOWS_DEVICES:
        name = "_" + name
    return name


def folder_names(sources: Sequence[str]) -> list[str]:
    """:func:`folder_name` of each source, made unique (``-2``, ``-3``... ignoring case, so that a
    case-insensitive file system keeps them apart) and never one of :data:`SUMMARY_FILES`."""
    taken = {n.casefold() for n in SUMMARY_FILES}
    out = []
    for source in sources:
        base = folder_name(source)
        name, i = base, 1
        while name.casefold() in taken:
            i += 1
            name = f"{base}-{i}"
        taken.add(name.casefold())
        out.append(name)
    return out


# ------------------------------------------------------------------------------------ scans
def scan_one(source: str, report_dir: Path, *, revision: str | None = None, token: str | None = None,
             cache_dir: str | os.PathLike[str] | None = None, device: str | None = None,
             allow_pickle: bool = False, config: ScanConfig | None = None,
             verdict_cache: str | os.PathLike[str] | None = None) -> ModelResult:
    """Audit one model into ``report_dir`` as ``hfaudit scan SOURCE -o REPORT_DIR`` would, and return its row.

    Never raises for the model's sake: an ``HfAuditError`` (its error report written, as the single
    scan writes it) or a bug (exit code 70) becomes the row's verdict and error. Ctrl-C still stops.
    """
    started = time.perf_counter()

    def failed(code: int, message: str) -> ModelResult:
        verdict = error_verdict(code)
        return ModelResult(source=source, report_dir=str(report_dir), verdict=verdict, exit_code=code,
                           headline=f"{verdict.upper()}: {message}", seconds=time.perf_counter() - started,
                           error=message)

    try:
        outputs = Outputs(output_dir=report_dir, source=source)
        outputs.check_writable()
        with outputs.guard(source, revision):
            outcome = cached_scan(source, outputs, verdict_cache=verdict_cache, revision=revision, token=token,
                                  cache_dir=cache_dir, device=device, allow_pickle=allow_pickle, config=config)
    except HfAuditError as exc:
        return failed(int(exc.exit_code), str(exc))
    except MemoryError:
        return failed(int(ExitCode.INTERNAL), "out of memory; try --batch-size smaller or --samples fewer")
    except Exception as exc:  # a bug in this model's audit: its row says so, the others still run
        msg = " ".join(str(exc).split())[:300]
        return failed(int(ExitCode.INTERNAL), f"internal error: {type(exc).__name__}: {msg}")
    doc = outcome.doc
    return ModelResult(
        source=source, report_dir=str(report_dir), verdict=str(doc["verdict"]), exit_code=int(outcome.exit_code),
        headline=verdict_line(doc), score=doc.get("score"), threshold=doc.get("threshold"),
        unet_evaluations=doc.get("unet_evaluations"), seconds=time.perf_counter() - started,
        from_cache=outcome.from_cache, commit_sha=(doc.get("source") or {}).get("commit_sha"),
        error=(doc.get("error") or {}).get("message"), notes=list(outcome.notes))


def scan_many(
    sources: Sequence[str],
    output_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    token: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | None = None,
    allow_pickle: bool = False,
    config: ScanConfig | None = None,
    verdict_cache: str | os.PathLike[str] | None = None,
    state: ProcessState | None = None,
    on_result: Callable[[ModelResult, int, int], None] | None = None,
) -> BatchResult:
    """Audit every model of ``sources`` into its own folder under ``output_dir``; write the summary.

    ``sources`` are deduplicated (:func:`unique_sources`); each model's reports go to
    ``output_dir/<name>`` (:func:`folder_names`); ``revision`` applies to every Hub model; the
    other arguments are those of :func:`hfaudit.verdict_cache.cached_scan`. ``state`` (default:
    :func:`process_state`) says which share of the list this process audits. ``on_result(row, i,
    n)`` is called after each of this process's ``n`` models (for a terminal to print progress).

    Raises:
        UsageError: no model, too many, bad settings or device, the output folder, a model's report
            folder or the verdict cache inside an audited model (before any work, for the whole run).
        OutputError: the summary cannot be written.
    """
    from hfaudit.devices import resolve_device

    models, dropped = unique_sources(sources, revision)
    if not models:
        raise UsageError("no model to scan: give Hub repo ids or folders, or --from FILE with one a line")
    if len(models) > MAX_SOURCES:
        raise UsageError(f"{len(models)} models: at most {MAX_SOURCES} in one run")
    cfg = config or ScanConfig()
    cfg.seeded().validate()
    out = Path(output_dir)
    names = folder_names(models)
    protected = [p for s in models for p in outpaths.protected_paths(s)]
    outpaths.check_output_dir(out, protected)
    for source, name in zip(models, names):
        outpaths.check_not_protected(out / name, protected, name=f"the report folder of {source}")
    if verdict_cache is not None:
        outpaths.check_not_protected(Path(verdict_cache).expanduser(), protected, name="--verdict-cache")
    state = state if state is not None else process_state(device)
    resolve_device(device)  # a device this machine lacks: one usage error, not one per model

    folders = dict(zip(models, names))
    rows: list[ModelResult] = []
    with state.split_between_processes(list(models)) as mine:
        for i, source in enumerate(mine, start=1):
            interrupts.check()
            row = scan_one(source, out / folders[source], revision=revision, token=token, cache_dir=cache_dir,
                           device=device, allow_pickle=allow_pickle, config=cfg, verdict_cache=verdict_cache)
            rows.append(row)
            if on_result is not None:
                on_result(row, i, len(mine))
    total, index = state.num_processes, state.process_index
    if total > 1 and not state.is_main_process:
        _write_shard(out, index, total, rows, protected)
    state.wait_for_everyone()
    if not state.is_main_process:
        return BatchResult(models=rows, output_dir=out, is_main_process=False, process_index=index,
                           num_processes=total, duplicates=dropped)
    everyone = {r.source: r for r in rows}
    if total > 1:
        for other in range(total):
            if other != index:
                everyone.update({r.source: r for r in _read_shard(out, other, total)})
    ordered = [everyone.get(s) or _lost(s, out / folders[s]) for s in models]
    result = BatchResult(models=ordered, output_dir=out, process_index=index, num_processes=total,
                         duplicates=dropped)
    result.summary_files = write_summary(result, protected)
    return result


def _lost(source: str, report_dir: Path) -> ModelResult:
    """The row of a model whose process handed back no result (it died)."""
    message = "internal error: the process that audited this model handed back no result"
    return ModelResult(source=source, report_dir=str(report_dir), verdict=error_verdict(int(ExitCode.INTERNAL)),
                       exit_code=int(ExitCode.INTERNAL), headline=f"INTERNAL: {message}", error=message)


# ------------------------------------------------------------------------------ shard files
def _shard_path(out: Path, index: int, total: int) -> Path:
    return out / _SHARD_FILE.format(index=index, total=total)


def _write_shard(out: Path, index: int, total: int, rows: list[ModelResult],
                 protected: list[outpaths.Protected]) -> None:
    staging = outpaths.Staging(list(protected))
    try:
        staging.stage(_shard_path(out, index, total),
                      json.dumps(finite({"format": SHARD_FORMAT, "models": [asdict(r) for r in rows]})))
        staging.commit()
    except BaseException:
        staging.discard()
        raise


def _read_shard(out: Path, index: int, total: int) -> list[ModelResult]:
    """The rows another process handed over (and its file removed); none when the file is missing or broken."""
    path = _shard_path(out, index, total)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        rows = [ModelResult(**row) for row in data["models"]] if data.get("format") == SHARD_FORMAT else []
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        rows = []
    with contextlib.suppress(OSError):
        path.unlink()
    return rows


# ---------------------------------------------------------------------------------- summary
def summary_dict(result: BatchResult) -> dict[str, Any]:
    """``summary.json``: the run's exit code, how many models got each verdict, and every model's row."""
    counts: dict[str, int] = {}
    for m in result.models:
        counts[m.verdict] = counts.get(m.verdict, 0) + 1
    return {"kind": "scan-summary", "hfaudit_version": __version__, "created_at": created_at(),
            "exit_code": result.exit_code, "verdicts": counts, "processes": result.num_processes,
            "duplicates": list(result.duplicates), "models": [asdict(m) for m in result.models]}


def summary_markdown(result: BatchResult) -> str:
    """``summary.md``: one table row per model, linking its report."""
    lines = [f"# hfaudit scan: {_models(len(result.models))}", "",
             f"Exit code {result.exit_code} (the worst of the models'; see docs/cli.md, \"Several models\").", "",
             "| model | verdict | exit | score | UNet evaluations | seconds | from cache | report |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    for m in result.models:
        rel = Path(os.path.relpath(m.report_dir, result.output_dir)).as_posix()
        cells = [_md(m.source), f"**{m.verdict}**", str(m.exit_code), _number(m.score, ".2f"),
                 _number(m.unet_evaluations, "d"), f"{m.seconds:.1f}", "yes" if m.from_cache else "no",
                 f"[{_md(rel)}/report.md]({rel}/report.md)"]
        lines.append("| " + " | ".join(cells) + " |")
    errors = [m for m in result.models if m.error]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {_md(m.source)}: {_md(m.error or '')}" for m in errors]
    return "\n".join(lines) + "\n"


def summary_table(result: BatchResult) -> Table:
    """The summary for a terminal (Rich): one row per model."""
    from hfaudit.report import VERDICT_STYLE

    table = Table(title=f"hfaudit scan: {_models(len(result.models))}, exit code {result.exit_code}")
    for name, justify in (("model", "left"), ("verdict", "left"), ("score", "right"), ("evaluations", "right"),
                          ("seconds", "right"), ("from cache", "left")):
        table.add_column(name, justify=justify)
    for m in result.models:
        table.add_row(m.source, m.verdict, _number(m.score, ".2f"), _number(m.unet_evaluations, "d"),
                      f"{m.seconds:.1f}", "yes" if m.from_cache else "no",
                      style=VERDICT_STYLE.get(m.verdict) or ("bold red" if m.exit_code else None))
    return table


def write_summary(result: BatchResult, protected: list[outpaths.Protected] | None = None) -> list[Path]:
    """Write ``summary.json`` and ``summary.md`` into the output folder, both or neither.

    Raises:
        OutputError: they cannot be written, or lie in an audited model.
    """
    staging = outpaths.Staging(list(protected or []))
    paths = [result.output_dir / name for name in SUMMARY_FILES]
    try:
        staging.stage(paths[0], json.dumps(finite(summary_dict(result)), indent=2, allow_nan=False) + "\n")
        staging.stage(paths[1], summary_markdown(result))
        staging.commit()
    except BaseException:
        staging.discard()
        raise
    return paths


def _models(n: int) -> str:
    return f"{n} model" + ("" if n == 1 else "s")


def _number(value: float | int | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _md(text: str) -> str:
    """``text`` safe in a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")

