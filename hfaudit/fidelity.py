"""Benign fidelity: Frechet distance of generated to reference image features (docs/design.md section 5).

For the 16x16 one-channel digit models the features are the penultimate layer of a small digits
classifier that the project trains (``examples/train_classifier.py``) and ships inside the package
(``hfaudit/assets/digits_classifier.safetensors``); the reference images are the scikit-learn digits
the example models were trained on. For any other sample shape no trustworthy feature network is
available offline, so :func:`fidelity` says "unavailable" instead of returning a number that would
mean nothing (an Inception network would be the choice for natural images, where its weights exist
locally; hfaudit does not download weights).

Why Frechet distance and not classifier accuracy: removal can keep every sample recognisable while
collapsing the spread of styles; the distance between feature distributions sees both the mean
shift and the lost variance.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hfaudit.digits import load_digits_images

DIGITS_SHAPE = (1, 16, 16)
"""``(C, H, W)`` of the models the shipped digits classifier can judge."""

CLASSIFIER_ASSET = "digits_classifier.safetensors"
FEATURE_NAME = "digits-classifier-penultimate"


class DigitsClassifier(nn.Module):
    """A small CNN for 16x16 grey digits in [0, 1]; ``features`` is its 64-d penultimate layer.

    Small on purpose: it trains in seconds on a CPU, and a 64-d feature keeps the covariance in the
    Frechet distance well estimated from a few hundred samples.
    """

    def __init__(self, feature_dim: int = 64, n_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, feature_dim)
        self.fc2 = nn.Linear(feature_dim, n_classes)

    def features(self, x01: torch.Tensor) -> torch.Tensor:
        """``(N, 1, 16, 16)`` images in [0, 1] -> ``(N, feature_dim)`` penultimate activations."""
        x = F.max_pool2d(F.relu(self.conv1(x01 * 2 - 1)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.fc2(self.features(x01))


def classifier_path() -> Path:
    """Where the shipped classifier weights live (package data)."""
    return Path(str(resources.files("hfaudit") / "assets" / CLASSIFIER_ASSET))


@lru_cache(maxsize=1)
def load_classifier() -> DigitsClassifier:
    """The shipped digits classifier on the CPU, in eval mode (cached: it is tiny).

    Raises:
        FileNotFoundError: the package was installed without its data files.
    """
    from safetensors.torch import load_file

    path = classifier_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall hfaudit, or run examples/train_classifier.py")
    model = DigitsClassifier()
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


@dataclass
class FeatureStats:
    """Mean and covariance of a feature distribution (float64)."""

    mean: np.ndarray
    cov: np.ndarray
    n: int


@dataclass
class Fidelity:
    """How close generated images are to the reference distribution; lower distance is better."""

    available: bool
    frechet_distance: float | None
    n_generated: int
    n_reference: int
    feature: str | None
    reason: str | None = None
    """Why no number was computed (``available`` is False)."""


def fidelity_available(sample_shape: tuple[int, int, int]) -> str | None:
    """None when :func:`fidelity` can score models of ``sample_shape``, else the reason it cannot."""
    if tuple(sample_shape) != DIGITS_SHAPE:
        return (f"no feature network for {tuple(sample_shape)} samples is available offline "
                f"(the shipped digits classifier judges {DIGITS_SHAPE} only)")
    if not classifier_path().is_file():
        return f"the shipped digits classifier ({CLASSIFIER_ASSET}) is missing from the installation"
    return None


@torch.no_grad()
def digit_features(images01: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Penultimate features of ``(N, 1, 16, 16)`` images in [0, 1], on the CPU (input via :func:`classifier_input`)."""
    model = load_classifier()
    x = classifier_input(images01)
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


DIGIT_CHANNELS = (1, 3)
DIGIT_SIZES = (8, 16)
"""Sample shapes the classifier can *label* (``classifier_input``): grey or RGB, 8x8 or 16x16. The
zoo's digit models come in all four; RGB ones repeat the grey image, and 8x8 is the digits' native
resolution, so averaging the channels and upsampling bilinearly (as ``load_digits_images`` does)
gives the classifier the images it was trained on."""


def classifier_input_reason(sample_shape: tuple[int, ...]) -> str | None:
    """None when :func:`classifier_input` accepts ``(C, H, W)`` samples, else why it does not."""
    shape = tuple(sample_shape)
    if len(shape) != 3 or shape[0] not in DIGIT_CHANNELS or shape[1] != shape[2] or shape[1] not in DIGIT_SIZES:
        return (f"the shipped digits classifier labels 1- or 3-channel 8x8 or 16x16 samples only "
                f"(got {tuple(sample_shape)})")
    if not classifier_path().is_file():
        return f"the shipped digits classifier ({CLASSIFIER_ASSET}) is missing from the installation"
    return None


def classifier_input(images01: torch.Tensor) -> torch.Tensor:
    """Digit-shaped ``(N, C, H, W)`` samples in [0, 1] -> the classifier's ``(N, 1, 16, 16)`` input, on the CPU.

    The one place that maps model samples to the classifier: channels averaged to grey, 8x8
    upsampled bilinearly to 16x16 (``align_corners=False``, like the training data), pixels clamped.

    Raises:
        ValueError: a shape :func:`classifier_input_reason` rejects.
    """
    reason = classifier_input_reason(tuple(images01.shape[1:]))
    if reason is not None:
        raise ValueError(reason)
    x = images01.detach().float().cpu().clamp(0, 1).mean(1, keepdim=True)
    if x.shape[-1] != 16:
        x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    return x


@torch.no_grad()
def digit_probabilities(images01: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``(N, 10)`` class probabilities of digit-shaped samples in [0, 1] (see :func:`classifier_input`).

    Raises:
        ValueError: samples the classifier cannot label.
    """
    model = load_classifier()
    x = classifier_input(images01)
    return torch.cat([model(x[i:i + batch_size]).softmax(1) for i in range(0, x.shape[0], batch_size)])


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Mean and (unbiased) covariance of ``(N, D)`` features."""
    f = features.detach().double().cpu().numpy()
    return FeatureStats(mean=f.mean(0), cov=np.cov(f, rowvar=False), n=f.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` for two Gaussians.

    ``tr((S_a S_b)^(1/2))`` is computed as the sum of square roots of the eigenvalues of the
    symmetric ``S_a^(1/2) S_b S_a^(1/2)``: real and stable where ``scipy.linalg.sqrtm`` of the
    non-symmetric product can return complex noise for singular covariances (ReLU features).
    """
    diff = a.mean - b.mean
    w, v = np.linalg.eigh(a.cov)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = sqrt_a @ b.cov @ sqrt_a
    tr_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum())
    return float(diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2 * tr_sqrt)


@lru_cache(maxsize=1)
def digits_reference_stats() -> FeatureStats:
    """Feature statistics of the 1,797 scikit-learn digits at 16x16: the reference distribution."""
    images, _ = load_digits_images(16, 1)
    return feature_stats(digit_features((images + 1) / 2))


def fidelity(images01: torch.Tensor, sample_shape: tuple[int, int, int] | None = None) -> Fidelity:
    """Frechet distance of generated ``(N, C, H, W)`` images in [0, 1] to the reference digits.

    Returns an unavailable :class:`Fidelity` (with the reason) for shapes the shipped classifier
    cannot judge, or fewer than two images.
    """
    shape = tuple(sample_shape or images01.shape[1:])
    reason = fidelity_available(shape)  # type: ignore[arg-type]
    n = int(images01.shape[0])
    if reason is None and n < 2:
        reason = "at least two generated images are needed"
    if reason is not None:
        return Fidelity(available=False, frechet_distance=None, n_generated=n, n_reference=0, feature=None,
                        reason=reason)
    ref = digits_reference_stats()
    fd = frechet_distance(feature_stats(digit_features(images01)), ref)
    return Fidelity(available=True, frechet_distance=fd, n_generated=n, n_reference=ref.n, feature=FEATURE_NAME)


RATIO_INTERVAL_LEVEL = 0.9
"""Coverage of :func:`frechet_ratio_interval` by default; the reports name it from here."""


def frechet_ratio_interval(before01: torch.Tensor, after01: torch.Tensor, *, level: float = RATIO_INTERVAL_LEVEL,
                           n_boot: int = 200, seed: int = 0) -> tuple[float, float] | None:
    """Paired-bootstrap interval of ``FD(after) / FD(before)`` to the reference digits.

    ``before01`` and ``after01`` are samples in [0, 1] of two models from the same noise, row for
    row; each bootstrap draw resamples the same rows of both, so the interval shows how far the
    ratio of one draw of noise can be from the models' own ratio. None where :func:`fidelity` is
    unavailable for their shape or the rows do not pair.
    """
    n = int(before01.shape[0])
    if after01.shape != before01.shape or fidelity_available(tuple(before01.shape[1:])) is not None or n < 2:
        return None
    ref = digits_reference_stats()
    fb, fa = digit_features(before01), digit_features(after01)
    g = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(n_boot):
        idx = torch.randint(0, n, (n,), generator=g)
        b = frechet_distance(feature_stats(fb[idx]), ref)
        if b > 0:
            ratios.append(frechet_distance(feature_stats(fa[idx]), ref) / b)
    if not ratios:
        return None
    q = np.quantile(np.asarray(ratios), [(1 - level) / 2, (1 + level) / 2])
    return float(q[0]), float(q[1])
