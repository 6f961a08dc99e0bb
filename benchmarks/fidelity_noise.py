"""How much of ``clean``'s benign-fidelity gate is sampling noise, side by side in one run.

    python benchmarks/fidelity_noise.py [--model DIR] [--other DIR] [--n 512 2048] [--seeds 5]

``clean`` fails a repair whose Frechet distance to the digits (``hfaudit.fidelity``; DDIM-20 samples) grows by more
than ``CleanConfig.max_fidelity_ratio`` (x1.10), measured on the suspect and the cleaned model from
the same clean noise. For that gate to mean what it says, the ratio's own spread must be well below
10%. This script draws ``--seeds`` independent noises of the largest ``--n`` and, for every ``--n``
(the first ``n`` rows of each draw), prints:

- the suspect's own distance across draws (what one unpaired number can vary by);
- with ``--other`` (a cleaned copy), the paired ratio ``FD_other / FD_model`` across draws, and the
  paired-bootstrap interval of one draw (``hfaudit.fidelity.frechet_ratio_interval``), to compare
  with the spread across draws.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "examples" / "models" / "digits-baddiffusion"


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"mean {mean:.3f}  sd {sd:.3f} ({sd / mean:.1%} of the mean)  min {min(values):.3f}  max {max(values):.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=SHIPPED, help="the suspect model (default: the shipped backdoor)")
    parser.add_argument("--other", type=Path, default=None, help="a cleaned copy to pair with it")
    parser.add_argument("--n", type=int, nargs="+", default=[512, 2048], help="samples per draw")
    parser.add_argument("--seeds", type=int, default=5, help="independent draws")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args(argv)

    from hfaudit.fidelity import (
        RATIO_INTERVAL_LEVEL,
        digit_features,
        digits_reference_stats,
        feature_stats,
        frechet_distance,
        frechet_ratio_interval,
    )
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model
    from hfaudit.remove.verify import measure_fidelity

    models = [load_model(resolve(str(args.model)), device="cpu")]
    if args.other is not None:
        models.append(load_model(resolve(str(args.other)), device="cpu"))
    shape, top = models[0].sample_shape, max(args.n)
    ref = digits_reference_stats()
    feats: list[list[torch.Tensor]] = [[] for _ in models]  # [model][draw] -> (top, D)
    first: list[torch.Tensor] = []  # draw 1's images of each model, for the bootstrap interval
    for s in range(args.seeds):
        for m, model in enumerate(models):
            _, imgs = measure_fidelity(model.unet, model.scheduler_config, shape, n=top, seed=11 + 1000 * s,
                                       batch_size=args.batch)
            feats[m].append(digit_features(imgs))
            if s == 0:
                first.append(imgs)
        print(f"draw {s + 1}/{args.seeds} done", file=sys.stderr, flush=True)

    print(f"model {args.model}" + (f"; other {args.other}" if args.other else "")
          + f"; {args.seeds} draws of clean noise, DDIM-20")
    for n in sorted(args.n):
        fd = [[frechet_distance(feature_stats(f[:n]), ref) for f in per] for per in feats]
        print(f"n={n}")
        print(f"  model FD:      {_spread(fd[0])}")
        if args.other is not None:
            print(f"  other FD:      {_spread(fd[1])}")
            ratios = [b / a for a, b in zip(fd[0], fd[1])]
            print(f"  paired ratio:  {_spread(ratios)}")
            lo, hi = frechet_ratio_interval(first[0][:n], first[1][:n], seed=0)
            print(f"  draw 1's bootstrap {RATIO_INTERVAL_LEVEL:.0%} interval of the ratio: {lo:.3f} .. {hi:.3f} "
                  f"(point {ratios[0]:.3f})")
    return 0


if __name__ == "__main__":
    with recording("fidelity_noise"):
        code = main()
    sys.exit(code)
