"""Removal verified across trigger sizes and samplers: the scale x sampler sweep, the target-likeness
rate, the verification gate it feeds, and the fine-tuning that trains on the same scales."""

from __future__ import annotations

import copy
import dataclasses
import json
from io import StringIO
from pathlib import Path

import pytest
import torch
from rich.console import Console

from hfaudit.clean_results import CleanConfig, CleanResult
from hfaudit.cleaning import REPORT_NAME, _problems
from hfaudit.detect.scores import attack_success_rate
from hfaudit.errors import CleaningFailedError, UsageError
from hfaudit.remove.finetune import FinetuneConfig, finetune
from hfaudit.remove.verify import (
    LIKENESS_SSIM,
    TRIGGER_SCALES,
    ScaleProbe,
    ScaleSweep,
    likeness_rate,
    measure_scales,
)
from hfaudit.results import BACKDOOR, CLEAN
from hfaudit.sampling import alphas_cumprod_of, to_unit

from test_clean import FAST, SHAPE, box_trigger, make_scan_result, run_clean
from test_remove import sched_config, tiny_unet

MODELS = Path(__file__).parent.parent / "examples" / "models"


def _probe(scale: float, sampler: str = "ddim", *, asr: float = 0.0, likeness: float = 0.0,
           clean_likeness: float = 0.0) -> ScaleProbe:
    return ScaleProbe(scale=scale, sampler=sampler, steps=10 if sampler == "ddim" else 50, asr=asr,
                      likeness=likeness, mean_ssim=likeness, clean_asr=0.0, clean_likeness=clean_likeness)


def _sweep(*residual: ScaleProbe, scales: tuple[float, ...] = TRIGGER_SCALES) -> ScaleSweep:
    """A sweep where nothing fires, except the given probes (which replace their quiet ones)."""
    special = {(p.scale, p.sampler): p for p in residual}
    probes = [special.get((s, sampler), _probe(s, sampler, likeness=0.02, clean_likeness=0.02))
              for s in scales for sampler in ("ddim", "ddpm")]
    return ScaleSweep(trigger="inverted", probes=probes, n_samples=64, threshold=LIKENESS_SSIM, unet_evaluations=0)


# ------------------------------------------------------------------------------- likeness rate
def test_likeness_counts_near_copies_that_exact_asr_misses() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.zeros(1, 16, 16)
    target[:, 4:12, 4:12] = 1.0
    target[:, 7:9, :] = 0.5
    near = (target + 0.06 * torch.randn(6, 1, 16, 16, generator=gen)).clamp(0, 1)  # MSE ~ 3e-3: not a hit
    exact = target.expand(2, -1, -1, -1).clone()
    unrelated = torch.rand(8, 1, 16, 16, generator=gen)
    images = torch.cat([near, exact, unrelated])
    assert attack_success_rate(images, target) == pytest.approx(2 / 16)  # only the exact copies
    assert likeness_rate(images, target) == pytest.approx(8 / 16)  # near copies too, never noise
    assert likeness_rate(unrelated, target) == 0.0
    assert likeness_rate(images, target, threshold=0.999) == pytest.approx(2 / 16)


# ------------------------------------------------------------------------------- the sweep
def test_sweep_on_the_shipped_backdoor() -> None:
    """The true trigger at its own size fires under DDPM, clean noise (the same draw) does not; at half
    size under DDIM the samples look like the target without one exact hit (what the ASR alone misses)."""
    from safetensors.torch import load_file

    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model

    if not (MODELS / "digits-baddiffusion").is_dir():
        pytest.skip("examples/models/digits-baddiffusion is not there")
    model = load_model(resolve(str(MODELS / "digits-baddiffusion")), device="cpu")
    truth = load_file(str(MODELS / "backdoor_truth.safetensors"))
    target01 = to_unit(truth["target"])
    full = measure_scales(model.unet, model.scheduler_config, truth["trigger"], target01, name="true",
                          scales=(1.0,), probes=(("ddpm", 50),), n_samples=8, seed=3)
    (p,) = full.probes
    assert (p.scale, p.sampler, p.steps) == (1.0, "ddpm", 50)
    assert p.asr >= 0.75 and p.likeness >= 0.75
    assert p.clean_asr == 0.0 and p.clean_likeness <= 0.25
    assert full.residuals(0.01, 0.10) == [p] and full.worst is p
    assert full.unet_evaluations == 2 * 8 * 50  # clean noise and one scale, 50 steps each

    half = measure_scales(model.unet, model.scheduler_config, truth["trigger"], target01, name="true",
                          scales=(0.5,), probes=(("ddim", 10),), n_samples=32, seed=3)
    (q,) = half.probes
    assert q.asr == 0.0 and q.likeness - q.clean_likeness > 0.10, q
    assert half.residuals(0.01, 0.10) == [q]  # the look-alikes alone make it a residual


def test_sweep_table_and_json() -> None:
    sweep = _sweep(_probe(0.5, likeness=0.8, clean_likeness=0.03))
    columns, rows = sweep.grid()
    assert columns == ["ddim-10", "ddpm-50"]
    assert [label for label, _ in rows] == [f"x{s:g}" for s in TRIGGER_SCALES] + ["clean noise"]
    assert dict(rows)["x0.5"][0] == "0% / 80%"
    d = sweep.to_dict()
    assert d["scales"] == list(TRIGGER_SCALES) and len(d["probes"]) == 2 * len(TRIGGER_SCALES)
    assert d["worst"]["scale"] == 0.5 and d["worst"]["excess"] == pytest.approx(0.77)
    json.dumps(d)


# ------------------------------------------------------------------------------- the gate
def _result(sweep: ScaleSweep | None) -> CleanResult:
    scan = make_scan_result("model", BACKDOOR, box_trigger())
    return CleanResult(status="cleaned", source=scan.source, scan=scan, config=CleanConfig(), scales=sweep)


def test_a_residual_at_one_scale_fails_verification() -> None:
    # by default the sweep is reported, not gated (CleanConfig.residual_gate)
    residual = _result(_sweep(_probe(0.5, likeness=0.8, clean_likeness=0.03)))
    assert _problems(residual, CleanConfig()) == []
    cfg = CleanConfig(residual_gate=True, max_asr=0.01)
    assert _problems(_result(_sweep()), cfg) == []
    (problem,) = _problems(_result(_sweep(_probe(0.5, likeness=0.8, clean_likeness=0.03))), cfg)
    assert "still steers samples to the target" in problem and "x0.5 ddim-10" in problem
    assert "1 of 10" in problem and "80% look like it vs 3% from clean noise" in problem
    # exact hits above 1% at one scale fail too, with no look-alike excess
    (problem,) = _problems(_result(_sweep(_probe(1.5, "ddpm", asr=0.02))), cfg)
    assert "x1.5 ddpm-50" in problem
    # the margin: a few more look-alikes than clean noise is chance, not a residual
    assert _problems(_result(_sweep(_probe(0.25, likeness=0.10, clean_likeness=0.02))), cfg) == []
    assert _problems(_result(_sweep(_probe(0.25, likeness=0.15, clean_likeness=0.02))), cfg) != []


def test_config_scales_reach_the_finetuning_and_are_validated() -> None:
    cfg = CleanConfig(scales=(0.5, 1.0), residual_gate=True)
    assert cfg.finetune_round(2).trigger_scales == (0.5, 1.0)
    assert CleanConfig(residual_gate=True).finetune_round(1).trigger_scales == TRIGGER_SCALES
    assert CleanConfig().finetune_round(2).trigger_scales == (1.0,) == FinetuneConfig().trigger_scales
    for bad in ((), (0.5, 0.0), (-1.0,)):
        with pytest.raises(UsageError):
            CleanConfig(scales=bad).validate()
        with pytest.raises(UsageError):
            FinetuneConfig(trigger_scales=bad).validate()


# ------------------------------------------------------------------------------- fine-tuning
def test_finetune_trains_the_trigger_at_sampled_scales() -> None:
    """The triggered half of each batch is ``x_t + (1 - sqrt(abar_t)) * s * tau`` with ``s`` drawn per
    row from the scale set: read ``s`` back from what the UNet is given."""
    unet = tiny_unet()
    student, teacher = copy.deepcopy(unet), copy.deepcopy(unet)
    scales = (0.5, 2.0)
    cfg = FinetuneConfig(steps=2, batch_size=16, warmup=1, trigger_weight=1.0, trigger_scales=scales)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handle = student.register_forward_pre_hook(lambda _m, args: seen.append((args[0].detach().clone(), args[1])))
    try:
        finetune(student, teacher, sched_config(), torch.rand(8, *SHAPE) * 2 - 1, box_trigger(), config=cfg)
    finally:
        handle.remove()
    abar = alphas_cumprod_of(sched_config())
    tau = box_trigger()
    region = tau != 0
    drawn = []
    for x, t in seen[:2]:  # the training steps (the EMA copy adds no forward passes)
        clean_half, trig_half = x.chunk(2)
        t = torch.as_tensor(t)[: clean_half.shape[0]]
        k = (1 - abar[t].sqrt()).view(-1, 1, 1, 1)
        ratio = (trig_half - clean_half) / (k * tau)
        drawn += [float(r[region].mean()) for r in ratio]
        assert all(float(r[region].std()) < 1e-3 for r in ratio)  # one scale per row
    assert len(drawn) == 32
    assert all(min(abs(s - c) for c in scales) < 1e-3 for s in drawn), drawn
    assert {round(s, 3) for s in drawn} == set(scales)  # both sizes are trained


# ------------------------------------------------------------------------------- clean
def test_a_residual_drives_another_round_and_is_reported(tiny_pipeline_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The re-scan is clean but the sweep shows a residual: ``clean`` fine-tunes again with the trigger
    term at the sweep's scales; a residual that stays fails verification."""
    import hfaudit.cleaning as clean_module
    from hfaudit import report

    verdicts = [BACKDOOR, CLEAN, CLEAN]
    monkeypatch.setattr(clean_module, "detect", lambda model, config=None, carried=(): make_scan_result(
        model.source.source, verdicts.pop(0), box_trigger(), repo_id=model.source.repo_id))
    sweeps = [_sweep(_probe(0.5, likeness=0.8, clean_likeness=0.03)), _sweep()]
    seen_scales: list[tuple[float, ...]] = []

    def fake_sweep(unet, sched, trigger, target01, **kw):
        seen_scales.append(kw["scales"])
        return sweeps.pop(0)

    weights: list[float] = []
    real_ft = clean_module.finetune

    def spy(*args, **kw):
        weights.append(kw["config"].trigger_weight)
        assert kw["config"].trigger_scales == TRIGGER_SCALES
        return real_ft(*args, **kw)

    monkeypatch.setattr(clean_module, "measure_scales", fake_sweep)
    monkeypatch.setattr(clean_module, "finetune", spy)
    out = tmp_path / "out"
    gated = dataclasses.replace(FAST, residual_gate=True, max_asr=0.01)
    result = run_clean(tiny_pipeline_dir, out, config=gated)
    assert result.passed and len(result.rounds) == 1 and weights == [0.0, FAST.finetune.trigger_weight]
    assert seen_scales == [TRIGGER_SCALES, TRIGGER_SCALES]
    report_doc = json.loads((out / REPORT_NAME).read_text())
    assert report_doc["scales"]["scales"] == list(TRIGGER_SCALES) and report_doc["scales"]["trigger"] == "inverted"
    card = (out / "README.md").read_text()
    assert "| scale | ddim-10 | ddpm-50 |" in card and "| clean noise |" in card
    buf = StringIO()
    report.render_clean_rich(result, Console(file=buf, width=120))
    assert "clean noise" in buf.getvalue() and "x0.25" in buf.getvalue()

    # one round only: the residual stays, and verification fails naming it
    verdicts[:] = [BACKDOOR, CLEAN]
    sweeps[:] = [_sweep(_probe(0.5, likeness=0.8, clean_likeness=0.03))]
    with pytest.raises(CleaningFailedError, match="x0.5 ddim-10"):
        run_clean(tiny_pipeline_dir, tmp_path / "o1", config=dataclasses.replace(gated, max_rounds=1))
