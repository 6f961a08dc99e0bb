"""The same scan and clean on a CUDA device: skipped where there is none (CI has none).

Run them on a GPU machine with ``python -m pytest -m cuda tests/test_cuda.py``. What they pin: nothing in
the detection or removal path assumes the CPU (tensors meet on one device, reports and PNGs are written
from GPU results), Accelerate's automatic choice is the GPU, and the two devices agree on what a trigger
does to the same seeded noise (noise is drawn on the CPU generator and moved, ``seeding.randn``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hfaudit import scan
from hfaudit.cleaning import clean
from hfaudit.devices import resolve_device
from hfaudit.errors import ExitCode
from hfaudit.hub import resolve
from hfaudit.pipeline import load_model
from hfaudit.remove.verify import measure_trigger
from hfaudit.results import BACKDOOR, CLEAN
from hfaudit.sampling import to_unit

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"
TRUTH = load_file(str(MODELS / "backdoor_truth.safetensors")) if (MODELS / "backdoor_truth.safetensors").exists() else {}


def test_automatic_device_is_the_gpu() -> None:
    assert resolve_device(None).type == "cuda"
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("model_name", ["digits-baddiffusion", "digits-clean"])
def test_a_trigger_does_the_same_on_both_devices(model_name: str) -> None:
    """The shipped true trigger under the same seed: ASR and mean SSIM to the target agree across
    devices (cuDNN's TF32 convolutions and kernel order differ, so not bit for bit)."""
    effects = {}
    for dev in ("cpu", "cuda"):
        model = load_model(resolve(str(MODELS / model_name)), device=dev)
        effects[dev], _ = measure_trigger(model.unet, model.scheduler_config, TRUTH["trigger"],
                                          to_unit(TRUTH["target"]), n_samples=128, seed=7, batch_size=128)
    for cpu, gpu in zip(effects["cpu"].probes, effects["cuda"].probes):
        assert (cpu.sampler, cpu.steps) == (gpu.sampler, gpu.steps)
        assert abs(cpu.asr - gpu.asr) <= 0.05, (model_name, cpu, gpu)
        assert abs(cpu.mean_ssim - gpu.mean_ssim) <= 0.05, (model_name, cpu, gpu)
    asr = {p.sampler: p.asr for p in effects["cuda"].probes}
    if model_name == "digits-baddiffusion":
        assert asr["ddpm"] >= 0.8, asr  # an SDE-trained backdoor: it fires under DDPM
    else:
        assert max(asr.values()) <= 0.05, asr


@pytest.fixture(scope="module")
def scans() -> dict:
    return {name: scan(str(MODELS / name), device="cuda")
            for name in ("digits-baddiffusion", "digits-clean", "digits-trojdiff-patch")}


def test_scan_on_cuda_flags_the_backdoor_and_recovers_its_target(scans: dict) -> None:
    r = scans["digits-baddiffusion"]
    assert r.settings["device"].startswith("cuda")
    assert r.verdict == BACKDOOR and r.exit_code == ExitCode.BACKDOOR
    assert r.score >= r.threshold + 0.1 and r.control_score < r.threshold
    mse = float((r.recovered_target.cpu() - to_unit(TRUTH["target"])).pow(2).mean())
    assert mse < 1e-2, mse


def test_scan_on_cuda_passes_the_clean_model(scans: dict) -> None:
    r = scans["digits-clean"]
    assert r.verdict == CLEAN and r.exit_code == ExitCode.CLEAN and r.margin < -0.2


def test_stamp_screen_on_cuda_finds_the_trojdiff_patch(scans: dict) -> None:
    r = scans["digits-trojdiff-patch"]
    truth = load_file(str(MODELS / "digits-trojdiff-patch_truth.safetensors"))
    assert r.verdict == BACKDOOR and "stamp" in r.fired_methods
    mse = float((r.recovered_target.cpu() - to_unit(truth["target"])).pow(2).mean())
    assert mse < 0.02, mse


def test_cli_scan_picks_the_gpu_and_writes_every_report(tmp_path: Path) -> None:
    """No --device: Accelerate's choice; the JSON, SARIF, Markdown and PNGs come from GPU tensors."""
    out = tmp_path / "report"
    cmd = [sys.executable, "-c", "from hfaudit.cli import main; main()", "scan", str(MODELS / "digits-baddiffusion"),
           "-q", "-o", str(out), "--json", str(tmp_path / "r.json"), "--sarif", str(tmp_path / "r.sarif"),
           "--markdown", str(tmp_path / "r.md")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == int(ExitCode.BACKDOOR), proc.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["verdict"] == BACKDOOR and report["settings"]["device"].startswith("cuda")
    assert json.loads((tmp_path / "r.sarif").read_text())["runs"][0]["results"]
    pngs = list(out.glob("*.png"))
    assert len(pngs) >= 2 and all(p.stat().st_size > 0 for p in pngs)


def test_clean_on_cuda_saves_a_copy_stock_diffusers_loads_on_the_cpu(tmp_path: Path) -> None:
    """The whole removal (prune, fine-tune, verify) on the GPU; the saved safetensors copy then loads
    with stock diffusers on the CPU, and there the true trigger no longer works."""
    from diffusers import UNet2DModel

    out = tmp_path / "cleaned"
    result = clean(str(MODELS / "digits-baddiffusion"), output_dir=out, device="cuda")
    assert result.status == "cleaned" and result.exit_code == 0, result.problems
    assert result.rescan.verdict == CLEAN
    unet = UNet2DModel.from_pretrained(str(out / "unet")).to("cpu").eval()
    model = load_model(resolve(str(out)), device="cpu")
    effect, _ = measure_trigger(unet, model.scheduler_config, TRUTH["trigger"], to_unit(TRUTH["target"]),
                                n_samples=128, seed=1000, batch_size=128)
    assert max(p.asr for p in effect.probes) <= 0.02, effect.probes
