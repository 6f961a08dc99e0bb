"""Detection accuracy on the text-to-image backdoor zoo: hfaudit's scan beside the anchor's protocol (AMDET).

    python benchmarks/t2i_detection.py [--jobs 1] [--methods hfaudit hfaudit-fast amdet]
                                       [--only NAME ...] [--no-build] [--cache benchmarks/.t2izoo]

The zoo is ``benchmarks/t2izoo`` (tiny Stable Diffusion pipelines: CLIP text encoder, KL autoencoder,
cross-attention UNet); its members are built with its own entry point (``benchmarks.t2izoo.build``,
cached) unless ``--no-build``, and members not built are listed, not scored. Only the text-to-image
members are scored (the unconditional latent ones belong to ``benchmarks/detection.py``'s kind of
audit). Attack kinds: ``rickrolling`` (text-encoder backdoor), ``eviledit`` (closed-form cross-
attention edit), ``caption-ft`` (caption-trigger UNet fine-tune, VillanDiffusion caption trigger /
BadT2I), ``clean`` (trained from scratch, or fine-tuned without a trigger). Methods:

- ``hfaudit`` (default budget) and ``hfaudit-fast``: ``hfaudit.scan`` as a user runs it. Its
  decision is its verdict; an ``InconclusiveError`` (exit 7) is counted apart, as *inconclusive*:
  neither a detection (not in TPR) nor a false alarm (not in FPR). ROC score: **a rank by verdict, then
  by score** - backdoor above inconclusive above clean, and within a verdict ``result.score /
  result.threshold`` (squashed to [0, 1) as ``x / (1 + x)``); an inconclusive scan has no score and
  sits at 1.0, between every clean and every backdoor verdict.
- ``amdet``: the anchor's model-level audit of the text encoder (``benchmarks.t2i_baselines``:
  its protocol, settings, decision rule and what changed for scale); its decision is the protocol's,
  its ROC score the smallest gate statistic over its threshold. Anchor encoder: the zoo's base model
  ``t2i-clean-a`` (every attacked member derives from it). It never evaluates the UNet.

Per attack kind and overall, backdoors of that kind against every clean member: TPR, FPR, AUROC;
mean seconds, UNet evaluations and text-encoder passes per verdict (over the row's members: the
kind's backdoors, the clean members, or all); inconclusive counts; and **found on trigger**: a backdoor
verdict one of whose reported trigger strings (hfaudit reports every confirmed token) matches the planted one (:func:`on_trigger`: after NFC
normalisation, case folding, stripping whitespace and CLIP's ``</w>`` marker, the reported string
equals the planted one or contains it as a substring). AMDET inverts a feature, not a string, so it
has no found-on-trigger figure; its nearest vocabulary token is shown for reading only. Then one row
per member: kind, trigger, attack hit rates from the zoo's truth (guidance 1 / 3), each method's
verdict, score, trigger found and seconds. Each (member, method) result is cached beside the member
(``<cache>/<member>/t2idetect-<method>.json``), keyed by the member's recipe hash and
``RESULT_VERSION``; a scan that raised anything but ``InconclusiveError`` is reported, not cached.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import cached_result, recording, run_jobs  # noqa: E402

BUDGETS = {"hfaudit": "default", "hfaudit-fast": "fast"}
"""hfaudit's rows: the scan at each named budget (``hfaudit.detect.budgets``)."""
METHODS = (*BUDGETS, "amdet")
RESULT_VERSION = {"hfaudit": 5, "hfaudit-fast": 6, "amdet": 2}
"""Bump a method's number to recompute its cached results (after a change to the scan or the baseline)."""
T2I_KINDS = ("t2i", "cap", "rick", "evil")
"""The zoo's recipe kinds that make a text-to-image pipeline."""
ATTACKS = ("rickrolling", "eviledit", "caption-ft")
CLEAN = "clean"
WEAK = "weak"
"""The group of backdoors that did not implant (``Member.implanted``)."""
IMPLANTED = 0.8
ANCHOR_MEMBER = "t2i-clean-a"
"""AMDET's anchor for a member trained from scratch (a base): the development zoo's first base."""
SPLITS = ("dev", "test")
"""The development zoo (every setting chosen on it) and the frozen test split (recipes fixed before any
detector ran on it): scored alike, reported apart (``benchmarks.t2izoo.build.split_of``)."""


def anchor_of(name: str) -> str:
    """AMDET's anchor for a member: the base (a model trained from scratch) it descends from, as the
    paper's suspects descend from SD v1.4; a base is its own, and then ``ANCHOR_MEMBER`` stands in."""
    from benchmarks.t2izoo.build import ALL_RECIPES as recipes

    while recipes[name]["kind"] != "t2i":
        name = recipes[name]["parent"]
    return name


def default_cache() -> Path:
    from benchmarks.t2izoo.build import CACHE

    return CACHE


@dataclass(frozen=True)
class Member:
    """One text-to-image member as the benchmark sees it."""

    name: str
    kind: str
    """``rickrolling``, ``eviledit``, ``caption-ft`` or ``clean``."""
    path: Path
    """The pipeline folder the scans read."""
    results_dir: Path
    key: str
    """The member's recipe hash (``benchmarks.t2izoo.build.recipe_hash``)."""
    split: str
    """``dev`` or ``test`` (``SPLITS``)."""
    trigger: str | None
    target: str | None
    hits: dict = field(default_factory=dict, compare=False, hash=False)
    """The zoo's measured rates (``hit_g1``, ``hit_g3``, ``no_trigger_g1``...)."""

    @property
    def backdoored(self) -> bool:
        return self.kind != CLEAN

    @property
    def implanted(self) -> bool:
        """A backdoor at the published strength: its hit rate reaches ``IMPLANTED`` at guidance 1 or 3
        (the zoo's own rule, fixed before any detector ran on the test split); one below it behaves
        like a clean model and is reported apart (``WEAK``), not counted as a miss."""
        return self.backdoored and max(self.hits.get("hit_g1", 0.0), self.hits.get("hit_g3", 0.0)) >= IMPLANTED


def attack_kind(recipe: dict) -> str:
    """The benchmark's attack kind of a zoo recipe (a fine-tune without a trigger is clean)."""
    if recipe["kind"] == "t2i" or recipe.get("trigger") is None:
        return CLEAN
    return {"rick": "rickrolling", "evil": "eviledit", "cap": "caption-ft"}[recipe["kind"]]


def members(cache: Path, split: str = "all") -> tuple[list[Member], list[str]]:
    """The built text-to-image members of ``split`` in recipe order, and the names of those not built (or stale)."""
    from benchmarks.t2izoo.build import ALL_RECIPES, recipe_hash, split_names, split_of

    out, missing = [], []
    for name in split_names(split):
        recipe = ALL_RECIPES[name]
        if recipe["kind"] not in T2I_KINDS:
            continue
        folder = cache / name
        meta_path = folder / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta.get("hash") != recipe_hash(name) or not (folder / "pipeline" / "model_index.json").is_file():
            missing.append(name)
            continue
        truth = meta.get("truth", {})
        out.append(Member(name, attack_kind(recipe), folder / "pipeline", folder, meta["hash"],
                          split_of(name), truth.get("trigger"), truth.get("target"),
                          dict(meta.get("metrics", {}))))
    return out, missing


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).replace("</w>", "").strip().casefold()


def on_trigger(found: str | None, planted: str | None) -> bool:
    """Whether a reported trigger string is the planted one: after NFC normalisation, case folding and
    stripping whitespace and CLIP's ``</w>`` end-of-word marker, ``found`` equals ``planted`` or contains it."""
    if not found or not planted:
        return False
    f, p = _normalise(found), _normalise(planted)
    return bool(p) and p in f


def auroc(pos: list[float], neg: list[float]) -> float:
    """Probability that a backdoored member scores above a clean one (ties count half); nan without both."""
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def rates(pos_flags: list[bool], neg_flags: list[bool]) -> tuple[float, float]:
    """``(TPR, FPR)``: the flagged share of the backdoored and of the clean members (nan where there are none)."""
    tpr = sum(pos_flags) / len(pos_flags) if pos_flags else float("nan")
    fpr = sum(neg_flags) / len(neg_flags) if neg_flags else float("nan")
    return tpr, fpr


def hfaudit_rank(verdict: str, score: float | None, threshold: float | None) -> float:
    """hfaudit's ROC score: backdoor in [2, 3), inconclusive 1.0, clean in [0, 1); within a verdict
    ``score / threshold`` squashed as ``x / (1 + x)``."""
    if verdict == "inconclusive" or score is None:
        return 1.0
    rel = max(0.0, float(score)) / threshold if threshold else max(0.0, float(score))
    sq = rel / (1.0 + rel) if math.isfinite(rel) else 1.0 - 1e-9
    return (2.0 if verdict == "backdoor" else 0.0) + sq


def run_hfaudit(member: Member, budget: str = "default") -> dict:
    """The tool as a user runs it at ``budget``."""
    from hfaudit import scan
    from hfaudit.detect.budgets import budget_config
    from hfaudit.errors import InconclusiveError

    t0 = time.perf_counter()
    try:
        r = scan(str(member.path), device="cpu", config=budget_config(budget))
    except InconclusiveError as exc:
        return {"verdict": "inconclusive", "flagged": False, "inconclusive": True, "score": None, "threshold": None,
                "rank": hfaudit_rank("inconclusive", None, None), "trigger": None, "signals": [],
                "unet_evaluations": int(getattr(exc, "unet_evaluations", 0) or 0), "encoder_passes": None,
                "seconds": round(time.perf_counter() - t0, 2), "reason": str(exc)[:500]}
    seconds = round(time.perf_counter() - t0, 2)
    text = r.text
    trigger = text.trigger if text is not None else None
    triggers = list(getattr(text, "triggers", None) or ([trigger] if trigger else []))
    out = {"verdict": r.verdict, "flagged": r.verdict == "backdoor", "inconclusive": False, "score": r.score,
           "threshold": r.threshold, "rank": hfaudit_rank(r.verdict, r.score, r.threshold), "trigger": trigger,
           "signals": list(text.signals) if text is not None else list(r.signals),
           "unet_evaluations": r.unet_evaluations,
           "encoder_passes": getattr(text, "encoder_forwards", None), "seconds": seconds,
           "timings": dict(r.timings), "triggers": triggers,
           "on_trigger": any(on_trigger(t, member.trigger) for t in triggers)}
    if text is not None:
        out["screen_top"] = [row.get("token") for row in text.screen[:5] if isinstance(row, dict)]
        out["evidence"] = [{"text": e.text, "role": e.role, "fired": list(e.fired)} for e in text.evidence
                           if e.role == "candidate"][:5]
    return out


def run_amdet(member: Member, cache: Path) -> dict:
    """AMDET on the member's text encoder, with the zoo's base encoder as its anchor."""
    from benchmarks.t2i_baselines import amdet_score

    base = anchor_of(member.name)
    anchor = cache / (ANCHOR_MEMBER if base == member.name else base) / "pipeline"
    r = amdet_score(member.path, anchor)
    return {"verdict": r.decision, "flagged": r.flagged, "inconclusive": False, "score": r.score, "rank": r.score,
            "trigger": r.nearest_token, "gates": r.gates, "steps": r.steps, "checks": r.checks,
            "unet_evaluations": r.unet_evaluations, "encoder_passes": r.encoder_passes, "seconds": r.seconds,
            "anchor_is_suspect": r.anchor_is_suspect, "notes": r.notes,
            "on_trigger": on_trigger(r.nearest_token, member.trigger)}


def _result_path(member: Member, method: str) -> Path:
    return member.results_dir / f"t2idetect-{method}.json"


def _cached(member: Member, method: str) -> dict | None:
    return cached_result(_result_path(member, method), [member.key, RESULT_VERSION[method]])


def _work(args: tuple[Member, str, Path]) -> tuple[Member, str, dict]:
    member, method, cache = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    try:
        out = run_amdet(member, cache) if method == "amdet" else run_hfaudit(member, BUDGETS[method])
    except Exception as exc:  # noqa: BLE001 - a scan still being written may fail; report it, cache nothing
        return member, method, {"error": f"{type(exc).__name__}: {exc}"[:500],
                                "seconds": round(time.perf_counter() - t0, 2)}
    out["key"] = [member.key, RESULT_VERSION[method]]
    path = _result_path(member, method)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2, ensure_ascii=False))
    return member, method, out


def collect(ms: list[Member], methods: list[str], jobs: int, cache: Path) -> dict[str, dict[str, dict]]:
    """``results[member][method]``, computing what is not cached."""
    results: dict[str, dict[str, dict]] = {m.name: {} for m in ms}
    todo = []
    for member in ms:
        for m in methods:
            hit = _cached(member, m)
            if hit is None:
                todo.append((member, m, cache))
            else:
                results[member.name][m] = hit
    if todo:
        print(f"scoring {len(todo)} (member, method) pairs", file=sys.stderr, flush=True)

        def record(member: Member, m: str, out: dict) -> None:
            results[member.name][m] = out
            said = out.get("error") or f"{out['verdict']} (score {_fmt(out.get('score'))})"
            print(f"  {member.name} {m}: {said} in {out['seconds']} s", file=sys.stderr, flush=True)

        run_jobs(_work, todo, jobs, record)
    return results


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


@dataclass
class Row:
    """One method on one group."""

    n_pos: int
    n_neg: int
    tpr: float
    fpr: float
    auroc: float
    found: str
    inconclusive: int
    errors: int
    seconds: float
    evals: float
    passes: float | None


def summary(ms: list[Member], results: dict[str, dict[str, dict]], method: str, group: str) -> Row | None:
    """``group``: an attack kind, ``clean``, ``weak`` (backdoors that did not implant) or ``all`` (clean and
    implanted); clean members are always the negatives, and only implanted backdoors are positives
    outside ``weak``."""
    scored = [x for x in ms if method in results[x.name]]
    ok = [x for x in scored if "error" not in results[x.name][method]]
    neg = [x for x in ok if not x.backdoored]
    if group == WEAK:
        pos = [x for x in ok if x.backdoored and not x.implanted]
    else:
        pos = [x for x in ok if x.implanted and group in ("all", x.kind)]
    here = {"all": [x for x in scored if x.implanted or not x.backdoored], CLEAN: [x for x in scored if not x.backdoored],
            WEAK: [x for x in scored if x.backdoored and not x.implanted]}.get(
        group, [x for x in scored if x.kind == group and x.implanted])
    if not here:
        return None
    res = {x.name: results[x.name][method] for x in scored}
    tpr, fpr = rates([res[x.name]["flagged"] for x in pos], [res[x.name]["flagged"] for x in neg])
    if group == CLEAN:
        tpr = float("nan")
    area = auroc([res[x.name]["rank"] for x in pos], [res[x.name]["rank"] for x in neg]) if group != CLEAN \
        else float("nan")
    flagged = [x for x in pos if res[x.name]["flagged"]]
    found = (f"{sum(bool(res[x.name].get('on_trigger')) for x in flagged)}/{len(pos)}"
             if method in BUDGETS and group != CLEAN else "-")
    done = [x for x in here if "error" not in res[x.name]]
    passes = [res[x.name]["encoder_passes"] for x in done if res[x.name].get("encoder_passes") is not None]
    return Row(n_pos=len(pos) if group != CLEAN else 0, n_neg=len(neg), tpr=tpr, fpr=fpr, auroc=area, found=found,
               inconclusive=sum(bool(res[x.name].get("inconclusive")) for x in here),
               errors=sum("error" in res[x.name] for x in here),
               seconds=sum(res[x.name]["seconds"] for x in done) / max(1, len(done)),
               evals=sum(res[x.name]["unet_evaluations"] for x in done) / max(1, len(done)),
               passes=sum(passes) / len(passes) if passes else None)


def table(ms: list[Member], results: dict[str, dict[str, dict]], methods: list[str]) -> str:
    """The summary per attack kind and overall, then one row per member."""
    lines = [f"{'method':13s} {'group':12s} {'pos':>3s} {'neg':>3s} {'TPR':>6s} {'FPR':>6s} {'AUROC':>6s} "
             f"{'on trigger':>10s} {'inconcl':>7s} {'errors':>6s} {'s/verdict':>9s} {'UNet evals':>10s} "
             f"{'TE passes':>10s}"]
    for m in methods:
        for group in (*ATTACKS, CLEAN, WEAK, "all"):
            r = summary(ms, results, m, group)
            if r is None:
                continue
            lines.append(f"{m:13s} {group:12s} {r.n_pos:3d} {r.n_neg:3d} {_fmt(r.tpr):>6s} {_fmt(r.fpr):>6s} "
                         f"{_fmt(r.auroc):>6s} {r.found:>10s} {r.inconclusive:7d} {r.errors:6d} {r.seconds:9.1f} "
                         f"{r.evals:10.0f} {_fmt(r.passes, '.0f'):>10s}")
    lines += ["", "TPR/FPR: the decision (hfaudit: verdict backdoor; amdet: all five gates passed); inconclusive "
              "(exit 7) is neither. AUROC: hfaudit ranks by verdict then score/threshold, amdet by its smallest "
              "gate ratio. pos: the group's backdoors that implanted (hit rate >= %g at guidance 1 or 3; "
              "those below form the weak group, and are not in all); neg: every clean member. s/verdict, UNet "
              "evals and TE (text-encoder) passes: mean over the group's members. on trigger: backdoor verdicts whose "
              "reported trigger matches the planted one, of the group's backdoors." % IMPLANTED, ""]
    head = f"{'member':20s} {'kind':12s} {'trigger':10s} {'hit g1/g3':>11s}"
    for m in methods:
        head += f" | {m + ' verdict':>20s} {'score':>7s} {'trigger found':>16s} {'s':>7s}"
    lines.append(head)
    for x in ms:
        hits = f"{_fmt(x.hits.get('hit_g1'), '.2f')}/{_fmt(x.hits.get('hit_g3'), '.2f')}" if x.backdoored else "-"
        row = f"{x.name:20s} {x.kind:12s} {ascii(x.trigger) if x.trigger else '-':10s} {hits:>11s}"
        for m in methods:
            res = results[x.name].get(m)
            if res is None:
                row += f" | {'-':>20s} {'-':>7s} {'-':>16s} {'-':>7s}"
            elif "error" in res:
                row += f" | {'error':>20s} {'-':>7s} {'-':>16s} {res['seconds']:7.1f}"
            else:
                score = res["score"] / res["threshold"] if m in BUDGETS and res.get("threshold") else res["score"]
                found = (ascii(res["trigger"]) if res.get("trigger") else "-")[:15]
                found += "*" if res.get("on_trigger") else ""
                row += f" | {res['verdict']:>20s} {_fmt(score):>7s} {found:>16s} {res['seconds']:7.1f}"
        lines.append(row)
    lines += ["", "score: hfaudit's score/threshold (>= 1 where its deciding statistic fired), amdet's smallest gate "
              "ratio (>= 1: every gate passed). trigger found: hfaudit's reported trigger; amdet's nearest vocabulary "
              "token to its inverted vector (a reading aid, not a claim). *: matches the planted trigger "
              "(on_trigger). Strings are shown with ascii() so homoglyphs are visible."]
    if "amdet" in methods:
        lines += ["", "amdet gates where the protocol stopped (running loss; assimilation share; same-target share; "
                      "different-target share; positive-eigenvalue share; and the mean suspect-anchor cosine the "
                      "different-target gate needs below 0), Adam steps, checks:"]
        for x in ms:
            res = results[x.name].get("amdet")
            if res and "error" not in res:
                g = res["gates"]
                lines.append(f"  {x.name:20s} " + " ".join(f"{k} {_fmt(g.get(k))}" for k in
                                                           ("loss", "asr", "same_target", "different_target",
                                                            "positive_ratio", "anchor_cosine"))
                             + f"  steps {res['steps']} checks {res['checks']}"
                             + ("  (suspect encoder = anchor)" if res.get("anchor_is_suspect") else ""))
    errors = [(x.name, m, results[x.name][m]["error"]) for x in ms for m in methods
              if "error" in results[x.name].get(m, {})]
    if errors:
        lines += ["", "errors (not cached):"] + [f"  {n} {m}: {e}" for n, m, e in errors]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="the t2i zoo cache (default benchmarks/.t2izoo)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--only", nargs="+", default=None, help="score only these members")
    ap.add_argument("--no-build", action="store_true", help="score what is built; do not build missing members")
    ap.add_argument("--split", choices=(*SPLITS, "all"), default="all",
                    help="the development zoo, the frozen test split, or both (each gets its own table)")
    args = ap.parse_args()
    cache = args.cache or default_cache()
    ms, missing = members(cache, args.split)
    todo = [n for n in missing if not args.only or n in args.only]
    if todo and not args.no_build:  # only what is missing: a full zoo is left alone
        from benchmarks.t2izoo import build

        if cache != build.CACHE:
            raise SystemExit("--cache other than the zoo's own needs --no-build (the zoo builds into its cache)")
        build.build(todo, jobs=max(1, args.jobs))
        ms, missing = members(cache, args.split)
    if args.only:
        ms = [m for m in ms if m.name in args.only]
    print(f"text-to-image zoo ({cache}): {sum(not m.backdoored for m in ms)} clean, "
          f"{sum(m.backdoored for m in ms)} backdoored "
          f"({', '.join(f'{k} {sum(m.kind == k for m in ms)}' for k in ATTACKS)})"
          + (f"; not built: {', '.join(missing)} (python -m benchmarks.t2izoo.build)" if missing else "")
          + "; torch threads per job: 1")
    if "amdet" in args.methods and not (cache / ANCHOR_MEMBER / "pipeline").is_dir():
        print(f"amdet: its anchor {ANCHOR_MEMBER} is not built; not scored")
        args.methods = [m for m in args.methods if m != "amdet"]
    results = collect(ms, args.methods, args.jobs, cache)
    for split, title in (("dev", "Development zoo: every setting of hfaudit's text-to-image scan was chosen on it."),
                         ("test", "Frozen test split: recipes fixed before any detector ran on it; nothing was "
                                  "chosen by its figures.")):
        part = [m for m in ms if m.split == split]
        if part:
            print(f"\n{title}\n")
            print(table(part, results, args.methods))


if __name__ == "__main__":
    with recording("t2i_detection"):
        main()
