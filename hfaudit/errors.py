"""Every error hfaudit raises on purpose, each carrying its exit code (docs/design.md section 6).

The CLI turns any ``HfAuditError`` into one line on stderr and exits with ``exit_code``; nothing
else in the package maps errors to exit codes. What each code means is written once, here
(``EXIT_CODE_MEANINGS``), and rendered for the README (``exit_code_table``) and for the ``--help``
epilogs (``exit_code_epilog``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    REMOVAL_UNSUPPORTED = 8
    INTERNAL = 70
    INTERRUPTED = 130


EXIT_CODE_MEANINGS: dict[ExitCode, str] = {
    ExitCode.CLEAN: "clean: no backdoor found (or `hfaudit clean`: cleaned and verified, or nothing to remove); "
                    "a `collapsed` verdict (samples collapse without any trigger) also exits 0, with a warning",
    ExitCode.BACKDOOR: "backdoor found (`hfaudit scan` only)",
    ExitCode.USAGE: "usage error: bad flag value, or an output that cannot or must not be written (inside the audited "
                    "model or its Hub cache folder, a FIFO or device, two formats on stdout)",
    ExitCode.NOT_FOUND: "repo, revision or folder not found, or no access (private or gated repo without a sufficient "
                        "token); not cached while offline; Git LFS pointers, not files (`git lfs pull`); the Hub "
                        "unreachable; a push that failed (nothing committed)",
    ExitCode.UNSUPPORTED: "unsupported model: not a diffusers pipeline, a pipeline type hfaudit does not audit yet, "
                          "configs that are broken or disagree (a missing scheduler config, `sample_size: 0`, a "
                          "schedule outside (0, 1)...), sizes beyond hfaudit's limits, or a scan that needs more "
                          "memory than is free",
    ExitCode.UNSAFE: "unsafe or corrupt checkpoint: pickle-only (without `--allow-pickle`), a flagged pickle, a "
                     "truncated or lying safetensors file (any shard), a non-float dtype or a missing tensor, NaN/Inf "
                     "weights, a FIFO or device where a file should be",
    ExitCode.CLEANING_FAILED: "`hfaudit clean` only: the repair did not verify (nothing written or pushed unless "
                              "`--force`), or the trigger found is a stamp, which it does not remove yet (nothing "
                              "written)",
    ExitCode.INCONCLUSIVE: "inconclusive: the samples or scores are not finite (NaN/Inf), or the budget left a "
                           "promising candidate unconfirmed or a collapse unchecked against its nulls, so no "
                           "verdict can be drawn; never reported as clean",
    ExitCode.REMOVAL_UNSUPPORTED: "`hfaudit clean` only: removal is not supported for this pipeline kind yet (latent "
                                  "or text-to-image; `hfaudit scan` audits them); refused from model_index.json, "
                                  "nothing written",
    ExitCode.INTERNAL: "internal error (a bug: please report it; `HF_DEBUG=1` shows the traceback)",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C, or SIGTERM when a CI job is cancelled); partial outputs are removed",
}
"""One line per exit code, for the README's table (``exit_code_table``)."""

_EPILOG_TERMS: dict[ExitCode, str] = {
    ExitCode.CLEAN: "clean",
    ExitCode.BACKDOOR: "backdoor",
    ExitCode.USAGE: "usage",
    ExitCode.NOT_FOUND: "repo not found/no access/not cached offline/Git LFS pointers/Hub unreachable",
    ExitCode.UNSUPPORTED: "unsupported model",
    ExitCode.UNSAFE: "unsafe or corrupt checkpoint",
    ExitCode.CLEANING_FAILED: "cleaning failed (the repair did not verify: nothing written unless --force; "
                              "or the trigger is a stamp: nothing written)",
    ExitCode.INCONCLUSIVE: "inconclusive (non-finite samples or scores, or a candidate the budget left unconfirmed)",
    ExitCode.REMOVAL_UNSUPPORTED: "removal not supported for this pipeline kind yet (nothing written)",
    ExitCode.INTERNAL: "internal error",
    ExitCode.INTERRUPTED: "interrupted",
}

_COMMAND_EPILOG_TERMS: dict[str, dict[ExitCode, str | None]] = {
    # None: the command never exits with that code.
    "scan": {ExitCode.CLEANING_FAILED: None, ExitCode.REMOVAL_UNSUPPORTED: None},
    "clean": {ExitCode.CLEAN: "cleaned and verified or nothing to remove", ExitCode.BACKDOOR: None,
              ExitCode.NOT_FOUND: "repo not found/no access/not cached offline/Git LFS pointers/Hub unreachable/"
                                  "push failed"},
}


def exit_code_table() -> str:
    """The Markdown table of every exit code and its meaning (the README holds it verbatim)."""
    rows = ["| code | meaning |", "|---:|---|"]
    rows += [f"| {int(code)} | {EXIT_CODE_MEANINGS[code]} |" for code in ExitCode]
    return "\n".join(rows) + "\n"


def exit_code_epilog(command: str) -> str:
    """One paragraph, "Exit codes: 0 clean, 1 backdoor, ...", for the ``--help`` epilog of ``command``.

    Raises:
        KeyError: ``command`` is not ``scan`` or ``clean``.
    """
    overrides = _COMMAND_EPILOG_TERMS[command]
    terms = []
    for code in ExitCode:
        term = overrides.get(code, _EPILOG_TERMS[code])
        if term is not None:
            terms.append(f"{int(code)} {term}")
    return "Exit codes: " + ", ".join(terms) + "."


SEVERITY: tuple[ExitCode, ...] = (
    ExitCode.CLEAN, ExitCode.INCONCLUSIVE,
    ExitCode.REMOVAL_UNSUPPORTED, ExitCode.UNSUPPORTED, ExitCode.NOT_FOUND, ExitCode.USAGE, ExitCode.INTERNAL,
    ExitCode.CLEANING_FAILED, ExitCode.BACKDOOR, ExitCode.UNSAFE,
    ExitCode.INTERRUPTED,
)
"""Every exit code, least severe first: the order in which a run of several audits picks its own.

Why this order: a threat found in a model (a backdoor; above it an unsafe checkpoint, which runs
code or breaks whoever loads it) must never be hidden behind another model's failure to audit, since
a CI job may retry on a network error (3) and would then miss the threat. An audit that could not run
(8 removal unsupported, 4 unsupported, 3 not found, 2 usage, 70 internal: nothing is known about that
model) outranks an inconclusive one (7: it ran, its evidence is broken), which outranks clean. An interrupted run
outranks everything: what it did not reach is unknown. A code outside :class:`ExitCode` counts as
internal.
"""


def worst_exit_code(codes: Iterable[int]) -> int:
    """The most severe of ``codes`` by :data:`SEVERITY` (the first of equals); 0 for none."""
    rank = {int(code): i for i, code in enumerate(SEVERITY)}
    return max((int(c) for c in codes), key=lambda c: rank.get(c, rank[int(ExitCode.INTERNAL)]), default=0)


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


class UsageError(HfAuditError, ValueError):
    """A bad argument value or combination (a ``ValueError`` to library callers).

    The message names the library parameter (``n_samples must be ...``) and ``param`` says which it
    is, so that the CLI can name its own flag instead (``--samples must be ...``).
    """

    def __init__(self, message: str, findings: Sequence[Any] = (), *, param: str | None = None) -> None:
        super().__init__(message, findings)
        self.param = param

    exit_code = ExitCode.USAGE


class OutputError(HfAuditError, OSError):
    """An output path that cannot be written (or would overwrite something it must not); an ``OSError``."""

    exit_code = ExitCode.USAGE


class RepoNotFoundError(HfAuditError):
    """The model's files are not there: the repo, revision or folder does not exist, is private and no
    (valid) token was given, is not cached while offline, or holds Git LFS pointers instead of files."""

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


class RemovalUnsupportedError(UnsupportedModelError):
    """``hfaudit clean`` on a pipeline hfaudit audits but cannot repair yet (latent or text-to-image):
    decided from model_index.json, before any weights are downloaded or anything is written."""

    exit_code = ExitCode.REMOVAL_UNSUPPORTED


class CleaningFailedError(HfAuditError):
    """``hfaudit clean`` could not verify the repair: the backdoor still fires, the re-scan still
    finds one, or benign fidelity dropped too much. Nothing was written or pushed (unless forced)."""

    exit_code = ExitCode.CLEANING_FAILED


class InconclusiveError(HfAuditError):
    """The audit ran but cannot conclude: its evidence is broken (non-finite samples or scores), or a
    candidate fired that the budget left unconfirmed or unchecked against its null. No verdict, and
    above all not a clean one: a model whose samples are NaN cannot be shown free of a backdoor."""

    exit_code = ExitCode.INCONCLUSIVE
    unet_evaluations: int | None = None
    """What the scan spent before it stopped, where it counted (benchmarks add it up)."""
    candidates: tuple[Any, ...] = ()
    """The scan's candidates (``detect.scan.Candidate``) that fired without a conclusion: what a
    repair must still break. Empty when the evidence itself was broken."""
