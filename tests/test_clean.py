"""``hfaudit clean`` end to end on a tiny pipeline: outputs, refusals, verification gate, pushes, CLI.

Detection (stage 1) is tested in its own files and is the slow part; here it is replaced by a
scripted stand-in (``stub_detect``) so each test controls the verdicts of the scan and the re-scan.
Everything else runs for real: importance, pruning, fine-tuning, verification sampling, saving,
reloading with stock diffusers, the card, and pushes through the real huggingface_hub client.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from hfaudit.cleaning import REPORT_NAME, CleanConfig, clean
from hfaudit.detect.scan import ScanConfig
from hfaudit.detect.nulls import NullCheck
from hfaudit.detect.scores import collapse_stats
from hfaudit.errors import (
    CleaningFailedError,
    ExitCode,
    OutputError,
    PushError,
    UsageError,
)
from hfaudit.remove.finetune import FinetuneConfig
from hfaudit.results import BACKDOOR, CLEAN, COLLAPSE_SIGNAL, Candidate, Probe, ScanResult, SourceInfo
from hfaudit import report as report_module
from helpers import validate_sarif

SHAPE = (1, 8, 8)
FAST = CleanConfig(n_data=8, data_sampler=("ddim", 2), asr_samples=4, fidelity_samples=4, importance_batches=1,
                   finetune=FinetuneConfig(steps=2, batch_size=4, warmup=1), round_steps=3)
FAST_SCAN = ScanConfig(n_samples=4, probes=(("ddim", 2),), batch_size=8, blackbox=None, midstep=None, ode=None,
                      stamps=None)


def box_trigger() -> torch.Tensor:
    g = torch.zeros(SHAPE)
    g[:, 5:, 5:] = 1.5
    return g


def make_scan_result(source: str, verdict: str, trigger: torch.Tensor, repo_id: str | None = None,
                     score: float | None = None) -> ScanResult:
    """A ScanResult as ``detect`` returns it, with one candidate holding ``trigger``."""
    imgs = torch.rand(4, *trigger.shape)
    stats = collapse_stats(imgs)
    probe = Probe(trigger_name="gradient-0", sampler="ddpm", steps=50, stats=stats)
    cand = Candidate(name="gradient-0", method="gradient", objective="paired", lam=0.5, shift_ratio=0.55,
                     trigger=trigger, probes=[probe])
    score = score if score is not None else (0.9 if verdict == BACKDOOR else 0.25)
    target = torch.zeros(trigger.shape)
    target[:, ::2] = 1.0
    return ScanResult(
        source=SourceInfo(source=source, repo_id=repo_id, revision=None, commit_sha="a" * 40 if repo_id else None,
                          pipeline_class="DDPMPipeline", weights_file="unet/diffusion_pytorch_model.safetensors"),
        verdict=verdict, score=score, threshold=0.5, control_score=0.25,
        controls=[Probe(trigger_name="none", sampler="ddpm", steps=50, stats=stats)], candidates=[cand],
        best_candidate=cand.name, recovered_target=target)


@pytest.fixture
def stub_detect(monkeypatch: pytest.MonkeyPatch):
    """Script the verdicts of successive ``detect`` calls (scan, then re-scan); returns the call log."""

    def install(*verdicts: str) -> list:
        calls: list = []
        queue = list(verdicts)

        def fake_detect(model, config=None, carried=()):
            calls.append((model, list(carried)))
            verdict = queue.pop(0)
            return make_scan_result(model.source.source, verdict, box_trigger(), repo_id=model.source.repo_id)

        monkeypatch.setattr("hfaudit.cleaning.detect", fake_detect)
        return calls

    return install


def _tree_hash(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_clean(source, out, **kw):
    kw.setdefault("config", FAST)
    kw.setdefault("scan_config", FAST_SCAN)
    kw.setdefault("device", "cpu")
    return clean(str(source), output_dir=out, **kw)


# ----------------------------------------------------------------------------------- gating
def test_clean_model_writes_nothing(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    calls = stub_detect(CLEAN)
    out = tmp_path / "out"
    result = run_clean(tiny_pipeline_dir, out)
    assert result.status == "nothing-to-remove" and result.exit_code == ExitCode.CLEAN
    assert not out.exists() and result.files == [] and result.prune is None
    assert len(calls) == 1


def test_end_to_end_writes_a_stock_safetensors_pipeline(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    from diffusers import DiffusionPipeline
    from huggingface_hub import ModelCard

    calls = stub_detect(BACKDOOR, CLEAN)
    source_before = _tree_hash(tiny_pipeline_dir)
    out = tmp_path / "cleaned"
    result = run_clean(tiny_pipeline_dir, out)

    assert len(calls) == 2 and result.status == "cleaned" and result.exit_code == 0 and result.passed
    assert calls[0][1] == [] and calls[1][1] == result.scan.candidates  # the re-scan re-probes the old triggers
    assert _tree_hash(tiny_pipeline_dir) == source_before  # the source is never written
    names = set(_tree_hash(out))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json", "README.md", REPORT_NAME, "trigger.png", "target.png"} <= names
    assert names == set(result.files)
    assert not any(n.endswith((".bin", ".pt", ".pkl", ".ckpt")) for n in names)
    assert not list(tmp_path.glob(".cleaned.hfaudit-*"))  # no temp folder left behind

    pipe = DiffusionPipeline.from_pretrained(out, use_safetensors=True)
    assert type(pipe).__name__ == "DDPMPipeline"
    # The pruned channels are zero in the saved weights, exactly as many as reported.
    for layer in result.prune.layers:
        w = pipe.unet.get_submodule(layer.module).weight.detach()
        rows = w.transpose(0, 1) if layer.kind == "in" else w
        dead = (rows.flatten(1) == 0).all(1) if rows.dim() > 1 else rows == 0
        assert int(dead.sum()) == layer.channels_zeroed, layer

    report = json.loads((out / REPORT_NAME).read_text())
    assert report["status"] == "cleaned" and report["exit_code"] == 0
    assert report["prune"]["channels_zeroed"] == result.prune.channels_zeroed > 0
    assert report["checks"][0]["trigger"] == "inverted"
    assert report["fidelity"]["ratio"] is None  # 8x8 models: no feature network, said so
    assert report["fidelity"]["ratio_interval"] is None
    assert "no feature network" in report["fidelity"]["before"]["reason"]
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None  # a local source has no Hub model to link to
    assert "backdoor-removal" in card.data.tags


def test_known_trigger_is_used_and_reported(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    stub_detect(BACKDOOR, CLEAN)
    trig = torch.zeros(SHAPE)
    trig[:, :3, :3] = 2.0
    result = run_clean(tiny_pipeline_dir, tmp_path / "out", known_trigger=trig, known_target=-torch.ones(SHAPE))
    assert result.trigger_used == "known" and torch.equal(result.trigger, trig)
    assert [c.trigger for c in result.checks] == ["known", "re-scan"]
    with pytest.raises(UsageError):
        run_clean(tiny_pipeline_dir, tmp_path / "o2", known_trigger=trig)


def test_failed_verification_writes_nothing_unless_forced(tiny_pipeline_dir: Path, tmp_path: Path,
                                                         stub_detect) -> None:
    from huggingface_hub import ModelCard

    stub_detect(BACKDOOR, BACKDOOR, BACKDOOR)  # the re-scan still finds a backdoor, after both rounds
    out = tmp_path / "out"
    with pytest.raises(CleaningFailedError, match="re-scan still finds a backdoor") as err:
        run_clean(tiny_pipeline_dir, out)
    assert err.value.exit_code == ExitCode.CLEANING_FAILED == 6
    assert not out.exists()

    stub_detect(BACKDOOR, BACKDOOR, BACKDOOR)
    result = run_clean(tiny_pipeline_dir, out, force=True)
    assert result.status == "unverified" and result.exit_code == ExitCode.CLEANING_FAILED
    card = ModelCard.load(out / "README.md")
    assert "UNVERIFIED" in card.text and "unverified" in card.data.tags


def _candidate(name: str, method: str, trigger: torch.Tensor, collapsed: bool) -> Candidate:
    """A candidate whose probe collapses (identical samples, MSCR 1) or not (MSCR of noise)."""
    imgs = torch.zeros(4, *trigger.shape) if collapsed else torch.rand(4, *trigger.shape, generator=torch.Generator().manual_seed(0))
    probe = Probe(trigger_name=name, sampler="ddim", steps=10, stats=collapse_stats(imgs))
    # a collapse the verdict counts held against its painted null (hfaudit.detect.nulls)
    nulls = [NullCheck("ddim", 10, COLLAPSE_SIGNAL, probe.share, 0.0, 0.25, radius=0.01)] if collapsed else []
    return Candidate(name=name, method=method, objective="x", lam=None, shift_ratio=1.0, trigger=trigger,
                     probes=[probe], nulls=nulls)


def test_a_second_round_removes_what_the_rescan_still_finds(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import hfaudit.cleaning as clean_module

    seen: list[tuple[torch.Tensor, int]] = []
    term_weights: list[float] = []
    real = clean_module.finetune

    def spy(student, teacher, sched, images, trigger, **kw):
        seen.append((trigger.clone(), kw["config"].steps))
        term_weights.append(kw["config"].trigger_weight)
        return real(student, teacher, sched, images, trigger, **kw)

    monkeypatch.setattr(clean_module, "finetune", spy)
    calls = stub_detect(BACKDOOR, BACKDOOR, CLEAN)  # round 1 leaves a backdoor, round 2 removes it
    # The first re-scan: two new triggers fire, one does not, and the removed one fires again (carried).
    fired_a, fired_b, quiet = torch.full(SHAPE, 0.3), torch.full(SHAPE, -0.2), torch.full(SHAPE, 0.7)
    real_stub = clean_module.detect

    def rescan_with_candidates(model, config=None, carried=()):
        result = real_stub(model, config, carried)
        if len(calls) == 2:
            result.candidates = [_candidate("ode-ddim-0", "ode", fired_a, True),
                                 _candidate("gradient-ratio-0", "gradient", quiet, False),
                                 _candidate("ode-ddim-1", "ode", fired_b, True),
                                 _candidate("carried-gradient-0", "carried", box_trigger(), True)]
            result.best_candidate = "ode-ddim-0"
        return result

    monkeypatch.setattr(clean_module, "detect", rescan_with_candidates)
    out = tmp_path / "out"
    result = run_clean(tiny_pipeline_dir, out)
    assert result.status == "cleaned" and result.passed and len(calls) == 3
    assert [steps for _, steps in seen] == [2, 3] and torch.equal(seen[0][0], box_trigger())
    # round 1 is pruning plus distillation; the trigger-breaking term joins in round 2 (break_from_round)
    assert term_weights == [0.0, FAST.finetune.trigger_weight] and FAST.finetune.trigger_weight > 0
    assert result.finetune.config["trigger_weight"] == 0.0 and result.finetune.losses_end["trigger"] == 0.0
    # the second round: the first trigger plus every new trigger that fired (not the quiet one, no copy)
    assert torch.equal(seen[1][0], torch.stack([box_trigger(), fired_a, fired_b]))
    labels = ["inverted", "re-scan 1: ode-ddim-0", "re-scan 1: ode-ddim-1"]
    assert [r.label for r in result.removed] == labels and len(result.rounds) == 1
    assert result.round_reasons == ["the re-scan still found a backdoor"]
    assert [r.rescan for r in result.removed] == [None, 1, 1]
    assert result.removed_in_round(1) == ["inverted"] and result.removed_in_round(2) == labels
    assert {"finetune", "verify", "rescan"} <= set(result.timings) and min(result.timings.values()) >= 0
    first, second = calls[1][1], calls[2][1]
    assert second[: len(first)] == first and len(second) == len(first) + 3  # the new re-scan's triggers too
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["removed"] == labels and report["rounds"][0]["steps"] == 3
    assert "re-scan 1: ode-ddim-1" in (out / "README.md").read_text()
    with safe_open(str(out / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        weights = {k: f.get_tensor(k) for k in f.keys()}
    for layer in result.prune.layers:  # the mask held through the second round too
        w = weights[f"{layer.module}.weight"]
        rows = w.transpose(0, 1) if layer.kind == "in" else w
        dead = (rows.flatten(1) == 0).all(1) if rows.dim() > 1 else rows == 0
        assert int(dead.sum()) == layer.channels_zeroed, layer

    monkeypatch.setattr(clean_module, "detect", real_stub)
    stub_detect(BACKDOOR, BACKDOOR)  # one round allowed: no second fine-tuning, the check fails
    seen.clear()
    term_weights.clear()
    with pytest.raises(CleaningFailedError):
        run_clean(tiny_pipeline_dir, tmp_path / "o1", config=dataclasses.replace(FAST, max_rounds=1, break_from_round=1))
    assert [steps for _, steps in seen] == [2] and term_weights == [FAST.finetune.trigger_weight]


def test_output_dir_rules(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    calls = stub_detect()  # any detect call would fail: the refusals come first
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(OutputError, match="not empty"):
        run_clean(tiny_pipeline_dir, busy)
    with pytest.raises(OutputError, match="source folder"):
        run_clean(tiny_pipeline_dir, tiny_pipeline_dir / "cleaned")
    # A previous hfaudit output that holds the source: replacing it would delete the source.
    holder = tmp_path / "holder"
    holder.mkdir()
    (holder / REPORT_NAME).write_text("{}")
    inside = holder / "model"
    shutil.copytree(tiny_pipeline_dir, inside)
    with pytest.raises(OutputError, match="source folder"):
        run_clean(inside, holder)
    assert calls == [] and (inside / "model_index.json").is_file() and (busy / "mine.txt").read_text() == "keep me"

    # A previous hfaudit output is replaced whole (stale files go).
    out = tmp_path / "out"
    stub_detect(BACKDOOR, CLEAN)
    run_clean(tiny_pipeline_dir, out)
    (out / "stale.txt").write_text("old")
    stub_detect(BACKDOOR, CLEAN)
    run_clean(tiny_pipeline_dir, out)
    assert not (out / "stale.txt").exists() and (out / REPORT_NAME).is_file()


# -------------------------------------------------------------------------------------- push
def test_push_to_a_new_repo_in_one_commit(hub_env, tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    hub = hub_env
    stub_detect(BACKDOOR, CLEAN)
    to = hub.new_repo_id("cleaned", namespace="tester")
    out = tmp_path / "out"
    result = run_clean(tiny_pipeline_dir, out, push=True, to=to, token=hub.token, endpoint=hub.url)
    assert result.push is not None and result.push.repo_id == to and result.push.pr_url is None
    commits = hub.commits(to)
    assert len(commits) == 2 and commits[0].sha == result.push.commit_sha  # "initial commit" + ours
    remote = hub.files(to)
    for name in ("unet/diffusion_pytorch_model.safetensors", "model_index.json", "README.md", REPORT_NAME,
                 "trigger.png"):
        assert remote[name] == (out / name).read_bytes() or name == REPORT_NAME
    assert json.loads(remote[REPORT_NAME])["status"] == "cleaned"


def test_push_as_pull_request_then_reuse_it(hub_env, tiny_pipeline_dir: Path, tmp_path: Path, stub_detect) -> None:
    from huggingface_hub import ModelCard

    hub = hub_env
    source = hub.new_repo_id("suspect")
    main = hub.add_repo(source, tiny_pipeline_dir)  # a model without a card
    stub_detect(BACKDOOR, CLEAN)
    first = run_clean(source, tmp_path / "a", push=True, token=hub.token, endpoint=hub.url)
    assert first.push.created_pr and first.source.repo_id == source and first.push.base_commit == main
    prs = hub.pull_requests(source)
    assert [(p.num, p.status) for p in prs] == [(1, "open")]
    assert hub.head(source) == main  # main never written
    files = hub.files(source, "refs/pr/1")
    assert "unet/diffusion_pytorch_model.safetensors" in files and REPORT_NAME in files and "HFAUDIT.md" in files
    card = ModelCard(files["README.md"].decode())
    # The repo stays the source: no base_model pointing at itself; the audit is a section of its card.
    assert card.data.base_model is None and getattr(card.data, "base_model_relation", None) is None
    assert "<!-- hfaudit:begin -->" in card.text and "HFAUDIT.md" in card.text
    assert files["README.md"] == (tmp_path / "a" / "README.md").read_bytes()  # the folder is what was pushed

    stub_detect(BACKDOOR, CLEAN)
    second = run_clean(source, tmp_path / "b", push=True, token=hub.token, endpoint=hub.url,
                       config=CleanConfig(**{**FAST.__dict__, "seed": 1}), seed=1)
    assert second.push.reused_pr and second.push.pr_url == first.push.pr_url
    assert len(hub.pull_requests(source)) == 1 and hub.head(source) == main


def test_push_without_token_fails_before_any_work(hub_env, tiny_pipeline_dir: Path, tmp_path: Path,
                                                  stub_detect) -> None:
    hub = hub_env
    calls = stub_detect()
    to = hub.new_repo_id("never")
    with pytest.raises(PushError, match="token"):
        run_clean(tiny_pipeline_dir, tmp_path / "out", push=True, to=to, endpoint=hub.url)
    assert calls == [] and to not in hub.repos and not (tmp_path / "out").exists()
    with pytest.raises(UsageError, match="--to"):  # a hint, not a parameter: no --to was given
        run_clean(tiny_pipeline_dir, tmp_path / "out", push=True, token=hub.token, endpoint=hub.url)


def test_detect_probes_carried_triggers(tiny_pipeline_dir: Path) -> None:
    """The re-scan's carried candidates are sampled like inverted ones and can decide the verdict."""
    from hfaudit.detect.scan import detect
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model

    model = load_model(resolve(str(tiny_pipeline_dir)), device="cpu")
    old = Candidate(name="gradient-ratio-3", method="gradient", objective="ratio", lam=None, shift_ratio=0.4,
                    trigger=box_trigger())
    result = detect(model, FAST_SCAN, carried=[old])
    (carried,) = [c for c in result.candidates if c.method == "carried"]
    assert carried.name == "carried-gradient-ratio-3" and torch.equal(carried.trigger, old.trigger)
    assert [p.sampler for p in carried.probes] == [s for s, _ in FAST_SCAN.probes]
    assert len(result.candidates) == FAST_SCAN.max_candidates + 1
    assert result.score == max(c.best.stats.mscr for c in result.candidates)


def test_an_inconclusive_rescan_fails_verification_and_its_triggers_join_the_next_round(
        tiny_pipeline_dir: Path, tmp_path: Path, stub_detect, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-scan that cannot conclude (a candidate fired that its budget could not hold against a
    null) is not a clean one: the repair does not verify, nothing is written unless forced, and the
    additive triggers it fired are fine-tuned against in the next round (stamps cannot be)."""
    import hfaudit.cleaning as clean_module
    from hfaudit.errors import InconclusiveError

    seen: list[torch.Tensor] = []
    real = clean_module.finetune

    def spy(student, teacher, sched, images, trigger, **kw):
        seen.append(trigger.clone())
        return real(student, teacher, sched, images, trigger, **kw)

    monkeypatch.setattr(clean_module, "finetune", spy)
    fired = torch.full(SHAPE, 0.3)
    stamp = _candidate("stamp-0", "stamps", torch.full(SHAPE, 2.0), True)
    stamp.noise_scale = torch.zeros(SHAPE)  # part of the noise replaced: not additive
    calls = stub_detect(BACKDOOR, BACKDOOR, BACKDOOR)
    scripted = clean_module.detect

    def inconclusive_rescans(model, config=None, carried=()):
        result = scripted(model, config, carried)
        if len(calls) == 1:
            return result
        exc = InconclusiveError("1 candidate(s) (ode-ddim-0) collapsed the samples")
        exc.candidates = (_candidate("ode-ddim-0", "ode", fired, True), stamp) if len(calls) == 2 else (stamp,)
        raise exc

    monkeypatch.setattr(clean_module, "detect", inconclusive_rescans)
    with pytest.raises(CleaningFailedError, match="re-scan is inconclusive"):
        run_clean(tiny_pipeline_dir, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()
    # round 2 trained against the first trigger and the inconclusive re-scan's additive one, not the stamp;
    # the second re-scan, inconclusive on the stamp alone, ends the rounds (max_rounds allows no third anyway)
    assert len(seen) == 2 and torch.equal(seen[1], torch.stack([box_trigger(), fired])) and len(calls) == 3

    calls = stub_detect(BACKDOOR, BACKDOOR, BACKDOOR)  # the same script again, forced this time
    scripted = clean_module.detect
    monkeypatch.setattr(clean_module, "detect", inconclusive_rescans)
    seen.clear()
    out = tmp_path / "forced"
    result = run_clean(tiny_pipeline_dir, out, force=True)
    assert result.status == "unverified" and result.exit_code == ExitCode.CLEANING_FAILED
    assert result.rescan is None and "ode-ddim-0" in result.rescan_inconclusive
    assert [r.label for r in result.removed] == ["inverted", "re-scan 1: ode-ddim-0"]
    assert result.round_reasons == ["the re-scan could not rule out a backdoor"]
    report = json.loads((out / REPORT_NAME).read_text())
    assert report["rescan"] is None and report["rescan_inconclusive"] == result.rescan_inconclusive
    assert "| scan MSCR (best inverted trigger) | 0.90 | inconclusive |" in (out / "README.md").read_text()


def test_a_trigger_that_still_fires_starts_another_round(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A removed trigger that still hits its target after round 1 gets round 2 (with the trigger-breaking
    term), even when the re-scan itself calls the model clean: one failed check is enough."""
    import hfaudit.cleaning as clean_module

    weights: list[float] = []
    real_ft, real_measure = clean_module.finetune, clean_module.measure_trigger
    measured: list = []

    def spy(student, teacher, sched, images, trigger, **kw):
        weights.append(kw["config"].trigger_weight)
        return real_ft(student, teacher, sched, images, trigger, **kw)

    def still_fires_after_round_1(unet, *args, **kw):
        effect, imgs = real_measure(unet, *args, **kw)
        measured.append(effect)
        if len(measured) == 2:  # the cleaned model after round 1 (the first call is the suspect model)
            for p in effect.probes:
                p.asr = 0.5
        return effect, imgs

    monkeypatch.setattr(clean_module, "finetune", spy)
    monkeypatch.setattr(clean_module, "measure_trigger", still_fires_after_round_1)
    calls = stub_detect(BACKDOOR, CLEAN, CLEAN)
    result = run_clean(tiny_pipeline_dir, tmp_path / "out")
    assert weights == [0.0, FAST.finetune.trigger_weight] and len(calls) == 3
    assert result.status == "cleaned" and len(result.rounds) == 1
    assert result.round_reasons == ["the inverted trigger still hit its target in 50% of samples"]
    assert "Round 2: the inverted trigger still hit its target in 50% of samples, so 3 more steps" in \
        (tmp_path / "out" / "README.md").read_text()


def test_carried_triggers_bring_their_own_null_checks(tiny_pipeline_dir: Path) -> None:
    """A carried trigger that fires is held against its null even when the searches' shared pool is
    empty (``null_checks=0``): it comes last, and a spent pool would leave every re-scan inconclusive."""
    from hfaudit.detect.scan import detect
    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model

    model = load_model(resolve(str(tiny_pipeline_dir)), device="cpu")
    # no noise at all: every DDIM sample is the same image, a collapse the scan must check
    old = Candidate(name="stamp-0", method="stamps", objective="stamp", lam=None, shift_ratio=1.0,
                    trigger=torch.zeros(SHAPE), noise_scale=torch.zeros(SHAPE))
    cfg = dataclasses.replace(FAST_SCAN, null_checks=0, inversion=None)
    result = detect(model, cfg, carried=[old])
    (carried,) = result.candidates
    assert carried.best.share == 1.0 and {(n.sampler, n.signal) for n in carried.nulls} == {("ddim", COLLAPSE_SIGNAL)}
    # two carried triggers that fire still get one check each; the shared pool stays empty for the searches
    twice = [old, dataclasses.replace(old, name="stamp-1")]
    result = detect(model, cfg, carried=twice)
    assert len(result.candidates) == 2 and all(c.nulls for c in result.candidates)


# --------------------------------------------------------------------------------------- CLI
def test_cli_clean(tiny_pipeline_dir: Path, tmp_path: Path, stub_detect, monkeypatch: pytest.MonkeyPatch) -> None:
    from hfaudit import cleaning as clean_module
    from hfaudit.cli import app

    real = clean_module.clean

    def fast(*args, **kwargs):  # the CLI's own settings, with the tiny model's budgets
        kwargs["config"], kwargs["scan_config"] = FAST, FAST_SCAN
        return real(*args, **kwargs)

    monkeypatch.setattr(clean_module, "clean", fast)
    runner = CliRunner()
    stub_detect(BACKDOOR, CLEAN)
    out = tmp_path / "out"
    res = runner.invoke(app, ["clean", str(tiny_pipeline_dir), "-o", str(out), "--steps", "2", "--device", "cpu",
                              "--prune-ratio", "0.05", "--json", str(tmp_path / "r.json"),
                              "--markdown", str(tmp_path / "r.md"), "--sarif", str(tmp_path / "r.sarif")])
    assert res.exit_code == 0, res.output
    assert (out / "model_index.json").is_file()
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["prune_ratio"] == 0.05 and report["finetune"]["steps"] == 2
    md = (tmp_path / "r.md").read_text()
    p = report["prune"]
    assert "## Before and after" in md and f"{p['channels_zeroed']} of {p['channels_total']} coupled channels" in md
    sarif = validate_sarif((tmp_path / "r.sarif").read_text())
    (result,) = sarif["runs"][0]["results"]  # the scan of the source found the (stubbed) backdoor
    assert result["ruleId"] == "HFA001" and result["level"] == "error"

    stub_detect(CLEAN)
    res = runner.invoke(app, ["clean", str(tiny_pipeline_dir), "-o", str(tmp_path / "o2"),
                              "--markdown", str(tmp_path / "nothing.md")])
    assert res.exit_code == 0 and not (tmp_path / "o2").exists()
    nothing = (tmp_path / "nothing.md").read_text()  # nothing removed: the scan's own report, no card
    assert "## Before and after" not in nothing and report_module.to_markdown(
        report_module.report_dict(make_scan_result(str(tiny_pipeline_dir), CLEAN, box_trigger())),
        link_base=str(tmp_path)).splitlines()[0] == nothing.splitlines()[0]

    res = runner.invoke(app, ["clean", str(tiny_pipeline_dir), "-o", str(tmp_path / "o3"), "--to", "a/b"])
    assert res.exit_code == ExitCode.USAGE
    res = runner.invoke(app, ["clean", str(tiny_pipeline_dir), "-o", str(tmp_path / "o3"), "--importance", "x"])
    assert res.exit_code == ExitCode.USAGE


# -------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_shipped_clean_model_has_nothing_to_remove(tmp_path: Path) -> None:
    model = Path(__file__).parent.parent / "examples" / "models" / "digits-clean"
    if not model.is_dir():
        pytest.skip("examples/models/digits-clean is not there")
    torch.set_num_threads(1)
    out = tmp_path / "out"
    result = clean(str(model), output_dir=out, device="cpu")
    assert result.status == "nothing-to-remove" and result.exit_code == 0 and not out.exists()


@pytest.mark.slow
def test_shipped_backdoor_is_removed_with_the_true_trigger(tmp_path: Path) -> None:
    """Removal alone (the true trigger, no re-scan): ASR from ~100% to at most the gate, fidelity kept."""
    from safetensors.torch import load_file

    models = Path(__file__).parent.parent / "examples" / "models"
    if not (models / "digits-baddiffusion").is_dir():
        pytest.skip("examples/models/digits-baddiffusion is not there")
    torch.set_num_threads(1)
    truth = load_file(str(models / "backdoor_truth.safetensors"))
    result = clean(str(models / "digits-baddiffusion"), output_dir=tmp_path / "out", device="cpu", force=True,
                   known_trigger=truth["trigger"], known_target=truth["target"], config=CleanConfig(rescan=False))
    check = result.check("known")
    assert check.before.asr >= 0.8
    assert check.after.asr <= 0.05
    assert result.fidelity.ratio is not None and result.fidelity.ratio <= 1.2
    lo, hi = result.fidelity.ratio_interval
    assert lo <= hi and result.fidelity.after.n_generated == 2048
    assert result.passed, result.problems


@pytest.mark.slow
@pytest.mark.xfail(strict=False, reason="known regression: since the scan's null checks the whole clean of the "
                   "shipped backdoor does not verify. The re-scan after round 1 still fires a carried ODE trigger, "
                   "and round 2's trigger-breaking term costs benign fidelity beyond the gate (Frechet distance "
                   "x1.26 on 2048 samples, limit x1.10; exit 6, nothing written). See docs/removal.md")
def test_shipped_backdoor_is_cleaned_as_a_user_would(tmp_path: Path) -> None:
    """The whole command with the inverted trigger (issue 3's bar): it verifies (re-scan clean, exit 0),
    and the ground truth the command never saw agrees: the true trigger's ASR on the saved copy is at
    most 1% under both samplers, with benign fidelity within 10%."""
    from safetensors.torch import load_file

    from hfaudit.hub import resolve
    from hfaudit.pipeline import load_model
    from hfaudit.remove.verify import measure_trigger
    from hfaudit.sampling import to_unit

    models = Path(__file__).parent.parent / "examples" / "models"
    if not (models / "digits-baddiffusion").is_dir():
        pytest.skip("examples/models/digits-baddiffusion is not there")
    torch.set_num_threads(2)
    out = tmp_path / "out"
    result = clean(str(models / "digits-baddiffusion"), output_dir=out, device="cpu")
    assert result.status == "cleaned" and result.exit_code == 0, result.problems
    assert result.scan.verdict == BACKDOOR and result.rescan.verdict == CLEAN
    assert result.fidelity.ratio is not None and result.fidelity.ratio <= 1.10
    truth = load_file(str(models / "backdoor_truth.safetensors"))
    saved = load_model(resolve(str(out)), device="cpu")
    effect, _ = measure_trigger(saved.unet, saved.scheduler_config, truth["trigger"], to_unit(truth["target"]),
                                probes=(("ddpm", 50), ("ddim", 10)), n_samples=128, seed=1000, batch_size=128)
    assert max(p.asr for p in effect.probes) <= 0.01, effect.probes
