"""Detection on the shipped example models: the verdicts, the recovered trigger and target.

The full default scans (one per model, module-scoped, a minute or more each) serve the tests marked
slow; the fast tier covers each search on toy denoisers and the tiny pipeline (``test_blackbox.py``,
``test_midstep.py``, ``test_ode.py``, ``test_stamps.py``) and the scan's wiring here.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import types

import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from hfaudit import ScanConfig, scan
from hfaudit.detect.blackbox import BlackboxConfig
from hfaudit.detect.inversion import InversionConfig, gradient_inversion
from hfaudit.detect.midstep import MidstepConfig
from hfaudit.detect.ode import OdeInversionConfig
from hfaudit.detect.stamps import StampConfig
from hfaudit.errors import ExitCode
from hfaudit.results import BACKDOOR, CLEAN
from hfaudit.sampling import to_unit
from helpers import toy_model

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
TRUTH = load_file(str(MODELS / "backdoor_truth.safetensors"))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.flatten() @ b.flatten()) / (a.norm() * b.norm()))


@pytest.fixture(scope="module")
def backdoored():
    return scan(str(MODELS / "digits-baddiffusion"), device="cpu", config=ScanConfig())


@pytest.fixture(scope="module")
def clean():
    return scan(str(MODELS / "digits-clean"), device="cpu", config=ScanConfig())


@pytest.mark.slow  # a full default scan of a shipped model
def test_backdoored_model_is_flagged_with_margin(backdoored) -> None:
    assert backdoored.verdict == BACKDOOR
    assert backdoored.exit_code == ExitCode.BACKDOOR
    assert backdoored.score >= backdoored.threshold + 0.1
    assert backdoored.control_score < backdoored.threshold  # clean noise does not collapse


@pytest.mark.slow  # a full default scan of a shipped model
def test_recovered_target_matches_the_true_target(backdoored) -> None:
    mse = float((backdoored.recovered_target - to_unit(TRUTH["target"])).pow(2).mean())
    assert mse < 1e-2, mse


@pytest.mark.slow  # a full default scan of a shipped model
def test_inverted_trigger_correlates_with_the_true_trigger(backdoored, clean) -> None:
    cos_bad = _cos(backdoored.best.trigger, TRUTH["trigger"])
    assert cos_bad > 0.2, cos_bad
    # and the backdoor's trigger is absorbed: its shift ratio is far below the clean model's typical one
    assert backdoored.best.shift_ratio < 0.75


@pytest.mark.slow  # a full default scan of a shipped model
def test_clean_model_is_not_flagged(clean) -> None:
    assert clean.verdict == CLEAN
    assert clean.exit_code == ExitCode.CLEAN
    # the full-size ODE inversion collapses this clean model's samples onto one of its own digits at
    # the model's near-duplicate radius; every such collapse is set aside by its nulls
    past = [c for c in clean.candidates if c.best.share >= clean.threshold]
    assert sorted(clean.artefacts) == sorted(c.name for c in past)
    assert not any(n.holds for c in clean.candidates for n in c.nulls)


@pytest.mark.slow  # a full default scan of a shipped model
def test_blackbox_inversion_sees_the_shipped_backdoor_and_not_the_clean_model(backdoored, clean) -> None:
    """Samples alone, no gradients: measured MSCR 0.56 (backdoored) and 0.03 (clean) at seed 0."""
    (bb_bad,) = [c for c in backdoored.candidates if c.name.startswith("blackbox-ddpm")]
    (bb_clean,) = [c for c in clean.candidates if c.name.startswith("blackbox-ddpm")]
    assert [c.name for c in backdoored.candidates if c.method == "blackbox"] == ["blackbox-ddpm-0", "blackbox-ddim-1"]
    assert bb_bad.best.stats.mscr > 0.3
    assert bb_clean.best.stats.mscr < 0.2
    assert "gradient" in backdoored.fired_methods and clean.fired_methods == []


def test_inversion_restarts_run_in_one_batch_and_respect_the_budget() -> None:
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model

    m = load_model(resolve(str(MODELS / "digits-baddiffusion")), device="cpu")
    cfg = InversionConfig(steps=3, restarts={"ratio": 2, "lambda=0.5": 1, "lambda=1.0": 1}, budget=0.7)
    calls = []
    handle = m.unet.register_forward_pre_hook(lambda _m, a: calls.append(a[0].shape[0]))
    try:
        cands = gradient_inversion(m.unet, 1000, m.sample_shape, cfg)
    finally:
        handle.remove()
    assert len(cands) == 4
    assert sorted(c.objective for c in cands) == ["lambda=0.5", "lambda=1.0", "ratio", "ratio"]
    assert calls.count(4 * cfg.batch_size) == cfg.steps + 1  # all restarts share each forward pass
    for c in cands:
        rms = float(c.trigger.pow(2).mean().sqrt())
        assert abs(rms - 0.7) < 1e-3
        assert c.trigger.shape == m.sample_shape
    assert [c.shift_ratio for c in cands] == sorted(c.shift_ratio for c in cands)


def _tiny_config() -> ScanConfig:
    """Every search on, each at the smallest budget that still runs it."""
    return ScanConfig(n_samples=4, probes=(("ddim", 2),), max_candidates=1, inversion=InversionConfig(steps=2),
                      blackbox=BlackboxConfig(iterations=2, n_samples=4, steps=3, screen=4),
                      midstep=MidstepConfig(rms=(0.5,), restarts=2, batch_size=4, search_steps=2, candidates=1),
                      ode=OdeInversionConfig(restarts=2, batch_size=4, search_steps=2, refine=1, refine_steps=2,
                                             refine_samples=2, steps=3, candidates=1),
                      stamps=StampConfig(sizes=(2,), values=(1.0, -1.0), n_samples=2, steps=2, candidates=1))


def test_the_config_computes_what_a_scan_costs(tiny_pipeline_dir: Path) -> None:
    """``ScanConfig.phase_evaluations`` (where docstrings and help point for a search's cost) adds up
    to the UNet evaluations the scan counts, with every search on and with some off."""
    def spent_as_planned(cfg: ScanConfig) -> None:
        # every phase at its planned cost, except the painted-null probes: those run only for
        # candidates that reach a threshold, at most ``null_checks`` of them
        r = scan(str(tiny_pipeline_dir), device="cpu", config=cfg)
        planned = cfg.phase_evaluations
        assert r.evaluations.get("nulls", 0) <= planned["nulls"]
        assert r.unet_evaluations == cfg.unet_evaluations - planned["nulls"] + r.evaluations.get("nulls", 0)
        assert r.unet_evaluations == sum(r.evaluations.values())

    cfg = _tiny_config()
    assert set(cfg.phase_evaluations) == {"control", "gradient", "blackbox", "midstep", "ode", "stamps", "nulls"}
    spent_as_planned(cfg)
    cfg.blackbox, cfg.stamps, cfg.probes = (cfg.blackbox, cfg.blackbox), None, (("ddim", 2), ("ddpm", 3))
    assert set(cfg.phase_evaluations) == {"control", "gradient", "blackbox", "midstep", "ode", "nulls"}
    spent_as_planned(cfg)
    assert cfg.phase_evaluations["nulls"] == cfg.null_checks * (cfg.n_samples + cfg.null_random_samples) * 3
    default = ScanConfig()
    assert default.unet_evaluations == sum(default.phase_evaluations.values())
    assert default.phase_evaluations["control"] == default.probe_evaluations == 32 * (10 + 50)


def test_same_seed_same_verdict_and_trigger() -> None:
    cfg = _tiny_config()
    a = scan(str(MODELS / "digits-clean"), device="cpu", config=cfg)
    b = scan(str(MODELS / "digits-clean"), device="cpu", config=cfg)
    assert [c.method for c in a.candidates] == ["gradient", "midstep", "blackbox", "ode", "stamp"]
    assert all(torch.equal(x.trigger, y.trigger) for x, y in zip(a.candidates, b.candidates))
    assert torch.equal(a.candidates[-1].noise_scale, b.candidates[-1].noise_scale)
    assert a.score == b.score and a.verdict == b.verdict


@pytest.mark.slow  # a full default scan of a shipped model
def test_midstep_inversion_finds_the_shipped_trigger_and_nothing_on_the_clean_model(backdoored, clean) -> None:
    """The directions passed least at 0.8 T: measured cosine 0.81 with the planted trigger and MSCR 1.0
    on the backdoored model at seed 0; on the clean model nothing collapses."""
    mid_bad = [c for c in backdoored.candidates if c.method == "midstep"]
    mid_clean = [c for c in clean.candidates if c.method == "midstep"]
    assert [c.name for c in mid_bad] == [f"midstep-{i}" for i in range(4)]  # 2 per RMS searched
    best = max(mid_bad, key=lambda c: c.best.stats.mscr)
    assert best.best.stats.mscr >= 0.9 and best.best.sampler == "ddpm"  # an SDE backdoor fires under DDPM
    assert _cos(best.trigger, TRUTH["trigger"]) > 0.5
    assert "midstep" in backdoored.fired_methods
    assert max(c.best.stats.mscr for c in mid_clean) < 0.3


class _NanUNet(torch.nn.Module):
    """Finite weights, broken arithmetic: its noise prediction is NaN wherever the input is negative."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))
        self.config = types.SimpleNamespace(sample_size=8, in_channels=1)

    def forward(self, x: torch.Tensor, t) -> types.SimpleNamespace:
        return types.SimpleNamespace(sample=self.w * torch.sqrt(x))


def test_non_finite_samples_give_no_verdict_not_a_clean_one() -> None:
    """NaN samples compare as 'not near-duplicates', so they used to read as clean (MSCR 1/N).
    Now the scan stops with exit 7 (inconclusive) before any verdict is drawn."""
    from hfaudit.detect.scan import ScanConfig, detect
    from hfaudit.errors import ExitCode, InconclusiveError

    cfg = ScanConfig(n_samples=4, probes=(("ddim", 2),), blackbox=None, midstep=None, ode=None, stamps=None)
    cfg.inversion.steps = 1
    with pytest.raises(InconclusiveError, match="NaN or Inf") as exc:
        detect(toy_model(_NanUNet(), DDPMScheduler(num_train_timesteps=1000).config), cfg)
    assert exc.value.exit_code == ExitCode.INCONCLUSIVE == 7


@pytest.mark.slow  # an ODE inversion refined at length on a shipped model
def test_a_collapse_that_a_search_pushes_a_clean_model_into_leaves_the_verdict_clean() -> None:
    """The shipped clean model (trained by ``examples/train_models.py``, no poison): the ODE inversion,
    refined long enough, collapses its samples onto one of its own digits, past the threshold. The
    trigger is a faint picture of that digit and the digit painted into the noise collapses the
    samples as much, so the collapse is a search artefact and the verdict stays clean."""
    cfg = ScanConfig(n_samples=16, probes=(("ddim", 10),), inversion=None, blackbox=None, midstep=None, stamps=None,
                     ode=OdeInversionConfig(refine=2, refine_steps=30, candidates=2))
    result = scan(str(MODELS / "digits-clean"), device="cpu", config=cfg)
    collapsed = [c for c in result.candidates if c.best.share >= result.threshold]
    assert collapsed, "the search found no collapse: the test no longer tests the null"
    assert result.verdict == CLEAN and result.exit_code == ExitCode.CLEAN
    assert sorted(result.artefacts) == sorted(c.name for c in collapsed)
    for c in collapsed:
        assert c.nulls and not any(n.holds for n in c.nulls)
        assert all(n.alignment is not None and n.alignment > cfg.max_alignment for n in c.nulls)
