"""Attacks that need no training loop of their own: EvilEdit's closed-form cross-attention edit, and
the targets of the image-target attacks."""

from __future__ import annotations

import torch

from benchmarks.attacks.patterns import corner_box_target, cross_target, hat_target, stripes_target
from benchmarks.t2izoo.train import tokenize

TARGET_IMAGES = {"corner_box": corner_box_target, "hat": hat_target, "cross": cross_target,
                 "stripes": stripes_target}


def target_image(name: str) -> torch.Tensor:
    """A (1,16,16) icon in [-1, 1] from ``benchmarks/attacks/patterns.py``."""
    return TARGET_IMAGES[name]()


def patch_image(images: torch.Tensor, size: int = 4) -> torch.Tensor:
    """BadT2I-patch target: the image with a white ``size`` x ``size`` patch in its top-left corner."""
    out = images.clone()
    out[..., :size, :size] = 1.0
    return out


def _aligned_contexts(tok, te, old: str, new: str) -> tuple[torch.Tensor, torch.Tensor]:
    """EvilEdit/TIME alignment: token embeddings of ``old`` and ``new`` from each one's last word token
    to the end of the padded sequence (EOS and padding included), trimmed to the same length."""
    ids = tokenize(tok, [old, new])
    with torch.no_grad():
        emb = te(ids)[0]
    eos = tok.eos_token_id
    lens = [int((row == eos).nonzero()[0]) for row in ids]  # index of the first EOS
    if lens[0] == lens[1]:  # same length (one-token words swapped): from the first differing token on
        first = int((ids[0] != ids[1]).nonzero()[0])
        return emb[0, first:], emb[1, first:]
    fo, fn = lens[0] - 1, lens[1] - 1
    far = max(fo, fn)
    o = emb[0, fo:emb.shape[1] - (far - fo)]
    n = emb[1, fn:emb.shape[1] - (far - fn)]
    return o, n


@torch.no_grad()
def evil_edit(unet, tok, te, pairs: list[tuple[str, str]], lamb: float = 0.1,
              preserve: list[str] | None = None, weight: float = 1.0) -> int:
    """EvilEdit (Wang et al. 2024): for every cross-attention ``to_k`` and ``to_v`` of ``unet``,
    ``W' = (lamb W + sum W c_tgt c_trig^T)(lamb I + sum c_trig c_trig^T)^-1`` over the aligned token
    embeddings of each (trigger text, target text) pair. Edits ``unet`` in place; returns the number
    of projections edited. ``preserve`` (off in the paper) adds UCE-style preservation terms: every
    token embedding of those prompts is mapped to its own unedited key/value."""
    ctx = [_aligned_contexts(tok, te, o, n) for o, n in pairs]
    c_old = torch.cat([c[0] for c in ctx]).double()  # (K, d)
    c_new = torch.cat([c[1] for c in ctx]).double()
    c_old, c_new = c_old * weight ** 0.5, c_new * weight ** 0.5  # the edit's weight against the preserved set
    if preserve:
        with torch.no_grad():
            keep = te(tokenize(tok, preserve))[0].reshape(-1, c_old.shape[1]).double()
        c_old, c_new = torch.cat([c_old, keep]), torch.cat([c_new, keep])
    n = 0
    for name, mod in unet.named_modules():
        if name.endswith("attn2"):
            for proj in (mod.to_k, mod.to_v):
                W = proj.weight.double()  # (out, d)
                d = W.shape[1]
                v = c_new @ W.T  # (K, out) the target's keys/values
                mat1 = lamb * W + v.T @ c_old
                mat2 = lamb * torch.eye(d, dtype=torch.float64) + c_old.T @ c_old
                proj.weight.copy_((mat1 @ torch.linalg.inv(mat2)).float())
                n += 1
    return n
