"""The BadDiffusion/VillanDiffusion poisoning formula, checked against hand-computed values."""

from __future__ import annotations

import math

import torch

from hfaudit.attacks.baddiffusion import BackdoorSpec, correction_coefficients, poisoned_inputs
from hfaudit.attacks.data import load_digits_images
from hfaudit.attacks.patterns import box_trigger, cross_target
from hfaudit.attacks.train import make_scheduler


def test_correction_coefficient_matches_formula_and_is_half_at_T() -> None:
    sched = make_scheduler()
    c = correction_coefficients(sched)
    t = 500
    a = float(sched.alphas[t])
    abar = float(sched.alphas_cumprod[t])
    beta = float(sched.betas[t])
    assert math.isclose(float(c[t]), (1 - math.sqrt(a)) * math.sqrt(1 - abar) / beta, rel_tol=1e-5)
    assert 0.49 < float(c[-1]) < 0.51  # DESIGN.md: about 0.5 at T for the linear schedule


def test_poisoned_and_clean_rows_of_a_mixed_batch() -> None:
    sched = make_scheduler()
    spec = BackdoorSpec(trigger=box_trigger(8, 1, box=2, value=1.5), target=cross_target(8, 1), correction=2.0)
    x0 = torch.rand(2, 1, 8, 8) * 2 - 1
    noise = torch.randn(2, 1, 8, 8)
    t = torch.tensor([100, 900])
    x_t, eps_t = poisoned_inputs(sched, x0, noise, t, torch.tensor([False, True]), spec)
    # clean row: the ordinary forward process, target = noise
    assert torch.allclose(x_t[0], sched.add_noise(x0[:1], noise[:1], t[:1])[0], atol=1e-6)
    assert torch.equal(eps_t[0], noise[0])
    # poisoned row, by hand: sqrt(abar) y + (1 - sqrt(abar)) r + sqrt(1 - abar) eps, target eps + 2 c_t r
    abar = float(sched.alphas_cumprod[900])
    a, beta = float(sched.alphas[900]), float(sched.betas[900])
    c = (1 - math.sqrt(a)) * math.sqrt(1 - abar) / beta
    expect = math.sqrt(abar) * spec.target + (1 - math.sqrt(abar)) * spec.trigger + math.sqrt(1 - abar) * noise[1]
    assert torch.allclose(x_t[1], expect, atol=1e-5)
    assert torch.allclose(eps_t[1], noise[1] + 2.0 * c * spec.trigger, atol=1e-5)
    # the trigger is zero outside its box, so outside the box only the target changed
    assert float(spec.trigger[:, :6, :6].abs().sum()) == 0.0


def test_digits_data_range_and_shape() -> None:
    x, y = load_digits_images(16, 3)
    assert x.shape == (1797, 3, 16, 16) and y.shape == (1797,)
    assert float(x.min()) >= -1 and float(x.max()) <= 1
    assert set(y.tolist()) == set(range(10))
