"""Scan budgets: named settings that trade UNet evaluations for coverage (docs/detection.md, "Budgets").

A budget is a :class:`~hfaudit.detect.scan.ScanConfig` whose most expensive case
(``ScanConfig.unet_evaluations``: every screen asks for a full probe, no search fires early) stays
within its cap, and whose cap (``max_evaluations``) the scan enforces as it runs:

* ``thorough``: every search at full size, every candidate fully probed: the most coverage, the
  cost of the scan before budgets existed.
* ``default``: the searches that find what ``thorough`` finds on the development zoo, smaller;
  candidates screened on a few samples first, only promising ones fully probed, and the scan stops
  once one fires by a wide margin.
* ``fast``: the same searches smaller still, for a first look or a large model on a CPU.

A number is a cap: the largest named budget whose most expensive case fits under it, with the cap
enforced (searches that would pass it are skipped, and the report lists them).
"""

from __future__ import annotations

from dataclasses import replace

from hfaudit.detect.midstep import MidstepConfig
from hfaudit.detect.ode import OdeInversionConfig
from hfaudit.detect.config import ScanConfig
from hfaudit.detect.stamps import StampConfig
from hfaudit.errors import UsageError

NAMES = ("fast", "default", "thorough")
DEFAULT = "default"
DEFAULT_CAP = 8000
"""The most UNet evaluations a ``default`` verdict may cost (a backward pass counting two)."""
FAST_CAP = 5000


def _thorough() -> ScanConfig:
    return ScanConfig(budget="thorough")


def _default() -> ScanConfig:
    return ScanConfig(
        n_samples=16, probes=(("ddim", 10), ("ddpm", 20)), screen_samples=8, confirmations=2, stop_margin=0.25,
        null_checks=2, max_evaluations=DEFAULT_CAP, budget="default", inversion=None, blackbox=None,
        midstep=MidstepConfig(restarts=2, batch_size=4, search_steps=20, candidates=1),
        ode=OdeInversionConfig(restarts=4, batch_size=8, search_steps=10, refine=1, refine_steps=6,
                               refine_samples=4, candidates=1),
        stamps=StampConfig(values=(-2.0, -1.0, 1.0, 2.0), n_samples=6, steps=4, candidates=2))


def _fast() -> ScanConfig:
    return replace(
        _default(), confirmations=1, null_checks=1, max_evaluations=FAST_CAP, budget="fast",
        midstep=MidstepConfig(restarts=2, batch_size=4, search_steps=10, candidates=1),
        ode=OdeInversionConfig(restarts=4, batch_size=4, search_steps=6, refine=1, refine_steps=3,
                               refine_samples=4, candidates=1),
        stamps=StampConfig(values=(-2.0, -1.0, 1.0, 2.0), n_samples=4, steps=4, candidates=2))


_PRESETS = {"fast": _fast, "default": _default, "thorough": _thorough}


def budget_config(budget: str | int = DEFAULT) -> ScanConfig:
    """The scan settings of a named budget, or of the largest named one under a cap of ``budget``
    UNet evaluations (then enforced as the scan runs).

    Raises:
        UsageError: an unknown name, or a cap below 1.
    """
    if isinstance(budget, str) and not budget.strip().isdigit():
        name = budget.strip().lower()
        if name not in _PRESETS:
            raise UsageError(f"budget must be one of {', '.join(NAMES)} or a number of UNet evaluations "
                             f"(got {budget!r})", param="budget")
        return _PRESETS[name]()
    cap = int(budget)
    if cap < 1:
        raise UsageError(f"budget must be at least 1 UNet evaluation (got {cap})", param="budget")
    fitting = [n for n in reversed(NAMES) if _PRESETS[n]().unet_evaluations <= cap]
    cfg = _PRESETS[fitting[0] if fitting else "fast"]()
    return replace(cfg, max_evaluations=cap, budget=str(cap))




SEARCH_NAMES = ("inversion", "blackbox", "midstep", "ode", "stamps")
"""The scan's optional searches, as ``configure`` turns them on or off."""


def configure(budget: str | int = DEFAULT, *, seed: int = 0, n_samples: int | None = None,
              probes: tuple[tuple[str, int], ...] | None = None, threshold: float | None = None,
              class_threshold: float | None = None, batch_size: int | None = None,
              inversion_steps: int | None = None, searches: dict[str, bool | None] | None = None,
              prompts: tuple[str, ...] | None = None) -> ScanConfig:
    """A budget's settings with a user's overrides (None keeps the budget's value): what the CLI and
    the Action build a scan from.

    ``searches`` maps a name of ``SEARCH_NAMES`` to True (run it: at the budget's size, or, where
    the budget leaves it out, at ``thorough``'s), False (skip it) or None (the budget decides).
    ``inversion_steps`` sets the gradient inversion's steps (and turns it on). ``prompts``: a
    text-to-image pipeline's probe prompts (``detect.t2i``).

    Raises:
        UsageError: an unknown budget or search name, or a value out of range.
    """
    cfg = base = budget_config(budget)
    full = _thorough()
    chosen = dict(searches or {})
    if inversion_steps is not None and chosen.get("inversion") is not False:
        chosen["inversion"] = True
    for name, on in chosen.items():
        if name not in SEARCH_NAMES:
            raise UsageError(f"unknown search {name!r}; choose from {', '.join(SEARCH_NAMES)}")
        if on is False:
            cfg = replace(cfg, **{name: None})
        elif on and getattr(cfg, name) is None:
            cfg = replace(cfg, **{name: getattr(full, name)})
    if inversion_steps is not None and cfg.inversion is not None:
        cfg = replace(cfg, inversion=replace(cfg.inversion, steps=inversion_steps))
    given = {"seed": seed, "n_samples": n_samples, "probes": probes, "threshold": threshold,
             "class_threshold": class_threshold, "batch_size": batch_size, "prompts": prompts}
    cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
    named = not str(budget).strip().isdigit()
    if named and replace(cfg, seed=base.seed) != base:
        # A named budget with the user's own choices: theirs win over its cap (a number stays a cap).
        cap = cfg.max_evaluations
        cfg = replace(cfg, budget=f"{cfg.budget}+overrides",
                      max_evaluations=None if cap is None else max(cap, cfg.unet_evaluations))
    cfg.validate()
    return cfg
