"""Does the mid-timestep inversion depend on its seed? Its probed candidates on zoo members, per seed.

    python benchmarks/midstep_seeds.py [--seeds 1 2] [--only NAME ...]

The scan's mid-timestep inversion (``hfaudit/detect/midstep.py``) is what finds ``bd-box-x`` and
``bd-glasses-cornerbox-rgb`` in ``benchmarks/detection.py``, which runs seed 0 only. This script
runs the inversion alone with the scan's settings at other seeds, samples from the candidates the
scan would probe (32 samples, DDIM-10 and DDPM-50, clipping off, the scan's saturation filter) and
prints the best MSCR per member and seed. By default: those two backdoored models and every clean
zoo model, whose best MSCR is how close the inversion comes to a false positive (against the scan's
default threshold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import zoo  # noqa: E402

DEFAULT_MEMBERS = ("bd-box-x", "bd-glasses-cornerbox-rgb")
PROBES = (("ddim", 10), ("ddpm", 50))


def best_mscr(path: Path, seed: int) -> float:
    """The highest MSCR over the probes of the candidates the scan takes from the inversion."""
    from hfaudit.detect.midstep import MidstepConfig, midstep_inversion
    from hfaudit.detect.scores import collapse_stats, saturated_mask
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator, randn

    model = load_model(resolve(str(path)), device="cpu")
    cfg = MidstepConfig(seed=seed)
    found = cfg.pick(midstep_inversion(model.unet, model.scheduler_config, model.sample_shape, cfg))
    noise = randn((32, *model.sample_shape), make_generator(seed), "cpu")
    best = 0.0
    for cand in found:
        for sampler, steps in PROBES:
            raw = sample(model.unet, model.scheduler_config, noise + cand.trigger, sampler=sampler, steps=steps,
                         generator=make_generator(seed + 1, "cpu"))
            best = max(best, collapse_stats(to_unit(raw), saturated=saturated_mask(raw)).mscr)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=zoo.DEFAULT_CACHE)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="*",
                    help="zoo members (default: bd-box-x, bd-glasses-cornerbox-rgb, the clean ones)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    names = args.only or [*DEFAULT_MEMBERS, *(r.name for r in zoo.RECIPES if r.family == zoo.CLEAN)]
    recipes = {r.name: r for r in zoo.RECIPES}
    for seed in args.seeds:
        for name in names:
            recipe = recipes[name]
            if not zoo.is_cached(recipe, args.cache):
                print(f"{name}: not built (python benchmarks/zoo.py)")
                continue
            mscr = best_mscr(zoo.model_dir(recipe, args.cache), seed)
            print(f"seed {seed}  {name:28s} {recipe.family:14s} best MSCR of the probed candidates {mscr:.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
