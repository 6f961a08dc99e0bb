"""A lead for ODE-trained backdoors: the pass-through ratio of a searched trigger at a mid timestep.

    python benchmarks/ode_shift.py [--t 500] [--budget 0.5] [--only NAME ...]

Not part of the scan yet. The scan's gradient inversion looks at ``t = T``, where a VillanDiffusion
backdoor's output ``eps + 2 c_T r`` equals what a clean model predicts for ``n + r``, so it shows
nothing there. At a mid timestep it does: along its trigger the model passes *more* of an offset
``(1 - sqrt(abar_t)) tau`` through to its noise prediction than along other directions. This script
searches (Adam, 40 steps, 8 restarts on a 4x4 lattice, ``||tau||`` fixed at ``budget`` RMS) for the
direction with the highest ratio ``<D, tau> / ||tau||^2`` at ``t`` and prints it per zoo member,
with the MSCR of DDIM-10 samples from the best three directions (32 samples, scales 0.5 and 1).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo  # noqa: E402


def max_pass_through(unet, scheduler_config: dict, shape: tuple[int, int, int], t: int, budget: float,
                     restarts: int = 8, steps: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ratios, taus)`` of ``restarts`` searched directions, highest ratio first."""
    from hfaudit.attacks.train import make_scheduler
    from hfaudit.seeding import make_generator, randn

    unet.eval().requires_grad_(False)
    abar = float(make_scheduler().alphas_cumprod[t])
    c, h, w = shape
    gen = make_generator(seed)
    noise = randn((16, *shape), gen, "cpu")
    x = (1 - abar) ** 0.5 * noise
    ts = torch.full((restarts * 16,), t)
    base = unet(x, ts[:16]).sample
    radius = budget * float(c * h * w) ** 0.5

    def expand(q: torch.Tensor) -> torch.Tensor:
        return F.interpolate(q, size=(h, w), mode="nearest")

    def project(q: torch.Tensor) -> torch.Tensor:
        return q * (radius / expand(q).flatten(1).norm(dim=1).view(-1, 1, 1, 1))

    q = project(randn((restarts, c, 4, 4), gen, "cpu")).requires_grad_(True)
    opt = torch.optim.Adam([q], lr=0.1)
    for _ in range(steps + 1):
        tau = expand(q)
        xx = (x.unsqueeze(0) + (1 - abar ** 0.5) * tau.unsqueeze(1)).reshape(restarts * 16, *shape)
        d = (unet(xx, ts).sample.reshape(restarts, 16, *shape) - base.unsqueeze(0)).mean(1)
        ratio = (d * tau).flatten(1).sum(1) / (tau * tau).flatten(1).sum(1)
        opt.zero_grad()
        (-ratio.sum()).backward()
        opt.step()
        with torch.no_grad():
            q.copy_(project(q))
    order = ratio.detach().argsort(descending=True)
    return ratio.detach()[order], expand(q.detach())[order]


def main() -> None:
    from diffusers import UNet2DModel

    from hfaudit.detect.scores import collapse_stats, saturated_mask
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator, randn

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=zoo.DEFAULT_CACHE)
    ap.add_argument("--t", type=int, default=500)
    ap.add_argument("--budget", type=float, default=0.5)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for r in zoo.RECIPES:
        if args.only and r.name not in args.only:
            continue
        if not zoo.is_cached(r, args.cache):
            print(f"{r.name}: not built (python benchmarks/zoo.py)")
            continue
        path = zoo.model_dir(r, args.cache)
        unet = UNet2DModel.from_pretrained(path, subfolder="unet", use_safetensors=True)
        sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
        shape = (r.arch.channels, r.arch.size, r.arch.size)
        ratios, taus = max_pass_through(unet, sched, shape, args.t, args.budget)
        noise = randn((32, *shape), make_generator(5), "cpu")
        mscrs = []
        for tau in taus[:3]:
            best = 0.0
            for scale in (0.5, 1.0):
                raw = sample(unet, sched, noise + scale * tau, sampler="ddim", steps=10, generator=make_generator(1))
                best = max(best, collapse_stats(to_unit(raw), saturated=saturated_mask(raw)).mscr)
            mscrs.append(best)
        print(f"{r.name:28s} {r.family:16s} max ratio at t={args.t}: {float(ratios[0]):.3f}  "
              f"DDIM-10 MSCR of the top 3: {', '.join(f'{m:.2f}' for m in mscrs)}", flush=True)


if __name__ == "__main__":
    main()
