"""Text-to-image audit (``hfaudit.detect.vocab``, ``hfaudit.detect.t2i``) on tiny random pipelines with a
backdoor written into them by hand: each signal must see its own kind of backdoor, and ordinary tokens
must not fire."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hfaudit.detect.t2i import TextScanConfig, detect_text_to_image, vocabulary_prompts
from hfaudit.detect.vocab import (
    cross_attentions,
    encode_ids,
    prompt_ids,
    robust_z,
    sweep_vocabulary,
    token_ids_of,
    with_token,
)
from hfaudit.hub import resolve
from hfaudit.pipeline import TextToImageModel, load_for_audit

SMALL = TextScanConfig(n_prompts=4, sweep_prompts=4, probe_tokens=40, screen_tokens=6, screen_prompts=4, screen_seeds=2,
                       confirm_tokens=2, confirm_prompts=4, confirm_seeds=3, null_tokens=3, steps=4,
                       max_evaluations=None)


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpers import make_tiny_sd

    folder = tmp_path_factory.mktemp("t2i") / "tiny-sd"
    make_tiny_sd(folder, seed=0)
    return folder


def _load(folder: Path) -> TextToImageModel:
    model = load_for_audit(resolve(str(folder)), device="cpu")
    assert isinstance(model, TextToImageModel)
    return model


class HijackedEncoder(torch.nn.Module):
    """A text encoder that maps every prompt containing ``trigger`` to one fixed embedding (what a
    Rickrolling-style encoder does) and leaves the others alone."""

    def __init__(self, inner: torch.nn.Module, trigger: int, target_ids: torch.Tensor) -> None:
        super().__init__()
        self.inner, self.trigger = inner, trigger
        self.register_buffer("target_ids", target_ids)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor]:
        out = self.inner(ids)[0]
        hit = (ids == self.trigger).any(1)
        if bool(hit.any()):
            target = self.inner(self.target_ids[None, : ids.shape[1]])[0]
            out = torch.where(hit[:, None, None], target.expand_as(out), out)
        return (out,)


def _spread(model: TextToImageModel) -> None:
    """Spread the random encoder's tokens apart, as training does: at init its position embeddings
    dominate and every prompt ends in nearly the same state, which no trained encoder does."""
    emb = model.text_encoder.get_input_embeddings().weight
    emb.data = torch.randn(emb.shape, generator=torch.Generator().manual_seed(0))


def _word(model: TextToImageModel, rank: int) -> int:
    words = [i for t, i in sorted(model.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
             if t.endswith("</w>") and t[:-4].isalpha() and len(t) > 5]
    return words[rank]


def _kv_edit(model: TextToImageModel, prompts: list[str]) -> tuple[int, int]:
    """An EvilEdit-style rank-one edit of every cross-attention key and value projection, so that one
    word's keys and values become another's where the scan reads them (the end of each prompt);
    returns ``(trigger, target)``. The encoder is spread first: at init, an edit of one token would
    move every other token's keys alike."""
    _spread(model)
    frame = token_ids_of(model.tokenizer)
    trigger, target = _word(model, 2), _word(model, 5)

    def context(token: int) -> torch.Tensor:
        out = []
        for p in prompts:
            base = prompt_ids(model.tokenizer, p)
            out.append(encode_ids(model.text_encoder, torch.tensor([with_token(base, token, frame, None)]))[0, len(base)])
        return torch.stack(out).mean(0)

    c_trig, c_tgt = context(trigger), context(target)
    for attn in cross_attentions(model.unet):
        for proj in (attn.to_k, attn.to_v):
            w = proj.weight.data
            proj.weight.data = w + torch.outer(w @ (c_tgt - c_trig), c_trig) / (c_trig @ c_trig)
    return trigger, target


def test_robust_z_puts_an_outlier_far_out_and_the_crowd_near_zero() -> None:
    x = torch.cat([torch.linspace(-1, 1, 99), torch.tensor([20.0])])
    z = robust_z(x)
    assert z[-1] > 10
    assert z[:-1].abs().max() < 2


def test_with_token_frames_a_prompt_like_the_pipeline(tiny_sd: Path) -> None:
    model = _load(tiny_sd)
    frame = token_ids_of(model.tokenizer)
    base = prompt_ids(model.tokenizer, "a handwritten seven")
    seq = with_token(base, 5, frame, frame.max_length)
    stock = model.tokenizer("a handwritten seven", padding="max_length", max_length=frame.max_length)["input_ids"]
    n = len(base)
    assert seq[:n] == stock[:n]  # start token and words as the pipeline tokenises them
    assert seq[n] == 5 and seq[n + 1] == frame.eos and len(seq) == frame.max_length
    # the embeddings the sweep computes equal the pipeline's own for the same prompt
    plain = torch.tensor([with_token(base, None, frame, frame.max_length)])
    assert torch.allclose(encode_ids(model.text_encoder, plain), model.encode(["a handwritten seven"]), atol=1e-5)


def test_the_sweep_ranks_an_encoder_hijack_first(tiny_sd: Path) -> None:
    model = _load(tiny_sd)
    _spread(model)
    trigger = _word(model, 3)
    target = torch.tensor(model.tokenizer("a handwritten zero", padding="max_length",
                                          max_length=model.tokenizer.model_max_length)["input_ids"])
    encoder = HijackedEncoder(model.text_encoder, trigger, target)
    prompts = vocabulary_prompts(model.tokenizer, 4, seed=0)
    sweep = sweep_vocabulary(encoder, model.unet, model.tokenizer, prompts)
    assert sweep.ranked(1) == [trigger]
    assert float(sweep.z["hijack"][sweep.token_ids == trigger][0]) > 10


def test_the_sweep_ranks_a_key_value_edit_first(tiny_sd: Path) -> None:
    """An EvilEdit-style rank-one edit of every cross-attention key and value projection, so that
    one token's keys and values become another's: the key/value agreement score sees it."""
    model = _load(tiny_sd)
    prompts = vocabulary_prompts(model.tokenizer, 4, seed=0)
    trigger, target = _kv_edit(model, prompts)
    sweep = sweep_vocabulary(model.text_encoder, model.unet, model.tokenizer, prompts)
    z = sweep.z["kv_agreement"]
    assert int(sweep.token_ids[torch.argmax(z)]) == trigger
    assert int(sweep.neighbour[sweep.token_ids == trigger][0]) == target
    assert float(z.max()) > 6


def test_detection_confirms_an_encoder_hijack_and_names_its_trigger(tiny_sd: Path) -> None:
    model = _load(tiny_sd)
    _spread(model)
    trigger = _word(model, 3)
    target = torch.tensor(model.tokenizer("a handwritten zero", padding="max_length",
                                          max_length=model.tokenizer.model_max_length)["input_ids"])
    model.text_encoder = HijackedEncoder(model.text_encoder, trigger, target)
    found = detect_text_to_image(model, SMALL)
    assert found.backdoor
    assert found.report.trigger == model.tokenizer.decode([trigger]).strip()
    best = next(e for e in found.report.evidence if e.fired)
    assert "hijack" in best.fired and best.hijack > 0.9
    nulls = [e for e in found.report.evidence if e.role == "null"]
    assert len(nulls) == SMALL.null_tokens and all(not e.fired for e in nulls)
    probe = (SMALL.probe_tokens + SMALL.n_prompts) * 2 * SMALL.probe_steps
    assert found.unet_evaluations <= probe + SMALL.screen_evaluations + 10 * SMALL.set_evaluations


def test_an_untouched_model_is_clean_and_its_cost_is_counted(tiny_sd: Path) -> None:
    model = _load(tiny_sd)
    found = detect_text_to_image(model, SMALL)
    assert not found.backdoor and found.report.trigger is None
    assert all(not e.fired for e in found.report.evidence)
    assert found.unet_evaluations == sum(found.evaluations.values())
    assert found.evaluations["probe"] >= SMALL.probe_tokens * 2 * SMALL.probe_steps
    assert found.unet_evaluations >= SMALL.screen_evaluations + (1 + SMALL.null_tokens) * SMALL.set_evaluations


def test_a_cap_below_what_any_verdict_needs_is_a_usage_error() -> None:
    from hfaudit.errors import UsageError

    cfg = TextScanConfig(max_evaluations=100)
    with pytest.raises(UsageError, match="at least"):
        cfg.validate()


class MarkedEncoder(torch.nn.Module):
    """The text encoder as it is, except that a prompt with ``trigger`` carries a mark in its padding
    positions: the vocabulary sweep (which encodes prompts without padding) cannot see it, the UNet
    (which reads every position, as Stable Diffusion's does) can."""

    def __init__(self, inner: torch.nn.Module, trigger: int, eos: int) -> None:
        super().__init__()
        self.inner, self.trigger, self.eos = inner, trigger, eos

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor]:
        out = self.inner(ids)[0].clone()
        hit = (ids == self.trigger).any(1)
        first_eos = (ids == self.eos).float().argmax(1)
        pad = torch.arange(ids.shape[1])[None] > first_eos[:, None]
        out[..., 0] += 50.0 * (hit[:, None] & pad).float()
        return (out,)


class FixedImageUNet(torch.nn.Module):
    """A UNet that denoises to one fixed latent whenever the mark is in its conditioning (what a UNet
    fine-tuned on poisoned captions learns), and as before otherwise."""

    def __init__(self, inner: torch.nn.Module, target: torch.Tensor, abar: torch.Tensor) -> None:
        super().__init__()
        self.inner = inner
        self.register_buffer("target", target)
        self.register_buffer("abar", abar)
        self.config = inner.config

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    def forward(self, x: torch.Tensor, t: torch.Tensor | int, encoder_hidden_states: torch.Tensor):
        out = self.inner(x, t, encoder_hidden_states=encoder_hidden_states)
        marked = encoder_hidden_states[:, -1, 0] > 25.0
        if bool(marked.any()):
            a = self.abar[int(t)]
            eps = (x - a.sqrt() * self.target) / (1 - a).sqrt()
            out.sample = torch.where(marked[:, None, None, None], eps, out.sample)
        return out


def test_a_unet_caption_backdoor_the_sweep_cannot_see_is_found_by_its_behaviour(tiny_sd: Path) -> None:
    from dataclasses import replace

    from hfaudit.sampling import alphas_cumprod_of

    model = _load(tiny_sd)
    prompts = " ".join(vocabulary_prompts(model.tokenizer, SMALL.n_prompts, SMALL.seed))
    trigger = next(t for t in range(3, 30) if model.tokenizer.decode([_word(model, t)]).strip() not in prompts)
    trigger = _word(model, trigger)
    frame = token_ids_of(model.tokenizer)
    model.text_encoder = MarkedEncoder(model.text_encoder, trigger, frame.eos)
    target = torch.linspace(-2, 2, int(torch.tensor(model.latent_shape).prod())).reshape(model.latent_shape)
    model.unet = FixedImageUNet(model.unet, target, alphas_cumprod_of(model.scheduler_config))
    found = detect_text_to_image(model, replace(SMALL, probe_tokens=None))
    assert found.backdoor, [(e.text, e.collapse, e.fixation) for e in found.report.evidence]
    assert found.report.trigger == model.tokenizer.decode([trigger]).strip()
    best = next(e for e in found.report.evidence if e.fired)
    assert "collapse" in best.fired and best.fixation > 0.9
    # the sweep did not mark its weights: behaviour found it
    assert all(abs(v) < SMALL.structural_z for k, v in best.sweep.items() if k.endswith("_z"))
    assert not any(r["structural"] for r in found.report.screen if r["id"] == trigger)


def test_many_hijacking_tokens_do_not_crowd_out_an_edited_one() -> None:
    """The tokens sent to confirmation take turns between the two weight signals: a model whose
    encoder lets many tokens hijack the prompts (small encoders do) still gets its one key/value
    outlier generated."""
    from hfaudit.detect.t2i import _structural
    from hfaudit.detect.vocab import VocabSweep

    n = 200
    gen = torch.Generator().manual_seed(0)
    hijack = torch.randn(n, generator=gen)
    hijack[:20] = torch.linspace(40, 20, 20)  # twenty hijacking tokens far beyond any kv score
    kv = torch.randn(n, generator=gen)
    kv[150] = 12.0  # one edited token
    sweep = VocabSweep(token_ids=torch.arange(1000, 1000 + n), scores={"hijack": hijack, "kv_agreement": kv},
                       neighbour=torch.arange(n))
    cfg = TextScanConfig(confirm_tokens=3)
    picked = _structural(sweep, cfg)
    assert len(picked) == 2 * cfg.confirm_tokens
    assert 1150 in picked
    assert picked[:2] == [1000, 1150]  # each signal's most extreme first


def test_detection_confirms_a_key_value_edit_as_a_swap_and_says_so(tiny_sd: Path) -> None:
    """An EvilEdit-style edit (one token's keys and values made another's, in the contexts the scan
    appends tokens in) is confirmed by generation: the token is rendered as its partner. The verdict
    names the pair, since the weights do not say which of the two is the trigger."""
    from hfaudit.report import verdict_line
    from hfaudit.results import BACKDOOR

    model = _load(tiny_sd)
    trigger, target = _kv_edit(model, vocabulary_prompts(model.tokenizer, SMALL.n_prompts, seed=SMALL.seed))
    found = detect_text_to_image(model, SMALL)
    assert found.backdoor and found.signal == "swap"
    words = {model.tokenizer.decode([t]).strip() for t in (trigger, target)}
    swapped = [e for e in found.report.evidence if "swap" in e.fired]
    assert swapped and all({e.text, e.neighbour} == words for e in swapped)
    line = verdict_line({"verdict": BACKDOOR, "score": found.score, "threshold": found.threshold,
                         "control_score": found.control_score, "signals": found.report.signals,
                         "text_trigger": found.report.to_dict()})
    assert "alike" in line and all(repr(w) in line for w in words)


def test_a_probe_prompt_that_holds_the_trigger_is_set_aside_and_its_words_screened(tiny_sd: Path) -> None:
    """A common-word trigger can be one of the words the probe prompts are built from: that prompt's own
    outputs are fixed, so it is set aside (no statistic is measured against it) and its words are
    screened first, which finds the trigger even when the probe reaches no token at all."""
    from dataclasses import replace

    from hfaudit.sampling import alphas_cumprod_of

    model = _load(tiny_sd)
    prompts = vocabulary_prompts(model.tokenizer, 5, SMALL.seed)
    trigger = next(_word(model, t) for t in range(3, 30)
                   if model.tokenizer.decode([_word(model, t)]).strip() not in " ".join(prompts))
    word = model.tokenizer.decode([trigger]).strip()
    prompts[1] = f"{prompts[1]} {word}"
    frame = token_ids_of(model.tokenizer)
    model.text_encoder = MarkedEncoder(model.text_encoder, trigger, frame.eos)
    target = torch.linspace(-2, 2, int(torch.tensor(model.latent_shape).prod())).reshape(model.latent_shape)
    model.unet = FixedImageUNet(model.unet, target, alphas_cumprod_of(model.scheduler_config))
    found = detect_text_to_image(model, replace(SMALL, prompts=tuple(prompts), probe_tokens=1))
    assert found.report.fixed_prompts == [prompts[1]]
    assert prompts[1] not in found.report.prompts[:SMALL.confirm_prompts]  # no statistic is measured on it
    assert found.backdoor and found.report.trigger == word
    nulls = [e for e in found.report.evidence if e.role == "null"]
    assert all(not e.fired for e in nulls)


def test_null_tokens_are_ordinary_in_behaviour_too(tiny_sd: Path) -> None:
    """A backdoor can answer to more words than its trigger: a null drawn among them would hide it, so
    nulls come from tokens whose probe score is at most the median."""
    from hfaudit.detect.t2i import _null_tokens
    from hfaudit.detect.vocab import VocabSweep

    model = _load(tiny_sd)
    words = [i for t, i in model.tokenizer.get_vocab().items() if t.endswith("</w>") and t[:-4].isalpha()]
    ids = torch.tensor(sorted(words))
    flat = torch.zeros(len(ids))
    sweep = VocabSweep(token_ids=ids, scores={"hijack": flat + torch.arange(len(ids)) * 1e-6}, neighbour=ids)
    high = set(ids[::2].tolist())  # every other word fixes the output in the probe
    probed = {int(t): (0.9 if int(t) in high else 0.0) for t in ids}
    cfg = TextScanConfig(null_tokens=6)
    nulls = _null_tokens(sweep, model.tokenizer, cfg, exclude=set(), probed=probed)
    assert len(nulls) == 6 and not set(nulls) & high
    unprobed = _null_tokens(sweep, model.tokenizer, cfg, exclude=set())
    assert len(unprobed) == 6
