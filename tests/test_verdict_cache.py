"""The verdict cache: a second scan of the same bytes with the same settings is served from it; any
change misses; an entry that is damaged, forged for another key or from another version is ignored."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from hfaudit import verdict_cache
from hfaudit.action import run_scan_cli
from hfaudit.detect.scan import ScanConfig
from hfaudit.errors import ExitCode
from hfaudit.hub import resolve
from hfaudit.verdict_cache import CACHED_VERDICTS, VerdictCache, cache_key
from helpers import FAST_SCAN_FLAGS, UNET_ST, searches_off

pytestmark = pytest.mark.usefixtures("one_thread")

FLAGS = [*FAST_SCAN_FLAGS, *searches_off(), "--device", "cpu"]


class ScanCounter:
    """Wraps ``scan_resolved`` in the cache module: how many scans really ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = verdict_cache.scan_resolved

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(verdict_cache, "scan_resolved", counted)


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> ScanCounter:
    return ScanCounter(monkeypatch)


def scan(model: Path, cache: Path, out: Path, *extra: str) -> int:
    return run_scan_cli(["scan", str(model), *FLAGS, "--verdict-cache", str(cache), "-o", str(out), *extra])


def entries(cache: Path) -> list[Path]:
    return sorted(cache.glob("*.json"))


@pytest.fixture
def cached(tiny_pipeline_dir: Path, tmp_path: Path, scans: ScanCounter) -> tuple[Path, Path, int, dict]:
    """One scan stored in a fresh cache: (model, cache folder, exit code, its report)."""
    cache = tmp_path / "verdicts"
    code = scan(tiny_pipeline_dir, cache, tmp_path / "first")
    doc = json.loads((tmp_path / "first" / "report.json").read_text())
    assert doc["verdict"] in CACHED_VERDICTS, "the tiny pipeline's fast scan must reach a verdict to be cached"
    assert code == doc["exit_code"] and scans.calls == 1 and len(entries(cache)) == 1
    return tiny_pipeline_dir, cache, code, doc


def test_a_second_scan_is_served_from_the_cache(cached, tmp_path: Path, scans: ScanCounter, capsys) -> None:
    model, cache, code, first = cached
    capsys.readouterr()
    out = tmp_path / "second"
    assert scan(model, cache, out, "--sarif", str(tmp_path / "second.sarif")) == code
    assert scans.calls == 1  # no second scan
    err = capsys.readouterr().err
    assert "served from the verdict cache" in err and "stored 20" in err
    doc = json.loads((out / "report.json").read_text())
    for field in ("verdict", "exit_code", "score", "candidates", "findings", "settings", "created_at"):
        assert doc[field] == first[field], field
    assert doc["source"]["source"] == str(model)
    # the pictures, renamed into this run's output folder, and every report format
    assert set(doc["artifacts"]) == set(first["artifacts"])
    for name, path in doc["artifacts"].items():
        assert Path(path).parent == out, name
        if not name.startswith("report_"):  # report_json, report_md: this run's reports
            assert Path(path).read_bytes() == Path(first["artifacts"][name]).read_bytes(), name
    assert (out / "report.md").is_file() and (tmp_path / "second.sarif").is_file()


def test_a_changed_setting_or_changed_weights_miss(cached, tmp_path: Path, scans: ScanCounter) -> None:
    model, cache, _code, _doc = cached
    scan(model, cache, tmp_path / "seed1", "--seed", "1")
    assert scans.calls == 2 and len(entries(cache)) == 2
    scan(model, cache, tmp_path / "batch", "--batch-size", "2")
    assert scans.calls == 3
    weights = load_file(str(model / UNET_ST))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(model / UNET_ST))
    scan(model, cache, tmp_path / "new-weights")
    assert scans.calls == 4


@pytest.mark.parametrize("damage", ["garbage", "truncated", "verdict flipped", "other key", "other version",
                                    "picture swapped"])
def test_a_damaged_or_forged_entry_is_ignored(cached, tmp_path: Path, scans: ScanCounter, capsys,
                                              damage: str) -> None:
    model, cache, code, _doc = cached
    (entry,) = entries(cache)
    raw = entry.read_bytes()
    data = json.loads(raw)
    if damage == "garbage":
        entry.write_bytes(b"\x00not json")
    elif damage == "truncated":
        entry.write_bytes(raw[: len(raw) // 2])
    elif damage == "verdict flipped":  # the checksum no longer matches
        data["report"]["verdict"], data["report"]["exit_code"] = ("clean", 0) if code else ("backdoor", 1)
        entry.write_text(json.dumps(data))
    elif damage == "other key":  # a valid entry of another scan, copied under this name
        data["key"] = "0" * 64
        entry.write_text(json.dumps(data))
    elif damage == "other version":
        data["hfaudit_version"] = "0.0.0-other"
        entry.write_text(json.dumps(data))
    else:
        data["pictures"]["trigger"] = "bm90IGEgcG5n"  # "not a png"
        entry.write_text(json.dumps(data))
    capsys.readouterr()
    assert scan(model, cache, tmp_path / "again") == code
    assert scans.calls == 2  # scanned again
    assert f"verdict cache: ignored entry {entry.name}" in capsys.readouterr().err
    # and the fresh verdict replaced the bad entry
    assert json.loads(entry.read_text())["key"] == entry.stem


def test_only_finished_verdicts_are_stored(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    cache = VerdictCache(tmp_path / "verdicts")
    resolved = resolve(str(tiny_pipeline_dir))
    key = cache_key(resolved, ScanConfig(), device_type="cpu", allow_pickle=False)
    for verdict, code in (("collapsed", 0), ("inconclusive", 7), ("backdoor", 0)):
        with pytest.raises(ValueError, match="only finished"):
            cache.store(key, {"verdict": verdict, "exit_code": code, "error": None, "source": {}}, {})
    assert not cache.folder.exists()


def test_an_audit_that_stops_on_an_error_is_not_stored(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    (tiny_pipeline_dir / "scheduler" / "scheduler_config.json").write_text("{not json")
    cache = tmp_path / "verdicts"
    assert scan(tiny_pipeline_dir, cache, tmp_path / "out") == ExitCode.UNSUPPORTED
    assert entries(cache) == []


def test_the_cache_may_not_lie_in_the_audited_model(tiny_pipeline_dir: Path, tmp_path: Path, capsys) -> None:
    before = sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*"))
    assert scan(tiny_pipeline_dir, tiny_pipeline_dir / "verdicts", tmp_path / "out") == ExitCode.USAGE
    assert "--verdict-cache" in capsys.readouterr().err
    assert sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*")) == before


def test_the_env_variable_names_the_cache(cached, tmp_path: Path, scans: ScanCounter, monkeypatch) -> None:
    model, cache, code, _doc = cached
    monkeypatch.setenv("HFAUDIT_VERDICT_CACHE", str(cache))
    assert run_scan_cli(["scan", str(model), *FLAGS, "-o", str(tmp_path / "env")]) == code
    assert scans.calls == 1


def test_a_hub_repo_is_keyed_by_its_commit(hub_env, tiny_pipeline_dir: Path, tmp_path: Path, scans: ScanCounter,
                                           capsys) -> None:
    repo = hub_env.new_repo_id("tiny")
    first_sha = hub_env.add_repo(repo, tiny_pipeline_dir)
    cache = tmp_path / "verdicts"
    code = scan(repo, cache, tmp_path / "a")
    assert scan(repo, cache, tmp_path / "b", "--revision", first_sha) == code  # main, then its sha: one commit
    assert scans.calls == 1
    doc = json.loads((tmp_path / "b" / "report.json").read_text())
    assert (doc["source"]["repo_id"], doc["source"]["revision"], doc["source"]["commit_sha"]) == (repo, first_sha, first_sha)
    hub_env.commit(repo, {"README.md": "# the card moved on\n"}, "a new commit on main")
    scan(repo, cache, tmp_path / "c")
    assert scans.calls == 2  # a new commit is new bytes, as far as a key can tell


# ---------------------------------------------------------------------------------------- keys
def _key(folder: Path, config: ScanConfig | None = None, **kw) -> str | None:
    args = {"device_type": "cpu", "allow_pickle": False, **kw}
    key = cache_key(resolve(str(folder)), config, **args)
    return None if key is None else key.digest


def test_the_key_covers_model_files_settings_and_device(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    base = _key(tiny_pipeline_dir)
    assert base is not None and base == _key(tiny_pipeline_dir)
    moved = tmp_path / "elsewhere"
    os.rename(tiny_pipeline_dir, moved)
    assert _key(moved) == base  # the bytes, not the path
    (moved / "README.md").write_text("# a model card\n")
    assert _key(moved) == base  # a file the audit does not read
    assert _key(moved, ScanConfig(seed=1)) != base
    assert _key(moved, ScanConfig(batch_size=8)) != base
    assert _key(moved, ScanConfig(n_samples=16)) != base
    assert _key(moved, device_type="cuda") != base
    assert _key(moved, allow_pickle=True) != base
    cfg = json.loads((moved / "unet" / "config.json").read_text())
    (moved / "unet" / "config.json").write_text(json.dumps(cfg, indent=1))
    assert _key(moved) != base  # any byte of a config
    torch.save({}, moved / "unet" / "extra.bin")
    assert _key(moved) not in (None, base)  # a pickle file the static checks see


def test_a_model_file_that_is_no_regular_file_gets_no_key(tiny_pipeline_dir: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tiny_pipeline_dir / "unet" / "extra.safetensors")
    assert _key(tiny_pipeline_dir) is None
