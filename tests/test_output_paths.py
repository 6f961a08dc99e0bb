"""Outputs never land in the audited model or on special files (hfaudit.outpaths), for scan and clean.

Refusals are one line on stderr, exit 2, and come before any work: ``hub.resolve`` and the model
loader are replaced by functions that fail the test if called. "The model is unchanged" means every
file of the model folder has the same bytes before and after.
"""

from __future__ import annotations

import json
import math
import os
import socket
import stat
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hfaudit import outpaths, report
from hfaudit.cli import app
from hfaudit.errors import ExitCode, OutputError
from hfaudit.report import Outputs, to_json, to_sarif
from helpers import UNET_ST, assert_one_line_error, tree

FAST = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2",
        "--no-blackbox", "--no-midstep", "--no-ode", "--no-stamps", "-q"]
runner = CliRunner()

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any Hub call or model load fails the test: a refusal must come before them."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the source was resolved or loaded before the output paths were checked")

    # Module attributes that callers look up at call time (hub.resolve), never names bound by an import.
    monkeypatch.setattr("hfaudit.hub.resolve", forbidden)
    monkeypatch.setattr("hfaudit.cleaning.load_model", forbidden)


def strict_json(text: str):
    """``json.loads`` that refuses the NaN/Infinity tokens Python writes by default."""
    def refuse(token: str):
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------------- into the model
@pytest.mark.parametrize("flag, where", [
    ("-o", ""),
    ("-o", "sub"),
    ("--json", "model_index.json"),
    ("--sarif", UNET_ST),
    ("--markdown", "new.md"),
])
@pytest.mark.parametrize("command", ["scan", "clean"])
def test_an_output_in_the_model_is_refused_before_any_work(tiny_pipeline_dir: Path, tmp_path: Path, no_work,
                                                           command: str, flag: str, where: str) -> None:
    model = tiny_pipeline_dir
    target = model / where if where else model
    args = [command, str(model), flag, str(target)]
    if command == "clean" and flag != "-o":
        args += ["-o", str(tmp_path / "cleaned")]
    before = tree(model)
    err = assert_one_line_error(runner.invoke(app, args), ExitCode.USAGE, str(target), "the source folder")
    assert "never writes into the model it audits" in err
    assert tree(model) == before
    assert not (tmp_path / "cleaned").exists()


def test_a_way_into_the_model_through_a_symlink_is_refused(tiny_pipeline_dir: Path, tmp_path: Path, no_work) -> None:
    model = tiny_pipeline_dir
    (tmp_path / "via").symlink_to(model / "unet", target_is_directory=True)  # a parent folder that leads in
    (tmp_path / "index.json").symlink_to(model / "model_index.json")  # a link onto a model file
    (tmp_path / "new.json").symlink_to(model / "new.json")  # a dangling link that would create a file in it
    (tmp_path / "audit").symlink_to(model, target_is_directory=True)  # an output folder that is the model
    before = tree(model)
    for flags in (["--json", str(tmp_path / "via" / "r.json")], ["--json", str(tmp_path / "index.json")],
                  ["--sarif", str(tmp_path / "new.json")], ["-o", str(tmp_path / "audit")],
                  ["-o", str(tmp_path / "via" / "audit")]):
        assert_one_line_error(runner.invoke(app, ["scan", str(model), *flags]), ExitCode.USAGE, "the source folder")
    assert tree(model) == before
    assert (tmp_path / "index.json").is_symlink() and (tmp_path / "new.json").is_symlink()


def test_the_hub_cache_of_a_repo_is_refused_without_a_hub_call(tmp_path: Path, no_work) -> None:
    """A repo id's cache folder is named from HF_HUB_CACHE (set per test by conftest), as read now."""
    cache = Path(os.environ["HF_HUB_CACHE"]) / "models--org--model"
    snapshot = cache / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "model_index.json").write_text("{}")
    for args in (["scan", "org/model", "-o", str(cache)],
                 ["scan", "org/model", "--json", str(snapshot / "model_index.json")],
                 ["scan", "org/model", "-o", str(snapshot / "audit")],
                 ["clean", "org/model", "-o", str(cache / "cleaned")],
                 ["clean", "org/model", "-o", str(cache.parent)],  # clean replaces its folder: holding the cache is out
                 ["clean", "org/model", "-o", str(tmp_path / "c"), "--sarif", str(snapshot / "r.sarif")]):
        assert_one_line_error(runner.invoke(app, args), ExitCode.USAGE, "the Hugging Face cache of org/model")
    assert (snapshot / "model_index.json").read_text() == "{}" and sorted(p.name for p in snapshot.iterdir()) == [
        "model_index.json"]


def test_the_library_refuses_too(tiny_pipeline_dir: Path, tmp_path: Path, no_work) -> None:
    """Outputs re-checks at stage time (no check_writable called) and clean.clean checks its report paths."""
    from hfaudit.cleaning import clean

    from test_report import make_result

    model = tiny_pipeline_dir
    before = tree(model)
    result = make_result()
    result.source.source = str(model)
    with pytest.raises(OutputError, match="the source folder"):
        Outputs(json_path=str(model / "model_index.json")).write_scan(result)
    with pytest.raises(OutputError, match="the source folder"):
        report.write_reports(result, output_dir=model / "audit")
    with pytest.raises(OutputError, match="the source folder"):
        Outputs(markdown_path=str(model / "r.md"), source=str(model)).check_writable()
    with pytest.raises(OutputError, match="the source folder"):
        clean(str(model), output_dir=tmp_path / "cleaned", report_paths=[model / "r.json"])
    assert tree(model) == before
    assert not list(tmp_path.glob("*.hfaudit-tmp")) and not (tmp_path / "cleaned").exists()


# -------------------------------------------------------------------------- special files
def test_two_formats_on_stdout_are_refused(tiny_pipeline_dir: Path, no_work) -> None:
    for flags, names in ((["--json", "-", "--markdown", "-"], ("--json", "--markdown")),
                         (["--json", "/dev/stdout", "--sarif", "-"], ("--json", "--sarif")),
                         (["--markdown", "/dev/fd/1", "--sarif", "/proc/self/fd/1"], ("--markdown", "--sarif"))):
        err = assert_one_line_error(runner.invoke(app, ["scan", str(tiny_pipeline_dir), *flags]), ExitCode.USAGE,
                                    "standard output")
        assert all(name in err for name in names), err


@pytest.mark.parametrize("kind", ["fifo", "socket"])
def test_a_fifo_or_socket_is_refused_and_never_opened(tiny_pipeline_dir: Path, tmp_path: Path, no_work,
                                                      kind: str) -> None:
    """Opening a FIFO for writing blocks until a reader comes: the refusal must not open it (thread timeout)."""
    path = tmp_path / kind
    sock = None
    if kind == "fifo":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
    done: list = []
    worker = threading.Thread(target=lambda: done.append(runner.invoke(app, ["scan", str(tiny_pipeline_dir),
                                                                             "--json", str(path)])), daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive() and kind == "fifo":  # a regression that opened it: let it go, then fail
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
    if sock is not None:
        sock.close()
    assert done, f"hfaudit blocked on the {kind}"
    assert_one_line_error(done[0], ExitCode.USAGE, str(path), "hfaudit writes reports to regular files or '-'")
    mode = path.lstat().st_mode
    assert stat.S_ISFIFO(mode) if kind == "fifo" else stat.S_ISSOCK(mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([kind, "tiny-ddpm"])


def test_a_device_other_than_dev_null_is_refused(tiny_pipeline_dir: Path, no_work) -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    assert_one_line_error(runner.invoke(app, ["scan", str(tiny_pipeline_dir), "--sarif", "/dev/zero"]),
                          ExitCode.USAGE, "character device")
    assert stat.S_ISCHR(os.stat("/dev/zero").st_mode)


# -------------------------------------------------------------------------- real scans
def test_symlinks_are_written_in_place_and_dev_null_stays_a_device(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """A real scan: --json through a symlink replaces the link's target (the link stays), /dev/null takes
    the SARIF and stays a device, and an output folder that holds the model is fine for scan."""
    model = tiny_pipeline_dir
    real = tmp_path / "reports" / "r.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "r.json"
    link.symlink_to(real)
    before = tree(model)
    res = runner.invoke(app, ["scan", str(model), *FAST, "--json", str(link), "--sarif", os.devnull,
                              "-o", str(tmp_path)])
    assert res.exit_code in (0, 1), res.output
    assert link.is_symlink() and os.readlink(link) == str(real)
    doc = strict_json(real.read_text())
    assert doc["exit_code"] == res.exit_code
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)
    assert strict_json((tmp_path / "report.json").read_text())["exit_code"] == res.exit_code
    assert tree(model) == before
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".hfaudit-tmp")]


def test_dev_stdout_means_stdout(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    was_link = os.path.islink("/dev/stdout")
    res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *FAST, "--json", "/dev/stdout"])
    assert res.exit_code in (0, 1), res.output
    assert strict_json(res.stdout)["exit_code"] == res.exit_code
    assert os.path.islink("/dev/stdout") == was_link  # the link was not replaced by a regular file
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".stdout.")]


# ---------------------------------------------------------------------------- JSON text
def test_reports_are_strict_json() -> None:
    doc = {"verdict": "clean", "score": float("nan"), "nested": [{"x": float("inf")}, (float("-inf"), 1.5)]}
    parsed = strict_json(to_json(doc))
    assert parsed == {"verdict": "clean", "score": None, "nested": [{"x": None}, [None, 1.5]]}
    from test_report import make_result

    result = make_result()
    result.score = math.nan
    sarif = strict_json(to_sarif(report.report_dict(result)))
    assert sarif["runs"][0]["properties"]["score"] is None


def test_stdout_aliases() -> None:
    for alias in ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1", "/dev//stdout"):
        assert outpaths.normalize(alias) == "-", alias
    assert outpaths.normalize("report.json") == "report.json" and outpaths.normalize(None) is None
    assert not outpaths.is_stdout(os.devnull)
