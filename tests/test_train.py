"""The training helpers behind the shipped examples and the benchmark zoo: repeatable from a seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from hfaudit.attacks.train import UNetConfig, make_unet


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
import zoo
recipe = dataclasses.replace(zoo.BY_NAME["clean-8-w16"], steps=3)
zoo.train_member(recipe, Path(sys.argv[2]))
print(hashlib.sha256((Path(sys.argv[2]) / recipe.name / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()).hexdigest())
"""


def test_a_zoo_member_trained_in_two_fresh_processes_has_the_same_weights(tmp_path: Path) -> None:
    """What made the zoo unrepeatable: every process starts torch's global generator at a random seed,
    and a clean member's weights were drawn from it. Trained in two processes now, bit for bit alike."""
    benchmarks = Path(__file__).resolve().parents[1] / "benchmarks"
    digests = []
    for run in ("a", "b"):
        done = subprocess.run([sys.executable, "-c", _TRAIN_ONE, str(benchmarks), str(tmp_path / run)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        digests.append(done.stdout.split()[-1])
    assert digests[0] == digests[1]
