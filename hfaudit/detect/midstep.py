"""The mid-timestep pass-through search, and the inversion for SDE-trained backdoors built on it.

Why a mid timestep: BadDiffusion-style training feeds ``x_t = sqrt(abar_t) y + (1 - sqrt(abar_t)) r
+ sqrt(1 - abar_t) eps`` and asks for ``eps + m c_t r`` (``benchmarks/attacks/baddiffusion.py``):
when the input moves by ``(1 - sqrt(abar_t)) tau`` along the trigger, the noise prediction moves by
``m c_t tau``. The search measures that ratio, ``<D, tau> / ||tau||^2`` for the mean shift ``D``:
``m c_t``, about ``m / 2`` at late timesteps of a linear schedule, while a clean model passes
random lattice directions through almost whole. So an ODE-trained backdoor (``m = 2``) sits
*above* the clean ratio, which the ODE inversion's first stage maximises (``detect/ode.py``), and
an SDE-trained one (``m = 1``, BadDiffusion) *below* it, which :func:`midstep_inversion`
minimises. At ``t = T``, where the gradient inversion works, an SDE trigger's ratio need not stand
out from other directions the model absorbs; at ``0.8 T`` it does (README, "Attacks and the
detection benchmark").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from diffusers import UNet2DModel

from hfaudit.detect.inversion import InvertedTrigger, shift_ratios
from hfaudit.detect.lattice import Lattice, pass_through, projected_adam
from hfaudit.sampling import alphas_cumprod_of
from hfaudit.seeding import make_generator, randn

OBJECTIVE = "pass-through-min"


@dataclass
class PassThroughSearch:
    """Settings of a pass-through search at a mid timestep (shared by this inversion and the ODE one)."""

    label: ClassVar[str] = "mid-timestep inversion"
    """How errors name the search."""

    t_fraction: float = 0.8
    """The timestep searched, as a fraction of the training schedule."""
    grid: int = 4
    restarts: int = 8
    batch_size: int = 16
    """Noise samples the shift is averaged over."""
    search_steps: int = 40
    search_lr: float = 0.1
    seed: int = 0

    def validate(self) -> None:
        """Raises:
            ValueError: a value out of range."""
        for name in ("grid", "restarts", "batch_size", "search_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{self.label}: {name} must be at least 1 (got {getattr(self, name)})")
        if not 0 < self.t_fraction < 1:
            raise ValueError(f"{self.label}: t_fraction must be in (0, 1) (got {self.t_fraction})")
        if min(self.budgets, default=0.0) <= 0 or self.search_lr <= 0:
            raise ValueError(f"{self.label}: budgets and learning rates must be positive")

    @property
    def budgets(self) -> tuple[float, ...]:
        """RMS per pixel of the directions, one search each (fixed: the ratio is scale-free, the model
        is not); each subclass says where they come from."""
        raise NotImplementedError

    @property
    def search_evaluations(self) -> int:
        """UNet forward evaluations (images x calls) of the searches, backward passes not counted."""
        return len(self.budgets) * self.batch_size * (1 + self.restarts * (self.search_steps + 1))

    @property
    def backward_evaluations(self) -> int:
        """Images backpropagated through the UNet by the searches (every optimiser step)."""
        return len(self.budgets) * self.batch_size * self.restarts * self.search_steps


@dataclass
class MidstepConfig(PassThroughSearch):
    """The inversion for SDE-trained backdoors: least pass-through at ``t_fraction``, probed as found."""

    rms: tuple[float, ...] = (0.3, 0.5)
    """RMS per pixel of the directions, one search of ``restarts`` each. Several scales because a
    backdoor fires near the scale it was trained at, and the lattice's blurred copy of a trigger
    has a smaller RMS than the trigger itself (``benchmarks/midstep_seeds.py``, README "Why each
    miss")."""
    candidates: int = 2
    """How many directions per search (least pass-through first) the scan probes."""

    @property
    def budgets(self) -> tuple[float, ...]:
        return self.rms

    @property
    def probed(self) -> int:
        """How many candidates the scan probes: ``candidates`` from each search."""
        return len(self.rms) * min(self.candidates, self.restarts)

    def pick(self, found: list[InvertedTrigger]) -> list[InvertedTrigger]:
        """The candidates to probe from :func:`midstep_inversion`'s output: the best of each search."""
        per = min(self.candidates, self.restarts)
        return [t for i in range(len(self.rms)) for t in found[i * self.restarts:i * self.restarts + per]]

    def validate(self) -> None:
        """Raises:
            ValueError: a value out of range."""
        super().validate()
        if self.candidates < 1:
            raise ValueError(f"{self.label}: candidates must be at least 1 (got {self.candidates})")

    @property
    def unet_evaluations(self) -> int:
        """UNet forward evaluations of one run (the search and the ratios at ``t = T``)."""
        return self.search_evaluations + self.batch_size * (1 + len(self.rms) * self.restarts)


@contextmanager
def frozen(unet: torch.nn.Module) -> Iterator[None]:
    """Gradients flow to the input only, not the weights, while inside; each flag restored after."""
    was = [p.requires_grad for p in unet.parameters()]
    unet.requires_grad_(False)
    try:
        yield
    finally:
        for p, g in zip(unet.parameters(), was):
            p.requires_grad_(g)


def _mid_input(unet: UNet2DModel, scheduler_config: Mapping[str, Any], t_fraction: float,
               noise: torch.Tensor) -> tuple[torch.Tensor, int, float, torch.Tensor]:
    """``(x_t, t, abar_t, base)`` of a blank image at ``t_fraction`` of the training schedule, with
    the model's noise prediction ``base`` on it: the offset is all there is, so what the model passes
    of it is what the searches measure. ``noise`` must be on the UNet's device."""
    abar_all = alphas_cumprod_of(scheduler_config)
    t_mid = int(round(t_fraction * (abar_all.shape[0] - 1)))
    abar = float(abar_all[t_mid])
    x = (1 - abar) ** 0.5 * noise
    dtype = next(unet.parameters()).dtype
    with torch.no_grad():
        base = unet(x.to(dtype), torch.full((x.shape[0],), t_mid, device=x.device, dtype=torch.long)).sample.float()
    return x, t_mid, abar, base


def _pass_through_of(unet: UNet2DModel, x: torch.Tensor, t_mid: int, abar: float, base: torch.Tensor,
                     taus: torch.Tensor) -> torch.Tensor:
    """Ratios ``(K,)`` of ``taus`` ``(K, C, H, W)`` on the inputs ``x`` ``(B, C, H, W)`` whose noise
    prediction is ``base``; differentiable in ``taus``."""
    k, b, shape = taus.shape[0], x.shape[0], x.shape[1:]
    dtype = next(unet.parameters()).dtype
    ts = torch.full((k * b,), t_mid, device=x.device, dtype=torch.long)
    shifted = (x.unsqueeze(0) + (1 - abar ** 0.5) * taus.unsqueeze(1)).reshape(k * b, *shape)
    d = (unet(shifted.to(dtype), ts).sample.float().reshape(k, b, *shape) - base.unsqueeze(0)).mean(1)
    return pass_through(d, taus)


def pass_through_ratios(unet: UNet2DModel, scheduler_config: Mapping[str, Any], taus: torch.Tensor,
                        t_fraction: float, noise: torch.Tensor) -> torch.Tensor:
    """The pass-through ratio at ``t_fraction`` of given triggers ``(K, C, H, W)``, averaged over
    ``noise`` ``(B, C, H, W)``: what the searches optimise, for directions they did not find (a
    planted trigger, to see whether the search would rank it first)."""
    device = next(unet.parameters()).device
    x, t_mid, abar, base = _mid_input(unet, scheduler_config, t_fraction, noise.to(device))
    with torch.no_grad():
        return _pass_through_of(unet, x, t_mid, abar, base, taus.to(device)).cpu()


def pass_through_directions(unet: UNet2DModel, scheduler_config: Mapping[str, Any], shape: tuple[int, int, int],
                            cfg: PassThroughSearch, gen: torch.Generator,
                            on_step: Callable[[], None] | None = None, *,
                            budget: float, maximise: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratios, taus)`` of ``restarts`` lattice directions of RMS ``budget`` and extreme pass-through
    ratio at the mid timestep, most extreme first (highest if ``maximise``, else lowest; ``taus``:
    ``(restarts, C, H, W)``, on the UNet's device). The UNet must not require gradients (:func:`frozen`)."""
    device = next(unet.parameters()).device
    k, b = cfg.restarts, cfg.batch_size
    lat = Lattice(shape, cfg.grid, budget, sphere=True)
    x, t_mid, abar, base = _mid_input(unet, scheduler_config, cfg.t_fraction, randn((b, *shape), gen, device))
    q = lat.random(k, gen, device=device).requires_grad_(True)
    sign = -1.0 if maximise else 1.0

    def ratios() -> tuple[torch.Tensor, torch.Tensor]:
        tau = lat.expand(q)
        return _pass_through_of(unet, x, t_mid, abar, base, tau), tau

    projected_adam(q, lambda: sign * ratios()[0], lat.project, cfg.search_steps, cfg.search_lr, on_step)
    with torch.no_grad():
        ratio, tau = ratios()
    order = ratio.argsort(descending=maximise, stable=True)
    return ratio[order].detach(), tau[order].detach()


def midstep_inversion(
    unet: UNet2DModel,
    scheduler_config: Mapping[str, Any],
    shape: tuple[int, int, int],
    config: MidstepConfig | None = None,
    on_step: Callable[[], None] | None = None,
) -> list[InvertedTrigger]:
    """Invert candidate triggers for SDE-trained backdoors: for each RMS in ``rms``, the ``restarts``
    directions the model passes least of at ``t_fraction``, least first.

    Returns:
        ``InvertedTrigger`` s with ``method="midstep"``, one list after the other in the order of
        ``rms``; ``loss`` is the pass-through ratio at the mid timestep, ``shift_ratio`` the ratio at
        ``t = T`` like the other inversions report.

    Raises:
        ValueError: a setting out of range (``MidstepConfig.validate``).
    """
    cfg = config or MidstepConfig()
    cfg.validate()
    gen = make_generator(cfg.seed)
    with frozen(unet):
        found = [pass_through_directions(unet, scheduler_config, shape, cfg, gen, on_step, budget=b, maximise=False)
                 for b in cfg.rms]
        mid, taus = torch.cat([r for r, _ in found]), torch.cat([t for _, t in found]).cpu()
        at_T = shift_ratios(unet, scheduler_config, taus, randn((cfg.batch_size, *shape), gen, "cpu"))
    return [InvertedTrigger(trigger=taus[i].clone(), method="midstep", objective=OBJECTIVE, lam=None,
                            loss=float(mid[i]), shift_ratio=float(at_T[i])) for i in range(taus.shape[0])]
