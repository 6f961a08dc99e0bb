"""The mid-timestep inversion: the search finds the direction a model passes least (or most) of,
its settings are checked, and the scan and CLI run it (or not)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from hfaudit.cli import app
from hfaudit.detect.midstep import (MidstepConfig, frozen, midstep_inversion, pass_through_directions,
                                    pass_through_ratios)
from hfaudit.detect.scan import ScanConfig
from hfaudit.errors import UsageError
from hfaudit.sampling import alphas_cumprod_of
from hfaudit.seeding import make_generator

from helpers import FAST_SCAN_FLAGS, searches_off

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (1, 8, 8)
SCHEDULE = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


def _patch() -> torch.Tensor:
    """A 4x4 block in one corner: a trigger the 4x4 lattice can express exactly."""
    r = torch.zeros(SHAPE)
    r[:, :4, 4:] = 1.0
    return r / r.norm()


class AbsorbingNet(torch.nn.Module):
    """A linear stand-in for a backdoored UNet: it passes every input offset through, except
    ``1 - keep`` of the part along ``r``, so the pass-through ratio is ``1 - (1 - keep) cos^2(tau, r)``."""

    def __init__(self, r: torch.Tensor, keep: float) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(()))  # device, dtype and the frozen() check
        self.r, self.keep = r, keep

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        along = (x * self.r).flatten(1).sum(1).view(-1, 1, 1, 1) * self.r
        return SimpleNamespace(sample=self.weight * (x - (1 - self.keep) * along))


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum() / (a.norm() * b.norm()))


def test_the_search_finds_the_absorbed_direction_and_its_opposite() -> None:
    r = _patch()
    net = AbsorbingNet(r, keep=0.5)
    cfg = MidstepConfig(restarts=4, batch_size=4, search_steps=60)
    with frozen(net):
        low, low_taus = pass_through_directions(net, SCHEDULE, SHAPE, cfg, make_generator(0), budget=0.4,
                                                maximise=False)
        high, high_taus = pass_through_directions(net, SCHEDULE, SHAPE, cfg, make_generator(0), budget=0.4,
                                                  maximise=True)
    assert low.tolist() == sorted(low.tolist()) and high.tolist() == sorted(high.tolist(), reverse=True)
    scale = 1 - float(alphas_cumprod_of(SCHEDULE)[round(0.8 * 999)]) ** 0.5  # the offset is (1 - sqrt(abar_t)) tau
    assert float(low[0]) == pytest.approx(0.5 * scale, abs=0.01)  # the model keeps half of r
    assert abs(_cos(low_taus[0], r)) > 0.99
    assert float(high[0]) == pytest.approx(scale, abs=0.01)  # everything orthogonal to r passes whole
    assert abs(_cos(high_taus[0], r)) < 0.1
    rms = low_taus.flatten(1).pow(2).mean(1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, 0.4))  # on the budget sphere


def test_midstep_inversion_reports_least_pass_through_first_and_leaves_the_weights_alone() -> None:
    net = AbsorbingNet(_patch(), keep=0.3)
    cfg = MidstepConfig(rms=(0.2, 0.6), restarts=3, batch_size=4, search_steps=30, candidates=2)
    found = midstep_inversion(net, SCHEDULE, SHAPE, cfg)
    assert [t.method for t in found] == ["midstep"] * 6
    sizes = [round(float(t.trigger.pow(2).mean().sqrt()), 3) for t in found]
    assert sizes == [0.2] * 3 + [0.6] * 3  # one search per RMS, in order
    for block in (found[:3], found[3:]):
        assert [t.loss for t in block] == sorted(t.loss for t in block)
    assert cfg.pick(found) == [found[0], found[1], found[3], found[4]]  # the best two of each search
    assert cfg.probed == 4
    assert found[0].loss == pytest.approx(0.3 * (1 - float(alphas_cumprod_of(SCHEDULE)[799]) ** 0.5), abs=0.02)
    assert found[0].shift_ratio == pytest.approx(0.3, abs=0.02)  # this stand-in absorbs at t = T as well
    assert found[0].trigger.shape == SHAPE and found[0].trigger.device.type == "cpu"
    assert net.weight.requires_grad  # restored after the search


def test_pass_through_ratios_of_given_directions_match_the_stand_in() -> None:
    r = _patch()
    net = AbsorbingNet(r, keep=0.25)
    other = torch.zeros(SHAPE)
    other[:, 4:, :4] = 1.0
    other = other / other.norm()  # orthogonal to r
    mixed = (r + other) / 2 ** 0.5  # cos^2 with r: 1/2
    taus = torch.stack([r, other, mixed, -r]) * 3.0
    noise = torch.randn((5, *SHAPE), generator=torch.Generator().manual_seed(0))
    with frozen(net):
        ratios = pass_through_ratios(net, SCHEDULE, taus, 0.8, noise)
    scale = 1 - float(alphas_cumprod_of(SCHEDULE)[round(0.8 * 999)]) ** 0.5
    expected = torch.tensor([0.25, 1.0, 1 - 0.75 * 0.5, 0.25]) * scale  # 1 - (1 - keep) cos^2, times the offset scale
    assert torch.allclose(ratios, expected, atol=1e-5)
    assert ratios.device.type == "cpu" and not ratios.requires_grad
    # the same measure the search optimises: its best direction scores what it reported
    cfg = MidstepConfig(restarts=2, batch_size=5, search_steps=20)
    with frozen(net):
        low, low_taus = pass_through_directions(net, SCHEDULE, SHAPE, cfg, make_generator(0), budget=0.4,
                                                maximise=False)
        again = pass_through_ratios(net, SCHEDULE, low_taus, 0.8, noise)
    assert torch.allclose(again, low, atol=1e-5)  # linear stand-in: the noise drops out


@pytest.mark.parametrize("field,value", [("t_fraction", 0.0), ("restarts", 0), ("candidates", 0), ("rms", ()),
                                         ("rms", (0.3, -1.0)), ("search_lr", 0.0)])
def test_bad_midstep_settings_are_usage_errors(field: str, value) -> None:
    with pytest.raises(UsageError, match="mid-timestep inversion"):
        ScanConfig(midstep=MidstepConfig(**{field: value})).validate()


def test_cli_midstep_flag(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for flag, expect in (("--midstep", True), ("--no-midstep", False)):
        out = tmp_path / f"{flag}.json"
        res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off("midstep"), flag,
                                  "-q", "--json", str(out)])
        assert res.exit_code in (0, 1), res.output
        doc = json.loads(out.read_text())
        names = [c["name"] for c in doc["candidates"] if c["method"] == "midstep"]
        assert names == ([f"midstep-{i}" for i in range(4)] if expect else [])  # 2 per RMS searched
        assert (doc["settings"]["midstep"] is not None) is expect
