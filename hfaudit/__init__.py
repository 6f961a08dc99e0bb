"""hfaudit: audit diffusion models on the Hugging Face Hub for backdoors, and repair them."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "scan", "ScanConfig", "ScanResult"]


def __getattr__(name: str):
    # Lazy imports keep `hfaudit --help` fast (torch and diffusers load only when needed).
    if name in ("scan", "ScanConfig"):
        from hfaudit.detect import scan as _scan

        return getattr(_scan, name)
    if name == "ScanResult":
        from hfaudit.results import ScanResult

        return ScanResult
    raise AttributeError(name)
