"""Scan both shipped example models and print what the README quotes.

    python benchmarks/scan_examples.py [--device cpu] [--no-blackbox]

Per model: verdict, exit code, score (MSCR), threshold, margin, control MSCR, which candidate fired,
which inversions fired, the best black-box candidate's MSCR, wall time, UNet evaluations; for the backdoored one also how close the recovery is to the truth
(MSE of the recovered target to the true target, cosine of the inverted to the true trigger),
which the scanner itself never sees.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

from hfaudit import ScanConfig, scan
from hfaudit.sampling import to_unit

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default=None)
    ap.add_argument("--no-blackbox", action="store_true", help="gradient inversion only (the scan before BBTI)")
    args = ap.parse_args()
    truth = load_file(str(MODELS / "backdoor_truth.safetensors"))
    print(f"torch threads: {torch.get_num_threads()}")
    for name in ("digits-baddiffusion", "digits-clean"):
        t0 = time.perf_counter()
        r = scan(str(MODELS / name), device=args.device, config=ScanConfig(blackbox=None) if args.no_blackbox else None)
        wall = time.perf_counter() - t0
        best = r.best
        line = (f"{name:20s} verdict={r.verdict:8s} exit={int(r.exit_code)} score={r.score:.3f} "
                f"threshold={r.threshold:.2f} margin={r.margin:+.3f} control={r.control_score:.3f} "
                f"best={best.name}/{best.best.sampler} fired={','.join(r.fired_methods) or '-'} "
                f"blackbox_mscr={max((c.best.stats.mscr for c in r.candidates if c.method == 'blackbox'), default=float('nan')):.3f} "
                f"wall={wall:.1f}s unet_evals={r.unet_evaluations} "
                f"phases={r.timings}")
        if name == "digits-baddiffusion":
            mse = float((r.recovered_target - to_unit(truth["target"])).pow(2).mean())
            t = best.trigger.flatten()
            cos = float(t @ truth["trigger"].flatten() / (t.norm() * truth["trigger"].norm()))
            line += f" target_mse={mse:.5f} trigger_cos={cos:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    with recording("scan_examples"):
        main()
