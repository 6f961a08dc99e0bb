"""What a text-to-image verdict costs on the real Stable Diffusion 1.5 architecture (random weights).

    python benchmarks/t2i_cost.py [--sweep-tokens 1024] [--full-sweep] [--device cpu|cuda]

Builds the SD 1.5 components with random weights (timing only: no weights can be downloaded here):
the CLIP ViT-L/14 text encoder (12 layers, width 768, a 49,408-token vocabulary, 77 positions), the
``UNet2DConditionModel`` of SD 1.5 (860M parameters, 64x64x4 latents) and its ``AutoencoderKL``
(512x512 images). The tokenizer is a CLIP byte-pair tokenizer of the same size built in code (its
entries beyond a few hundred words are placeholders: the sweep's cost depends on the vocabulary's
size, not on its words). It then measures, on this machine:

- the vocabulary sweep (``hfaudit.detect.vocab.sweep_vocabulary``) on ``--sweep-tokens`` tokens, and
  the whole vocabulary projected from it (``--full-sweep`` runs all 49,406: about half an hour on 2
  CPU cores);
- one UNet evaluation (batch 1 and 4) and one VAE decode;
- from them, the behaviour probe, the screen and the confirmation of hfaudit's ``default`` and
  ``fast`` text-to-image settings (``hfaudit.detect.scan.text_config``,
  ``TextScanConfig.planned_evaluations``), projected: UNet evaluations x seconds each, plus a decode
  per generated image. The load average is printed: other work on the machine slows every figure.

Projections are labelled as such; what was run is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `python benchmarks/<script>.py`

from benchmarks.record import recording  # noqa: E402

VOCAB = 49408
WORDS = ("a photo of the and with in on at by for from house river dog cat city night painting portrait "
         "red blue green street forest mountain sea car tree flower woman man child old young bright dark "
         "small large table window garden beach road sky cloud snow rain light shadow").split()


def clip_tokenizer(folder: Path):
    """A CLIP byte-pair tokenizer with SD 1.5's vocabulary size: byte characters, the words above as
    whole tokens, placeholders up to 49,406 entries, then the two special tokens."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    b2u = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in b2u.values():
        vocab[c] = len(vocab)
    for c in b2u.values():
        vocab[c + "</w>"] = len(vocab)
    merges = []
    for w in WORDS:
        parts = list(w[:-1]) + [w[-1] + "</w>"]
        cur = parts[0]
        for p in parts[1:]:
            merges.append(f"{cur} {p}")
            cur += p
            vocab.setdefault(cur, len(vocab))
    i = 0
    while len(vocab) < VOCAB - 2:
        vocab[f"\u0100{i}"] = len(vocab)  # placeholders: never produced by a merge
        i += 1
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def sd15(device: torch.device):
    """SD 1.5's text encoder, UNet and VAE, random weights, in eval mode on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    te = CLIPTextModel(CLIPTextConfig(vocab_size=VOCAB, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                      num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                      bos_token_id=VOCAB - 2, eos_token_id=VOCAB - 1, pad_token_id=VOCAB - 1))
    unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # diffusers' defaults are SD 1.x's
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
                        sample_size=512)
    return [m.to(device).eval().requires_grad_(False) for m in (te, unet, vae)]


def timed(fn, repeat: int = 2) -> float:
    """Seconds of one call of ``fn`` (after a warm-up call), the best of ``repeat``."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep-tokens", type=int, default=1024, help="tokens the measured sweep covers")
    parser.add_argument("--full-sweep", action="store_true", help="sweep the whole vocabulary (slow on a CPU)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when there is one)")
    args = parser.parse_args()
    from hfaudit.detect.budgets import budget_config
    from hfaudit.detect.scan import text_config
    from hfaudit.detect.t2i import vocabulary_prompts
    from hfaudit.detect.vocab import sweep_vocabulary

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with recording("t2i_cost"), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        import os

        print(f"device: {device}, torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
        tok = clip_tokenizer(Path(tmp) / "tok")
        te, unet, vae = sd15(device)
        n_params = {name: sum(p.numel() for p in m.parameters()) for name, m in
                    (("text encoder", te), ("unet", unet), ("vae", vae))}
        print("parameters: " + ", ".join(f"{k} {v / 1e6:.0f}M" for k, v in n_params.items()))
        prompts = vocabulary_prompts(tok, 8, seed=0)

        class Slice(torch.nn.Module):
            """The text encoder seen through the first ``n`` entries of its vocabulary (the sweep's cost
            is linear in the tokens it sweeps)."""

            def __init__(self, inner: torch.nn.Module, n: int) -> None:
                super().__init__()
                self.inner, self.n = inner, n
                self.emb = torch.nn.Embedding(n, 1)

            def get_input_embeddings(self) -> torch.nn.Module:
                return self.emb

            def forward(self, ids: torch.Tensor):
                return self.inner(ids)

        n_sweep = VOCAB if args.full_sweep else args.sweep_tokens
        for cfg_name in ("default", "fast"):
            tcfg = text_config(budget_config(cfg_name))
            encoder = te if args.full_sweep else Slice(te, n_sweep)
            t = time.perf_counter()
            sweep = sweep_vocabulary(encoder, unet, tok, prompts[: tcfg.sweep_prompts], None)
            sweep_s = time.perf_counter() - t
            per_token = sweep_s / max(1, len(sweep.token_ids))
            full_sweep = per_token * (VOCAB - 2)
            lat = torch.randn(4, 4, 64, 64, device=device)
            cond = te(torch.tensor([tok(p, padding="max_length", max_length=77)["input_ids"] for p in prompts[:4]],
                                   device=device))[0]
            one = timed(lambda: unet(lat[:1], 500, encoder_hidden_states=cond[:1]), repeat=1)
            four = timed(lambda: unet(lat, 500, encoder_hidden_states=cond), repeat=1) / 4
            dec = timed(lambda: vae.decode(lat[:1] / 0.18215), repeat=1)
            plan = tcfg.planned_evaluations(VOCAB - 2)
            probe, screen = plan["probe"], plan["screen"]
            images = (1 + tcfg.null_tokens + tcfg.confirm_tokens) * tcfg.confirm_prompts * tcfg.confirm_seeds
            confirm = plan["nulls"] + plan["confirmation"]
            total = full_sweep + (probe + screen + confirm) * four + images * dec
            print(f"\n[{cfg_name}] sweep of {len(sweep.token_ids):,} tokens x {tcfg.sweep_prompts} prompts: "
                  f"{sweep_s:.1f} s measured ({per_token * 1e3:.2f} ms a token); whole vocabulary "
                  f"{'measured' if args.full_sweep else 'projected'}: {full_sweep / 60:.1f} min")
            print(f"  one UNet evaluation at 64x64: {one:.2f} s (batch 1), {four:.2f} s each (batch 4); "
                  f"one VAE decode to 512x512: {dec:.2f} s")
            print(f"  behaviour probe {tcfg.probe_count(VOCAB - 2):,} tokens, {probe:,} evaluations: "
                  f"{probe * four / 60:.1f} min projected")
            print(f"  screen {screen:,} evaluations: {screen * four / 60:.1f} min projected; confirmation "
                  f"{confirm:,} evaluations and {images} decodes: {(confirm * four + images * dec) / 60:.1f} min "
                  f"projected")
            print(f"  a verdict: {probe + screen + confirm:,} UNet evaluations, {total / 60:.1f} min projected "
                  f"({full_sweep / total:.0%} of it the sweep)")
            if args.full_sweep:
                break


if __name__ == "__main__":
    main()
