"""Every error hfaudit raises on purpose, each carrying its exit code (DESIGN.md section 6).

The CLI turns any ``HfAuditError`` into one line on stderr and exits with ``exit_code``; nothing
else in the package maps errors to exit codes.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes; the verdict and the exit code never disagree."""

    CLEAN = 0
    BACKDOOR = 1
    USAGE = 2
    NOT_FOUND = 3
    UNSUPPORTED = 4
    UNSAFE = 5
    CLEANING_FAILED = 6
    INCONCLUSIVE = 7
    INTERNAL = 70
    INTERRUPTED = 130


class HfAuditError(Exception):
    """Base class: a message fit for one line, and the exit code it maps to."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, findings: Sequence[Any] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.findings = list(findings)
        """Static findings (``hfaudit.safety.Finding``) behind the error, so reports can still name them."""

    def __str__(self) -> str:  # one line, always
        return " ".join(self.message.split())


class UsageError(HfAuditError):
    """A bad flag value or argument combination."""

    exit_code = ExitCode.USAGE


class OutputError(HfAuditError):
    """An output path that cannot be written (or would overwrite something it must not)."""

    exit_code = ExitCode.USAGE


class RepoNotFoundError(HfAuditError):
    """The repo, revision or folder does not exist, or is private and no (valid) token was given."""

    exit_code = ExitCode.NOT_FOUND


class UnsupportedModelError(HfAuditError):
    """The pipeline exists but is not one hfaudit can audit (e.g. text-to-image, or no UNet)."""

    exit_code = ExitCode.UNSUPPORTED


class UnsafeCheckpointError(HfAuditError):
    """Weights that hfaudit refuses to load: pickle-only, a flagged pickle, a corrupt safetensors."""

    exit_code = ExitCode.UNSAFE


class PushError(HfAuditError):
    """Pushing the cleaned model failed; the remote was left unchanged."""

    exit_code = ExitCode.NOT_FOUND


class CleaningFailedError(HfAuditError):
    """``hfaudit clean`` could not verify the repair: the backdoor still fires, the re-scan still
    finds one, or benign fidelity dropped too much. Nothing was written or pushed (unless forced)."""

    exit_code = ExitCode.CLEANING_FAILED


class InconclusiveError(HfAuditError):
    """The audit ran but its evidence is broken (non-finite samples or scores): no verdict, and
    above all not a clean one. A model whose samples are NaN cannot be shown free of a backdoor."""

    exit_code = ExitCode.INCONCLUSIVE
