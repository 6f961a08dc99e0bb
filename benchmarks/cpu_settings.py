"""Which torch settings make a UNet evaluation cheaper on this machine, measured side by side.

    python benchmarks/cpu_settings.py [--archs shipped-16 cifar10-32] [--batch 32] [--repeats 5]

For each architecture (``benchmarks/scan_cost.py``'s: the shipped 16x16 model, the
``google/ddpm-cifar10-32`` layout with random weights) it times one batch through the UNet without
gradients under each setting, the settings taking turns within every repeat (so a load change on the
machine hits them alike), and prints the median seconds per image and the ratio to what hfaudit's
sampling loop runs (``torch.no_grad``, contiguous tensors):

- ``inference_mode``: ``torch.inference_mode`` instead of ``torch.no_grad``;
- ``channels_last``: the UNet's weights and input in ``torch.channels_last`` memory format;
- both together.

Outputs are checked to agree with the baseline (max absolute difference printed): a setting that
changes the numbers is not a speed-up. The torch thread count is printed (torch's default uses every
physical core).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402
from benchmarks.scan_cost import build  # noqa: E402

SETTINGS: dict[str, tuple[Callable[[], AbstractContextManager], bool]] = {
    "no_grad (hfaudit)": (torch.no_grad, False),
    "inference_mode": (torch.inference_mode, False),
    "channels_last": (torch.no_grad, True),
    "inference_mode + channels_last": (torch.inference_mode, True),
}
"""name -> (the context the evaluation runs in, channels_last)."""


def run(arch: str, batch: int, repeats: int) -> list[str]:
    unet = build(arch).eval()
    cfg = unet.config
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size, generator=torch.Generator().manual_seed(0))
    t = torch.full((batch,), 500)
    models = {False: unet, True: build(arch).eval().to(memory_format=torch.channels_last)}
    models[True].load_state_dict(unet.state_dict())
    inputs = {False: x, True: x.contiguous(memory_format=torch.channels_last)}
    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    outs: dict[str, torch.Tensor] = {}
    for rep in range(repeats + 1):  # the first round warms up and is not counted
        for name, (context, last) in SETTINGS.items():
            with context():
                t0 = time.perf_counter()
                out = models[last](inputs[last], t).sample
                seconds = time.perf_counter() - t0
            if rep:
                times[name].append(seconds / batch)
            outs[name] = out.contiguous().clone()
    base = statistics.median(times["no_grad (hfaudit)"])
    lines = [f"{arch}: batch {batch}, {repeats} repeats, torch threads {torch.get_num_threads()}"]
    for name in SETTINGS:
        med = statistics.median(times[name])
        diff = float((outs[name] - outs["no_grad (hfaudit)"]).abs().max())
        lines.append(f"  {name:32s} {1000 * med:8.2f} ms/image  x{med / base:5.2f}  max |diff| {diff:.1e}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", nargs="+", default=["shipped-16", "cifar10-32"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with recording("cpu_settings"):
        for arch in args.archs:
            for line in run(arch, args.batch, args.repeats):
                print(line, flush=True)


if __name__ == "__main__":
    main()
