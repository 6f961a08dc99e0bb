"""The package and ``--help`` state the contract and the why; measurement history lives elsewhere.

Dates, ``/tmp`` experiments, benchmark-zoo member names, wall-clock timings and quoted evaluation
counts go stale with every rebuild of the zoo or change of a default, and a maintainer cannot check
them. Figures a maintainer needs belong in ``docs/`` (``docs/notes-from-code.md``) or
``CHANGELOG.md``; a cost a user needs is computed from the config (``ScanConfig.phase_evaluations``).
Shipped example names (``examples/models/digits-*``) may appear: code and examples use them.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hfaudit"
TEXT_SUFFIXES = {".py", ".md", ".json", ".txt", ".toml", ".yml", ".yaml", ".cfg"}

_NUM = r"\d+(?:\.\d+)?(?:-\d+(?:\.\d+)?)?"  # 18, 0.5, 13-15, 6.5-7
HISTORY_PATTERNS: dict[str, re.Pattern[str]] = {
    "an ISO date": re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    "a /tmp experiment": re.compile(r"(?<![\w.])/tmp\b"),
    "a timing": re.compile(
        rf"\b{_NUM} ?(?:s|sec|seconds|min|minutes) (?:on|a|an|per|more|each|with|of)\b"  # "18 s more", "6-7 s on"
        rf"|\btook (?:about |around |some )?{_NUM} ?(?:s|sec|seconds|min|minutes)\b"  # "took 17-20 s"
        r"|\bon \d+ CPU cores?\b"),  # "on 2 CPU cores": the hardware a timing was taken on
    "a quoted evaluation count": re.compile(
        r"\b\d{1,3}(?:,\d{3})+\b[^.\n]{0,40}?\bevaluations\b"  # "13,168 of the scan's 78,440 UNet evaluations"
        r"|\b\d{2,}(?: \w+){0,3} evaluations\b"),  # "costs 1920 UNet evaluations"
}

ZOO_PATTERN = re.compile(r"(?<![\w-])(?:bd|troj|villan)-[a-z0-9]+(?:-[a-z0-9]+)*(?![\w-])"
                         r"|(?<![\w-])clean-(?:16|8|ft)-[a-z0-9]+(?:-[a-z0-9]+)*(?![\w-])")
"""The zoo's naming scheme, for when ``benchmarks.zoo`` cannot be imported."""


def zoo_names_pattern() -> re.Pattern[str]:
    """The names of the benchmark zoo's members that are not shipped (``benchmarks/zoo.py``), or the
    naming scheme when the zoo cannot be imported. Shipped members (``examples/models``) may stay."""
    try:
        zoo = importlib.import_module("benchmarks.zoo")
        names = sorted((r.name for r in zoo.RECIPES if not r.shipped), key=len, reverse=True)
    except Exception:  # noqa: BLE001 - moved, renamed or broken: fall back to the naming scheme
        return ZOO_PATTERN
    if not names:
        return ZOO_PATTERN
    return re.compile(r"(?<![\w-])(?:" + "|".join(map(re.escape, names)) + r")(?![\w-])")


def history_in(text: str, zoo: re.Pattern[str]) -> list[str]:
    """``line N: <what>: <match>`` for every piece of measurement history in ``text``."""
    found = []
    patterns = {**HISTORY_PATTERNS, "a zoo member name": zoo}
    for what, pattern in patterns.items():
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(f"line {line}: {what}: {m.group(0)!r}")
    return found


def package_files() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*")
                  if p.is_file() and p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def zoo() -> re.Pattern[str]:
    return zoo_names_pattern()


@pytest.mark.parametrize("path", package_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_package_file_holds_no_measurement_history(path: Path, zoo: re.Pattern[str]) -> None:
    found = history_in(path.read_text(encoding="utf-8", errors="replace"), zoo)
    assert not found, f"{path.relative_to(ROOT)} holds measurement history:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("argv", [["--help"], ["scan", "--help"], ["clean", "--help"]], ids=" ".join)
def test_help_holds_no_measurement_history(argv: list[str], zoo: re.Pattern[str]) -> None:
    from typer.testing import CliRunner

    from hfaudit.cli import app

    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    # Rich wraps text in boxes: drop escape codes and box drawing, join wrapped lines.
    text = re.sub(r"\x1b\[[0-9;]*m", "", result.output)
    text = re.sub(r"[\s\u2500-\u257f]+", " ", text)
    assert "Usage" in text
    found = history_in(text, zoo)
    assert not found, f"hfaudit {' '.join(argv)} holds measurement history:\n  " + "\n  ".join(found)


@pytest.mark.parametrize("text", [
    "On the zoo build of 2026-11-29 it found the trigger",
    "(0.06-0.38 at 0.7; ``/tmp`` experiment)",
    "its searches: about 18 s more on a 16x16 model",
    "the searches took 13-15 s on the 16x16 examples",
    "the screen took 4.5 s)",
    "measured on 2 CPU cores",
    "Both together cost 13,168 of the scan's 78,440 UNet evaluations",
    "About 64,000 UNet evaluations, 16 times the scan default",
    "Each costs 1920 UNet evaluations",
    "Measured on the zoo's ``troj-patch-d2i``",
    "``bd-glasses-cornerbox-rgb``'s planted trigger",
    "a fine-tuned control (clean-ft-w16x3)",
    "villan-glasses-hat-8: MSCR 0.03",
])
def test_the_patterns_catch_history(text: str, zoo: re.Pattern[str]) -> None:
    assert history_in(text, zoo), text
    assert history_in(text, ZOO_PATTERN) or "zoo member" not in text  # the fallback too


@pytest.mark.parametrize("text", [
    "Default: ddim:10 and ddpm:50.",
    "Write a SARIF 2.1.0 report; tested on torch 2.13.0",
    "the directions the model passes least of at 0.8 T",
    "# 2 s slack for coarse clocks",
    "hfaudit scan examples/models/digits-baddiffusion -o audit",
    "Antithetic perturbation pairs (2 objective evaluations each)",
    "no answer within 10 s; set HF_HUB_DOWNLOAD_TIMEOUT",
    "a 100,000-pixel image",
    "the defaults fit a 2-core CPU",
    "clean-looking samples, a backdoor-minus-clean importance",
    "sha256 0123456789abcdef-2026",
])
def test_the_patterns_spare_contract_text(text: str, zoo: re.Pattern[str]) -> None:
    assert not history_in(text, zoo), history_in(text, zoo)
