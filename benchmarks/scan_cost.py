"""What a verdict costs at the sizes users have: UNet evaluations, seconds and memory, side by side.

    python benchmarks/scan_cost.py [--archs shipped-16 zoo-cifar-32 cifar10-32 celebahq-64] [--batch 32]
                                   [--verify ARCH ...] [--verify-budgets default fast]

For each architecture (the shipped 16x16 model with its weights; the development zoo's reduced
``google/ddpm-cifar10-32`` layout, with the weights of its BadDiffusion member ``bd-box-digit3-32``
when the zoo is built and random ones otherwise; the ``google/ddpm-cifar10-32`` layout at full width
and a ``google/ddpm-celebahq-256`` layout at 64x64, random weights: timing only) it measures, on this
machine, the seconds of one image through the UNet without gradients and with a backward pass to the
input (batches of ``--batch``, a quarter of it above 32x32, after a warm-up), and the peak resident
memory of the process so far. From them it prices each protocol's evaluation count:

- hfaudit's ``fast``, ``default`` and ``thorough`` budgets: the most a verdict can cost
  (``ScanConfig.unet_evaluations``, split into forward passes and backward passes);
- the Diff-Cleanse BBTI schedule with its 64-sample probe, and Elijah's protocol (100 inversion
  steps on 100 noises, 16 samples of 1000-step DDPM), as ``benchmarks/baselines.py`` runs them.

The seconds per verdict are **projected** (evaluations times the measured seconds per evaluation);
``--verify ARCH ...`` also runs a real scan end to end at each of ``--verify-budgets`` on those
architectures (the shipped backdoored model, the zoo's backdoored member where built; the others as a
pipeline folder with random weights, whose verdict means nothing) and prints its measured seconds,
evaluations and peak memory beside the projection, so the projection's error is on the page. Ratios are to hfaudit's ``default`` on the same architecture.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "examples" / "models" / "digits-baddiffusion"
ZOO_MEMBER = "bd-box-digit3-32"
"""The development zoo's member whose weights ``zoo-cifar-32`` uses where it is built."""
ARCHS = ("shipped-16", "zoo-cifar-32", "cifar10-32", "celebahq-64")

CIFAR10_32 = dict(sample_size=32, in_channels=3, out_channels=3, layers_per_block=2,
                  block_out_channels=(128, 256, 256, 256),
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"))
"""The UNet of ``google/ddpm-cifar10-32`` (35.7M parameters)."""
CELEBAHQ_64 = dict(sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
                   block_out_channels=(128, 128, 256, 256, 512, 512),
                   down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D",
                                     "AttnDownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D", "UpBlock2D",
                                   "UpBlock2D"))
"""The UNet of ``google/ddpm-celebahq-256`` (114M parameters), at 64x64 pixels."""


@dataclass
class Cost:
    """A protocol's UNet work for one verdict: images through the UNet, and how many of them backpropagated."""

    forward: int
    backward: int

    @property
    def evaluations(self) -> int:
        """The project's measure: a backward pass counts two."""
        return self.forward + 2 * self.backward


def protocols() -> dict[str, Cost]:
    """Every protocol's evaluations per verdict (they do not depend on the architecture)."""
    from hfaudit.detect.blackbox import DIFF_CLEANSE_SCHEDULE
    from hfaudit.detect.budgets import budget_config

    out = {}
    for name in ("fast", "default", "thorough"):
        cfg = budget_config(name)
        total = cfg.unet_evaluations
        backward = sum(getattr(s, "backward_evaluations", 0)
                       for s in (cfg.inversion, cfg.midstep, cfg.ode) if s is not None)
        out[f"hfaudit {name}"] = Cost(total - 2 * backward, backward)
    dc = DIFF_CLEANSE_SCHEDULE
    out["diff-cleanse"] = Cost(dc.unet_evaluations + 64 * dc.steps, 0)
    out["elijah"] = Cost(100 * 100 + 16 * 1000, 100 * 100)
    return out


def trained_path(arch: str) -> Path | None:
    """The pipeline folder of ``arch``'s trained weights, or None where it has none on this machine."""
    from benchmarks import zoo

    if arch == "shipped-16":
        return SHIPPED
    if arch == "zoo-cifar-32" and zoo.is_cached(zoo.BY_NAME[ZOO_MEMBER], zoo.DEFAULT_CACHE):
        return zoo.model_dir(zoo.BY_NAME[ZOO_MEMBER], zoo.DEFAULT_CACHE)
    return None


def build(arch: str, trained: Path | None) -> torch.nn.Module:
    """The UNet of ``arch``: from the pipeline folder ``trained`` (``trained_path``), else random weights."""
    from diffusers import UNet2DModel

    from benchmarks import zoo
    from benchmarks.attacks.train import make_unet

    if trained is not None:
        return UNet2DModel.from_pretrained(str(trained / "unet"))
    if arch == "zoo-cifar-32":
        return make_unet(zoo.unet_config(zoo.A32_CIFAR), seed=0)
    torch.manual_seed(0)
    return UNet2DModel(**{"cifar10-32": CIFAR10_32, "celebahq-64": CELEBAHQ_64}[arch])


def per_image_seconds(unet: torch.nn.Module, batch: int, repeats: int) -> tuple[float, float]:
    """Seconds per image: forward without gradients, and the extra of a backward pass to the input."""
    c, s = unet.config.in_channels, unet.config.sample_size
    x = torch.randn(batch, c, s, s)
    t = torch.full((batch,), 500)
    for p in unet.parameters():
        p.requires_grad_(False)
    with torch.inference_mode():
        unet(x, t)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            unet(x, t)
        fwd = (time.perf_counter() - t0) / (repeats * batch)
    xg = x.clone().requires_grad_(True)
    unet(xg, t).sample.sum().backward()  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        xg.grad = None
        unet(xg, t).sample.sum().backward()
    both = (time.perf_counter() - t0) / (repeats * batch)
    return fwd, max(both - fwd, 0.0)


def peak_rss_gib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def random_pipeline(unet: torch.nn.Module, folder: Path) -> Path:
    """A pipeline folder holding ``unet`` (random weights: a scan of it times the work, its verdict means nothing)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(
        str(folder), safe_serialization=True)
    return folder


def verify(path: Path, budget: str) -> tuple[float, int, str]:
    """A real scan of the pipeline folder ``path`` at ``budget``. Returns wall seconds, evaluations
    counted and the verdict (or the exit code's name when it stopped)."""
    from hfaudit import HfAuditError, scan
    from hfaudit.detect.budgets import budget_config

    t0 = time.perf_counter()
    try:
        r = scan(str(path), device="cpu", config=budget_config(budget))
    except HfAuditError as exc:
        return time.perf_counter() - t0, getattr(exc, "unet_evaluations", -1), exc.exit_code.name.lower()
    return time.perf_counter() - t0, r.unet_evaluations, str(r.verdict)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", nargs="+", default=list(ARCHS), choices=ARCHS)
    ap.add_argument("--batch", type=int, default=32, help="images a pass (a quarter of it above 32x32 pixels)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--verify", nargs="*", default=[], choices=ARCHS,
                    help="also run real scans on these architectures (random weights where none are trained)")
    ap.add_argument("--verify-budgets", nargs="+", default=["default"], choices=["fast", "default", "thorough"],
                    help="the budgets --verify scans at")
    args = ap.parse_args()
    costs = protocols()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; batch {args.batch}; "
          "seconds per verdict are projected from the measured seconds per evaluation")
    print(f"{'protocol':18s} {'forward':>8s} {'backward':>8s} {'evals':>8s}")
    for name, c in costs.items():
        print(f"{name:18s} {c.forward:8d} {c.backward:8d} {c.evaluations:8d}")
    print()
    print(f"{'architecture':14s} {'params':>8s} {'ms/fwd':>8s} {'ms/bwd':>8s} {'peak GiB':>8s}   "
          + "  ".join(f"{name:>16s}" for name in costs))
    for arch in args.archs:
        trained = trained_path(arch)
        unet = build(arch, trained).eval()
        params = sum(p.numel() for p in unet.parameters())
        batch = args.batch if unet.config.sample_size <= 32 else max(1, args.batch // 4)  # memory of the backward
        fwd, bwd = per_image_seconds(unet, batch, args.repeats)
        cells = []
        base = costs["hfaudit default"].forward * fwd + costs["hfaudit default"].backward * (fwd + bwd)
        for c in costs.values():
            secs = c.forward * fwd + c.backward * (fwd + bwd)
            cells.append(f"{_duration(secs):>9s} x{secs / base:5.1f}")
        print(f"{arch:14s} {params / 1e6:7.1f}M {fwd * 1e3:8.2f} {bwd * 1e3:8.2f} {peak_rss_gib():8.2f}   "
              + "  ".join(f"{cell:>16s}" for cell in cells), flush=True)
        if arch in args.verify:
            what = "random weights" if trained is None else f"the trained backdoored {trained.name}"
            with tempfile.TemporaryDirectory() as tmp:
                path = trained or random_pipeline(unet, Path(tmp) / arch)
                for budget in args.verify_budgets:
                    secs, evals, verdict = verify(path, budget)
                    print(f"{'':14s} measured: a {budget} scan ({what}) took {_duration(secs)} for {evals} "
                          f"evaluations, verdict {verdict}; peak memory {peak_rss_gib():.2f} GiB (projected for "
                          f"that count, all forward to all backward: {_duration(evals * fwd)} to "
                          f"{_duration(evals * (fwd + bwd))})", flush=True)
        del unet


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


if __name__ == "__main__":
    with recording("scan_cost"):
        main()
