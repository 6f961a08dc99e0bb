"""What ``hfaudit clean`` returns: its settings, statuses and result, below every renderer.

``hfaudit.clean`` runs the repair and re-exports these; the model card (``hfaudit.card``) and the
reports (``hfaudit.report``) read them without importing the command.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hfaudit import __version__
from hfaudit.errors import ExitCode, UsageError
from hfaudit.hub import PushResult
from hfaudit.remove.finetune import FinetuneConfig, FinetuneResult
from hfaudit.remove.importance import IMPORTANCE_MODES
from hfaudit.remove.prune import DEFAULT_PRUNE_RATIO, PruneReport
from hfaudit.remove.verify import LIKENESS_SSIM, TRIGGER_SCALES, BeforeAfter, FidelityCheck, ScaleSweep
from hfaudit.results import ScanResult, SourceInfo, envelope

RESCAN_LABEL = "re-scan"
"""Reports name a re-scan's trigger ``re-scan N: <candidate>`` (N: the re-scan it came from)."""

NOTHING_TO_REMOVE = "nothing-to-remove"
CLEANED = "cleaned"
UNVERIFIED = "unverified"
"""Statuses. ``unverified``: a check failed and ``force`` wrote the outputs anyway."""


@dataclass
class CleanConfig:
    """Everything that decides a repair and its verdict; recorded in the report and the card."""

    prune_ratio: float = DEFAULT_PRUNE_RATIO
    importance: str = "backdoor"
    importance_batches: int = 4
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    n_data: int = 512
    """Images generated from clean noise as fine-tuning data (when no ``data_dir``)."""
    data_sampler: tuple[str, int] = ("ddim", 20)
    asr_samples: int = 64
    fidelity_samples: int = 2048
    """Clean-noise samples of the benign-fidelity check, the same noise before and after. The
    Frechet distance falls with the sample count, so a ratio of two at a small count sits nearer 1
    than the models' own, and one draw of noise moves it by several points: on fewer samples the
    gate under-reads what a repair costs (docs/removal.md, ``benchmarks/fidelity_noise.py``)."""
    fidelity_sampler: tuple[str, int] = ("ddim", 20)
    max_asr: float = 0.05
    """The repair fails when any checked trigger still hits its target in more than this share of
    samples (with ``residual_gate``, also at any of ``scales`` under any probe sampler)."""
    residual_gate: bool = False
    """Whether a residual in the scale sweep (``scales``) fails verification and runs another round
    whose trigger term trains at those scales. Off by default: on the shipped example that round
    cost more benign fidelity than the gate allows (docs/removal.md); the sweep is measured and
    reported either way."""
    scales: tuple[float, ...] = TRIGGER_SCALES
    """Multiples of the removed trigger that verification measures on the cleaned model under every
    probe sampler, and that the trigger-breaking term trains on (``FinetuneConfig.trigger_scales``)."""
    likeness_ssim: float = LIKENESS_SSIM
    """A sample looks like the target above this SSIM to it (``remove.verify.LIKENESS_SSIM``: why)."""
    max_likeness_excess: float = 0.10
    """The repair fails when, at any scale and sampler, the trigger's samples look like the target more
    often than the same draw of clean noise's by more than this share. Not 0: each rate is a share of
    ``asr_samples`` samples, ten comparisons at the default scales and probes, and a backdoored model
    can draw its target from clean noise now and then, so a few look-alikes either way are chance; a
    residual that steers samples to the target moves most of them, far above this margin."""
    max_fidelity_ratio: float = 1.10
    """The repair fails when ``FD_after / FD_before`` exceeds this (10% worse benign fidelity)."""
    rescan: bool = True
    max_rounds: int = 2
    """Fine-tuning rounds in all. When the re-scan still finds a backdoor, another round fine-tunes
    the repaired weights (mask kept) against every trigger removed so far plus every new trigger that
    fired in the re-scan, then verifies and re-scans again: for backdoors that pruning and distillation
    alone do not remove, or that stay reachable under another sampler (README, "How removal works")."""
    round_steps: int = 300
    """Fine-tuning steps of every round after the first."""
    break_from_round: int = 2
    """The first round that adds the trigger-breaking term (``FinetuneConfig.trigger_weight``);
    earlier rounds fine-tune the pruned model with distillation and the clean loss only. Why: pruning
    plus distillation alone can remove the backdoor, while the trigger term in the first round can
    make a new collapse near the inverted trigger that the suspect model did not have; breaking the
    trigger stays the next step when pruning was not enough (README, "How removal works")."""
    seed: int = 0

    def finetune_round(self, round_no: int, **changes: Any) -> FinetuneConfig:
        """The fine-tuning settings of round ``round_no`` (1 = the first): the trigger-breaking term
        off before ``break_from_round``; ``changes`` replace other fields."""
        weight = self.finetune.trigger_weight if round_no >= self.break_from_round else 0.0
        scales = tuple(self.scales) if self.residual_gate else self.finetune.trigger_scales
        return dataclasses.replace(self.finetune, trigger_weight=weight, trigger_scales=scales, **changes)

    def validate(self) -> None:
        """Raises:
            UsageError: a value out of range."""
        if self.importance not in IMPORTANCE_MODES:
            raise UsageError(f"importance must be one of {', '.join(IMPORTANCE_MODES)} (got {self.importance!r})",
                             param="importance")
        if not 0 <= self.prune_ratio < 0.5:
            raise UsageError(f"prune_ratio must be in [0, 0.5) (got {self.prune_ratio})", param="prune_ratio")
        if self.n_data < 1 or self.asr_samples < 2 or self.fidelity_samples < 2:
            raise UsageError("sample counts must be positive (at least 2 for metrics)")
        if not 0 <= self.max_asr <= 1 or self.max_fidelity_ratio <= 0:
            raise UsageError("max_asr must be in [0, 1] and max_fidelity_ratio positive")
        if not self.scales or min(self.scales) <= 0:
            raise UsageError(f"scales must be positive, at least one (got {self.scales})", param="scales")
        if not 0 < self.likeness_ssim < 1 or not 0 <= self.max_likeness_excess <= 1:
            raise UsageError("likeness_ssim must be in (0, 1) and max_likeness_excess in [0, 1]")
        if self.max_rounds < 1 or self.round_steps < 1 or self.break_from_round < 1:
            raise UsageError("max_rounds, round_steps and break_from_round must be at least 1")
        self.finetune.validate()


@dataclass(frozen=True)
class RemovedTrigger:
    """A trigger the fine-tuning worked against, and where it came from."""

    name: str
    """``inverted`` or ``known`` for the first trigger; a re-scan's candidate name otherwise."""
    rescan: int | None = None
    """The re-scan that found it (1 = after the first round); None for the first trigger."""

    @property
    def label(self) -> str:
        """How reports name it: ``inverted``, or ``re-scan N: <candidate>``."""
        return self.name if self.rescan is None else f"{RESCAN_LABEL} {self.rescan}: {self.name}"


@dataclass
class CleanResult:
    """The outcome of :func:`clean`: what was found, changed, measured, written and pushed."""

    status: str
    source: SourceInfo
    scan: ScanResult
    config: CleanConfig
    trigger_used: str | None = None
    """``inverted`` (the scan's best candidate) or ``known`` (supplied by the caller)."""
    importance: dict[str, Any] | None = None
    prune: PruneReport | None = None
    finetune: FinetuneResult | None = None
    checks: list[BeforeAfter] = field(default_factory=list)
    fidelity: FidelityCheck | None = None
    scales: ScaleSweep | None = None
    """The removed trigger at every ``CleanConfig.scales`` on the cleaned model (the last round's)."""
    rescan: ScanResult | None = None
    rescan_inconclusive: str | None = None
    """Why the last re-scan reached no verdict (``rescan`` is then None): a candidate fired that its
    budget could not confirm or hold against a null. The repair is then not verified."""
    rounds: list[FinetuneResult] = field(default_factory=list)
    """Every fine-tuning round after the first (``CleanConfig.max_rounds``), in order."""
    round_reasons: list[str] = field(default_factory=list)
    """Why each round after the first ran, one per entry of ``rounds`` (the check of the previous
    round that failed first)."""
    removed: list[RemovedTrigger] = field(default_factory=list)
    """Which triggers the fine-tuning removed: the first one, then each round's new re-scan triggers."""
    problems: list[str] = field(default_factory=list)
    output_dir: str | None = None
    files: list[str] = field(default_factory=list)
    push: PushResult | None = None
    timings: dict[str, float] = field(default_factory=dict)
    trigger: torch.Tensor | None = field(default=None, repr=False)
    target: torch.Tensor | None = field(default=None, repr=False)
    samples: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def passed(self) -> bool:
        """True when every check passed (or there was nothing to remove)."""
        return not self.problems

    @property
    def exit_code(self) -> ExitCode:
        """0 when cleaned and verified, or nothing to remove; ``CLEANING_FAILED`` when forced through a failed check."""
        return ExitCode.CLEAN if self.passed else ExitCode.CLEANING_FAILED

    def removed_in_round(self, round_no: int) -> list[str]:
        """The labels of the triggers fine-tuning round ``round_no`` (1 = the first) worked against:
        the first trigger, and every re-scan trigger found before that round."""
        return [r.label for r in self.removed if r.rescan is None or r.rescan < round_no]

    def check(self, trigger: str) -> BeforeAfter | None:
        """The before/after measurement of one trigger (``inverted``, ``known``, ``re-scan``...)."""
        return next((c for c in self.checks if c.trigger == trigger), None)

    def to_dict(self) -> dict[str, Any]:
        """The clean report (``hfaudit_clean.json``, ``--json``): the common envelope of every report
        (:func:`hfaudit.results.envelope`, ``kind`` ``clean``, the status as its verdict), then the
        repair. JSON-ready; tensors are PNGs, named in ``files``."""
        return {
            **envelope("clean", "clean", self.status, int(self.exit_code), asdict(self.source)),
            "tool": "hfaudit", "hfaudit_version": __version__, "command": "clean",
            "status": self.status, "passed": self.passed, "exit_code": int(self.exit_code),
            "problems": self.problems, "source": asdict(self.source),
            "config": asdict(self.config), "trigger_used": self.trigger_used,
            "scan": self.scan.to_dict(), "importance": self.importance,
            "prune": None if self.prune is None else self.prune.to_dict(),
            "finetune": None if self.finetune is None else self.finetune.to_dict(),
            "checks": [c.to_dict() for c in self.checks],
            "fidelity": None if self.fidelity is None else self.fidelity.to_dict(),
            "scales": None if self.scales is None else self.scales.to_dict(),
            "rescan": None if self.rescan is None else self.rescan.to_dict(),
            "rescan_inconclusive": self.rescan_inconclusive,
            "rounds": [r.to_dict() for r in self.rounds], "round_reasons": self.round_reasons,
            "removed": [r.label for r in self.removed],
            "output_dir": self.output_dir, "files": self.files,
            "push": None if self.push is None else asdict(self.push),
            "timings_s": self.timings,
        }
