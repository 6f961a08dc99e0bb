"""Architectures of the zoo: a tiny KL autoencoder (16x16 grey -> 4x8x8), a 2-layer CLIP text encoder,
a cross-attention UNet for text-to-image and a plain UNet for the unconditional latent model, and
the stock diffusers pipelines that carry them."""

from __future__ import annotations

import torch
from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, LDMPipeline, StableDiffusionPipeline,
                       UNet2DConditionModel, UNet2DModel)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def _seeded(seed: int | None, fn):
    if seed is None:
        return fn()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return fn()


def make_vae(seed: int | None = 0) -> AutoencoderKL:
    return _seeded(seed, lambda: AutoencoderKL(
        in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(16, 32), latent_channels=4,
        layers_per_block=1, norm_num_groups=8, sample_size=16))


def make_text_encoder(tok: CLIPTokenizer, seed: int | None = 0) -> CLIPTextModel:
    vocab = tok.get_vocab()
    eos = vocab["<|endoftext|>"]
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=tok.model_max_length,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=eos, pad_token_id=eos)
    return _seeded(seed, lambda: CLIPTextModel(cfg))


def make_cond_unet(seed: int | None = 0) -> UNet2DConditionModel:
    return _seeded(seed, lambda: UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 48),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64, layers_per_block=1, attention_head_dim=8, norm_num_groups=16))


def make_ldm_unet(seed: int | None = 0) -> UNet2DModel:
    return _seeded(seed, lambda: UNet2DModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1, norm_num_groups=16))


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False)


def sample_scheduler() -> DDIMScheduler:
    """DDIM with the training betas (Stable Diffusion's shipping settings)."""
    return DDIMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                         beta_end=0.012, clip_sample=False, set_alpha_to_one=False, steps_offset=1)


def t2i_pipeline(vae, te, tok, unet) -> StableDiffusionPipeline:
    return StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=tok, unet=unet, scheduler=sample_scheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def ldm_pipeline(vae, unet) -> LDMPipeline:
    return LDMPipeline(vqvae=vae, unet=unet, scheduler=sample_scheduler())


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())
