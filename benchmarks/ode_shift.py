"""Stage 1 of the ODE inversion on every zoo member: the pass-through ratio of the searched directions.

    python benchmarks/ode_shift.py [--only NAME ...]

The scan's ODE inversion (``hfaudit/detect/ode.py``) first searches, at the mid timestep, for the
directions whose offset ``(1 - sqrt(abar_t)) tau`` the model passes through most to its noise
prediction: an ODE-trained backdoor amplifies its trigger there, which it does not at ``t = T``.
This script runs that stage alone with the scan's settings and prints, per zoo member, the largest
ratio and the MSCR of DDIM-10 samples (32) from the best three directions *before* the refinement
through the sampler, i.e. what stage 1 gives the second stage to start from.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402


def main() -> None:
    from hfaudit.detect.midstep import pass_through_directions
    from hfaudit.detect.ode import OdeInversionConfig
    from hfaudit.detect.scores import collapse_stats, saturated_mask
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator, randn

    args = zoo.member_args(__doc__)
    torch.set_num_threads(1)
    cfg = OdeInversionConfig()
    print(f"stage 1 of the ODE inversion: t = {cfg.t_fraction} T, RMS {cfg.budget}, {cfg.restarts} directions, "
          f"{cfg.search_steps} Adam steps", flush=True)
    for r in zoo.built_members(args.cache, args.only):
        unet, sched, shape = zoo.load_member(r, args.cache)
        unet.requires_grad_(False)
        ratios, taus = pass_through_directions(unet, sched, shape, cfg, make_generator(cfg.seed),
                                               budget=cfg.budget, maximise=True)
        noise = randn((32, *shape), make_generator(5), "cpu")
        mscrs = []
        for tau in taus[:3]:
            raw = sample(unet, sched, noise + tau, sampler="ddim", steps=10)
            mscrs.append(collapse_stats(to_unit(raw), saturated=saturated_mask(raw)).mscr)
        print(f"{r.name:28s} {r.family:16s} max ratio: {float(ratios[0]):.3f}  "
              f"DDIM-10 MSCR of the top 3: {', '.join(f'{m:.2f}' for m in mscrs)}", flush=True)


if __name__ == "__main__":
    with recording("ode_shift"):
        main()
