"""hfaudit: audit diffusion models on the Hugging Face Hub for backdoors, and repair them.

The library API::

    from hfaudit import scan, clean, ScanConfig, CleanConfig, ExitCode
    result = scan("org/model", config=ScanConfig(seed=1))
    result.verdict, result.exit_code

Names load lazily, so ``import hfaudit`` (and ``hfaudit --help``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "scan": "hfaudit.detect.scan",
    "ScanConfig": "hfaudit.detect.config",
    "clean": "hfaudit.cleaning",
    "CleanConfig": "hfaudit.clean_results",
    "CleanResult": "hfaudit.clean_results",
    "ScanResult": "hfaudit.results",
    "ExitCode": "hfaudit.errors",
    "Verdict": "hfaudit.results",
    "HfAuditError": "hfaudit.errors",
    "UsageError": "hfaudit.errors",
    "OutputError": "hfaudit.errors",
    "RepoNotFoundError": "hfaudit.errors",
    "UnsupportedModelError": "hfaudit.errors",
    "UnsafeCheckpointError": "hfaudit.errors",
    "PushError": "hfaudit.errors",
    "CleaningFailedError": "hfaudit.errors",
    "InconclusiveError": "hfaudit.errors",
}
"""Public name -> the module that defines it."""

__all__ = [
    "__version__", "scan", "ScanConfig", "clean", "CleanConfig", "CleanResult", "ScanResult", "ExitCode", "Verdict",
    "HfAuditError", "UsageError", "OutputError", "RepoNotFoundError", "UnsupportedModelError",
    "UnsafeCheckpointError", "PushError", "CleaningFailedError", "InconclusiveError",
]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ imports on first use
    from hfaudit.clean_results import CleanConfig, CleanResult
    from hfaudit.cleaning import clean
    from hfaudit.detect.config import ScanConfig
    from hfaudit.detect.scan import scan
    from hfaudit.errors import (
        CleaningFailedError,
        ExitCode,
        HfAuditError,
        InconclusiveError,
        OutputError,
        PushError,
        RepoNotFoundError,
        UnsafeCheckpointError,
        UnsupportedModelError,
        UsageError,
    )
    from hfaudit.results import ScanResult, Verdict


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'hfaudit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
