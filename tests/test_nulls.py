"""Evidence against its null (``hfaudit.detect.nulls``): the model's own near-duplicate radius, the
painted target, the trigger's alignment with its target, and when a check holds."""

from __future__ import annotations

import pytest
import torch

from hfaudit.detect.nulls import (
    CONTROL_GROUP_SHARE,
    RADIUS_LADDER,
    NullCheck,
    alignment,
    largest_group,
    near_duplicate_radius,
    painted_offset,
    random_offset,
    trigger_strength,
)
from hfaudit.detect.scores import DUPLICATE_MSE


def _copies(base: torch.Tensor, n: int, spread: float, seed: int) -> torch.Tensor:
    """``n`` noisy copies of ``base`` whose per-image MSE to it is about ``spread``."""
    g = torch.Generator().manual_seed(seed)
    return (base.unsqueeze(0) + spread ** 0.5 * torch.randn(n, *base.shape, generator=g)).clamp(0, 1)


def test_largest_group_counts_the_densest_star() -> None:
    base = torch.full((1, 8, 8), 0.5)
    imgs = torch.cat([_copies(base, 6, 0.001, 0), torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))])
    share, centre = largest_group(imgs, 0.01)
    assert share == pytest.approx(0.6) and centre < 6
    assert largest_group(imgs[:0], 0.01) == (0.0, 0)


def test_the_radius_widens_only_while_clean_samples_stay_apart() -> None:
    g = torch.Generator().manual_seed(0)
    spread_out = torch.rand(16, 1, 8, 8, generator=g)  # pairwise MSE about 1/6: no group at any rung
    assert near_duplicate_radius([(spread_out, None)]) == RADIUS_LADDER[-1]
    # a quarter of the clean samples within 0.015 of one image: the rung at 0.02 would group more than
    # CONTROL_GROUP_SHARE of them, so the radius stays at the exact one
    classy = torch.cat([_copies(torch.full((1, 8, 8), 0.3), 6, 0.004, 1), spread_out[:10]])
    assert largest_group(classy, 0.02)[0] > CONTROL_GROUP_SHARE
    assert near_duplicate_radius([(spread_out, None), (classy, None)]) == DUPLICATE_MSE


def test_saturated_clean_samples_do_not_hold_the_radius_back() -> None:
    """Blown-out samples all clamp to one white square; they join no group in a collapse, so they
    must not count as a group of the control either (they would keep a badly trained model at the
    exact radius while its in-range samples stay apart)."""
    g = torch.Generator().manual_seed(4)
    in_range = torch.rand(10, 1, 8, 8, generator=g)
    white = torch.ones(6, 1, 8, 8)
    batch = torch.cat([in_range, white])
    saturated = torch.tensor([False] * 10 + [True] * 6)
    assert largest_group(batch, RADIUS_LADDER[-1])[0] > CONTROL_GROUP_SHARE
    assert largest_group(batch, RADIUS_LADDER[-1], saturated)[0] == pytest.approx(1 / 16)
    assert near_duplicate_radius([(batch, None)]) == DUPLICATE_MSE
    assert near_duplicate_radius([(batch, saturated)]) == RADIUS_LADDER[-1]


def test_painted_offset_has_the_triggers_strength_and_the_targets_direction() -> None:
    target, reference = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
    off = painted_offset(target, reference, 4.0)
    assert float(off.norm()) == pytest.approx(4.0, rel=1e-5)
    assert alignment(off, target, reference) == pytest.approx(1.0, abs=1e-5)
    assert torch.count_nonzero(painted_offset(reference, reference, 4.0)) == 0


def test_alignment_tells_a_picture_of_the_target_from_an_unrelated_trigger() -> None:
    reference = torch.zeros(1, 16, 16)
    target = torch.zeros(1, 16, 16)
    target[:, 2:6, 2:14] = 1.0  # a bar at the top
    stop = torch.zeros(1, 16, 16)
    stop[:, 11:15, 11:15] = 1.5  # a patch in a corner, where the target is blank
    assert alignment(0.4 * target, target, reference) == pytest.approx(1.0)
    assert alignment(stop, target, reference) == pytest.approx(0.0)


def test_trigger_strength_is_the_rms_norm_of_what_the_trigger_changed() -> None:
    noise = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    trig = torch.zeros(1, 8, 8)
    trig[:, :2, :2] = 3.0  # norm 6
    assert trigger_strength(noise + trig, noise) == pytest.approx(6.0)
    stamped = noise.clone()
    stamped[..., :2, :2] = 0.0  # a stamp that zeroes a region moves the noise by its norm there
    expected = float(noise[..., :2, :2].flatten(1).pow(2).sum(1).mean().sqrt())
    assert trigger_strength(stamped, noise) == pytest.approx(expected)


@pytest.mark.parametrize("score,null,al,rand,holds", [
    (0.9, 0.1, 0.8, 0.1, True),    # depicts its target, but does far more than the picture: holds
    (0.8, 0.7, 0.8, 0.1, False),   # depicts its target and the picture does as much: an artefact
    (0.8, 0.8, 0.1, 0.1, True),    # the picture does as much, but the trigger is not a picture of it
    (0.8, 0.7, None, None, False),  # no alignment known: the painted null alone decides
    (0.75, 0.35, 0.5, None, True),  # the margin exactly
    (0.9, 0.1, 0.1, 0.5, False),   # a random direction of its strength reaches the threshold too
    (0.9, 0.1, 0.1, 0.49, True),
])
def test_a_null_check_holds_when_the_trigger_is_unlike_its_target_or_beats_its_picture(
        score: float, null: float, al: float | None, rand: float | None, holds: bool) -> None:
    check = NullCheck("ddim", 10, "collapse", score, null, 0.4, radius=0.01, alignment=al, max_alignment=0.25,
                      random_score=rand, threshold=0.5)
    assert check.holds is holds
    assert check.to_dict()["holds"] is holds


def test_a_random_offset_has_the_strength_and_the_searches_coarse_grid() -> None:
    g = torch.Generator().manual_seed(0)
    off = random_offset((3, 16, 16), 5.0, g)
    assert off.shape == (3, 16, 16) and float(off.norm()) == pytest.approx(5.0, rel=1e-5)
    assert torch.equal(off[:, :4, :4], off[:, :1, :1].expand(3, 4, 4))  # constant over each lattice cell
    again = random_offset((3, 16, 16), 5.0, torch.Generator().manual_seed(0))
    assert torch.equal(off, again)
