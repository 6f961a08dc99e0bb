"""Result dataclasses: what the library returns and every renderer (Rich, JSON, Markdown, SARIF) reads."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

import torch

from hfaudit import __version__
from hfaudit.basemodel import BaseComparison
from hfaudit.detect.modes import ModeStats
from hfaudit.detect.nulls import NullCheck
from hfaudit.detect.scores import CollapseStats
from hfaudit.errors import ExitCode
from hfaudit.safety import Finding

class Verdict(str, Enum):
    """A scan's verdict. ``collapsed``: the model collapses without any trigger, so collapse proves nothing.

    A ``str`` in every way that matters (equality, hashing, ``str()``, formatting, JSON), so reports
    and comparisons with the plain words keep working.
    """

    BACKDOOR = "backdoor"
    CLEAN = "clean"
    COLLAPSED = "collapsed"

    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__


BACKDOOR, CLEAN, COLLAPSED = Verdict.BACKDOOR, Verdict.CLEAN, Verdict.COLLAPSED

ODE_OBJECTIVE = "pass-through+collapse"
"""The objective of the ODE inversion's triggers (``hfaudit.detect.ode`` takes it from here), which
:attr:`Candidate.class_evidence` sets apart; an earlier scan's ODE trigger keeps it when carried."""

COLLAPSE_SIGNAL = "collapse"
CLASS_SIGNAL = "class"
"""Signals a backdoor verdict can rest on: triggered samples collapse onto one image (MSCR), or
fall into one class (top-class share, ``hfaudit.detect.modes``; class-target backdoors)."""

BLIND_SPOTS: tuple[str, ...] = (
    "triggers that scale the whole initial noise instead of adding to it (TrojDiff's blend trigger): "
    "the benchmark zoo's three such backdoors are missed; one trained with TrojDiff's own objective "
    "absorbs its trigger at the mid timestep, but only within a row's shift of it, which no search "
    "from random starts reaches",
    "class-target backdoors that send few triggered samples to their class: the zoo's weakest "
    "(30% of samples a 7, against 9% on clean noise) is missed",
    "BadDiffusion backdoors whose trigger is not the direction the model passes least of at 0.8 T: the "
    "zoo's RGB member (50% of its triggered samples on target) is missed, and RGB clean models pass "
    "some directions less than its trigger",
    "backdoors that only the mid-timestep inversion finds can depend on its seed: the zoo's one such "
    "member collapses 91% of its samples at the scan's seed and 47-50% at two others",
    "backdoors that only a search the budget left out or made smaller reaches: the default and fast "
    "budgets run three searches at reduced size (the report's settings and skipped list say which); "
    "--budget thorough runs every search at full size",
    "backdoors whose target is drawn over a background that differs from sample to sample: near-duplicates "
    "are whole images, so the zoo's 32x32 VillanDiffusion and TrojDiff members, whose target is on almost "
    "every triggered sample, are missed (their own triggers group 41% of samples, and no search reaches them)",
    "backdoors whose target image contains their own trigger pattern: a collapse onto an image the "
    "trigger depicts counts only if it beats that image painted into the noise, and such a target "
    "carries its trigger with it (the report's artefacts list names what was set aside)",
)
"""What a clean verdict does not rule out: the backdoors the benchmark zoo has and the scan misses
(``benchmarks/detection.py``; README, "Why each miss"). Every report carries them, so a clean
verdict is never read as proof of absence."""

TEXT_BLIND_SPOTS: tuple[str, ...] = (
    "caption triggers of several tokens whose single tokens do nothing alone: the sweep, the screen and the "
    "generations append one token at a time",
    "triggers that only act inside the prompts they were trained with (one subject, one phrasing): the "
    "probe prompts are built from the tokenizer's common words unless you pass your own",
    "backdoors that add a small object, a style or a watermark that moves with the content: only a region "
    "every output shares, a hijack, one image, or a token rendered as another token is detected",
    "on a vocabulary larger than the screen, a trigger that none of the sweep's three scores ranks among "
    "its top tokens is never generated (the report lists what was screened)",
)
"""What a clean verdict on a text-to-image pipeline does not rule out (``detect.t2i``; docs/detection.md)."""


SCHEMA_VERSION = "2.3"
"""The version of the report format (``report.json``, ``--json``, ``hfaudit_clean.json``), shipped
as a JSON Schema in ``hfaudit/schemas/report.schema.json``. ``MAJOR.MINOR``: the minor number goes
up when fields are added (a reader of ``2.0`` reads every ``2.x``); the major number goes up when a
field is removed, renamed, or changes type or meaning. Reports without the field are the format
before it existed (read them as ``1``)."""

REPORT_KINDS = ("scan", "clean", "error")
"""What a report is about: a finished scan, a finished clean, or an audit that stopped on an error."""


def created_at() -> str:
    """Now in UTC, ISO 8601 to the second (``YYYY-MM-DDTHH:MM:SSZ``); ``SOURCE_DATE_EPOCH`` (the
    reproducible-builds convention) fixes it, so two runs can give byte-identical reports."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit() else datetime.now(timezone.utc)
    return when.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def envelope(kind: str, command: str, verdict: str, exit_code: int, source: dict[str, Any],
             error: dict[str, str] | None = None) -> dict[str, Any]:
    """The fields every report starts with, whatever its ``kind`` (the schema's common part).

    ``verdict`` is the scan's verdict, a clean's status, or an error's word (``not-found``...);
    ``source`` is :class:`SourceInfo` as a dict; ``error`` is None except in an error report.
    """
    if kind not in REPORT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REPORT_KINDS)} (got {kind!r})")
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "command": command, "created_at": created_at(),
            "tool": "hfaudit", "hfaudit_version": __version__, "exit_code": int(exit_code), "verdict": str(verdict),
            "source": source, "error": error}


TEXT_SIGNALS = ("hijack", "region", "collapse", "swap")
"""What a text-to-image backdoor verdict can rest on (``hfaudit.detect.t2i``): with the token in the prompt
the outputs stop following the prompt (hijack), share a pinned region whatever the prompt (region),
collapse onto one image (collapse), or render the token as another token (swap)."""


@dataclass
class TokenEvidence:
    """One token generated in full: its statistics beside the null tokens' best."""

    token: int
    text: str
    role: str
    """``candidate`` or ``null``."""
    hijack: float
    region: float
    collapse: float
    fixation: float = 0.0
    """1 - (spread across seeds with the token) / (spread without): a collapse counts only where the
    output stopped depending on the initial noise (a subject word fixes the class, not the image)."""
    swap: float | None = None
    neighbour: str | None = None
    """For a key/value-agreement candidate: the token whose keys and values it shares."""
    fired: list[str] = field(default_factory=list)
    sweep: dict[str, float] = field(default_factory=dict)


@dataclass
class TextTriggerReport:
    """The text-to-image part of a scan result (``ScanResult.text``)."""

    prompts: list[str]
    sweep_top: list[dict[str, Any]]
    screen: list[dict[str, Any]]
    evidence: list[TokenEvidence]
    trigger: str | None
    """The confirmed trigger's text (None when nothing was confirmed)."""
    signals: list[str]
    vocabulary_size: int
    encoder_forwards: int
    group_radius: float
    best_token: int | None = None
    """The id of the token the verdict reads: the trigger, or (clean) the strongest candidate."""
    probed: int = 0
    """Tokens the behaviour probe generated (the sweep's order, as many as the budget allowed)."""
    triggers: list[str] = field(default_factory=list)
    """Every confirmed trigger token, strongest first (``trigger`` is the first): a poisoned encoder
    often answers to pieces of its trigger's context too."""
    fixed_prompts: list[str] = field(default_factory=list)
    """Probe prompts whose own outputs, with no token added, barely depended on the noise: they may
    hold a trigger, so no statistic is measured on them and their words are screened first."""

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "triggers": list(self.triggers), "signals": list(self.signals),
                "prompts": list(self.prompts), "fixed_prompts": list(self.fixed_prompts),
                "vocabulary_size": self.vocabulary_size, "encoder_forwards": self.encoder_forwards,
                "probed": self.probed, "best_token": self.best_token,
                "group_radius": self.group_radius, "sweep_top": self.sweep_top, "screen": self.screen,
                "evidence": [asdict(e) for e in self.evidence]}


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
    modes: ModeStats | None = None
    """The class histogram; None where the digits classifier cannot label these samples."""
    group: CollapseStats | None = None
    """The largest group at the model's own near-duplicate radius (``ScanResult.group_radius``,
    ``detect.nulls``) where that is wider than ``stats``' exact one: approximate copies of one image."""

    @property
    def share(self) -> float:
        """The collapse score: the largest group's share, exact or at the model's radius."""
        return max(self.stats.mscr, self.group.mscr if self.group is not None else 0.0)

    @property
    def centre(self) -> int:
        """Index of the sample at the centre of the group that gives :attr:`share` (the recovered target)."""
        if self.group is not None and self.group.mscr > self.stats.mscr:
            return self.group.medoid_index
        return self.stats.medoid_index


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
    noise_scale: torch.Tensor | None = field(default=None, repr=False)
    """``(C, H, W)`` factor on the initial noise; None for an additive trigger (every inversion's),
    0 inside the region of a stamp (``detect.stamps``). Probes start from
    ``sampling.apply_trigger(noise, trigger, noise_scale)``."""
    nulls: list[NullCheck] = field(default_factory=list)
    """Its fired probes held against their painted nulls (``detect.nulls``): the evidence counts
    only where one holds."""

    def holds(self, signal: str) -> bool:
        """Whether a null check of ``signal`` (``collapse`` or ``class``) held for this candidate."""
        return any(n.signal == signal and n.holds for n in self.nulls)

    @property
    def additive(self) -> bool:
        """Whether the trigger is added to the noise (all that ``hfaudit clean`` can remove)."""
        return self.noise_scale is None

    @property
    def kind(self) -> str:
        """``additive`` (``x_T = n + trigger``) or ``stamp`` (the noise replaced where ``noise_scale`` is 0)."""
        return "additive" if self.additive else "stamp"

    @property
    def best(self) -> Probe:
        """The probe with the highest collapse score (:attr:`Probe.share`)."""
        return max(self.probes, key=lambda p: p.share)

    @property
    def class_evidence(self) -> bool:
        """Whether this candidate's top-class share may call a class target: not for the ODE
        inversion's triggers, which are optimised to pull samples together and so concentrate
        classes on clean models too, and not for stamps, whose overwritten noise gives
        off-distribution samples that a digits classifier still labels confidently, clean models'
        too (``detect.scan.decide``; docs/detection.md, "Class signal")."""
        return self.objective != ODE_OBJECTIVE and self.additive

    @property
    def best_class(self) -> Probe:
        """The probe with the highest top-class share (0 where unavailable)."""
        return max(self.probes, key=lambda p: p.modes.top_share if p.modes is not None else 0.0)


@dataclass
class ScanResult:
    """The outcome of ``hfaudit.scan``: verdict, evidence, settings and output files."""

    source: SourceInfo
    verdict: Verdict
    score: float
    """Highest collapse score over the candidate triggers (``Probe.share``: the share of triggered
    samples in one near-duplicate group, exact or at the model's radius)."""
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
    signals: list[str] = field(default_factory=list)
    """Which signals fired (``collapse``, ``class``); empty unless the verdict is a backdoor."""
    class_score: float | None = None
    """Highest top-class share over the candidates' probes; None where the classifier cannot label."""
    class_threshold: float | None = None
    control_class_score: float | None = None
    """Highest top-class share without a trigger, over the samplers used."""
    class_unavailable: str | None = None
    """Why there is no class signal for this model (its samples are not digit-shaped)."""
    best_sampler: str | None = None
    """The sampler of the probe that decided (default: the best candidate's highest-MSCR probe)."""
    evaluations: dict[str, int] = field(default_factory=dict)
    """UNet evaluations each phase spent (a backward pass counting two), counted as the UNet ran."""
    skipped: list[dict[str, str]] = field(default_factory=list)
    """Searches the scan did not run, each with ``search`` and ``reason`` (budget, an early fire)."""
    group_radius: float | None = None
    """The model's near-duplicate radius (per-image MSE), chosen from its clean control (``detect.nulls``)."""
    artefacts: list[str] = field(default_factory=list)
    """Candidates whose collapse or class share reached its threshold but whose painted null did
    too: what a search pushed the model into, not evidence (``detect.nulls``)."""
    text: TextTriggerReport | None = None
    """A text-to-image pipeline's audit (``detect.t2i``): the tokens swept, screened and generated.
    Then ``score``/``threshold``/``control_score`` are the deciding statistic of the best candidate
    token, its floor, and the best null token's value of it; ``controls`` and ``candidates`` are empty."""
    base: BaseComparison | None = None
    """The weights against the base model the repo names (``hfaudit.basemodel``): a reading aid,
    never part of the verdict. None: no base named, or the comparison was turned off."""

    @property
    def margin(self) -> float:
        """``score - threshold`` of the collapse signal: positive means it fired, and by how much."""
        return self.score - self.threshold

    @property
    def class_margin(self) -> float | None:
        """``class_score - class_threshold``: positive means the class signal's candidate side fired."""
        if self.class_score is None or self.class_threshold is None:
            return None
        return self.class_score - self.class_threshold

    @property
    def best_probe(self) -> Probe | None:
        """The best candidate's probe that decided (its sampler is ``best_sampler``)."""
        best = self.best
        if best is None:
            return None
        return next((p for p in best.probes if p.sampler == self.best_sampler), best.best)

    @property
    def fired(self) -> list[Candidate]:
        """The candidates that fired, in order: a collapse score at the threshold or above (or, when the
        class signal is part of the verdict, a top-class share at the class threshold or above) whose
        painted null held (``detect.nulls``).

        Empty unless the verdict is a backdoor, like ``signals``: under a collapsing control nothing
        proves anything. ``clean`` fine-tunes against all of them, not only the best one.
        """
        if self.verdict != BACKDOOR:
            return []
        by_class = CLASS_SIGNAL in self.signals and self.class_threshold is not None
        return [c for c in self.candidates
                if (c.best.share >= self.threshold and c.holds(COLLAPSE_SIGNAL))
                or (by_class and c.class_evidence and c.holds(CLASS_SIGNAL)
                    and any(p.modes is not None and p.modes.top_share >= self.class_threshold for p in c.probes))]

    @property
    def fired_methods(self) -> list[str]:
        """Inversion methods (``gradient``, ``midstep``, ``blackbox``, ``ode``, ``stamp``, ``carried``) with a candidate that
        fired (:attr:`fired`), in order of first appearance: which inversion(s) found the backdoor."""
        return list(dict.fromkeys(c.method for c in self.fired))

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
            "signals": list(self.signals),
            "fired_methods": self.fired_methods,
            "class_score": self.class_score,
            "class_threshold": self.class_threshold,
            "class_margin": self.class_margin,
            "control_class_score": self.control_class_score,
            "class_signal": "unavailable" if self.class_score is None else "available",
            "class_unavailable": self.class_unavailable,
            "source": asdict(self.source),
            "best_candidate": None if best is None else {
                "name": best.name, "method": best.method, "objective": best.objective, "lambda": best.lam,
                "shift_ratio": best.shift_ratio, "sampler": self.best_probe.sampler, "steps": self.best_probe.steps,
                "top_class": None if self.best_probe.modes is None else self.best_probe.modes.top_class,
                "trigger_l2": float(best.trigger.norm()), "trigger_linf": float(best.trigger.abs().max()),
                "trigger_kind": best.kind,
                "replaced_pixels": None if best.additive else int((best.noise_scale == 0).sum()),
            },
            "controls": [_probe_dict(p) for p in self.controls],
            "candidates": [{"name": c.name, "method": c.method, "objective": c.objective, "lambda": c.lam, "shift_ratio": c.shift_ratio,
                            "trigger_kind": c.kind, "probes": [_probe_dict(p) for p in c.probes],
                            "nulls": [n.to_dict() for n in c.nulls]} for c in self.candidates],
            "group_radius": self.group_radius,
            "artefacts": list(self.artefacts),
            "settings": self.settings,
            "timings_s": self.timings,
            "unet_evaluations": self.unet_evaluations,
            "evaluations_by_phase": self.evaluations,
            "skipped": self.skipped,
            "artifacts": self.artifacts,
            "findings": [f.to_dict() for f in self.findings],
            "blind_spots": list(TEXT_BLIND_SPOTS if self.text is not None else BLIND_SPOTS),
            "text_trigger": None if self.text is None else self.text.to_dict(),
            "base_model": None if self.base is None else self.base.to_dict(),
        }


def _probe_dict(p: Probe) -> dict[str, Any]:
    return {"trigger": p.trigger_name, "sampler": p.sampler, "steps": p.steps, **asdict(p.stats),
            "modes": None if p.modes is None else asdict(p.modes),
            "group": None if p.group is None else asdict(p.group), "share": p.share}
