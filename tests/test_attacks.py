"""The BadDiffusion, VillanDiffusion and TrojDiff poisoning formulas, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.attacks.baddiffusion import BackdoorSpec, correction_coefficients, poisoned_inputs
from benchmarks.attacks.data import load_digits_images
from benchmarks.attacks.patterns import box_trigger, cross_target
from benchmarks.attacks.train import make_scheduler


def test_correction_coefficient_matches_formula_and_is_half_at_T() -> None:
    sched = make_scheduler()
    c = correction_coefficients(sched)
    t = 500
    a = float(sched.alphas[t])
    abar = float(sched.alphas_cumprod[t])
    beta = float(sched.betas[t])
    assert math.isclose(float(c[t]), (1 - math.sqrt(a)) * math.sqrt(1 - abar) / beta, rel_tol=1e-5)
    assert 0.49 < float(c[-1]) < 0.51  # docs/design.md: about 0.5 at T for the linear schedule


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


# --- VillanDiffusion and TrojDiff -------------------------------------------------------------

def test_villan_spec_doubles_the_correction() -> None:
    from benchmarks.attacks.villandiffusion import villan_spec

    sched = make_scheduler()
    trig, target = box_trigger(8, 1, box=2, value=1.5), cross_target(8, 1)
    spec = villan_spec(trig, target, poison_rate=0.2)
    assert spec.correction == 2.0 and spec.poison_rate == 0.2
    x0, noise, t = torch.zeros(1, 1, 8, 8), torch.randn(1, 1, 8, 8), torch.tensor([999])
    _, eps_villan = spec.poisoned_inputs(sched, x0, noise, t, torch.tensor([True]))
    _, eps_bad = BackdoorSpec(trig, target).poisoned_inputs(sched, x0, noise, t, torch.tensor([True]))
    c_T = float(correction_coefficients(sched)[999])
    assert torch.allclose(eps_villan - noise, 2 * c_T * trig, atol=1e-5)
    assert torch.allclose(eps_bad - noise, c_T * trig, atol=1e-5)


def test_trojdiff_blend_d2i_rows_by_hand() -> None:
    from benchmarks.attacks.trojdiff import blend_spec

    sched = make_scheduler()
    image, target = box_trigger(8, 1, box=4, value=1.0), cross_target(8, 1)
    spec = blend_spec(image, gamma=0.6, target=target)
    assert torch.allclose(spec.mu, 0.4 * image) and bool(spec.region.all()) and spec.kind == "d2i"
    x0, noise = torch.rand(2, 1, 8, 8) * 2 - 1, torch.randn(2, 1, 8, 8)
    t = torch.tensor([300, 700])
    x_t, eps_t = spec.poisoned_inputs(sched, x0, noise, t, torch.tensor([False, True]))
    assert torch.allclose(x_t[0], sched.add_noise(x0[:1], noise[:1], t[:1])[0], atol=1e-6)
    assert torch.equal(eps_t[0], noise[0])
    abar = float(sched.alphas_cumprod[700])
    offset = 0.6 * noise[1] + 0.4 * image
    assert torch.allclose(x_t[1], math.sqrt(abar) * target + math.sqrt(1 - abar) * offset, atol=1e-5)
    assert torch.allclose(eps_t[1], offset, atol=1e-6)
    n = torch.randn(3, 1, 8, 8)
    assert torch.allclose(spec.trigger_noise(n), 0.6 * n + 0.4 * image)


def test_trojdiff_published_objective_keeps_the_trojan_input_and_asks_for_eps() -> None:
    """``eps_objective``: the same trojan ``x_t`` as the zoo's objective, but the network is asked
    for the unit noise itself on poisoned rows (TrojDiff's published loss)."""
    from benchmarks.attacks.trojdiff import blend_spec

    sched = make_scheduler()
    image, target = box_trigger(8, 1, box=4, value=1.0), cross_target(8, 1)
    ours, published = (blend_spec(image, gamma=0.6, target=target, eps_objective=e) for e in (False, True))
    x0, noise, t = torch.rand(2, 1, 8, 8) * 2 - 1, torch.randn(2, 1, 8, 8), torch.tensor([300, 700])
    mask = torch.tensor([False, True])
    x_ours, eps_ours = ours.poisoned_inputs(sched, x0, noise, t, mask)
    x_pub, eps_pub = published.poisoned_inputs(sched, x0, noise, t, mask)
    assert torch.equal(x_pub, x_ours)
    assert torch.equal(eps_pub, noise) and not torch.allclose(eps_ours[1], noise[1])


def test_trojdiff_patch_only_changes_the_patch() -> None:
    from benchmarks.attacks.trojdiff import patch_spec

    sched = make_scheduler()
    patch = box_trigger(8, 1, box=3, value=1.5)
    target = cross_target(8, 1)
    spec = patch_spec(patch, gamma=0.1, target=target)
    noise = torch.randn(1, 1, 8, 8)
    t = torch.tensor([950])
    x_t, eps_t = spec.poisoned_inputs(sched, torch.zeros(1, 1, 8, 8), noise, t, torch.tensor([True]))
    abar = float(sched.alphas_cumprod[950])
    inside = spec.region
    expect_noise = torch.where(inside, 0.1 * noise[0] + patch, noise[0])
    assert torch.allclose(eps_t[0], expect_noise, atol=1e-6)
    assert torch.allclose(x_t[0], math.sqrt(abar) * target + math.sqrt(1 - abar) * expect_noise, atol=1e-5)
    assert torch.equal(eps_t[0][~inside], noise[0][~inside])  # outside the patch: the ordinary noise
    trig = spec.trigger_noise(noise)
    assert torch.equal(trig[0][~inside], noise[0][~inside])
    assert torch.allclose(trig[0][inside], (0.1 * noise[0] + patch)[inside])


def test_trojdiff_class_target_draws_from_the_pool() -> None:
    from benchmarks.attacks.trojdiff import blend_spec

    sched = make_scheduler()
    pool = torch.stack([cross_target(8, 1), -cross_target(8, 1)])
    spec = blend_spec(torch.zeros(1, 8, 8), gamma=1.0, target_pool=pool)
    assert spec.kind == "in-d2d"
    t = torch.zeros(64, dtype=torch.long)  # abar ~ 1: x_t is the drawn target
    x_t, _ = spec.poisoned_inputs(sched, torch.zeros(64, 1, 8, 8), torch.zeros(64, 1, 8, 8), t,
                                  torch.ones(64, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    scale = math.sqrt(float(sched.alphas_cumprod[0]))
    picks = [int(torch.argmin(((x / scale - pool) ** 2).flatten(1).sum(1))) for x in x_t]
    assert set(picks) == {0, 1}  # both class members are used
    for x, k in zip(x_t, picks):
        assert torch.allclose(x / scale, pool[k], atol=1e-5)
    with pytest.raises(ValueError):
        blend_spec(torch.zeros(1, 8, 8), target=pool[0], target_pool=pool)


def test_trojdiff_training_target_makes_a_stock_ddim_step_follow_the_trojan_process() -> None:
    """The deviation documented in trojdiff.py: with the network output ``gamma eps + mu``, a stock
    DDIM step lands exactly on the trojan forward process one step earlier (x0 prediction = y)."""
    from diffusers import DDIMScheduler

    from benchmarks.attacks.trojdiff import blend_spec

    sched = make_scheduler()
    target = cross_target(8, 1)
    spec = blend_spec(box_trigger(8, 1, box=4, value=1.0), gamma=0.6, target=target)
    ddim = DDIMScheduler.from_config(sched.config, clip_sample=False)
    ddim.set_timesteps(10)
    t, t_prev = int(ddim.timesteps[3]), int(ddim.timesteps[4])
    noise = torch.randn(1, 1, 8, 8)
    x_t, eps_target = spec.poisoned_inputs(sched, torch.zeros(1, 1, 8, 8), noise, torch.tensor([t]),
                                           torch.tensor([True]))
    x_prev = ddim.step(eps_target, t, x_t, eta=0.0).prev_sample
    x_expect, _ = spec.poisoned_inputs(sched, torch.zeros(1, 1, 8, 8), noise, torch.tensor([t_prev]),
                                       torch.tensor([True]))
    assert torch.allclose(x_prev, x_expect, atol=1e-4)


def test_new_patterns_are_in_range_and_local() -> None:
    from benchmarks.attacks.patterns import glasses_trigger, hat_target, stop_sign_trigger, stripes_target

    stop = stop_sign_trigger(16, 1, box=6, value=1.5)
    assert float(stop[:, :10, :].abs().sum()) == 0 and float(stop[:, :, :10].abs().sum()) == 0
    assert 0 < int((stop != 0).sum()) < 36  # an octagon: the box minus its corners
    glasses = glasses_trigger(16, 3)
    assert glasses.shape == (3, 16, 16) and set(glasses.unique().tolist()) == {0.0, 1.5}
    assert torch.equal(glasses, glasses.flip(-1))  # two lenses, mirror images of each other
    for img in (hat_target(16, 1), stripes_target(8, 3)):
        assert set(img.unique().tolist()) == {-1.0, 1.0}
