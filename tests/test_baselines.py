"""The Elijah baseline (``benchmarks.baselines``) on a tiny model, and its features on constructed batches."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler, UNet2DModel

from benchmarks.baselines import ElijahFeatures, elijah_features, total_variation, uniformity

pytestmark = pytest.mark.usefixtures("one_thread")


def test_uniformity_and_tv_on_constructed_batches() -> None:
    g = torch.Generator().manual_seed(0)
    same = torch.rand(1, 1, 8, 8, generator=g).repeat(16, 1, 1, 1)
    diverse = torch.rand(16, 1, 8, 8, generator=g)
    assert uniformity(same) == pytest.approx(0.0, abs=1e-6)
    assert 0.3 < uniformity(diverse) < 0.5  # RMSE of two U[0,1] images: sqrt(1/6) = 0.41
    flat = torch.full((2, 1, 4, 4), 0.5)
    stripes = torch.zeros(2, 1, 4, 4)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1, no vertical one
    assert total_variation(flat) == 0.0
    assert total_variation(stripes) == pytest.approx(12 / 24)


def test_elijah_features_runs_and_counts_evaluations() -> None:
    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    before = [p.detach().clone() for p in unet.parameters()]
    config = dict(DDPMScheduler(num_train_timesteps=1000).config)
    f = elijah_features(unet, config, (1, 8, 8), n_samples=4, steps=3, inversion_steps=2, inversion_batch=5)
    assert isinstance(f, ElijahFeatures)
    assert f.unet_evaluations == 3 * (2 * 5) + 3 * 4  # inversion forwards and their backward passes (2 each) + sampling
    assert f.uniformity >= 0 and f.tv >= 0 and f.score == -f.uniformity and f.seconds > 0
    assert f.trigger.shape == (1, 8, 8) and torch.isfinite(f.trigger).all()
    assert all(torch.equal(a, b) for a, b in zip(before, unet.parameters()))  # weights untouched
    assert all(p.requires_grad for p in unet.parameters()) and all(p.grad is None for p in unet.parameters())
    again = elijah_features(unet, config, (1, 8, 8), n_samples=4, steps=3, inversion_steps=2, inversion_batch=5)
    assert torch.equal(again.trigger, f.trigger) and again.uniformity == f.uniformity  # seeded


def test_diffcleanse_score_runs_a_schedule_and_counts_evaluations() -> None:
    from benchmarks.baselines import DiffCleanseResult, diffcleanse_score
    from hfaudit.detect.blackbox import BlackboxConfig

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                       layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"))
    config = dict(DDPMScheduler(num_train_timesteps=1000).config)
    small = BlackboxConfig(iterations=2, n_samples=4, steps=2, screen=0, restarts=1, directions=1)
    r = diffcleanse_score(unet, config, (1, 8, 8), n_samples=8, config=small)
    assert isinstance(r, DiffCleanseResult) and 1 / 8 <= r.mscr <= 1 and r.score == r.mscr
    # the search samples 2 antithetic batches per iteration; the final MSCR samples 8 images x 2 steps
    assert r.unet_evaluations >= 2 * 2 * 4 * 2 + 8 * 2
    assert r.trigger.shape == (1, 8, 8) and torch.isfinite(r.trigger).all()
    again = diffcleanse_score(unet, config, (1, 8, 8), n_samples=8, config=small)
    assert torch.equal(again.trigger, r.trigger) and again.mscr == r.mscr  # seeded
