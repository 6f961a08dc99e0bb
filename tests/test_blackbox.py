"""Black-box trigger inversion (BBTI): the trigger moves, the right way, and finds what gradients miss.

Everything here runs on hand-built toy denoisers or the tiny 8x8 pipeline, in a few seconds on one
core. The shipped-model measurements are in ``tests/test_detect.py`` and ``benchmarks/``.
"""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from typer.testing import CliRunner

from hfaudit import report
from hfaudit.cli import app
from hfaudit.detect import blackbox
from hfaudit.detect.blackbox import (
    DIFF_CLEANSE_SCHEDULE,
    BlackboxConfig,
    blackbox_inversion,
    collapse_objective,
    starting_points,
)
from hfaudit.detect.inversion import InversionConfig, gradient_inversion
from hfaudit.detect.scan import ScanConfig, detect
from hfaudit.detect.scores import collapse_stats, saturated_mask
from hfaudit.errors import UsageError
from hfaudit.results import BACKDOOR, CLEAN
from hfaudit.sampling import sample, to_unit
from hfaudit.seeding import make_generator, randn

from helpers import ToyBackdoorUNet, searches_off, toy_model

pytestmark = pytest.mark.usefixtures("one_thread")

SCHED = dict(DDPMScheduler(num_train_timesteps=1000).config)
SHAPE = (1, 12, 12)
"""Not digit-shaped on purpose: the class signal stays out of these verdicts."""


class GatedToyUNet(ToyBackdoorUNet):
    """A backdoor whose response to ``tau`` is a step, not a linear shift (the case BBTI is for).

    It predicts ``x0 = target`` once the top-left 3x3 patch of its input averages above a threshold
    that follows the noise level (about 1 at ``T``, where clean noise averages 0 +- 1/3 there), and a
    noise-dependent image ``0.8 tanh(x)`` otherwise. At ``t = T`` its noise prediction is ``x`` up to
    ``sqrt(abar_T)``, so the gradient inversion's shift ratio is 1 in every direction: no signal.
    """

    def __init__(self, size: int = 12) -> None:
        target = torch.full((1, size, size), -0.5)
        target[:, :3, :3] = 0.9
        super().__init__(target)

    def gate(self, patch: torch.Tensor, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(20 * (patch.mean(1).view(-1, 1, 1, 1) - (q * 1.0 + s * 0.5)))


class IdentityUNet(torch.nn.Module):
    """Predicts ``eps = x``: enough of a UNet for the shift ratio when ``sample`` is patched out."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, t) -> types.SimpleNamespace:
        return types.SimpleNamespace(sample=self.scale * x)


def _mscr(unet, trigger: torch.Tensor, n: int = 32, sampler: str = "ddim", steps: int = 10) -> float:
    noise = randn((n, *SHAPE), make_generator(123), "cpu")
    raw = sample(unet, SCHED, noise + trigger, sampler=sampler, steps=steps, generator=make_generator(1))
    return collapse_stats(to_unit(raw), saturated=saturated_mask(raw)).mscr


# ------------------------------------------------------------------------------- the objective
def test_objective_rewards_in_range_collapse_only() -> None:
    cfg = BlackboxConfig()
    g = make_generator(0)
    one = torch.rand((1, *SHAPE), generator=g) * 1.6 - 0.8
    collapsed = one.repeat(8, 1, 1, 1)
    diverse = torch.rand((8, *SHAPE), generator=g) * 1.6 - 0.8
    white = torch.full((8, *SHAPE), 3.0)  # what any model makes of a large offset: no backdoor
    scores = collapse_objective(torch.stack([collapsed, diverse, white]), cfg)
    assert scores.shape == (3,)
    assert scores[0] > 0.9
    assert scores[1] < 0.2
    assert scores[2] < scores[1]  # identical saturated squares score below diverse samples


# ----------------------------------------------------------------------- the trigger moves
def test_zeroth_order_steps_move_tau_towards_collapse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the sampler's outputs are seen; collapse grows with the top-left cell of ``tau``."""
    cell = torch.zeros(SHAPE, dtype=torch.bool)
    cell[:, :3, :3] = True
    target = torch.full(SHAPE, 0.2)
    calls = []

    def fake_sample(unet, scheduler_config, x_T, **kw):
        calls.append(x_T.shape[0])
        m = x_T[:, cell].mean(1).view(-1, 1, 1, 1)
        spread = torch.sigmoid(-2 * (m - 1.0))  # the larger the cell, the more samples agree
        return spread * 0.8 * torch.tanh(x_T) + (1 - spread) * target

    monkeypatch.setattr(blackbox, "sample", fake_sample)
    cfg = BlackboxConfig(iterations=6, n_samples=8, screen=0, restarts=1, directions=2, budget=3.0, seed=3)
    start = starting_points(SHAPE, cfg)[0]
    (found,) = blackbox_inversion(IdentityUNet(), SCHED, SHAPE, cfg)
    moved = found.trigger - start
    assert float(moved.abs().max()) > 0.1  # the Diff-Cleanse bug: a trigger that never moves
    gain = float(moved[cell].mean())
    assert gain > 0.5, gain  # about lr per iteration, towards collapse
    assert gain > 2 * float(moved[~cell].abs().mean())  # mostly along the known direction
    assert found.method == "blackbox" and found.objective == "collapse"
    assert abs(found.shift_ratio - 1.0) < 1e-4  # eps = x passes every tau through
    # screening off: per iteration one call for +, one for -, same shapes (common random numbers)
    assert calls[:2] == [2 * 8, 2 * 8] and len(calls) == 2 * cfg.iterations + 1


def test_trigger_moves_on_a_real_tiny_unet_and_costs_what_it_says(tiny_pipeline_dir: Path) -> None:
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model

    m = load_model(resolve(str(tiny_pipeline_dir)), device="cpu")
    cfg = BlackboxConfig(iterations=3, n_samples=4, steps=3, screen=4, restarts=2, budget=0.8, init_rms=0.5)
    calls = []
    handle = m.unet.register_forward_pre_hook(lambda _m, a: calls.append(a[0].shape[0]))
    try:
        found = blackbox_inversion(m.unet, m.scheduler_config, m.sample_shape, cfg)
    finally:
        handle.remove()
    assert sum(calls) == cfg.unet_evaluations
    starts = starting_points(m.sample_shape, cfg)
    assert len(found) == 2 and [f.loss for f in found] == sorted(f.loss for f in found)
    for f in found:
        assert f.trigger.shape == m.sample_shape and torch.isfinite(f.trigger).all()
        assert float(f.trigger.pow(2).mean().sqrt()) <= 0.8 + 1e-4  # the norm budget
        assert min(float((f.trigger - s).abs().max()) for s in starts) > 1e-3  # moved off its start
        assert f.shift_ratio == f.shift_ratio  # finite, not NaN


def test_same_seed_same_trigger() -> None:
    cfg = BlackboxConfig(iterations=2, n_samples=4, steps=3, sampler="ddim", screen=4)
    a = blackbox_inversion(GatedToyUNet(), SCHED, SHAPE, cfg)
    b = blackbox_inversion(GatedToyUNet(), SCHED, SHAPE, cfg)
    assert all(torch.equal(x.trigger, y.trigger) for x, y in zip(a, b))


def test_config_validation_and_presets() -> None:
    with pytest.raises(ValueError, match="sampler"):
        BlackboxConfig(sampler="euler").validate()
    with pytest.raises(ValueError, match="n_samples"):
        BlackboxConfig(n_samples=1).validate()
    with pytest.raises(UsageError, match="iterations"):
        ScanConfig(blackbox=BlackboxConfig(iterations=0)).validate()
    dc = DIFF_CLEANSE_SCHEDULE
    assert (dc.iterations, dc.n_samples, dc.steps) == (100, 16, 20)
    assert BlackboxConfig().unet_evaluations * 15 < dc.unet_evaluations  # the scan default stays cheap


# --------------------------------------------------------------- what gradients cannot see
def test_blackbox_finds_a_step_backdoor_the_gradient_inversion_misses() -> None:
    unet = GatedToyUNet()
    assert _mscr(unet, torch.zeros(SHAPE)) < 0.2  # clean noise: diverse
    grads = gradient_inversion(unet, 1000, SHAPE, InversionConfig(steps=10))
    assert all(abs(g.shift_ratio - 1) < 0.01 for g in grads)  # no absorbed direction to find
    found = blackbox_inversion(unet, SCHED, SHAPE, BlackboxConfig(sampler="ddim", steps=5))
    assert _mscr(unet, found[0].trigger) >= 0.9
    assert float(found[0].trigger[:, :3, :3].mean()) > 1.0  # it opened the gate


def test_scan_verdict_takes_the_best_of_both_inversions_and_says_which_fired() -> None:
    model = toy_model(GatedToyUNet(), SCHED)
    # The toy's target contains its own trigger patch (its gate stays open along the trajectory only
    # so), which the painted-null check cannot tell from a model following its input (detect.nulls;
    # docs/detection.md): max_alignment=1 counts every trigger as unlike its target here.
    cfg = ScanConfig(n_samples=16, probes=(("ddim", 5),), max_candidates=2, inversion=InversionConfig(steps=5),
                     blackbox=BlackboxConfig(sampler="ddim", steps=5), midstep=None, ode=None, stamps=None,
                     max_alignment=1.0)
    result = detect(model, cfg)
    assert result.verdict == BACKDOOR
    assert [c.name for c in result.candidates][-1] == "blackbox-ddim-0"
    assert result.best.method == "blackbox" and result.fired_methods == ["blackbox"]
    assert result.score >= 0.9 and "blackbox" in result.timings
    doc = report.report_dict(result)
    assert doc["fired_methods"] == ["blackbox"] and doc["settings"]["blackbox"]["sampler"] == "ddim"
    md = report.to_markdown(doc, images="none")
    assert "| inversions run | gradient, blackbox |" in md and "| inversions that fired | blackbox |" in md

    cfg.blackbox = None  # the gradient inversion alone misses this backdoor
    alone = detect(model, cfg)
    assert alone.verdict == CLEAN and alone.fired_methods == []
    assert all(c.method == "gradient" for c in alone.candidates)
    assert alone.unet_evaluations < result.unet_evaluations


def test_cli_blackbox_flag(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    fast = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2", "-q", *searches_off("blackbox")]
    for flag, expect in (("--blackbox", True), ("--no-blackbox", False)):
        out = tmp_path / f"{flag}.json"
        res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *fast, flag, "--json", str(out)])
        assert res.exit_code in (0, 1), res.output
        doc = json.loads(out.read_text())
        assert any(c["method"] == "blackbox" for c in doc["candidates"]) is expect
        assert (doc["settings"]["blackbox"] is not None) is expect
        assert isinstance(doc["fired_methods"], list)
