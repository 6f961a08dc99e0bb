"""The ODE inversion: the shared lattice and ratio, its settings, and that it finds an ODE backdoor.

The end-to-end case is the shipped VillanDiffusion example (8x8, a few seconds on one core), whose
planted trigger the gradient inversion at ``t = T`` cannot see (``tests/test_attack_families.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from hfaudit.cli import app
from hfaudit.detect.inversion import InversionConfig, gradient_inversion
from hfaudit.detect.lattice import Lattice, pass_through
from hfaudit.detect.ode import OdeInversionConfig, ode_inversion
from hfaudit.detect.scan import ScanConfig
from hfaudit.detect.scores import collapse_stats, saturated_mask
from hfaudit.errors import UsageError
from hfaudit.hub import resolve
from hfaudit.pipeline import load_model
from hfaudit.sampling import sample, to_unit
from hfaudit.seeding import make_generator, randn

from helpers import FAST_SCAN_FLAGS, searches_off

pytestmark = pytest.mark.usefixtures("one_thread")

VILLAN = Path(__file__).resolve().parents[1] / "examples" / "models" / "digits-villandiffusion-8x8"


def test_pass_through_is_the_share_of_the_offset_passed_on() -> None:
    tau = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 0.0]]]])  # (2, 1, 1, 2)
    shift = torch.tensor([[[[0.5, 1.0]]], [[[-3.0, 7.0]]]])
    # (0.5 + 2) / (1 + 4) = 0.5; (-9 + 0) / 9 = -1
    assert torch.allclose(pass_through(shift, tau), torch.tensor([0.5, -1.0]))


def test_lattice_expands_nearest_and_projects_onto_sphere_or_into_ball() -> None:
    shape = (1, 4, 4)
    p = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2)
    sphere, ball = Lattice(shape, 2, 0.5, sphere=True), Lattice(shape, 2, 100.0, sphere=False)
    img = sphere.expand(p)
    assert img.shape == (1, 1, 4, 4) and float(img[0, 0, 1, 1]) == 1.0 and float(img[0, 0, 3, 3]) == 4.0
    rms = float(sphere.expand(sphere.project(p)).pow(2).mean().sqrt())
    assert rms == pytest.approx(0.5)  # on the sphere of RMS 0.5
    assert torch.equal(ball.project(p), p)  # inside a large ball: unchanged
    assert float(Lattice(shape, 2, 1.0, sphere=False).expand(Lattice(shape, 2, 1.0, sphere=False).project(p * 100))
                 .pow(2).mean().sqrt()) == pytest.approx(1.0)  # outside: pulled to the boundary
    starts = sphere.random(3, make_generator(0), rms=0.25)
    assert starts.shape == (3, 1, 2, 2)
    assert sphere.expand(starts).flatten(1).pow(2).mean(1).sqrt().tolist() == pytest.approx([0.5] * 3)  # a sphere fixes the norm


@pytest.mark.parametrize("field,value", [("refine_samples", 1), ("t_fraction", 1.0), ("refine", 0),
                                         ("sampler", "euler"), ("budget", 0.0)])
def test_bad_ode_settings_are_usage_errors(field: str, value) -> None:
    with pytest.raises(UsageError, match="ODE inversion|unknown sampler"):
        ScanConfig(ode=OdeInversionConfig(**{field: value})).validate()


def _ddim_collapse(model, trigger: torch.Tensor, n: int = 32):
    noise = randn((n, *model.sample_shape), make_generator(11), "cpu")
    raw = sample(model.unet, model.scheduler_config, noise + trigger, sampler="ddim", steps=10)
    return collapse_stats(to_unit(raw), saturated=saturated_mask(raw)), to_unit(raw)


def test_ode_inversion_finds_the_villandiffusion_trigger_that_the_gradient_inversion_misses() -> None:
    model = load_model(resolve(str(VILLAN)), device="cpu")
    truth = load_file(str(VILLAN.parent / "digits-villandiffusion-8x8_truth.safetensors"))
    found = ode_inversion(model.unet, model.scheduler_config, model.sample_shape, OdeInversionConfig())
    assert [t.method for t in found] == ["ode"] * OdeInversionConfig().refine
    assert found == sorted(found, key=lambda t: t.loss)
    best = found[0].trigger
    stats, imgs = _ddim_collapse(model, best)
    assert stats.mscr >= 0.9, stats  # DDIM samples from the inverted trigger collapse...
    target_mse = float((imgs[stats.medoid_index] - to_unit(truth["target"])).pow(2).mean())
    assert target_mse < 0.01, target_mse  # ...onto the planted target
    cosine = float((best * truth["trigger"]).sum() / (best.norm() * truth["trigger"].norm()))
    assert cosine > 0.5, cosine  # and the trigger points along the planted one

    grads = gradient_inversion(model.unet, 1000, model.sample_shape, InversionConfig())
    assert max(_ddim_collapse(model, g.trigger)[0].mscr for g in grads[:4]) < 0.5  # what the scan probes


def test_cli_ode_flag(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    for flag, expect in (("--ode", True), ("--no-ode", False)):
        out = tmp_path / f"{flag}.json"
        res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off("ode"), flag, "-q",
                                  "--json", str(out)])
        assert res.exit_code in (0, 1), res.output
        doc = json.loads(out.read_text())
        assert any(c["method"] == "ode" for c in doc["candidates"]) is expect
        assert (doc["settings"]["ode"] is not None) is expect
