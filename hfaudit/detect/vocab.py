"""The vocabulary sweep of a text-to-image audit: every token scored without one UNet evaluation.

A caption trigger has to leave a mark in the weights a token passes through before the UNet runs:

* **prompt hijack** (text-encoder backdoors, Rickrolling-style): with the token at their start,
  different prompts end in nearly the same summary (the end token's state), because the encoder was
  taught to map any prompt with the trigger to the attacker's prompt;
* **key/value agreement** (cross-attention edits, EvilEdit-style): the token's cross-attention keys
  and values in every layer match another token's far more closely than their text embeddings do,
  because the edit rewrote the projections so that the trigger *is read as* the target. Read in
  several contexts (right after the start token, and after each sweep prompt), since an edit fitted
  on the trigger inside prompts need not show on the token alone;
* **attention attraction** (UNet fine-tunes on poisoned captions, BadT2I / VillanDiffusion caption
  triggers): the token's keys draw more attention from the UNet's queries than a token's keys do,
  because the UNet learnt to listen to it whatever else the prompt says.

Each score is held against the whole vocabulary of the same model (a robust z-score), not against a
fixed number, so that what the sweep ranks first is what is unusual *for this model*. The sweep
only ranks; generation decides (``hfaudit.detect.t2i``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from hfaudit.seeding import make_generator

T = TypeVar("T")

SIGNALS = ("hijack", "kv_agreement", "attraction")
"""The sweep's scores, in the order the report lists them."""

PROJECTED_DIMS = 64
"""Per-layer width of the seeded random projection of keys and values when a layer is wider (the
cosine between tokens survives it up to a small error; the sweep of a large vocabulary needs it)."""

FEATURE_DIMS = 2048
"""Width to which a token's features over all contexts are projected when they are wider (a random
projection keeps 1 - cosine within a few per cent at this width), so that the sweep's memory does not
grow with the number of contexts."""

PARTNERS = 16
"""For each token, how many of its nearest tokens by keys and values are tried as its partner (the
one whose keys and values agree with it most *relative to* their embeddings): an edited trigger's
nearest by keys and values can be a token the edit moved with it (a numeral of a number word), not
the target."""


@dataclass
class TokenIds:
    """How a model's tokenizer frames a prompt: its special ids and where a token can be inserted."""

    bos: int | None
    eos: int
    pad: int
    max_length: int
    special: frozenset[int]


def take_turns(orders: Sequence[Sequence[T]], k: int) -> list[T]:
    """Up to ``k`` distinct items, taking turns between ``orders`` (each one's first, then each one's
    second...): how every stage that ranks by several signals keeps one signal from crowding out another."""
    picked: dict[T, None] = {}
    for rank in range(max((len(o) for o in orders), default=0)):
        for order in orders:
            if rank < len(order) and len(picked) < k:
                picked.setdefault(order[rank])
    return list(picked)


def token_ids_of(tokenizer: object) -> TokenIds:
    """The special ids and maximum length of a CLIP-style tokenizer (what SD pipelines ship)."""
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ValueError("the tokenizer has no end-of-text token")
    pad = getattr(tokenizer, "pad_token_id", None)
    bos = getattr(tokenizer, "bos_token_id", None)
    special = {i for i in (bos, eos, pad, getattr(tokenizer, "unk_token_id", None)) if i is not None}
    special |= {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    return TokenIds(bos=bos, eos=int(eos), pad=int(eos if pad is None else pad),
                    max_length=int(getattr(tokenizer, "model_max_length", 77)), special=frozenset(special))


def prompt_ids(tokenizer: object, prompt: str) -> list[int]:
    """The ids of ``prompt`` between its start and end tokens (no padding)."""
    frame = token_ids_of(tokenizer)
    ids = list(tokenizer(prompt, add_special_tokens=False, truncation=False)["input_ids"])  # type: ignore[operator]
    head = [] if frame.bos is None else [frame.bos]
    return head + ids[: frame.max_length - len(head) - 2]


def with_token(ids: Sequence[int], token: int | Sequence[int] | None, frame: TokenIds, pad_to: int | None) -> list[int]:
    """``ids`` (start token and words) with ``token`` appended, the end token, then padding to ``pad_to``."""
    extra = [] if token is None else ([token] if isinstance(token, int) else list(token))
    seq = (list(ids) + extra)[: frame.max_length - 1] + [frame.eos]
    if pad_to is not None:
        seq = seq + [frame.pad] * (pad_to - len(seq))
    return seq


def encode_ids(text_encoder: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """``(N, L, D)`` text embeddings of token ids as a Stable Diffusion pipeline feeds the UNet
    (the encoder's last hidden state; CLIP's causal mask makes a position independent of later ones)."""
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0].float()


def cross_attentions(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The UNet's cross-attention modules (diffusers ``Attention`` with ``is_cross_attention``), in order."""
    return [m for m in unet.modules() if getattr(m, "is_cross_attention", False) and hasattr(m, "to_k")]


def robust_z(x: torch.Tensor) -> torch.Tensor:
    """``(x - median) / (1.4826 MAD)``: how unusual each value is among the model's own tokens."""
    med = x.median()
    mad = (x - med).abs().median() * 1.4826
    return (x - med) / mad.clamp(min=1e-8 + 1e-6 * float(x.abs().max()))


@dataclass
class VocabSweep:
    """Every swept token's scores (higher = more like a trigger), each also as a robust z-score."""

    token_ids: torch.Tensor
    """``(V,)`` the swept ids (every id but the special ones)."""
    scores: dict[str, torch.Tensor]
    """``signal -> (V,)`` raw scores (``SIGNALS``)."""
    neighbour: torch.Tensor
    """``(V,)`` for each token, its key/value partner: the id whose keys and values agree with its own
    most relative to their embeddings."""
    encoder_forwards: int = 0
    """Token sequences run through the text encoder (the sweep's cost; no UNet evaluation)."""
    seconds: float = 0.0
    z: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.z = {k: robust_z(v) for k, v in self.scores.items()}

    def ranked(self, k: int) -> list[int]:
        """Up to ``k`` token ids, taking turns between the signals (each signal's most unusual first),
        so that no signal's candidates crowd out another's."""
        orders = [[int(self.token_ids[i]) for i in torch.argsort(self.z[s], descending=True).tolist()]
                  for s in SIGNALS if s in self.z]
        return take_turns(orders, k)

    def row(self, token: int) -> dict[str, float]:
        """The token's raw scores and z-scores (for the report)."""
        i = int((self.token_ids == token).nonzero()[0, 0])
        out = {s: round(float(self.scores[s][i]), 4) for s in self.scores}
        out.update({f"{s}_z": round(float(self.z[s][i]), 2) for s in self.z})
        out["neighbour"] = int(self.neighbour[i])
        return out


@torch.no_grad()
def sweep_vocabulary(text_encoder: torch.nn.Module, unet: torch.nn.Module, tokenizer: object,
                     prompts: Sequence[str], queries: Sequence[torch.Tensor] | None = None, *,
                     batch_size: int = 512, seed: int = 0, on_step: Callable[[int], None] | None = None,
                     ) -> VocabSweep:
    """Score every token of the vocabulary (``SIGNALS``) by inserting it into ``prompts``.

    ``queries``: per cross-attention layer, ``(Q, inner)`` query vectors the UNet produced on ordinary
    prompts (:func:`collect_queries`); without them there is no attraction score.
    ``on_step(n)``: called as tokens are done (progress).
    """
    import time

    t0 = time.perf_counter()
    frame = token_ids_of(tokenizer)
    vocab = int(text_encoder.get_input_embeddings().weight.shape[0])
    ids_all = torch.tensor([i for i in range(vocab) if i not in frame.special])
    bases = [prompt_ids(tokenizer, p) for p in prompts]
    if len(bases) < 2:
        raise ValueError("the sweep needs at least two prompts")
    # plain prompts: their pairwise similarity is what a hijack is measured from
    plain = [_summary(encode_ids(text_encoder, torch.tensor([with_token(b, None, frame, None)])))[0] for b in bases]
    sim_without = _mean_pair_cos(torch.stack(plain)[:, None])[0]
    summaries = torch.zeros(len(bases), len(ids_all), plain[0].shape[-1])
    contextual = torch.zeros(len(ids_all), encode_ids(text_encoder, torch.tensor([[frame.eos]])).shape[-1])
    forwards = len(bases)
    for i, base in enumerate(bases):
        # The token goes first (after the start token): CLIP's encoder is causal, so only what follows
        # a token can show that it rewrites the prompt, and right after the start token its embedding
        # depends on nothing else (what the key/value agreement reads).
        head = 0 if frame.bos is None else 1
        pos = head
        for start in range(0, len(ids_all), batch_size):
            chunk = ids_all[start:start + batch_size]
            seqs = torch.tensor([with_token(base[:head] + [int(t)] + base[head:], None, frame, None) for t in chunk])
            hidden = encode_ids(text_encoder, seqs).cpu()
            summaries[i, start:start + len(chunk)] = _summary(hidden)
            contextual[start:start + len(chunk)] += hidden[:, pos] / len(bases)
            forwards += len(chunk)
            if on_step is not None:
                on_step(len(chunk))
    sim_with = _mean_pair_cos(summaries)
    scores = {"hijack": (sim_with - sim_without) / max(1e-6, 1.0 - float(sim_without))}
    # the token's state after each whole prompt (a causal encoder: what follows it does not matter)
    contexts = [contextual]
    for base in bases:
        states = torch.zeros_like(contextual)
        for start in range(0, len(ids_all), batch_size):
            chunk = ids_all[start:start + batch_size]
            seqs = torch.tensor([base + [int(t), frame.eos] for t in chunk])
            states[start:start + len(chunk)] = encode_ids(text_encoder, seqs).cpu()[:, len(base)]
            forwards += len(chunk)
        contexts.append(states)
    kv = _joined(contexts, lambda c: _kv_features(unet, c, seed), seed + 1)
    emb = _joined(contexts, lambda c: torch.nn.functional.normalize(c - c.mean(0), dim=1), seed + 2)
    scores["kv_agreement"], neighbour = _agreement(kv, emb)
    if queries:
        scores["attraction"] = _attraction(unet, contextual, queries)
    return VocabSweep(token_ids=ids_all, scores=scores, neighbour=ids_all[neighbour], encoder_forwards=forwards,
                      seconds=round(time.perf_counter() - t0, 2))


def _summary(hidden: torch.Tensor) -> torch.Tensor:
    """``(N, D)``: the end-token state (CLIP's pooled summary of the whole prompt), unit length."""
    return torch.nn.functional.normalize(hidden[:, -1], dim=-1)


def _mean_pair_cos(summaries: torch.Tensor) -> torch.Tensor:
    """``(P, V, F)`` -> ``(V,)`` mean cosine between the P prompts' summaries of each token."""
    p = summaries.shape[0]
    total = torch.zeros(summaries.shape[1])
    for a in range(p):
        for b in range(a + 1, p):
            total += torch.nn.functional.cosine_similarity(summaries[a], summaries[b], dim=-1)
    return total / (p * (p - 1) / 2)


def _kv_features(unet: torch.nn.Module, contextual: torch.Tensor, seed: int) -> torch.Tensor:
    """``(V, F)`` unit rows: every cross-attention layer's key and value of each token, less the
    vocabulary's mean (what all tokens share says nothing of one), each unit length, side by side (projected to ``PROJECTED_DIMS`` where a layer is wider), so a row's cosine with
    another is the mean over layers of the keys' and values' cosines."""
    gen = make_generator(seed + 11)
    parts = []
    layers = cross_attentions(unet)
    for attn in layers:
        for proj in (attn.to_k, attn.to_v):
            w = proj.weight.detach().float().cpu()
            out = contextual @ w.T
            out = torch.nn.functional.normalize(out - out.mean(0), dim=1)  # what sets a token apart
            if out.shape[1] > PROJECTED_DIMS:
                r = torch.randn(out.shape[1], PROJECTED_DIMS, generator=gen) / math.sqrt(PROJECTED_DIMS)
                out = torch.nn.functional.normalize(out @ r, dim=1)
            parts.append(out)
    if not parts:
        raise ValueError("the UNet has no cross-attention layers")
    return torch.cat(parts, dim=1) / math.sqrt(len(parts))


def _joined(contexts: Sequence[torch.Tensor], features: Callable[[torch.Tensor], torch.Tensor], seed: int,
            ) -> torch.Tensor:
    """``(V, F)`` unit rows: ``features(context)`` (unit rows) of every context side by side, so that the
    cosine of two rows is the mean over contexts of theirs; projected to ``FEATURE_DIMS`` (seeded) when
    wider, one context at a time."""
    parts = [features(c) for c in contexts[:1]]
    width = parts[0].shape[1] * len(contexts)
    if width <= FEATURE_DIMS:
        parts += [features(c) for c in contexts[1:]]
        return torch.cat(parts, dim=1) / math.sqrt(len(contexts))
    gen = make_generator(seed + 23)
    out = torch.zeros(parts[0].shape[0], FEATURE_DIMS)
    for i, c in enumerate(contexts):
        f = parts[0] if i == 0 else features(c)
        out += f @ (torch.randn(f.shape[1], FEATURE_DIMS, generator=gen) / math.sqrt(FEATURE_DIMS))
    return torch.nn.functional.normalize(out, dim=1)


def _agreement(kv: torch.Tensor, emb: torch.Tensor, chunk: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """``((V,), (V,))``: each token's key/value agreement and its partner's index. Among the token's
    ``PARTNERS`` nearest by keys and values, the partner maximises
    ``log(1 - embedding cosine) - log(1 - key/value cosine)``: keys and values far closer than the
    embeddings they are computed from."""
    n = kv.shape[0]
    score = torch.empty(n)
    arg = torch.empty(n, dtype=torch.long)
    k = min(PARTNERS, n - 1)
    for start in range(0, n, chunk):
        sims = kv[start:start + chunk] @ kv.T
        rows = torch.arange(start, min(n, start + chunk))
        sims[rows - start, rows] = -2.0
        kv_cos, near = sims.topk(k, dim=1)
        emb_cos = (emb[start:start + chunk, None, :] * emb[near]).sum(-1)
        ratio = torch.log((1 - emb_cos).clamp(min=0) + 1e-3) - torch.log((1 - kv_cos).clamp(min=0) + 1e-3)
        score[start:start + chunk], best = ratio.max(1)
        arg[start:start + chunk] = near.gather(1, best[:, None])[:, 0]
    return score, arg


def _attraction(unet: torch.nn.Module, contextual: torch.Tensor, queries: Sequence[torch.Tensor]) -> torch.Tensor:
    """``(V,)`` the mean over layers of each token's mean attention logit from the UNet's own queries,
    each layer's logits standardised over the vocabulary first (layers weigh alike)."""
    total = torch.zeros(contextual.shape[0])
    layers = cross_attentions(unet)
    for attn, q in zip(layers, queries):
        k = contextual @ attn.to_k.weight.detach().float().cpu().T
        heads = int(getattr(attn, "heads", 1))
        d = k.shape[1] // heads
        qh = q.float().cpu().reshape(q.shape[0], heads, d)
        kh = k.reshape(k.shape[0], heads, d)
        logits = torch.einsum("qhd,vhd->vqh", qh, kh) / math.sqrt(d)
        layer = logits.flatten(1).mean(1)
        total += (layer - layer.mean()) / layer.std().clamp(min=1e-8)
    return total / max(1, len(queries))


@torch.no_grad()
def collect_queries(unet: torch.nn.Module, run: Callable[[], None], per_layer: int = 256, seed: int = 0,
                    ) -> list[torch.Tensor]:
    """The queries each cross-attention layer computes while ``run()`` drives the UNet (a few ordinary
    denoising steps), ``per_layer`` of them drawn at random per layer."""
    layers = cross_attentions(unet)
    seen: list[list[torch.Tensor]] = [[] for _ in layers]
    hooks = [attn.to_q.register_forward_hook(lambda _m, _a, out, i=i: seen[i].append(out.detach().flatten(0, -2).cpu()))
             for i, attn in enumerate(layers)]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    gen = make_generator(seed + 13)
    out = []
    for qs in seen:
        q = torch.cat(qs) if qs else torch.zeros(0, 1)
        if q.shape[0] > per_layer:
            q = q[torch.randperm(q.shape[0], generator=gen)[:per_layer]]
        out.append(q)
    return out
