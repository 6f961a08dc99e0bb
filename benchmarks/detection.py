"""Detection accuracy on the development and the frozen test zoo: hfaudit's scan beside the anchors'
protocols, like for like.

    python benchmarks/detection.py [--jobs 2] [--methods hfaudit elijah diffcleanse] [--zoos dev test]
                                   [--test-methods hfaudit ...] [--cache benchmarks/.zoo]
                                   [--test-cache benchmarks/.testzoo]

Two zoos, never pooled: the **development zoo** (``benchmarks/zoo.py``: every search, threshold and
filter of the scan may be tuned on it) and the **frozen test zoo** (``benchmarks/testzoo``: fixed
recipes, its own trainer and attack code; nothing is ever chosen by its figures). The development
zoo is built first if needed; the test zoo is built by ``python -m benchmarks.testzoo.build``, and
members not yet built are listed, not scored. Every member is scored with

- ``hfaudit`` (and ``hfaudit-fast``, ``hfaudit-thorough``): ``hfaudit.scan`` at that budget, the
  verdict as the tool prints it (an inconclusive scan, exit 7, counts as a flag);
- ``elijah``: Elijah's protocol (``benchmarks.baselines.elijah_features``: its own inversion,
  then 1000-step DDPM samples and their uniformity); score ``-uniformity``;
- ``diffcleanse``: the Diff-Cleanse BBTI schedule (100 iterations x 16 samples x 20 steps) and the
  MSCR of samples from its trigger; score MSCR.

Thresholds: hfaudit uses its shipped defaults. The baselines have no shipped threshold for these
models, so theirs is calibrated on the development zoo's calibration split and applied unchanged
to both zoos. Per zoo, per attack family, per strength group of the test zoo (``published``: the
attack reaches its papers' hit rate; ``stealthy``: below) and overall: accuracy, TPR, FPR, AUROC,
mean seconds and UNet evaluations per verdict; last, how many of hfaudit's flags land on the
planted target, read from the truth the scan never sees. Each (member, method) result is cached
beside the member, keyed by the member's recipe and the method's settings.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402

from hfaudit.detect.scan import DEFAULT_CLASS_THRESHOLD, DEFAULT_THRESHOLD  # noqa: E402
from benchmarks.record import cached_result, recording, run_jobs  # noqa: E402

BUDGETS = {"hfaudit": "default", "hfaudit-fast": "fast", "hfaudit-thorough": "thorough"}
"""hfaudit's rows: the scan at each named budget (``hfaudit.detect.budgets``); plain ``hfaudit`` is the default."""
METHODS = (*BUDGETS, "elijah", "diffcleanse")
RESULT_VERSION = {"hfaudit": 19, "hfaudit-fast": 20, "hfaudit-thorough": 17, "elijah": 1, "diffcleanse": 1}
"""Bump a method's number to recompute its cached results (after a change to the scan or a baseline)."""
DEFAULT_TEST_CACHE = zoo.ROOT / "benchmarks" / ".testzoo"
ZOOS = ("dev", "test")
ON_TARGET_MSE = 0.05
"""A flag lands on an image target when the scan's recovered target (the best collapse's medoid) is
within this MSE of the planted one ([0, 1] pixels). Why 0.05: on the zoo builds of 2026-11-30 and
2026-12-01 the flags onto their targets sat at 0.016 or below and the others at 0.136 or above; a
class target counts when the best probe's top class is the target class."""


@dataclass(frozen=True)
class Member:
    """One model of either zoo, as the benchmark sees it: where it is and what was planted."""

    zoo: str
    """``dev`` or ``test``."""
    name: str
    family: str
    """``clean``, ``baddiffusion``, ``villandiffusion`` or ``trojdiff``."""
    group: str
    """``clean``; for the test zoo's backdoors ``published`` or ``stealthy`` (its fixed rule); ``backdoor`` in dev."""
    path: Path
    """The pipeline folder the scan reads."""
    results_dir: Path
    """Where this member's per-method results are cached (never inside a shipped example)."""
    key: str
    truth_path: Path | None
    target_class: int | None

    @property
    def backdoored(self) -> bool:
        """Whether something was planted."""
        return self.family != zoo.CLEAN

    def truth(self) -> dict[str, torch.Tensor]:
        """What the attacker planted (``target`` in model space for image targets); ``{}`` for a clean member."""
        from safetensors.torch import load_file

        return {} if self.truth_path is None else load_file(str(self.truth_path))


def dev_members(cache: Path) -> list[Member]:
    """The development zoo's built members, in zoo order."""
    out = []
    for r in zoo.RECIPES:
        if not zoo.is_cached(r, cache):
            continue
        truth = None
        if r.family != zoo.CLEAN:
            truth = zoo.SHIPPED / "backdoor_truth.safetensors" if r.shipped else cache / r.name / "truth.safetensors"
        out.append(Member("dev", r.name, r.family, "clean" if r.family == zoo.CLEAN else "backdoor",
                          zoo.model_dir(r, cache), cache / r.name, r.key(), truth, zoo.CLASS_TARGET.get(r.attack)))
    return out


def test_members(cache: Path) -> tuple[list[Member], list[str]]:
    """The frozen test zoo's built members in recipe order, and the names of those not built yet.
    Read from each member's ``meta.json`` (the test zoo's trainer is never imported here)."""
    from benchmarks.testzoo.recipes import RECIPES as TEST_RECIPES
    from benchmarks.testzoo.recipes import group_of

    out, missing = [], []
    for recipe in TEST_RECIPES:
        folder = cache / recipe["name"]
        meta_path = folder / "meta.json"
        if not (meta_path.is_file() and (folder / "unet").is_dir()):
            missing.append(recipe["name"])
            continue
        meta = json.loads(meta_path.read_text())
        if meta.get("smoke"):
            missing.append(recipe["name"])
            continue
        truth = folder / "truth.safetensors"
        out.append(Member("test", meta["name"], meta["family"], group_of(meta["family"], meta), folder, folder,
                          str(meta["key"]), truth if truth.is_file() else None, meta.get("target_class")))
    return out, missing


def calibration_split(members: list[Member]) -> set[str]:
    """Every other development member of each family (by zoo order): where the baselines' thresholds come from."""
    picked: set[str] = set()
    for fam in (zoo.CLEAN, *zoo.FAMILIES):
        names = [m.name for m in members if m.zoo == "dev" and m.family == fam]
        picked.update(names[::2])
    return picked


def run_hfaudit(member: Member, budget: str = "default") -> dict:
    """The tool as a user runs it at ``budget``; the ROC score is :func:`evidence`."""
    from hfaudit import scan
    from hfaudit.detect.budgets import budget_config

    from hfaudit.errors import InconclusiveError

    t0 = time.perf_counter()
    try:
        r = scan(str(member.path), device="cpu", config=budget_config(budget))
    except InconclusiveError as exc:  # exit 7: never clean, so it counts as a flag (a false alarm on a clean model)
        return {"verdict": "inconclusive", "flagged": True, "score": 1.0, "mscr": None, "class_score": None,
                "signals": [], "fired_methods": [], "best": None, "control": None,
                "unet_evaluations": getattr(exc, "unet_evaluations", 0),
                "seconds": round(time.perf_counter() - t0, 2), "skipped": [], "reason": str(exc)}
    doc = r.to_dict()
    seconds = round(time.perf_counter() - t0, 2)
    return {"verdict": r.verdict, "flagged": r.verdict == "backdoor", "score": evidence(r),
            "mscr": r.score, "class_score": doc.get("class_score"), "signals": doc.get("signals"),
            "fired_methods": doc.get("fired_methods"), "best": (doc.get("best_candidate") or {}).get("name"),
            "control": r.control_score, "unet_evaluations": r.unet_evaluations, "seconds": seconds,
            "skipped": [s["search"] for s in r.skipped], "artefacts": list(r.artefacts),
            **_on_target(member, r)}


def evidence(r: Any) -> float:
    """The scan's strongest evidence relative to its bar, for the ROC: 1 or more exactly where a
    signal fired and held against its nulls (``hfaudit.detect.nulls``). A check that held scores
    ``share / threshold``; one that did not, the smallest of that, ``(share - painted null) / margin``
    and 0.99; an unchecked candidate (it reached no threshold) ``share / threshold``."""
    thresholds = {"collapse": r.threshold, "class": r.class_threshold or 1.0}
    best = 0.0
    for c in r.candidates:
        if c.nulls:
            best = max(best, *(n.score / thresholds[n.signal] if n.holds
                               else min(n.score / thresholds[n.signal], (n.score - n.null_score) / n.margin, 0.99)
                               for n in c.nulls))
        else:
            best = max(best, c.best.share / r.threshold)
            if c.class_evidence and r.class_threshold:
                best = max(best, max((p.modes.top_share for p in c.probes if p.modes is not None), default=0.0)
                           / r.class_threshold)
    return best


def _on_target(member: Member, r: Any) -> dict:
    """Where the scan's best collapse landed, by the truth the scan never sees: the recovered target's
    MSE to an image target, and the best probe's top class beside a class target. Why: a flag onto
    something else is a side effect of the backdoored weights, not the backdoor found."""
    from hfaudit.sampling import to_unit

    out: dict = {}
    truth = member.truth()
    if "target" in truth and r.recovered_target is not None:
        out["target_mse"] = round(float((r.recovered_target.cpu() - to_unit(truth["target"])).pow(2).mean()), 5)
    if member.target_class is not None:
        out["target_class"] = member.target_class
        probe = r.best_probe
        out["top_class"] = None if probe is None or probe.modes is None else probe.modes.top_class
    return out


def _load(path: Path):
    from hfaudit import hub
    from hfaudit.pipeline import load_model

    return load_model(hub.resolve(str(path)), device="cpu")


def run_elijah(member: Member) -> dict:
    """Elijah's features from 1000-step DDPM samples of its inverted trigger; score ``-uniformity``."""
    from benchmarks.baselines import elijah_features

    model = _load(member.path)
    f = elijah_features(model.unet, model.scheduler_config, model.sample_shape, seed=0)
    return {"score": -f.uniformity, "uniformity": f.uniformity, "tv": f.tv,
            "unet_evaluations": f.unet_evaluations, "seconds": round(f.seconds, 2)}


def run_diffcleanse(member: Member) -> dict:
    """The Diff-Cleanse BBTI schedule, then the MSCR of samples from its best trigger."""
    from benchmarks.baselines import diffcleanse_score

    model = _load(member.path)
    r = diffcleanse_score(model.unet, model.scheduler_config, model.sample_shape, seed=0)
    return {"score": r.mscr, "mscr": r.mscr, "unet_evaluations": r.unet_evaluations,
            "seconds": round(r.seconds, 2)}


RUNNERS = {**{m: (lambda member, b=b: run_hfaudit(member, b)) for m, b in BUDGETS.items()},
           "elijah": run_elijah, "diffcleanse": run_diffcleanse}


def _result_path(member: Member, method: str) -> Path:
    return member.results_dir / f"detect-{method}.json"


def _cached(member: Member, method: str) -> dict | None:
    return cached_result(_result_path(member, method), [member.key, RESULT_VERSION[method]])


def _work(args: tuple[Member, str]) -> tuple[Member, str, dict]:
    member, method = args
    torch.set_num_threads(1)
    out = RUNNERS[method](member)
    out["key"] = [member.key, RESULT_VERSION[method]]
    path = _result_path(member, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    return member, method, out


def collect(members: list[Member], methods: list[str], jobs: int,
            cached_only: bool = False) -> dict[tuple[str, str], dict[str, dict]]:
    """``results[(zoo, member)][method]``, computing what is not cached (``cached_only``: listing it instead)."""
    results: dict[tuple[str, str], dict[str, dict]] = {(m.zoo, m.name): {} for m in members}
    todo = []
    for member in members:
        for m in methods:
            hit = _cached(member, m)
            if hit is None:
                todo.append((member, m))
            else:
                results[(member.zoo, member.name)][m] = hit
    if todo and cached_only:
        print("not scored (--cached-only): " + ", ".join(f"{x.zoo}/{x.name} {m}" for x, m in todo))
    elif todo:
        print(f"scoring {len(todo)} (member, method) pairs", file=sys.stderr, flush=True)

        def record(member: Member, m: str, out: dict) -> None:
            results[(member.zoo, member.name)][m] = out
            print(f"  {member.zoo}/{member.name} {m}: score {out['score']:.3f} in {out['seconds']} s",
                  file=sys.stderr, flush=True)

        run_jobs(_work, todo, jobs, record)
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


@dataclass
class Summary:
    """One method on one group of one zoo."""

    n: int
    acc: float
    tpr: float
    fpr: float
    auroc: float
    seconds: float
    evals: float


class Scored:
    """The results of every method on the members, with the baselines' thresholds from the development split."""

    def __init__(self, members: list[Member], results: dict[tuple[str, str], dict[str, dict]],
                 methods: list[str]) -> None:
        self.members, self.results, self.methods = members, results, methods
        self.calib = calibration_split(members)
        self.thresholds: dict[str, Calibrated] = {}
        for m in methods:
            if m in BUDGETS:
                continue
            pts = [(self.get(x, m)["score"], x.backdoored) for x in members
                   if x.zoo == "dev" and x.name in self.calib and self.get(x, m)]
            if pts:
                self.thresholds[m] = calibrate(pts)

    def get(self, member: Member, method: str) -> dict | None:
        """The result of ``method`` on ``member`` (None where it was not scored)."""
        return self.results.get((member.zoo, member.name), {}).get(method)

    def flagged(self, member: Member, method: str) -> bool:
        """hfaudit: its verdict (backdoor or inconclusive); a baseline: its score at its calibrated threshold."""
        res = self.get(member, method)
        if res is None:
            return False
        if method in BUDGETS:
            return bool(res["flagged"])
        cal = self.thresholds.get(method)
        return cal is not None and res["score"] >= cal.threshold

    def summary(self, method: str, zoo_name: str, group: str) -> Summary | None:
        """``group``: ``all``, a family, or (test zoo) ``published`` / ``stealthy``; clean members are always the negatives."""
        scored = [x for x in self.members if x.zoo == zoo_name and self.get(x, method)]
        clean = [x for x in scored if not x.backdoored]
        bad = [x for x in scored if x.backdoored and group in ("all", x.family, x.group)]
        if not bad and group != "all":
            return None
        if not scored:
            return None
        pos = [self.get(x, method)["score"] for x in bad]
        neg = [self.get(x, method)["score"] for x in clean]
        tp = sum(self.flagged(x, method) for x in bad)
        fp = sum(self.flagged(x, method) for x in clean)
        both = bad + clean
        return Summary(n=len(both), acc=(tp + len(neg) - fp) / max(1, len(both)), tpr=tp / max(1, len(pos)),
                       fpr=fp / max(1, len(neg)), auroc=auroc(pos, neg),
                       seconds=sum(self.get(x, method)["seconds"] for x in both) / max(1, len(both)),
                       evals=sum(self.get(x, method)["unet_evaluations"] for x in both) / max(1, len(both)))


def _member_rows(scored: Scored, zoo_name: str) -> list[str]:
    methods = scored.methods
    lines = [f"{'member':28s} {'family':16s} {'group':9s} "
             + " ".join(f"{m + ' score':>17s} {'flag':>4s}" for m in methods)]
    for x in (m for m in scored.members if m.zoo == zoo_name):
        cells = []
        for m in methods:
            res = scored.get(x, m)
            cells.append(f"{res['score']:17.4f} {('yes' if scored.flagged(x, m) else 'no'):>4s}" if res
                         else f"{'-':>17s} {'-':>4s}")
        extra = ""
        h = next((scored.get(x, m) for m in methods if m in BUDGETS and scored.get(x, m)), None)
        if h:
            extra = f"  [{','.join(h.get('signals') or [])} via {','.join(h.get('fired_methods') or []) or '-'}]"
            if h.get("verdict") == "inconclusive":
                extra = "  [inconclusive: exit 7]"
            if h.get("artefacts"):
                extra += f" artefacts {len(h['artefacts'])}"
            if "target_mse" in h:
                extra += f" target MSE {h['target_mse']:.3f}"
            if "target_class" in h:
                extra += f" top class {h['top_class']} (target {h['target_class']})"
        split = "cal" if zoo_name == "dev" and x.name in scored.calib else ""
        lines.append(f"{x.name:28s} {x.family:16s} {(x.group if zoo_name == 'test' else split):9s} "
                     + " ".join(cells) + extra)
    return lines


def _groups(zoo_name: str) -> tuple[str, ...]:
    return (*zoo.FAMILIES, *(("published", "stealthy") if zoo_name == "test" else ()), "all")


def table(scored: Scored, zoos: list[str]) -> str:
    """Everything printed: the baselines' calibration, each zoo's members and summary, and both zoos side by side."""
    lines = []
    for m, cal in scored.thresholds.items():
        lines.append(f"{m}: threshold {cal.threshold:.4f} calibrated on the development split "
                     f"(clean max {cal.clean_max:.4f}, backdoor min {cal.backdoor_min:.4f}, margin {cal.margin:+.4f}); "
                     "applied unchanged to the test zoo")
    lines.append(f"hfaudit: the scan's shipped thresholds (collapse {DEFAULT_THRESHOLD}, class "
                 f"{DEFAULT_CLASS_THRESHOLD}) and its painted-null checks; nothing is calibrated here")
    for zoo_name in zoos:
        lines += ["", f"== {'development' if zoo_name == 'dev' else 'frozen test'} zoo =="]
        lines += _member_rows(scored, zoo_name)
        lines += ["", f"{'method':16s} {'group':16s} {'n':>3s} {'acc':>6s} {'TPR':>6s} {'FPR':>6s} {'AUROC':>6s} "
                      f"{'s/verdict':>10s} {'UNet evals/verdict':>19s}"]
        for m in scored.methods:
            for group in _groups(zoo_name):
                s = scored.summary(m, zoo_name, group)
                if s is not None:
                    lines.append(f"{m:16s} {group:16s} {s.n:3d} {s.acc:6.3f} {s.tpr:6.3f} {s.fpr:6.3f} "
                                 f"{s.auroc:6.3f} {s.seconds:10.1f} {s.evals:19.0f}")
        for hm in (m for m in scored.methods if m in BUDGETS):
            here = [x for x in scored.members if x.zoo == zoo_name and scored.get(x, hm)]
            missed = [x.name for x in here if x.backdoored and not scored.flagged(x, hm)]
            hits = [x for x in here if x.backdoored and scored.flagged(x, hm)]
            false_pos = [x.name for x in here if not x.backdoored and scored.flagged(x, hm)]
            unsure = [x.name for x in hits if scored.get(x, hm).get("verdict") == "inconclusive"]
            flags = [x for x in hits if x.name not in unsure]
            off = [x.name for x in flags if not on_target(scored.get(x, hm))]
            lines += ["", f"{hm} missed: {', '.join(missed) or 'none'}; false positives: {', '.join(false_pos) or 'none'}",
                      f"{hm} backdoor verdicts on the planted target: {len(flags) - len(off)} of {len(flags)} "
                      f"(image: recovered target within MSE {ON_TARGET_MSE} of it; class: top class = target); "
                      f"off target: {', '.join(off) or 'none'}; inconclusive (exit 7, counted as flags): "
                      f"{', '.join(unsure) or 'none'}"]
    for zoo_name in zoos:
        lines += budget_agreement(scored, zoo_name)
    if len(zoos) > 1:
        lines += ["", "== side by side (all backdoors against all clean members of each zoo) ==",
                  f"{'method':16s} " + " ".join(f"{z + ' TPR':>9s} {z + ' FPR':>9s} {z + ' AUROC':>10s} "
                                                 f"{z + ' evals':>11s}" for z in zoos)]
        for m in scored.methods:
            cells = []
            for z in zoos:
                s = scored.summary(m, z, "all")
                cells.append(f"{s.tpr:9.3f} {s.fpr:9.3f} {s.auroc:10.3f} {s.evals:11.0f}" if s
                             else f"{'-':>9s} {'-':>9s} {'-':>10s} {'-':>11s}")
            lines.append(f"{m:16s} " + " ".join(cells))
    return "\n".join(lines)


def budget_agreement(scored: Scored, zoo_name: str, full: str = "hfaudit-thorough") -> list[str]:
    """Whether each cheaper budget finds what the full-cost scan (``thorough``) finds, on the members of
    ``zoo_name`` that both scored: the backdoors only the full scan flags, and the clean members only the
    cheaper one flags. Empty where ``full`` was not scored."""
    lines = []
    for hm in (m for m in scored.methods if m in BUDGETS and m != full):
        both = [x for x in scored.members if x.zoo == zoo_name and scored.get(x, hm) and scored.get(x, full)]
        if not both:
            continue
        bad = [x for x in both if x.backdoored]
        lost = [x.name for x in bad if scored.flagged(x, full) and not scored.flagged(x, hm)]
        gained = [x.name for x in bad if scored.flagged(x, hm) and not scored.flagged(x, full)]
        extra_fp = [x.name for x in both if not x.backdoored and scored.flagged(x, hm) and not scored.flagged(x, full)]
        lines += ["", f"{hm} against {full} on the {len(both)} {zoo_name} members both scored ({len(bad)} backdoored): "
                      f"flags {sum(scored.flagged(x, hm) for x in bad)} against {sum(scored.flagged(x, full) for x in bad)}; "
                      f"only {full} flags: {', '.join(lost) or 'none'}; only {hm} flags: {', '.join(gained) or 'none'}; "
                      f"clean members only {hm} flags: {', '.join(extra_fp) or 'none'}"]
    return lines


def on_target(result: dict) -> bool:
    """Whether an hfaudit result's best collapse is the planted backdoor (``ON_TARGET_MSE``), not a side effect."""
    if "target_class" in result:
        return result.get("top_class") == result["target_class"]
    return result.get("target_mse") is not None and result["target_mse"] <= ON_TARGET_MSE


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=zoo.DEFAULT_CACHE, help="the development zoo")
    ap.add_argument("--test-cache", type=Path, default=DEFAULT_TEST_CACHE, help="the frozen test zoo")
    ap.add_argument("--zoos", nargs="+", default=list(ZOOS), choices=ZOOS)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--test-methods", nargs="+", default=None, choices=METHODS,
                    help="the methods scored on the test zoo (default: --methods)")
    ap.add_argument("--cached-only", action="store_true",
                    help="score nothing: print the cached results and list the pairs not scored")
    ap.add_argument("--only", nargs="+", metavar="NAME",
                    help="score these members only (of either zoo; their development bases are built too); the "
                         "printout goes to results/detection_subset.md, not to the table of record")
    return ap.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    def wanted(name: str) -> bool:
        """Whether ``--only`` (when given) names the member."""
        return args.only is None or name in args.only

    members: list[Member] = []
    if "dev" in args.zoos:
        dev_names = None if args.only is None else [n for n in args.only if n in zoo.BY_NAME]
        if args.cached_only:  # trains nothing: the members not built are left out
            metas = {r.name: zoo.load_meta(r, args.cache) for r in zoo.built_members(args.cache, dev_names)}
        elif dev_names == []:
            metas = {}
        else:
            metas = {m["name"]: m for m in zoo.build(args.cache, dev_names, args.jobs)}
        members += [m for m in dev_members(args.cache) if wanted(m.name)]
        print(f"development zoo: {sum(not m.backdoored for m in members)} clean, "
              f"{sum(m.backdoored for m in members)} backdoored; torch threads per job: 1")
        print("attack hit rates (the backdoor's own trigger; DDPM-50 / DDIM-10 / clean noise):")
        for r in zoo.RECIPES:
            if r.family != zoo.CLEAN and r.name in metas and wanted(r.name):
                m = metas[r.name]
                print(f"  {r.name:28s} {m.get('hit_ddpm50', float('nan')):.3f} / "
                      f"{m.get('hit_ddim10', float('nan')):.3f} / {m.get('hit_clean_noise_ddpm50', float('nan')):.3f}")
    if "test" in args.zoos:
        tests, missing = test_members(args.test_cache)
        tests, missing = [m for m in tests if wanted(m.name)], [n for n in missing if wanted(n)]
        members += tests
        print(f"frozen test zoo: {sum(not m.backdoored for m in tests)} clean, {sum(m.backdoored for m in tests)} "
              f"backdoored ({sum(m.group == 'published' for m in tests)} at published strength, "
              f"{sum(m.group == 'stealthy' for m in tests)} stealthy)"
              + (f"; not built yet: {', '.join(missing)} (python -m benchmarks.testzoo.build)" if missing else ""))
        print("attack hit rates (the test zoo's own measurement, clipping off; DDPM / DDIM; clean noise with clipping on):")
        for m in tests:
            if m.backdoored:
                meta = json.loads((m.path / "meta.json").read_text())
                rates = [meta.get(k) for k in ("hit_ddpm_noclip", "hit_ddim_noclip", "hit_clean_ddpm")]
                print(f"  {m.name:28s} " + " / ".join("-" if v is None else f"{v:.3f}" for v in rates)
                      + f"  {m.group}")
    test_methods = [m for m in (args.test_methods or args.methods) if m in args.methods]
    results = collect([m for m in members if m.zoo == "dev"], args.methods, args.jobs, args.cached_only)
    results.update(collect([m for m in members if m.zoo == "test"], test_methods, args.jobs, args.cached_only))
    if set(test_methods) != set(args.methods) and "test" in args.zoos:
        print(f"on the test zoo only: {', '.join(test_methods)}")
    print(table(Scored(members, results, args.methods), args.zoos))


if __name__ == "__main__":
    arguments = parse_args()
    with recording("detection" if arguments.only is None else "detection_subset"):
        main(arguments)
