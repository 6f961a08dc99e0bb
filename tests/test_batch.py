"""Several models in one run (``hfaudit scan A B ...``, ``--from FILE``): one report folder per model,
one summary, the worst exit code; a second run served from the verdict cache; the shards of
``accelerate launch``, checked with a fake two-process state."""

from __future__ import annotations

import io
import json
import re
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from accelerate import PartialState
from typer.testing import CliRunner

from hfaudit import batch, verdict_cache
from hfaudit.action import run_scan_cli
from hfaudit.cli import app
from hfaudit.errors import SEVERITY, ExitCode, UsageError, worst_exit_code
from helpers import FAST_SCAN_FLAGS, assert_one_line_error, searches_off

FLAGS = [*FAST_SCAN_FLAGS, *searches_off(), "--device", "cpu"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "models" / "digits-villandiffusion-8x8"
SAFE_NAME = re.compile(r"[A-Za-z0-9_@+=][A-Za-z0-9._@+=-]*")


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ---------------------------------------------------------------------------- the worst exit code
def test_every_exit_code_has_one_rank_and_threats_outrank_failures_to_audit() -> None:
    assert sorted(SEVERITY) == sorted(ExitCode) and len(set(SEVERITY)) == len(SEVERITY)
    assert worst_exit_code([]) == ExitCode.CLEAN
    assert worst_exit_code([0, 0]) == ExitCode.CLEAN
    assert worst_exit_code([0, 7]) == ExitCode.INCONCLUSIVE
    assert worst_exit_code([7, 4]) == ExitCode.UNSUPPORTED  # no audit at all outranks broken evidence
    assert worst_exit_code([3, 1, 70]) == ExitCode.BACKDOOR  # a threat is never hidden by a failure
    assert worst_exit_code([1, 5, 0]) == ExitCode.UNSAFE
    assert worst_exit_code([5, 130]) == ExitCode.INTERRUPTED
    assert worst_exit_code([0, 99]) == 99 and worst_exit_code([99, 1]) == 1  # unknown: ranked as internal


# ------------------------------------------------------------------------------ real scans (Hub)
class NoScanOf:
    """Installed in place of the detector: UNet work on one of ``repos`` fails the test."""

    def __init__(self, repos: set[str]) -> None:
        self.repos, self.real, self.ran = repos, verdict_cache.scan_resolved, []

    def __call__(self, resolved, *args, **kwargs):
        assert resolved.repo_id not in self.repos, "the detector ran although the verdict cache holds this model"
        self.ran.append(resolved.repo_id)
        return self.real(resolved, *args, **kwargs)


def test_hub_repos_a_missing_one_and_a_cached_second_run(hub_env, tiny_pipeline_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    tiny, example = hub_env.new_repo_id("tiny"), hub_env.new_repo_id("villan")
    hub_env.add_repo(tiny, tiny_pipeline_dir)
    hub_env.add_repo(example, EXAMPLE)
    missing = hub_env.new_repo_id("never-created")
    out, cache = tmp_path / "audits", tmp_path / "verdicts"
    argv = ["scan", tiny, missing, example, *FLAGS, "-o", str(out), "--verdict-cache", str(cache)]

    code = run_scan_cli(argv)

    doc = summary(out)
    rows = {m["source"]: m for m in doc["models"]}
    assert list(rows) == [tiny, missing, example]  # the order given; the batch went on after the missing one
    assert rows[missing]["exit_code"] == ExitCode.NOT_FOUND and rows[missing]["verdict"] == "not-found"
    assert rows[missing]["error"] and rows[missing]["score"] is None
    per_model = []
    for source in (tiny, missing, example):
        folder = out / source.replace("/", "--")
        assert Path(rows[source]["report_dir"]) == folder
        report = json.loads((folder / "report.json").read_text())  # an error report too
        assert report["exit_code"] == rows[source]["exit_code"]
        per_model.append(report["exit_code"])
    assert code == doc["exit_code"] == worst_exit_code(per_model)
    assert not any(m["from_cache"] for m in doc["models"])
    for source in (tiny, example):
        assert rows[source]["unet_evaluations"] > 0 and rows[source]["commit_sha"] == hub_env.head(source)
    assert (out / "summary.md").read_text().count("| no |") == 3

    # The second run: every model the cache holds is served from it, the detector never runs.
    cached = {s for s in (tiny, example) if rows[s]["verdict"] in verdict_cache.CACHED_VERDICTS}
    assert cached, "the fast scans must reach a verdict the cache stores"
    detector = NoScanOf(cached)
    monkeypatch.setattr(verdict_cache, "scan_resolved", detector)
    capsys.readouterr()
    again = run_scan_cli(argv)

    second = {m["source"]: m for m in summary(out)["models"]}
    assert again == code
    assert sorted(detector.ran) == sorted({tiny, example} - cached)  # what the cache does not store is scanned
    for source in (tiny, missing, example):
        assert second[source]["from_cache"] == (source in cached)
        assert second[source]["exit_code"] == rows[source]["exit_code"]
    err = capsys.readouterr().err
    assert "served from the verdict cache" in err and "from cache" in err  # the notes, and the table's column
    assert f"[1/3] {tiny}:" in err and "summary: " in err


# ------------------------------------------------------------------------------------ --from FILE
def test_from_file_skips_comments_blanks_and_duplicates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    listing = tmp_path / "models.txt"
    listing.write_text("# models to audit\n\norg/a\n  org/b   # the second\nhf://org/a\n"
                       "https://huggingface.co/org/a/tree/v1\n./empty\nempty/\n" + str(tmp_path / "empty") + "\n")
    got = batch.read_sources(listing)
    assert got == ["org/a", "org/b", "hf://org/a", "https://huggingface.co/org/a/tree/v1", "./empty", "empty/",
                   str(tmp_path / "empty")]
    kept, dropped = batch.unique_sources(got)
    assert kept == ["org/a", "org/b", "https://huggingface.co/org/a/tree/v1", "./empty"]
    assert dropped == ["hf://org/a", "empty/", str(tmp_path / "empty")]
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(listing.read_bytes())))
    assert batch.read_sources("-") == got


def test_from_file_through_the_cli(tmp_path: Path) -> None:
    """Folders that are no pipeline: fast, and each still gets its row and report folder."""
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two folders, one twice\n{tmp_path / 'a'}\n{tmp_path / 'b'}\n{tmp_path / 'a'}/\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["scan", "--from", str(listing), *FLAGS, "-o", str(out)])
    doc = summary(out)
    assert [m["source"] for m in doc["models"]] == [str(tmp_path / "a"), str(tmp_path / "b")]
    assert doc["duplicates"] == [f"{tmp_path / 'a'}/"]
    assert result.exit_code == doc["exit_code"] == worst_exit_code(m["exit_code"] for m in doc["models"]) != 0
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "summary.json", "summary.md"]


@pytest.mark.parametrize("content, needle", [(b"org/a\n\x00org/b\n", "control character"),
                                             (b"\xff\xfe\x00", "UTF-8")])
def test_a_bad_from_file_is_a_usage_error(tmp_path: Path, content: bytes, needle: str) -> None:
    listing = tmp_path / "list.txt"
    listing.write_bytes(content)
    with pytest.raises(UsageError, match=needle):
        batch.read_sources(listing)
    assert_one_line_error(CliRunner().invoke(app, ["scan", "--from", str(tmp_path / "nope.txt"), "-o",
                                                   str(tmp_path / "out")]), ExitCode.USAGE, "--from")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ flags and folders
@pytest.mark.parametrize("extra, needle", [([], "--output-dir"), (["-o", "OUT", "--json", "r.json"], "--json"),
                                           (["-o", "OUT", "--sarif", "-"], "--sarif")])
def test_several_models_need_an_output_folder_and_no_single_report_file(tmp_path: Path, extra: list[str],
                                                                       needle: str) -> None:
    extra = [str(tmp_path / "out") if a == "OUT" else a for a in extra]
    result = CliRunner().invoke(app, ["scan", "org/a", "org/b", *extra])
    assert_one_line_error(result, ExitCode.USAGE, needle)
    assert list(tmp_path.iterdir()) == []


def test_a_report_folder_may_not_be_an_audited_model(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """``-o`` holding the model: the model's own report folder would be the model itself."""
    before = sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*"))
    result = CliRunner().invoke(app, ["scan", str(tiny_pipeline_dir), "org/b", *FLAGS, "-o", str(tmp_path)])
    assert_one_line_error(result, ExitCode.USAGE, "report folder")
    assert sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-ddpm"]


def test_report_folder_names_are_safe_and_unique(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "model").mkdir()
    sources = ["org/a", "ORG/A", "hf://org/a@v1.0", "https://huggingface.co/org/a/tree/refs%2Fpr%2F1",
               str(tmp_path / "model"), str(tmp_path / "other" / "model"), "../..", ".hidden", "summary.json",
               "Summary.MD", "CON", "nul.txt", "a b/c;rm -rf ~", "x" * 500, "", "-", "org/a--b", "org--a-2"]
    names = batch.folder_names(sources)
    assert len(names) == len(sources)
    assert len({n.casefold() for n in names}) == len(names)  # unique, even on a case-insensitive disk
    for name in names:
        assert SAFE_NAME.fullmatch(name), name
        assert name.casefold() not in {"summary.json", "summary.md"}
        assert len(name) <= batch.MAX_NAME + 4
        assert name.split(".")[0].upper() not in {"CON", "NUL"}
    assert names[:4] == ["org--a", "ORG--A-2", "org--a@v1.0", "org--a@refs--pr--1"]
    assert names[4:6] == ["model", "model-2"]


# -------------------------------------------------------------------------------------- sharding
class FakeState:
    """Process ``index`` of ``total``, splitting with Accelerate's own code; waiting is a no-op here
    (the test runs the processes one after the other, the main one last)."""

    def __init__(self, index: int, total: int) -> None:
        self.process_index, self.num_processes, self.waited = index, total, 0

    @property
    def is_main_process(self) -> bool:
        return self.process_index == 0

    def split_between_processes(self, inputs: list[str], apply_padding: bool = False) -> AbstractContextManager:
        return PartialState.split_between_processes(self, inputs, apply_padding)

    def wait_for_everyone(self) -> None:
        self.waited += 1


def test_two_processes_take_disjoint_shards_and_the_main_one_summarises(tmp_path: Path) -> None:
    sources = [str(tmp_path / f"missing-{i}") for i in range(5)]  # not found at once: no scan runs
    out = tmp_path / "out"
    seen: dict[int, list[str]] = {0: [], 1: []}
    states = {1: FakeState(1, 2), 0: FakeState(0, 2)}
    results = {}
    for index in (1, 0):
        results[index] = batch.scan_many(sources, out, device="cpu", state=states[index],
                                         on_result=lambda row, i, n, index=index: seen[index].append(row.source))
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(sources)
    assert states[0].waited == states[1].waited == 1
    worker, main = results[1], results[0]
    assert not worker.is_main_process and worker.summary_files == [] and worker.process_exit_code == 0
    assert [m.source for m in worker.models] == seen[1]
    assert main.is_main_process and [m.source for m in main.models] == sources
    assert main.process_exit_code == main.exit_code == ExitCode.NOT_FOUND
    doc = summary(out)
    assert [m["source"] for m in doc["models"]] == sources and doc["processes"] == 2
    assert not list(out.glob(".hfaudit-shard-*"))  # handed over, then removed


def test_a_shard_that_never_came_back_is_an_internal_error_row(tmp_path: Path) -> None:
    sources = [str(tmp_path / f"missing-{i}") for i in range(3)]
    result = batch.scan_many(sources, tmp_path / "out", device="cpu", state=FakeState(0, 2))
    codes = {m.source: m.exit_code for m in result.models}
    assert sorted(set(codes.values())) == [ExitCode.NOT_FOUND, ExitCode.INTERNAL]
    assert result.exit_code == ExitCode.INTERNAL


def test_one_process_is_accelerates_plain_state() -> None:
    state = batch.process_state()
    assert (state.num_processes, state.process_index, state.is_main_process) == (1, 0, True)
    with state.split_between_processes(["a", "b"]) as mine:
        assert mine == ["a", "b"]


def test_a_launch_accelerate_does_not_see_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes that each believe they are alone would each audit every model into the same folders."""
    PartialState()  # this process's state exists (one process): nothing below initialises a process group
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UsageError, match="launched as 2 processes"):
        batch.process_state()
