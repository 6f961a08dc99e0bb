"""How well ``hfaudit.limits`` estimates a UNet's activation memory: estimate and measured peak side by side.

For a few ``UNet2DModel`` layouts (the shipped 16x16 example, the same at 64x64, the
``google/ddpm-cifar10-32`` layout with random weights) and for a forward pass without gradients and
one with input gradients (weights frozen, as every search runs), each measurement runs in a fresh
process and reports the rise of its peak RSS over the pass. ``hfaudit`` refuses a scan whose
estimate exceeds the free memory, so the estimate should sit at or above what is measured (ratio
estimate/measured >= 1) without being far above it (a refusal of a model that would fit).

    python benchmarks/memory_model.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "examples" / "models" / "digits-baddiffusion" / "unet"
CIFAR = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 256],
             layers_per_block=2, down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
             up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"])
CASES = [("shipped 16x16", None, 64), ("shipped at 64x64", 64, 16), ("cifar10-32 layout", "cifar", 8)]

CHILD = r"""
import json, resource, sys, torch
from diffusers import UNet2DModel
torch.set_num_threads(2)
spec, batch, grad = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
if spec["cifar"]:
    unet = UNet2DModel(**spec["cifar"])
else:
    unet = UNet2DModel.from_pretrained(spec["path"])
    if spec["size"]:
        unet.register_to_config(sample_size=spec["size"])
unet.requires_grad_(False)
size = unet.config.sample_size
x = torch.randn(batch, unet.config.in_channels, size, size, requires_grad=grad)
t = torch.full((batch,), 500)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
if grad:
    unet(x, t).sample.square().mean().backward()
else:
    with torch.no_grad():
        unet(x, t)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"measured": (peak - base) * 1024 / batch, "config": dict(unet.config)}))
"""


def main() -> None:
    from hfaudit import limits

    print(f"{'layout':<20} {'pass':<9} {'batch':>5} {'measured MiB/img':>17} {'estimate MiB/img':>17} {'ratio':>6}")
    for name, what, batch in CASES:
        spec = {"path": str(SHIPPED), "size": what if isinstance(what, int) else None,
                "cifar": CIFAR if what == "cifar" else None}
        for grad in (False, True):
            out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec), str(batch), str(int(grad))],
                                 capture_output=True, text=True, check=True).stdout
            doc = json.loads(out.strip().splitlines()[-1])
            plan = limits.plan_memory(doc["config"], 0, batch, batch, __import__("torch").device("cpu"))
            est = plan.backward_per_image if grad else plan.forward_per_image
            print(f"{name:<20} {'backward' if grad else 'forward':<9} {batch:>5} {doc['measured'] / 2**20:>17.2f} "
                  f"{est / 2**20:>17.2f} {est / doc['measured']:>6.2f}")


if __name__ == "__main__":
    with recording("memory_model"):
        main()
