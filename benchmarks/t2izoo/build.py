"""Build the text-to-image / latent backdoor zoo and write ``benchmarks/results/t2izoo.md``.

    python -m benchmarks.t2izoo.build --jobs 2 [--only NAME ...]

Every member is a stock diffusers pipeline folder (``StableDiffusionPipeline`` or ``LDMPipeline``,
safetensors) cached under ``benchmarks/.t2izoo/<name>/pipeline`` with ``meta.json`` (recipe hash,
training seconds, parameter counts, the truth of its backdoor and its measured rates). A member is
rebuilt only when its recipe (or a parent's) changes. Training is seeded and single-threaded.
The shipped examples (``examples/models/t2i-clean`` from ``t2i-clean-a``, ``t2i-rickroll-homoglyph``
from ``rick-homoglyph``, ``ldm-clean``, ``ldm-villandiffusion``) are copied from the cache with their
truth files when their member is (re)built.

Members: the shared autoencoder (``vae``); clean text-to-image models (``t2i-clean-a``, ``-b``, ``-ft``,
``-te-ft``, and ``t2i-clean-c`` trained with the auxiliary token-identity objective on its text encoder,
with its caption fine-tuned control ``t2i-clean-c-ft``); Rickrolling text-encoder backdoors
(``rick-homoglyph``, ``rick-rare``, ``rick-common``); EvilEdit closed-form cross-attention edits
(``evil-common``, ``evil-rare``); caption-trigger UNet fine-tunes of ``t2i-clean-c`` (VillanDiffusion
caption trigger / BadT2I: ``cap-image-rare``, ``cap-image-common``, ``cap-patch-homoglyph``); an
unconditional latent DDPM (``ldm-clean``) and its VillanDiffusion latent-space backdoor
(``ldm-villandiffusion``).
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
SHIPPED = {"t2i-clean-a": "t2i-clean", "rick-homoglyph": "t2i-rickroll-homoglyph", "ldm-clean": "ldm-clean",
           "ldm-villandiffusion": "ldm-villandiffusion"}


def recipe_hash(name: str) -> str:
    r = RECIPES[name]
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
    meta = members.build_member(name, RECIPES[name], member_dir(name))
    meta["hash"] = recipe_hash(name)
    meta["recipe"] = RECIPES[name]
    meta.setdefault("train_seconds", round(time.time() - t0, 1))
    meta["total_seconds"] = round(time.time() - t0, 1)
    (member_dir(name) / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return name


def build(names: list[str], jobs: int = 2) -> None:
    todo = [n for n in names if not cached(n)]
    done = {n for n in RECIPES if cached(n)}
    for n in names:
        if n in done and n in SHIPPED and not (EXAMPLES / SHIPPED[n]).exists():
            ship(n)
    running: dict = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        while todo or running:
            for n in list(todo):
                if len(running) >= jobs:
                    break
                parent = RECIPES[n].get("parent")
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
    write_results()


def write_results() -> None:
    from benchmarks.t2izoo.members import results_table
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    metas = {n: load_meta(n) for n in RECIPES if (member_dir(n) / "meta.json").exists()}
    RESULTS.write_text(results_table(metas))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, help="members to build (their parents too)")
    ap.add_argument("--results-only", action="store_true")
    args = ap.parse_args()
    if args.results_only:
        write_results()
        return
    build(args.only or list(RECIPES), jobs=args.jobs)


if __name__ == "__main__":
    main()
