"""The zoo's four TrojDiff members trained longer: does a stronger TrojDiff backdoor get found?

    python benchmarks/trojdiff_longer.py [--steps 4000] [--cache benchmarks/.zoo-long]

Why: the zoo fine-tunes each backdoor for 1500 steps, after which the TrojDiff members fire on
50-63% (d2i) and 28-34% (class targets) of their triggered DDIM-10 samples, and the scan misses three
of them. This trains the same recipes (same base, seed, poison rate) for ``--steps`` into a cache of
their own, so the zoo and its cached results stay as they are, then measures each one's hit rate
like ``zoo.py`` and scans it with hfaudit's defaults like ``detection.py``. A hit counts for
something only when the scan recovers the planted target (``target_mse``, d2i) or the class signal
names the target class; a collapse onto anything else is a side effect of the backdoor.
About 20 minutes on 2 cores from scratch (4-8 minutes a member, two at a time, then about a minute a
scan); trained models are cached like the zoo's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402

DEFAULT_CACHE = zoo.ROOT / "benchmarks" / ".zoo-long"
MEMBERS = [r.name for r in zoo.RECIPES if r.family == zoo.TROJDIFF]


def _longer(name: str, steps: int) -> zoo.Recipe:
    """The member's recipe with more fine-tuning steps (its key and base follow from its fields)."""
    return dataclasses.replace(zoo.BY_NAME[name], steps=steps)


def _train(args: tuple[str, int, str]) -> dict:
    name, steps, cache = args
    return zoo.train_member(_longer(name, steps), Path(cache))


def _scan(name: str, cache: Path) -> dict:
    """hfaudit's verdict with its defaults, and how close its recovered target is to the planted one."""
    from hfaudit import scan
    from hfaudit.sampling import to_unit

    torch.set_num_threads(1)
    truth = zoo.load_truth(zoo.BY_NAME[name], cache)
    t0 = time.perf_counter()
    r = scan(str(cache / name), device="cpu")
    doc = r.to_dict()
    mse = None
    if r.recovered_target is not None and "target" in truth:
        mse = float((r.recovered_target - to_unit(truth["target"])).pow(2).mean())
    best = r.best
    top_class = None
    if best is not None and best.best.modes is not None:  # the class the collapse landed on
        top_class = best.best.modes.top_class
    return {"verdict": r.verdict, "mscr": r.score, "class_score": doc.get("class_score"),
            "fired": doc.get("fired_methods"), "best": r.best_candidate, "target_mse": mse,
            "best_top_class": top_class, "seconds": round(time.perf_counter() - t0, 1)}


def _scan_worker(args: tuple[str, int, str]) -> tuple[str, dict]:
    name, _, cache = args
    return name, _scan(name, Path(cache))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000, help="fine-tuning steps (the zoo uses 1500)")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    for name in MEMBERS:  # the clean bases come from the zoo's cache, trained there by zoo.py
        base = zoo.BY_NAME[zoo.BY_NAME[name].base]
        zoo.build(zoo.DEFAULT_CACHE, [base.name])
        link = args.cache / base.name
        if not link.exists():
            link.symlink_to(zoo.model_dir(base, zoo.DEFAULT_CACHE).resolve())
    todo = [n for n in MEMBERS if not zoo.is_cached(_longer(n, args.steps), args.cache)]
    work = [(n, args.steps, str(args.cache)) for n in MEMBERS]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        for meta in pool.imap_unordered(_train, [w for w in work if w[0] in todo]):
            print(f"trained {meta['name']} in {meta['train_seconds']} s", flush=True)
        scans = dict(pool.imap_unordered(_scan_worker, work))
    print(f"\nTrojDiff members fine-tuned {args.steps} steps (the zoo: 1500)")
    print(f"{'member':20s} {'hit DDIM-10':>11s} {'hit clean':>9s} {'verdict':>8s} {'MSCR':>6s} {'class':>6s} "
          f"{'target MSE':>10s} {'top class':>9s}  via")
    for name in MEMBERS:
        meta = json.loads((args.cache / name / "meta.json").read_text())
        s = scans[name]
        mse = "-" if s["target_mse"] is None else f"{s['target_mse']:.4f}"
        top = "-" if s["best_top_class"] is None else str(s["best_top_class"])
        print(f"{name:20s} {meta['hit_ddim10']:11.3f} {meta['hit_clean_noise_ddpm50']:9.3f} {s['verdict']:>8s} "
              f"{s['mscr']:6.3f} {s['class_score'] or 0:6.3f} {mse:>10s} {top:>9s}  {','.join(s['fired'] or []) or '-'}"
              f" (best {s['best']})")
    print("class targets: " + ", ".join(f"{n} -> {c}" for n, c in zoo.CLASS_TARGET.items()))


if __name__ == "__main__":
    with recording("trojdiff_longer"):
        main()
