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


# ------------------------------------------------------------------ conventions of the `hf` CLI
@pytest.mark.parametrize("argv", [["-h"], ["scan", "-h"], ["clean", "-h"], ["version", "-h"]], ids=" ".join)
def test_dash_h_is_help_everywhere(argv: list[str]) -> None:
    short, long = run(*argv), run(*argv[:-1], "--help")
    assert short.exit_code == 0 and "Usage:" in short.stdout, short.output
    assert short.stdout == long.stdout


def test_version_flag_and_command() -> None:
    from hfaudit import __version__

    for argv in (["--version"], ["version"], ["--version", "scan"]):  # eager: before any command runs
        res = run(*argv)
        assert (res.exit_code, res.stdout) == (0, __version__ + "\n"), (argv, res.output)


def _broken_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in the library (here: in the check of the outputs, before any work): an internal error."""
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("hfaudit.report.Outputs.check_writable", boom)


@pytest.mark.parametrize("env", ["HF_DEBUG", "HFAUDIT_DEBUG"])
def test_debug_shows_the_traceback_of_an_internal_error(tiny_pipeline_dir: Path, monkeypatch, env: str) -> None:
    _broken_scan(monkeypatch)
    monkeypatch.delenv("HF_DEBUG", raising=False)
    monkeypatch.delenv("HFAUDIT_DEBUG", raising=False)
    plain = run("scan", str(tiny_pipeline_dir))
    assert_one_line_error(plain, ExitCode.INTERNAL, "internal error: RuntimeError: boom second line")
    assert "HF_DEBUG=1" in plain.output
    monkeypatch.setenv(env, "1")
    debug = runner.invoke(app, ["scan", str(tiny_pipeline_dir)])
    assert debug.exit_code == ExitCode.INTERNAL, debug.output
    assert "Traceback (most recent call last)" in debug.stderr and "RuntimeError: boom" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("hfaudit: error: internal error: RuntimeError")
    monkeypatch.setenv(env, "0")  # off means off
    assert "Traceback" not in run("scan", str(tiny_pipeline_dir)).output


def test_debug_turns_the_library_logs_back_on(monkeypatch) -> None:
    import logging

    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import logging as hf_logging

    from hfaudit import cli

    before = hf_logging.get_verbosity(), diffusers_logging.get_verbosity()
    try:
        monkeypatch.delenv("HFAUDIT_DEBUG", raising=False)
        monkeypatch.delenv("HF_DEBUG", raising=False)
        cli._quiet_library_logs()
        assert (hf_logging.get_verbosity(), diffusers_logging.get_verbosity()) == (logging.ERROR, logging.ERROR)
        monkeypatch.setenv("HF_DEBUG", "1")
        cli._quiet_library_logs()
        assert (hf_logging.get_verbosity(), diffusers_logging.get_verbosity()) == (logging.INFO, logging.INFO)
    finally:
        hf_logging.set_verbosity(before[0])
        diffusers_logging.set_verbosity(before[1])
