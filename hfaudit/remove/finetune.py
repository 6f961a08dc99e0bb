"""Dual-loss fine-tuning after soft pruning: restore benign quality, break the trigger, keep the mask.

Three terms (docs/design.md section 3), on one batch of clean images ``x0`` noised to ``x_t``:

- **clean**: the ordinary denoising loss ``|eps_student(x_t) - eps|^2``, on images the suspect model
  generates from clean noise (no data needed; its benign behaviour is what we want to keep) or on a
  user's folder of images;
- **distill**: ``|eps_student(x_t) - eps_teacher(x_t)|^2`` to a frozen copy of the suspect model, which
  behaves normally on clean inputs and so anchors everything the backdoor did not touch;
- **trigger**: on the noised triggered input ``x_t + (1 - sqrt(abar_t)) tau`` (BadDiffusion's forward
  process) the student must answer as the teacher does on the clean ``x_t``, with the trigger counted
  as noise (``FinetuneConfig.trigger_target``), so the trigger no longer steers the trajectory; ``tau``
  is the trigger at a scale drawn per row (``FinetuneConfig.trigger_scales``), so no size of it does.

Why these defaults (``FinetuneConfig``; ``benchmarks/removal.py`` measures each choice): the clean
term on *generated* images only adds variance, since those samples are the teacher's own and
distillation already says everything they can (weight 0.1 there, 1.0 on a user's real images); the
trigger term covers the late half of the timesteps, where the trigger steers the trajectory; an EMA
of the weights is returned. The trigger term can itself plant a new collapse on the repaired model,
while pruning plus distillation alone already removes the backdoor, so ``clean`` runs its first
round with the trigger weight at 0 and adds the term from the second round on
(``CleanConfig.break_from_round``); the weight here is what those rounds use.

Accelerate drives the loop (device, mixed precision, gradient accumulation; ``accelerate launch``
for several GPUs); the pruning mask is re-applied after every optimiser step.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hfaudit import limits
from hfaudit.errors import UsageError
from hfaudit.progress import progress_bar
from hfaudit.remove.prune import PruneMask
from hfaudit.sampling import alphas_cumprod_of, sample
from hfaudit.seeding import make_generator, randn

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
GENERATED_CLEAN_WEIGHT = 0.1
"""Weight of the clean denoising term when the images are the suspect model's own samples."""


@dataclass
class FinetuneConfig:
    """Settings of the dual-loss fine-tuning; defaults finish on the 16x16 examples in minutes on a CPU."""

    steps: int = 1000
    """Optimiser steps per round. Fewer left the re-scan's trigger still hitting the target now and
    then (``benchmarks/removal.py``); without the trigger term (the first round) a step costs about
    half as much."""
    lr: float = 1e-3
    batch_size: int = 32
    clean_weight: float | None = None
    """None: 1.0 on a user's images, 0.1 on generated ones (see the module docstring for why)."""
    distill_weight: float = 2.0
    trigger_weight: float = 0.5
    trigger_target: str = "noise"
    """``noise``: on the triggered input the student predicts the teacher's clean answer plus the
    trigger scaled as noise, ``k_t tau`` with ``k_t = (1 - sqrt(abar_t)) / sqrt(1 - abar_t)``: the
    trigger becomes part of the noise, which is what a clean model makes of it, so triggered noise
    gives normal samples. ``clean``: the literal Elijah target, the teacher's clean answer alone; the
    trigger then reads as image content and triggered samples degrade into noise.

    ``noise`` keeps benign quality, which ``clean`` costs a lot of; a residual it can leave under
    DDIM is what the later rounds, against the re-scan's trigger, remove (``benchmarks/removal.py``)."""
    trigger_scales: tuple[float, ...] = (1.0,)
    """Each batch row of the trigger term gets the trigger times one of these, drawn at random: a
    backdoor fires in a window of trigger sizes (smaller ones under DDIM), and a term trained at the
    trigger's own size alone can leave it reachable at another. ``clean`` passes its verification
    scales here when its residual gate is on (``CleanConfig.residual_gate``)."""
    trigger_timesteps: tuple[float, float] = (0.5, 1.0)
    """The trigger term applies to batch rows whose timestep lies in this range (fractions of T):
    the late half, where the trigger steers the trajectory; on all timesteps it costs benign
    quality for no gain in ASR."""
    warmup: int = 20
    ema: float = 0.99
    """Decay of an exponential moving average of the weights, which is what is returned (0: off)."""
    max_grad_norm: float = 1.0
    grad_accum: int = 1
    mixed_precision: str = "no"
    """``no``, ``fp16`` or ``bf16`` (Accelerate)."""
    seed: int = 0

    def validate(self) -> None:
        """Raises:
            UsageError: a value out of range."""
        if not 1 <= self.steps <= limits.MAX_FINETUNE_STEPS:
            raise UsageError(f"steps must be between 1 and {limits.MAX_FINETUNE_STEPS} (got {self.steps})",
                             param="steps")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"lr must be positive and finite (got {self.lr})", param="lr")
        if not 1 <= self.batch_size <= limits.MAX_SAMPLES:
            raise UsageError(f"batch_size must be between 1 and {limits.MAX_SAMPLES} (got {self.batch_size})",
                             param="batch_size")
        if self.grad_accum < 1:
            raise UsageError("gradient accumulation must be at least 1")
        if min(self.clean_weight or 0.0, self.distill_weight, self.trigger_weight) < 0:
            raise UsageError("loss weights must not be negative")
        if not self.trigger_scales or min(self.trigger_scales) <= 0 or not all(map(math.isfinite, self.trigger_scales)):
            raise UsageError(f"trigger scales must be positive and finite, at least one (got {self.trigger_scales})")
        lo, hi = self.trigger_timesteps
        if not 0 <= lo <= hi <= 1:
            raise UsageError(f"trigger timesteps must satisfy 0 <= lo <= hi <= 1 (got {self.trigger_timesteps})")
        if not 0 <= self.ema < 1:
            raise UsageError(f"the EMA decay must be in [0, 1) (got {self.ema})")
        if self.trigger_target not in ("noise", "clean"):
            raise UsageError(f"trigger target must be noise or clean (got {self.trigger_target!r})")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise UsageError(f"mixed precision must be no, fp16 or bf16 (got {self.mixed_precision!r})")


@dataclass
class FinetuneResult:
    """What the fine-tuning did; losses are means over the first and the last 10% of steps."""

    steps: int
    seconds: float
    device: str
    data: str
    n_images: int
    losses_start: dict[str, float]
    losses_end: dict[str, float]
    config: dict

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


# ------------------------------------------------------------------------------------- data
@torch.no_grad()
def generate_clean_images(
    unet: nn.Module,
    scheduler_config: dict,
    n: int,
    shape: tuple[int, int, int],
    *,
    sampler: str = "ddim",
    steps: int = 20,
    seed: int = 0,
    batch_size: int = 128,
) -> torch.Tensor:
    """``n`` images the model generates from clean noise, in [-1, 1] on the CPU: data-free training set.

    A backdoored model behaves normally without its trigger, so these are benign samples of the
    distribution the owner trained on.
    """
    device = next(unet.parameters()).device
    x_T = randn((n, *shape), make_generator(seed), device)
    imgs = sample(unet, scheduler_config, x_T, sampler=sampler, steps=steps,
                  generator=make_generator(seed + 1), batch_size=batch_size)
    return imgs.clamp(-1, 1)


def load_image_folder(folder: str | Path, shape: tuple[int, int, int]) -> torch.Tensor:
    """Every image in ``folder`` (recursively), resized to ``shape``, in [-1, 1] on the CPU.

    Raises:
        UsageError: the folder does not exist or holds no readable image.
    """
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    root = Path(folder)
    if not root.is_dir():
        raise UsageError(f"data_dir {folder}: no such folder", param="data_dir")
    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    if c not in (1, 3):
        raise UsageError(f"data_dir: models with {c} channels cannot be trained on image files", param="data_dir")
    out = []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert(mode).resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError):
            continue
        t = torch.from_numpy(arr)
        out.append(t.unsqueeze(0) if c == 1 else t.permute(2, 0, 1))
    if not out:
        raise UsageError(f"data_dir {folder}: no readable images ({', '.join(IMAGE_SUFFIXES)})", param="data_dir")
    return torch.stack(out) * 2 - 1


# ------------------------------------------------------------------------------------- loop
def _warmup_cosine(warmup: int, steps: int):
    """Linear warm-up, then cosine decay to 5% of the peak: the decay is what removes the last
    speckle of noise from samples after pruning (constant rates leave it)."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def finetune(
    student: nn.Module,
    teacher: nn.Module,
    scheduler_config: dict,
    images: torch.Tensor,
    trigger: torch.Tensor,
    *,
    mask: PruneMask | None = None,
    config: FinetuneConfig | None = None,
    data: str = "generated",
) -> tuple[nn.Module, FinetuneResult]:
    """Fine-tune ``student`` (the pruned UNet, trained in place) with the dual loss.

    Args:
        student: the soft-pruned UNet; trained in place and returned in eval mode, without grads.
        teacher: a frozen copy of the suspect model before pruning (distillation target).
        scheduler_config: the training schedule.
        images: clean training images ``(N, C, H, W)`` in [-1, 1].
        trigger: ``(C, H, W)`` trigger in the model's pixel space, or ``(K, C, H, W)`` triggers, one
            drawn per batch row (several candidates removed at once).
        mask: the pruning mask, re-applied after each optimiser step.
        config: settings.
        data: where ``images`` came from (``generated`` or a folder), for the report.

    Raises:
        UsageError: bad settings.
    """
    from accelerate import Accelerator

    cfg = copy.deepcopy(config) if config is not None else FinetuneConfig()
    cfg.validate()
    if cfg.clean_weight is None:
        cfg.clean_weight = GENERATED_CLEAN_WEIGHT if data.startswith("generated") else 1.0
    device = next(student.parameters()).device
    accelerator = Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision,
                              gradient_accumulation_steps=cfg.grad_accum)
    student.float().train().requires_grad_(True)
    teacher = teacher.float().eval().requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(cfg.warmup, cfg.steps))
    model, opt, sched = accelerator.prepare(student, opt, sched)
    ema = _ema_of(accelerator.unwrap_model(model), cfg.ema)
    dev = accelerator.device
    teacher.to(dev)
    abar_all = alphas_cumprod_of(scheduler_config).to(dev)
    n_train = abar_all.shape[0]
    t_lo, t_hi = (round(f * (n_train - 1)) for f in cfg.trigger_timesteps)
    data_x = images.to(dev).float()
    taus = (trigger if trigger.dim() == 4 else trigger.unsqueeze(0)).to(dev).float()
    scales = torch.tensor(cfg.trigger_scales, dtype=torch.float32, device=dev)
    breaking = cfg.trigger_weight > 0
    gen = make_generator(cfg.seed)
    history: list[tuple[float, float, float]] = []
    total_micro = cfg.steps * cfg.grad_accum
    t0 = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("fine-tuning", total=total_micro, info="")
        for _ in range(total_micro):
            with accelerator.accumulate(model):
                idx = torch.randint(0, data_x.shape[0], (cfg.batch_size,), generator=gen).to(dev)
                x0 = data_x[idx]
                noise = randn(tuple(x0.shape), gen, dev)
                t = torch.randint(0, n_train, (cfg.batch_size,), generator=gen).to(dev)
                abar = abar_all[t].view(-1, 1, 1, 1)
                x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
                tau = taus[torch.randint(0, taus.shape[0], (cfg.batch_size,), generator=gen).to(dev)] \
                    if taus.shape[0] > 1 else taus
                row_scale = scales[torch.randint(0, scales.shape[0], (cfg.batch_size,), generator=gen).to(dev)]
                tau = tau * row_scale.view(-1, 1, 1, 1)
                # tau and its scale are drawn either way, so the random stream does not depend on the trigger weight
                inputs = [x_t, x_t + (1 - abar.sqrt()) * tau] if breaking else [x_t]  # off: half the compute
                with torch.no_grad():
                    target = teacher(x_t, t).sample.float()
                with accelerator.autocast():
                    preds = model(torch.cat(inputs), t.repeat(len(inputs))).sample.float().chunk(len(inputs))
                pred_clean = preds[0]
                l_clean = F.mse_loss(pred_clean, noise)
                l_distill = F.mse_loss(pred_clean, target)
                l_trigger = torch.zeros((), device=dev)
                if breaking:
                    trig_target = target
                    if cfg.trigger_target == "noise":
                        trig_target = target + (1 - abar.sqrt()) / (1 - abar).sqrt() * tau
                    rows = ((t >= t_lo) & (t <= t_hi)).float().view(-1, 1, 1, 1)
                    l_trigger = ((preds[1] - trig_target) ** 2 * rows).mean() * rows.numel() / rows.sum().clamp(min=1)
                loss = cfg.clean_weight * l_clean + cfg.distill_weight * l_distill + cfg.trigger_weight * l_trigger
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if mask is not None:
                    mask.apply(accelerator.unwrap_model(model))
                if ema is not None and accelerator.sync_gradients:
                    ema.update_parameters(accelerator.unwrap_model(model))
            history.append((float(l_clean.detach()), float(l_distill.detach()), float(l_trigger.detach())))
            bar.update(task, advance=1, info=f"clean {history[-1][0]:.4f}  distill {history[-1][1]:.4f}  "
                                             f"trigger {history[-1][2]:.4f}")
    trained = accelerator.unwrap_model(model)
    if ema is not None:  # the averaged weights, in the student's own module (zeros stay zeros)
        trained.load_state_dict(ema.module.state_dict())
    accelerator.free_memory()
    trained = trained.to(device).eval().requires_grad_(False)
    if mask is not None:
        mask.apply(trained)
    k = max(1, len(history) // 10)

    def mean(rows: list[tuple[float, float, float]]) -> dict[str, float]:
        cols = list(zip(*rows))
        return {name: round(sum(c) / len(c), 6) for name, c in zip(("clean", "distill", "trigger"), cols)}

    return trained, FinetuneResult(
        steps=cfg.steps, seconds=round(time.perf_counter() - t0, 2), device=str(dev), data=data,
        n_images=int(images.shape[0]), losses_start=mean(history[:k]), losses_end=mean(history[-k:]),
        config=asdict(cfg))


def _ema_of(model: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel | None:
    """An EMA copy of ``model`` (buffers included), or None when ``decay`` is 0."""
    if decay <= 0:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
