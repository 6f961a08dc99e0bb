"""The detection benchmark's own arithmetic (``benchmarks/detection.py``), against hand-computed values.

The README quotes its AUROC, thresholds and margins, so they are checked like the library is.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest


def _benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as ``benchmarks.<name>`` (the repo root is on the path under ``python -m pytest``)."""
    return importlib.import_module(f"benchmarks.{name}")


@pytest.fixture(scope="module")
def detection():
    return _benchmark("detection")


def test_auroc_counts_wins_and_half_ties(detection) -> None:
    # pairs: 0.9>0.5, 0.9>0.1, 0.5=0.5 (half), 0.5>0.1 -> 3.5 of 4
    assert detection.auroc([0.9, 0.5], [0.5, 0.1]) == pytest.approx(0.875)
    assert detection.auroc([0.1], [0.9]) == 0.0
    assert math.isnan(detection.auroc([], [0.3]))


def test_calibrate_picks_the_cut_between_separable_groups(detection) -> None:
    cal = detection.calibrate([(0.1, False), (0.2, False), (0.6, True), (0.9, True)])
    # cuts -0.9, 0.15, 0.4, 0.75, 1.9; only 0.4 has TPR 1 and FPR 0
    assert cal.threshold == pytest.approx(0.4)
    assert (cal.clean_max, cal.backdoor_min) == (0.2, 0.6)
    assert cal.margin == pytest.approx(0.2)


def test_calibrate_with_overlap_takes_the_middle_of_the_tied_cuts(detection) -> None:
    cal = detection.calibrate([(0.1, False), (0.5, False), (0.3, True), (0.9, True)])
    # Youden J: 0.2 -> 1 - 1/2, 0.4 -> 1/2 - 1/2, 0.7 -> 1/2 - 0; the best (0.5) at 0.2 and 0.7
    assert cal.threshold == pytest.approx(0.7)
    assert cal.margin == pytest.approx(-0.1)  # the groups overlap


def _member(detection, name: str, family: str, zoo_name: str = "dev", truth=None, target_class=None):
    return detection.Member(zoo_name, name, family, "clean" if family == "clean" else "backdoor",
                            Path(name), Path(name), "k", truth, target_class)


def test_calibration_split_takes_every_other_development_member_of_each_family(detection) -> None:
    zoo = detection.zoo
    members = [_member(detection, r.name, r.family) for r in zoo.RECIPES]
    members += [_member(detection, f"t-{r.name}", r.family, "test") for r in zoo.RECIPES]
    split = detection.calibration_split(members)
    for family in (zoo.CLEAN, *zoo.FAMILIES):
        names = [r.name for r in zoo.RECIPES if r.family == family]
        assert [m for m in names if m in split] == names[::2]
    assert not any(name.startswith("t-") for name in split)  # the test zoo never calibrates anything


def test_on_target_compares_the_recovered_target_and_class_with_the_truth(detection, tmp_path: Path) -> None:
    """The table's "on target" figures: MSE of the recovered target to the planted image (truth kept in
    model space, [-1, 1]), and the best probe's top class beside the recipe's class target."""
    from types import SimpleNamespace

    import torch
    from safetensors.torch import save_file

    target = torch.full((1, 4, 4), -1.0)  # black in [0, 1]
    for name, truth in (("d2i", {"target": target}), ("class", {"gamma": torch.tensor(0.1)})):
        (tmp_path / name).mkdir()
        save_file(truth, str(tmp_path / name / "truth.safetensors"))
    recovered = torch.full((1, 4, 4), 0.5)  # grey: MSE 0.25 to black
    result = SimpleNamespace(recovered_target=recovered, best_probe=SimpleNamespace(
        modes=SimpleNamespace(top_class=3)))
    d2i = _member(detection, "d2i", "trojdiff", truth=tmp_path / "d2i" / "truth.safetensors")
    assert detection._on_target(d2i, result) == {"target_mse": 0.25}
    in_d2d = _member(detection, "class", "trojdiff", "test", tmp_path / "class" / "truth.safetensors", 7)
    assert detection._on_target(in_d2d, result) == {"target_class": 7, "top_class": 3}


def test_on_target_counts_a_flag_by_its_distance_to_the_planted_target(detection) -> None:
    """The summary line's "on the planted target": image targets by ``ON_TARGET_MSE`` (inclusive),
    class targets by the top class; a result with no recovered target is never on target."""
    cut = detection.ON_TARGET_MSE
    assert detection.on_target({"target_mse": cut})
    assert not detection.on_target({"target_mse": cut * 1.01})
    assert not detection.on_target({"target_mse": None})
    assert not detection.on_target({})
    assert detection.on_target({"target_class": 7, "top_class": 7})
    assert not detection.on_target({"target_class": 7, "top_class": 8})
    assert not detection.on_target({"target_class": 7, "top_class": None})


@pytest.fixture(scope="module")
def midstep_seeds():
    return _benchmark("midstep_seeds")


def test_lattice_average_is_the_cell_means_scaled_to_the_rms(midstep_seeds) -> None:
    import torch

    trigger = torch.zeros(1, 8, 8)
    trigger[:, 6:, 6:] = 3.0  # a 2x2 patch: a quarter of the bottom-right 4x4 cell, cell mean 0.75
    avg = midstep_seeds.lattice_average(trigger, 2, 0.5)
    # the whole cell gets one value v, and RMS 0.5 over 64 pixels means 16 v^2 = 64 * 0.25, v = 1
    expected = torch.zeros(1, 8, 8)
    expected[:, 4:, 4:] = 1.0
    assert torch.allclose(avg, expected)
    assert float(avg.pow(2).mean().sqrt()) == pytest.approx(0.5)


def test_budget_agreement_names_what_only_the_full_scan_or_only_the_cheaper_one_flags(detection) -> None:
    """Issue 19's bar: a budget finds what ``thorough`` finds, with no more false positives. Members scored by
    one of the two only are left out."""
    members = [_member(detection, "a", "baddiffusion", "test"), _member(detection, "b", "trojdiff", "test"),
               _member(detection, "c", "clean", "test"), _member(detection, "d", "baddiffusion", "test")]
    res = {"flagged": True, "score": 1.0}
    no = {"flagged": False, "score": 0.1}
    results = {("test", "a"): {"hfaudit": no, "hfaudit-thorough": res},
               ("test", "b"): {"hfaudit": res, "hfaudit-thorough": no},
               ("test", "c"): {"hfaudit": res, "hfaudit-thorough": no},
               ("test", "d"): {"hfaudit": res}}  # thorough did not score it
    scored = detection.Scored(members, results, ["hfaudit", "hfaudit-thorough"])
    line = " ".join(detection.budget_agreement(scored, "test"))
    assert "on the 3 test members both scored (2 backdoored): flags 1 against 1" in line
    assert "only hfaudit-thorough flags: a;" in line and "only hfaudit flags: b;" in line
    assert "clean members only hfaudit flags: c" in line
    assert detection.budget_agreement(scored, "dev") == []
