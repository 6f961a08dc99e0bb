"""Train the shipped example models: a clean digits DDPM and a BadDiffusion copy of it.

    python examples/train_models.py [--out examples/models] [--clean-steps 4000] [--backdoor-steps 1500]

The backdoor is fine-tuned into the trained clean model, as BadDiffusion does with public checkpoints.
The true trigger and target are written beside the models (``backdoor_truth.safetensors``) for
benchmarks and tests; the scanner never reads them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from diffusers import UNet2DModel
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: the trainers live in benchmarks/

from benchmarks.attacks.baddiffusion import BackdoorSpec  # noqa: E402
from benchmarks.attacks.patterns import box_trigger, cross_target  # noqa: E402
from benchmarks.attacks.train import (  # noqa: E402
    TrainConfig,
    UNetConfig,
    make_scheduler,
    make_unet,
    save_pipeline,
    train_ddpm,
)
from hfaudit.digits import load_digits_images  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="examples/models")
    ap.add_argument("--clean-steps", type=int, default=4000)
    ap.add_argument("--backdoor-steps", type=int, default=2000)
    ap.add_argument("--backdoor-lr", type=float, default=1e-3)
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--skip-clean", action="store_true", help="reuse an existing clean model")
    args = ap.parse_args()
    out = Path(args.out)
    images, _ = load_digits_images(16, 1)
    scheduler = make_scheduler()
    clean_dir = out / "digits-clean"
    if args.skip_clean:
        clean = UNet2DModel.from_pretrained(clean_dir, subfolder="unet", use_safetensors=True)
    else:
        clean = train_ddpm(images, TrainConfig(steps=args.clean_steps, seed=0), make_unet(UNetConfig(), seed=0), scheduler,
                           description="clean model")
        save_pipeline(clean, scheduler, str(clean_dir))
    spec = BackdoorSpec(trigger=box_trigger(16, 1, box=6, value=1.5), target=cross_target(16, 1),
                        poison_rate=args.poison_rate)
    bad = train_ddpm(images, TrainConfig(steps=args.backdoor_steps, seed=1, lr=args.backdoor_lr, warmup=10, ema_decay=0.995), clean, scheduler,
                     backdoor=spec, description="BadDiffusion fine-tune")
    save_pipeline(bad, scheduler, str(out / "digits-baddiffusion"))
    save_file({"trigger": spec.trigger.contiguous(), "target": spec.target.contiguous(),
               "poison_rate": torch.tensor(spec.poison_rate), "correction": torch.tensor(spec.correction)},
              str(out / "backdoor_truth.safetensors"))


if __name__ == "__main__":
    main()
