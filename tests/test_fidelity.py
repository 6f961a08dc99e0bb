"""Benign fidelity: the shipped digits classifier and the Frechet distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hfaudit.digits import load_digits_images
from hfaudit.fidelity import (
    DIGITS_SHAPE,
    FeatureStats,
    classifier_path,
    digit_features,
    feature_stats,
    fidelity,
    fidelity_available,
    frechet_distance,
    load_classifier,
)
from hfaudit.seeding import make_generator


@pytest.fixture(scope="module")
def digits01() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits_images(16, 1)
    return (images + 1) / 2, labels


def _stats(mean: np.ndarray, cov: np.ndarray) -> FeatureStats:
    return FeatureStats(mean=mean, cov=cov, n=100)


def test_frechet_distance_closed_forms() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 6))
    cov = a @ a.T + np.eye(6)
    mu = rng.normal(size=6)
    assert frechet_distance(_stats(mu, cov), _stats(mu, cov)) == pytest.approx(0.0, abs=1e-8)
    # A pure mean shift adds |d|^2.
    d = np.arange(6, dtype=float)
    assert frechet_distance(_stats(mu, cov), _stats(mu + d, cov)) == pytest.approx(float(d @ d), rel=1e-8)
    # Isotropic covariances: tr(S1 + S2 - 2 sqrt(S1 S2)) = n (s1 - s2)^2 for S = s^2 I.
    fd = frechet_distance(_stats(mu, 4 * np.eye(6)), _stats(mu, 9 * np.eye(6)))
    assert fd == pytest.approx(6 * (2 - 3) ** 2, rel=1e-8)
    # Symmetric, also for a singular covariance (ReLU features can be dead).
    b = rng.normal(size=(6, 3))
    singular = b @ b.T
    assert frechet_distance(_stats(mu, cov), _stats(mu, singular)) == pytest.approx(
        frechet_distance(_stats(mu, singular), _stats(mu, cov)), rel=1e-6)


def test_shipped_classifier_is_packaged_and_accurate(digits01) -> None:
    assert classifier_path().is_file()
    x, y = digits01
    with torch.no_grad():
        acc = float((load_classifier()(x).argmax(1) == y).float().mean())
    assert acc > 0.97  # trained on 80% of these, 99% held out
    assert digit_features(x[:5]).shape == (5, 64)


def test_fidelity_separates_digits_from_noise_and_blur(digits01) -> None:
    x, _ = digits01
    perm = torch.randperm(x.shape[0], generator=make_generator(0))
    real = fidelity(x[perm[:512]])
    noise = fidelity(torch.rand(512, *DIGITS_SHAPE, generator=make_generator(1)))
    blurred = fidelity(torch.nn.functional.avg_pool2d(x[perm[:512]], 3, 1, 1))
    assert real.available and real.n_generated == 512 and real.n_reference == x.shape[0]
    assert real.frechet_distance < blurred.frechet_distance < noise.frechet_distance
    assert noise.frechet_distance > 10 * real.frechet_distance


def test_fidelity_unavailable_for_other_shapes() -> None:
    for shape in ((1, 8, 8), (3, 16, 16), (1, 32, 32)):
        assert fidelity_available(shape) is not None
        f = fidelity(torch.rand(4, *shape))
        assert not f.available and f.frechet_distance is None and f.reason
    assert fidelity_available(DIGITS_SHAPE) is None
    assert not fidelity(torch.rand(1, *DIGITS_SHAPE)).available  # one image has no covariance


def test_feature_stats_shapes() -> None:
    stats = feature_stats(torch.randn(50, 4, generator=make_generator(0)))
    assert stats.mean.shape == (4,) and stats.cov.shape == (4, 4) and stats.n == 50


def test_ratio_interval_covers_the_ratio_and_tells_a_blur_from_a_reshuffle(digits01) -> None:
    """Paired bootstrap: the same images give exactly 1; a blur of them an interval above 1 that
    holds its point ratio; unpaired or unscorable inputs none."""
    from hfaudit.fidelity import frechet_ratio_interval

    x, _ = digits01
    real = x[torch.randperm(x.shape[0], generator=make_generator(0))[:512]]
    assert frechet_ratio_interval(real, real, n_boot=20) == pytest.approx((1.0, 1.0))
    blurred = torch.nn.functional.avg_pool2d(real, 3, 1, 1)
    lo, hi = frechet_ratio_interval(real, blurred, n_boot=50)
    point = fidelity(blurred).frechet_distance / fidelity(real).frechet_distance
    assert 1.0 < lo <= hi and lo < point * 1.2 and hi > point / 1.2
    assert frechet_ratio_interval(real, blurred[:100]) is None
    assert frechet_ratio_interval(torch.rand(8, 1, 8, 8), torch.rand(8, 1, 8, 8)) is None
