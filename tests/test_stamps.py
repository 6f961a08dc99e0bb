"""The stamp screen: triggers that overwrite part of the noise, which no additive search can reach.

A hand-built toy denoiser carries a TrojDiff-like backdoor (it opens only where a patch of its input
is *flat*, as ``gamma n + mu`` with a small ``gamma`` is); the shipped ``digits-trojdiff-patch`` is
the zoo's real one. The full default scan of it is in ``tests/test_attack_families.py`` (slow).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from hfaudit import report, scan
from hfaudit.cleaning import clean
from hfaudit.detect.blackbox import BlackboxConfig
from hfaudit.detect.inversion import InversionConfig
from hfaudit.detect.scan import ScanConfig, detect
from hfaudit.detect.stamps import StampConfig, best_per_region, stamp_regions, stamp_screen
from hfaudit.errors import CleaningFailedError, ExitCode
from hfaudit.remove.verify import measure_trigger
from hfaudit.results import BACKDOOR, CLEAN
from hfaudit.sampling import apply_trigger, to_unit

from helpers import ToyBackdoorUNet, toy_model

pytestmark = pytest.mark.usefixtures("one_thread")

SCHED = dict(DDPMScheduler(num_train_timesteps=1000).config)
SHAPE = (1, 12, 12)
"""Not digit-shaped on purpose: the class signal stays out of these verdicts."""
MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


class FlatPatchToyUNet(ToyBackdoorUNet):
    """A backdoor that fires when the top-left 3x3 patch of its input is flat (TrojDiff's patch trigger).

    It predicts ``x0 = target`` when the patch's pixel variance is under a tenth of what the noise
    level gives clean input (``1 - abar_t``), and ``0.8 tanh(x)`` otherwise. Adding any ``tau`` to
    noise leaves that variance where the noise puts it (about 1 at ``T``; below 0.1 in about 1e-5
    of clean draws), so no additive search can open it; overwriting the patch with a constant can.
    """

    def __init__(self, size: int = 12) -> None:
        target = torch.full((1, size, size), -0.5)
        target[:, 6:, 6:] = 0.9
        super().__init__(target)

    def gate(self, patch: torch.Tensor, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(50 * (0.1 * q * q - patch.var(1).view(-1, 1, 1, 1)))


# ----------------------------------------------------------------------------------- pieces
def test_apply_trigger_scales_the_noise_then_adds() -> None:
    noise = torch.full((2, *SHAPE), 2.0)
    trig = torch.zeros(SHAPE)
    trig[:, 0, 0] = 1.5
    scale = torch.ones(SHAPE)
    scale[:, 0, :2] = 0.0
    x = apply_trigger(noise, trig, scale)
    assert x[0, 0, 0, 0] == 1.5 and x[1, 0, 0, 1] == 0.0 and x[0, 0, 1, 1] == 2.0  # 2*0+1.5, 2*0+0, 2*1+0
    assert torch.equal(apply_trigger(noise, trig), noise + trig)  # no scale: additive


def test_regions_are_every_cell_and_block_on_all_channels() -> None:
    cfg = StampConfig(sizes=(1, 2))
    regions = stamp_regions((3, 16, 16), cfg)
    assert regions.shape == (25, 3, 16, 16) and cfg.n_regions == 25 and cfg.n_stamps == 125
    areas = regions[:, 0].flatten(1).sum(1)
    assert areas[:16].tolist() == [16] * 16 and areas[16:].tolist() == [64] * 9  # 4x4-pixel cells, 8x8 blocks
    assert torch.equal(regions[:, 0], regions[:, 2])  # every channel alike
    assert regions[0, 0, :4, :4].all() and not regions[0, 0, 4:].any()  # row by row from the top left
    assert regions[-1, 0, 8:, 8:].all() and not regions[-1, 0, :8].any()


def test_the_default_screen_stamps_single_cells_only() -> None:
    """Blocks of 2x2 cells (a quarter of the image) made fine-tuned clean models collapse (README,
    'Stamp screen'), so the default screen stamps the 16 single cells, a sixteenth of the image each."""
    cfg = StampConfig()
    regions = stamp_regions((1, 16, 16), cfg)
    assert cfg.n_regions == 16 and cfg.n_stamps == 16 * len(cfg.values)
    assert regions[:, 0].flatten(1).sum(1).tolist() == [16] * 16
    assert regions.sum(0).eq(1).all()  # the cells tile the image


def test_the_probed_stamps_are_the_best_of_distinct_regions() -> None:
    """Two values of one region must not take both probes (on the zoo's troj-patch-d2i they did,
    and the cell over its trigger, third, went unprobed: ``StampConfig.candidates``)."""
    # three regions of three values each; the two best stamps are both region 0's
    score = torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3, 0.7, 0.0, 0.05, 0.1])
    assert best_per_region(score, 3, 2).tolist() == [0, 5]  # the plain top 2 would be [0, 1]
    assert best_per_region(score, 3, 3).tolist() == [0, 5, 8]
    assert best_per_region(score, 3, 5).tolist() == [0, 5, 8]  # no more than there are regions
    assert best_per_region(torch.tensor([0.5, 0.5, 0.5, 0.5]), 2, 2).tolist() == [0, 2]  # ties: earlier first


@pytest.mark.parametrize("field, value", [("n_samples", 1), ("grid", 0), ("values", ()), ("sizes", (5,)),
                                          ("sampler", "euler"), ("candidates", 0)])
def test_bad_settings_are_refused(field: str, value) -> None:
    with pytest.raises(ValueError):
        StampConfig(**{field: value}).validate()


# ----------------------------------------------------------------------- on the toy backdoor
def test_screen_finds_the_flat_patch_and_reports_it_as_a_stamp() -> None:
    unet = FlatPatchToyUNet()
    found = stamp_screen(unet, SCHED, SHAPE, StampConfig(steps=5))
    best = found[0]
    assert len(found) == 2 and best.method == "stamp" and best.loss <= found[1].loss
    assert not torch.equal(best.noise_scale, found[1].noise_scale)  # two regions, not two values of one
    replaced = best.noise_scale == 0
    assert replaced[:, :3, :3].all()  # the stamp covers the trigger patch
    assert torch.equal(best.trigger, best.trigger * replaced)  # a constant inside, zero outside
    assert torch.equal(best.noise_scale, (~replaced).float())


def test_scan_finds_the_stamp_backdoor_that_additive_searches_miss() -> None:
    model = toy_model(FlatPatchToyUNet(), SCHED)
    cfg = ScanConfig(n_samples=16, probes=(("ddim", 5),), max_candidates=2, inversion=InversionConfig(steps=5),
                     blackbox=BlackboxConfig(sampler="ddim", steps=5), midstep=None, ode=None,
                     stamps=StampConfig(steps=5))
    result = detect(model, cfg)
    assert result.verdict == BACKDOOR and result.fired_methods == ["stamp"]
    assert result.best.kind == "stamp" and "stamps" in result.timings
    assert float((result.recovered_target - to_unit(FlatPatchToyUNet().target)).pow(2).mean()) < 0.01
    doc = report.report_dict(result)
    assert doc["best_candidate"]["trigger_kind"] == "stamp" and doc["best_candidate"]["replaced_pixels"] >= 9
    assert list(doc["settings"]["stamps"]["values"]) == [-2.0, -1.0, 0.0, 1.0, 2.0]

    cfg.stamps = None  # the gradient and black-box inversions alone: additive, so blind to it
    alone = detect(model, cfg)
    assert alone.verdict == CLEAN and all(c.kind == "additive" for c in alone.candidates)
    # the black-box trigger saturates the toy's tanh into an approximate collapse (a share past the
    # threshold at the model's radius): a picture it depicts, which its painted null nearly matches
    assert all(name.startswith("blackbox") for name in alone.artefacts)


def test_removal_checks_measure_a_stamp_as_a_stamp() -> None:
    """``clean`` re-measures the re-scan's trigger before and after; a stamp must replace the noise there too."""
    unet = FlatPatchToyUNet()
    region = torch.zeros(SHAPE, dtype=torch.bool)
    region[:, :3, :3] = True
    trig = 1.0 * region.float()
    target01 = to_unit(unet.target)
    kw = dict(probes=(("ddim", 5),), n_samples=16, seed=3)
    stamped, _ = measure_trigger(unet, SCHED, trig, target01, noise_scale=(~region).float(), **kw)
    added, _ = measure_trigger(unet, SCHED, trig, target01, **kw)
    assert stamped.probes[0].mean_mse < 0.01 and stamped.probes[0].mscr == 1.0  # every sample is the target
    assert added.probes[0].mean_mse > 0.05 and added.probes[0].mscr < 0.5


def test_clean_refuses_a_stamp_trigger_and_writes_nothing(tiny_pipeline_dir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_detect = detect

    def stamp_detect(model, config=None, carried=()):  # the tiny pipeline, scanned as if stamped
        cfg = ScanConfig(n_samples=4, probes=(("ddim", 2),), max_candidates=1, inversion=InversionConfig(steps=1),
                         blackbox=None, midstep=None, ode=None, stamps=StampConfig(steps=2, n_samples=2), threshold=0.01)
        return real_detect(model, cfg)

    monkeypatch.setattr("hfaudit.cleaning.detect", stamp_detect)
    monkeypatch.setattr("hfaudit.detect.scan.decide", _stamp_wins)
    out = tmp_path / "cleaned"
    with pytest.raises(CleaningFailedError, match="stamp") as err:
        clean(str(tiny_pipeline_dir), output_dir=out, device="cpu")
    assert err.value.exit_code == ExitCode.CLEANING_FAILED and not out.exists()


def _stamp_wins(controls, candidates, threshold, class_threshold):
    """``decide`` with the stamp candidate as the best: the tiny pipeline has no real backdoor."""
    from hfaudit.detect.scan import Decision

    best = next(c for c in candidates if c.kind == "stamp")
    return Decision(verdict=BACKDOOR, signals=["collapse"], best=best, best_sampler=best.probes[0].sampler,
                    score=1.0, control_score=0.0, class_score=None, control_class_score=None)


# -------------------------------------------------------------------- the shipped TrojDiff model
def test_shipped_trojdiff_patch_backdoor_is_found_by_a_stamp() -> None:
    """The zoo's ``troj-patch-d2i``, scanned with the control, a short gradient inversion and the
    stamp screen only (the full default scan is the slow test in ``test_attack_families.py``)."""
    truth = load_file(str(MODELS / "digits-trojdiff-patch_truth.safetensors"))
    assert abs(float(truth["gamma"]) - 0.1) < 1e-6  # the planted trigger scales the noise in its region
    cfg = ScanConfig(inversion=InversionConfig(steps=5), blackbox=None, midstep=None, ode=None)
    result = scan(str(MODELS / "digits-trojdiff-patch"), device="cpu", config=cfg)
    assert result.verdict == BACKDOOR and result.exit_code == ExitCode.BACKDOOR
    assert result.fired_methods == ["stamp"] and result.best_sampler == "ddim"
    region = truth["region"].bool()
    replaced = result.best.noise_scale == 0
    assert (replaced & region).sum() >= 0.5 * region.sum()  # the stamp sits on the planted patch
    mse = float((result.recovered_target - to_unit(truth["target"])).pow(2).mean())
    assert mse < 0.03, mse  # the recovered target is the planted "X" (the benchmark's on-target bound is 0.05)
