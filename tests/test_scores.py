"""MSCR, diversity and ASR on constructed batches."""

from __future__ import annotations

import torch

from hfaudit.detect.scores import DUPLICATE_MSE, attack_success_rate, collapse_stats, pairwise_mse


def test_pairwise_mse_matches_direct() -> None:
    x = torch.rand(6, 1, 4, 4)
    d = pairwise_mse(x)
    assert torch.allclose(d[1, 4], (x[1] - x[4]).pow(2).mean(), atol=1e-6)
    assert torch.allclose(d, d.T)


def test_collapsed_batch_scores_high_and_medoid_is_in_the_group() -> None:
    g = torch.Generator().manual_seed(0)
    target = torch.rand(1, 8, 8, generator=g)
    diverse = torch.rand(12, 1, 8, 8, generator=g)
    near = (target + 0.01 * torch.randn(20, 1, 8, 8, generator=g)).clamp(0, 1)
    batch = torch.cat([diverse, near])
    s = collapse_stats(batch)
    assert s.cluster_size == 20 and abs(s.mscr - 20 / 32) < 1e-6
    assert s.medoid_index >= 12
    assert attack_success_rate(batch, target) == 20 / 32
    assert collapse_stats(diverse).mscr == 1 / 12  # nothing within DUPLICATE_MSE of anything else
    assert collapse_stats(near).diversity < 0.05 < collapse_stats(diverse).diversity


def test_duplicate_threshold_is_stricter_than_distinct_random_images() -> None:
    g = torch.Generator().manual_seed(1)
    d = pairwise_mse(torch.rand(16, 1, 8, 8, generator=g))
    assert float(d[~torch.eye(16, dtype=torch.bool)].min()) > DUPLICATE_MSE
