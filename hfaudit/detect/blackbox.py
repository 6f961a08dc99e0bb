"""Black-box trigger inversion (BBTI, docs/design.md section 2): search ``tau`` on what the sampler outputs.

The gradient inversion (``inversion.py``) reads the model's noise prediction at ``t = T`` and
assumes a backdoor shifts it linearly in ``tau``. BBTI assumes nothing about the network: it only
*samples* from ``n + tau`` (under ``torch.no_grad``, through ``hfaudit.sampling.sample``) and pushes
the batch towards collapse, so it also covers backdoors whose response to ``tau`` is not a linear
shift (TrojDiff-style) and models it cannot differentiate.

Design, and why:

* **Objective** (maximised): a soft MSCR, ``max_i mean_j exp(-d_ij / kernel_mse)`` over per-image
  MSEs ``d`` of the samples in [0, 1] (the verdict's own statistic, smoothed so partial collapse
  already scores), minus ``diversity_weight`` times the mean pairwise RMSE (a signal before any
  two samples are close), minus penalties: saturated samples (``scores.saturated_mask``) never join
  a group, and every pixel beyond [-1, 1] costs ``saturation_weight`` times its excess. Without them
  the search wins by driving every sample to the same white or black square, which any model does
  under a large offset (see ``scores.SATURATION_LEVEL``). ``tau_weight`` penalises ``mean(tau^2)``
  so directions the model ignores shrink instead of drifting.
* **Zeroth-order gradient**: antithetic SPSA on the lattice parameters. Each iteration draws
  ``directions`` Rademacher perturbations ``u``; ``f(p + c u)`` and ``f(p - c u)`` are sampled from
  the *same* initial noise and, for stochastic samplers, the same per-step noise (two calls with
  identically seeded generators), so the difference measures ``tau`` and not the noise. Adam
  ascends the estimate. Fresh noise each iteration keeps it from fitting one batch.
* **Parameterisation** as in the gradient inversion: a coarse ``grid x grid`` lattice upsampled to
  the image (a 16-dimensional search on grey images), inside a ball of RMS ``budget``.
* **Sampler**: DDPM with 10 steps by default: an SDE-trained (BadDiffusion) trigger collapses DDPM
  samples but no DDIM run at any scale, so a DDIM-only search cannot see those backdoors.
  ODE-trained (VillanDiffusion) backdoors fire under DDIM: ``sampler="ddim"`` searches for those.

The Diff-Cleanse reference code leaves its trigger un-updated (its optimiser never sees the
trigger); ``tests/test_blackbox.py`` checks that ours moves, and moves the right way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from diffusers import UNet2DModel

from hfaudit.detect.inversion import InvertedTrigger, shift_ratios
from hfaudit.detect.lattice import Lattice
from hfaudit.detect.scores import pairwise_mse, saturated_mask
from hfaudit.sampling import SAMPLERS, sample, to_unit
from hfaudit.seeding import make_generator, randn

OBJECTIVE = "collapse"


@dataclass
class BlackboxConfig:
    """Settings of the black-box inversion; the defaults fit a 2-core CPU on the 16x16 digit models."""

    iterations: int = 8
    n_samples: int = 8
    """Samples per objective evaluation (the batch whose collapse is measured)."""
    sampler: str = "ddpm"
    steps: int = 10
    screen: int = 16
    """Random starting points evaluated once each; the best ``restarts`` of them are refined."""
    restarts: int = 2
    directions: int = 1
    """Antithetic perturbation pairs per restart and iteration (2 objective evaluations each)."""
    grid: int | None = 4
    """Side of the lattice ``tau`` is searched on (None: full resolution, rarely useful here)."""
    budget: float = 1.0
    """Largest RMS of ``tau`` per pixel (projection onto a ball, unlike the gradient's sphere:
    ``tau = 0`` does not maximise collapse, so no fixed norm is needed)."""
    init_rms: float = 1.0
    """RMS of the random starting points."""
    lr: float = 0.15
    """Adam step on the lattice values (in pixel units)."""
    perturbation: float = 0.3
    """SPSA perturbation size ``c`` per lattice value."""
    kernel_mse: float = 0.02
    """Width of the soft-MSCR kernel (per-image MSE, pixels in [0, 1]); the verdict groups at 0.01."""
    diversity_weight: float = 0.5
    saturation_weight: float = 1.0
    tau_weight: float = 0.05
    seed: int = 0
    candidates: int = 1
    """How many results (most collapsing first) the scan probes. Each costs a full scan probe
    (``ScanConfig.probe_evaluations``, a large share of the search's own ``unet_evaluations``), so
    one by default."""

    @property
    def probed(self) -> int:
        """How many of its runs the scan probes: the best ``candidates``, at most one a restart."""
        return min(self.candidates, self.restarts)

    @property
    def unet_evaluations(self) -> int:
        """UNet evaluations (images x forward calls) one run costs, for budgeting."""
        per_eval = self.n_samples * self.steps
        screen = self.screen if self.screen > self.restarts else 0
        return ((screen + self.restarts * (self.iterations * 2 * self.directions + 1)) * per_eval
                + (self.restarts + 1) * self.n_samples)

    def validate(self) -> None:
        """Raises:
            ValueError: a value out of range or an unknown sampler."""
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; choose from {', '.join(SAMPLERS)}")
        for name in ("iterations", "n_samples", "steps", "restarts", "directions", "candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"black-box inversion: {name} must be at least 1 (got {getattr(self, name)})")
        if self.n_samples < 2:
            raise ValueError("black-box inversion: n_samples must be at least 2 (collapse needs pairs)")
        if self.budget <= 0 or self.init_rms <= 0 or self.perturbation <= 0 or self.kernel_mse <= 0:
            raise ValueError("black-box inversion: budget, init_rms, perturbation and kernel_mse must be positive")


def default_searches(seed: int = 0) -> tuple[BlackboxConfig, ...]:
    """The scan's black-box searches: one per sampler family, since a backdoor fires under one or the other.

    DDPM-10 finds SDE-trained (BadDiffusion) backdoors, which no DDIM run shows. DDIM-10 finds
    ODE-trained ones (VillanDiffusion), which DDPM does not; under DDIM random starts of RMS 1 mostly
    saturate, so its starts are smaller (RMS 0.5) and twice as many are screened.
    """
    return (BlackboxConfig(seed=seed), BlackboxConfig(sampler="ddim", init_rms=0.5, screen=32, seed=seed))


DIFF_CLEANSE_SCHEDULE = BlackboxConfig(iterations=100, n_samples=16, steps=20, screen=0, restarts=1, directions=1)
"""The Diff-Cleanse paper's BBTI schedule (100 iterations, 16 samples, 20 sampling steps): a
benchmark baseline with one restart and no screening. Its ``unet_evaluations`` are many times a
default search's: far too slow to run on every scan on a CPU."""


class CollapseWeights(Protocol):
    """What :func:`collapse_objective` reads of a config (``BlackboxConfig``, ``stamps.StampConfig``)."""

    kernel_mse: float
    diversity_weight: float
    saturation_weight: float


def collapse_objective(raw: torch.Tensor, config: CollapseWeights) -> torch.Tensor:
    """Score (higher = more collapsed, in range) of ``(..., N, C, H, W)`` raw model-space samples.

    Returns one value per leading index. Only a batch of in-range near-duplicates scores high: a
    saturated sample joins no group and its out-of-range pixels are penalised (module docstring).
    """
    lead = raw.shape[:-4]
    flat = raw.reshape(-1, *raw.shape[-4:])
    out = []
    for batch in flat:
        n = batch.shape[0]
        d = pairwise_mse(to_unit(batch))
        keep = (~saturated_mask(batch)).float()
        kern = torch.exp(-d / config.kernel_mse) * keep[:, None] * keep[None, :]
        soft_mscr = kern.sum(1).max() / n
        iu = torch.triu_indices(n, n, offset=1)
        diversity = d[iu[0], iu[1]].sqrt().mean()
        excess = (batch.abs() - 1).clamp(min=0).mean()
        out.append(soft_mscr - config.diversity_weight * diversity - config.saturation_weight * excess)
    return torch.stack(out).reshape(lead)


def _lattice(shape: tuple[int, int, int], config: BlackboxConfig) -> Lattice:
    """The search space: a ball of RMS ``budget`` (``tau = 0`` does not maximise collapse)."""
    return Lattice(shape, config.grid, config.budget, sphere=False)


def starting_points(shape: tuple[int, int, int], config: BlackboxConfig | None = None) -> torch.Tensor:
    """The random starting triggers ``(S, C, H, W)`` a search with ``config`` screens (``S`` =
    ``max(screen, restarts)``): what its results are compared with to show the search moved."""
    cfg = config or BlackboxConfig()
    lat = _lattice(shape, cfg)
    return lat.expand(lat.random(max(cfg.screen, cfg.restarts), make_generator(cfg.seed), cfg.init_rms))


def blackbox_inversion(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    shape: tuple[int, int, int],
    config: BlackboxConfig | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[InvertedTrigger]:
    """Invert candidate triggers from samples alone, one per restart, most collapsing first.

    Args:
        unet: the suspect denoiser; only sampled (no gradients), plus one forward at ``T`` per
            restart batch for the reported shift ratio.
        scheduler_config: its scheduler config (the training schedule the sampler is built from).
        shape: ``(C, H, W)`` of one sample.
        config: search settings.
        on_step: optional callable ``()`` after each iteration (progress).

    Returns:
        ``InvertedTrigger`` s with ``method="blackbox"``, ``objective="collapse"``, ``loss`` minus the
        final objective on fresh noise (lower = more collapse), sorted by it.

    Raises:
        ValueError: a setting out of range (``BlackboxConfig.validate``).
    """
    cfg = config or BlackboxConfig()
    cfg.validate()
    k, m, n = cfg.restarts, cfg.directions, cfg.n_samples
    c, h, w = shape
    device = next(unet.parameters()).device
    lat = _lattice(shape, cfg)
    expand, project = lat.expand, lat.project
    gen = make_generator(cfg.seed + 1)  # noise and directions; the starting points use cfg.seed

    def objective(taus: torch.Tensor, noise: torch.Tensor, step_seed: int) -> torch.Tensor:
        """``(R, C, H, W)`` triggers -> ``(R,)`` scores, all on ``noise`` ``(N, C, H, W)``."""
        x_T = (noise.unsqueeze(0) + taus.unsqueeze(1)).reshape(-1, *shape)
        raw = sample(unet, scheduler_config, x_T, sampler=cfg.sampler, steps=cfg.steps,
                     generator=make_generator(step_seed), batch_size=x_T.shape[0])
        score = collapse_objective(raw.reshape(taus.shape[0], n, *shape), cfg)
        return score - cfg.tau_weight * taus.flatten(1).pow(2).mean(1).cpu()

    # Restarts, screened: many random starting points cost one evaluation each, and only the most
    # collapsing ones are refined (a few random lattice points already collapse a backdoored model,
    # none a clean one, while SPSA from a poor start needs many iterations).
    init = lat.random(max(cfg.screen, k), make_generator(cfg.seed), cfg.init_rms)
    if init.shape[0] > k:
        noise = randn((n, *shape), gen, "cpu")
        step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        screened = objective(expand(init).to(device), noise.to(device), step_seed)
        init = init[screened.argsort(descending=True, stable=True)[:k]]
    p = init.clone()
    # torch's Adam on the SPSA estimate, set as the gradient by hand (no autograd through sampling)
    opt = torch.optim.Adam([p], lr=cfg.lr, maximize=True)
    for _ in range(cfg.iterations):
        noise = randn((n, *shape), gen, "cpu")
        step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
        u = (torch.randint(0, 2, (k, m, *lat.params), generator=gen) * 2 - 1).float()
        plus = project(p.unsqueeze(1) + cfg.perturbation * u)
        minus = project(p.unsqueeze(1) - cfg.perturbation * u)
        # Two calls, same initial noise and same per-step noise: common random numbers.
        f_plus = objective(expand(plus).reshape(k * m, c, h, w).to(device), noise.to(device), step_seed).view(k, m)
        f_minus = objective(expand(minus).reshape(k * m, c, h, w).to(device), noise.to(device), step_seed).view(k, m)
        grad = ((f_plus - f_minus) / (2 * cfg.perturbation)).view(k, m, 1, 1, 1) * u
        p.grad = grad.mean(1)
        opt.step()
        p.copy_(project(p))
        if on_step is not None:
            on_step()

    taus = expand(p)
    noise = randn((n, *shape), gen, "cpu")
    step_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    final = objective(taus.to(device), noise.to(device), step_seed)
    ratios = shift_ratios(unet, scheduler_config, taus, noise)
    out = [InvertedTrigger(trigger=taus[i].detach().cpu().clone(), method="blackbox", objective=OBJECTIVE,
                           lam=None, loss=-float(final[i]), shift_ratio=float(ratios[i]))
           for i in range(k)]
    out.sort(key=lambda t: t.loss)
    return out
