"""Result dataclasses: what the library returns and every renderer (Rich, JSON, Markdown, SARIF) reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from hfaudit.detect.scores import CollapseStats
from hfaudit.errors import ExitCode
from hfaudit.safety import Finding

BACKDOOR = "backdoor"
CLEAN = "clean"
COLLAPSED = "collapsed"
"""Verdicts. ``collapsed``: the model collapses without any trigger, so collapse proves nothing."""


@dataclass
class SourceInfo:
    """Where the audited model came from (the commit sha pins what was audited)."""

    source: str
    repo_id: str | None
    revision: str | None
    commit_sha: str | None
    pipeline_class: str
    weights_file: str


@dataclass
class Probe:
    """Samples from one initial-noise distribution under one sampler, and how much they collapse."""

    trigger_name: str
    """``none`` for the ``tau = 0`` control, else the candidate's name (e.g. ``gradient-l0.5-r0``)."""
    sampler: str
    steps: int
    stats: CollapseStats


@dataclass
class Candidate:
    """One inverted trigger with its probes."""

    name: str
    method: str
    objective: str
    lam: float | None
    shift_ratio: float
    trigger: torch.Tensor = field(repr=False)
    probes: list[Probe] = field(default_factory=list)

    @property
    def best(self) -> Probe:
        """The probe with the highest MSCR."""
        return max(self.probes, key=lambda p: p.stats.mscr)


@dataclass
class ScanResult:
    """The outcome of ``hfaudit.scan``: verdict, evidence, settings and output files."""

    source: SourceInfo
    verdict: str
    score: float
    """MSCR of the best candidate trigger (share of triggered samples in one near-duplicate group)."""
    threshold: float
    control_score: float
    """Highest MSCR without a trigger, over the samplers used."""
    controls: list[Probe]
    candidates: list[Candidate]
    best_candidate: str | None
    recovered_target: torch.Tensor | None = field(default=None, repr=False)
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    unet_evaluations: int = 0
    artifacts: dict[str, str] = field(default_factory=dict)
    samples: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    """Sample batches in [0, 1] keyed ``"<trigger>/<sampler>"``, kept in memory for the PNG grids."""
    findings: list[Finding] = field(default_factory=list)
    """Static findings that did not block the audit (pickle files present, ...); SARIF results too."""

    @property
    def margin(self) -> float:
        """``score - threshold``: positive means the backdoor verdict, and by how much."""
        return self.score - self.threshold

    @property
    def exit_code(self) -> ExitCode:
        """The process exit code for this verdict (1 only for a backdoor)."""
        return ExitCode.BACKDOOR if self.verdict == BACKDOOR else ExitCode.CLEAN

    @property
    def best(self) -> Candidate | None:
        """The candidate trigger whose samples collapsed most."""
        return next((c for c in self.candidates if c.name == self.best_candidate), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tensors are written as PNGs, named in ``artifacts``)."""
        best = self.best
        return {
            "tool": "hfaudit",
            "verdict": self.verdict,
            "exit_code": int(self.exit_code),
            "score": self.score,
            "threshold": self.threshold,
            "margin": self.margin,
            "control_score": self.control_score,
            "source": asdict(self.source),
            "best_candidate": None if best is None else {
                "name": best.name, "method": best.method, "objective": best.objective, "lambda": best.lam,
                "shift_ratio": best.shift_ratio, "sampler": best.best.sampler, "steps": best.best.steps,
                "trigger_l2": float(best.trigger.norm()), "trigger_linf": float(best.trigger.abs().max()),
            },
            "controls": [_probe_dict(p) for p in self.controls],
            "candidates": [{"name": c.name, "method": c.method, "objective": c.objective, "lambda": c.lam, "shift_ratio": c.shift_ratio,
                            "probes": [_probe_dict(p) for p in c.probes]} for c in self.candidates],
            "settings": self.settings,
            "timings_s": self.timings,
            "unet_evaluations": self.unet_evaluations,
            "artifacts": self.artifacts,
            "findings": [f.to_dict() for f in self.findings],
        }


def _probe_dict(p: Probe) -> dict[str, Any]:
    return {"trigger": p.trigger_name, "sampler": p.sampler, "steps": p.steps, **asdict(p.stats)}
