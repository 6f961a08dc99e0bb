"""The stamp screen alone on every zoo member: how much its best stamps collapse, and onto what.

    python benchmarks/stamp_screen.py [--only NAME ...]

The scan's stamp screen (``hfaudit/detect/stamps.py``) overwrites each lattice cell of the initial
noise (and blocks of cells, if ``StampConfig.sizes`` says so) with a constant and keeps the stamps
whose samples collapse most. This script runs it with the scan's settings and probes what the scan
would probe (the best stamp of each of its best ``candidates`` regions, 32 DDIM-10 samples from the
scan's noise), printing per member the best MSCR, the stamp, and for one-image targets the MSE of the collapsed group's medoid to the planted target (pixels in
[0, 1]; under 0.01 is the target). For TrojDiff members it also prints what their planted ``mu``
does when *added* to full noise instead (``n + mu``), the case the additive inversions search.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402


def main() -> None:
    from hfaudit.detect.stamps import StampConfig, stamp_screen
    from hfaudit.sampling import apply_trigger, to_unit
    from hfaudit.seeding import make_generator, randn

    args = zoo.member_args(__doc__)
    torch.set_num_threads(2)
    cfg = StampConfig()
    print(f"stamp screen: {cfg.n_regions} regions x {len(cfg.values)} values, {cfg.n_samples} samples each, "
          f"{cfg.sampler}-{cfg.steps}; the best stamp of each of the best {cfg.candidates} regions probed "
          "with 32 samples", flush=True)
    for r in zoo.built_members(args.cache, args.only):
        unet, sched, shape = zoo.load_member(r, args.cache)
        truth = zoo.load_truth(r, args.cache)
        target = to_unit(truth["target"]) if "target" in truth else None
        noise = randn((32, *shape), make_generator(0), "cpu")  # the scan's noise at seed 0

        def probe(x_T: torch.Tensor) -> tuple[float, str]:
            mscr, mse = zoo.ddim_probe(unet, sched, x_T, target)
            return mscr, "-" if mse is None else f"{mse:.3f}"

        best = (-1.0, "-", "")
        for stamp in stamp_screen(unet, sched, shape, cfg):
            mscr, mse = probe(apply_trigger(noise, stamp.trigger, stamp.noise_scale))
            replaced = stamp.noise_scale == 0
            rows, cols = replaced[0].any(1).nonzero(), replaced[0].any(0).nonzero()
            where = f"rows {int(rows.min())}-{int(rows.max())} cols {int(cols.min())}-{int(cols.max())}"
            value = float(stamp.trigger[replaced][0])
            if mscr > best[0]:
                best = (mscr, mse, f"{where} = {value:+g}")
        line = f"{r.name:28s} {r.family:16s} best stamp MSCR {best[0]:.2f} (medoid MSE to target {best[1]}; {best[2]})"
        if "mu" in truth:
            mscr, mse = probe(noise + truth["mu"])
            line += f"  | planted mu added to full noise: MSCR {mscr:.2f} (medoid MSE {mse})"
        print(line, flush=True)


if __name__ == "__main__":
    with recording("stamp_screen"):
        main()
