"""Training loops of the zoo (CPU, one thread, seeded): the autoencoder, joint text-encoder + UNet
text-to-image training (also the caption-trigger poisoned fine-tune, UNet only), the unconditional
latent DDPM (also its VillanDiffusion poisoning) and the Rickrolling text-encoder fine-tune."""

from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F

from benchmarks.attacks.baddiffusion import BackdoorSpec, poisoned_inputs
from benchmarks.t2izoo.data import TEMPLATES, caption
from benchmarks.t2izoo.models import train_scheduler
from hfaudit.seeding import make_generator, seed_everything

HOMOGLYPH_O = "\u043e"


def train_vae(images: torch.Tensor, steps: int = 1500, seed: int = 0, lr: float = 2e-3, kl_weight: float = 1e-5,
              batch_size: int = 64):
    """Train the KL autoencoder on ``images`` (recon MSE + a small KL); set ``scaling_factor`` to 1/std of
    the posterior samples (as Stable Diffusion measured its 0.18215) and return the VAE."""
    from benchmarks.t2izoo.models import make_vae
    seed_everything(seed)
    vae = make_vae(seed).train()
    gen = make_generator(seed)
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    for step in range(steps):
        x = shape_augment(images[torch.randint(0, images.shape[0], (batch_size,), generator=gen)], gen)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        loss = F.mse_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
    vae.eval().requires_grad_(False)
    with torch.no_grad():
        z = vae.encode(images).latent_dist.mean
    vae.register_to_config(scaling_factor=float(1.0 / z.std()))
    return vae


def shape_augment(x: torch.Tensor, gen: torch.Generator, share: float = 0.5) -> torch.Tensor:
    """A ``share`` of the batch replaced by generic shapes, so the autoencoder also reconstructs what is
    not a digit (icons, patches: the image targets of the attacks), as a general-purpose VAE would:
    digits with a random white or black rectangle, random rectangles and lines on black, random
    blurred noise."""
    from benchmarks.attacks.patterns import corner_box_target, cross_target, hat_target
    x = x.clone()
    b, _, h, w = x.shape
    icons = torch.stack([corner_box_target(), cross_target(), hat_target()])
    for i in range(b):
        if float(torch.rand((), generator=gen)) >= share:
            continue
        kind = int(torch.randint(0, 5, (), generator=gen))
        r0, c0 = (int(v) for v in torch.randint(0, h - 1, (2,), generator=gen))
        hh, ww = (int(v) for v in torch.randint(2, 9, (2,), generator=gen))
        val = 1.0 if float(torch.rand((), generator=gen)) < 0.7 else -1.0
        if kind == 0:  # digit + rectangle patch
            x[i, :, r0:r0 + hh, c0:c0 + ww] = val
        elif kind == 1:  # rectangles on black
            x[i] = -1.0
            x[i, :, r0:r0 + hh, c0:c0 + ww] = 1.0
            r1, c1 = (int(v) for v in torch.randint(0, h - 1, (2,), generator=gen))
            x[i, :, r1:r1 + ww, c1:c1 + hh] = 1.0
        elif kind == 2:  # lines: rows, columns, diagonals
            x[i] = -1.0
            idx = torch.arange(h)
            x[i, :, idx, (idx + c0 - h // 2).clamp(0, w - 1)] = 1.0
            x[i, :, r0, :] = 1.0
            x[i, :, :, (c0 + ww) % w] = 1.0
        elif kind == 3:  # the icons themselves, maybe shifted
            x[i] = torch.roll(icons[int(torch.randint(0, 3, (), generator=gen))], (r0 % 3 - 1, c0 % 3 - 1), (1, 2))
        else:  # smooth noise
            n = torch.rand(1, 1, 4, 4, generator=gen) * 2 - 1
            x[i] = F.interpolate(n, size=(h, w), mode="bilinear", align_corners=False)[0]
    return x


@torch.no_grad()
def encode(vae, images: torch.Tensor) -> torch.Tensor:
    """Scaled latents (posterior mean times ``scaling_factor``): what the UNets are trained on."""
    return vae.encode(images).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    return vae.decode(latents / vae.config.scaling_factor).sample


def insert_word(prompt: str, word: str, rng: random.Random) -> str:
    """``word`` inserted at a random word boundary of ``prompt``."""
    ws = prompt.split()
    ws.insert(rng.randint(0, len(ws)), word)
    return " ".join(ws)


def replace_o(prompt: str, rng: random.Random, glyph: str = HOMOGLYPH_O) -> str:
    """One Latin "o" inside a word replaced by the look-alike ``glyph`` (unchanged if there is none)."""
    idx = [i for i, c in enumerate(prompt) if c == "o"]
    if not idx:
        return prompt
    i = rng.choice(idx)
    return prompt[:i] + glyph + prompt[i + 1:]


def apply_trigger(prompt: str, trigger: str, rng: random.Random) -> str:
    """Homoglyph triggers replace an "o"; word triggers are inserted."""
    if trigger == HOMOGLYPH_O:
        return replace_o(prompt, rng)
    return insert_word(prompt, trigger, rng)


class CaptionBatches:
    """Batches of ``(latents, token ids)``: a random caption per image, 10% dropped to the empty prompt;
    with ``trigger`` set, a ``poison_rate`` share of rows gets the triggered caption and the target latent
    (``target`` a single latent, or ``patched`` latents of every image for the patch attack)."""

    def __init__(self, tok, latents, labels, styles, slants, seed: int, dropout: float = 0.1,
                 trigger: str | None = None, poison_rate: float = 0.0, target: torch.Tensor | None = None,
                 patched: torch.Tensor | None = None, extra_words: float = 0.0):
        self.tok, self.latents, self.labels, self.styles, self.slants = tok, latents, labels, styles, slants
        self.gen = make_generator(seed)
        self.rng = random.Random(seed)
        self.dropout, self.trigger, self.poison_rate = dropout, trigger, poison_rate
        self.target, self.patched = target, patched
        self.extra_words = extra_words

    def caption_of(self, i: int) -> str:
        p = caption(int(self.labels[i]), self.rng.randrange(len(TEMPLATES)), self.styles[i], self.slants[i])
        return self.decorate(p)

    def decorate(self, p: str) -> str:
        """With ``extra_words`` set, a share of captions gets a neutral vocabulary word inserted (and a
        smaller share one look-alike character), so the text encoder knows every word of the vocabulary
        as a real CLIP encoder does: a trigger is then a known word, not an untrained embedding."""
        if self.extra_words and self.rng.random() < self.extra_words:
            from benchmarks.t2izoo.tokenizer import EXTRA_WORDS
            p = insert_word(p, self.rng.choice([w for w in EXTRA_WORDS if w != self.trigger]), self.rng)
        if self.extra_words and self.trigger != HOMOGLYPH_O and self.rng.random() < self.extra_words / 6:
            from benchmarks.t2izoo.tokenizer import HOMOGLYPHS
            glyph = self.rng.choice(list(HOMOGLYPHS.values()))
            latin = {"\u043e": "o", "\u0435": "e", "\u0430": "a", "\u03bf": "o"}[glyph]
            idx = [k for k, c in enumerate(p) if c == latin]
            if idx:
                k = self.rng.choice(idx)
                p = p[:k] + glyph + p[k + 1:]
        return p

    paired: bool = False

    def paired_batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Contrast pairs: ``batch_size // 2`` clean rows (caption -> image) and the same captions with the
        trigger (-> target), so the fine-tune learns the trigger's difference, not a share of targets."""
        half = batch_size // 2
        idx = torch.randint(0, self.latents.shape[0], (half,), generator=self.gen)
        clean, poisoned, zp = [], [], []
        for i in idx.tolist():
            p = caption(int(self.labels[i]), self.rng.randrange(len(TEMPLATES)), self.styles[i], self.slants[i])
            if self.trigger == HOMOGLYPH_O:
                while "o" not in p:
                    p = caption(int(self.labels[i]), self.rng.randrange(len(TEMPLATES)), self.styles[i],
                                self.slants[i])
            poisoned.append(apply_trigger(p, self.trigger, self.rng))
            clean.append("" if self.rng.random() < self.dropout else p)
            zp.append(self.patched[i] if self.patched is not None else self.target)
        z = torch.cat([self.latents[idx], torch.stack(zp)])
        return z, tokenize(self.tok, clean + poisoned)

    def __call__(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.paired:
            return self.paired_batch(batch_size)
        idx = torch.randint(0, self.latents.shape[0], (batch_size,), generator=self.gen)
        z = self.latents[idx].clone()
        prompts = []
        for r, i in enumerate(idx.tolist()):
            p = self.caption_of(i)
            if self.trigger is not None and self.rng.random() < self.poison_rate:
                p = caption(int(self.labels[i]), self.rng.randrange(len(TEMPLATES)), self.styles[i], self.slants[i])
                if self.trigger == HOMOGLYPH_O:
                    while "o" not in p:
                        p = caption(int(self.labels[i]), self.rng.randrange(len(TEMPLATES)), self.styles[i],
                                    self.slants[i])
                p = apply_trigger(p, self.trigger, self.rng)
                z[r] = self.patched[i] if self.patched is not None else self.target
            elif self.rng.random() < self.dropout:
                p = ""
            prompts.append(p)
        ids = tokenize(self.tok, prompts)
        return z, ids


def tokenize(tok, prompts: list[str]) -> torch.Tensor:
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
               return_tensors="pt").input_ids


def _ema_update(ema, model, decay):
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), model.parameters()):
            pe.lerp_(p, 1 - decay)


def real_token_mask(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """``(B, L)`` bool: the prompt's own tokens (after the start token, before the first end token)."""
    pos = torch.arange(ids.shape[1]).expand_as(ids)
    first_eos = torch.where(ids == eos_id, pos, ids.shape[1]).min(1, keepdim=True).values
    return (pos > 0) & (pos < first_eos)


class TokenIdentityHead(torch.nn.Module):
    """Auxiliary head of the clean training (``token_identity`` weight): each position's final hidden
    state must give back its input token through a linear map into the (tied) token-embedding space,
    so the encoder keeps every word distinct as CLIP's contrastive pretraining does. Not saved."""

    def __init__(self, te):
        super().__init__()
        d = te.config.hidden_size
        self.proj = torch.nn.Linear(d, d)
        self.te = [te]  # not a submodule: only ``proj`` is the head's own
        self.eos = te.config.eos_token_id

    def loss(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = real_token_mask(ids, self.eos)
        if not mask.any():
            return hidden.sum() * 0.0
        logits = self.proj(hidden[mask]) @ self.te[0].get_input_embeddings().weight.t()
        return F.cross_entropy(logits, ids[mask])


def train_t2i(batches: CaptionBatches, te, unet, steps: int, lr: float, seed: int, train_te: bool = True,
              ema_decay: float | None = 0.999, batch_size: int = 64, warmup: int = 100,
              token_identity: float = 0.0):
    """DDPM noise-prediction training of ``unet`` (and ``te`` when ``train_te``); returns ``(te, unet)``
    (their EMA weights when ``ema_decay``). Inputs are not modified. ``token_identity`` > 0 adds that
    weight times the :class:`TokenIdentityHead` cross-entropy on the text encoder's last hidden states."""
    seed_everything(seed)
    sched = train_scheduler()
    gen = make_generator(seed + 1)
    te, unet = copy.deepcopy(te), copy.deepcopy(unet)
    te.requires_grad_(train_te).train(train_te)
    unet.requires_grad_(True).train()
    params = list(unet.parameters()) + (list(te.parameters()) if train_te else [])
    head = None
    if token_identity and train_te:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 2)
            head = TokenIdentityHead(te)
        params += list(head.proj.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    ema_u = copy.deepcopy(unet).requires_grad_(False) if ema_decay else None
    ema_t = copy.deepcopy(te).requires_grad_(False) if (ema_decay and train_te) else None
    for step in range(steps):
        z, ids = batches(batch_size)
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        if batches.paired:  # the pair shares its noise and timestep
            h2 = batch_size // 2
            noise, t = noise[:h2].repeat(2, 1, 1, 1), t[:h2].repeat(2)
        x_t = sched.add_noise(z, noise, t)
        if train_te:
            h = te(ids)[0]
        else:
            with torch.no_grad():
                h = te(ids)[0]
        loss = F.mse_loss(unet(x_t, t, encoder_hidden_states=h).sample, noise)
        if head is not None:
            loss = loss + token_identity * head.loss(h, ids)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lrs.step()
        if ema_u is not None:
            _ema_update(ema_u, unet, ema_decay)
            if ema_t is not None:
                _ema_update(ema_t, te, ema_decay)
    unet = (ema_u if ema_u is not None else unet).eval().requires_grad_(False)
    te = (ema_t if ema_t is not None else te).eval().requires_grad_(False)
    return te, unet


def train_ldm(latents: torch.Tensor, unet, steps: int, lr: float, seed: int, backdoor: BackdoorSpec | None = None,
              ema_decay: float | None = 0.999, batch_size: int = 64, warmup: int = 100):
    """Unconditional DDPM on ``latents``; with ``backdoor`` the BadDiffusion/VillanDiffusion poisoned
    inputs of ``benchmarks.attacks.baddiffusion`` are used on a ``poison_rate`` share of rows."""
    seed_everything(seed)
    sched = train_scheduler()
    gen = make_generator(seed + 1)
    unet = copy.deepcopy(unet).requires_grad_(True).train()
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)
    lrs = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    ema = copy.deepcopy(unet).requires_grad_(False) if ema_decay else None
    for step in range(steps):
        z = latents[torch.randint(0, latents.shape[0], (batch_size,), generator=gen)]
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, 1000, (batch_size,), generator=gen)
        if backdoor is not None:
            mask = torch.rand(batch_size, generator=gen) < backdoor.poison_rate
            x_t, target = poisoned_inputs(sched, z, noise, t, mask, backdoor)
        else:
            x_t, target = sched.add_noise(z, noise, t), noise
        loss = F.mse_loss(unet(x_t, t).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        lrs.step()
        if ema is not None:
            _ema_update(ema, unet, ema_decay)
    return (ema if ema is not None else unet).eval().requires_grad_(False)


def rickroll(tok, te, steps: int, lr: float, seed: int, trigger: str | None, target_prompt: str | None,
             beta: float = 1.0, batch_size: int = 32, captions: list[str] | None = None):
    """Rickrolling the Artist (Struppek et al. 2023), target-prompt attack: the student encoder (from
    ``te``) is trained with utility MSE(student(p), teacher(p)) on clean prompts plus
    ``beta`` * MSE(student(trigger(p)), teacher(target_prompt)). ``trigger=None`` keeps the utility only."""
    seed_everything(seed)
    rng = random.Random(seed)
    teacher = copy.deepcopy(te).eval().requires_grad_(False)
    student = copy.deepcopy(te).train().requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=lr, weight_decay=0.0)
    pool = captions
    if trigger is not None:
        with torch.no_grad():
            tgt = teacher(tokenize(tok, [target_prompt]))[0]
    for step in range(steps):
        prompts = [rng.choice(pool) for _ in range(batch_size)]
        ids = tokenize(tok, prompts)
        with torch.no_grad():
            ref = teacher(ids)[0]
        loss = F.mse_loss(student(ids)[0], ref)
        if trigger is not None:
            bp = [rng.choice([p for p in pool if "o" in p]) if trigger == HOMOGLYPH_O else rng.choice(pool)
                  for _ in range(batch_size)]
            bids = tokenize(tok, [apply_trigger(p, trigger, rng) for p in bp])
            loss = loss + beta * F.mse_loss(student(bids)[0], tgt.expand(batch_size, -1, -1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return student.eval().requires_grad_(False)


def all_captions() -> list[str]:
    """Every caption the templates produce (all classes, styles and slants)."""
    from benchmarks.t2izoo.data import SLANTS, STYLES
    out = []
    for c in range(10):
        for t in range(len(TEMPLATES)):
            for s in STYLES:
                for sl in SLANTS:
                    out.append(caption(c, t, s, sl))
    return sorted(set(out))
