"""The model card of a cleaned model parses with huggingface_hub and holds the figures."""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import ModelCard
from test_clean import make_scan_result

from hfaudit.card import make_card
from hfaudit.cleaning import CleanConfig, CleanResult, RemovedTrigger
from hfaudit.fidelity import Fidelity
from hfaudit.remove.finetune import FinetuneResult
from hfaudit.remove.prune import LayerPrune, PruneReport
from hfaudit.remove.verify import (
    BeforeAfter,
    FidelityCheck,
    TriggerEffect,
    TriggerProbe,
)
from hfaudit.results import BACKDOOR, BLIND_SPOTS, CLEAN

REPO = "org/suspect-model"


def _effect(asr_ddpm: float, asr_ddim: float, mscr: float) -> TriggerEffect:
    return TriggerEffect(n_samples=64, probes=[
        TriggerProbe(sampler="ddim", steps=10, asr=asr_ddim, mean_mse=0.2, mean_ssim=0.1, mscr=0.05),
        TriggerProbe(sampler="ddpm", steps=50, asr=asr_ddpm, mean_mse=0.0004 if asr_ddpm else 0.31,
                     mean_ssim=0.97 if asr_ddpm else 0.02, mscr=mscr)])


def _result(problems: list[str] | None = None) -> CleanResult:
    trig = torch.zeros(1, 16, 16)
    scan = make_scan_result(REPO, BACKDOOR, trig, repo_id=REPO, score=0.9375)
    rescan = make_scan_result(REPO, CLEAN, trig, repo_id=REPO, score=0.0625)
    fid = FidelityCheck(
        before=Fidelity(available=True, frechet_distance=11.08, n_generated=512, n_reference=1797, feature="f"),
        after=Fidelity(available=True, frechet_distance=11.90, n_generated=512, n_reference=1797, feature="f"),
        sampler="ddim", steps=20, ratio_interval=(0.98, 1.16))
    prune = PruneReport(importance="backdoor", ratio_requested=0.02, channels_total=1120, channels_zeroed=22,
                        layers=[LayerPrune(module="conv_in", kind="out", channels_zeroed=6, channels_total=32,
                                           params_zeroed=60)],
                        params_zeroed=18391, params_total=651041)
    ft = FinetuneResult(steps=300, seconds=140.0, device="cpu", data="generated:ddim-20", n_images=512,
                        losses_start={"clean": 0.12, "distill": 0.1, "trigger": 0.11},
                        losses_end={"clean": 0.026, "distill": 0.002, "trigger": 0.004},
                        config={"batch_size": 32, "lr": 5e-4})
    return CleanResult(
        status="cleaned" if not problems else "unverified", source=scan.source, scan=scan, config=CleanConfig(),
        trigger_used="inverted", prune=prune, finetune=ft,
        checks=[BeforeAfter(trigger="inverted", target="recovered", before=_effect(1.0, 0.0, 1.0),
                            after=_effect(0.0, 0.0, 0.03125)),
                BeforeAfter(trigger="re-scan", target="recovered", before=_effect(0.25, 0.0, 0.3),
                            after=_effect(0.0, 0.0, 0.0625))],
        fidelity=fid, rescan=rescan, problems=problems or [], output_dir="out",
        files=["README.md", "hfaudit_clean.json", "samples_clean_after.png", "trigger.png"])


def test_card_parses_and_holds_the_figures(tmp_path: Path) -> None:
    path = tmp_path / "README.md"
    make_card(_result()).save(path)
    card = ModelCard.load(path)
    data = card.data
    assert data.base_model == REPO and data.base_model_relation == "finetune"
    assert data.library_name == "diffusers" and data.pipeline_tag == "unconditional-image-generation"
    figures = {r.metric_name: r.metric_value for r in data.eval_results}
    assert figures["ASR before removal (inverted trigger)"] == 1.0
    assert figures["ASR after removal (inverted trigger)"] == 0.0
    assert figures["ASR before removal (re-scan trigger)"] == 0.25
    assert figures["MSCR before removal (inverted trigger)"] == 1.0
    assert figures["Scan score (MSCR) of the audited model"] == 0.9375
    assert figures["Re-scan score (MSCR) of the cleaned model"] == 0.0625
    fd = {k: v for k, v in figures.items() if k.startswith("Benign fidelity")}
    assert sorted(fd.values()) == [11.08, 11.9]
    text = card.text
    assert "22 of 1120" in text and "`conv_in`" in text and "backdoor" in text
    assert "| ASR, inverted trigger (worst sampler, 64 samples) | 100.0% | 0.0% |" in text
    assert "| 11.08 | 11.90 (x1.07, 90% interval x0.98-x1.16) |" in text
    assert "![trigger](trigger.png)" in text and "![samples_clean_after](samples_clean_after.png)" in text
    assert "a" * 40 in text  # the audited commit
    assert "UNVERIFIED" not in text
    # round 1 had no trigger-breaking term (config without trigger_weight): the card says so
    assert "losses (clean / distillation) 0.1200 / 0.1000 -> 0.0260 / 0.0020 (no trigger-breaking term" in text


def test_card_lists_each_round_with_its_triggers_and_losses() -> None:
    result = _result()
    result.removed = [RemovedTrigger("inverted"), RemovedTrigger("ode-ddim-0", rescan=1),
                      RemovedTrigger("ode-ddim-1", rescan=1), RemovedTrigger("blackbox-ddim-1", rescan=2)]
    extra = FinetuneResult(steps=300, seconds=90.0, device="cpu", data="generated:ddim-20", n_images=512,
                           losses_start={"clean": 0.03, "distill": 0.002, "trigger": 0.009},
                           losses_end={"clean": 0.025, "distill": 0.0007, "trigger": 0.0006},
                           config={"batch_size": 32, "lr": 1e-3, "trigger_weight": 0.5})
    result.rounds = [extra, extra]
    result.round_reasons = ["the re-scan still found a backdoor", "the re-scan could not rule out a backdoor"]
    text = make_card(result).text
    assert ("Round 2: the re-scan still found a backdoor, so 300 more steps fine-tuned against every trigger "
            "removed so far (inverted, re-scan 1: ode-ddim-0, re-scan 1: ode-ddim-1); losses (clean / "
            "distillation / trigger) 0.0300 / 0.0020 / 0.0090 -> 0.0250 / 0.0007 / 0.0006.") in text
    assert "Round 3: the re-scan could not rule out a backdoor, so 300 more steps" in text
    assert "Round 3: " in text and "re-scan 1: ode-ddim-1, re-scan 2: blackbox-ddim-1); losses" in text


def test_unverified_card_says_so() -> None:
    card = make_card(_result(problems=["the re-scan still finds a backdoor (MSCR 0.90, threshold 0.50)"]))
    parsed = ModelCard(str(card))
    assert "UNVERIFIED" in parsed.text and "re-scan still finds a backdoor" in parsed.text
    assert "unverified" in parsed.data.tags


def test_local_source_has_no_base_model() -> None:
    result = _result()
    result.source.repo_id = None
    result.source.source = "./models/suspect"
    card = ModelCard(str(make_card(result)))
    assert card.data.base_model is None
    assert getattr(card.data, "base_model_relation", None) is None


def test_card_says_what_a_clean_rescan_does_not_rule_out() -> None:
    text = make_card(_result()).text
    assert "does not rule out" in text
    for spot in BLIND_SPOTS:
        assert f"- {spot}" in text
    result = _result()
    result.rescan = make_scan_result(REPO, BACKDOOR, torch.zeros(1, 16, 16), repo_id=REPO, score=0.9375)
    assert "does not rule out" not in make_card(result).text  # a backdoor verdict needs no such caveat


def test_the_terminal_summary_is_the_cards_summary_verdict_first() -> None:
    """``hfaudit clean`` prints the same summary lines the card holds, the status line first, then
    where its pictures and reports are."""
    import io

    from rich.console import Console

    from hfaudit.card import summary_lines
    from hfaudit.report import render_clean_rich

    for result in (_result(), _result(["the backdoor still fires"])):
        out = io.StringIO()
        render_clean_rich(result, Console(file=out, width=400))
        printed = out.getvalue().splitlines()
        summary = summary_lines(result)
        assert printed[:len(summary)] == summary
        assert all(line.startswith(("pictures: ", "reports: ")) for line in printed[len(summary):])
