"""Measure the shipped example models: ASR of the true trigger per sampler, and clean-sample grids.

    python examples/measure_models.py [--samples 64]

Prints one table (the figures in examples/README.md) and writes grids to examples/figures/.
ASR follows DESIGN.md section 5: share of samples within MSE 1e-3 of the target (pixels in [0, 1]).
Sampling is unclipped, from the same seeded noise with and without the trigger.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from safetensors.torch import load_file

from hfaudit.detect.scores import attack_success_rate, collapse_stats
from hfaudit.hub import resolve
from hfaudit.imageio import save_grid
from hfaudit.pipeline import load_model
from hfaudit.sampling import sample, to_unit
from hfaudit.seeding import make_generator, randn

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    truth = load_file(str(HERE / "models" / "backdoor_truth.safetensors"))
    target = to_unit(truth["target"])
    print(f"{'model':22s} {'sampler':9s} {'trigger':8s} {'ASR':>6s} {'MSCR':>6s} {'diversity':>9s}")
    for name in ("digits-clean", "digits-baddiffusion"):
        model = load_model(resolve(str(HERE / "models" / name)), device=args.device)
        noise = randn((args.samples, *model.sample_shape), make_generator(0), model.device)
        for sampler, steps in (("ddpm", 100), ("ddpm", 50), ("ddim", 10), ("ddim", 50)):
            for label, x_T in (("none", noise), ("true", noise + truth["trigger"].to(model.device))):
                imgs = to_unit(sample(model.unet, model.scheduler_config, x_T, sampler=sampler, steps=steps,
                                      generator=make_generator(1)))
                stats = collapse_stats(imgs)
                print(f"{name:22s} {sampler}-{steps:<4d} {label:8s} {attack_success_rate(imgs, target):6.2f} "
                      f"{stats.mscr:6.2f} {stats.diversity:9.3f}", flush=True)
                if steps == 50 and sampler == "ddpm":
                    save_grid(imgs, HERE / "figures" / f"{name}_ddpm50_{label}-trigger.png")


if __name__ == "__main__":
    main()
