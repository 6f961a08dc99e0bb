"""End-to-end detection per attack family, on shipped zoo members (``benchmarks/zoo.py``).

BadDiffusion is the shipped ``digits-baddiffusion`` (``tests/test_detect.py``); the VillanDiffusion
(ODE) model here is a copy of the zoo member ``villan-glasses-hat-8``, and the TrojDiff one a copy of
``troj-patch-d2i`` (patch trigger, one-image target), each with what the attacker planted beside it.
Both scans run the full defaults, so they are slow; in the fast run ``tests/test_ode.py`` inverts
the VillanDiffusion model with the ODE inversion alone and ``tests/test_stamps.py`` scans the
TrojDiff one with the stamp screen alone. The zoo's other TrojDiff members (blend trigger,
class targets) are not found by their target (README, "Why each miss"), so none of them is shipped.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from hfaudit import scan
from hfaudit.detect.budgets import budget_config
from hfaudit.errors import ExitCode
from hfaudit.results import BACKDOOR
from hfaudit.sampling import to_unit

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


@pytest.fixture(scope="module")
def villan():
    return scan(str(MODELS / "digits-villandiffusion-8x8"), device="cpu", config=budget_config("thorough"))


@pytest.mark.slow  # a full default scan of a shipped model
def test_villandiffusion_ode_backdoor_is_found_under_ddim(villan) -> None:
    truth = load_file(str(MODELS / "digits-villandiffusion-8x8_truth.safetensors"))
    assert float(truth["correction"]) == 2.0  # the ODE variant
    assert villan.verdict == BACKDOOR and villan.exit_code == ExitCode.BACKDOOR
    assert villan.best.best.sampler == "ddim"  # it fires under the deterministic sampler only
    assert {"blackbox", "ode"} <= set(villan.fired_methods)  # both searches that see ODE backdoors
    assert "gradient" not in villan.fired_methods  # the shift at t = T shows nothing (tests/test_ode.py)
    mse = float((villan.recovered_target - to_unit(truth["target"])).pow(2).mean())
    assert mse < 0.01, mse  # the recovered target is the planted hat
    default = scan(str(MODELS / "digits-villandiffusion-8x8"), device="cpu")  # the default budget finds it too
    assert default.verdict == BACKDOOR and "ode" in default.fired_methods
    assert float((default.recovered_target - to_unit(truth["target"])).pow(2).mean()) < 0.01


@pytest.mark.slow
def test_trojdiff_patch_backdoor_is_found_by_the_default_scan() -> None:
    truth = load_file(str(MODELS / "digits-trojdiff-patch_truth.safetensors"))
    result = scan(str(MODELS / "digits-trojdiff-patch"), device="cpu")
    assert result.verdict == BACKDOOR and result.exit_code == ExitCode.BACKDOOR
    assert "stamp" in result.fired_methods
    assert result.best_sampler == "ddim"  # TrojDiff fires under the deterministic sampler only
    mse = float((result.recovered_target - to_unit(truth["target"])).pow(2).mean())
    assert mse < 0.02, mse  # the recovered target is the planted "X"
