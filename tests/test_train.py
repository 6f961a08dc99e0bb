"""The training helpers behind the shipped examples and the benchmark zoo: repeatable from a seed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.attacks.train import UNetConfig, make_unet


def test_a_seeded_unet_does_not_depend_on_what_the_process_drew_before() -> None:
    """With a seed, the initial weights ignore the process's random state and leave it as it was;
    without one they come from the global generator (which a fresh process seeds at random)."""
    cfg = UNetConfig(sample_size=8, block_out_channels=(8, 16), norm_num_groups=4)
    torch.manual_seed(1)
    first = make_unet(cfg, seed=5).state_dict()
    torch.manual_seed(2)
    torch.rand(100)  # another history
    state = torch.random.get_rng_state()
    again = make_unet(cfg, seed=5).state_dict()
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's random state is left alone
    assert all(torch.equal(first[k], again[k]) for k in first)
    other = make_unet(cfg, seed=6).state_dict()
    assert not all(torch.equal(first[k], other[k]) for k in first)
    unseeded = make_unet(cfg).state_dict()  # global generator: moves on, so a second build differs
    assert not all(torch.equal(unseeded[k], make_unet(cfg).state_dict()[k]) for k in unseeded)


_TRAIN_ONE = """
import dataclasses, hashlib, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from benchmarks import zoo
recipe = dataclasses.replace(zoo.BY_NAME["clean-8-w16"], steps=3)
zoo.train_member(recipe, Path(sys.argv[2]))
print(hashlib.sha256((Path(sys.argv[2]) / recipe.name / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest())
"""


def test_a_zoo_member_trained_in_two_fresh_processes_has_the_same_weights(tmp_path: Path) -> None:
    """What made the zoo unrepeatable: every process starts torch's global generator at a random seed,
    and a clean member's weights were drawn from it. Trained in two processes now, bit for bit alike."""
    root = Path(__file__).resolve().parents[1]
    digests = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _TRAIN_ONE, str(root), str(tmp_path / run)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(done.stdout.split()[-1])
    assert digests[0] == digests[1]


def test_a_fine_tuned_clean_control_is_trained_from_its_base_without_poison(tmp_path: Path) -> None:
    """The zoo's ``clean-ft-*`` members: a backdoor's fine-tuning without the attack. They start from
    their base's weights (not a fresh init), move away from them, and carry no planted truth."""
    import dataclasses

    from diffusers import UNet2DModel

    from benchmarks import zoo

    base = dataclasses.replace(zoo.BY_NAME["clean-8-w16"], steps=3)
    zoo.train_member(base, tmp_path)
    control = zoo.Recipe("ctl", zoo.CLEAN, zoo.A8, steps=2, seed=99, base="clean-8-w16")
    meta = zoo.train_member(control, tmp_path)
    assert meta["poison_rate"] == 0.0 and meta["base"] == "clean-8-w16"
    assert not (tmp_path / "ctl" / "truth.safetensors").exists() and zoo.load_truth(control, tmp_path) == {}
    load = lambda name: UNet2DModel.from_pretrained(tmp_path / name, subfolder="unet").state_dict()  # noqa: E731
    before, after = load("clean-8-w16"), load("ctl")
    fresh = make_unet(zoo.unet_config(zoo.A8), seed=99).state_dict()
    moved = [float((after[k] - before[k]).abs().max()) for k in before]
    assert max(moved) > 0  # fine-tuned, not a copy
    # two steps at the fine-tuning's warm-up learning rate stay close to the base, far from a fresh init
    dist = lambda a, b: sum(float((a[k] - b[k]).pow(2).sum()) for k in a)  # noqa: E731
    assert dist(after, before) < 0.01 * dist(after, fresh)


def test_the_cifar_layout_is_google_ddpm_cifar10_32s_blocks() -> None:
    """``layout='cifar'`` gives ``google/ddpm-cifar10-32``'s block types (attention at the second of four
    levels, 16x16 on a 32x32 input) and 2 layers a block in the zoo; other level counts are refused."""
    from benchmarks import zoo

    unet = make_unet(zoo.unet_config(zoo.A32_CIFAR), seed=0)
    assert tuple(unet.config.down_block_types) == ("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D")
    assert tuple(unet.config.up_block_types) == ("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert unet.config.layers_per_block == 2 and unet.config.sample_size == 32 and unet.config.in_channels == 3
    assert unet(torch.zeros(1, 3, 32, 32), 10).sample.shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="four|4 levels"):
        make_unet(UNetConfig(sample_size=16, block_out_channels=(8, 16), norm_num_groups=4, layout="cifar"))


def test_adding_the_layout_field_kept_the_keys_of_the_members_built_before_it() -> None:
    """A plain-layout recipe's key leaves the layout out (so no cached member is rebuilt for it); a
    cifar-layout recipe's key has it, so it differs from the same recipe laid out plainly."""
    from benchmarks import zoo

    plain = zoo.Recipe("k", zoo.CLEAN, zoo.Arch(size=32, channels=3, widths=(24, 48, 48, 48)), steps=5, seed=1)
    cifar = dataclasses.replace(plain, arch=zoo.A32_CIFAR)
    assert plain.key() != cifar.key()
    blob = dict(dataclasses.asdict(plain))
    del blob["arch"]["layout"]
    legacy = hashlib.sha256(json.dumps({"v": zoo.RECIPE_VERSION, "base_key": None, **blob}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:16]
    assert plain.key() == legacy
