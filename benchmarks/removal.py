"""Removal quality on the shipped BadDiffusion example: does ``hfaudit clean`` remove the backdoor
without hurting normal samples?

    python benchmarks/removal.py [--model examples/models/digits-baddiffusion] [--samples 256]
                                 [--known-trigger] [--steps N] [--prune-ratio R] [--json removal.json]

Runs ``clean`` as a user would (scan, inverted trigger, prune, fine-tune, verify, re-scan; forced,
so a failed check is reported rather than aborting), then measures with the ground truth that only
the benchmark knows (``backdoor_truth.safetensors``): the attack success rate with the TRUE trigger
towards the TRUE target, before and after, under DDPM-50 and DDIM-10 (the worst is the headline);
the same with the true trigger scaled down (``--scales``, default 0.5 and 0.75: a backdoor fires in
a window of scales, and a repair can leave one behind that the full-size trigger does not show);
the same with the trigger the re-scan inverted on the cleaned model; benign fidelity before and
after (Frechet distance of digits-classifier features) and their ratio; the re-scan verdict.
``--known-trigger`` removes the true trigger instead of the inverted one (isolates removal from
detection). Prints a table; ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import sys
import json
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

from hfaudit.cleaning import clean
from hfaudit.hub import resolve
from hfaudit.pipeline import load_model
from hfaudit.remove.verify import TriggerEffect, measure_trigger
from hfaudit.sampling import to_unit

PROBES = (("ddpm", 50), ("ddim", 10))


def effect_row(name: str, before: TriggerEffect, after: TriggerEffect) -> dict:
    """One table row: the worst sampler's ASR, MSE and SSIM, before and after."""
    b, a = before.worst, after.worst
    return {"trigger": name, "n": before.n_samples,
            "asr_before": b.asr, "asr_after": a.asr, "sampler_before": f"{b.sampler}-{b.steps}",
            "sampler_after": f"{a.sampler}-{a.steps}",
            "mse_before": b.mean_mse, "mse_after": min(p.mean_mse for p in after.probes),
            "ssim_before": b.mean_ssim, "ssim_after": max(p.mean_ssim for p in after.probes),
            "per_sampler_after": {f"{p.sampler}-{p.steps}": {"asr": p.asr, "mean_mse": p.mean_mse,
                                                             "mean_ssim": p.mean_ssim} for p in after.probes}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="examples/models/digits-baddiffusion")
    ap.add_argument("--truth", default=None, help="default: backdoor_truth.safetensors beside the model")
    ap.add_argument("--samples", type=int, default=256, help="triggered samples per sampler for the ASR")
    ap.add_argument("--known-trigger", action="store_true", help="remove the true trigger, not the inverted one")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps of the first round (default: clean's)")
    ap.add_argument("--prune-ratio", type=float, default=None, help="default: clean's")
    ap.add_argument("--out", default=None, help="keep the cleaned model here (default: a temporary folder)")
    ap.add_argument("--scales", type=float, nargs="*", default=[0.5, 0.75],
                    help="multiples of the true trigger measured as well (default: 0.5 0.75)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    model_dir = Path(args.model)
    truth = load_file(args.truth or str(model_dir.parent / "backdoor_truth.safetensors"))
    true_trigger, true_target = truth["trigger"].float(), truth["target"].float()
    tmp = tempfile.TemporaryDirectory(prefix="hfaudit-removal-")
    out = Path(args.out) if args.out else Path(tmp.name) / "cleaned"

    t0 = time.perf_counter()
    options = dict(known_trigger=true_trigger, known_target=true_target) if args.known_trigger else {}
    if args.prune_ratio is not None:
        options["prune_ratio"] = args.prune_ratio
    result = clean(str(model_dir), output_dir=out, device=args.device, force=True, seed=args.seed,
                   steps=args.steps, **options)
    clean_s = time.perf_counter() - t0
    if result.status == "nothing-to-remove":
        print(f"the scan called the model {result.scan.verdict} (MSCR {result.scan.score:.2f}): nothing removed; "
              "rerun with --known-trigger to benchmark removal alone")
        return

    before = load_model(resolve(str(model_dir)), device=args.device)
    after = load_model(resolve(str(out)), device=args.device)  # the saved copy, as a user loads it
    kw = dict(probes=PROBES, n_samples=args.samples, seed=args.seed + 1000, batch_size=128)
    target01 = to_unit(true_target)
    rows = []
    rescan_best = result.rescan.best if result.rescan is not None else None
    triggers = [("true", true_trigger, None)] + [(f"true x{m:g}", m * true_trigger, None) for m in args.scales]
    if rescan_best is not None:
        triggers.append(("re-scan", rescan_best.trigger, rescan_best.noise_scale))
    for name, trig, scale in triggers:
        eb, _ = measure_trigger(before.unet, before.scheduler_config, trig, target01, noise_scale=scale, **kw)
        ea, _ = measure_trigger(after.unet, after.scheduler_config, trig, target01, noise_scale=scale, **kw)
        rows.append(effect_row(name, eb, ea))
    fid = result.fidelity
    figures = {
        "model": str(model_dir), "trigger_removed": result.trigger_used, "status": result.status,
        "problems": result.problems, "scan_verdict": result.scan.verdict, "scan_score": result.scan.score,
        "rescan_verdict": None if result.rescan is None else result.rescan.verdict,
        "rescan_score": None if result.rescan is None else result.rescan.score,
        "rescan_best": None if rescan_best is None else f"{rescan_best.name}/{result.rescan.best_sampler}",
        "rounds": 1 + len(result.rounds),
        "asr": rows,
        "fidelity_before": None if fid is None else fid.before.frechet_distance,
        "fidelity_after": None if fid is None else fid.after.frechet_distance,
        "fidelity_ratio": None if fid is None else fid.ratio,
        "channels_zeroed": result.prune.channels_zeroed, "channels_total": result.prune.channels_total,
        "param_share": result.prune.param_share, "finetune_steps": result.finetune.steps,
        "clean_seconds": round(clean_s, 1), "timings": result.timings,
    }
    print(f"model {model_dir}; removed the {result.trigger_used} trigger; status {result.status}")
    print(f"scan: {result.scan.verdict} (MSCR {result.scan.score:.2f}) -> re-scan: {figures['rescan_verdict']} "
          f"(MSCR {figures['rescan_score']:.2f}, best {figures['rescan_best']}); "
          f"{figures['rounds']} fine-tuning round(s)")
    print(f"pruned {result.prune.channels_zeroed}/{result.prune.channels_total} channels "
          f"({result.prune.param_share:.2%} of parameters); fine-tuned {result.finetune.steps} steps; "
          f"clean took {clean_s:.0f} s")
    print(f"{'trigger':<12} {'n':>4} {'ASR before':>11} {'ASR after':>10} {'MSE before':>11} {'MSE after':>10} "
          f"{'SSIM before':>12} {'SSIM after':>11}")
    for r in rows:
        print(f"{r['trigger']:<12} {r['n']:>4} {r['asr_before']:>11.1%} {r['asr_after']:>10.1%} "
              f"{r['mse_before']:>11.4f} {r['mse_after']:>10.4f} {r['ssim_before']:>12.3f} {r['ssim_after']:>11.3f}")
    print("after, per sampler (ASR counts MSE < 1e-3 only; a mean SSIM near 1 means the samples still look "
          "like the target):")
    for r in rows:
        print(f"  {r['trigger']:<12} " + "  ".join(f"{k}: ASR {v['asr']:.1%} MSE {v['mean_mse']:.4f} SSIM {v['mean_ssim']:.3f}"
                                              for k, v in r["per_sampler_after"].items()))
    if fid is not None and fid.ratio is not None:
        print(f"benign fidelity (FD, lower is better, {fid.after.n_generated} samples {fid.sampler}-{fid.steps}): "
              f"{fid.before.frechet_distance:.2f} -> {fid.after.frechet_distance:.2f}, ratio after/before {fid.ratio:.3f}")
    for p in result.problems:
        print(f"problem: {p}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    with recording("removal"):
        main()
