"""Which channels carry the backdoor: per-channel Taylor importance over coupled channel groups.

A channel of a UNet is not one tensor row: a residual stream's channel ``j`` is produced by several
convolutions at once, normalised by GroupNorms, concatenated into skip connections and consumed by
the next layers. torch-pruning's ``DependencyGraph`` finds these couplings; we use it only for that
(its pruners round GroupNorm-coupled channels to whole groups and change shapes, both of which we
avoid, see :mod:`hfaudit.remove.prune`). A channel's importance is ``sum |w * dL/dw|`` over every
parameter entry of every layer coupled to it: the first-order estimate of how much ``L`` changes when
the channel is zeroed, which makes scores comparable across layers and groups.

``L`` is the backdoor loss: how much the prediction on the triggered input differs from the
prediction on the same clean input, at late timesteps where the backdoor decides the trajectory
(docs/design.md section 3). With ``mode="backdoor-minus-clean"`` the (normalised) importance for the clean
denoising loss is subtracted, so channels that matter for benign samples are spared.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hfaudit.errors import UnsupportedModelError, UsageError
from hfaudit.sampling import alphas_cumprod_of
from hfaudit.seeding import make_generator, randn

IMPORTANCE_MODES = ("backdoor", "backdoor-minus-clean")
"""``backdoor``: Taylor importance of the backdoor loss; ``backdoor-minus-clean``: minus the clean
denoising-loss importance, each normalised to sum 1 over all channels."""

OUT, IN, NORM = "out", "in", "norm"
"""How a layer is coupled to a channel: it produces it (weight rows + bias), consumes it (weight
columns), or normalises it (affine weight + bias)."""

_NORMS = (nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.InstanceNorm2d)


@dataclass
class CoupledSlice:
    """One layer's share of a channel group: which of its channels belong to which group channel."""

    module: str
    """Module name inside the UNet (``down_blocks.0.resnets.0.conv1``)."""
    kind: str
    """``out``, ``in`` or ``norm`` (see :data:`OUT`)."""
    idxs: list[int]
    """Channel indices in this layer's own numbering."""
    root_idxs: list[int]
    """For each entry of ``idxs``, the group channel it belongs to (several when a skip concatenates it twice)."""


@dataclass
class ChannelGroup:
    """Channels that must be removed together across coupled layers, named after the root layer."""

    root: str
    size: int
    slices: list[CoupledSlice] = field(default_factory=list)


@dataclass
class Importance:
    """Per-channel scores of every group, and how they were computed."""

    mode: str
    groups: list[ChannelGroup]
    scores: list[torch.Tensor]
    """Per group, ``(size,)``: the score the pruning selects by (highest first)."""
    backdoor: list[torch.Tensor]
    clean: list[torch.Tensor] | None
    backdoor_loss: float
    clean_loss: float | None
    timesteps: tuple[int, int]
    """The late-timestep range ``[lo, hi]`` of the backdoor loss."""
    skipped: list[str] = field(default_factory=list)
    """Root layers of groups left out (a coupled layer type hfaudit cannot zero safely)."""

    @property
    def n_channels(self) -> int:
        """Channels over all groups: what ``prune_ratio`` is a share of."""
        return sum(g.size for g in self.groups)

    def summary(self) -> dict:
        """JSON-ready description (no tensors)."""
        return {"mode": self.mode, "groups": len(self.groups), "channels": self.n_channels,
                "backdoor_loss": self.backdoor_loss, "clean_loss": self.clean_loss,
                "timesteps": list(self.timesteps), "skipped_groups": self.skipped}


# --------------------------------------------------------------------------------- coupling
def _slice_kind(module: nn.Module, is_out: bool) -> str | None:
    """The coupling kind of ``module`` in a group, or None when it cannot be zeroed channel-wise."""
    if isinstance(module, _NORMS):
        if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
            return None
        affine = getattr(module, "affine", getattr(module, "elementwise_affine", False))
        return NORM if affine else "skip"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
        return None if module.groups != 1 else (OUT if is_out else IN)
    if isinstance(module, nn.Linear):
        return OUT if is_out else IN
    if next(module.parameters(recurse=False), None) is None:
        return "skip"  # activations, reshapes, concatenations: nothing to zero
    return None


def channel_groups(
    unet: nn.Module,
    sample_shape: tuple[int, int, int],
    ignored: tuple[str, ...] = ("conv_out",),
) -> tuple[list[ChannelGroup], list[str]]:
    """Coupled channel groups of a ``UNet2DModel`` from torch-pruning's dependency graph.

    The graph is traced on a copy with a batch of 2 at two timesteps; ``conv_out`` (the image
    channels) is never a group of its own. Returns the groups and the roots of groups skipped
    because a coupled layer is of a type that cannot be zeroed channel-wise (grouped convolutions).

    Raises:
        UnsupportedModelError: torch-pruning cannot trace the model.
    """
    import torch_pruning as tp

    model = copy.deepcopy(unet).float().cpu().requires_grad_(True)
    names = {id(m): n for n, m in model.named_modules()}
    x = torch.zeros((2, *sample_shape))
    t = torch.tensor([999, 0])
    try:
        graph = tp.DependencyGraph().build_dependency(
            model, example_inputs=(x, t), forward_fn=lambda m, inp: m(*inp).sample, verbose=False)
    except Exception as exc:  # noqa: BLE001 - torch-pruning raises many types on untraceable graphs
        raise UnsupportedModelError(f"cannot trace the UNet's channel couplings: {type(exc).__name__}: {exc}") from None
    ignored_mods = [m for n, m in model.named_modules() if n in ignored]
    groups: list[ChannelGroup] = []
    skipped: list[str] = []
    for group in graph.get_all_groups(ignored_layers=ignored_mods, root_module_types=(nn.Conv2d, nn.Linear)):
        root_dep = group[0].dep
        root = names.get(id(root_dep.target.module), "?")
        size = len(group[0].idxs)
        slices: dict[tuple[str, str], CoupledSlice] = {}
        ok = size > 0
        # One query per channel: torch-pruning's root indices are not reliable through skip
        # concatenations (they come back in the concatenated numbering), per-channel groups are.
        for channel in range(size) if ok else ():
            for item in graph.get_pruning_group(root_dep.target.module, root_dep.handler, [channel]):
                module = item.dep.target.module
                kind = _slice_kind(module, graph.is_out_channel_pruning_fn(item.dep.handler)) \
                    if isinstance(module, nn.Module) else None  # None: an unwrapped nn.Parameter
                if kind is None:
                    ok = False
                    break
                if kind == "skip":
                    continue
                key = (names[id(module)], kind)
                sl = slices.setdefault(key, CoupledSlice(module=key[0], kind=kind, idxs=[], root_idxs=[]))
                for idx in item.idxs:
                    sl.idxs.append(int(getattr(idx, "idx", idx)))
                    sl.root_idxs.append(channel)
            if not ok:
                break
        if ok and slices:
            groups.append(ChannelGroup(root=root, size=size, slices=list(slices.values())))
        else:
            skipped.append(root)
    if not groups:
        raise UnsupportedModelError("the UNet has no channel group that can be pruned")
    return groups, skipped


def param_slices(unet: nn.Module, sl: CoupledSlice) -> Iterator[tuple[str, nn.Parameter, int, list[int], list[int]]]:
    """The parameters of ``sl``'s layer it touches: ``(name, param, channel dim, idxs, root_idxs)``."""
    module = unet.get_submodule(sl.module)
    transposed = isinstance(module, nn.ConvTranspose2d)
    for pname in ("weight", "bias"):
        p = getattr(module, pname, None)
        if p is None:
            continue
        if sl.kind == IN:
            if pname == "bias":
                continue
            dim = 0 if transposed else 1
        else:
            dim = 1 if (transposed and pname == "weight") else 0
        yield f"{sl.module}.{pname}", p, dim, sl.idxs, sl.root_idxs


# ------------------------------------------------------------------------------------ scores
def _group_scores(unet: nn.Module, groups: list[ChannelGroup], per_entry: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Sum per-entry scores (same shapes as the parameters) into per-channel group scores."""
    out = []
    for g in groups:
        score = torch.zeros(g.size, dtype=torch.float64)
        for sl in g.slices:
            for name, _p, dim, idxs, roots in param_slices(unet, sl):
                s = per_entry[name].double().cpu()
                s = s.movedim(dim, 0).flatten(1).sum(1) if s.dim() > 1 else s
                score.index_add_(0, torch.tensor(roots), s[torch.tensor(idxs)])
        out.append(score)
    return out


def _late_range(num_train_timesteps: int, late: tuple[float, float]) -> tuple[int, int]:
    last = num_train_timesteps - 1
    return round(late[0] * last), round(late[1] * last)


def backdoor_loss(
    unet: nn.Module,
    alphas_cumprod: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    t: torch.Tensor,
    trigger: torch.Tensor,
) -> torch.Tensor:
    """Mean squared difference between the predictions on triggered and on clean noised inputs.

    The triggered input follows BadDiffusion's forward process, ``x_t + (1 - sqrt(abar_t)) tau``
    (at late timesteps, about ``n + tau``: what the sampler sees when the trigger is on the noise).
    """
    abar = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    x_trig = x_t + (1 - abar.sqrt()) * trigger.to(x0.device).unsqueeze(0)
    both = unet(torch.cat([x_trig, x_t]), torch.cat([t, t])).sample
    trig, clean = both.chunk(2)
    return F.mse_loss(trig, clean)


def denoising_loss(unet: nn.Module, alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                   t: torch.Tensor) -> torch.Tensor:
    """The ordinary DDPM loss ``|eps_theta(x_t, t) - eps|^2``."""
    abar = alphas_cumprod.to(x0.device)[t].view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return F.mse_loss(unet(x_t, t).sample, noise)


def taylor_importance(
    unet: nn.Module,
    scheduler_config: dict,
    trigger: torch.Tensor,
    *,
    mode: str = "backdoor",
    images: torch.Tensor | None = None,
    groups: list[ChannelGroup] | None = None,
    n_batches: int = 4,
    batch_size: int = 16,
    late: tuple[float, float] = (0.9, 1.0),
    seed: int = 0,
) -> Importance:
    """Per-channel Taylor importance ``sum |w * dL/dw|`` of the backdoor loss on ``trigger``.

    Args:
        unet: the suspect ``UNet2DModel`` (not modified: gradients are taken on a copy).
        scheduler_config: its training schedule.
        trigger: ``(C, H, W)`` additive trigger in the model's pixel space (inverted or known).
        mode: one of :data:`IMPORTANCE_MODES`.
        images: clean images ``(N, C, H, W)`` in [-1, 1]; used as ``x0`` (needed for the clean
            loss of ``backdoor-minus-clean``; at late timesteps they barely matter to the backdoor loss).
        groups: channel groups from :func:`channel_groups` (computed when None).
        n_batches, batch_size: gradients are accumulated over ``n_batches`` batches.
        late: the timestep range of the backdoor loss, as fractions of the schedule.
        seed: seeds the noise and timesteps.

    Raises:
        UsageError: unknown mode, or ``backdoor-minus-clean`` without images.
    """
    if mode not in IMPORTANCE_MODES:
        raise UsageError(f"importance must be one of {', '.join(IMPORTANCE_MODES)} (got {mode!r})", param="importance")
    if mode == "backdoor-minus-clean" and images is None:
        raise UsageError("importance 'backdoor-minus-clean' needs clean images for the clean loss")
    device = next(unet.parameters()).device
    shape = tuple(trigger.shape)
    if groups is None:
        groups, skipped = channel_groups(unet, shape)  # type: ignore[arg-type]
    else:
        skipped = []
    model = copy.deepcopy(unet).float().requires_grad_(True).eval()
    abar = alphas_cumprod_of(scheduler_config)
    n_train = abar.shape[0]
    lo, hi = _late_range(n_train, late)
    gen = make_generator(seed)
    trig = trigger.to(device).float()

    def draw_x0(n: int) -> torch.Tensor:
        if images is None:
            return torch.zeros((n, *shape), device=device)
        idx = torch.randint(0, images.shape[0], (n,), generator=gen)
        return images[idx].to(device).float()

    def taylor(loss_fn) -> tuple[dict[str, torch.Tensor], float]:
        model.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(n_batches):
            loss = loss_fn() / n_batches
            loss.backward()
            total += float(loss.detach())
        with torch.no_grad():
            scores = {n: (p * p.grad).abs() if p.grad is not None else torch.zeros_like(p)
                      for n, p in model.named_parameters()}
        model.zero_grad(set_to_none=True)
        return scores, total

    def b_loss() -> torch.Tensor:
        t = torch.randint(lo, hi + 1, (batch_size,), generator=gen).to(device)
        return backdoor_loss(model, abar, draw_x0(batch_size), randn((batch_size, *shape), gen, device), t, trig)

    def c_loss() -> torch.Tensor:
        t = torch.randint(0, n_train, (batch_size,), generator=gen).to(device)
        return denoising_loss(model, abar, draw_x0(batch_size), randn((batch_size, *shape), gen, device), t)

    b_entry, b_total = taylor(b_loss)
    backdoor = _group_scores(model, groups, b_entry)
    clean = None
    c_total = None
    scores = backdoor
    if mode == "backdoor-minus-clean":
        c_entry, c_total = taylor(c_loss)
        clean = _group_scores(model, groups, c_entry)
        b_sum = float(sum(s.sum() for s in backdoor)) or 1.0
        c_sum = float(sum(s.sum() for s in clean)) or 1.0
        scores = [b / b_sum - c / c_sum for b, c in zip(backdoor, clean)]
    return Importance(mode=mode, groups=groups, scores=scores, backdoor=backdoor, clean=clean,
                      backdoor_loss=b_total, clean_loss=c_total, timesteps=(lo, hi), skipped=skipped)
