"""Soft pruning: zero the most backdoor-tied channels in every coupled layer, and keep them zero.

Physical pruning changes channel counts that a diffusers config cannot express, so the pruned UNet
would no longer load with stock ``from_pretrained`` (docs/design.md section 3). Zeroing keeps every shape:
a channel whose producing convolutions, normalisation affine and consuming weights are all zero is
gone from the computation, and the checkpoint stays a stock one.

We choose the channels ourselves from the group scores: torch-pruning's pruners round channels
coupled to a GroupNorm to whole norm groups, which turns a 2% request into 0% (or 25%) inside
ResNet blocks. The report says exactly how many channels of which layers were zeroed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from hfaudit.errors import UsageError
from hfaudit.remove.importance import ChannelGroup, Importance, param_slices

DEFAULT_PRUNE_RATIO = 0.02
MAX_GROUP_FRACTION = 0.5
"""At most this share of one group is zeroed, so no layer is switched off entirely."""


@dataclass
class LayerPrune:
    """What was zeroed in one layer, for one kind of coupling (``out``, ``in`` or ``norm``)."""

    module: str
    kind: str
    channels_zeroed: int
    channels_total: int
    params_zeroed: int


@dataclass
class GroupPrune:
    """Which channels of one coupled group were zeroed (group numbering) and their scores."""

    root: str
    size: int
    channels: list[int]
    scores: list[float]


@dataclass
class PruneReport:
    """Exactly what soft pruning changed."""

    importance: str
    ratio_requested: float
    channels_total: int
    channels_zeroed: int
    groups: list[GroupPrune] = field(default_factory=list)
    layers: list[LayerPrune] = field(default_factory=list)
    params_zeroed: int = 0
    params_total: int = 0

    @property
    def param_share(self) -> float:
        """Share of all UNet parameters that were zeroed."""
        return self.params_zeroed / self.params_total if self.params_total else 0.0

    @property
    def channel_share(self) -> float:
        """Share of all prunable channels that were zeroed."""
        return self.channels_zeroed / self.channels_total if self.channels_total else 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {**asdict(self), "param_share": self.param_share, "channel_share": self.channel_share}


class PruneMask:
    """Keep-masks (True = keep) per parameter name of the UNet; re-applied after each optimiser step."""

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = {k: v.bool().cpu() for k, v in masks.items()}
        self._on: dict[tuple[str, torch.device], torch.Tensor] = {}

    def _mask(self, name: str, device: torch.device) -> torch.Tensor:
        key = (name, device)
        if key not in self._on:
            self._on[key] = self.masks[name].to(device)
        return self._on[key]

    @torch.no_grad()
    def apply(self, module: nn.Module) -> None:
        """Zero the pruned entries of ``module`` (the unwrapped UNet) in place."""
        params = dict(module.named_parameters())
        for name in self.masks:
            p = params[name]
            p.mul_(self._mask(name, p.device).to(p.dtype))

    @torch.no_grad()
    def max_abs_pruned(self, module: nn.Module) -> float:
        """Largest ``|w|`` over pruned entries of ``module``: 0.0 means the mask holds."""
        params = dict(module.named_parameters())
        worst = 0.0
        for name, keep in self.masks.items():
            vals = params[name].detach().float().cpu()[~keep]
            if vals.numel():
                worst = max(worst, float(vals.abs().max()))
        return worst

    @property
    def n_zeroed(self) -> int:
        """Number of parameter entries the mask zeroes."""
        return int(sum(int((~m).sum()) for m in self.masks.values()))


def select_channels(
    importance: Importance,
    ratio: float = DEFAULT_PRUNE_RATIO,
    max_group_fraction: float = MAX_GROUP_FRACTION,
) -> list[list[int]]:
    """The highest-scoring ``round(ratio * channels)`` channels (at least one when ``ratio > 0``).

    Channels compete across groups on their Taylor scores (first-order loss changes, so comparable);
    at most ``max_group_fraction`` of any group is taken. Returns the chosen channels per group.

    Raises:
        UsageError: ``ratio`` outside ``[0, max_group_fraction)``.
    """
    if not 0 <= ratio < max_group_fraction:
        raise UsageError(f"prune_ratio must be in [0, {max_group_fraction}) (got {ratio})", param="prune_ratio")
    total = importance.n_channels
    k = 0 if ratio == 0 else max(1, round(ratio * total))
    flat = [(float(s), gi, ci) for gi, scores in enumerate(importance.scores) for ci, s in enumerate(scores.tolist())]
    flat.sort(key=lambda x: (-x[0], x[1], x[2]))
    caps = [int(max_group_fraction * g.size) for g in importance.groups]
    chosen: list[list[int]] = [[] for _ in importance.groups]
    n = 0
    for _score, gi, ci in flat:
        if n >= k:
            break
        if len(chosen[gi]) < caps[gi]:
            chosen[gi].append(ci)
            n += 1
    return [sorted(c) for c in chosen]


@torch.no_grad()
def soft_prune(
    unet: nn.Module,
    importance: Importance,
    selection: list[list[int]],
    ratio_requested: float,
) -> tuple[PruneMask, PruneReport]:
    """Zero the ``selection`` (group channels) of ``unet`` in every coupled layer, in place.

    Producing convolutions/linears lose their output rows and biases, norms their affine weight and
    bias, consumers their input columns, for each chosen channel. Shapes never change.
    """
    groups: list[ChannelGroup] = importance.groups
    keep: dict[str, torch.Tensor] = {}
    picked_by_layer: dict[tuple[str, str], set[int]] = {}
    shape_by_layer: dict[tuple[str, str], dict[str, tuple[int, int]]] = {}
    """(module, kind) -> param name -> (size of the channel dim, entries per channel)."""
    for g, chans in zip(groups, selection):
        chosen = set(chans)
        for sl in g.slices:
            key = (sl.module, sl.kind)
            picked = sorted({i for i, r in zip(sl.idxs, sl.root_idxs) if r in chosen})
            for name, p, dim, _idxs, _roots in param_slices(unet, sl):
                shape_by_layer.setdefault(key, {})[name] = (p.shape[dim], p.numel() // p.shape[dim])
                if picked:
                    m = keep.setdefault(name, torch.ones(p.shape, dtype=torch.bool))
                    m.index_fill_(dim, torch.tensor(picked), False)
            if picked:
                picked_by_layer.setdefault(key, set()).update(picked)
    mask = PruneMask(keep)
    mask.apply(unet)
    layers = []
    for key, idxs in sorted(picked_by_layer.items()):
        shapes = shape_by_layer[key]
        total = shapes.get(f"{key[0]}.weight", next(iter(shapes.values())))[0]
        layers.append(LayerPrune(module=key[0], kind=key[1], channels_zeroed=len(idxs), channels_total=total,
                                 params_zeroed=sum(len(idxs) * per for _size, per in shapes.values())))
    group_reports = [GroupPrune(root=g.root, size=g.size, channels=chans,
                                scores=[round(float(importance.scores[gi][c]), 8) for c in chans])
                     for gi, (g, chans) in enumerate(zip(groups, selection)) if chans]
    report = PruneReport(
        importance=importance.mode, ratio_requested=ratio_requested, channels_total=importance.n_channels,
        channels_zeroed=sum(len(c) for c in selection), groups=group_reports, layers=layers,
        params_zeroed=mask.n_zeroed, params_total=sum(p.numel() for p in unet.parameters()),
    )
    return mask, report


def prune(unet: nn.Module, importance: Importance, ratio: float = DEFAULT_PRUNE_RATIO) -> tuple[PruneMask, PruneReport]:
    """Select the top ``ratio`` channels by ``importance`` and zero them in ``unet`` (in place)."""
    return soft_prune(unet, importance, select_channels(importance, ratio), ratio)
