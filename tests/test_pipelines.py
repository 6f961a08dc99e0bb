"""Latent (``LDMPipeline``) and text-to-image (``StableDiffusionPipeline``) pipelines load for audit,
safely: every weighted component passes the static checks, loads with its library's own
``from_pretrained``, matches what the stock pipeline computes, and only what the audit needs is
downloaded; ``hfaudit clean`` refuses them (exit 8) before any weights are downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from helpers import UNET_ST, WriteMarker, assert_one_line_error, make_tiny_ldm, make_tiny_sd
from hfaudit import hub as hfhub
from hfaudit.cleaning import clean
from hfaudit.cli import app
from hfaudit.errors import (
    ExitCode,
    RemovalUnsupportedError,
    UnsafeCheckpointError,
    UnsupportedModelError,
)
from hfaudit.hub import resolve
from hfaudit.pipeline import LoadedModel, TextToImageModel, load_for_audit, load_model, load_text_to_image
from hfaudit.safety import static_checks

runner = CliRunner()
TE_ST = "text_encoder/model.safetensors"
VAE_ST = "vae/diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def _sd_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_sd(tmp_path_factory.mktemp("sd") / "tiny-sd")


@pytest.fixture(scope="module")
def _ldm_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_ldm(tmp_path_factory.mktemp("ldm") / "tiny-ldm")


@pytest.fixture
def sd_dir(_sd_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(_sd_template, tmp_path / "sd"))


@pytest.fixture
def ldm_dir(_ldm_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(_ldm_template, tmp_path / "ldm"))


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _frozen_on_cpu(*modules: torch.nn.Module) -> None:
    for module in modules:
        assert not module.training
        assert all(not p.requires_grad and p.device.type == "cpu" for p in module.parameters())


# -------------------------------------------------------------------------------- loading
def test_a_text_to_image_pipeline_loads_for_audit(_sd_template: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    model = load_for_audit(resolve(str(_sd_template)), device="cpu")

    assert isinstance(model, TextToImageModel) and model.pipeline_class == "StableDiffusionPipeline"
    assert isinstance(model.unet, UNet2DConditionModel) and isinstance(model.vae, AutoencoderKL)
    assert isinstance(model.text_encoder, CLIPTextModel)
    assert type(model.tokenizer).__name__.startswith("CLIPTokenizer") and model.tokenizer.model_max_length == 16
    _frozen_on_cpu(model.unet, model.vae, model.text_encoder)
    assert model.latent_shape == (4, 8, 8) and model.image_shape == (1, 16, 16)
    assert model.weights_files == {"text_encoder": TE_ST, "unet": UNET_ST, "vae": VAE_ST}
    assert model.scheduler_config["_class_name"] == "DDIMScheduler" and model.device == torch.device("cpu")
    assert not [f for f in model.findings if f.level == "error"]
    assert isinstance(load_text_to_image(resolve(str(_sd_template)), device="cpu"), TextToImageModel)


@pytest.mark.parametrize("kl", [False, True])
def test_a_latent_pipeline_loads_for_audit(tmp_path: Path, kl: bool) -> None:
    from diffusers import AutoencoderKL, LDMPipeline, UNet2DModel, VQModel

    folder = make_tiny_ldm(tmp_path / "ldm", seed=1, kl=kl)
    model = load_for_audit(resolve(str(folder)), device="cpu")

    assert isinstance(model, LoadedModel) and model.latent and model.pipeline_class == "LDMPipeline"
    assert isinstance(model.unet, UNet2DModel) and isinstance(model.vae, AutoencoderKL if kl else VQModel)
    _frozen_on_cpu(model.unet, model.vae)
    assert model.sample_shape == (3, 8, 8) and model.image_shape == (1, 16, 16)
    assert model.weights_file == UNET_ST
    assert isinstance(load_model(resolve(str(folder)), device="cpu"), LoadedModel)
    # decode: what LDMPipeline computes before it maps to [0, 1] (VQModel quantisation included)
    latents = 3 * torch.randn(5, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    images = model.decode(latents)
    assert images.shape == (5, *model.image_shape) and images.dtype == latents.dtype
    assert float(images.abs().max()) <= 1.0
    stock = LDMPipeline.from_pretrained(folder, use_safetensors=True)
    with torch.no_grad():
        expected = stock.vqvae.decode(latents / stock.vqvae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(images, expected, atol=1e-5)


def test_a_pixel_pipeline_is_unchanged(tiny_pipeline_dir: Path) -> None:
    model = load_model(resolve(str(tiny_pipeline_dir)), device="cpu")
    assert isinstance(load_for_audit(resolve(str(tiny_pipeline_dir)), device="cpu"), LoadedModel)
    assert not model.latent and model.vae is None and model.image_shape == model.sample_shape
    raw = torch.linspace(-3, 3, 2 * 8 * 8).reshape(2, 1, 8, 8).expand(2, *model.sample_shape).contiguous()
    assert torch.equal(model.decode(raw), raw.clamp(-1, 1))


def test_each_loader_refuses_the_other_kind(sd_dir: Path, tiny_pipeline_dir: Path) -> None:
    with pytest.raises(UnsupportedModelError, match="StableDiffusionPipeline is not supported") as err:
        load_model(resolve(str(sd_dir)), device="cpu")
    assert err.value.exit_code == ExitCode.UNSUPPORTED
    with pytest.raises(UnsupportedModelError, match="DDPMPipeline is not supported"):
        load_text_to_image(resolve(str(tiny_pipeline_dir)), device="cpu")


def test_encode_and_decode_match_the_stock_pipeline(_sd_template: Path) -> None:
    from diffusers import StableDiffusionPipeline

    model = load_for_audit(resolve(str(_sd_template)), device="cpu")
    stock = StableDiffusionPipeline.from_pretrained(_sd_template, use_safetensors=True)
    prompts = ["a handwritten seven", "a photo of a red house and a green tree and a blue dog and a cat " * 3, ""]

    got = model.encode(prompts)
    want, _negative = stock.encode_prompt(prompts, torch.device("cpu"), 1, False)

    assert got.shape == (3, 16, 64) and got.device.type == "cpu"
    assert torch.equal(got, want)
    assert torch.equal(model.encode("a cat"), model.encode(["a cat"]))  # one prompt, not its characters
    latents = torch.randn(2, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    images = model.decode(latents)
    assert images.shape == (2, *model.image_shape) and float(images.abs().max()) <= 1.0
    with torch.no_grad():
        expected = stock.vae.decode(latents / stock.vae.config.scaling_factor).sample.clamp(-1, 1)
    assert torch.allclose(images, expected, atol=1e-6)


def test_the_dtype_is_every_components_and_decode_keeps_the_callers(_sd_template: Path) -> None:
    model = load_for_audit(resolve(str(_sd_template)), device="cpu", dtype=torch.float64)
    assert {p.dtype for m in (model.unet, model.vae, model.text_encoder) for p in m.parameters()} == {torch.float64}
    assert model.encode(["a cat"]).dtype == torch.float64
    assert model.decode(torch.zeros(1, *model.latent_shape)).dtype == torch.float32


def test_the_memory_check_counts_every_component(sd_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    report = static_checks(sd_dir)
    assert set(report.parameters) == {"unet", "vae", "text_encoder"}
    total = sum(report.parameters.values())
    monkeypatch.setattr("hfaudit.pipeline.available_memory", lambda device: 4 * report.parameters["unet"] * 2)
    with pytest.raises(UnsupportedModelError, match=f"pipeline's {total:,} parameters"):
        load_for_audit(resolve(str(sd_dir)), device="cpu")


# -------------------------------------------------------------------------- static checks
def test_a_pickle_only_text_encoder_is_refused_and_loads_with_allow_pickle(sd_dir: Path) -> None:
    weights = load_file(str(sd_dir / TE_ST))
    torch.save(weights, sd_dir / "text_encoder" / "pytorch_model.bin")
    (sd_dir / TE_ST).unlink()

    with pytest.raises(UnsafeCheckpointError, match="text_encoder/pytorch_model.bin: pickle-only") as err:
        load_for_audit(resolve(str(sd_dir)), device="cpu")
    assert err.value.exit_code == ExitCode.UNSAFE
    assert ("HFA210", "error") in {(f.rule, f.level) for f in err.value.findings}

    model = load_for_audit(resolve(str(sd_dir)), device="cpu", allow_pickle=True)
    assert model.weights_files["text_encoder"] == "text_encoder/pytorch_model.bin"
    assert ("HFA210", "note", "text_encoder/pytorch_model.bin") in {(f.rule, f.level, f.path) for f in model.findings}
    loaded = model.text_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_a_malicious_text_encoder_pickle_is_never_loaded(sd_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": WriteMarker(marker)}, sd_dir / "text_encoder" / "pytorch_model.bin")
    (sd_dir / TE_ST).unlink()
    with pytest.raises(UnsafeCheckpointError, match="pytorch_model.bin: pickle imports"):
        load_for_audit(resolve(str(sd_dir)), device="cpu", allow_pickle=True)
    assert not marker.exists()


@pytest.mark.parametrize(("path", "edit", "rule", "needle"), [
    (VAE_ST, lambda t: t[sorted(t)[0]].view(-1).__setitem__(0, float("nan")), "HFA201", "NaN or Inf"),
    (TE_ST, lambda t: t.pop(sorted(t)[-1]), "HFA202", "that the text_encoder config needs"),
    ("vqvae/diffusion_pytorch_model.safetensors", lambda t: t[sorted(t)[-1]].view(-1).__setitem__(0, float("inf")),
     "HFA201", "NaN or Inf"),
])
def test_broken_component_weights_are_refused(sd_dir: Path, ldm_dir: Path, path: str, edit, rule: str,
                                              needle: str) -> None:
    folder = ldm_dir if path.startswith("vqvae/") else sd_dir
    tensors = load_file(str(folder / path))
    edit(tensors)
    save_file(tensors, str(folder / path), metadata={"format": "pt"})
    with pytest.raises(UnsafeCheckpointError, match=needle) as err:
        load_for_audit(resolve(str(folder)), device="cpu")
    assert err.value.exit_code == ExitCode.UNSAFE
    assert (rule, path) in {(f.rule, f.path) for f in err.value.findings if f.blocks}


def test_an_older_text_encoder_checkpoint_loads(sd_dir: Path) -> None:
    """CLIP weights as older transformers saved them (Stable Diffusion 1.x/2.x on the Hub): nested under
    ``text_model.``, with integer position ids beside the float weights."""
    tensors = load_file(str(sd_dir / TE_ST))
    old = {f"text_model.{k}": v for k, v in tensors.items()}
    old["text_model.embeddings.position_ids"] = torch.arange(16)[None]
    save_file(old, str(sd_dir / TE_ST), metadata={"format": "pt"})
    model = load_for_audit(resolve(str(sd_dir)), device="cpu")
    loaded = model.text_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())


@pytest.mark.parametrize(("change", "rule", "needle"), [
    (lambda d: _edit_json(d / "model_index.json", vae=["diffusers", "VQModel"]), "HFA102",
     "vae is a VQModel, not a AutoencoderKL"),
    (lambda d: _edit_json(d / "model_index.json", tokenizer=["transformers", "T5Tokenizer"]), "HFA102",
     "tokenizer is a T5Tokenizer"),
    (lambda d: _edit_json(d / "model_index.json", text_encoder=None), "HFA103", "no text_encoder component"),
    (lambda d: _edit_json(d / "tokenizer" / "tokenizer_config.json", tokenizer_class="BertTokenizer"), "HFA104",
     "BertTokenizer"),
    (lambda d: (d / "tokenizer" / "merges.txt").unlink(), "HFA110", "neither tokenizer.json nor vocab.json"),
    (lambda d: (d / "tokenizer" / "merges.txt").write_bytes(b"#" * (4 * 2**20 + 1)), "HFA110", "more than the"),
    (lambda d: _edit_json(d / "text_encoder" / "config.json", num_hidden_layers=10**6), "HFA110", "layers"),
    (lambda d: _edit_json(d / "vae" / "config.json", latent_channels=0), "HFA110", "latent_channels"),
    (lambda d: _edit_json(d / "unet" / "config.json", sample_size=-8), "HFA105", "sample_size"),
])
def test_component_config_findings(sd_dir: Path, change, rule: str, needle: str) -> None:
    change(sd_dir)
    report = static_checks(sd_dir)
    found = [f for f in report.blocking if f.rule == rule]
    assert found and needle in found[0].message, report.findings
    with pytest.raises(UnsupportedModelError):
        report.raise_for_blocking()


def test_a_safety_checker_is_noted_and_never_loaded(sd_dir: Path, tmp_path: Path) -> None:
    _edit_json(sd_dir / "model_index.json", safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
               feature_extractor=["transformers", "CLIPImageProcessor"])
    (sd_dir / "safety_checker").mkdir()
    (sd_dir / "safety_checker" / "config.json").write_text("{not json")  # never read
    (sd_dir / "feature_extractor").mkdir()
    model = load_for_audit(resolve(str(sd_dir)), device="cpu")
    notes = {(f.rule, f.level) for f in model.findings if "safety_checker" in f.message or "feature_extractor" in f.message}
    assert notes == {("HFA109", "note")}


def test_an_sdxl_pipeline_is_refused_naming_what_hfaudit_audits(sd_dir: Path) -> None:
    _edit_json(sd_dir / "model_index.json", _class_name="StableDiffusionXLPipeline")
    with pytest.raises(UnsupportedModelError) as err:
        load_for_audit(resolve(str(sd_dir)), device="cpu")
    assert err.value.exit_code == ExitCode.UNSUPPORTED
    message = str(err.value)
    for name in ("StableDiffusionXLPipeline", "not supported", "DDPMPipeline", "LDMPipeline", "StableDiffusionPipeline"):
        assert name in message, message
    assert len(message.splitlines()) == 1


# ------------------------------------------------------------------------------ downloads
def _sd_repo_files(folder: Path) -> dict[str, bytes]:
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    index = json.loads(files["model_index.json"])
    index.update(safety_checker=["stable_diffusion", "StableDiffusionSafetyChecker"],
                 feature_extractor=["transformers", "CLIPImageProcessor"])
    files["model_index.json"] = json.dumps(index).encode()
    return files


def _fetched(hub, since: int) -> set[str]:
    out = set()
    for _method, path, _query in hub.requests[since:]:
        parts = path.split("/")
        if len(parts) > 5 and parts[3] == "resolve":
            out.add("/".join(parts[5:]))
    return out


def test_only_what_the_audit_needs_is_downloaded(hub, _sd_template: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = _sd_repo_files(_sd_template)
    weights = files[TE_ST]
    extra = {
        "README.md": b"# tiny sd\n",
        "safety_checker/config.json": b'{"architectures": ["StableDiffusionSafetyChecker"]}',
        "safety_checker/model.safetensors": weights,
        "safety_checker/pytorch_model.bin": b"\x80\x04not-loaded",
        "feature_extractor/preprocessor_config.json": b"{}",
        "text_encoder/model.fp16.safetensors": weights,
        "text_encoder/pytorch_model.bin": b"\x80\x04not-loaded",
        "unet/diffusion_pytorch_model.fp16.safetensors": files[UNET_ST],
        "vae/diffusion_pytorch_model.fp16.safetensors": files[VAE_ST],
        "v1-5-pruned-emaonly.ckpt": b"\x80\x04pickle",
        "v1-5-pruned-emaonly.safetensors": weights,
    }
    repo = hub.new_repo_id("tiny-sd")
    hub.add_repo(repo, files={**files, **extra})
    before = len(hub.requests)

    src = hfhub.resolve(repo, endpoint=hub.url)

    expected = set(files) | {"README.md"}
    assert _fetched(hub, before) == expected
    assert {"tokenizer/vocab.json", "tokenizer/merges.txt", "tokenizer/tokenizer_config.json"} <= expected
    model = load_for_audit(src, device="cpu")
    assert isinstance(model, TextToImageModel)
    rules = {(f.rule, f.path) for f in model.findings}
    assert ("HFA213", "text_encoder/pytorch_model.bin") in rules and ("HFA213", "safety_checker/pytorch_model.bin") in rules
    assert not any(f.level == "error" for f in model.findings)
    # offline, the cache holds all the audit needs: the safety checker is not missing
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hfhub.resolve(repo, endpoint=hub.url).local_dir == src.local_dir


@pytest.mark.parametrize("kind", ["sd", "ldm"])
def test_clean_refuses_latent_and_text_to_image_pipelines_with_exit_8(
        kind: str, sd_dir: Path, ldm_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = sd_dir if kind == "sd" else ldm_dir
    cls = "StableDiffusionPipeline" if kind == "sd" else "LDMPipeline"
    out = tmp_path / "cleaned"
    monkeypatch.setattr("hfaudit.cleaning.load_model", lambda *a, **k: pytest.fail("loaded the model"))

    with pytest.raises(RemovalUnsupportedError, match=f"removal is not supported for {cls} yet") as err:
        clean(str(folder), output_dir=out)
    assert err.value.exit_code == ExitCode.REMOVAL_UNSUPPORTED == 8

    res = runner.invoke(app, ["clean", str(folder), "-o", str(out), "-q", "--json", str(tmp_path / "r.json")])
    assert_one_line_error(res, ExitCode.REMOVAL_UNSUPPORTED, cls, "not supported", "scan")
    assert not out.exists() and not (tmp_path / "r.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["sd", "ldm"])


@pytest.mark.parametrize("kind", ["sd", "ldm"])
def test_clean_of_a_hub_repo_stops_after_model_index(kind: str, hub_env, _sd_template: Path, _ldm_template: Path,
                                                      tmp_path: Path) -> None:
    folder = _sd_template if kind == "sd" else _ldm_template
    repo = hub_env.new_repo_id(f"clean-{kind}")
    hub_env.add_repo(repo, folder)
    before = len(hub_env.requests)
    out = tmp_path / "cleaned"

    res = runner.invoke(app, ["clean", repo, "-o", str(out), "-q"])

    assert_one_line_error(res, ExitCode.REMOVAL_UNSUPPORTED, "removal is not supported")
    assert _fetched(hub_env, before) == {"model_index.json"}
    assert not out.exists()


def test_a_v_prediction_text_to_image_pipeline_is_audited_and_sampled_as_diffusers_does(sd_dir: Path,
                                                                                        ldm_dir: Path) -> None:
    """Stable Diffusion 2.x's 768 models predict v: a text-to-image audit only samples, through
    schedulers that read ``prediction_type``, so it takes them, and its sampling agrees with the stock
    pipeline's; the unconditional searches assume epsilon, so an LDM predicting v stays refused."""
    from diffusers import StableDiffusionPipeline

    from hfaudit.sampling import sample

    for folder in (sd_dir, ldm_dir):
        _edit_json(folder / "scheduler" / "scheduler_config.json", prediction_type="v_prediction",
                   set_alpha_to_one=True)
    model = load_for_audit(resolve(str(sd_dir)), device="cpu")
    assert isinstance(model, TextToImageModel) and model.scheduler_config["prediction_type"] == "v_prediction"
    x_T = torch.randn((2, *model.latent_shape), generator=torch.Generator().manual_seed(0))
    cond = model.encode(["a handwritten seven", "a small house"])
    ours = sample(model.unet, model.scheduler_config, x_T, sampler="ddim", steps=3, condition=cond)
    pipe = StableDiffusionPipeline.from_pretrained(str(sd_dir), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    stock = pipe(["a handwritten seven", "a small house"], latents=x_T.clone(), guidance_scale=1.0,
                 num_inference_steps=3, output_type="latent").images
    assert torch.allclose(ours, stock, atol=1e-4)
    result = runner.invoke(app, ["scan", str(ldm_dir), "-q"])
    assert result.exit_code == ExitCode.UNSUPPORTED and "epsilon only" in result.output
