"""What tells a planted backdoor from a collapse a search can push any model into? Features of every
strong candidate of a full-size scan, on the development zoo only.

    python benchmarks/evidence.py [--cache benchmarks/.zoo] [--only NAME ...] [--top 3]

For each member: a scan at the default budget plus the black-box search and the full-size ODE inversion (no
early stop, every candidate fully probed),
its candidates' triggers cached beside the member (``evidence-candidates.pt``); then, for the
``--top`` candidates by MSCR or top-class share, the features a verdict could hold a collapse
against, each measured with fresh noise:

- ``ddpm50`` / ``ddim25``: the MSCR under a sampler the searches never optimise through (a stochastic
  one with more steps, and the ODE at a finer step count);
- ``approx@r``: the share of samples within ``r`` (per-image MSE) of the densest sample, for the
  triggered samples and for the clean control, at several radii;
- ``paint``: the MSCR when the recovered target itself, scaled to the trigger's norm, is added to
  the noise instead of the trigger (does the model merely follow its input's coarse content?);
- ``half``: the MSCR at half the trigger;
- ``norm``: the trigger's norm over the noise's; ``novel``: the recovered target's nearest clean
  sample, over the clean samples' own median nearest-neighbour distance;
- ``truth``: whether the candidate's recovered target is the planted one (read from the truth file
  the scan never sees).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks import zoo  # noqa: E402
from benchmarks.record import recording  # noqa: E402

CACHE_NAME = "evidence-candidates.pt"
RADII = (0.01, 0.02, 0.03, 0.05)


def collect(recipe: zoo.Recipe, cache: Path) -> list[dict]:
    """The member's candidates from a full-size scan (cached): name, method, objective, trigger, noise_scale."""
    path = cache / recipe.name / CACHE_NAME  # beside the meta (never inside a shipped example)
    if path.is_file():
        return torch.load(path, weights_only=True)
    from hfaudit.detect.budgets import configure
    from hfaudit.detect.config import ScanConfig
    from hfaudit.detect.scan import detect
    from hfaudit.pipeline import load_model
    from hfaudit.hub import resolve

    model = load_model(resolve(str(zoo.model_dir(recipe, cache))), device="cpu")
    # the default budget's searches, plus the black-box search and the ODE inversion at full size (the
    # searches that found collapses on clean models); no early stop, every candidate fully probed
    cfg = configure("default", searches={"blackbox": True})
    cfg = replace(cfg, ode=ScanConfig().ode, stop_margin=None, confirmations=None, screen_samples=None,
                  max_evaluations=None)
    res = detect(model, cfg)
    out = []
    for c in res.candidates:
        out.append({"name": c.name, "method": c.method, "objective": c.objective,
                    "trigger": c.trigger.detach().cpu().float(),
                    "noise_scale": None if c.noise_scale is None else c.noise_scale.detach().cpu().float(),
                    "mscr": max(p.stats.mscr for p in c.probes),
                    "top_share": max((p.modes.top_share for p in c.probes if p.modes is not None), default=0.0)})
    torch.save(out, path)
    return out


def _approx(imgs: torch.Tensor, r: float) -> tuple[float, int]:
    from hfaudit.detect.scores import pairwise_mse

    close = pairwise_mse(imgs) < r
    counts = close.sum(1)
    i = int(counts.argmax())
    return float(counts[i]) / imgs.shape[0], i


def features(recipe: zoo.Recipe, cache: Path, cands: list[dict], top: int, n: int = 32) -> list[dict]:
    from hfaudit.detect.scores import collapse_stats, pairwise_mse, saturated_mask
    from hfaudit.sampling import apply_trigger, sample, to_unit
    from hfaudit.seeding import make_generator, randn

    unet, sched, shape = zoo.load_member(recipe, cache)
    truth = zoo.load_truth(recipe, cache)
    noise = randn((n, *shape), make_generator(777), "cpu")

    def run(x_T: torch.Tensor, sampler: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        raw = sample(unet, sched, x_T, sampler=sampler, steps=steps, generator=make_generator(778))
        return to_unit(raw), saturated_mask(raw)

    ctrl_raw = sample(unet, sched, randn((64, *shape), make_generator(779), "cpu"), sampler="ddpm", steps=50,
                      generator=make_generator(780))
    ctrl = to_unit(ctrl_raw)
    d = pairwise_mse(ctrl)
    d.fill_diagonal_(float("inf"))
    ctrl_nn = d.min(1).values
    med_nn = float(ctrl_nn.median())
    ctrl_approx = {r: _approx(ctrl[:n], r)[0] for r in RADII}
    mean_model = ctrl_raw.clamp(-1, 1).mean(0)
    picked = sorted(cands, key=lambda c: -max(c["mscr"], c["top_share"]))[:top]
    rows = []
    for c in picked:
        trig, ns = c["trigger"], c["noise_scale"]
        x_T = apply_trigger(noise, trig, ns)
        row = {"member": recipe.name, "family": recipe.family, "cand": c["name"], "mscr": round(c["mscr"], 3),
               "share": round(c["top_share"], 3), "norm": round(float(trig.norm() / noise[0].norm()), 3)}
        best_mscr = -1.0
        for sampler, steps in (("ddim", 10), ("ddpm", 20), ("ddim", 25), ("ddpm", 50)):
            imgs, sat = run(x_T, sampler, steps)
            st = collapse_stats(imgs, saturated=sat)
            row[f"{sampler}{steps}"] = round(st.mscr, 3)
            for r in RADII:
                row[f"{sampler}{steps}@{r}"] = round(_approx(imgs[~sat] if (~sat).any() else imgs, r)[0]
                                                     * float((~sat).float().mean()), 3)
            if (sampler, steps) in (("ddim", 10), ("ddpm", 20)) and st.mscr > best_mscr:
                best_mscr, best_s = st.mscr, (sampler, steps)
                medoid = imgs[_approx(imgs, 0.03)[1]]
        row["ctrl@"] = {str(r): round(v, 3) for r, v in ctrl_approx.items()}
        dm = (ctrl - medoid.unsqueeze(0)).pow(2).flatten(1).mean(1)
        row["novel"] = round(float(dm.min()) / med_nn, 2)
        if ns is None:
            m = medoid * 2 - 1
            paint = (m - mean_model)
            paint = paint / paint.norm() * trig.norm()
            imgs, sat = run(noise + paint, *best_s)
            row["paint"] = round(collapse_stats(imgs, saturated=sat).mscr, 3)
            row["paint@0.03"] = round(_approx(imgs, 0.03)[0], 3)
            imgs, sat = run(noise + 0.5 * trig, *best_s)
            row["half"] = round(collapse_stats(imgs, saturated=sat).mscr, 3)
        if "target" in truth:
            row["target_mse"] = round(float((medoid - to_unit(truth["target"])).pow(2).mean()), 4)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cache", type=Path, default=zoo.DEFAULT_CACHE)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = args.out or (args.cache / "evidence.jsonl")
    with recording("evidence"):
        for recipe in zoo.built_members(args.cache, args.only):
            cands = collect(recipe, args.cache)
            for row in features(recipe, args.cache, cands, args.top):
                print(json.dumps(row), flush=True)
                with out.open("a") as fh:
                    fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
