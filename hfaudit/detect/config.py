"""Scan settings: what decides a verdict, what it may cost, and their bounds (docs/detection.md).

Every search's settings, the probes, the thresholds and the budget fields (``screen_samples``,
``confirmations``, ``stop_margin``, ``max_evaluations``) live in one :class:`ScanConfig`, which is
recorded in every report and keys the verdict cache. The named budgets are in ``detect.budgets``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from hfaudit import limits
from hfaudit.detect.blackbox import BlackboxConfig, default_searches
from hfaudit.detect.inversion import InversionConfig
from hfaudit.detect.midstep import MidstepConfig
from hfaudit.detect.ode import OdeInversionConfig
from hfaudit.detect.scores import DUPLICATE_MSE
from hfaudit.detect.stamps import StampConfig
from hfaudit.errors import UsageError
from hfaudit.sampling import SAMPLERS

DEFAULT_THRESHOLD = 0.5
"""MSCR at or above which triggered samples count as collapsed (README, 'Threshold calibration').

Why 0.5: it stays above every clean model's score on the benchmark zoo (``python
benchmarks/detection.py`` reports the calibrated cut and the margins), and a lower cut flags
fine-tuned models, repaired ones included, whose ODE-inversion samples partly collapse onto an
image that is not a backdoor target.
"""

DEFAULT_CLASS_THRESHOLD = 0.6
"""Top-class share (``detect.modes``) at or above which triggered samples count as one class.

Why 0.6: between the clean models' top-class shares and a class-target backdoor's, with a thin
margin over fine-tuned clean models (``python benchmarks/detection.py`` reports it). See the
README, 'Class signal' and 'Threshold calibration'.
"""


DEFAULT_NULL_MARGIN = 0.4
"""How far the share of a trigger that depicts its target must exceed its painted null's
(``detect.nulls``) to count.

Why 0.4: on the development zoo the collapses that searches found on clean models stayed within
0.13 of their painted null, those found on backdoored models away from the planted target within
0.34, and the planted triggers cleared theirs by 0.44 or more (``python benchmarks/evidence.py``,
docs/detection.md, "Evidence against a null")."""


DEFAULT_MAX_ALIGNMENT = 0.25
"""A trigger whose cosine with its target's picture is at most this does not depict its target
(``detect.nulls``). Why 0.25: on the development zoo the backdoors' triggers sat at 0.17 or below
at the default budget (0.40 at most for the full-size ODE inversion, whose painted null then held),
and the collapses found on clean models at 0.37 or above (``python benchmarks/evidence.py``)."""


@dataclass
class ScanConfig:
    """Everything that decides a verdict; recorded in the report."""

    seed: int = 0
    n_samples: int = 32
    probes: tuple[tuple[str, int], ...] = (("ddim", 10), ("ddpm", 50))
    """(sampler, steps) pairs: an ODE and an SDE family, since backdoors fire under one or the other."""
    threshold: float = DEFAULT_THRESHOLD
    class_threshold: float = DEFAULT_CLASS_THRESHOLD
    """Top-class share that calls a class-target backdoor (digit-shaped models only)."""
    duplicate_mse: float = DUPLICATE_MSE
    """The exact near-duplicate radius; the scan also groups at the model's own radius (``detect.nulls``)."""
    null_margin: float = DEFAULT_NULL_MARGIN
    max_alignment: float = DEFAULT_MAX_ALIGNMENT
    null_checks: int = 16
    """How many null checks (``detect.nulls``: a painted and a random null probe each) the scan may
    spend on candidates that fired; a fired candidate left unchecked cannot make a clean verdict (it
    is inconclusive instead)."""
    max_candidates: int = 4
    """How many inverted triggers (lowest shift ratio first) are probed by sampling."""
    batch_size: int = 64
    inversion: InversionConfig | None = field(default_factory=InversionConfig)
    """The gradient inversion at ``t = T`` (``detect/inversion.py``); None turns it off."""
    blackbox: tuple[BlackboxConfig, ...] | BlackboxConfig | None = field(default_factory=default_searches)
    """Black-box inversions (samples only, no gradients), one per config (default: a DDPM and a DDIM
    search, ``blackbox.default_searches``); each one's best ``candidates`` triggers are probed too.
    None or ``()`` turns it off. Cost: ``phase_evaluations["blackbox"]``."""

    midstep: MidstepConfig | None = field(default_factory=MidstepConfig)
    """The mid-timestep inversion (``detect/midstep.py``: the directions the model passes least of at
    ``0.8 T``), for SDE-trained backdoors whose trigger the gradient inversion at ``t = T`` cannot
    single out; the best ``candidates`` directions of each searched RMS are probed. None turns it off.
    Cost: ``phase_evaluations["midstep"]`` (forward passes; the backward passes come on top)."""

    ode: OdeInversionConfig | None = field(default_factory=OdeInversionConfig)
    """The ODE inversion (``detect/ode.py``: mid-timestep direction, refined through DDIM), for
    ODE-trained backdoors that the other two miss; its best ``candidates`` triggers are probed.
    None turns it off. Cost: ``phase_evaluations["ode"]`` (forward passes; the backward passes come
    on top)."""

    screen_samples: int | None = None
    """Samples each candidate is probed with first (the first ones of the probe noise, under every
    probe sampler). Only a candidate whose screen shows a near-duplicate pair, or a class share at
    ``class_threshold``, is probed with all ``n_samples``; the others keep their screen, which cannot
    reach either threshold. None: every candidate gets the full probe."""
    confirmations: int | None = None
    """How many screened candidates may get the full probe (most a scan spends on confirming); a
    promising screen left unconfirmed makes a clean verdict inconclusive. None: every one."""
    stop_margin: float | None = None
    """Stop searching once a candidate's full probe reaches ``threshold + stop_margin`` (a backdoor
    verdict that more searching cannot turn clean); the searches left are listed as skipped. None:
    every search runs."""
    max_evaluations: int | None = None
    """A cap on the scan's UNet evaluations: a search whose planned cost (itself and its candidates'
    probes) would pass it is skipped, and the report says so. None: no cap."""
    budget: str = "custom"
    """The name of the budget these settings come from (``detect.budgets``), as the report records it."""
    prompts: tuple[str, ...] | None = None
    """Text-to-image pipelines only: the prompts a caption trigger is appended to (``detect.t2i``);
    None builds them from the tokenizer's common words."""
    base: str = "auto"
    """The base model to compare the weights with (``hfaudit.basemodel``; a reading aid beside the
    verdict, never part of it): ``auto`` follows the base the repo names when it is a local folder,
    ``none`` skips the comparison, anything else is a repo id or folder to fetch and compare."""

    stamps: StampConfig | None = field(default_factory=StampConfig)
    """The stamp screen (``detect/stamps.py``: each lattice cell of the noise overwritten with a
    constant), for patch triggers that replace the noise instead of adding to it (TrojDiff's),
    which no additive search reaches; the best stamp of each of its best ``candidates`` regions is
    probed. None turns it off. Cost: ``phase_evaluations["stamps"]``."""

    @property
    def searches(self) -> tuple[BlackboxConfig, ...]:
        """The black-box searches to run (``blackbox`` as a tuple)."""
        if self.blackbox is None:
            return ()
        return (self.blackbox,) if isinstance(self.blackbox, BlackboxConfig) else tuple(self.blackbox)

    @property
    def probe_evaluations(self) -> int:
        """UNet evaluations of probing one trigger (or the control): ``n_samples`` images through
        every probe's sampler steps."""
        return self.n_samples * sum(steps for _name, steps in self.probes)

    @property
    def screen_evaluations(self) -> int:
        """UNet evaluations of screening one candidate (0 without screening)."""
        if self.screen_samples is None:
            return 0
        return min(self.screen_samples, self.n_samples) * sum(steps for _name, steps in self.probes)

    @property
    def probed(self) -> dict[str, int]:
        """How many candidates each search that is on hands to the probes (black-box: all its runs)."""
        counts = {}
        if self.inversion is not None:
            counts["gradient"] = min(self.max_candidates, self.inversion.total_restarts)
        if self.searches:
            counts["blackbox"] = sum(bb.probed for bb in self.searches)
        if self.midstep is not None:
            counts["midstep"] = self.midstep.probed
        if self.ode is not None:
            counts["ode"] = min(self.ode.candidates, self.ode.refine)
        if self.stamps is not None:
            counts["stamps"] = min(self.stamps.candidates, self.stamps.n_regions)
        return counts

    def search_cost(self, search: Any, probed: int) -> int:
        """The most UNet evaluations one search can cost: its own (a backward pass counting two) and
        the probes of the ``probed`` candidates it yields."""
        own = search.unet_evaluations + 2 * getattr(search, "backward_evaluations", 0)
        return own + self.candidate_evaluations(probed)

    def candidate_evaluations(self, count: int) -> int:
        """The most UNet evaluations probing ``count`` candidates of one search can cost: each one's
        screen, and each one's full probe unless ``confirmations`` pools the full probes of the scan."""
        full = count * self.probe_evaluations if self.confirmations is None else 0
        return count * self.screen_evaluations + full

    @property
    def phase_evaluations(self) -> dict[str, int]:
        """The most UNet evaluations each phase of :func:`detect` can cost (a backward pass counting
        two), each search with the probes of the candidates it yields, and the pool of full probes
        (``confirmations``) where screens decide them: what the scan counts when every screen asks
        for a full probe, no search is skipped and none fires early. Each trigger carried into a
        re-scan adds ``probe_evaluations`` and one null check per probe sampler (``detect``)."""
        cost = {"control": self.probe_evaluations}
        if self.inversion is not None:
            cost["gradient"] = self.search_cost(self.inversion, self.probed["gradient"])
        if self.searches:
            cost["blackbox"] = sum(self.search_cost(bb, bb.probed) for bb in self.searches)
        for name in ("midstep", "ode", "stamps"):
            if getattr(self, name) is not None:
                cost[name] = self.search_cost(getattr(self, name), self.probed[name])
        if self.confirmations is not None:
            cost["confirmations"] = self.confirmations * self.probe_evaluations
        cost["nulls"] = self.null_checks * self.null_evaluations
        return cost

    @property
    def null_random_samples(self) -> int:
        """Samples of the random null (``detect.nulls``): the screen's size where candidates are screened
        (a random direction is expected to do nothing; a few samples show it), else ``n_samples``."""
        return min(self.screen_samples or self.n_samples, self.n_samples)

    @property
    def null_evaluations(self) -> int:
        """The most UNet evaluations one null check costs: the painted null (``n_samples``) and the
        random null (``null_random_samples``) through the longest probe sampler."""
        return (self.n_samples + self.null_random_samples) * max(steps for _name, steps in self.probes)

    @property
    def unet_evaluations(self) -> int:
        """The most UNet evaluations a whole scan can cost; ``ScanResult.unet_evaluations`` counts what it did."""
        return sum(self.phase_evaluations.values())

    @property
    def sampler_steps(self) -> int:
        """The most sampler steps any probe or search runs (the schedule needs at least as many timesteps)."""
        steps = [s for _name, s in self.probes]
        steps += [bb.steps for bb in self.searches]
        steps += [c.steps for c in (self.ode, self.stamps) if c is not None]
        return max(steps)

    def peak_batches(self) -> tuple[int, int]:
        """``(forward, backward)``: the most images any phase puts through the UNet at once without
        gradients, and the most whose activations are kept for a backward pass (``hfaudit.limits``)."""
        fwd = [min(self.batch_size, self.n_samples)]
        fwd += [max(bb.screen, 2 * bb.restarts * bb.directions) * bb.n_samples for bb in self.searches]
        if self.stamps is not None:
            fwd.append(len(self.stamps.values) * self.stamps.n_samples)
        inv = self.inversion
        bwd = [0 if inv is None else inv.total_restarts * inv.batch_size]
        if self.midstep is not None:
            bwd.append(self.midstep.restarts * self.midstep.batch_size)
        if self.ode is not None:
            bwd += [self.ode.restarts * self.ode.batch_size,
                    min(self.ode.refine, self.ode.restarts) * self.ode.refine_samples * self.ode.steps]
        return max(fwd), max(bwd)

    def seeded(self) -> ScanConfig:
        """A copy in which every search draws from ``seed``: one seed decides the whole scan.

        Why: the searches keep their own configs (each runs alone in the benchmarks), so a scan with
        ``seed=1`` must not leave them at their default seed.
        """
        bb = self.blackbox
        return replace(
            self, inversion=None if self.inversion is None else replace(self.inversion, seed=self.seed),
            blackbox=None if bb is None else tuple(replace(b, seed=self.seed) for b in self.searches)
            if not isinstance(bb, BlackboxConfig) else replace(bb, seed=self.seed),
            **{name: None if getattr(self, name) is None else replace(getattr(self, name), seed=self.seed)
               for name in ("midstep", "ode", "stamps")})

    def validate(self) -> None:
        """Every value within range and within ``hfaudit.limits`` (checked before anything is allocated).

        Raises:
            UsageError: a value out of range."""
        if not 2 <= self.n_samples <= limits.MAX_SAMPLES:
            raise UsageError(f"n_samples must be between 2 and {limits.MAX_SAMPLES} (got {self.n_samples})",
                             param="n_samples")
        if not 0 <= self.seed < limits.MAX_SEED:
            raise UsageError(f"seed must be between 0 and 2**62 - 1 (got {self.seed})", param="seed")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"threshold must be in (0, 1] (got {self.threshold})", param="threshold")
        if not 0 < self.class_threshold <= 1:
            raise UsageError(f"class_threshold must be in (0, 1] (got {self.class_threshold})", param="class_threshold")
        if self.max_candidates < 1:
            raise UsageError("max_candidates must be at least 1", param="max_candidates")
        if not 1 <= self.batch_size <= limits.MAX_BATCH:
            raise UsageError(f"batch_size must be between 1 and {limits.MAX_BATCH} (got {self.batch_size})",
                             param="batch_size")
        if self.inversion is not None and not 1 <= self.inversion.steps <= limits.MAX_STEPS:
            raise UsageError(f"inversion.steps must be between 1 and {limits.MAX_STEPS} (got {self.inversion.steps})",
                             param="inversion.steps")
        for search in (*self.searches, *(s for s in (self.midstep, self.ode, self.stamps) if s is not None)):
            try:
                search.validate()
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        for name in ("screen_samples", "confirmations", "max_evaluations"):
            value = getattr(self, name)
            if value is not None and value < (2 if name == "screen_samples" else 0):
                raise UsageError(f"{name} must be at least {2 if name == 'screen_samples' else 0} (got {value})",
                                 param=name)
        if self.max_evaluations is not None and self.max_evaluations < self.probe_evaluations:
            raise UsageError(f"a cap of {self.max_evaluations:,} UNet evaluations is below what the control alone "
                             f"costs ({self.probe_evaluations:,}); no verdict can come of it", param="max_evaluations")
        if self.null_checks < 0:
            raise UsageError(f"null_checks must be at least 0 (got {self.null_checks})", param="null_checks")
        if not -1 <= self.max_alignment <= 1:
            raise UsageError(f"max_alignment must be in [-1, 1] (got {self.max_alignment})", param="max_alignment")
        if not 0 <= self.null_margin <= 1:
            raise UsageError(f"null_margin must be in [0, 1] (got {self.null_margin})", param="null_margin")
        if self.stop_margin is not None and self.stop_margin < 0:
            raise UsageError(f"stop_margin must be at least 0 (got {self.stop_margin})", param="stop_margin")
        for sampler, steps in self.probes:
            if sampler not in SAMPLERS:
                raise UsageError(f"unknown sampler {sampler!r}; choose from {', '.join(SAMPLERS)}")
            if not 1 <= steps <= limits.MAX_STEPS:
                raise UsageError(f"probes {sampler}:{steps}: steps must be between 1 and {limits.MAX_STEPS}",
                                 param="probes")
