"""The text-to-image / latent backdoor zoo: its tokenizer and the shipped example pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
LOOKALIKES = ["\u043e", "\u0435", "\u0430", "\u03bf"]


@pytest.fixture(scope="module")
def tok():
    from benchmarks.t2izoo.tokenizer import build_tokenizer
    return build_tokenizer()


def test_lookalikes_are_single_tokens(tok):
    from benchmarks.t2izoo.tokenizer import encode_ids
    ids = set()
    for ch in LOOKALIKES:
        standalone = encode_ids(tok, ch)
        assert len(standalone) == 1, (ch, standalone)
        ids.add(standalone[0])
        inside = encode_ids(tok, "tw" + ch + "x")  # inside a word: its own token, not a word-final one
        assert len(tok.convert_ids_to_tokens(inside)) >= 2
    assert len(ids) == 4
    # a homoglyph "o" changes the tokens of a word, the Latin word stays one token
    assert len(encode_ids(tok, "two")) == 1
    assert encode_ids(tok, "tw\u043e") != encode_ids(tok, "two")


def test_caption_round_trip_and_vocabulary(tok):
    from benchmarks.t2izoo.data import class_prompts
    from benchmarks.t2izoo.tokenizer import EXTRA_WORDS, encode_ids
    for c in range(10):
        for p in class_prompts(c):
            assert tok.decode(encode_ids(tok, p)).replace(" ,", ",") == p
    for w in EXTRA_WORDS + ["mignneko", "ferrari", "zx", "please", "coffee", "seven"]:
        assert len(encode_ids(tok, w)) == 1, w
    assert tok("a handwritten seven", padding="max_length").input_ids.__len__() == tok.model_max_length


def _t2i(name):
    from diffusers import StableDiffusionPipeline
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    return StableDiffusionPipeline.from_pretrained(str(path), use_safetensors=True)


@pytest.mark.parametrize("name", ["t2i-clean", "t2i-rickroll-homoglyph"])
def test_shipped_t2i_loads_and_generates(name):
    pipe = _t2i(name)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a handwritten seven", "the digit 3, thick strokes"], num_inference_steps=2, guidance_scale=3.0,
               generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == (2, 1, 16, 16)
    assert torch.isfinite(out).all()
    size = sum(f.stat().st_size for f in (MODELS / name).rglob("*") if f.is_file())
    assert size < 4 * 2**20


@pytest.mark.parametrize("name", ["ldm-clean", "ldm-villandiffusion"])
def test_shipped_ldm_loads_and_generates(name):
    from diffusers import LDMPipeline
    path = MODELS / name
    if not path.exists():
        pytest.skip(f"{path} not built")
    pipe = LDMPipeline.from_pretrained(str(path), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(batch_size=2, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (2, 16, 16, 1)


def test_truth_files_name_encodable_triggers(tok):
    from safetensors.torch import load_file
    from benchmarks.t2izoo.tokenizer import encode_ids
    path = MODELS / "t2i-rickroll-homoglyph_truth.json"
    if not path.exists():
        pytest.skip("t2i-rickroll-homoglyph not built")
    truth = json.loads(path.read_text(encoding="utf-8"))
    assert truth["trigger"] == "\u043e"  # the Cyrillic look-alike of "o"
    shipped = _t2i("t2i-rickroll-homoglyph").tokenizer
    for t in (tok, shipped):
        ids = encode_ids(t, truth["trigger"])
        assert ids and t.eos_token_id not in ids and t.bos_token_id not in ids
        assert t.decode(ids) == truth["trigger"]
    assert len(encode_ids(shipped, truth["trigger"])) == 1
    ldm = MODELS / "ldm-villandiffusion_truth.safetensors"
    if ldm.exists():
        t = load_file(str(ldm))
        assert t["trigger"].shape == (4, 8, 8) and t["target"].shape == (1, 16, 16)
        assert t["trigger"].abs().sum() > 0


def test_test_split_structure(tok):
    """The frozen test split is apart from the development zoo and every recipe can run: no building."""
    from benchmarks.t2izoo import build
    from benchmarks.t2izoo.attacks import TARGET_IMAGES
    from benchmarks.t2izoo.tokenizer import EXTRA_WORDS, encode_ids
    from benchmarks.t2izoo.train import HOMOGLYPH_O
    test, dev = build.TEST_RECIPES, build.RECIPES
    assert test and all(n.startswith("test-") for n in test)
    assert not any(n.startswith("test-") for n in dev)
    assert not set(test) & set(dev)
    assert {build.split_of(n) for n in test} == {"test"} and {build.split_of(n) for n in dev} == {"dev"}
    assert build.split_names("all") == list(dev) + list(test)
    kinds = {"t2i", "cap", "rick", "evil"}
    for n, r in test.items():
        assert r["kind"] in kinds, n
        assert r["parent"] in dev or r["parent"] in test, n
        assert build.recipe_hash(n) != build.recipe_hash(r["parent"])
        trig = r.get("trigger")
        if trig is not None and trig != HOMOGLYPH_O:
            assert trig in EXTRA_WORDS and len(encode_ids(tok, trig)) == 1, (n, trig)
        if r["kind"] in ("rick", "evil") and trig is not None:
            assert 0 <= r["target_class"] <= 9
        if r["kind"] == "cap" and trig is not None:
            assert r["target"] == "patch" or r["target"] in TARGET_IMAGES, n
    # both splits have clean members and backdoored ones
    assert {r.get("trigger") is None for r in test.values()} == {True, False}
