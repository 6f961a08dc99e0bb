"""Bad input: one line on stderr, the documented exit code, no traceback, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hfaudit.cli import app
from hfaudit.errors import ExitCode
from helpers import FAST_SCAN_FLAGS, searches_off

runner = CliRunner()


def run(*args: str):
    result = runner.invoke(app, list(args))
    return result


def assert_one_line_error(result, code: int, needle: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.output)
    out = result.output.strip()
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    assert needle.lower() in out.lower(), out


def test_missing_folder(tmp_path: Path) -> None:
    assert_one_line_error(run("scan", str(tmp_path / "nope")), ExitCode.NOT_FOUND, "no such folder")


def test_folder_that_is_not_a_pipeline(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("hello")
    assert_one_line_error(run("scan", str(tmp_path)), ExitCode.UNSUPPORTED, "not a diffusers pipeline")


def test_unsupported_pipeline_type(tiny_pipeline_dir: Path) -> None:
    index = tiny_pipeline_dir / "model_index.json"
    data = json.loads(index.read_text())
    data["_class_name"] = "StableDiffusionPipeline"
    index.write_text(json.dumps(data))
    assert_one_line_error(run("scan", str(tiny_pipeline_dir)), ExitCode.UNSUPPORTED, "StableDiffusionPipeline")


def test_pickle_only_checkpoint_is_refused(tiny_pipeline_dir: Path) -> None:
    st = tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"
    from safetensors.torch import load_file

    torch.save(load_file(str(st)), tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.bin")
    st.unlink()
    assert_one_line_error(run("scan", str(tiny_pipeline_dir)), ExitCode.UNSAFE, "pickle-only")


def test_truncated_safetensors(tiny_pipeline_dir: Path) -> None:
    st = tiny_pipeline_dir / "unet" / "diffusion_pytorch_model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    assert_one_line_error(run("scan", str(tiny_pipeline_dir)), ExitCode.UNSAFE, "safetensors")


def test_bad_scheduler_config(tiny_pipeline_dir: Path) -> None:
    (tiny_pipeline_dir / "scheduler" / "scheduler_config.json").write_text("{not json")
    assert_one_line_error(run("scan", str(tiny_pipeline_dir)), ExitCode.UNSUPPORTED, "scheduler")


@pytest.mark.parametrize("flags, needle", [
    (["--samples", "1"], "--samples"),
    (["--threshold", "1.5"], "--threshold"),
    (["--sampler", "ddim:-3"], "steps must be between 1 and"),
    (["--sampler", "warp:10"], "unknown sampler"),
    (["--inversion-steps", "0"], "--inversion-steps"),
])
def test_bad_flag_values(tiny_pipeline_dir: Path, flags: list[str], needle: str) -> None:
    assert_one_line_error(run("scan", str(tiny_pipeline_dir), *flags), ExitCode.USAGE, needle)


def test_unwritable_output_is_refused_before_the_scan(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    assert_one_line_error(run("scan", str(tiny_pipeline_dir), "--output-dir", str(afile)), ExitCode.USAGE, "not a folder")
    assert afile.read_text() == "keep me"
    assert_one_line_error(run("scan", str(tiny_pipeline_dir), "--json", str(tmp_path / "missing" / "r.json")),
                          ExitCode.USAGE, "does not exist")


def test_scan_writes_nothing_into_the_source(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    before = sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*"))
    result = run("scan", str(tiny_pipeline_dir), *FAST_SCAN_FLAGS, *searches_off(),
                 "--json", str(tmp_path / "r.json"), "-q")
    assert result.exit_code in (0, 1), result.output
    assert json.loads((tmp_path / "r.json").read_text())["exit_code"] == result.exit_code
    assert sorted(p.relative_to(tiny_pipeline_dir) for p in tiny_pipeline_dir.rglob("*")) == before


@pytest.mark.parametrize("argv, needle", [
    (["scan", "--samples", "many", "x"], "--samples"),
    (["scan"], "Missing argument"),
    (["frobnicate"], "No such command"),
])
def test_unparseable_flags_are_one_line_through_the_console_script(argv: list[str], needle: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "from hfaudit.cli import main; main()", *argv],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == ExitCode.USAGE
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], proc.stderr
