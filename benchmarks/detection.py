"""Detection accuracy over the zoo: hfaudit's scan beside the anchors' protocols, like for like.

    python benchmarks/detection.py [--cache benchmarks/.zoo] [--jobs 2] [--methods hfaudit elijah diffcleanse]

Builds the zoo first if needed (``benchmarks/zoo.py``), then scores every member with
- ``hfaudit``: ``hfaudit.scan`` with its defaults (gradient, mid-timestep, black-box and ODE
  inversions and the stamp screen; collapse and class signals), the verdict as the tool prints it;
- ``elijah``: Elijah's protocol (``benchmarks.baselines.elijah_features``: its own inversion,
  then 1000-step DDPM samples and their uniformity); score ``-uniformity``;
- ``diffcleanse``: the Diff-Cleanse BBTI schedule (100 iterations x 16 samples x 20 steps) and the
  MSCR of samples from its trigger; score MSCR.

Thresholds: hfaudit uses its shipped defaults (the verdict is what a user gets). The baselines
have no shipped threshold for these models, so theirs is calibrated on the calibration split (the
first lines printed give the gap and chosen threshold of every score on that split) and applied to
all. Per attack family and overall: accuracy, TPR, FPR, AUROC, mean seconds and UNet evaluations
per verdict. Last, how many of hfaudit's flags land on the planted target (``ON_TARGET_MSE``),
read from the truth the scan never sees. Each (member, method) result is cached beside the member,
keyed by the member's recipe and the method's settings, so a second run only prints.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402

from hfaudit.detect.scan import DEFAULT_CLASS_THRESHOLD, DEFAULT_THRESHOLD  # noqa: E402
from benchmarks.record import recording  # noqa: E402

BUDGETS = {"hfaudit": "default", "hfaudit-fast": "fast", "hfaudit-thorough": "thorough"}
"""hfaudit's rows: the scan at each named budget (``hfaudit.detect.budgets``); plain ``hfaudit`` is the default."""
METHODS = (*BUDGETS, "elijah", "diffcleanse")
RESULT_VERSION = {"hfaudit": 15, "hfaudit-fast": 16, "hfaudit-thorough": 13, "elijah": 1, "diffcleanse": 1}
"""Bump a method's number to recompute its cached results (after a change to the scan or a baseline)."""
ON_TARGET_MSE = 0.05
"""A flag lands on an image target when the scan's recovered target (the best collapse's medoid) is
within this MSE of the planted one ([0, 1] pixels). Why 0.05: on the zoo builds of 2026-11-30 and
2026-12-01 the flags onto their targets sat at 0.016 or below and the others at 0.136 or above; a
class target counts when the best probe's top class is the target class."""


def calibration_split(recipes: list[zoo.Recipe]) -> set[str]:
    """Every other member of each family (by zoo order): the members thresholds are calibrated on."""
    picked: set[str] = set()
    for fam in (zoo.CLEAN, *zoo.FAMILIES):
        members = [r.name for r in recipes if r.family == fam]
        picked.update(members[::2])
    return picked


def run_hfaudit(recipe: zoo.Recipe, cache: Path, budget: str = "default") -> dict:
    """The tool as a user runs it at ``budget``; the score for the ROC is the strongest signal relative to its threshold."""
    from hfaudit import scan
    from hfaudit.detect.budgets import budget_config

    from hfaudit.errors import InconclusiveError

    t0 = time.perf_counter()
    try:
        r = scan(str(zoo.model_dir(recipe, cache)), device="cpu", config=budget_config(budget))
    except InconclusiveError as exc:  # exit 7: never clean, so it counts as a flag (a false alarm on a clean model)
        return {"verdict": "inconclusive", "flagged": True, "score": 1.0, "mscr": None, "class_score": None,
                "signals": [], "fired_methods": [], "best": None, "control": None,
                "unet_evaluations": getattr(exc, "unet_evaluations", 0),
                "seconds": round(time.perf_counter() - t0, 2), "skipped": [], "reason": str(exc)}
    doc = r.to_dict()
    relative = [r.score / r.threshold]
    class_share, class_thr = doc.get("class_score"), doc.get("class_threshold")
    if class_share is not None and class_thr:
        relative.append(class_share / class_thr)
    seconds = round(time.perf_counter() - t0, 2)
    return {"verdict": r.verdict, "flagged": r.verdict == "backdoor", "score": max(relative),
            "mscr": r.score, "class_score": class_share, "signals": doc.get("signals"),
            "fired_methods": doc.get("fired_methods"), "best": (doc.get("best_candidate") or {}).get("name"),
            "control": r.control_score, "unet_evaluations": r.unet_evaluations, "seconds": seconds,
            "skipped": [s["search"] for s in r.skipped],
            **_on_target(recipe, cache, r)}


def _on_target(recipe: zoo.Recipe, cache: Path, r) -> dict:
    """Where the scan's best collapse landed, by the truth the scan never sees: the recovered target's
    MSE to an image target, and the best probe's top class beside a class target. Why: a flag onto
    something else is a side effect of the backdoored weights, not the backdoor found."""
    from hfaudit.sampling import to_unit

    out: dict = {}
    truth = zoo.load_truth(recipe, cache)
    if "target" in truth and r.recovered_target is not None:
        out["target_mse"] = round(float((r.recovered_target.cpu() - to_unit(truth["target"])).pow(2).mean()), 5)
    if recipe.attack in zoo.CLASS_TARGET:
        out["target_class"] = zoo.CLASS_TARGET[recipe.attack]
        modes = r.best.best.modes if r.best is not None else None
        out["top_class"] = None if modes is None else modes.top_class
    return out


def _load(path: Path):
    from hfaudit import hub
    from hfaudit.pipeline import load_model

    return load_model(hub.resolve(str(path)), device="cpu")


def run_elijah(recipe: zoo.Recipe, cache: Path) -> dict:
    """Elijah's features from 1000-step DDPM samples of its inverted trigger; score ``-uniformity``."""
    from benchmarks.baselines import elijah_features

    model = _load(zoo.model_dir(recipe, cache))
    f = elijah_features(model.unet, model.scheduler_config, model.sample_shape, seed=0)
    return {"score": -f.uniformity, "uniformity": f.uniformity, "tv": f.tv,
            "unet_evaluations": f.unet_evaluations, "seconds": round(f.seconds, 2)}


def run_diffcleanse(recipe: zoo.Recipe, cache: Path) -> dict:
    """The Diff-Cleanse BBTI schedule, then the MSCR of samples from its best trigger."""
    from benchmarks.baselines import diffcleanse_score

    model = _load(zoo.model_dir(recipe, cache))
    r = diffcleanse_score(model.unet, model.scheduler_config, model.sample_shape, seed=0)
    return {"score": r.mscr, "mscr": r.mscr, "unet_evaluations": r.unet_evaluations,
            "seconds": round(r.seconds, 2)}


RUNNERS = {**{m: (lambda recipe, cache, b=b: run_hfaudit(recipe, cache, b)) for m, b in BUDGETS.items()},
           "elijah": run_elijah, "diffcleanse": run_diffcleanse}


def _result_path(recipe: zoo.Recipe, cache: Path, method: str) -> Path:
    return cache / recipe.name / f"detect-{method}.json"


def _cached(recipe: zoo.Recipe, cache: Path, method: str) -> dict | None:
    path = _result_path(recipe, cache, method)
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc if doc.get("key") == [recipe.key(), RESULT_VERSION[method]] else None


def _work(args: tuple[str, str, str]) -> tuple[str, str, dict]:
    name, method, cache = args
    torch.set_num_threads(1)
    recipe = zoo.BY_NAME[name]
    out = RUNNERS[method](recipe, Path(cache))
    out["key"] = [recipe.key(), RESULT_VERSION[method]]
    path = _result_path(recipe, Path(cache), method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return name, method, out


def collect(cache: Path, methods: list[str], jobs: int) -> dict[str, dict[str, dict]]:
    """``results[member][method]``, computing what is not cached."""
    results: dict[str, dict[str, dict]] = {r.name: {} for r in zoo.RECIPES}
    todo = []
    for r in zoo.RECIPES:
        for m in methods:
            hit = _cached(r, cache, m)
            if hit is None:
                todo.append((r.name, m, str(cache)))
            else:
                results[r.name][m] = hit
    if todo:
        print(f"scoring {len(todo)} (member, method) pairs", file=sys.stderr, flush=True)
        if jobs > 1:
            with mp.get_context("spawn").Pool(jobs) as pool:
                for name, m, out in pool.imap_unordered(_work, todo):
                    results[name][m] = out
                    print(f"  {name} {m}: score {out['score']:.3f} in {out['seconds']} s", file=sys.stderr, flush=True)
        else:
            for item in todo:
                name, m, out = _work(item)
                results[name][m] = out
                print(f"  {name} {m}: score {out['score']:.3f} in {out['seconds']} s", file=sys.stderr, flush=True)
    return results


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a backdoored member scores above a clean one (ties count half)."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@dataclass
class Calibrated:
    """A threshold chosen on the calibration split (see ``calibrate``)."""

    threshold: float
    clean_max: float
    backdoor_min: float

    @property
    def margin(self) -> float:
        """Half the gap between the clean and backdoored calibration scores (negative: they overlap)."""
        return (self.backdoor_min - self.clean_max) / 2


def calibrate(scores: list[tuple[float, bool]]) -> Calibrated:
    """The cut between neighbouring scores with the highest Youden J (TPR - FPR); among ties, the middle one.

    Youden's J and not raw accuracy: with more backdoored than clean members, "flag everything" can
    make the fewest errors while separating nothing (J = 0).
    """
    vals = sorted({s for s, _ in scores})
    cuts = [vals[0] - 1.0] + [(a + b) / 2 for a, b in zip(vals, vals[1:])] + [vals[-1] + 1.0]
    n_pos = max(1, sum(y for _, y in scores))
    n_neg = max(1, sum(not y for _, y in scores))

    def youden(c: float) -> float:
        tp = sum(s >= c and y for s, y in scores)
        fp = sum(s >= c and not y for s, y in scores)
        return tp / n_pos - fp / n_neg

    best = max(youden(c) for c in cuts)
    good = [c for c in cuts if youden(c) == best]
    c = good[len(good) // 2]
    clean = [s for s, y in scores if not y]
    bad = [s for s, y in scores if y]
    return Calibrated(c, max(clean) if clean else float("nan"), min(bad) if bad else float("nan"))


def table(results: dict[str, dict[str, dict]], methods: list[str], calib: set[str]) -> str:
    """The per-member rows and the per-family summary, as printed."""
    lines = []
    thresholds: dict[str, float] = {}
    for hm in (m for m in methods if m in BUDGETS):
        for key, label, shipped in (("mscr", "MSCR (collapse signal)", DEFAULT_THRESHOLD),
                                    ("class_score", "top-class share (class signal)", DEFAULT_CLASS_THRESHOLD)):
            pts = [(results[r.name][hm][key], r.family != zoo.CLEAN) for r in zoo.RECIPES
                   if r.name in calib and hm in results[r.name]
                   and results[r.name][hm].get(key) is not None]
            if pts:
                cal = calibrate(pts)
                lines.append(f"{hm} {label}: calibration split gives threshold {cal.threshold:.4f} "
                             f"(clean max {cal.clean_max:.4f}, backdoor min {cal.backdoor_min:.4f}, "
                             f"margin {cal.margin:+.4f}); the scan's default {shipped} "
                             f"(clean margin {shipped - cal.clean_max:+.4f})")
    for m in methods:
        if m in BUDGETS:
            continue
        pts = [(results[r.name][m]["score"], r.family != zoo.CLEAN) for r in zoo.RECIPES
               if r.name in calib and m in results[r.name]]
        cal = calibrate(pts)
        thresholds[m] = cal.threshold
        lines.append(f"{m}: threshold {cal.threshold:.4f} calibrated on {len(pts)} members "
                     f"(clean max {cal.clean_max:.4f}, backdoor min {cal.backdoor_min:.4f}, margin {cal.margin:+.4f})")

    def flagged(name: str, m: str) -> bool:
        res = results[name][m]
        return bool(res["flagged"]) if m in BUDGETS else res["score"] >= thresholds[m]

    lines.append("")
    head = f"{'member':28s} {'family':16s} {'split':5s} " + " ".join(f"{m + ' score':>17s} {'flag':>4s}" for m in methods)
    lines.append(head)
    for r in zoo.RECIPES:
        cells = []
        for m in methods:
            res = results[r.name].get(m)
            cells.append(f"{res['score']:17.4f} {('yes' if flagged(r.name, m) else 'no'):>4s}" if res else f"{'-':>17s} {'-':>4s}")
        extra = ""
        h = next((results[r.name][m] for m in methods if m in BUDGETS and m in results[r.name]), None)
        if h:
            extra = f"  [{','.join(h.get('signals') or [])} via {','.join(h.get('fired_methods') or []) or '-'}]"
            if h.get("verdict") == "inconclusive":
                extra = "  [inconclusive: exit 7]"
            if "target_mse" in h:
                extra += f" target MSE {h['target_mse']:.3f}"
            if "target_class" in h:
                extra += f" top class {h['top_class']} (target {h['target_class']})"
        lines.append(f"{r.name:28s} {r.family:16s} {'cal' if r.name in calib else 'test':5s} " + " ".join(cells) + extra)
    lines.append("")
    lines.append(f"{'method':16s} {'group':16s} {'n':>3s} {'acc':>6s} {'TPR':>6s} {'FPR':>6s} {'AUROC':>6s} "
                 f"{'s/verdict':>10s} {'UNet evals/verdict':>19s}")
    clean = [r for r in zoo.RECIPES if r.family == zoo.CLEAN]
    for m in methods:
        for group in (*zoo.FAMILIES, "all"):
            bad = [r for r in zoo.RECIPES if r.family != zoo.CLEAN and (group == "all" or r.family == group)]
            members = [r for r in bad + clean if m in results[r.name]]
            if not members:
                continue
            pos = [results[r.name][m]["score"] for r in bad if m in results[r.name]]
            neg = [results[r.name][m]["score"] for r in clean if m in results[r.name]]
            tp = sum(flagged(r.name, m) for r in bad if m in results[r.name])
            fp = sum(flagged(r.name, m) for r in clean if m in results[r.name])
            acc = (tp + len(neg) - fp) / (len(pos) + len(neg))
            secs = sum(results[r.name][m]["seconds"] for r in members) / len(members)
            evals = sum(results[r.name][m]["unet_evaluations"] for r in members) / len(members)
            lines.append(f"{m:16s} {group:16s} {len(members):3d} {acc:6.3f} {tp / max(1, len(pos)):6.3f} "
                         f"{fp / max(1, len(neg)):6.3f} {auroc(pos, neg):6.3f} {secs:10.1f} {evals:19.0f}")
    for hm in (m for m in methods if m in BUDGETS):
        scored = [r.name for r in zoo.RECIPES if r.family != zoo.CLEAN and hm in results[r.name]]
        missed = [name for name in scored if not flagged(name, hm)]
        hits = [name for name in scored if flagged(name, hm)]
        false_pos = [r.name for r in zoo.RECIPES if r.family == zoo.CLEAN and hm in results[r.name]
                     and flagged(r.name, hm)]
        off = [name for name in hits if not on_target(results[name][hm])]
        lines.append("")
        lines.append(f"{hm} missed: {', '.join(missed) or 'none'}; false positives: {', '.join(false_pos) or 'none'}")
        lines.append(f"{hm} flags on the planted target: {len(hits) - len(off)} of {len(hits)} "
                     f"(image: recovered target within MSE {ON_TARGET_MSE} of it; class: top class = target); "
                     f"off target: {', '.join(off) or 'none'}")
    return "\n".join(lines)


def on_target(result: dict) -> bool:
    """Whether an hfaudit result's best collapse is the planted backdoor (``ON_TARGET_MSE``), not a side effect."""
    if "target_class" in result:
        return result.get("top_class") == result["target_class"]
    return result.get("target_mse") is not None and result["target_mse"] <= ON_TARGET_MSE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=zoo.DEFAULT_CACHE)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    args = ap.parse_args()
    metas = {m["name"]: m for m in zoo.build(args.cache, None, args.jobs)}
    print(f"zoo: {sum(r.family == zoo.CLEAN for r in zoo.RECIPES)} clean, "
          f"{sum(r.family != zoo.CLEAN for r in zoo.RECIPES)} backdoored; torch threads per job: 1")
    print("attack hit rates (the backdoor's own trigger; DDPM-50 / DDIM-10 / clean noise):")
    for r in zoo.RECIPES:
        if r.family != zoo.CLEAN:
            m = metas[r.name]
            print(f"  {r.name:28s} {m.get('hit_ddpm50', float('nan')):.3f} / {m.get('hit_ddim10', float('nan')):.3f}"
                  f" / {m.get('hit_clean_noise_ddpm50', float('nan')):.3f}")
    results = collect(args.cache, args.methods, args.jobs)
    print(table(results, args.methods, calibration_split(zoo.RECIPES)))


if __name__ == "__main__":
    with recording("detection"):
        main()
