"""The text-to-image benchmark's metric helpers (``benchmarks.t2i_detection``) and the AMDET anchor
(``benchmarks.t2i_baselines``) on a tiny random-weight Stable Diffusion pipeline. No benchmark runs here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from benchmarks.t2i_baselines import (AmdetSettings, _Encoder, amdet_score, assimilation, hessian_positive_ratio,
                                      splice)
from benchmarks.t2i_detection import auroc, hfaudit_rank, on_trigger, rates

pytestmark = pytest.mark.usefixtures("one_thread")


def test_auroc_known_example() -> None:
    # 0.9 and 0.8 beat both clean scores; 0.3 beats 0.1 and ties 0.3: (2 + 2 + 1.5) / 6
    assert auroc([0.9, 0.8, 0.3], [0.1, 0.3]) == pytest.approx(5.5 / 6)
    assert auroc([1.0], [0.0]) == 1.0
    assert auroc([0.0], [1.0]) == 0.0
    assert math.isnan(auroc([], [0.1]))


def test_tpr_fpr() -> None:
    assert rates([True, True, False, True], [False, True]) == (0.75, 0.5)
    tpr, fpr = rates([], [False])
    assert math.isnan(tpr) and fpr == 0.0


def test_on_trigger_matching() -> None:
    assert on_trigger("zx", "zx")
    assert on_trigger("zx</w>", "zx")
    assert on_trigger(" Coffee ", "coffee")
    assert on_trigger("coffee mug", "coffee")  # contains it
    assert not on_trigger("cofee", "coffee")
    assert not on_trigger(None, "zx")
    assert not on_trigger("zx", None)
    assert not on_trigger("photo", "\u043e")  # a Latin "o" is not the Cyrillic homoglyph
    assert on_trigger("tw\u043e", "\u043e")


def test_hfaudit_rank_orders_verdict_then_score() -> None:
    clean_hi = hfaudit_rank("clean", 0.9, 0.5)
    inconclusive = hfaudit_rank("inconclusive", None, None)
    backdoor_lo = hfaudit_rank("backdoor", 0.1, 0.5)
    assert hfaudit_rank("clean", 0.1, 0.5) < clean_hi < inconclusive < backdoor_lo < hfaudit_rank("backdoor", 0.9, 0.5)


def test_landscape_convexity_and_assimilation() -> None:
    axis = np.linspace(-1, 1, 11)
    x, y = np.meshgrid(axis, axis, indexing="ij")
    assert hessian_positive_ratio(x**2 + y**2) == 1.0
    assert hessian_positive_ratio(-(x**2) - y**2) == 0.0
    assert hessian_positive_ratio(x**2 - y**2) == pytest.approx(0.5)
    same = torch.ones(2, 5, 4)
    assert assimilation(same) == pytest.approx(torch.ones(2))
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    e = torch.full((1, 3), -1.0)
    out = splice(h, e, 1)
    assert out.shape == h.shape and torch.equal(out[:, 0], h[:, 0]) and torch.equal(out[:, 1], e.expand(2, 3))
    assert torch.equal(out[:, 2:], h[:, 1:3])


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from benchmarks.t2izoo.models import make_cond_unet, make_text_encoder, make_vae, t2i_pipeline
    from benchmarks.t2izoo.tokenizer import build_tokenizer

    tok = build_tokenizer()
    folder = tmp_path_factory.mktemp("tiny_sd")
    t2i_pipeline(make_vae(0), make_text_encoder(tok, 0), tok, make_cond_unet(0)).save_pretrained(
        str(folder), safe_serialization=True)
    return folder, make_text_encoder(tok, 1), tok


def test_custom_encoder_matches_the_text_encoder(tiny_sd) -> None:
    _, te, tok = tiny_sd
    ids = tok(["a handwritten seven", "the digit 3, thin strokes"], padding="max_length",
              max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    enc = _Encoder(te)
    with torch.no_grad():
        assert torch.allclose(enc(enc.embed(ids)), te(input_ids=ids).last_hidden_state, atol=1e-5)


def test_amdet_runs_on_a_tiny_pipeline(tiny_sd) -> None:
    folder, anchor, _ = tiny_sd
    s = AmdetSettings(n_prompts=100, epochs=1, grid=8, check_loss=10.0)  # check_loss: force the checks to run
    r = amdet_score(folder, anchor, settings=s)
    assert math.isfinite(r.score)
    assert r.decision in ("backdoor", "clean") and r.flagged == (r.decision == "backdoor")
    assert r.steps == 8 and r.checks >= 1 and r.unet_evaluations == 0 and r.encoder_passes > 0
    assert {"loss", "asr", "same_target", "different_target", "positive_ratio"} <= set(r.gates)
    same = amdet_score(folder, folder, settings=AmdetSettings(n_prompts=50, epochs=1, grid=6))
    assert same.anchor_is_suspect and same.gates["different_target"] == 0.0 and not same.flagged


def test_amdet_anchors_each_member_on_the_base_it_descends_from():
    from benchmarks.t2i_detection import anchor_of
    from benchmarks.t2izoo.build import ALL_RECIPES

    assert anchor_of("cap-image-rare") == "t2i-clean-c"  # a UNet fine-tune of the token-identity base
    assert anchor_of("rick-rare") == "t2i-clean-a"
    assert anchor_of("t2i-clean-b") == "t2i-clean-b"  # a base is its own
    for name, recipe in ALL_RECIPES.items():
        if recipe["kind"] in ("t2i", "cap", "rick", "evil"):
            assert ALL_RECIPES[anchor_of(name)]["kind"] == "t2i"


def test_backdoors_that_did_not_implant_are_reported_apart_not_as_misses():
    from pathlib import Path

    from benchmarks.t2i_detection import CLEAN, WEAK, Member, summary

    def member(name, kind, hit=None):
        hits = {} if hit is None else {"hit_g1": hit / 2, "hit_g3": hit}
        return Member(name, kind, Path("."), Path("."), "k", "test", "t" if hit is not None else None, None, hits)

    ms = [member("c1", CLEAN), member("c2", CLEAN), member("strong", "rickrolling", 0.95),
          member("weak", "rickrolling", 0.4)]
    res = {m.name: {"hfaudit": {"flagged": m.name == "strong", "rank": 2.0 if m.name == "strong" else 0.5,
                                "seconds": 1.0, "unet_evaluations": 10, "on_trigger": m.name == "strong"}}
           for m in ms}
    assert [m.implanted for m in ms] == [False, False, True, False]
    rick = summary(ms, res, "hfaudit", "rickrolling")
    assert (rick.n_pos, rick.tpr) == (1, 1.0)  # the weak one is not a miss of the attack kind
    everything = summary(ms, res, "hfaudit", "all")
    assert (everything.n_pos, everything.n_neg, everything.tpr, everything.fpr) == (1, 2, 1.0, 0.0)
    weak = summary(ms, res, "hfaudit", WEAK)
    assert (weak.n_pos, weak.tpr) == (1, 0.0)
