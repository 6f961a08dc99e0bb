"""Progress of the long phases, on stderr so machine output on stdout stays clean.

On a terminal: Rich progress bars (transient: they vanish when the phase ends). Where stderr is not
a terminal (a CI log, a pipe) those bars print nothing, and an hour-long scan would look hung; there
the same object prints plain lines instead: one when a phase starts, one when it ends with its
elapsed time, and a heartbeat with its count in between when a phase runs long. ``HFAUDIT_QUIET``
silences both. Callers only ever see :func:`progress_bar`: the mode is a property of what it returns.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from hfaudit import interrupts
from hfaudit.constants import quiet

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_stderr = Console(stderr=True)

HEARTBEAT_S = 60.0
"""Seconds between two lines of one running phase in line mode (CI services kill jobs silent for 10 min)."""
PREFIX = "hfaudit: "


def progress_bar() -> Progress:
    """A progress display with an ``info`` field (losses, scores) for one or more phases.

    Rich bars on a terminal; :class:`LineProgress` (plain start/end lines) where stderr is not a
    terminal; nothing when HFAUDIT_QUIET is set. Every long phase opens one, so it is also where an
    interrupt swallowed during imports resurfaces.
    """
    interrupts.check()
    if not quiet() and not stderr_is_terminal():
        return LineProgress()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=_stderr,
        transient=True,
        disable=quiet(),
    )


def stderr_is_terminal() -> bool:
    """Whether stderr is a terminal, by the OS alone: ``FORCE_COLOR`` (often set in CI for coloured
    logs) makes Rich draw bars, and bars in a log are noise, so it must not decide the mode."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


@dataclass
class _Phase:
    description: str
    label: str
    info: str
    started: float
    last_line: float
    ended: bool = False


class LineProgress(Progress):
    """A :class:`rich.progress.Progress` that draws no bar and logs plain lines instead.

    ``add_task`` prints ``hfaudit: <description>: <info> ...``; the task reaching its total (or the
    display closing) prints ``... done in <elapsed>``; an update more than ``heartbeat_s`` after
    the phase's last line prints ``<description>: <info> <completed>/<total> (<elapsed>)``. A display closed by an exception says
    ``stopped after`` instead of ``done in``. Lines go to ``sys.stderr`` as it is at print time.
    """

    def __init__(self, heartbeat_s: float = HEARTBEAT_S) -> None:
        super().__init__(disable=True)
        self.heartbeat_s = heartbeat_s
        self._phases: dict[TaskID, _Phase] = {}

    def add_task(self, description: str, start: bool = True, total: float | None = 100.0, completed: int = 0,
                 visible: bool = True, **fields: Any) -> TaskID:
        task_id = super().add_task(description, start=start, total=total, completed=completed, visible=visible,
                                   **fields)
        info = str(fields.get("info") or "")
        now = time.monotonic()
        phase = _Phase(description, f"{description}: {info}" if info else description, info, now, now)
        self._phases[task_id] = phase
        _line(f"{phase.label} ...")
        return task_id

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None,
                 exc_tb: TracebackType | None) -> None:
        for task_id in list(self._phases):
            self._end(task_id, failed=exc_type is not None)
        super().__exit__(exc_type, exc_val, exc_tb)

    def _log(self, task_id: TaskID) -> None:
        phase = self._phases.get(task_id)
        if phase is None or phase.ended:
            return
        task = self._tasks[task_id]
        if task.total is not None and task.completed >= task.total:
            self._end(task_id)
            return
        now = time.monotonic()
        if now - phase.last_line >= self.heartbeat_s:
            phase.last_line = now
            count = f"{task.completed:g}" + ("" if task.total is None else f"/{task.total:g}")
            info = str(task.fields.get("info") or "")
            _line(f"{phase.description}: {f'{info} ' if info else ''}{count} ({elapsed_text(now - phase.started)})")

    def _end(self, task_id: TaskID, failed: bool = False) -> None:
        phase = self._phases[task_id]
        if phase.ended:
            return
        phase.ended = True
        # The label as it started, unless the info moved on (then it named only the first item).
        info = str(self._tasks[task_id].fields.get("info") or "")
        label = phase.label if info == phase.info else phase.description
        elapsed = elapsed_text(time.monotonic() - phase.started)
        _line(f"{label} stopped after {elapsed}" if failed else f"{label} done in {elapsed}")


def elapsed_text(seconds: float) -> str:
    """``12.3 s`` under a minute, ``4 min 05 s`` above."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s"


def _line(text: str) -> None:
    stream = sys.stderr
    stream.write(f"{PREFIX}{text}\n")
    stream.flush()
