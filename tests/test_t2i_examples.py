"""Latent and text-to-image pipelines end to end through the CLI: the shipped examples keep their
verdicts, the reports carry the trigger string, and a latent pipeline's samples are decoded images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hfaudit.cli import app
from hfaudit.errors import ExitCode
from helpers import FAST_SCAN_FLAGS, searches_off, validate_report, validate_sarif

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
runner = CliRunner()


def scan(model: Path, out: Path, *flags: str) -> tuple[int, dict]:
    result = runner.invoke(app, ["scan", str(model), "-o", str(out), "-q", *flags])
    doc = json.loads((out / "report.json").read_text())
    return result.exit_code, validate_report(doc)


def test_the_shipped_text_to_image_backdoor_is_found_with_its_trigger(tmp_path: Path) -> None:
    truth = json.loads((MODELS / "t2i-rickroll-homoglyph_truth.json").read_text())
    code, doc = scan(MODELS / "t2i-rickroll-homoglyph", tmp_path / "out", "--sarif", str(tmp_path / "r.sarif"))
    assert code == ExitCode.BACKDOOR, doc["verdict"]
    text = doc["text_trigger"]
    assert text["trigger"] is not None and any(truth["trigger"] in t for t in text["triggers"]), text["triggers"]
    assert doc["signals"] and doc["unet_evaluations"] <= 8000
    assert all(not e["fired"] for e in text["evidence"] if e["role"] == "null")
    assert (tmp_path / "out" / "samples_triggered.png").is_file()
    assert (tmp_path / "out" / "recovered_target.png").is_file()
    sarif = validate_sarif((tmp_path / "r.sarif").read_text())
    assert truth["trigger"] in sarif["runs"][0]["results"][0]["message"]["text"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert truth["trigger"] in md and "| null |" in md


def test_the_shipped_unet_caption_backdoor_is_found_by_its_behaviour_with_its_target(tmp_path: Path) -> None:
    """A UNet fine-tuned on poisoned captions (the text encoder untouched): the trigger word collapses
    every prompt's outputs onto the target image, which the report recovers."""
    import numpy as np
    from PIL import Image

    truth = json.loads((MODELS / "t2i-caption-backdoor_truth.json").read_text())
    code, doc = scan(MODELS / "t2i-caption-backdoor", tmp_path / "out")
    assert code == ExitCode.BACKDOOR, doc["verdict"]
    text = doc["text_trigger"]
    assert truth["trigger"] in text["triggers"] and "collapse" in doc["signals"]
    assert all(not e["fired"] for e in text["evidence"] if e["role"] == "null")
    target = np.asarray(truth["target_image"], dtype=np.float32)
    picture = Image.open(tmp_path / "out" / "recovered_target.png").convert("L")  # enlarged for viewing
    recovered = np.asarray(picture.resize(target.shape[::-1], Image.BOX), dtype=np.float32) / 255
    assert float(((recovered - target) ** 2).mean()) < 0.05


def test_the_shipped_text_to_image_clean_model_is_clean(tmp_path: Path) -> None:
    code, doc = scan(MODELS / "t2i-clean", tmp_path / "out")
    assert code == ExitCode.CLEAN, doc["verdict"]
    assert doc["text_trigger"]["trigger"] is None and doc["text_trigger"]["probed"] > 0
    assert doc["unet_evaluations"] <= 8000
    assert any("caption triggers" in spot for spot in doc["blind_spots"])


def test_a_latent_pipeline_is_scanned_on_decoded_images(tmp_path: Path) -> None:
    """A tiny random LDM through the CLI: the report names the pipeline, the sample grids are images
    of the autoencoder's output size (16x16 grey, not 4-channel latents), the verdict a verdict."""
    from PIL import Image

    from helpers import make_tiny_ldm

    model = make_tiny_ldm(tmp_path / "ldm", seed=0)
    code, doc = scan(model, tmp_path / "out", *FAST_SCAN_FLAGS, *searches_off("stamps"), "--no-inversion")
    assert code in (ExitCode.CLEAN, ExitCode.BACKDOOR), doc
    assert doc["source"]["pipeline_class"] == "LDMPipeline"
    assert doc["text_trigger"] is None
    grid = Image.open(tmp_path / "out" / "samples_clean.png")
    assert grid.mode == "L"  # grey decoded images; latents would have 4 channels


@pytest.mark.slow
def test_the_shipped_latent_examples(tmp_path: Path) -> None:
    """The latent clean model is clean; the latent VillanDiffusion backdoor (trigger a box in the
    latent noise) is not found by the default scan, but never called clean (docs/text-to-image.md)."""
    code, doc = scan(MODELS / "ldm-clean", tmp_path / "clean")
    assert code == ExitCode.CLEAN, doc["verdict"]
    result = runner.invoke(app, ["scan", str(MODELS / "ldm-villandiffusion"), "-q", "--json", str(tmp_path / "b.json")])
    assert result.exit_code in (ExitCode.BACKDOOR, ExitCode.INCONCLUSIVE), result.output
