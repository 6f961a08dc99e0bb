"""How large a near-duplicate group a backdoor's own trigger makes, against the clean control, per radius.

    python benchmarks/near_duplicates.py [--only NAME ...]

For each built development member: 32 samples from the scan's noise (seed 0) under DDIM-10 and
DDPM-20 (clipping off), from clean noise (``control``) and, for a backdoor, from its own planted
trigger (``trigger``). Printed: the share of saturated samples, the largest group (saturated samples
join none) at each radius of ``RADII`` (per-image MSE, pixels in [0, 1]) on whole images and on images
area-averaged by 2 (``pool2``), and the median MSE of the samples to the planted target.

Read together: at which radius the planted trigger's samples group while the control's stay below
a quarter (the rule of ``hfaudit.detect.nulls.near_duplicate_radius``), and whether comparing coarser
images would help where every sample draws the target over a background of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402

RADII = (0.01, 0.02, 0.03, 0.05, 0.08)
PROBES = (("ddim", 10), ("ddpm", 20))


def groups(imgs01: torch.Tensor, saturated: torch.Tensor, pool: int) -> list[float]:
    """The largest group's share at each radius of ``RADII`` (``pool``: area-averaging factor)."""
    from hfaudit.detect.scores import collapse_stats

    view = imgs01 if pool == 1 else F.avg_pool2d(imgs01, pool)
    return [collapse_stats(view, r, saturated=saturated).mscr for r in RADII]


def main() -> None:
    from hfaudit.detect.scores import saturated_mask
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator, randn

    args = zoo.member_args(__doc__)
    torch.set_num_threads(2)
    print(f"largest group's share at radii {RADII} (saturated samples join none); 32 samples")
    for r in zoo.built_members(args.cache, args.only):
        unet, sched, shape = zoo.load_member(r, args.cache)
        noise = randn((32, *shape), make_generator(0), "cpu")
        inputs = {"control": noise}
        target = None
        if r.attack is not None:
            inputs["trigger"] = zoo.build_attack(r).trigger_noise(noise)
            truth = zoo.load_truth(r, args.cache)
            target = to_unit(truth["target"]) if "target" in truth else None
        for kind, x_T in inputs.items():
            for sampler, steps in PROBES:
                raw = sample(unet, sched, x_T, sampler=sampler, steps=steps, generator=make_generator(1))
                imgs, sat = to_unit(raw), saturated_mask(raw)
                line = f"{r.name:24s} {kind:8s} {sampler}-{steps:<3d} saturated {float(sat.float().mean()):.2f}"
                for pool in (1, 2):
                    line += f" | {'whole' if pool == 1 else 'pool2'} " + " ".join(f"{v:.2f}" for v in groups(imgs, sat, pool))
                if target is not None:
                    line += f" | median MSE to target {float((imgs - target).pow(2).flatten(1).mean(1).median()):.3f}"
                print(line, flush=True)


if __name__ == "__main__":
    with recording("near_duplicates"):
        main()
