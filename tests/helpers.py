"""Small helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import jsonschema
import torch
from diffusers import DDPMScheduler

from hfaudit import report
from hfaudit.hub import ResolvedSource
from hfaudit.pipeline import LoadedModel

UNET_ST = "unet/diffusion_pytorch_model.safetensors"
UNET_BIN = "unet/diffusion_pytorch_model.bin"
FAST_SCAN_FLAGS = ["--budget", "thorough", "--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2"]
"""A scan small enough for unit tests on the tiny pipeline: the ``thorough`` budget's searches at
full size, every candidate fully probed (turn off the searches a test is not about with
:func:`searches_off`)."""
SEARCHES = ("blackbox", "midstep", "ode", "stamps")
"""The scan's optional searches, each with a ``--<name>/--no-<name>`` flag."""


def searches_off(*keep: str) -> list[str]:
    """``--no-<name>`` for every optional search but ``keep``: a CLI test runs only what it tests."""
    return [f"--no-{name}" for name in SEARCHES if name not in keep]


class WriteMarker:
    """Unpickling this writes ``path``: the proof that nothing was unpickled is that it never appears."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class ToyBackdoorUNet(torch.nn.Module):
    """A hand-built denoiser with a planted backdoor, for tests of the searches: it predicts
    ``x0 = target`` where :meth:`gate` opens on its input's top-left 3x3 patch, and a
    noise-dependent image ``0.8 tanh(x)`` elsewhere; its noise prediction follows from that ``x0``
    (DDPM schedule, 1000 steps). Subclasses say when the gate opens."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        size = target.shape[-1]
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.register_buffer("abar", DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.clone())
        region = torch.zeros(1, size, size, dtype=torch.bool)
        region[:, :3, :3] = True
        self.register_buffer("region", region)
        self.register_buffer("target", target)
        self.config = types.SimpleNamespace(sample_size=size, in_channels=1)

    def gate(self, patch: torch.Tensor, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 1, 1)`` in [0, 1] from the ``(B, 9)`` patch pixels and ``sqrt(abar_t)``, ``sqrt(1 - abar_t)``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor, t) -> types.SimpleNamespace:
        t = torch.as_tensor(t, device=x.device).long().reshape(-1)
        ab = self.abar[t].view(-1, 1, 1, 1).to(x.dtype)
        s, q = ab.sqrt(), (1 - ab).sqrt()
        gate = self.gate(x[:, self.region], s, q)
        x0 = gate * self.target + (1 - gate) * 0.8 * torch.tanh(x)
        return types.SimpleNamespace(sample=self.scale * (x - s * x0) / q)


def toy_model(unet: torch.nn.Module, scheduler_config: dict) -> LoadedModel:
    """A hand-built toy denoiser as ``detect`` takes a loaded pipeline (on the CPU, no folder behind it)."""
    src = ResolvedSource(source="toy", local_dir=Path("."), repo_id=None, revision=None, commit_sha=None,
                         is_local=True, files=[])
    return LoadedModel(unet=unet, scheduler_config=scheduler_config, pipeline_class="DDPMPipeline", source=src,
                       device=torch.device("cpu"), weights_file="toy")


TINY_WORDS = ("a", "of", "the", "and", "photo", "handwritten", "digit", "zero", "one", "two", "three", "four",
              "five", "six", "seven", "eight", "nine", "cat", "dog", "red", "blue", "green", "house", "tree")
"""Whole words of the tiny CLIP tokenizer's vocabulary (other text falls back to single characters)."""


def tiny_clip_tokenizer(folder: Path, words: tuple[str, ...] = TINY_WORDS, max_length: int = 16):
    """A CLIP BPE tokenizer built in code (the 256 byte characters, each with ``</w>``, and merges that
    make each of ``words`` one token); its vocabulary files are written to ``folder``."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    merges: list[str] = []
    tokens = chars + [c + "</w>" for c in chars]
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:  # BPE with the merges so far (lowest rank first), then new merges left to right
            ranked = [(merges.index(f"{a} {b}"), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))
                      if f"{a} {b}" in merges]
            i = min(ranked)[1] if ranked else 0
            if not ranked:
                merges.append(f"{parts[0]} {parts[1]}")
                tokens.append(parts[0] + parts[1])
            parts = parts[:i] + [parts[i] + parts[i + 1]] + parts[i + 2:]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)


def make_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Save a random-weight tiny ``StableDiffusionPipeline`` (SD 1.x layout: CLIP tokenizer and text
    encoder, ``AutoencoderKL`` on 1-channel 32x32 images, ``UNet2DConditionModel`` on 4x8x8 latents,
    DDIM; no safety checker) with safetensors to ``folder``; returns ``folder``."""
    import tempfile

    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    with tempfile.TemporaryDirectory() as tmp, torch.random.fork_rng():
        torch.manual_seed(seed)
        tokenizer = tiny_clip_tokenizer(Path(tmp))
        vocab = tokenizer.get_vocab()
        eos = vocab["<|endoftext|>"]
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            max_position_embeddings=tokenizer.model_max_length, bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos, pad_token_id=eos))
        vae = AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                            up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=4,
                            layers_per_block=1, norm_num_groups=16, sample_size=16)
        unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64,
                                    layers_per_block=1, attention_head_dim=8, norm_num_groups=16)
        scheduler = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                                ).save_pretrained(folder, safe_serialization=True)
        # the tokenizer files of the Stable Diffusion repos on the Hub: vocab.json and merges.txt
        for name in ("vocab.json", "merges.txt"):
            shutil.copy(Path(tmp) / name, folder / "tokenizer" / name)
        (folder / "tokenizer" / "tokenizer.json").unlink()
    return folder


def make_tiny_ldm(folder: Path, seed: int = 0, kl: bool = False) -> Path:
    """Save a random-weight tiny ``LDMPipeline`` (a ``VQModel``, or with ``kl`` an ``AutoencoderKL``, on
    1-channel 16x16 images; a ``UNet2DModel`` on 3x8x8 latents; DDIM) with safetensors to ``folder``;
    returns ``folder``."""
    from diffusers import AutoencoderKL, DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

    folder = Path(folder)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        blocks = dict(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                      up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64), latent_channels=3,
                      layers_per_block=1, norm_num_groups=16, sample_size=16)
        vqvae = AutoencoderKL(**blocks) if kl else VQModel(**blocks, num_vq_embeddings=64, vq_embed_dim=3)
        unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                           down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), layers_per_block=1, norm_num_groups=16)
        LDMPipeline(vqvae=vqvae, unet=unet, scheduler=DDIMScheduler()).save_pretrained(folder, safe_serialization=True)
    return folder


SCHEMA = json.loads(report.SARIF_SCHEMA_FILE.read_text())
"""The official SARIF 2.1.0 schema, shipped in the package."""


def validate_sarif(text: str) -> dict:
    """The official schema, then what GitHub code scanning additionally needs of every result."""
    doc = json.loads(text)
    jsonschema.Draft4Validator(SCHEMA, format_checker=jsonschema.FormatChecker()).validate(doc)
    assert doc["version"] == "2.1.0"
    (run,) = doc["runs"]
    category = run["automationDetails"]["id"]  # one analysis per model (a category of code scanning)
    assert category.startswith("hfaudit/") and category.endswith("/") and len(category) > len("hfaudit//"), category
    bases = run.get("originalUriBaseIds", {})
    for base in bases.values():
        assert base["uri"].startswith(("https://", "http://")) and base["uri"].endswith("/"), base
    rules = run["tool"]["driver"]["rules"]
    ids = [r["id"] for r in rules]
    assert len(ids) == len(set(ids))
    for res in run["results"]:
        assert res["ruleId"] in ids and ids[res["ruleIndex"]] == res["ruleId"]
        assert res["level"] in ("error", "warning", "note") and res["message"]["text"].strip()
        (loc,) = res["locations"]
        uri = loc["physicalLocation"]["artifactLocation"]["uri"]
        assert uri and not uri.startswith(("/", "file:", "http")) and "\\" not in uri, uri  # relative to the repo
        base_id = loc["physicalLocation"]["artifactLocation"].get("uriBaseId")
        assert base_id is None or base_id in bases, base_id  # a Hub model's files: relative to its commit
        assert loc["physicalLocation"]["region"]["startLine"] >= 1
        assert res["partialFingerprints"]["primaryLocationLineHash"]
    for rule in rules:
        sev = rule["properties"].get("security-severity")
        assert sev is None or 0 <= float(sev) <= 10
    return doc


REPORT_SCHEMA = json.loads(report.REPORT_SCHEMA_FILE.read_text())
"""hfaudit's own JSON Schema of every JSON report (scan, clean, error), shipped in the package."""
_REPORT_VALIDATOR = jsonschema.Draft202012Validator(REPORT_SCHEMA,
                                                    format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def validate_report(doc: dict | str) -> dict:
    """A JSON report (its dict or its text, as written: strict JSON) checked against the shipped schema."""
    parsed = json.loads(doc if isinstance(doc, str) else report.to_json(doc))
    _REPORT_VALIDATOR.validate(parsed)
    return parsed


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes: 'nothing written to the source' means this is unchanged."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_one_line_error(result, code: int, *needles: str) -> str:
    """Exit ``code``, exactly one line on stderr (``hfaudit: error: ...``) holding every needle
    (case-insensitive), nothing on stdout, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output)
    err = result.stderr.strip()
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(err.splitlines()) == 1, err
    assert err.startswith("hfaudit: error:"), err
    for needle in needles:
        assert needle.lower() in err.lower(), err
    assert result.stdout == ""
    return err


def parse_github_output(text: str) -> dict[str, str]:
    """``$GITHUB_OUTPUT`` as the runner reads it (``k=v`` and ``k<<DELIM`` blocks)."""
    lines, out, i = text.splitlines(), {}, 0
    while i < len(lines):
        if "<<" in lines[i] and "=" not in lines[i].split("<<")[0]:
            name, delim = lines[i].split("<<", 1)
            end = lines.index(delim, i + 1)
            out[name] = "\n".join(lines[i + 1:end])
            i = end + 1
        else:
            name, _, value = lines[i].partition("=")
            out[name] = value
            i += 1
    return out
