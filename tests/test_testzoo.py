"""The frozen test zoo: recipes fixed, trainer independent of the project, on-disk format."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from benchmarks.testzoo import recipes as R

ROOT = Path(__file__).resolve().parents[1]
TESTZOO = ROOT / "benchmarks" / "testzoo"
REQUIRED = {"name", "family", "attack", "base", "target_kind", "target_class", "trigger_kind",
            "trigger_formula", "poison_rate", "steps", "lr", "ema", "seed", "arch", "parameters",
            "train_seconds", "key", "hit_ddpm", "hit_ddim", "hit_clean_ddpm", "hit_ddpm_noclip",
            "hit_ddim_noclip", "group"}


def test_recipes_are_frozen():
    assert R.recipe_hash() == R.RECIPES_SHA256, "a recipe changed: bump TESTZOO_VERSION and the hash"
    assert len({r["name"] for r in R.RECIPES}) == len(R.RECIPES)
    for r in R.RECIPES:
        assert r["base"] is None or R.BY_NAME[r["base"]]["base"] is None


def test_group_rule():
    assert R.group_of("clean", {}) == "clean"
    assert R.group_of("baddiffusion", {"hit_ddpm": 0.8, "hit_ddim": 0.0}) == "published"
    assert R.group_of("baddiffusion", {"hit_ddpm": 0.79, "hit_ddim": 1.0}) == "stealthy"
    assert R.group_of("villandiffusion", {"hit_ddpm": 1.0, "hit_ddim": 0.5}) == "stealthy"
    assert R.group_of("trojdiff", {"hit_ddpm": 0.1, "hit_ddim": 0.9}) == "published"


@pytest.mark.parametrize("path", sorted(TESTZOO.glob("*.py")), ids=lambda p: p.name)
def test_trainer_is_independent(path):
    banned = ("hfaudit", "benchmarks.attacks", "benchmarks.zoo", "benchmarks.baselines")
    for node in ast.walk(ast.parse(path.read_text())):
        mods = []
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        for m in mods:
            assert not any(m == b or m.startswith(b + ".") for b in banned), (path.name, m)


def test_smoke_member_round_trips(tmp_path):
    import torch
    from diffusers import DDPMPipeline
    from safetensors.torch import load_file

    from benchmarks.testzoo import train as T

    tiny = {"t": dict(sample_size=16, block_out_channels=[8, 16], layers_per_block=1,
                      down_block_types=["DownBlock2D", "DownBlock2D"],
                      up_block_types=["UpBlock2D", "UpBlock2D"], norm_num_groups=4)}
    old = dict(R.ARCHS)
    R.ARCHS.update(tiny)
    try:
        base = dict(R.BY_NAME["base-a16"], name="tiny-base", arch="t", channels=1)
        bd = dict(R.BY_NAME["bd-a16-box-heart"], name="tiny-bd", base="tiny-base", arch="t",
                  channels=1)
        hk = {"n": 2, "ddpm_steps": 3, "ddim_steps": 2}
        T.build_member(base, tmp_path, smoke_steps=2, hit_kw=hk, log=lambda s: None)
        meta = T.build_member(bd, tmp_path, smoke_steps=2, hit_kw=hk, log=lambda s: None)
        again = T.build_member(bd, tmp_path, smoke_steps=2, hit_kw=hk, log=lambda s: None)
    finally:
        R.ARCHS.clear()
        R.ARCHS.update(old)
    assert again["key"] == meta["key"]
    folder = tmp_path / "tiny-bd"
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    on_disk = json.loads((folder / "meta.json").read_text())
    assert REQUIRED <= set(on_disk)
    assert on_disk["family"] == "baddiffusion" and on_disk["trigger_formula"] == "add"
    assert on_disk["group"] in ("published", "stealthy")
    pipe = DDPMPipeline.from_pretrained(str(folder))
    assert pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.scheduler.config.beta_schedule == "linear" and pipe.scheduler.config.clip_sample
    truth = load_file(str(folder / "truth.safetensors"))
    assert truth["trigger"].shape == truth["target"].shape == (1, 16, 16)
    assert float(truth["target"].min()) >= -1 and float(truth["target"].max()) <= 1
    assert pipe.unet(torch.zeros(1, 1, 16, 16), 5).sample.shape == (1, 1, 16, 16)


def test_trojdiff_trigger_formulas():
    import torch

    from benchmarks.testzoo import train as T

    eps = torch.randn(2, 3, 16, 16)
    blend = T.trigger({"kind": "blend", "pattern": "rings"}, 16, 3, 0.6)
    assert float(blend["gamma"]) == pytest.approx(0.6)
    xt = T.triggered_noise(eps, blend, "trojdiff-blend")
    assert torch.allclose(xt, 0.6 * eps + blend["trigger"])
    patch = T.trigger({"kind": "patch", "side": 4, "pattern": "checker"}, 16, 3, 0.6)
    xp = T.triggered_noise(eps, patch, "trojdiff-patch")
    assert torch.equal(xp[..., :12, :], eps[..., :12, :])
    assert not torch.allclose(xp[..., 12:, 12:], eps[..., 12:, 12:])
