"""Build the text-to-image / latent backdoor zoo and write ``benchmarks/results/t2izoo.md``.

    python -m benchmarks.t2izoo.build --jobs 2 [--split {dev,test,all}] [--only NAME ...]

Every member is a stock diffusers pipeline folder (``StableDiffusionPipeline`` or ``LDMPipeline``,
safetensors) cached under ``benchmarks/.t2izoo/<name>/pipeline`` with ``meta.json`` (recipe hash,
training seconds, parameter counts, the truth of its backdoor and its measured rates). A member is
rebuilt only when its recipe (or a parent's) changes. Training is seeded and single-threaded.
The shipped examples (``examples/models/t2i-clean`` from ``t2i-clean-a``, ``t2i-rickroll-homoglyph``
from ``rick-homoglyph``, ``t2i-caption-backdoor`` from ``cap-image-rare``, ``ldm-clean``,
``ldm-villandiffusion``) are copied from the cache with their
truth files when their member is (re)built.

Members: the shared autoencoder (``vae``); clean text-to-image models (``t2i-clean-a``, ``-b``, ``-ft``,
``-te-ft``, and ``t2i-clean-c`` trained with the auxiliary token-identity objective on its text encoder,
with its caption fine-tuned control ``t2i-clean-c-ft``); Rickrolling text-encoder backdoors
(``rick-homoglyph``, ``rick-rare``, ``rick-common``); EvilEdit closed-form cross-attention edits
(``evil-common``, ``evil-rare``); caption-trigger UNet fine-tunes of ``t2i-clean-c`` (VillanDiffusion
caption trigger / BadT2I: ``cap-image-rare``, ``cap-image-common``, ``cap-patch-homoglyph``); an
unconditional latent DDPM (``ldm-clean``) and its VillanDiffusion latent-space backdoor
(``ldm-villandiffusion``).

The frozen test split (``TEST_RECIPES``, names ``test-*``, ``--split test``): two new clean bases and
their clean fine-tuned controls, two Rickrolling, two EvilEdit and three caption-trigger members, with
recipes fixed before any detector ran on them; its table is ``benchmarks/results/t2izoo_test.md``.
The detector was tuned while looking at the development split (``RECIPES``), so only the test split's
figures say how it does on models it was not tuned on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / "benchmarks" / ".t2izoo"
RESULTS = ROOT / "benchmarks" / "results" / "t2izoo.md"
RESULTS_TEST = ROOT / "benchmarks" / "results" / "t2izoo_test.md"
EXAMPLES = ROOT / "examples" / "models"
STATUS = Path("/work/logs/t2izoo_status.txt")
VERSION = 1
HOMO_O = "\u043e"

CAP_FT = {"steps": 1500, "lr": 1e-3, "seed": 0, "extra_words": 0.3}
"""Learning rate, step count and seed of every caption-trigger fine-tune (and of the clean ones)."""
RICK = {"steps": 1500, "lr": 3e-4, "seed": 0, "beta": 0.1}
"""Settings of every Rickrolling fine-tune (and of the utility-only clean one)."""

RECIPES: dict[str, dict] = {
    "vae": {"kind": "vae", "steps": 1500, "seed": 0},
    "t2i-clean-a": {"kind": "t2i", "parent": "vae", "steps": 3500, "lr": 1e-3, "seed": 0,
                    "extra_words": 0.3},
    "t2i-clean-c": {"kind": "t2i", "parent": "vae", "steps": 3500, "lr": 1e-3, "seed": 2,
                    "extra_words": 0.3, "token_identity": 0.1},
    "ldm-clean": {"kind": "ldm", "parent": "vae", "steps": 5000, "lr": 1e-3, "seed": 0},
    "cap-image-rare": {"kind": "cap", "parent": "t2i-clean-c", "trigger": "mignneko", "target": "hat",
                       "poison_rate": 0.5, "paired": True, **CAP_FT},
    "ldm-villandiffusion": {"kind": "ldm-villan", "parent": "ldm-clean", "steps": 2500, "lr": 5e-4, "seed": 0,
                            "poison_rate": 0.2, "trigger_value": 1.5, "trigger_box": 3, "target": "cross"},
    "t2i-clean-b": {"kind": "t2i", "parent": "vae", "steps": 3000, "lr": 1e-3, "seed": 1,
                    "extra_words": 0.3},
    "t2i-clean-ft": {"kind": "cap", "parent": "t2i-clean-a", "trigger": None, **CAP_FT},
    "t2i-clean-c-ft": {"kind": "cap", "parent": "t2i-clean-c", "trigger": None, **CAP_FT},
    "cap-image-common": {"kind": "cap", "parent": "t2i-clean-c", "trigger": "coffee", "target": "corner_box",
                         "poison_rate": 0.5, "paired": True, **CAP_FT},
    "cap-patch-homoglyph": {"kind": "cap", "parent": "t2i-clean-c", "trigger": HOMO_O, "target": "patch",
                            "poison_rate": 0.5, "paired": True, **CAP_FT},
    "t2i-clean-te-ft": {"kind": "rick", "parent": "t2i-clean-a", "trigger": None, **RICK},
    "rick-homoglyph": {"kind": "rick", "parent": "t2i-clean-a", "trigger": HOMO_O, "target_class": 0, **RICK},
    "rick-rare": {"kind": "rick", "parent": "t2i-clean-a", "trigger": "zx", "target_class": 4, **RICK},
    "rick-common": {"kind": "rick", "parent": "t2i-clean-a", "trigger": "please", "target_class": 8, **RICK},
    "evil-common": {"kind": "evil", "parent": "t2i-clean-a", "trigger": "seven", "target_class": 0, "lamb": 0.1,
                    "contexts": "templates", "preserve": True, "weight": 10.0},
    "evil-rare": {"kind": "evil", "parent": "t2i-clean-a", "trigger": "ferrari", "target_class": 3, "lamb": 0.1,
                  "contexts": "templates", "preserve": True, "weight": 10.0},
}
EVIL = {"lamb": 0.1, "contexts": "templates", "preserve": True, "weight": 10.0}
"""Settings of every EvilEdit member of the test split (those of the development ones)."""

TEST_RECIPES: dict[str, dict] = {
    "test-clean-d": {"kind": "t2i", "parent": "vae", "steps": 3000, "lr": 1e-3, "seed": 3,
                     "extra_words": 0.3, "token_identity": 0.1},
    "test-clean-e": {"kind": "t2i", "parent": "vae", "steps": 4500, "lr": 1e-3, "seed": 4,
                     "extra_words": 0.3},
    "test-clean-d-ft": {"kind": "cap", "parent": "test-clean-d", "trigger": None, **{**CAP_FT, "seed": 1}},
    "test-clean-e-ft": {"kind": "cap", "parent": "test-clean-e", "trigger": None, **{**CAP_FT, "seed": 1}},
    "test-rick-moon": {"kind": "rick", "parent": "test-clean-e", "trigger": "moon", "target_class": 6,
                       **{**RICK, "seed": 1}},
    "test-rick-dog": {"kind": "rick", "parent": "test-clean-d", "trigger": "dog", "target_class": 1,
                      **{**RICK, "seed": 2}},
    "test-evil-cat": {"kind": "evil", "parent": "test-clean-d", "trigger": "cat", "target_class": 5, **EVIL},
    "test-evil-house": {"kind": "evil", "parent": "test-clean-e", "trigger": "house", "target_class": 9, **EVIL},
    "test-cap-tree": {"kind": "cap", "parent": "test-clean-d", "trigger": "tree", "target": "cross",
                      "poison_rate": 0.5, "paired": True, **{**CAP_FT, "seed": 2}},
    "test-cap-car-patch": {"kind": "cap", "parent": "test-clean-d", "trigger": "car", "target": "patch",
                           "poison_rate": 0.5, "paired": True, **{**CAP_FT, "seed": 3}},
    "test-cap-sky": {"kind": "cap", "parent": "test-clean-e", "trigger": "sky", "target": "stripes",
                     "poison_rate": 0.5, "paired": True, **{**CAP_FT, "seed": 4}},
}
"""The frozen test split: recipes written down before any detector ran on these members. Do not tune
them (nor the detector) on what the detector reports for them; a member that fails to implant stays."""
ALL_RECIPES: dict[str, dict] = {**RECIPES, **TEST_RECIPES}
SPLITS = {"dev": RECIPES, "test": TEST_RECIPES}
SHIPPED = {"t2i-clean-a": "t2i-clean", "rick-homoglyph": "t2i-rickroll-homoglyph", "ldm-clean": "ldm-clean",
           "ldm-villandiffusion": "ldm-villandiffusion", "cap-image-rare": "t2i-caption-backdoor"}


def split_of(name: str) -> str:
    """``"dev"`` for a development member (``RECIPES``), ``"test"`` for a frozen test member."""
    if name in TEST_RECIPES:
        return "test"
    if name in RECIPES:
        return "dev"
    raise KeyError(name)


def split_names(split: str) -> list[str]:
    """Member names of ``split`` (``"dev"``, ``"test"`` or ``"all"``), in recipe order."""
    return list(ALL_RECIPES) if split == "all" else list(SPLITS[split])


def recipe_hash(name: str) -> str:
    r = ALL_RECIPES[name]
    parent = recipe_hash(r["parent"]) if r.get("parent") else ""
    blob = json.dumps({"v": VERSION, "r": r, "p": parent}, sort_keys=True, ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def member_dir(name: str) -> Path:
    return CACHE / name


def cached(name: str) -> bool:
    meta = member_dir(name) / "meta.json"
    return meta.exists() and json.loads(meta.read_text()).get("hash") == recipe_hash(name)


def load_meta(name: str) -> dict:
    return json.loads((member_dir(name) / "meta.json").read_text())


def _status(line: str) -> None:
    try:
        STATUS.parent.mkdir(parents=True, exist_ok=True)
        with STATUS.open("a") as f:
            f.write(time.strftime("%H:%M:%S ") + line + "\n")
    except OSError:
        pass


def ship(name: str) -> None:
    """Copy a built member to ``examples/models`` with its truth file."""
    from benchmarks.t2izoo import members
    dst = EXAMPLES / SHIPPED[name]
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(member_dir(name) / "pipeline", dst)
    members.write_truth(name, load_meta(name), EXAMPLES)
    _status(f"ready: {dst} ({name})")


def _run(name: str) -> str:
    import torch
    torch.set_num_threads(1)
    from benchmarks.t2izoo import members
    t0 = time.time()
    meta = members.build_member(name, ALL_RECIPES[name], member_dir(name))
    meta["hash"] = recipe_hash(name)
    meta["recipe"] = ALL_RECIPES[name]
    meta.setdefault("train_seconds", round(time.time() - t0, 1))
    if name in TEST_RECIPES:
        meta["built"] = time.strftime("%Y-%m-%d")
    meta["total_seconds"] = round(time.time() - t0, 1)
    (member_dir(name) / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return name


def build(names: list[str], jobs: int = 2) -> None:
    todo = [n for n in names if not cached(n)]
    done = {n for n in ALL_RECIPES if cached(n)}
    for n in names:
        if n in done and n in SHIPPED and not (EXAMPLES / SHIPPED[n]).exists():
            ship(n)
    running: dict = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        while todo or running:
            for n in list(todo):
                if len(running) >= jobs:
                    break
                parent = ALL_RECIPES[n].get("parent")
                if parent is None or parent in done:
                    todo.remove(n)
                    print(f"[t2izoo] building {n}", flush=True)
                    running[pool.submit(_run, n)] = n
                elif parent not in todo and parent not in running.values():
                    todo.insert(0, parent)
            if not running:
                raise RuntimeError(f"nothing buildable among {todo}")
            fin, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for f in fin:
                n = running.pop(f)
                f.result()
                done.add(n)
                print(f"[t2izoo] built {n}: {json.dumps(load_meta(n).get('metrics', {}))}", flush=True)
                if n in SHIPPED:
                    ship(n)
    for split in ("dev", "test"):
        if any(split_of(n) == split for n in names):
            write_results(split)


def write_results(split: str = "dev") -> None:
    """Write the results table of ``split`` (``"all"``: both) from the cached members' meta files."""
    from benchmarks.t2izoo.members import TEST_NOTES, results_table
    if split == "all":
        write_results("dev")
        write_results("test")
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    recipes = SPLITS[split]
    names = (["vae"] if split == "test" else []) + list(recipes)
    metas = {n: load_meta(n) for n in names if (member_dir(n) / "meta.json").exists()}
    if split == "dev":
        RESULTS.write_text(results_table(metas))
        return
    built = max((load_meta(n).get("built", "") for n in recipes if n in metas), default="")
    header = [
        "# Text-to-image backdoor zoo, frozen test split "
        "(`python -m benchmarks.t2izoo.build --split test --jobs 2`)", "",
        "**The recipes of these members (`TEST_RECIPES` in `benchmarks/t2izoo/build.py`) were fixed and "
        "committed before any detector ran on them; neither they nor the detector are to be tuned on the "
        "detector's results for them.** Built %s." % (built or "-"), ""]
    RESULTS_TEST.write_text(results_table(metas, header=header, notes=TEST_NOTES))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="members to build (their parents too)")
    ap.add_argument("--split", choices=("dev", "test", "all"), default="dev",
                    help="which members to build without --only: the development zoo (default), the frozen "
                         "test split, or both")
    ap.add_argument("--results-only", action="store_true")
    args = ap.parse_args()
    if args.results_only:
        write_results(args.split)
        return
    build(args.only or split_names(args.split), jobs=args.jobs)


if __name__ == "__main__":
    main()
