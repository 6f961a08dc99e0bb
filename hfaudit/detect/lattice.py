"""Triggers on a coarse lattice: the parameterisation every trigger search shares (docs/design.md section 2).

A backdoor responds to ``<n + tau, r>`` almost like a step function, so from a random
full-resolution start a search sees no slope; on a ``grid x grid`` lattice upsampled to the image
(nearest), random starts land near enough to a patch trigger to be pulled in (measured in
``inversion.py``). The norm is fixed (``sphere``: objectives that ``tau = 0`` would win) or capped
(``ball``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from hfaudit.seeding import randn


class Lattice:
    """Upsampling from lattice values to an image trigger, and projection onto its norm budget."""

    def __init__(self, shape: tuple[int, int, int], grid: int | None, budget: float, *, sphere: bool) -> None:
        """``shape``: ``(C, H, W)`` of one sample; ``grid``: lattice side (None: full resolution);
        ``budget``: RMS of ``tau`` per pixel, the radius of the sphere or ball; ``sphere``: fix the
        norm instead of capping it."""
        self.shape = shape
        c, h, w = shape
        self.params = (c, grid or h, grid or w)
        self.scale = float(c * h * w) ** 0.5
        self.radius = budget * self.scale
        self.sphere = sphere

    def expand(self, p: torch.Tensor) -> torch.Tensor:
        """``(..., C, g, g)`` -> ``(..., C, H, W)`` (nearest)."""
        c, h, w = self.shape
        if p.shape[-2:] == (h, w):
            return p
        lead = p.shape[:-3]
        return F.interpolate(p.reshape(-1, *self.params), size=(h, w), mode="nearest").reshape(*lead, c, h, w)

    def project(self, p: torch.Tensor) -> torch.Tensor:
        """Every ``(..., C, g, g)`` point scaled onto the sphere, or into the ball, of ``radius`` (image norm)."""
        factor = self.radius / self.expand(p).flatten(-3).norm(dim=-1).clamp(min=1e-8)
        if not self.sphere:
            factor = factor.clamp(max=1.0)
        return p * factor[..., None, None, None]

    def random(self, count: int, generator: torch.Generator, rms: float | None = None,
               device: torch.device | str = "cpu") -> torch.Tensor:
        """``count`` random lattice points, of RMS ``rms`` per pixel (default: the budget), projected."""
        init = randn((count, *self.params), generator, device)
        if rms is not None:
            init = init * (rms * self.scale / self.expand(init).flatten(1).norm(dim=1).clamp(min=1e-8)).view(-1, 1, 1, 1)
        return self.project(init)


def pass_through(shift: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``<D, tau> / ||tau||^2`` per leading index: the share of an input offset ``tau`` that the model
    passes through to its noise prediction (``D``: the mean change of that prediction)."""
    return (shift * tau).flatten(1).sum(1) / (tau * tau).flatten(1).sum(1).clamp(min=1e-12)


def projected_adam(param: torch.Tensor, loss: Callable[[], torch.Tensor], project: Callable[[torch.Tensor], torch.Tensor],
                   steps: int, lr: float, on_step: Callable[[], None] | None = None) -> None:
    """Minimise ``loss()`` (summed) over ``param`` in place with Adam, projecting after every step:
    the loop every gradient trigger search runs (a budget, then the next step)."""
    opt = torch.optim.Adam([param], lr=lr)
    for _ in range(steps):
        value = loss().sum()
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()
        with torch.no_grad():
            param.copy_(project(param))
        if on_step is not None:
            on_step()
