"""Build the frozen test zoo.

    python -m benchmarks.testzoo.build [--cache benchmarks/.testzoo] [--jobs N] [--only NAME...] [--list]

Members whose key matches are not rebuilt. ``--smoke-steps N`` caps training
steps and hit samples for a quick check of the machinery only; smoke members
carry a different key and ``"smoke": true`` in meta.json.
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from benchmarks.testzoo import recipes as R


def _one(args: tuple) -> dict:
    name, cache, smoke = args
    from benchmarks.testzoo import train as T
    hit_kw = None if smoke is None else {"n": 4, "ddpm_steps": 10, "ddim_steps": 5}
    return T.build_member(R.resolved(name), Path(cache), smoke_steps=smoke, hit_kw=hit_kw,
                          log=lambda s: print(time.strftime("%H:%M:%S"), s, flush=True))


def _order(names: list[str]) -> list[list[str]]:
    """Waves: bases first, then their fine-tunes (bases of selected members are added)."""
    want = set(names)
    for n in list(want):
        b = R.BY_NAME[n]["base"]
        if b is not None:
            want.add(b)
    bases = [r["name"] for r in R.RECIPES if r["name"] in want and r["base"] is None]
    rest = [r["name"] for r in R.RECIPES if r["name"] in want and r["base"] is not None]
    # 32x32 work is longest; start it first within each wave
    key = lambda n: -R.ARCHS[R.resolved(n)["arch"]]["sample_size"]
    return [sorted(bases, key=key), sorted(rest, key=key)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.testzoo.build", description=__doc__.split("\n")[1])
    p.add_argument("--cache", default="benchmarks/.testzoo")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--only", nargs="+", default=None, metavar="NAME")
    p.add_argument("--list", action="store_true")
    p.add_argument("--smoke-steps", type=int, default=None, help="machinery check only")
    a = p.parse_args(argv)
    if R.recipe_hash() != R.RECIPES_SHA256:
        print("recipes changed without updating RECIPES_SHA256", file=sys.stderr)
        return 2
    if a.list:
        for r in R.RECIPES:
            rr = R.resolved(r["name"])
            print(f"{r['name']:28s} {r['family']:16s} base={r['base'] or '-':12s} arch={rr['arch']} "
                  f"ch={rr['channels']} steps={r['steps']} poison={r['poison_rate']}")
        return 0
    names = a.only or [r["name"] for r in R.RECIPES]
    bad = [n for n in names if n not in R.BY_NAME]
    if bad:
        print(f"unknown member(s): {' '.join(bad)}", file=sys.stderr)
        return 2
    Path(a.cache).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    for wave in _order(names):
        jobs = [(n, a.cache, a.smoke_steps) for n in wave]
        if a.jobs <= 1:
            for j in jobs:
                _one(j)
        else:
            with ProcessPoolExecutor(a.jobs) as ex:
                list(ex.map(_one, jobs))
    print(f"done in {time.time() - t0:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
