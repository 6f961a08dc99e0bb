"""Why the blend trigger is a blind spot: a smaller noise scale collapses clean models, the trigger is sharp.

    python benchmarks/blend_sharpness.py [--only NAME ...]

TrojDiff's blend trigger starts sampling from ``x_T = gamma n + mu`` (the zoo: ``gamma = 0.6``,
``mu = 0.4`` times a stripes image): it scales the whole noise down, which no additive search
(``n + tau``) and no stamp reaches. A search over the noise scale would have to tell a backdoor from
what a smaller scale does to any model, so this script measures both, with the scan's probe (32
DDIM-10 samples from the scan's noise, clipping off, its saturation filter):

1. per zoo member, the MSCR of ``gamma n`` alone (no ``mu``) at ``gamma`` 1, 0.8 and 0.6: a lower
   temperature, which collapses some clean models as much as a trigger does;
2. per blend member, the planted ``mu`` at those scales and its neighbours at ``gamma = 0.6``: half
   and 1.5 times it, shifted by one and two rows, transposed, and a random direction of its norm,
   with the medoid's MSE to the planted target for one-image targets (pixels in [0, 1]).

3. per blend member, the linear signature the mid-timestep inversion minimises: the pass-through
   ratio at ``0.8 T`` (full noise) of ``mu`` and of its neighbours, on the member and on its clean
   base, and what that search reaches at full resolution (the least ratio found from random starts,
   its cosine to ``mu``, and the MSCR its direction gives under DDPM-20 and DDIM-10). A member trained
   with TrojDiff's published objective (the network outputs ``eps`` on trojan inputs) absorbs its
   ``mu`` almost whole; whether a search can reach that direction is what the last line says.

Read together: how far from the planted trigger a search still sees the backdoor, and whether the
clean models' collapse at the same scale leaves any room to see it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402

GAMMAS = (1.0, 0.8, 0.6)
T_FRACTION = 0.8
"""The mid-timestep inversion's timestep (``MidstepConfig.t_fraction``)."""


def neighbours(mu: torch.Tensor, seed: int = 5) -> dict[str, torch.Tensor]:
    """The planted ``mu`` and directions near it or of its size (``(C, H, W)`` each)."""
    from hfaudit.seeding import make_generator, randn

    rand = randn(tuple(mu.shape), make_generator(seed), "cpu")
    return {"mu": mu, "0.5 mu": 0.5 * mu, "1.5 mu": 1.5 * mu, "rows+1": torch.roll(mu, 1, dims=-2),
            "rows+2": torch.roll(mu, 2, dims=-2), "transposed": mu.transpose(-1, -2),
            "random": rand * (mu.norm() / rand.norm())}


def signature(recipe: zoo.Recipe, cache: Path, mu: torch.Tensor) -> list[str]:
    """Pass-through ratios at ``T_FRACTION`` of ``mu``'s neighbours on the member and its base, and
    what the least-pass-through search reaches at full resolution on the member."""
    from hfaudit.detect.midstep import MidstepConfig, midstep_inversion, pass_through_ratios
    from hfaudit.detect.scores import collapse_stats, saturated_mask
    from hfaudit.sampling import apply_trigger, sample, to_unit
    from hfaudit.seeding import make_generator, randn

    unet, sched, shape = zoo.load_member(recipe, cache)
    noise = randn((16, *shape), make_generator(0), "cpu")
    near = neighbours(mu)
    directions = torch.stack(list(near.values()))
    rows = {"member": pass_through_ratios(unet, sched, directions, T_FRACTION, noise)}
    base = zoo.BY_NAME[recipe.base] if recipe.base else None
    if base is not None and zoo.is_cached(base, cache):
        bunet, bsched, _ = zoo.load_member(base, cache)
        rows[f"base {base.name}"] = pass_through_ratios(bunet, bsched, directions, T_FRACTION, noise)
    lines = [f"pass-through at {T_FRACTION} T, full noise ({who}): "
             + ", ".join(f"{k} {float(v):.2f}" for k, v in zip(near, r)) for who, r in rows.items()]
    rms = float(mu.pow(2).mean().sqrt())
    cfg = MidstepConfig(t_fraction=T_FRACTION, grid=shape[-1], rms=(rms,), candidates=1)
    best = midstep_inversion(unet, sched, shape, cfg)[0]
    cos = float((best.trigger * mu).sum() / (best.trigger.norm() * mu.norm()))
    x_T = apply_trigger(randn((32, *shape), make_generator(0), "cpu"), best.trigger)  # the scan's noise at seed 0
    mscr = []
    for sampler, steps in (("ddpm", 20), ("ddim", 10)):
        raw = sample(unet, sched, x_T, sampler=sampler, steps=steps, generator=make_generator(1))
        mscr.append(f"{sampler.upper()}-{steps} {collapse_stats(to_unit(raw), saturated=saturated_mask(raw)).mscr:.2f}")
    lines.append(f"least-pass-through search at full resolution, RMS {rms:.2f} ({cfg.restarts} random starts): "
                 f"ratio {best.loss:.2f}, cosine to mu {cos:+.2f}, MSCR {', '.join(mscr)}")
    return lines


def main() -> None:
    from hfaudit.sampling import to_unit
    from hfaudit.seeding import make_generator, randn

    args = zoo.member_args(__doc__)
    torch.set_num_threads(2)
    print("MSCR of 32 DDIM-10 samples from gamma * n (no trigger), per zoo member:")
    print(f"{'member':28s} {'family':16s} " + " ".join(f"{'gamma ' + str(g):>10s}" for g in GAMMAS))
    blends = []
    for r in zoo.built_members(args.cache, args.only):
        unet, sched, shape = zoo.load_member(r, args.cache)
        noise = randn((32, *shape), make_generator(0), "cpu")  # the scan's noise at seed 0
        truth = zoo.load_truth(r, args.cache)
        target = to_unit(truth["target"]) if "target" in truth else None

        def probe(x_T: torch.Tensor) -> str:
            mscr, mse = zoo.ddim_probe(unet, sched, x_T, target)
            return f"{mscr:.2f}" if mse is None else f"{mscr:.2f} ({mse:.2f})"

        print(f"{r.name:28s} {r.family:16s} " + " ".join(f"{probe(g * noise):>10s}" for g in GAMMAS), flush=True)
        if r.attack is not None and "blend" in r.attack and "mu" in truth:
            mu = truth["mu"]
            row = [f"mu at gamma {g}: {probe(g * noise + mu)}" for g in GAMMAS]
            row += [f"{name}: {probe(0.6 * noise + v)}" for name, v in neighbours(mu).items() if name != "mu"]
            row += signature(r, args.cache, mu)
            blends.append((r.name, row))
    for name, row in blends:
        print(f"\n{name}: MSCR (medoid MSE to the planted target) from gamma * n + v; neighbours at gamma 0.6")
        for cell in row:
            print(f"  {cell}")


if __name__ == "__main__":
    with recording("blend_sharpness"):
        main()
