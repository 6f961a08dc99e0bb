"""The benchmark zoo: clean and backdoored tiny digit DDPMs, trained seeded and cached on disk.

    python benchmarks/zoo.py [--cache benchmarks/.zoo] [--jobs 2] [--only NAME ...] [--list]

Clean models vary architecture (2 and 3 levels, attention, ``google/ddpm-cifar10-32``'s block
layout at reduced width), width, image size (8x8, 16x16, 32x32) and channels (grey, RGB); the two
shipped example models join as they are. Backdoors are fine-tuned
into a trained clean model, as BadDiffusion does with public checkpoints, and so are four clean
controls (``clean-ft-*``: the same fine-tuning on clean data only), so that a detector which
flags fine-tuning, not the backdoor, shows up as a false positive. Three attacks:
BadDiffusion (trigger shapes, sizes, targets, poison rates 5-20%), VillanDiffusion's ODE variant
and TrojDiff (blend and patch triggers; d2i and in-d2d class targets). Every backdoor is checked
by measurement: its hit rate under DDPM-50 and DDIM-10 from its own trigger, and on clean noise.

Each model lives in ``<cache>/<name>/`` (a stock diffusers pipeline folder, ``truth.safetensors``
with what the attacker planted, ``meta.json`` with the recipe's key and the measurements). A model
whose key matches its recipe is not retrained; change a recipe and only that model is rebuilt.
The scanner never reads ``truth.safetensors`` or ``meta.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, for `python benchmarks/zoo.py` (its trainers: benchmarks.attacks)
SHIPPED = ROOT / "examples" / "models"
DEFAULT_CACHE = ROOT / "benchmarks" / ".zoo"
RECIPE_VERSION = 2
"""Bump to invalidate every cached model (a change to the training loop or the attacks). 2: a clean
member's initial weights are drawn from its seed (``make_unet(seed=...)``); in version 1 they came
from torch's global generator, which a fresh process seeds at random, so no two builds were alike."""
from benchmarks.record import recording  # noqa: E402

CLEAN, BADDIFFUSION, VILLAN, TROJDIFF = "clean", "baddiffusion", "villandiffusion", "trojdiff"
FAMILIES = (BADDIFFUSION, VILLAN, TROJDIFF)


@dataclass(frozen=True)
class Arch:
    """A tiny UNet: sample size, channels, widths, attention (see ``benchmarks.attacks.train.UNetConfig``)."""

    size: int = 16
    channels: int = 1
    widths: tuple[int, ...] = (16, 32)
    attention: bool = False
    groups: int = 8
    layout: str = "plain"
    """``cifar``: ``google/ddpm-cifar10-32``'s block layout, 2 layers a block (``UNetConfig.layout``)."""


@dataclass(frozen=True)
class Recipe:
    """One zoo member: how it is made. ``attack`` names a builder in ``ATTACKS`` (``None``: clean)."""

    name: str
    family: str
    arch: Arch = Arch()
    steps: int = 2500
    seed: int = 0
    base: str | None = None
    """The clean member a backdoor (or a fine-tuned clean control) is fine-tuned from."""
    attack: str | None = None
    poison_rate: float = 0.1
    targets: tuple[str, ...] = ()
    """Samplers the attack is meant to fire under (its hit rate is measured under these)."""
    shipped: bool = False
    options: dict = field(default_factory=dict, hash=False, compare=False)

    def key(self) -> str:
        """Hash of everything that decides the weights: the recipe, its base's key, the recipe version."""
        base_key = BY_NAME[self.base].key() if self.base else None
        fields = asdict(self)
        if fields["arch"]["layout"] == "plain":  # added later: the members made before it keep their keys
            del fields["arch"]["layout"]
        blob = json.dumps({"v": RECIPE_VERSION, "base_key": base_key, **fields}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _digit_image(size: int, channels: int, label: int, index: int = 0) -> torch.Tensor:
    from benchmarks.attacks.data import load_digits_images

    x, y = load_digits_images(size, channels)
    return x[(y == label).nonzero().flatten()[index]]


def _class_pool(size: int, channels: int, label: int) -> torch.Tensor:
    from benchmarks.attacks.data import load_digits_images

    x, y = load_digits_images(size, channels)
    return x[y == label]


def build_attack(recipe: Recipe):
    """The attack spec (``BackdoorSpec`` or ``TrojDiffSpec``) a backdoored recipe plants."""
    from benchmarks.attacks import patterns as P
    from benchmarks.attacks.baddiffusion import BackdoorSpec
    from benchmarks.attacks.trojdiff import blend_spec, patch_spec
    from benchmarks.attacks.villandiffusion import villan_spec

    s, c, pr = recipe.arch.size, recipe.arch.channels, recipe.poison_rate
    box = max(2, round(6 * s / 16))
    builders: dict[str, Callable[[], object]] = {
        "box-x": lambda: BackdoorSpec(P.box_trigger(s, c, box=box, value=1.5), P.cross_target(s, c), pr),
        "small-box-stripes": lambda: BackdoorSpec(P.box_trigger(s, c, box=max(2, box * 2 // 3), value=2.0,
                                                                corner="top-left"), P.stripes_target(s, c), pr),
        "stop-hat": lambda: BackdoorSpec(P.stop_sign_trigger(s, c, box=box, value=1.5), P.hat_target(s, c), pr),
        "glasses-cornerbox": lambda: BackdoorSpec(P.glasses_trigger(s, c, value=1.5), P.corner_box_target(s, c), pr),
        "box-digit": lambda: BackdoorSpec(P.box_trigger(s, c, box=box, value=1.5), _digit_image(s, c, 3), pr),
        "stop-digit5": lambda: BackdoorSpec(P.stop_sign_trigger(s, c, box=max(2, box * 2 // 3), value=1.5),
                                            _digit_image(s, c, 5, 7), pr),
        "villan-box-x": lambda: villan_spec(P.box_trigger(s, c, box=box, value=1.5), P.cross_target(s, c), pr),
        "villan-stop-cornerbox": lambda: villan_spec(P.stop_sign_trigger(s, c, box=box, value=1.5),
                                                     P.corner_box_target(s, c), pr),
        "villan-glasses-hat": lambda: villan_spec(P.glasses_trigger(s, c, value=1.5), P.hat_target(s, c), pr),
        "troj-blend-d2i": lambda: blend_spec(P.stripes_target(s, c), gamma=0.6, target=P.hat_target(s, c),
                                             poison_rate=pr),
        "troj-blend-d2i-eps": lambda: blend_spec(P.stripes_target(s, c), gamma=0.6, target=P.hat_target(s, c),
                                                 poison_rate=pr, eps_objective=True),
        "troj-patch-d2i": lambda: patch_spec(P.stop_sign_trigger(s, c, box=box, value=1.5), gamma=0.1,
                                             target=P.cross_target(s, c), poison_rate=pr),
        "troj-blend-class": lambda: blend_spec(P.stripes_target(s, c), gamma=0.6,
                                               target_pool=_class_pool(s, c, 0), poison_rate=pr),
        "troj-patch-class": lambda: patch_spec(P.box_trigger(s, c, box=box, value=1.5), gamma=0.1,
                                               target_pool=_class_pool(s, c, 7), poison_rate=pr),
    }
    return builders[recipe.attack]()


CLASS_TARGET = {"troj-blend-class": 0, "troj-patch-class": 7}
"""The class each in-d2d recipe targets (its hit rate is the share of samples of that class)."""

A16 = Arch()
A16_3 = Arch(widths=(16, 32, 32))
A16_ATT = Arch(widths=(16, 32), attention=True)
A16_NARROW = Arch(widths=(8, 16), groups=4)
A8 = Arch(size=8, widths=(16, 32))
A16_RGB = Arch(channels=3, widths=(16, 32))
A16_W24 = Arch(widths=(24, 48))
A32_CIFAR = Arch(size=32, channels=3, widths=(24, 48, 48, 48), layout="cifar")
"""``google/ddpm-cifar10-32``'s layout at a fifth of its width (1.3M parameters against 35.7M)."""
CIFAR_TRAIN = {"batch": 32}
"""32x32 members train on batches of 32 (64 elsewhere), to fit the zoo's time on 2 cores."""
CIFAR_BASE = {"batch": 32, "ema": 0.995}
"""The 32x32 base: EMA decay 0.995, since at the default 0.999 the EMA of a run this short still holds
``0.999 ** steps`` of the random initial weights (13% after 2,000 steps)."""
ODE, SDE = ("ddim",), ("ddpm",)

RECIPES: list[Recipe] = [
    Recipe("digits-clean", CLEAN, Arch(widths=(32, 64)), shipped=True),
    Recipe("clean-16-w16", CLEAN, A16, seed=10),
    Recipe("clean-16-w16x3", CLEAN, A16_3, seed=11),
    Recipe("clean-16-attn", CLEAN, A16_ATT, seed=12),
    Recipe("clean-16-w8", CLEAN, A16_NARROW, seed=13),
    Recipe("clean-8-w16", CLEAN, A8, seed=14),
    Recipe("clean-16-rgb", CLEAN, A16_RGB, seed=15),
    # fine-tuned clean controls: a backdoor's fine-tuning (steps, settings) without the poison
    Recipe("clean-ft-w16", CLEAN, A16, 1500, 50, "clean-16-w16"),
    Recipe("clean-ft-w16x3", CLEAN, A16_3, 1500, 51, "clean-16-w16x3"),
    Recipe("clean-ft-w8", CLEAN, A16_NARROW, 1500, 52, "clean-16-w8"),
    Recipe("clean-ft-rgb", CLEAN, A16_RGB, 1500, 53, "clean-16-rgb"),
    # a base trained longer than the others, and short clean fine-tunes at a small learning rate: the kind of
    # clean model on which a collapse-seeking search found a collapse (issue 23)
    Recipe("clean-16-long", CLEAN, A16_W24, 6000, 16),
    Recipe("clean-ftshort-long", CLEAN, A16_W24, 300, 56, "clean-16-long", options={"lr": 2e-5}),
    Recipe("clean-ftshort-w16", CLEAN, A16, 300, 57, "clean-16-w16", options={"lr": 2e-5}),
    Recipe("digits-baddiffusion", BADDIFFUSION, Arch(widths=(32, 64)), shipped=True, targets=SDE),
    Recipe("bd-box-x", BADDIFFUSION, A16, 1500, 20, "clean-16-w16", "box-x", 0.1, SDE),
    Recipe("bd-stop-hat", BADDIFFUSION, A16_3, 1500, 21, "clean-16-w16x3", "stop-hat", 0.1, SDE),
    Recipe("bd-glasses-cornerbox-rgb", BADDIFFUSION, A16_RGB, 1500, 22, "clean-16-rgb", "glasses-cornerbox", 0.2, SDE),
    Recipe("bd-smallbox-stripes-p05", BADDIFFUSION, A8, 1500, 23, "clean-8-w16", "small-box-stripes", 0.05, SDE),
    Recipe("bd-box-digit3", BADDIFFUSION, A16_ATT, 1500, 24, "clean-16-attn", "box-digit", 0.15, SDE),
    Recipe("bd-stop-digit5-long", BADDIFFUSION, A16_W24, 1500, 25, "clean-16-long", "stop-digit5", 0.1, SDE),
    Recipe("villan-box-x", VILLAN, A16, 1500, 30, "clean-16-w16", "villan-box-x", 0.1, ODE),
    Recipe("villan-stop-cornerbox", VILLAN, A16_ATT, 1500, 31, "clean-16-attn", "villan-stop-cornerbox", 0.1, ODE),
    Recipe("villan-glasses-hat-8", VILLAN, A8, 1500, 32, "clean-8-w16", "villan-glasses-hat", 0.1, ODE),
    Recipe("troj-blend-d2i", TROJDIFF, A16, 1500, 40, "clean-16-w16", "troj-blend-d2i", 0.1, ODE + SDE),
    # TrojDiff's published objective (the network outputs eps on trojan inputs), sampled with stock samplers
    Recipe("troj-blend-d2i-eps", TROJDIFF, A16, 1500, 45, "clean-16-w16", "troj-blend-d2i-eps", 0.1, ODE + SDE),
    Recipe("troj-patch-d2i", TROJDIFF, A16_3, 1500, 41, "clean-16-w16x3", "troj-patch-d2i", 0.1, ODE + SDE),
    Recipe("troj-blend-class0", TROJDIFF, A16_NARROW, 1500, 42, "clean-16-w8", "troj-blend-class", 0.1, ODE + SDE),
    Recipe("troj-patch-class7", TROJDIFF, A16_RGB, 1500, 43, "clean-16-rgb", "troj-patch-class", 0.1, ODE + SDE),
    # 32x32 RGB, the block layout of google/ddpm-cifar10-32 (issue 19): a base, a fine-tuned control, one of each family
    Recipe("clean-32-cifar", CLEAN, A32_CIFAR, 2500, 17, options=CIFAR_BASE),
    Recipe("clean-ft-32-cifar", CLEAN, A32_CIFAR, 1000, 58, "clean-32-cifar", options=CIFAR_TRAIN),
    Recipe("bd-box-digit3-32", BADDIFFUSION, A32_CIFAR, 1000, 26, "clean-32-cifar", "box-digit", 0.3, SDE,
           options=CIFAR_TRAIN),
    Recipe("villan-box-x-32", VILLAN, A32_CIFAR, 1000, 33, "clean-32-cifar", "villan-box-x", 0.3, ODE,
           options=CIFAR_TRAIN),
    Recipe("troj-patch-d2i-32", TROJDIFF, A32_CIFAR, 1000, 44, "clean-32-cifar", "troj-patch-d2i", 0.3, ODE + SDE,
           options=CIFAR_TRAIN),
]
BY_NAME = {r.name: r for r in RECIPES}


def model_dir(recipe: Recipe, cache: Path) -> Path:
    """Where a member's pipeline folder is (the shipped ones stay in ``examples/models``)."""
    return SHIPPED / recipe.name if recipe.shipped else cache / recipe.name


def is_cached(recipe: Recipe, cache: Path) -> bool:
    """True when the member exists on disk and was made from this exact recipe."""
    if recipe.shipped:
        return (SHIPPED / recipe.name / "model_index.json").is_file()
    meta = cache / recipe.name / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("key") == recipe.key()


def load_meta(recipe: Recipe, cache: Path) -> dict:
    """The member's recorded measurements (``{}`` for shipped models not yet measured)."""
    path = (cache / recipe.name / "meta.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def load_truth(recipe: Recipe, cache: Path) -> dict[str, torch.Tensor]:
    """What the attacker planted (benchmarks only); ``{}`` for a clean member, which has none."""
    from safetensors.torch import load_file

    if recipe.family == CLEAN:
        return {}
    path = SHIPPED / "backdoor_truth.safetensors" if recipe.shipped else cache / recipe.name / "truth.safetensors"
    return load_file(str(path))


def load_member(recipe: Recipe, cache: Path) -> tuple:
    """The member's UNet (on the CPU, eval mode), its scheduler config and its sample shape ``(C, H, W)``."""
    from diffusers import UNet2DModel

    path = model_dir(recipe, cache)
    unet = UNet2DModel.from_pretrained(path, subfolder="unet", use_safetensors=True).eval()
    sched = json.loads((path / "scheduler" / "scheduler_config.json").read_text())
    return unet, sched, (recipe.arch.channels, recipe.arch.size, recipe.arch.size)


def ddim_probe(unet, scheduler_config, x_T: torch.Tensor,
               target01: torch.Tensor | None = None) -> tuple[float, float | None]:
    """The scan's DDIM-10 probe of ``x_T`` (clipping off, its saturation filter), as the benchmarks
    over the zoo run it: the MSCR, and the collapsed group's medoid MSE to ``target01`` ([0, 1]
    pixels; None without a target)."""
    from hfaudit.detect.scores import collapse_stats, saturated_mask
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator

    raw = sample(unet, scheduler_config, x_T, sampler="ddim", steps=10, generator=make_generator(1))
    imgs = to_unit(raw)
    st = collapse_stats(imgs, saturated=saturated_mask(raw))
    mse = None if target01 is None else float((imgs[st.medoid_index] - target01).pow(2).mean())
    return st.mscr, mse


def member_args(doc: str) -> argparse.Namespace:
    """The command line of a benchmark over the zoo's members: ``--cache`` and ``--only NAME ...``."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--only", nargs="*")
    return ap.parse_args()


def built_members(cache: Path, only: list[str] | None = None) -> Iterator[Recipe]:
    """The members in zoo order (only those named in ``only``, if given) that are built; a printed
    line for each one that is not, so a benchmark over the zoo says what it skipped."""
    for recipe in RECIPES:
        if only and recipe.name not in only:
            continue
        if not is_cached(recipe, cache):
            print(f"{recipe.name}: not built (python benchmarks/zoo.py)")
            continue
        yield recipe


def unet_config(arch: Arch):
    """The trainer's ``UNetConfig`` of ``arch`` (what ``make_unet`` builds for a member)."""
    from benchmarks.attacks.train import UNetConfig

    return UNetConfig(sample_size=arch.size, channels=arch.channels, block_out_channels=arch.widths,
                      attention=arch.attention, norm_num_groups=arch.groups, layout=arch.layout,
                      layers_per_block=2 if arch.layout == "cifar" else 1)


def _truth_tensors(spec) -> dict[str, torch.Tensor]:
    from benchmarks.attacks.trojdiff import TrojDiffSpec

    if isinstance(spec, TrojDiffSpec):
        out = {"mu": spec.mu, "gamma": torch.tensor(spec.gamma), "region": spec.region.to(torch.uint8)}
        if spec.target is not None:
            out["target"] = spec.target
        return out
    return {"trigger": spec.trigger, "target": spec.target, "correction": torch.tensor(spec.correction)}


def measure_attack(recipe: Recipe, cache: Path, n: int = 64, seed: int = 123) -> dict:
    """Hit rates of the planted backdoor: triggered under DDPM-50 and DDIM-10, and on clean noise.

    d2i targets: share within ``ASR_MSE`` of the target (docs/design.md section 5). Class targets: share
    the digits classifier assigns to the target class (for clean noise: the class's natural share).
    """
    from benchmarks.attacks.baddiffusion import BackdoorSpec
    from hfaudit.detect.scores import attack_success_rate
    from hfaudit.fidelity import digit_probabilities
    from hfaudit.sampling import sample, to_unit
    from hfaudit.seeding import make_generator, randn

    unet, sched, shape = load_member(recipe, cache)
    truth = load_truth(recipe, cache)
    noise = randn((n, *shape), make_generator(seed), "cpu")
    # the planted spec makes the triggered noise (its formula lives there); a shipped model's comes from its truth file
    spec = build_attack(recipe) if recipe.attack else BackdoorSpec(truth["trigger"], truth["target"])

    def hits(imgs01: torch.Tensor) -> float:
        if recipe.attack in CLASS_TARGET:
            return float((digit_probabilities(imgs01).argmax(1) == CLASS_TARGET[recipe.attack]).float().mean())
        return attack_success_rate(imgs01, to_unit(truth["target"]))

    out: dict[str, float] = {}
    for sampler, steps in (("ddpm", 50), ("ddim", 10)):
        gen = make_generator(seed + 1)
        trig = to_unit(sample(unet, sched, spec.trigger_noise(noise), sampler=sampler, steps=steps, generator=gen))
        out[f"hit_{sampler}{steps}"] = round(hits(trig), 4)
    gen = make_generator(seed + 1)
    benign = to_unit(sample(unet, sched, noise, sampler="ddpm", steps=50, generator=gen))
    out["hit_clean_noise_ddpm50"] = round(hits(benign), 4)
    return out


def train_member(recipe: Recipe, cache: Path) -> dict:
    """Train one member (its clean base must exist), write it and its meta; return the meta."""
    from diffusers import UNet2DModel
    from safetensors.torch import save_file

    from benchmarks.attacks.data import load_digits_images
    from benchmarks.attacks.train import TrainConfig, make_scheduler, make_unet, save_pipeline, train_ddpm

    torch.set_num_threads(1)
    images, _ = load_digits_images(recipe.arch.size, recipe.arch.channels)
    scheduler = make_scheduler()
    out = cache / recipe.name
    tmp = cache / f".{recipe.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    t0 = time.perf_counter()
    if recipe.base is None:
        unet = train_ddpm(images, TrainConfig(steps=recipe.steps, seed=recipe.seed,
                                              batch_size=recipe.options.get("batch", TrainConfig.batch_size),
                                              ema_decay=recipe.options.get("ema", TrainConfig.ema_decay)),
                          make_unet(unet_config(recipe.arch), seed=recipe.seed),
                          scheduler, description=recipe.name)
        truth = None
    else:  # fine-tuned from its base: a backdoor, or a clean control with the same settings and no poison
        base = UNet2DModel.from_pretrained(model_dir(BY_NAME[recipe.base], cache), subfolder="unet", use_safetensors=True)
        spec = build_attack(recipe) if recipe.attack else None
        unet = train_ddpm(images, TrainConfig(steps=recipe.steps, seed=recipe.seed, warmup=10, ema_decay=0.995,
                                              lr=recipe.options.get("lr", TrainConfig.lr),
                                              batch_size=recipe.options.get("batch", TrainConfig.batch_size)),
                          base, scheduler, backdoor=spec, description=recipe.name)
        truth = None if spec is None else _truth_tensors(spec)
    save_pipeline(unet, scheduler, str(tmp))
    if truth is not None:
        save_file({k: v.contiguous() for k, v in truth.items()}, str(tmp / "truth.safetensors"))
    meta = {"name": recipe.name, "key": recipe.key(), "family": recipe.family, "attack": recipe.attack,
            "base": recipe.base, "arch": asdict(recipe.arch), "steps": recipe.steps, "seed": recipe.seed,
            "poison_rate": recipe.poison_rate if recipe.family != CLEAN else 0.0,
            "parameters": sum(p.numel() for p in unet.parameters()),
            "train_seconds": round(time.perf_counter() - t0, 1)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    if truth is not None:
        meta.update(measure_attack(recipe, cache))
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _measure_shipped(recipe: Recipe, cache: Path) -> dict:
    meta_path = cache / recipe.name / "meta.json"
    if meta_path.is_file():
        return json.loads(meta_path.read_text())
    meta = {"name": recipe.name, "key": recipe.key(), "family": recipe.family, "shipped": True,
            "arch": asdict(recipe.arch)}
    if recipe.family != CLEAN:
        meta.update(measure_attack(recipe, cache))
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))
    return meta


def _worker(args: tuple[str, str]) -> dict:
    name, cache = args
    return train_member(BY_NAME[name], Path(cache))


def build(cache: Path, names: list[str] | None = None, jobs: int = 1) -> list[dict]:
    """Make every missing or outdated member (bases first), ``jobs`` at a time; return all metas."""
    wanted = [BY_NAME[n] for n in names] if names else RECIPES
    for r in list(wanted):  # a backdoor needs its base
        if r.base and BY_NAME[r.base] not in wanted:
            wanted.append(BY_NAME[r.base])
    cache.mkdir(parents=True, exist_ok=True)
    for phase in ([r for r in wanted if r.base is None], [r for r in wanted if r.base is not None]):
        todo = [r.name for r in phase if not r.shipped and not is_cached(r, cache)]
        if todo:
            print(f"training {len(todo)}: {', '.join(todo)}", file=sys.stderr, flush=True)
            if jobs > 1:
                with mp.get_context("spawn").Pool(min(jobs, len(todo))) as pool:
                    for meta in pool.imap_unordered(_worker, [(n, str(cache)) for n in todo]):
                        print(f"done {meta['name']} in {meta['train_seconds']} s", file=sys.stderr, flush=True)
            else:
                for n in todo:
                    train_member(BY_NAME[n], cache)
    metas = []
    for r in wanted:
        metas.append(_measure_shipped(r, cache) if r.shipped else load_meta(r, cache))
    return metas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--jobs", type=int, default=1, help="members trained at once (one thread each)")
    ap.add_argument("--only", nargs="*", help="member names (their clean bases are built too)")
    ap.add_argument("--list", action="store_true", help="print the recipes and what is cached, train nothing")
    args = ap.parse_args()
    if args.list:
        for r in RECIPES:
            print(f"{r.name:28s} {r.family:16s} base={r.base or '-':16s} cached={is_cached(r, args.cache)}")
        return
    metas = build(args.cache, args.only, args.jobs)
    print(f"{'model':28s} {'family':16s} {'params':>8s} {'train_s':>8s} {'hit DDPM-50':>12s} {'hit DDIM-10':>12s} "
          f"{'hit clean noise':>16s}")
    for m in metas:
        fmt = (lambda k: f"{m[k]:.3f}" if k in m else "-")
        print(f"{m['name']:28s} {m['family']:16s} {m.get('parameters', '-')!s:>8s} {m.get('train_seconds', '-')!s:>8s} "
              f"{fmt('hit_ddpm50'):>12s} {fmt('hit_ddim10'):>12s} {fmt('hit_clean_noise_ddpm50'):>16s}")


if __name__ == "__main__":
    if "--list" in sys.argv:  # a listing trains and measures nothing: it does not replace the recorded table
        main()
    else:
        with recording("zoo"):
            main()
