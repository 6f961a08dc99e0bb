"""The comparison with a named base model: found where a repo names it, followed only where it is
safe to (a local folder; a Hub base only when asked), and reporting which components changed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hfaudit import hub
from hfaudit.basemodel import compare_with_base, named_base
from hfaudit.cli import app
from hfaudit.errors import ExitCode
from hfaudit.safety import static_checks
from helpers import make_tiny_sd, validate_report

runner = CliRunner()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("base") / "tiny-sd")


def _derived(base: Path, folder: Path, edit: str | None = None) -> Path:
    """A copy of ``base`` with one kind of weight edit: ``encoder`` (a text-encoder tensor), ``kv`` (every
    cross-attention key projection), ``unet`` (a convolution), or none."""
    shutil.copytree(base, folder)
    targets = {"encoder": ("text_encoder/model.safetensors", lambda k: k.endswith("layers.0.mlp.fc1.weight")),
               "kv": ("unet/diffusion_pytorch_model.safetensors", lambda k: k.endswith("attn2.to_k.weight")),
               "unet": ("unet/diffusion_pytorch_model.safetensors", lambda k: k == "conv_in.weight")}
    if edit is not None:
        rel, pick = targets[edit]
        state = load_file(str(folder / rel))
        picked = [k for k in state if pick(k)]
        assert picked
        for k in picked:
            state[k] = state[k] + 0.1 * torch.randn(state[k].shape, generator=torch.Generator().manual_seed(0))
        save_file(state, str(folder / rel), metadata={"format": "pt"})
    return folder


def _name(folder: Path, base: str, where: str = "card") -> None:
    if where == "card":
        (folder / "README.md").write_text(f"---\nbase_model: {base}\n---\n# a fine-tune\n")
    else:
        cfg = folder / "unet" / "config.json"
        data = json.loads(cfg.read_text())
        data["_name_or_path"] = base
        cfg.write_text(json.dumps(data))


def _compare(folder: Path, base: str, named_by: str = "test", explicit: bool = False):
    report = static_checks(folder)
    return compare_with_base(folder, report.component_files, base, named_by, explicit=explicit, resolve=hub.resolve)


def test_the_base_is_read_from_the_card_first_then_from_a_component_config(base: Path, tmp_path: Path) -> None:
    model = _derived(base, tmp_path / "model")
    _name(model, str(base / "unet"), where="config")  # a component folder of a pipeline names that pipeline
    assert named_base(model) == (str(base), "unet/config.json _name_or_path")
    _name(model, "org/the-base")
    assert named_base(model) == ("org/the-base", "README.md base_model")
    _name(model, str(model / "unet"), where="config")
    (model / "README.md").unlink()
    assert named_base(model) is None  # its own path, written when it was saved, names nothing


@pytest.mark.parametrize("edit, changed, pattern", [
    ("encoder", {"text_encoder"}, "only the text encoder changed"),
    ("kv", {"unet"}, "cross-attention key/value projections changed"),
    ("unet", {"unet"}, "changed: unet"),
    (None, set(), "identical to base"),
])
def test_the_comparison_names_what_changed(base: Path, tmp_path: Path, edit: str | None, changed: set[str],
                                           pattern: str) -> None:
    model = _derived(base, tmp_path / "model", edit)
    found = _compare(model, str(base))
    assert found.compared, found.reason
    assert {c.component for c in found.components} == {"text_encoder", "unet", "vae"}
    assert {c.component for c in found.components if c.changed} == changed
    assert pattern in found.summary
    if edit == "kv":
        unet = next(c for c in found.components if c.component == "unet")
        assert unet.only_cross_attention_kv and all("attn2.to_k" in k for k, _ in unet.top)


def test_auto_follows_only_an_absolute_local_pipeline_folder(base: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    model = _derived(base, tmp_path / "model", "encoder")
    hub_id = _compare(model, "org/the-base")
    assert not hub_id.compared and "--base" in (hub_id.reason or "")
    monkeypatch.chdir(base.parent)  # "tiny-sd" exists relative to here: a repo must not steer the scan to it
    relative = _compare(model, base.name)
    assert not relative.compared
    not_pipeline = _compare(model, str(base / "unet"))
    assert not not_pipeline.compared and "model_index.json" in (not_pipeline.reason or "")


def test_a_base_of_another_architecture_is_not_compared(base: Path, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """A fine-tune keeps every tensor of its base and its shape; a base that does not is another model,
    whatever tensor names the two happen to share."""
    model = _derived(base, tmp_path / "model")
    found = _compare(model, str(tiny_pipeline_dir))
    assert not found.compared and "not the same architecture" in (found.reason or "")
    assert "unet" in (found.reason or "") and "not compared" in found.summary


def test_an_explicit_base_that_cannot_be_fetched_stops_the_scan_with_a_clean_error(base: Path, tmp_path: Path) -> None:
    model = _derived(base, tmp_path / "model")
    result = runner.invoke(app, ["scan", str(model), "-q", "--base", str(tmp_path / "missing"),
                                 "--json", str(tmp_path / "r.json")])
    assert result.exit_code not in (ExitCode.CLEAN, ExitCode.BACKDOOR)
    assert "Traceback" not in result.output
    assert "base model" in result.output and "missing" in result.output


def test_the_scan_report_carries_the_comparison_and_never_lets_it_decide(base: Path, tmp_path: Path) -> None:
    model = _derived(base, tmp_path / "model", "encoder")
    _name(model, str(base))
    codes = {}
    for flag in ("auto", "none"):
        out = tmp_path / flag
        result = runner.invoke(app, ["scan", str(model), "-o", str(out), "-q", "--budget", "fast", "--base", flag])
        doc = validate_report(json.loads((out / "report.json").read_text()))
        codes[flag] = (result.exit_code, doc["verdict"])
        if flag == "none":
            assert doc["base_model"] is None
            continue
        assert doc["base_model"]["compared"] and "only the text encoder changed" in doc["base_model"]["summary"]
        md = (out / "report.md").read_text()
        assert "### Base model" in md and "| text_encoder | 1/" in md
    assert codes["auto"] == codes["none"]


def test_an_unconditional_fine_tune_is_compared_too(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """A DDPMPipeline whose card names its base (a BadDiffusion fine-tune changes its whole UNet)."""
    from helpers import FAST_SCAN_FLAGS, searches_off

    model = tmp_path / "fine-tune"
    shutil.copytree(tiny_pipeline_dir, model)
    rel = "unet/diffusion_pytorch_model.safetensors"
    state = {k: v + 0.01 for k, v in load_file(str(model / rel)).items()}
    save_file(state, str(model / rel), metadata={"format": "pt"})
    _name(model, str(tiny_pipeline_dir))
    out = tmp_path / "out"
    runner.invoke(app, ["scan", str(model), "-o", str(out), "-q", *FAST_SCAN_FLAGS, *searches_off()])
    doc = validate_report(json.loads((out / "report.json").read_text()))
    base = doc["base_model"]
    assert base["compared"] and base["named_by"] == "README.md base_model"
    unet = next(c for c in base["components"] if c["component"] == "unet")
    assert unet["changed"] == unet["tensors"] > 0 and "changed: unet" in base["summary"]
