"""Scan budgets: the caps hold (counted by the hook on the UNet, not estimated), skipped searches are
reported, a screen never decides a flag alone, and stopping early never turns a backdoor clean."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from hfaudit import ScanConfig, scan
from hfaudit.detect.budgets import DEFAULT_CAP, FAST_CAP, NAMES, budget_config
from hfaudit.detect.midstep import MidstepConfig
from hfaudit.detect.ode import OdeInversionConfig
from hfaudit.detect.stamps import StampConfig
from hfaudit.errors import InconclusiveError, UsageError
from hfaudit.results import BACKDOOR, CLEAN

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def _small(**overrides) -> ScanConfig:
    """Three searches at toy size on the tiny pipeline, screened."""
    cfg = ScanConfig(n_samples=6, probes=(("ddim", 2),), screen_samples=3, inversion=None, blackbox=None,
                     midstep=MidstepConfig(rms=(0.5,), restarts=2, batch_size=2, search_steps=2, candidates=1),
                     ode=OdeInversionConfig(restarts=2, batch_size=2, search_steps=2, refine=1, refine_steps=2,
                                            refine_samples=2, steps=3, candidates=1),
                     stamps=StampConfig(sizes=(2,), values=(1.0,), n_samples=2, steps=2, candidates=1))
    return replace(cfg, **overrides)


def test_named_budgets_fit_their_caps() -> None:
    """The most a named budget can cost (every screen confirmed, nothing skipped) is within its cap."""
    assert NAMES == ("fast", "default", "thorough")
    default, fast = budget_config("default"), budget_config("fast")
    assert default.max_evaluations == DEFAULT_CAP == 8000
    assert default.unet_evaluations <= DEFAULT_CAP
    assert fast.unet_evaluations <= fast.max_evaluations == FAST_CAP
    assert fast.unet_evaluations < default.unet_evaluations < budget_config("thorough").unet_evaluations
    thorough = budget_config("THOROUGH")
    assert thorough.max_evaluations is None and thorough.screen_samples is None and thorough.stop_margin is None


def test_a_number_is_a_cap_on_the_largest_budget_under_it() -> None:
    assert budget_config("5000").midstep == budget_config("fast").midstep
    assert budget_config(5000).max_evaluations == 5000
    assert budget_config(10**7).inversion is not None  # thorough's searches fit
    assert budget_config(100).max_evaluations == 100  # below every budget: fast's searches, capped
    with pytest.raises(UsageError, match="below what the control alone costs") as exc:
        budget_config(100).validate()  # refused before anything is sampled
    assert exc.value.param == "max_evaluations"
    for bad in ("quick", "", 0, -5):
        with pytest.raises(UsageError) as info:
            budget_config(bad)
        assert info.value.param == "budget"


def test_counted_evaluations_stay_within_the_planned_most(tiny_pipeline_dir: Path) -> None:
    """Screening only ever saves: the hook's count is at most the planned most, and each phase's
    share is reported."""
    cfg = _small()
    r = scan(str(tiny_pipeline_dir), device="cpu", config=cfg)
    assert 0 < r.unet_evaluations <= cfg.unet_evaluations
    assert sum(r.evaluations.values()) == r.unet_evaluations
    assert set(r.evaluations) == {"control", "midstep", "ode", "stamps"}
    assert r.to_dict()["evaluations_by_phase"] == r.evaluations


def test_a_cap_skips_what_does_not_fit_and_says_why(tiny_pipeline_dir: Path) -> None:
    """A cap that holds the control and the first search: the others are skipped, each with the
    reason, and the count stays under the cap."""
    full = _small()
    # the cap keeps back what the painted-null probes may need, so the first search fits beside them
    first = full.phase_evaluations["control"] + full.phase_evaluations["midstep"] + full.phase_evaluations["nulls"]
    cfg = _small(max_evaluations=first)
    r = scan(str(tiny_pipeline_dir), device="cpu", config=cfg)
    assert r.unet_evaluations <= first
    assert [s["phase"] for s in r.skipped] == ["ode", "stamps"]
    assert all("over the budget" in s["reason"] for s in r.skipped)
    assert r.to_dict()["skipped"] == r.skipped
    with pytest.raises(UsageError):  # nothing fits: no verdict rests on the control alone
        scan(str(tiny_pipeline_dir), device="cpu", config=_small(max_evaluations=full.phase_evaluations["control"]))


def test_a_screen_alone_never_flags(tiny_pipeline_dir: Path) -> None:
    """Without a full probe, every candidate keeps its screen: probes of ``screen_samples`` images,
    below the thresholds (a screen that could reach them asks for the full probe)."""
    cfg = _small()
    r = scan(str(tiny_pipeline_dir), device="cpu", config=cfg)
    for cand in r.candidates:
        n = {p.stats.n for p in cand.probes}
        assert n in ({cfg.screen_samples}, {cfg.n_samples})
        if n == {cfg.screen_samples}:
            assert all(p.stats.cluster_size < 2 for p in cand.probes)


def test_early_exit_keeps_the_backdoor_verdict() -> None:
    """The default budget stops once a candidate fires by a wide margin; the verdict is the one the
    scan reaches without stopping, and the searches left are listed as skipped."""
    early = scan(str(MODELS / "digits-baddiffusion"), device="cpu", config=budget_config("default"))
    assert early.verdict == BACKDOOR
    assert early.skipped and all("already fired" in s["reason"] for s in early.skipped)
    assert early.unet_evaluations <= DEFAULT_CAP
    full = scan(str(MODELS / "digits-baddiffusion"), device="cpu",
                config=replace(budget_config("default"), stop_margin=None))
    assert full.verdict == BACKDOOR and not full.skipped
    assert full.unet_evaluations > early.unet_evaluations


def test_a_promising_screen_left_unconfirmed_is_never_clean() -> None:
    """Fail closed: with no full probe left to spend, a candidate whose screen collapsed leaves the
    verdict inconclusive (exit 7), not clean."""
    cfg = replace(budget_config("default"), confirmations=0)
    with pytest.raises(InconclusiveError, match="budget"):
        scan(str(MODELS / "digits-baddiffusion"), device="cpu", config=cfg)


def test_the_clean_example_stays_clean_within_the_default_budget() -> None:
    r = scan(str(MODELS / "digits-clean"), device="cpu", config=budget_config("default"))
    assert r.verdict == CLEAN
    assert r.unet_evaluations <= DEFAULT_CAP
