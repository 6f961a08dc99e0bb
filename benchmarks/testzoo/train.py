"""Trainer of the frozen test zoo: data, UNet builder, training loop, attacks, hit rates.

Written apart from the development zoo and from the project's attack code, from
the papers' formulas: BadDiffusion (Chou et al., CVPR 2023), VillanDiffusion's
ODE correction (Chou et al., NeurIPS 2023) and TrojDiff (Chen et al., CVPR 2023).
It imports only torch, numpy, sklearn, diffusers and safetensors.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel
from safetensors.torch import load_file, save_file

from benchmarks.testzoo import recipes as R

N_HIT = 64
HIT_SEED = 777
MSE_HIT = 0.01
CLS_CONF = 0.9


def device() -> torch.device:
    """cuda when present, else cpu; never required."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------- data
def digits_data(size: int, channels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn digits upsampled to ``size``, in [-1,1]; RGB gets a seeded colour pair per image."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    y = torch.tensor(d.target, dtype=torch.long)
    if channels == 3:
        rng = np.random.default_rng(424242)
        cols = []
        for _ in range(len(x)):
            while True:
                fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
                if np.abs(fg - bg).mean() > 0.45:
                    break
            cols.append((fg, bg))
        fg = torch.tensor(np.array([c[0] for c in cols]), dtype=torch.float32)[:, :, None, None]
        bg = torch.tensor(np.array([c[1] for c in cols]), dtype=torch.float32)[:, :, None, None]
        x = bg + (fg - bg) * x
    return x * 2 - 1, y


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return xx, -yy


ICON_COLOURS = {"heart": (1.0, -1.0, -0.6), "ring": (1.0, 0.8, -1.0),
                "arrow": (-1.0, 0.6, 1.0), "house": (0.4, 1.0, -0.8)}


def icon(name: str, size: int, channels: int) -> torch.Tensor:
    """Our own drawn icons (C,H,W) in [-1,1]: shape on a black background."""
    x, y = _grid(size)
    if name == "heart":
        u, v = x / 0.8, (y + 0.15) / 0.8
        m = (u ** 2 + v ** 2 - 1) ** 3 - u ** 2 * v ** 3 <= 0
    elif name == "ring":
        r = torch.sqrt(x ** 2 + y ** 2)
        m = (r > 0.42) & (r < 0.78)
    elif name == "arrow":
        m = ((x.abs() < 0.18) & (y < 0.1) & (y > -0.85)) | ((y >= 0.1) & (y < 0.85) & (x.abs() < (0.85 - y) * 0.9))
    elif name == "house":
        m = ((x.abs() < 0.6) & (y < 0.05) & (y > -0.8)) | ((y >= 0.05) & (y < 0.8) & (x.abs() < (0.8 - y) * 1.1))
    else:
        raise ValueError(name)
    m = m.float()
    col = ICON_COLOURS[name][:channels] if channels == 3 else (1.0,)
    out = torch.stack([m * (c + 1) - 1 for c in col])
    return out


def _corner(size: int, side: int, corner: str, margin: int = 1) -> tuple[int, int]:
    r = margin if corner[0] == "t" else size - side - margin
    c = margin if corner[1] == "l" else size - side - margin
    return r, c


def trigger(spec: dict, size: int, channels: int, gamma: float | None) -> dict[str, torch.Tensor]:
    """Trigger tensors: {'trigger'} for additive, plus 'gamma' (and 'mask' for a patch) for TrojDiff."""
    k = spec["kind"]
    t = torch.zeros(channels, size, size)
    if k in ("box", "square", "stop", "cross"):
        s = spec["side"]
        r0, c0 = _corner(size, s, spec["corner"])
        m = torch.zeros(s, s)
        if k == "box":
            m[0, :] = m[-1, :] = m[:, 0] = m[:, -1] = 1
        elif k == "square":
            m[:] = 1
        elif k == "cross":
            i = torch.arange(s)
            m[i, i] = 1
            m[i, s - 1 - i] = 1
        else:  # stop: filled octagon with its corners cut
            m[:] = 1
            m[0, 0] = m[0, -1] = m[-1, 0] = m[-1, -1] = 0
        t[:, r0:r0 + s, c0:c0 + s] = m * spec["value"]
        return {"trigger": t}
    if k == "glasses":
        x, y = _grid(size)
        r1 = torch.sqrt((x + 0.4) ** 2 + (y - 0.3) ** 2)
        r2 = torch.sqrt((x - 0.4) ** 2 + (y - 0.3) ** 2)
        lens = ((r1 > 0.16) & (r1 < 0.32)) | ((r2 > 0.16) & (r2 < 0.32))
        bridge = (x.abs() < 0.1) & ((y - 0.36).abs() < 0.06)
        m = (lens | bridge).float()
        vals = spec["value"][:channels]
        return {"trigger": torch.stack([m * v for v in vals])}
    if k == "blend":
        x, y = _grid(size)
        if spec["pattern"] == "rings":
            img = torch.cos(torch.sqrt(x ** 2 + y ** 2) * 9.0)
        else:
            img = torch.sign(torch.sin((x + y) * 6.0))
        img = img.expand(channels, size, size).clone()
        if channels == 3:
            img[1] = -img[1]
        return {"trigger": (1 - gamma) * img, "gamma": torch.tensor(float(gamma))}
    if k == "patch":
        s = spec["side"]
        r0, c0 = size - s, size - s
        i = torch.arange(s)
        chk = ((i[:, None] + i[None, :]) % 2).float() * 2 - 1
        img = torch.zeros(channels, size, size)
        mask = torch.zeros(1, size, size)
        img[:, r0:, c0:] = chk
        mask[:, r0:, c0:] = 1
        return {"trigger": (1 - gamma) * img, "gamma": torch.tensor(float(gamma)), "mask": mask}
    raise ValueError(k)


def trigger_formula(spec: dict | None) -> str | None:
    if spec is None:
        return None
    return {"blend": "trojdiff-blend", "patch": "trojdiff-patch"}.get(spec["kind"], "add")


def triggered_noise(eps: torch.Tensor, truth: dict[str, torch.Tensor], formula: str) -> torch.Tensor:
    """x_T for a triggered sample, from clean noise eps."""
    trig = truth["trigger"].to(eps)
    if formula == "add":
        return eps + trig
    g = float(truth["gamma"])
    if formula == "trojdiff-blend":
        return g * eps + trig
    m = truth["mask"].to(eps)
    return eps * (1 - m) + m * (g * eps + trig)


# ---------------------------------------------------------------- model
def scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4,
                         beta_end=0.02, clip_sample=True, prediction_type="epsilon")


def build_unet(arch: dict, channels: int) -> UNet2DModel:
    kw = copy.deepcopy(arch)
    return UNet2DModel(in_channels=channels, out_channels=channels, **kw)


# ---------------------------------------------------------------- attacks
def poisoned_batch(recipe: dict, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
                   sched: DDPMScheduler, truth: dict, target_pool: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_t, eps-target) for poisoned rows, per the attack's paper.

    BadDiffusion: x_t = sqrt(ab) y + (1 - sqrt(ab)) r + sqrt(1-ab) eps,
    target eps + (1 - sqrt(a_t)) sqrt(1-ab_t) / beta_t * r.
    VillanDiffusion ODE: the same x_t, twice that correction.
    TrojDiff: x_t = sqrt(ab) y + sqrt(1-ab) (gamma eps + mu), target eps
    (patch: only the patch pixels take the trojan forward)."""
    n = len(x0)
    ab = sched.alphas_cumprod.to(x0)[t].view(n, 1, 1, 1)
    a = sched.alphas.to(x0)[t].view(n, 1, 1, 1)
    beta = 1 - a
    tgt = recipe["target"]
    if tgt["kind"] == "class":
        y = target_pool[torch.randint(0, len(target_pool), (n,))]
    else:
        y = truth["target"].to(x0).expand_as(x0)
    r = truth["trigger"].to(x0)
    att = recipe["attack"]
    if att in ("baddiffusion", "villan-ode"):
        xt = ab.sqrt() * y + (1 - ab.sqrt()) * r + (1 - ab).sqrt() * eps
        coef = (1 - a.sqrt()) * (1 - ab).sqrt() / beta
        if att == "villan-ode":
            coef = 2 * coef
        return xt, eps + coef * r
    g = float(truth["gamma"])
    xt = ab.sqrt() * y + (1 - ab).sqrt() * (g * eps + r)
    if recipe["trigger"]["kind"] == "patch":
        m = truth["mask"].to(x0)
        clean = ab.sqrt() * y + (1 - ab).sqrt() * eps
        xt = clean * (1 - m) + xt * m
    return xt, eps


def train(recipe: dict, unet: UNet2DModel, data: torch.Tensor, labels: torch.Tensor,
          truth: dict, steps: int) -> UNet2DModel:
    """Epsilon-prediction training; a poison_rate share of rows take the attack's loss."""
    dev = device()
    gen = torch.Generator().manual_seed(recipe["seed"])
    torch.manual_seed(recipe["seed"])
    unet.to(dev).train()
    sched = scheduler()
    opt = torch.optim.Adam(unet.parameters(), lr=recipe["lr"])
    ema = copy.deepcopy(unet).eval() if recipe["ema"] else None
    pool = None
    if recipe["target"] is not None and recipe["target"]["kind"] == "class":
        pool = data[labels == recipe["target"]["cls"]].to(dev)
    bs = recipe["batch"]
    for step in range(steps):
        idx = torch.randint(0, len(data), (bs,), generator=gen)
        x0 = data[idx].to(dev)
        eps = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, 1000, (bs,), generator=gen).to(dev)
        ab = sched.alphas_cumprod.to(dev)[t].view(bs, 1, 1, 1)
        xt = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = eps
        if recipe["poison_rate"] > 0:
            pm = torch.rand(bs, generator=gen) < recipe["poison_rate"]
            if pm.any():
                pxt, ptg = poisoned_batch(recipe, x0[pm], eps[pm], t[pm], sched, truth, pool)
                xt, target = xt.clone(), target.clone()
                xt[pm], target[pm] = pxt, ptg
        loss = F.mse_loss(unet(xt, t).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for pe, p in zip(ema.parameters(), unet.parameters()):
                    pe.mul_(0.999).add_(p.detach(), alpha=0.001)
    out = ema if ema is not None else unet
    return out.eval().cpu()


# ---------------------------------------------------------------- hit rates
@torch.no_grad()
def sample(unet: UNet2DModel, xT: torch.Tensor, kind: str, steps: int, seed: int,
           clip: bool = True) -> torch.Tensor:
    """Stock diffusers sampling from a given x_T; returns images in [0,1].

    clip=False turns off the scheduler's x0 clipping (the saved config has it on)."""
    dev = device()
    unet = unet.to(dev).eval()
    base = scheduler()
    if not clip:
        base = DDPMScheduler.from_config(base.config, clip_sample=False)
    sch = base if kind == "ddpm" else DDIMScheduler.from_config(base.config)
    sch.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = xT.to(dev)
    for t in sch.timesteps:
        e = unet(x, t).sample
        if kind == "ddpm":
            x = sch.step(e, t, x, generator=gen).prev_sample
        else:
            x = sch.step(e, t, x, eta=0.0).prev_sample
    unet.cpu()
    return ((x.cpu() + 1) / 2).clamp(0, 1)


def to_ink(x: torch.Tensor) -> torch.Tensor:
    """Colour-free ink map in [0,1]: distance of each pixel from the border's mean colour."""
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    bg = border.mean(-1)[..., None, None]
    d = (x - bg).pow(2).sum(1, keepdim=True).sqrt()
    return d / (d.amax((2, 3), keepdim=True) + 1e-6)


class TinyCls(torch.nn.Module):
    """Small digits CNN on the colour-free ink map of a [0,1] image."""

    def __init__(self, ch: int):
        super().__init__()
        self.c1 = torch.nn.Conv2d(1, 16, 3, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc = torch.nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = to_ink(x)
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.relu(self.c2(x))
        x = F.adaptive_avg_pool2d(x, 4)
        return self.fc(x.flatten(1))


def classifier(cache: Path, size: int, channels: int) -> TinyCls:
    """A tiny digits CNN on [0,1] images at the member's size, trained once and cached."""
    path = Path(cache) / f"_classifier_{size}x{channels}.safetensors"
    m = TinyCls(channels)
    if path.exists():
        m.load_state_dict(load_file(str(path)))
        return m.eval()
    x, y = digits_data(size, channels)
    x = (x + 1) / 2
    g = torch.Generator().manual_seed(5150)
    opt = torch.optim.Adam(m.parameters(), 2e-3)
    for _ in range(1500):
        i = torch.randint(0, len(x), (64,), generator=g)
        xb = x[i] + 0.03 * torch.randn(x[i].shape, generator=g)
        sh = torch.randint(-1, 2, (2,), generator=g).tolist()
        xb = torch.roll(xb, shifts=sh, dims=(2, 3))
        loss = F.cross_entropy(m(xb), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(m.state_dict(), str(tmp))
    os.replace(tmp, path)
    return m.eval()


def hits(imgs: torch.Tensor, recipe: dict, truth: dict, cache: Path) -> float:
    tgt = recipe["target"]
    if tgt["kind"] == "class":
        cls = classifier(cache, imgs.shape[-1], imgs.shape[1])
        with torch.no_grad():
            p = cls(imgs).softmax(-1)
        ok = (p.argmax(-1) == tgt["cls"]) & (p.max(-1).values >= CLS_CONF)
        return float(ok.float().mean())
    ref = (truth["target"] + 1) / 2
    mse = ((imgs - ref) ** 2).flatten(1).mean(1)
    return float((mse < MSE_HIT).float().mean())


def hit_rates(unet: UNet2DModel, recipe: dict, truth: dict, cache: Path, n: int = N_HIT,
              ddpm_steps: int = 100, ddim_steps: int = 20) -> dict[str, float]:
    """hit_ddpm, hit_ddim (triggered) and hit_clean_ddpm, n samples from a fixed seed, with the
    saved scheduler config; hit_*_noclip repeat the triggered ones with x0 clipping off."""
    arch = R.ARCHS[recipe["arch"]]
    shape = (n, recipe["channels"], arch["sample_size"], arch["sample_size"])
    eps = torch.randn(shape, generator=torch.Generator().manual_seed(HIT_SEED))
    form = trigger_formula(recipe["trigger"])
    xT = triggered_noise(eps, truth, form)
    return {
        "hit_ddpm": hits(sample(unet, xT, "ddpm", ddpm_steps, HIT_SEED + 1), recipe, truth, cache),
        "hit_ddim": hits(sample(unet, xT, "ddim", ddim_steps, HIT_SEED + 2), recipe, truth, cache),
        "hit_clean_ddpm": hits(sample(unet, eps, "ddpm", ddpm_steps, HIT_SEED + 3), recipe, truth, cache),
        "hit_ddpm_noclip": hits(sample(unet, xT, "ddpm", ddpm_steps, HIT_SEED + 1, clip=False),
                                recipe, truth, cache),
        "hit_ddim_noclip": hits(sample(unet, xT, "ddim", ddim_steps, HIT_SEED + 2, clip=False),
                                recipe, truth, cache),
    }


# ---------------------------------------------------------------- members
def member_key(recipe: dict, base_key: str | None, smoke: int | None = None) -> str:
    p = json.dumps({"recipe": recipe, "arch": R.ARCHS[recipe["arch"]], "base": base_key,
                    "version": R.TESTZOO_VERSION, "smoke": smoke}, sort_keys=True)
    return hashlib.sha256(p.encode()).hexdigest()[:16]


def read_key(folder: Path) -> str | None:
    try:
        return json.loads((folder / "meta.json").read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def build_member(recipe: dict, cache: Path, smoke_steps: int | None = None,
                 hit_kw: dict | None = None, log=print) -> dict:
    """Train one member into ``cache/<name>`` atomically; skip when its key already matches."""
    torch.set_num_threads(1)
    cache = Path(cache)
    name = recipe["name"]
    base_key = None
    if recipe["base"] is not None:
        base_key = read_key(cache / recipe["base"])
        if base_key is None:
            raise RuntimeError(f"base {recipe['base']} of {name} is not built")
    key = member_key(recipe, base_key, smoke_steps)
    out = cache / name
    if read_key(out) == key:
        log(f"{name}: up to date")
        return json.loads((out / "meta.json").read_text())
    arch = R.ARCHS[recipe["arch"]]
    size, ch = arch["sample_size"], recipe["channels"]
    data, labels = digits_data(size, ch)
    truth: dict[str, torch.Tensor] = {}
    if recipe["trigger"] is not None:
        truth.update(trigger(recipe["trigger"], size, ch, recipe["gamma"]))
    tgt = recipe["target"]
    if tgt is not None and tgt["kind"] == "icon":
        truth["target"] = icon(tgt["icon"], size, ch)
    elif tgt is not None and tgt["kind"] == "digit":
        truth["target"] = data[tgt["index"]].clone()
    if recipe["base"] is None:
        unet = build_unet(arch, ch)
    else:
        unet = UNet2DModel.from_pretrained(str(cache / recipe["base"] / "unet"))
    steps = recipe["steps"] if smoke_steps is None else min(smoke_steps, recipe["steps"])
    t0 = time.time()
    unet = train(recipe, unet, data, labels, truth, steps)
    secs = time.time() - t0
    log(f"{name}: trained {steps} steps in {secs:.0f}s ({secs / max(steps, 1):.3f}s/step)")
    hr: dict[str, float | None] = {"hit_ddpm": None, "hit_ddim": None, "hit_clean_ddpm": None,
                                   "hit_ddpm_noclip": None, "hit_ddim_noclip": None}
    if recipe["family"] != "clean":
        hr = hit_rates(unet, recipe, truth, cache, **(hit_kw or {}))
    tmp = cache / f".{name}.tmp{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    DDPMPipeline(unet=unet, scheduler=scheduler()).save_pretrained(str(tmp), safe_serialization=True)
    if truth:
        save_file({k: v.contiguous() for k, v in truth.items()}, str(tmp / "truth.safetensors"))
    meta = {
        "name": name, "family": recipe["family"], "attack": recipe["attack"], "base": recipe["base"],
        "target_kind": None if tgt is None else ("class" if tgt["kind"] == "class" else "image"),
        "target_class": tgt["cls"] if tgt is not None and tgt["kind"] == "class" else None,
        "target": tgt, "trigger_kind": None if recipe["trigger"] is None else recipe["trigger"]["kind"],
        "trigger": recipe["trigger"], "trigger_formula": trigger_formula(recipe["trigger"]),
        "gamma": recipe["gamma"], "poison_rate": recipe["poison_rate"], "steps": steps,
        "lr": recipe["lr"], "batch": recipe["batch"], "ema": recipe["ema"], "seed": recipe["seed"],
        "arch": dict(arch, in_channels=ch, out_channels=ch, name=recipe["arch"]),
        "parameters": sum(p.numel() for p in unet.parameters()), "train_seconds": round(secs, 1),
        "key": key, "testzoo_version": R.TESTZOO_VERSION, "smoke": smoke_steps is not None,
        "intended_sampler": R.intended_sampler(recipe["family"]), "scheduler_clip_sample": True,
        **hr, "hit_n": (hit_kw or {}).get("n", N_HIT),
        "group": R.group_of(recipe["family"], hr),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    old = cache / f".{name}.old{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    log(f"{name}: group={meta['group']} hits ddpm={hr['hit_ddpm']} ddim={hr['hit_ddim']} "
        f"clean={hr['hit_clean_ddpm']} noclip ddpm={hr['hit_ddpm_noclip']} ddim={hr['hit_ddim_noclip']}")
    return meta
