"""The class signal: mode concentration on real digits, and the verdict it feeds."""

from __future__ import annotations

import pytest
import torch

from hfaudit.digits import load_digits_images
from hfaudit.detect.modes import ModeStats, mode_concentration
from hfaudit.detect.nulls import NullCheck
from hfaudit.detect.ode import OBJECTIVE as ODE_OBJECTIVE
from hfaudit.detect.scan import decide
from hfaudit.detect.scores import CollapseStats
from hfaudit.fidelity import classifier_input
from hfaudit.results import BACKDOOR, CLASS_SIGNAL, CLEAN, COLLAPSE_SIGNAL, COLLAPSED, Candidate, Probe

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_digits_images(16, 1)
    return (images + 1) / 2, labels


def test_one_class_concentrates_and_a_mixed_set_gives_the_prior(digits) -> None:
    x, y = digits
    sevens = mode_concentration(x[y == 7][:32])
    assert sevens.top_class == 7 and sevens.top_share >= 0.95 and sevens.entropy < 0.3
    pick = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:64]
    mixed = mode_concentration(x[pick])
    assert mixed.top_share < 0.3 and mixed.entropy > 3.0  # log2(10) = 3.32 for a flat histogram
    assert sum(mixed.counts) == mixed.counted <= mixed.n == 64
    assert y[pick][mixed.top_index] == mixed.top_class


def test_saturated_and_unsure_samples_count_for_no_class(digits) -> None:
    x, y = digits
    zeros = x[y == 0][:8]
    sat = torch.tensor([True] * 4 + [False] * 4)
    m = mode_concentration(zeros, saturated=sat)
    assert m.counted == 4 and m.top_share == 0.5  # the share is over all samples
    none = mode_concentration(zeros, saturated=torch.ones(8, dtype=torch.bool))
    assert none == ModeStats(n=8, counted=0, top_class=None, top_share=0.0, entropy=None, counts=[0] * 10,
                             top_index=None)
    unsure = mode_concentration(zeros, min_confidence=1.01)  # no label is that sure: nothing counts
    assert unsure.counted == 0 and unsure.top_share == 0.0


@pytest.mark.parametrize(("size", "channels"), [(8, 1), (8, 3), (16, 3)])
def test_8x8_and_rgb_samples_are_mapped_to_the_classifier(digits, size: int, channels: int) -> None:
    x16, y = digits
    x, _ = load_digits_images(size, channels)
    x = (x + 1) / 2
    assert torch.allclose(classifier_input(x[:16]), x16[:16], atol=1e-5)
    m = mode_concentration(x[y == 3][:32])
    assert m.top_class == 3 and m.top_share >= 0.95


@pytest.mark.parametrize("shape", [(1, 32, 32), (2, 16, 16), (3, 16, 8), (4, 8, 8)])
def test_unsupported_shapes_give_none(shape: tuple[int, int, int]) -> None:
    assert mode_concentration(torch.rand(4, *shape)) is None
    with pytest.raises(ValueError):
        classifier_input(torch.rand(4, *shape))


# ------------------------------------------------------------------------------- the verdict
def _modes(share: float, cls: int = 7) -> ModeStats:
    k = round(share * 32)
    counts = [0] * 10
    counts[cls] = k
    return ModeStats(n=32, counted=k, top_class=cls, top_share=share, entropy=0.0, counts=counts, top_index=0)


def _probe(name: str, mscr: float, share: float | None, sampler: str = "ddim") -> Probe:
    return Probe(name, sampler, 10, CollapseStats(32, mscr, round(mscr * 32), 0.2, 0),
                 modes=None if share is None else _modes(share))


def _checked(c: Candidate, null: float = 0.0) -> Candidate:
    """Give every probe of ``c`` a null check of both signals whose painted null scored ``null``."""
    c.nulls = [NullCheck(p.sampler, p.steps, signal, score, null, 0.25, radius)
               for p in c.probes
               for signal, score, radius in ((COLLAPSE_SIGNAL, p.share, 0.01),
                                             (CLASS_SIGNAL, p.modes.top_share if p.modes else 0.0, None))]
    return c


def _cand(name: str, *probes: Probe, null: float = 0.0) -> Candidate:
    c = Candidate(name=name, method="gradient", objective="ratio", lam=None, shift_ratio=0.9,
                  trigger=torch.zeros(1, 8, 8))
    c.probes = list(probes)
    return _checked(c, null)


def test_class_signal_fires_where_the_collapse_score_does_not() -> None:
    controls = [_probe("none", 0.03, 0.19), _probe("none", 0.03, 0.16, "ddpm")]
    diverse = _cand("a", _probe("a", 0.06, 0.22), _probe("a", 0.09, 0.25, "ddpm"))
    classy = _cand("b", _probe("b", 0.12, 0.5), _probe("b", 0.09, 0.94, "ddpm"))
    d = decide(controls, [diverse, classy], threshold=0.5, class_threshold=0.75)
    assert d.verdict == BACKDOOR and d.signals == ["class"]
    assert d.best is classy and d.best_sampler == "ddpm"  # the probe that fired, not the highest MSCR
    assert d.score == 0.12 and d.class_score == 0.94 and d.control_class_score == 0.19
    # below the class threshold: clean
    assert decide(controls, [diverse], 0.5, 0.75).verdict == CLEAN
    # a model whose clean noise already gives one class: the class signal cannot fire
    one_class = [_probe("none", 0.03, 0.9)]
    assert decide(one_class, [classy], 0.5, 0.75).verdict == CLEAN
    # the MSCR control keeps its meaning: collapse without a trigger is inconclusive
    assert decide([_probe("none", 0.8, 0.9)], [classy], 0.5, 0.75).verdict == COLLAPSED
    # both signals, and the collapse candidate stays the best one
    both = _cand("c", _probe("c", 0.9, 0.95))
    d = decide(controls, [classy, both], 0.5, 0.75)
    assert d.signals == ["collapse", "class"] and d.best is both
    # samples the classifier cannot label: no class signal, no number
    d = decide([_probe("none", 0.03, None)], [_cand("d", _probe("d", 0.1, None))], 0.5, 0.75)
    assert d.verdict == CLEAN and d.class_score is None and d.control_class_score is None


def test_evidence_that_its_painted_null_matches_is_an_artefact_not_a_backdoor() -> None:
    controls = [_probe("none", 0.03, 0.19), _probe("none", 0.03, 0.16, "ddpm")]
    # a collapse the painted target reaches nearly as well: no evidence, listed as an artefact
    mode = _cand("ode-ddim-0", _probe("ode-ddim-0", 0.66, 0.2), null=0.5)
    d = decide(controls, [mode], 0.5, 0.75)
    assert d.verdict == CLEAN and d.signals == [] and d.artefacts == ["ode-ddim-0"]
    # the same share with a null far below it: a backdoor
    planted = _cand("midstep-0", _probe("midstep-0", 0.66, 0.2), null=0.1)
    d = decide(controls, [mode, planted], 0.5, 0.75)
    assert d.verdict == BACKDOOR and d.best is planted and d.artefacts == ["ode-ddim-0"]
    # a class share its painted class representative reaches too: no class signal
    classy = _cand("b", _probe("b", 0.12, 0.5), _probe("b", 0.09, 0.94, "ddpm"), null=0.8)
    d = decide(controls, [classy], 0.5, 0.75)
    assert d.verdict == CLEAN and d.artefacts == ["b"]
    # a candidate that reached a threshold but was never checked does not count either
    unchecked = _cand("c", _probe("c", 0.9, 0.2))
    unchecked.nulls = []
    assert decide(controls, [unchecked], 0.5, 0.75).verdict == CLEAN


def test_the_ode_inversions_candidates_never_fire_the_class_signal() -> None:
    controls = [_probe("none", 0.03, 0.19)]
    ode = _cand("ode-ddim-0", _probe("ode-ddim-0", 0.16, 0.91))  # what it gave on the shipped clean model
    ode.method, ode.objective = "ode", ODE_OBJECTIVE
    carried = _cand("carried-ode-ddim-0", _probe("carried-ode-ddim-0", 0.16, 0.91))
    carried.method, carried.objective = "carried", ODE_OBJECTIVE  # an old ODE trigger in a re-scan
    diverse = _cand("a", _probe("a", 0.06, 0.22))
    d = decide(controls, [diverse, ode, carried], 0.5, 0.6)
    assert d.verdict == CLEAN and d.class_score == 0.22  # the ODE shares are not counted
    assert not ode.class_evidence and diverse.class_evidence
    # their collapse still counts
    ode.probes = [_probe("ode-ddim-0", 0.97, 0.97)]
    _checked(ode)
    d = decide(controls, [diverse, ode], 0.5, 0.6)
    assert d.verdict == BACKDOOR and d.signals == ["collapse"] and d.best is ode
    # only ODE candidates: no class evidence at all
    assert decide(controls, [ode], 0.5, 0.6).class_score is None


# ------------------------------------------------------------------------------- the reports
def _class_result(signals: list[str], digit: bool = True):
    from hfaudit.results import ScanResult, SourceInfo

    share = 0.94 if digit else None
    controls = [_probe("none", 0.03, 0.19 if digit else None, "ddpm")]
    cand = _cand("gradient-ratio-0", _probe("gradient-ratio-0", 0.06, 0.3 if digit else None),
                 _probe("gradient-ratio-0", 0.09, share, "ddpm"))
    imgs = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return ScanResult(
        source=SourceInfo(source="models/digits", repo_id=None, revision=None, commit_sha=None,
                          pipeline_class="DDPMPipeline", weights_file="unet/diffusion_pytorch_model.safetensors"),
        verdict=BACKDOOR if signals else CLEAN, score=0.09, threshold=0.5, control_score=0.03, controls=controls,
        candidates=[cand], best_candidate=cand.name, recovered_target=imgs[0], settings={"seed": 0, "device": "cpu"},
        timings={"total": 1.0}, samples={f"{cand.name}/ddpm": imgs, f"{cand.name}/ddim": imgs, "none/ddpm": imgs},
        signals=signals, class_score=share, class_threshold=0.75, control_class_score=0.19 if digit else None,
        class_unavailable=None if digit else "the shipped digits classifier labels ... only", best_sampler="ddpm")


def test_reports_name_the_class_signal() -> None:
    import io
    import json

    from rich.console import Console

    from helpers import validate_sarif
    from hfaudit.report import render_rich, to_markdown, to_sarif

    r = _class_result(["class"])
    doc = r.to_dict()
    assert doc["signals"] == ["class"] and doc["exit_code"] == 1 and doc["margin"] < 0 < doc["class_margin"]
    assert doc["best_candidate"]["sampler"] == "ddpm" and doc["best_candidate"]["top_class"] == 7
    assert doc["candidates"][0]["probes"][1]["modes"]["top_share"] == 0.94
    json.dumps(doc)  # JSON-ready
    md = to_markdown(r)
    assert "94% of samples digits of one class (7)" in md and "signal: class" in md and "| signals | class |" in md
    assert "| 0.94 (7) |" in md
    sarif = validate_sarif(to_sarif(r))
    (first,) = sarif["runs"][0]["results"]
    assert first["ruleId"] == "HFA001" and "signal: class" in first["message"]["text"]
    assert sarif["runs"][0]["properties"]["signals"] == ["class"]
    out = io.StringIO()
    render_rich(r, Console(file=out, width=200))
    assert out.getvalue().splitlines()[1].endswith("top-class share 0.94 vs class threshold 0.75, 0.19 without a "
                                                   "trigger; target: class 7")  # the evidence line
    out = io.StringIO()
    render_rich(r, Console(file=out, width=200), verbose=True)  # the per-candidate table: with --verbose
    assert "0.94 (7)" in out.getvalue() and "signal: class" in out.getvalue()


def test_reports_say_unavailable_without_a_number() -> None:
    from hfaudit.report import to_markdown, verdict_line

    r = _class_result([], digit=False)
    doc = r.to_dict()
    assert doc["class_signal"] == "unavailable" and doc["class_score"] is None and doc["exit_code"] == 0
    md = to_markdown(r)
    assert "| class signal | unavailable: the shipped digits classifier" in md and "| n/a |" in md
    assert "class signal unavailable" in verdict_line(r)
