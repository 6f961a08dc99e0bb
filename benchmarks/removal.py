"""Removal quality: does ``hfaudit clean`` remove an image-target backdoor at every trigger size and
under every sampler, without hurting normal samples?

    python benchmarks/removal.py [--model DIR ...] [--samples 256] [--scales 0.25 0.5 0.75 1 1.5]
                                 [--known-trigger] [--steps N] [--round-steps N] [--prune-ratio R]
                                 [--budget NAME]
                                 [--json removal.json]

For each ``--model`` (repeat it; default the shipped BadDiffusion example) it runs ``clean`` as a
user would (scan, inverted trigger, prune, fine-tune, verify, re-scan; forced, so a failed check is
reported rather than aborting), then measures with the ground truth that only the benchmark knows:
the TRUE trigger at every ``--scales`` multiple under DDPM-50 and DDIM-10, on the suspect model and on
the saved cleaned copy, with the exact-hit rate (ASR: MSE to the TRUE target below 1e-3) and the
target-likeness rate (share of samples with SSIM to the target above ``--likeness-ssim``) beside the
same rates from clean noise (the same draw); the re-scan's best trigger, measured as what it is;
benign fidelity before and after (Frechet distance of digits-classifier features) and their ratio.

The bar, per model: after cleaning, the true trigger's hit rate is at most ``--max-asr`` at every
scale and sampler, its likeness rate is no higher than clean noise's (plus ``--likeness-margin``,
default 0), and benign fidelity is within ``--max-fidelity-ratio`` of the original. Every miss is
listed as a failure; the exit code is 1 when any model fails.

Ground truth: a member folder's own ``truth.safetensors`` (``trigger`` and ``target`` in model space)
with ``meta.json`` naming an additive ``trigger_formula`` when it has one (test-zoo members); else
``<name>_truth.safetensors`` or ``backdoor_truth.safetensors`` beside the model folder (the shipped
examples); ``--truth`` names the file for a single model. ``--known-trigger`` removes the true
trigger instead of the inverted one (isolates removal from detection).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

from hfaudit.cleaning import CleanConfig, clean  # noqa: E402
from hfaudit.hub import resolve  # noqa: E402
from hfaudit.pipeline import load_model  # noqa: E402
from hfaudit.remove.verify import LIKENESS_SSIM, TRIGGER_SCALES, ScaleSweep, TriggerEffect, measure_scales, measure_trigger  # noqa: E402
from hfaudit.sampling import to_unit  # noqa: E402

PROBES = (("ddpm", 50), ("ddim", 10))
ADDITIVE_FORMULAS = ("add",)
"""``meta.json`` trigger formulas this benchmark can measure: the trigger is added to the noise."""


class NoTruth(Exception):
    """The model has no ground truth this benchmark can use (said as one line)."""


def find_truth(model_dir: Path, truth: str | None = None) -> dict[str, torch.Tensor]:
    """The planted ``trigger`` and ``target`` of ``model_dir`` (see the module docstring for where).

    Raises:
        NoTruth: no truth file, or a trigger formula that is not additive.
    """
    meta_path = model_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    formula = meta.get("trigger_formula")
    if formula is not None and formula not in ADDITIVE_FORMULAS:
        raise NoTruth(f"trigger formula {formula!r} is not additive; this benchmark measures additive triggers")
    candidates = ([Path(truth)] if truth else
                  [model_dir / "truth.safetensors", model_dir.parent / f"{model_dir.name}_truth.safetensors",
                   model_dir.parent / "backdoor_truth.safetensors"])
    for path in candidates:
        if path.is_file():
            found = load_file(str(path))
            if "trigger" not in found or "target" not in found:
                raise NoTruth(f"{path} holds no trigger and target")
            return {"trigger": found["trigger"].float(), "target": found["target"].float()}
    raise NoTruth("no ground truth (truth.safetensors) found")


def effect_row(name: str, before: TriggerEffect, after: TriggerEffect) -> dict:
    """One table row: the worst sampler's ASR, MSE and SSIM, before and after."""
    b, a = before.worst, after.worst
    return {"trigger": name, "n": before.n_samples,
            "asr_before": b.asr, "asr_after": a.asr, "sampler_before": f"{b.sampler}-{b.steps}",
            "sampler_after": f"{a.sampler}-{a.steps}",
            "mse_before": b.mean_mse, "mse_after": min(p.mean_mse for p in after.probes),
            "ssim_before": b.mean_ssim, "ssim_after": max(p.mean_ssim for p in after.probes)}


def sweep_failures(sweep: ScaleSweep, max_asr: float, margin: float) -> list[str]:
    """The true trigger's residuals on the cleaned model, one line each."""
    return [f"true x{p.scale:g} {p.sampler}-{p.steps}: {p.asr:.1%} hits (limit {max_asr:.0%}), "
            f"{p.likeness:.1%} look like the target vs {p.clean_likeness:.1%} from clean noise"
            for p in sweep.residuals(max_asr, margin)]


def print_sweeps(before: ScaleSweep, after: ScaleSweep) -> None:
    """The per-scale table: hits and look-alikes before -> after, per sampler, and clean noise's."""
    print(f"true trigger by scale ({after.n_samples} samples each; hits: MSE < 1e-3; like: SSIM > {after.threshold:g}"
          "; before -> after):")
    samplers = list(dict.fromkeys((p.sampler, p.steps) for p in after.probes))
    print(f"  {'scale':<7}" + "".join(f"{f'{s}-{k} hits':>20} {f'{s}-{k} like':>20}" for s, k in samplers))
    for scale in after.scales:
        cells = []
        for s, k in samplers:
            b = next(p for p in before.probes if (p.scale, p.sampler) == (scale, s))
            a = next(p for p in after.probes if (p.scale, p.sampler) == (scale, s))
            cells.append(f"{f'{b.asr:.1%} -> {a.asr:.1%}':>20} {f'{b.likeness:.1%} -> {a.likeness:.1%}':>20}")
        print(f"  x{scale:<6g}" + "".join(cells))
    cells = []
    for s, k in samplers:
        b = next(p for p in before.probes if p.sampler == s)
        a = next(p for p in after.probes if p.sampler == s)
        cells.append(f"{f'{b.clean_asr:.1%} -> {a.clean_asr:.1%}':>20} "
                     f"{f'{b.clean_likeness:.1%} -> {a.clean_likeness:.1%}':>20}")
    print(f"  {'noise':<7}" + "".join(cells))


def run_model(model_dir: Path, args: argparse.Namespace) -> dict:
    """``clean`` one model and measure it against its ground truth; the figures, failures included."""
    try:
        truth = find_truth(model_dir, args.truth)
    except NoTruth as exc:
        print(f"model {model_dir}: skipped: {exc}")
        return {"model": str(model_dir), "skipped": str(exc), "failures": [f"not measured: {exc}"]}
    true_trigger, true_target = truth["trigger"], truth["target"]
    tmp = tempfile.TemporaryDirectory(prefix="hfaudit-removal-")
    out = Path(args.out) if args.out else Path(tmp.name) / "cleaned"
    t0 = time.perf_counter()
    options: dict = dict(known_trigger=true_trigger, known_target=true_target) if args.known_trigger else {}
    if args.prune_ratio is not None:
        options["prune_ratio"] = args.prune_ratio
    changes: dict = {}
    if args.round_steps is not None:
        changes["round_steps"] = args.round_steps
    if args.residual_gate:
        changes["residual_gate"] = True
    if changes:
        options["config"] = CleanConfig(**changes)
    if args.budget is not None:
        from hfaudit.detect.budgets import budget_config

        options["scan_config"] = budget_config(args.budget)
    result = clean(str(model_dir), output_dir=out, device=args.device, force=True, seed=args.seed,
                   steps=args.steps, **options)
    clean_s = time.perf_counter() - t0
    if result.status == "nothing-to-remove":
        msg = (f"the scan called the model {result.scan.verdict} (MSCR {result.scan.score:.2f}): nothing removed; "
               "rerun with --known-trigger to benchmark removal alone")
        print(f"model {model_dir}: {msg}")
        tmp.cleanup()
        return {"model": str(model_dir), "status": result.status, "failures": [msg]}

    before = load_model(resolve(str(model_dir)), device=args.device)
    after = load_model(resolve(str(out)), device=args.device)  # the saved copy, as a user loads it
    target01 = to_unit(true_target)
    kw = dict(probes=PROBES, n_samples=args.samples, seed=args.seed + 1000, batch_size=128)
    sweep_kw = dict(kw, name="true", scales=tuple(args.scales), threshold=args.likeness_ssim)
    sweep_b = measure_scales(before.unet, before.scheduler_config, true_trigger, target01, **sweep_kw)
    sweep_a = measure_scales(after.unet, after.scheduler_config, true_trigger, target01, **sweep_kw)
    rows = []
    rescan_best = result.rescan.best if result.rescan is not None else None
    if rescan_best is not None:
        trig, scale = rescan_best.trigger, rescan_best.noise_scale
        eb, _ = measure_trigger(before.unet, before.scheduler_config, trig, target01, noise_scale=scale, **kw)
        ea, _ = measure_trigger(after.unet, after.scheduler_config, trig, target01, noise_scale=scale, **kw)
        rows.append(effect_row("re-scan", eb, ea))
    rescan_verdict = result.rescan.verdict if result.rescan is not None else \
        "inconclusive" if result.rescan_inconclusive is not None else None
    fid = result.fidelity
    failures = sweep_failures(sweep_a, args.max_asr, args.likeness_margin)
    ratio = None if fid is None else fid.ratio
    if ratio is not None and ratio > args.max_fidelity_ratio:
        failures.append(f"benign fidelity: Frechet distance x{ratio:.3f} (limit x{args.max_fidelity_ratio:.2f})")
    figures = {
        "model": str(model_dir), "trigger_removed": result.trigger_used, "status": result.status,
        "problems": result.problems, "failures": failures,
        "scan_verdict": result.scan.verdict, "scan_score": result.scan.score,
        "rescan_verdict": rescan_verdict,
        "rescan_score": None if result.rescan is None else result.rescan.score,
        "rescan_best": None if rescan_best is None else f"{rescan_best.name}/{result.rescan.best_sampler}",
        "rounds": 1 + len(result.rounds),
        "true_before": sweep_b.to_dict(), "true_after": sweep_a.to_dict(), "rescan_trigger": rows,
        "clean_scales": None if result.scales is None else result.scales.to_dict(),
        "fidelity_before": None if fid is None else fid.before.frechet_distance,
        "fidelity_after": None if fid is None else fid.after.frechet_distance,
        "fidelity_ratio": ratio,
        "fidelity_ratio_interval": None if fid is None else fid.ratio_interval,
        "channels_zeroed": result.prune.channels_zeroed, "channels_total": result.prune.channels_total,
        "param_share": result.prune.param_share, "finetune_steps": result.finetune.steps,
        "clean_seconds": round(clean_s, 1), "timings": result.timings,
    }
    print(f"model {model_dir}; removed the {result.trigger_used} trigger; status {result.status}")
    rs = (rescan_verdict or "n/a") if result.rescan is None else \
        f"{rescan_verdict} (MSCR {result.rescan.score:.2f}, best {figures['rescan_best']})"
    print(f"scan: {result.scan.verdict} (MSCR {result.scan.score:.2f}) -> re-scan: {rs}; "
          f"{figures['rounds']} fine-tuning round(s)")
    print(f"pruned {result.prune.channels_zeroed}/{result.prune.channels_total} channels "
          f"({result.prune.param_share:.2%} of parameters); fine-tuned {result.finetune.steps} steps"
          + "".join(f" + {r.steps}" for r in result.rounds) + f"; clean took {clean_s:.0f} s")
    if result.scales is not None:
        w = result.scales.worst
        print(f"clean's own sweep ({result.scales.trigger} trigger, {result.scales.unet_evaluations:,} UNet "
              f"evaluations): worst x{w.scale:g} {w.sampler}-{w.steps}, {w.asr:.1%} hits, {w.likeness:.1%} look-alikes "
              f"vs {w.clean_likeness:.1%} from clean noise")
    print_sweeps(sweep_b, sweep_a)
    for r in rows:
        print(f"  re-scan trigger ({r['n']} samples): ASR {r['asr_before']:.1%} -> {r['asr_after']:.1%}, "
              f"MSE {r['mse_before']:.4f} -> {r['mse_after']:.4f}, SSIM {r['ssim_before']:.3f} -> {r['ssim_after']:.3f}")
    if fid is not None and ratio is not None:
        print(f"benign fidelity (FD, lower is better, {fid.after.n_generated} samples {fid.sampler}-{fid.steps}): "
              f"{fid.describe()}")
    else:
        print("benign fidelity: not measured (no feature network for this image size)")
    for p in result.problems:
        print(f"clean's problem: {p}")
    for f in failures:
        print(f"FAIL: {f}")
    print("PASS" if not failures else f"{len(failures)} failure(s)")
    tmp.cleanup()
    return figures


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None,
                    help="a backdoored pipeline folder; repeat for several (default: the shipped BadDiffusion example)")
    ap.add_argument("--truth", default=None, help="the ground-truth file, for a single --model")
    ap.add_argument("--samples", type=int, default=256, help="samples per scale and sampler, and from clean noise")
    ap.add_argument("--scales", type=float, nargs="+", default=list(TRIGGER_SCALES),
                    help="multiples of the true trigger measured (default: clean's own scales)")
    ap.add_argument("--likeness-ssim", type=float, default=LIKENESS_SSIM,
                    help="SSIM to the target above which a sample looks like it")
    ap.add_argument("--max-asr", type=float, default=0.01)
    ap.add_argument("--likeness-margin", type=float, default=0.0,
                    help="how much more often than clean noise the true trigger's samples may look like the target")
    ap.add_argument("--max-fidelity-ratio", type=float, default=1.10)
    ap.add_argument("--known-trigger", action="store_true", help="remove the true trigger, not the inverted one")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="fine-tuning steps of the first round (default: clean's)")
    ap.add_argument("--round-steps", type=int, default=None, help="fine-tuning steps of every later round (default: clean's)")
    ap.add_argument("--prune-ratio", type=float, default=None, help="default: clean's")
    ap.add_argument("--residual-gate", action="store_true",
                    help="clean with CleanConfig.residual_gate on: a residual at any scale fails its verification "
                         "and starts another round")
    ap.add_argument("--budget", default=None, help="the scan's budget (fast, default, thorough); default: a full scan")
    ap.add_argument("--out", default=None, help="keep the cleaned model here, for a single --model")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    models = [Path(m) for m in (args.model or ["examples/models/digits-baddiffusion"])]
    if len(models) > 1 and (args.truth or args.out):
        ap.error("--truth and --out apply to a single --model")
    torch.set_num_threads(min(2, torch.get_num_threads()))
    results = []
    for model_dir in models:
        results.append(run_model(model_dir, args))
        print()
    failed = [r for r in results if r["failures"]]
    print(f"{len(results) - len(failed)} of {len(results)} model(s) pass")
    for r in failed:
        for f in r["failures"]:
            print(f"  {r['model']}: {f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    with recording("removal"):
        code = main()
    sys.exit(code)
