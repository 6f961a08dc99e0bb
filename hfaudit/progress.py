"""Rich progress bars, on stderr so machine output on stdout stays clean."""

from __future__ import annotations

from hfaudit import interrupts
from hfaudit.constants import quiet

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

_stderr = Console(stderr=True)


def progress_bar() -> Progress:
    """A progress bar with an ``info`` field (losses, scores); disabled when HFAUDIT_QUIET is set.

    Every long phase opens one, so it is where an interrupt swallowed during imports resurfaces.
    """
    interrupts.check()
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
