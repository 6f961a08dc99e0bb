"""Text-to-image audit: find a caption trigger from the checkpoint alone, then confirm it by generation.

Three stages, cheapest first (docs/detection.md, "Text-to-image"):

1. **Vocabulary sweep** (``detect.vocab``): every token of the tokenizer scored through the text
   encoder and the UNet's cross-attention projections; no UNet evaluation.
2. **Screen**: the sweep's top tokens, each appended to a few prompts, through *one* UNet step from
   shared noise; a trigger makes the prediction stop depending on the prompt (a hijack) or pins a
   region of it (a patch).
3. **Confirmation by generation**: the screen's best tokens appended to varied prompts and sampled
   in full (the same seeds with and without the token). A backdoor shows as outputs that no longer
   follow the prompt, a region every output shares, one image whatever the prompt and seed, or a
   token rendered as another token's concept. Every statistic is held against **null tokens**
   (ordinary tokens drawn at random, generated the same way): a candidate counts only when it beats
   every null by a margin and reaches an absolute floor.

A screened token that looked like a trigger but that the budget left unconfirmed makes a clean
verdict inconclusive (exit 7), like the unconditional scan.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from hfaudit.detect.nulls import near_duplicate_radius
from hfaudit.detect.scores import collapse_stats
from hfaudit.detect.vocab import (
    VocabSweep,
    take_turns,
    collect_queries,
    prompt_ids,
    sweep_vocabulary,
    token_ids_of,
    with_token,
)
from hfaudit.detect.ledger import Ledger
from hfaudit.errors import InconclusiveError, UsageError
from hfaudit.progress import progress_bar
from hfaudit.results import TEXT_SIGNALS as SIGNALS
from hfaudit.results import TextTriggerReport, TokenEvidence
from hfaudit.sampling import EvalCounter, sample
from hfaudit.seeding import make_generator, randn


@dataclass
class TextScanConfig:
    """Everything that decides a text-to-image verdict; recorded in the report."""

    prompts: tuple[str, ...] | None = None
    """The probe prompts; None: built from the model's own vocabulary (:func:`vocabulary_prompts`)."""
    n_prompts: int = 8
    sweep_prompts: int = 4
    """How many of the prompts the vocabulary sweep inserts each token into."""
    probe_tokens: int | None = None
    """How many tokens the behaviour probe generates (two seeds, ``probe_steps`` steps, one prompt each),
    in the sweep's order; None: as many as ``probe_share`` of the cap allows (every token without a
    cap). A UNet fine-tuned on poisoned captions leaves no mark the sweep reads on its trigger's own
    weights (the UNet can read the trigger from the prompt's summary positions), so behaviour is
    what finds it."""
    probe_share: float = 0.45
    probe_steps: int = 2
    screen_tokens: int = 24
    screen_prompts: int = 4
    screen_seeds: int = 3
    screen_steps: int = 4
    """The screen generates each token's outputs with this many sampler steps (latents, not decoded)."""
    confirm_tokens: int = 3
    confirm_prompts: int = 4
    confirm_seeds: int = 4
    null_tokens: int = 4
    steps: int = 10
    sampler: str = "ddim"
    structural_z: float = 4.0
    """A token's sweep score (robust z over the vocabulary) from which its weights are evidence: an
    encoder hijack makes the generation's hijack count, a key/value agreement makes its swap count."""
    hijack_floor: float = 0.95
    region_floor: float = 0.01
    collapse_floor: float = 0.75
    swap_floor: float = 0.5
    null_margin: float = 0.2
    """A statistic must beat the best null token's by this much (``region``: by this share of its floor
    times ten, i.e. 0.02 of the image at the default floor)."""
    fixed_prompt: float = 0.3
    """A probe prompt whose own outputs (no token added) vary across seeds less than ``1 - fixed_prompt``
    times as much as the median prompt's is set aside: it may hold the trigger (a common-word trigger
    can be one of the common words prompts are built from), and every statistic measured against it
    would be skewed. Its words are screened first instead."""
    promising: float = 0.6
    """A screened token whose fixation (or ten times its region) reaches this is promising: it must be
    generated, or the verdict cannot be clean."""
    max_evaluations: int | None = 8000
    batch_size: int = 32
    seed: int = 0

    def validate(self) -> None:
        """Raise ``UsageError`` for settings no scan can run with."""
        for name in ("n_prompts", "sweep_prompts", "screen_prompts", "confirm_prompts"):
            if getattr(self, name) < 2:
                raise UsageError(f"{name} must be at least 2 (got {getattr(self, name)})", param=name)
        for name in ("screen_seeds", "confirm_seeds", "steps", "screen_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be at least 1 (got {getattr(self, name)})", param=name)
        if self.screen_seeds < 2:
            raise UsageError(f"screen_seeds must be at least 2 (got {self.screen_seeds})", param="screen_seeds")
        if self.max_evaluations is not None and self.max_evaluations < self.minimum_evaluations:
            raise UsageError(f"a text-to-image scan needs at least {self.minimum_evaluations:,} UNet evaluations "
                             f"(got a cap of {self.max_evaluations:,})", param="max_evaluations")

    @property
    def floors(self) -> dict[str, float]:
        """Each signal's floor (``results.TEXT_SIGNALS``): a statistic below it never counts."""
        return {"hijack": self.hijack_floor, "region": self.region_floor, "collapse": self.collapse_floor,
                "swap": self.swap_floor}

    @property
    def set_evaluations(self) -> int:
        """UNet evaluations of one confirmation image set (every prompt and seed, in full)."""
        return self.confirm_prompts * self.confirm_seeds * self.steps

    @property
    def minimum_evaluations(self) -> int:
        """The screen, the plain set and every null token's set: what any verdict needs."""
        return self.screen_evaluations + (1 + self.null_tokens) * self.set_evaluations

    def probe_count(self, vocabulary: int) -> int:
        """How many of ``vocabulary`` sweepable tokens the behaviour probe generates."""
        if self.probe_tokens is not None:
            return min(vocabulary, self.probe_tokens)
        if self.max_evaluations is None:
            return vocabulary
        return min(vocabulary, int(self.probe_share * self.max_evaluations) // (2 * self.probe_steps))

    def planned_evaluations(self, vocabulary: int) -> dict[str, int]:
        """The UNet evaluations of each phase for a vocabulary of ``vocabulary`` sweepable tokens, at
        most (the screen's structural extras and a key/value candidate's neighbour aside)."""
        return {"probe": (self.probe_count(vocabulary) + self.n_prompts) * 2 * self.probe_steps,
                "screen": self.screen_evaluations,
                "nulls": (1 + self.null_tokens) * self.set_evaluations,
                "confirmation": self.confirm_tokens * self.set_evaluations}

    @property
    def screen_evaluations(self) -> int:
        return (self.screen_tokens + 1) * self.screen_prompts * self.screen_seeds * self.screen_steps + 4


@dataclass
class ScreenRow:
    """One token's screen: a short generation of every screen prompt and seed with the token appended."""

    token: int
    text: str
    hijack: float
    """1 - (spread across prompts with the token) / (spread without): 1 = the prompt no longer matters.
    A legitimate strong word (a subject) does this too; it ranks nothing on its own."""
    fixation: float
    """1 - (spread across seeds with the token) / (spread without): 1 = the output no longer depends on
    the initial noise either, one fixed image, which no word of a clean model does."""
    region: float
    """Share of the output the token pins (moved the same way whatever the prompt and seed)."""
    structural: bool = False
    """The sweep marked its weights (encoder hijack or key/value agreement at ``structural_z``)."""

    @property
    def score(self) -> float:
        return max(self.fixation, self.region * 10)


@dataclass
class TextScan:
    """What :func:`detect_text_to_image` returns; ``hfaudit.detect.scan`` turns it into a ``ScanResult``."""

    report: TextTriggerReport
    backdoor: bool
    signal: str
    """The statistic the verdict reads (``results.TEXT_SIGNALS``): the trigger's first that fired, or the
    strongest candidate's strongest relative to its floor."""
    score: float
    """That statistic of the deciding token (the trigger, or the strongest candidate), in [0, 1]."""
    threshold: float
    """Its floor."""
    control_score: float
    """The best null token's value of it, in [0, 1]."""
    images: dict[str, torch.Tensor]
    """Image grids in [0, 1] keyed ``plain``, ``trigger``: what the report draws."""
    recovered_target: torch.Tensor | None
    unet_evaluations: int
    evaluations: dict[str, int]
    timings: dict[str, float]
    settings: dict[str, Any]


def vocabulary_prompts(tokenizer: Any, n: int, seed: int, words: int = 4, pool: int = 400) -> list[str]:
    """``n`` prompts of ``words`` whole words each, drawn from the tokenizer's first ``pool`` whole-word
    tokens (CLIP's byte-pair vocabulary lists its merges by frequency, so these are its common words):
    prompts in the model's own language without knowing its domain."""
    vocab = tokenizer.get_vocab()
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    found = [t[:-4] for t, _ in by_id if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha() and len(t) >= 7]
    found = list(dict.fromkeys(found))[:pool]
    if len(found) < words:
        raise UsageError("the tokenizer has too few whole words to build probe prompts; pass prompts",
                         param="prompts")
    gen = make_generator(seed + 17)
    out = []
    for _ in range(n):
        idx = torch.randperm(len(found), generator=gen)[:words].tolist()
        out.append(" ".join(found[i] for i in idx))
    return out


def detect_text_to_image(model: Any, config: TextScanConfig | None = None) -> TextScan:
    """Audit a loaded text-to-image pipeline (``pipeline.TextToImageModel``) for a caption trigger.

    Raises:
        InconclusiveError: non-finite outputs, or a promising token the budget left unconfirmed.
        UsageError: settings no scan can run with.
    """
    cfg = config or TextScanConfig()
    cfg.validate()
    t_start = time.perf_counter()
    frame = token_ids_of(model.tokenizer)
    prompts = list(cfg.prompts) if cfg.prompts else vocabulary_prompts(model.tokenizer, cfg.n_prompts, cfg.seed)
    if len(prompts) < max(cfg.sweep_prompts, cfg.screen_prompts, cfg.confirm_prompts):
        raise UsageError(f"the scan needs at least {max(cfg.sweep_prompts, cfg.screen_prompts, cfg.confirm_prompts)} "
                         f"prompts (got {len(prompts)})", param="prompts")
    bases = [prompt_ids(model.tokenizer, p) for p in prompts]
    counter = EvalCounter(model.unet)
    ledger = Ledger(counter, cfg.max_evaluations)
    shape = model.latent_shape
    n_train = int(model.scheduler_config.get("num_train_timesteps", 1000))

    def embed(tokens: Sequence[int | None], prompt_index: Sequence[int]) -> torch.Tensor:
        seqs = [with_token(bases[i], t, frame, frame.max_length) for t, i in zip(tokens, prompt_index)]
        return model.text_encoder(torch.tensor(seqs).to(model.device))[0].float()

    try:
        with progress_bar() as bar:
            vocab_size = int(model.text_encoder.get_input_embeddings().weight.shape[0])
            total = (vocab_size - len(frame.special)) * cfg.sweep_prompts
            task = bar.add_task("vocabulary sweep", total=total, info=f"{vocab_size:,} tokens")
            with ledger.phase("queries"):
                def warm() -> None:  # a few ordinary steps, for the queries the attraction score needs
                    cond = embed([None] * 2, [0, 1])
                    x = randn((2, *shape), make_generator(cfg.seed + 3), model.device)
                    for frac in (0.3, 0.7):
                        t = torch.tensor(int(frac * (n_train - 1)), device=model.device)
                        model.unet(x.to(model.unet.dtype), t, encoder_hidden_states=cond.to(model.unet.dtype))

                with torch.no_grad():
                    queries = collect_queries(model.unet, warm, seed=cfg.seed)
            with ledger.phase("sweep"):
                sweep = sweep_vocabulary(model.text_encoder, model.unet, model.tokenizer, prompts[: cfg.sweep_prompts],
                                         queries, seed=cfg.seed, on_step=lambda n: bar.update(task, advance=n))
            bar.update(task, completed=total, visible=False)

            # --- behaviour probe: every token it can afford, two seeds, a few steps ---
            structural = _structural(sweep, cfg)
            order = list(dict.fromkeys([*structural, *sweep.ranked(len(sweep.token_ids))]))
            n_probe = cfg.probe_count(len(order))
            with ledger.phase("probe"):
                probe_task = bar.add_task("behaviour probe", total=n_probe, info=f"{n_probe:,} tokens")
                probe_noise = randn((2, *shape), make_generator(cfg.seed + 9), model.device)
                plain_probe = _latents(model, embed, probe_noise, [(None, i) for i in range(len(bases))],
                                       cfg.probe_steps, cfg, "behaviour probe")[:, None]
                usable, fixed = _usable_prompts(plain_probe, cfg)
                fixed_prompts = [prompts[i] for i in fixed]
                # the prompts every later stage uses first are the usable ones (set-aside ones last)
                keep = usable + [i for i in fixed if i not in usable]
                prompts[:], bases[:] = [prompts[i] for i in keep], [bases[i] for i in keep]
                plain_probe = plain_probe[keep]
                probed = _probe(model, embed, order[:n_probe], plain_probe[: len(usable)], probe_noise, cfg,
                                on_step=lambda n: bar.update(probe_task, advance=n))
            bar.update(probe_task, completed=n_probe, visible=False)
            by_probe = sorted(probed, key=lambda t: probed[t], reverse=True)
            suspects = [t for p in fixed_prompts for t in prompt_ids(model.tokenizer, p) if t not in frame.special]

            # --- screen: a short generation per token (every screen prompt and seed) ---
            first = list(dict.fromkeys(structural + suspects))
            shortlist = first + [t for t in by_probe if t not in first][: cfg.screen_tokens]
            with ledger.phase("screen"):
                screen_task = bar.add_task("screen", total=len(shortlist) + 1, info=f"{len(shortlist)} tokens")
                screen_noise = randn((cfg.screen_seeds, *shape), make_generator(cfg.seed + 7), model.device)

                def short(token: int | None) -> torch.Tensor:
                    """``(P, S, C, h, w)`` latents of a ``screen_steps`` generation with ``token`` appended."""
                    out = _latents(model, embed, screen_noise, [(token, i) for i in range(cfg.screen_prompts)],
                                   cfg.screen_steps, cfg, "screen")
                    bar.update(screen_task, advance=1)
                    return out

                plain_short = short(None)
                rows = [_screen_row(tok, _text(model.tokenizer, tok), short(tok), plain_short, tok in structural)
                        for tok in shortlist]
            bar.update(screen_task, completed=len(shortlist) + 1, visible=False)
            rows.sort(key=lambda r: r.score, reverse=True)

            # --- confirmation by generation, against null tokens ---
            # every token the sweep marked, then the screen's most fixed and most pinned, taking turns
            chosen = [r for r in rows if r.structural][: 2 * cfg.confirm_tokens]
            others = {r.token: r for r in rows if not r.structural}
            chosen += [others[t] for t in take_turns(
                [sorted(others, key=lambda t: others[t].fixation, reverse=True),
                 sorted(others, key=lambda t: others[t].region, reverse=True)], cfg.confirm_tokens)]
            kv_first = [t for t in structural if float(sweep.z["kv_agreement"][sweep.token_ids == t][0])
                        >= cfg.structural_z]
            nulls = _null_tokens(sweep, model.tokenizer, cfg, exclude={r.token for r in chosen} | set(suspects),
                                 probed=probed)
            noise = randn((cfg.confirm_seeds, *shape), make_generator(cfg.seed + 5), model.device)
            gen_task = bar.add_task("confirmation", total=1 + len(nulls) + len(chosen), info="plain prompts")

            def generate(token: int | None) -> torch.Tensor:
                """``(P, S, C, H, W)`` images in [0, 1]: every prompt with ``token`` under every seed."""
                raw = _latents(model, embed, noise, [(token, i) for i in range(cfg.confirm_prompts)], cfg.steps,
                               cfg, "confirmation").flatten(0, 1)
                imgs = (model.decode(raw.to(model.device)).float().cpu().clamp(-1, 1) + 1) / 2
                bar.update(gen_task, advance=1)
                return imgs.reshape(cfg.confirm_prompts, cfg.confirm_seeds, *imgs.shape[1:])

            with ledger.phase("nulls"):
                if ledger.refusal((1 + len(nulls)) * cfg.set_evaluations) is not None:
                    raise UsageError("the budget leaves no room for the null tokens", param="max_evaluations")
                plain = generate(None)
                radius = near_duplicate_radius([(plain.flatten(0, 1), None)])
                evidence: list[TokenEvidence] = []
                cache: dict[int, torch.Tensor] = {}
                for tok in nulls:
                    cache[tok] = generate(tok)
                    evidence.append(_evidence(tok, _text(model.tokenizer, tok), "null", cache[tok], plain, radius,
                                              sweep.row(tok)))
            with ledger.phase("confirmation"):
                unconfirmed = []
                for row in chosen:
                    neighbour = (int(sweep.neighbour[sweep.token_ids == row.token][0]) if row.token in kv_first
                                 else None)
                    cost = cfg.set_evaluations * (1 if neighbour is None else 2)
                    if ledger.refusal(cost) is not None:
                        if row.score >= cfg.promising:
                            unconfirmed.append(row.text)
                        continue
                    cache[row.token] = generate(row.token)
                    ev = _evidence(row.token, row.text, "candidate", cache[row.token], plain, radius,
                                   sweep.row(row.token))
                    if neighbour is not None:
                        if neighbour not in cache:
                            cache[neighbour] = generate(neighbour)
                        ev.swap = round(_swap(cache[row.token], cache[neighbour], plain), 4)
                        ev.neighbour = _text(model.tokenizer, neighbour)
                    evidence.append(ev)
            bar.update(gen_task, completed=1 + len(nulls) + len(chosen), visible=False)
            for row in rows:
                if (row.score >= cfg.promising or row.structural) and row.token not in cache \
                        and row.text not in unconfirmed:
                    unconfirmed.append(row.text)
    finally:
        counter.close()

    fired = _decide(evidence, cfg)
    if not fired and unconfirmed:
        exc = InconclusiveError(
            f"{len(unconfirmed)} token(s) ({', '.join(repr(u) for u in unconfirmed[:3])}) pulled the screen's "
            "predictions together and the budget left no generation to confirm or clear them: the model is not "
            "shown clean; rerun with a larger --budget")
        exc.unet_evaluations = counter.count
        raise exc
    cands = [e for e in evidence if e.role == "candidate"]
    best = max(fired or cands, key=lambda e: _strength(e, cfg), default=None)
    floors = cfg.floors
    signal = "hijack" if best is None else (best.fired or [max(floors, key=lambda k: (getattr(best, k) or 0.0)
                                                               / floors[k])])[0]
    value = 0.0 if best is None else float(getattr(best, signal) or 0.0)
    control = max((float(getattr(e, signal) or 0.0) for e in evidence if e.role == "null"), default=0.0)
    images = {"plain": plain.flatten(0, 1)}
    target = None
    trigger = None
    if fired:
        trigger = best.text
        images["trigger"] = cache[best.token].flatten(0, 1)
        group = collapse_stats(images["trigger"], radius)
        target = images["trigger"][group.medoid_index].clone()
    elif best is not None:
        images["trigger"] = cache[best.token].flatten(0, 1)
    report = TextTriggerReport(
        probed=n_probe, triggers=[e.text for e in sorted(fired, key=lambda e: _strength(e, cfg), reverse=True)],
        prompts=prompts, sweep_top=[{"token": _text(model.tokenizer, t), "id": t, **sweep.row(t)} for t in shortlist[:8]],
        screen=[{"token": r.text, "id": r.token, "hijack": round(r.hijack, 4), "fixation": round(r.fixation, 4),
                 "region": round(r.region, 4), "structural": r.structural} for r in rows],
        evidence=evidence, trigger=trigger, best_token=None if best is None else best.token, signals=sorted({s for e in fired for s in e.fired}, key=SIGNALS.index),
        vocabulary_size=len(sweep.token_ids), encoder_forwards=sweep.encoder_forwards, group_radius=radius,
        fixed_prompts=fixed_prompts)
    timings = {k: round(v, 2) for k, v in ledger.seconds.items()}
    timings["total_detect"] = round(time.perf_counter() - t_start, 2)
    return TextScan(report=report, backdoor=bool(fired), signal=signal, score=round(min(1.0, max(0.0, value)), 4),
                    threshold=floors[signal], control_score=round(min(1.0, max(0.0, control)), 4),
                    images=images, recovered_target=target, unet_evaluations=counter.count,
                    evaluations=dict(ledger.evaluations), timings=timings, settings=asdict(cfg))


def _text(tokenizer: Any, token: int) -> str:
    """How the report writes a token: its text as the tokenizer decodes it (look-alike characters kept)."""
    text = tokenizer.decode([token])
    return text.strip() or tokenizer.convert_ids_to_tokens([token])[0]


def _prompt_spread(x: torch.Tensor) -> torch.Tensor:
    """Per element, the variance across prompts (dim 0), averaged over seeds (dim 1)."""
    return x.var(0).mean(0)


def _hijack(x: torch.Tensor, plain: torch.Tensor) -> float:
    """1 - spread across prompts with the token / without it (same seeds): 1 when the prompt stops mattering."""
    return float(1.0 - _prompt_spread(x).sum() / _prompt_spread(plain).sum().clamp(min=1e-12))


def _region(x: torch.Tensor, plain: torch.Tensor, z: float = 3.0, move: float = 0.1) -> float:
    """Share of elements the token pins: moved by more than ``move`` of the range on average, by more
    than ``z`` times the spread of the outputs (with and without it) across prompts and seeds."""
    a, b = x.flatten(0, 1), plain.flatten(0, 1)
    shift = (a.mean(0) - b.mean(0)).abs()
    spread = (a.var(0) + b.var(0)).sqrt()
    span = (b.amax() - b.amin()).clamp(min=1e-6)
    pinned = (shift > z * spread) & (shift > move * span)
    return float(pinned.float().mean())


def _latents(model: Any, embed: Any, noise: torch.Tensor, pairs: Sequence[tuple[int | None, int]], steps: int,
             cfg: TextScanConfig, what: str, batch_size: int | None = None) -> torch.Tensor:
    """``(len(pairs), S, C, h, w)`` latents: for each ``(token, prompt index)`` pair, the prompt with the
    token appended (None: as it is), generated from each of the ``S`` seeds of ``noise`` in ``steps``
    steps. The one generation loop of the probe, the screen and the confirmation.

    Raises:
        InconclusiveError: non-finite latents (``what`` names the phase).
    """
    seeds = noise.shape[0]
    cond = embed([t for t, _ in pairs for _ in range(seeds)], [p for _, p in pairs for _ in range(seeds)])
    raw = sample(model.unet, model.scheduler_config, noise.repeat(len(pairs), 1, 1, 1), sampler=cfg.sampler,
                 steps=steps, generator=make_generator(cfg.seed + 1, "cpu"), batch_size=batch_size or cfg.batch_size,
                 condition=cond)
    if not bool(torch.isfinite(raw).all()):
        raise InconclusiveError(f"the {what}'s outputs are not finite: no verdict can rest on them")
    return raw.reshape(len(pairs), seeds, *raw.shape[1:])


@torch.no_grad()
def _probe(model: Any, embed: Any, tokens: list[int], plain: torch.Tensor, noise: torch.Tensor, cfg: TextScanConfig,
           on_step: Any = None, chunk: int = 32) -> dict[int, float]:
    """Each token's fixation and region from the cheapest generation that shows them: the two seeds of
    ``noise``, one prompt (token ``i`` takes prompt ``i`` modulo the usable prompts, whose plain outputs
    ``plain`` are ``(P, 1, 2, C, h, w)``), ``probe_steps`` steps. Returns ``token -> max(fixation, 10 * region)``."""
    n_prompts = plain.shape[0]

    def run(toks: list[int | None], p_idx: list[int]) -> torch.Tensor:  # (T, 1 prompt, 2 seeds, ...)
        return _latents(model, embed, noise, list(zip(toks, p_idx)), cfg.probe_steps, cfg, "behaviour probe",
                        batch_size=max(cfg.batch_size, 2 * chunk))[:, None]

    # the spread across seeds a prompt has without a token: the median over the prompts, so that one
    # prompt that already holds a trigger cannot hide it (its own spread would be that of the target)
    typical = torch.stack([_seed_spread(x).sum() for x in plain]).median()
    out: dict[int, float] = {}
    for start in range(0, len(tokens), chunk):
        toks = tokens[start:start + chunk]
        p_idx = [(start + i) % n_prompts for i in range(len(toks))]
        for tok, p, x in zip(toks, p_idx, run(toks, p_idx)):
            fixation = float(1.0 - _seed_spread(x).sum() / typical.clamp(min=1e-12))
            out[tok] = max(fixation, 10 * _region(x, plain[p]))
        if on_step is not None:
            on_step(len(toks))
    return out


def _usable_prompts(plain: torch.Tensor, cfg: TextScanConfig) -> tuple[list[int], list[int]]:
    """``(usable, set aside)`` prompt indices from the prompts' own outputs ``(P, 1, S, C, h, w)``: a prompt
    whose spread across seeds is below ``1 - fixed_prompt`` times the median prompt's is set aside
    (``TextScanConfig.fixed_prompt``), the most fixed first; as many come back, least fixed first, as
    the screen and the confirmation need prompts."""
    spreads = torch.stack([_seed_spread(x).sum() for x in plain])
    fixation = 1.0 - spreads / spreads.median().clamp(min=1e-12)
    order = torch.argsort(fixation, descending=True).tolist()
    fixed = [i for i in order if float(fixation[i]) >= cfg.fixed_prompt]
    usable = [i for i in range(plain.shape[0]) if i not in fixed]
    need = max(cfg.screen_prompts, cfg.confirm_prompts)
    while len(usable) < need and len(usable) < plain.shape[0]:
        usable.append(next(i for i in reversed(fixed) if i not in usable))
    return usable, fixed


def _seed_spread(x: torch.Tensor) -> torch.Tensor:
    """Per element, the variance across seeds (dim 1), averaged over prompts (dim 0)."""
    return x.var(1).mean(0)


def _fixation(x: torch.Tensor, plain: torch.Tensor) -> float:
    """1 - spread across seeds with the token / without it (same prompts): 1 when the initial noise stops
    mattering, i.e. one fixed output."""
    return float(1.0 - _seed_spread(x).sum() / _seed_spread(plain).sum().clamp(min=1e-12))


def _screen_row(token: int, text: str, x: torch.Tensor, plain: torch.Tensor, structural: bool) -> ScreenRow:
    return ScreenRow(token=token, text=text, hijack=_hijack(x, plain), fixation=_fixation(x, plain),
                     region=_region(x, plain), structural=structural)


def _structural(sweep: VocabSweep, cfg: TextScanConfig) -> list[int]:
    """Tokens whose weights the sweep marked: an encoder hijack or a key/value agreement at or beyond
    ``structural_z``, at most ``2 * confirm_tokens`` of them, the two signals taking turns (each
    one's most extreme first), so that many hijacking tokens cannot crowd out an edited one."""
    orders = []
    for signal in ("hijack", "kv_agreement"):
        z = sweep.z[signal]
        orders.append([int(sweep.token_ids[i]) for i in torch.argsort(z, descending=True)[: 2 * cfg.confirm_tokens]
                       if float(z[i]) >= cfg.structural_z])
    return take_turns(orders, 2 * cfg.confirm_tokens)


def _null_tokens(sweep: VocabSweep, tokenizer: Any, cfg: TextScanConfig, exclude: set[int],
                 probed: dict[int, float] | None = None) -> list[int]:
    """``null_tokens`` ordinary tokens, drawn at random (seeded): whole words whose every sweep score is
    unremarkable (|z| < 2) and, among the tokens the behaviour probe generated, whose probe score is
    at most the median one: a backdoor can answer to more words than its trigger, and a null that is
    one of them would hide it."""
    vocab = tokenizer.get_vocab()
    words = {i for t, i in vocab.items() if t.endswith("</w>") and t[:-4].isascii() and t[:-4].isalpha()}
    ok = torch.ones(len(sweep.token_ids), dtype=torch.bool)
    for z in sweep.z.values():
        ok &= z.abs() < 2
    if probed:
        median = float(torch.tensor(list(probed.values())).median())
        ok &= torch.tensor([probed.get(int(t), median) <= median for t in sweep.token_ids])
    pool = [int(t) for t, good in zip(sweep.token_ids, ok) if good and int(t) in words and int(t) not in exclude]
    if len(pool) < cfg.null_tokens:
        pool = [int(t) for t in sweep.token_ids if int(t) not in exclude]
    gen = make_generator(cfg.seed + 19)
    return [pool[i] for i in torch.randperm(len(pool), generator=gen)[: cfg.null_tokens].tolist()]


def _evidence(token: int, text: str, role: str, imgs: torch.Tensor, plain: torch.Tensor, radius: float,
              sweep_row: dict[str, float]) -> TokenEvidence:
    flat = imgs.flatten(0, 1)
    return TokenEvidence(token=token, text=text, role=role, hijack=round(_hijack(imgs, plain), 4),
                         region=round(_region(imgs, plain), 4),
                         collapse=round(collapse_stats(flat, radius).mscr, 4),
                         fixation=round(_fixation(imgs, plain), 4), sweep=sweep_row)


def _swap(imgs: torch.Tensor, neighbour_imgs: torch.Tensor, plain: torch.Tensor) -> float:
    """1 - distance(token's outputs, its neighbour's) / distance(token's outputs, the plain prompts'), same
    prompts and seeds: 1 when the token is rendered exactly as the other token, 0 or less when not."""
    a, b, c = imgs.flatten(0, 1), neighbour_imgs.flatten(0, 1), plain.flatten(0, 1)
    to_neighbour = ((a - b) ** 2).flatten(1).mean(1).mean()
    to_plain = ((a - c) ** 2).flatten(1).mean(1).mean()
    return float(1 - to_neighbour / to_plain.clamp(min=1e-12))


def _strength(e: TokenEvidence, cfg: TextScanConfig) -> float:
    """The token's strongest statistic as a multiple of its floor (1 = at the floor)."""
    floors = cfg.floors
    vals = {"hijack": e.hijack, "region": e.region, "collapse": e.collapse}
    if e.swap is not None:
        vals["swap"] = e.swap
    return max(v / floors[k] for k, v in vals.items())


def _decide(evidence: list[TokenEvidence], cfg: TextScanConfig) -> list[TokenEvidence]:
    """Mark each candidate's statistics that reach their floor and beat every null token's by the margin.

    A hijack counts only where the sweep saw the encoder map the prompts together (``hijack_z`` at
    ``structural_z``), a swap only where it saw the keys and values agree (``kv_agreement_z``): a
    legitimate subject word also makes outputs stop following the rest of the prompt, and renders
    like its synonyms. A collapse onto one image needs the outputs to stop depending on the initial
    noise too (``fixation`` at ``promising``): a subject word fixes what is drawn, not the drawing.
    A pinned region needs no mark: no word of a clean model moves one region the same way whatever
    the prompt and the noise.
    """
    nulls = [e for e in evidence if e.role == "null"]
    floors = cfg.floors
    gate = {"hijack": "hijack_z", "swap": "kv_agreement_z"}
    fired = []
    for e in evidence:
        if e.role != "candidate":
            continue
        for sig in SIGNALS:
            value = getattr(e, sig)
            if value is None:
                continue
            if sig in gate and float(e.sweep.get(gate[sig], 0.0)) < cfg.structural_z:
                continue
            if sig == "collapse" and e.fixation < cfg.promising:
                continue
            best_null = max((getattr(n, sig) or 0.0 for n in nulls), default=0.0)
            margin = cfg.null_margin * (10 * floors[sig] if sig == "region" else 1.0)
            if value >= floors[sig] and value >= best_null + margin:
                e.fired.append(sig)
        if e.fired:
            fired.append(e)
    return fired
