"""The bad-input matrix (issue 5): each case gives one line on stderr, its documented exit code, no
traceback, and writes nothing to the source. Hub cases go through the real huggingface_hub client
against the local test Hub (``hub_env``).

Where each case of the matrix is tested:

| case                                   | test                                                        |
|----------------------------------------|-------------------------------------------------------------|
| missing repo                           | test_missing_repo                                           |
| private repo without a token           | test_private_repo_without_a_token                           |
| revision that does not exist           | test_missing_revision                                       |
| folder that is not a pipeline          | test_cli_errors.py::test_folder_that_is_not_a_pipeline, test_hub_repo_that_is_not_a_pipeline |
| unsupported pipeline class             | test_cli_errors.py::test_unsupported_pipeline_type, test_unsupported_unet_class |
| truncated safetensors                  | test_cli_errors.py::test_truncated_safetensors, test_safety.py |
| safetensors header lying about offsets | test_lying_safetensors_header                               |
| NaN weights                            | test_nan_weights                                            |
| pickle-only repo                       | test_pickle_only_hub_repo (+ test_cli_errors.py, local)     |
| malicious pickle                       | test_malicious_pickle_*                                     |
| wrong or missing scheduler config      | test_scheduler_config (+ test_cli_errors.py: invalid JSON)  |
| zero-size image config                 | test_zero_size_image_config                                 |
| bad flag values                        | test_bad_flag_values (+ test_cli_errors.py)                 |
| output dir not writable                | test_output_location_not_writable (+ test_cli_errors.py)    |
| interrupted push                       | test_interrupted_push_leaves_the_remote_unchanged (+ test_hub.py) |
| Ctrl-C during a scan                   | test_ctrl_c_*                                               |
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from hfaudit import hub as hfhub
from hfaudit import report
from hfaudit.cli import app, handle_errors
from hfaudit.errors import ExitCode
from helpers import UNET_BIN, UNET_ST, WriteMarker, assert_one_line_error, searches_off, tree

FAST = ["--samples", "4", "--sampler", "ddim:2", "--inversion-steps", "2", *searches_off()]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")


def scan(*args: str):
    return runner.invoke(app, ["scan", *args])


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# ------------------------------------------------------------------------------------ the Hub
def test_missing_repo(hub_env) -> None:
    res = scan("org/does-not-exist")
    assert_one_line_error(res, ExitCode.NOT_FOUND, "repo org/does-not-exist not found, or private: no token is set")


def test_private_repo_without_a_token(hub_env, tiny_pipeline_dir: Path, monkeypatch) -> None:
    repo = hub_env.new_repo_id("private")
    head = hub_env.add_repo(repo, tiny_pipeline_dir, private=True, token=hub_env.add_token("hf_owner_secret_1"))
    assert_one_line_error(scan(repo), ExitCode.NOT_FOUND, "no token is set (set HF_TOKEN")
    # With a valid token that cannot see it, the message says so instead.
    monkeypatch.setenv("HF_TOKEN", hub_env.add_token("hf_someone_else_2"))
    err = assert_one_line_error(scan(repo), ExitCode.NOT_FOUND, "your token has no access")
    assert "hf_someone_else_2" not in err
    assert hub_env.head(repo) == head


def test_missing_revision(hub_env, tiny_pipeline_dir: Path) -> None:
    repo = hub_env.new_repo_id("tiny")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    assert_one_line_error(scan(repo, "--revision", "no-such-branch"), ExitCode.NOT_FOUND,
                          f"revision no-such-branch not found in {repo}")


def test_hub_repo_that_is_not_a_pipeline(hub_env, tmp_path: Path) -> None:
    repo = hub_env.new_repo_id("text")
    hub_env.add_repo(repo, files={"README.md": "# hello", "config.json": "{}"})
    assert_one_line_error(scan(repo), ExitCode.UNSUPPORTED, "not a diffusers pipeline")


def test_pickle_only_hub_repo(hub_env, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Refused without --allow-pickle, and the pickle is not even downloaded; with it, scanned then loaded."""
    torch.save(load_file(str(tiny_pipeline_dir / UNET_ST)), tiny_pipeline_dir / UNET_BIN)
    (tiny_pipeline_dir / UNET_ST).unlink()
    repo = hub_env.new_repo_id("pickle-only")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    assert_one_line_error(scan(repo), ExitCode.UNSAFE, "pickle-only checkpoint")
    assert not list(Path(os.environ["HF_HUB_CACHE"]).rglob("*.bin"))

    res = scan(repo, "--allow-pickle", *FAST, "-q", "--json", str(tmp_path / "r.json"))
    doc = json.loads((tmp_path / "r.json").read_text())
    assert res.exit_code == doc["exit_code"] and res.exit_code in (0, 1), res.output
    assert doc["source"]["weights_file"] == UNET_BIN
    assert [(f["rule"], f["level"]) for f in doc["findings"]] == [("HFA210", "note")]


def test_malicious_pickle_only_hub_repo(hub_env, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"w": WriteMarker(marker)}, tiny_pipeline_dir / UNET_BIN)
    (tiny_pipeline_dir / UNET_ST).unlink()
    repo = hub_env.new_repo_id("evil")
    head = hub_env.add_repo(repo, tiny_pipeline_dir)
    assert_one_line_error(scan(repo), ExitCode.UNSAFE, "pickle-only")
    sarif = tmp_path / "r.sarif"
    assert_one_line_error(scan(repo, "--allow-pickle", "--sarif", str(sarif)), ExitCode.UNSAFE,
                          "pickle imports __builtin__.exec")
    results = json.loads(sarif.read_text())["runs"][0]["results"]
    assert [(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]) for r in results] == [
        ("HFA211", UNET_BIN)]
    assert not marker.exists()
    assert hub_env.head(repo) == head


# --------------------------------------------------------------------------------- local folders
def test_malicious_pickle_beside_safetensors(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """The safetensors would load fine, but the repo ships code-running pickle: unsafe, in both modes."""
    marker = tmp_path / "pwned"
    torch.save({"w": WriteMarker(marker)}, tiny_pipeline_dir / UNET_BIN)
    before = tree(tiny_pipeline_dir)
    for extra in ([], ["--allow-pickle"]):
        assert_one_line_error(scan(str(tiny_pipeline_dir), *extra), ExitCode.UNSAFE,
                              f"{UNET_BIN}: pickle imports __builtin__.exec")
    assert not marker.exists()
    assert tree(tiny_pipeline_dir) == before


def test_lying_safetensors_header(tiny_pipeline_dir: Path) -> None:
    import struct

    path = tiny_pipeline_dir / UNET_ST
    raw = path.read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    key = next(k for k in header if k != "__metadata__")
    begin, end = header[key]["data_offsets"]
    header[key]["data_offsets"] = [begin, end + 4096]  # claims bytes past its own tensor
    new = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + hlen:])
    before = tree(tiny_pipeline_dir)
    assert_one_line_error(scan(str(tiny_pipeline_dir)), ExitCode.UNSAFE, f"header lies about tensor {key!r}")
    assert tree(tiny_pipeline_dir) == before


def test_nan_weights(tiny_pipeline_dir: Path) -> None:
    path = tiny_pipeline_dir / UNET_ST
    tensors = load_file(str(path))
    key = sorted(tensors)[-1]
    tensors[key].view(-1)[-1] = float("nan")
    save_file(tensors, str(path))
    assert_one_line_error(scan(str(tiny_pipeline_dir)), ExitCode.UNSAFE, f"tensor {key!r} holds NaN or Inf")


@pytest.mark.parametrize("change, needle", [
    (lambda d: (d / "scheduler" / "scheduler_config.json").unlink(), "scheduler/scheduler_config.json not found"),
    (lambda d: edit_json(d / "scheduler" / "scheduler_config.json", prediction_type="v_prediction"), "epsilon only"),
    (lambda d: edit_json(d / "scheduler" / "scheduler_config.json", num_train_timesteps=0), "0 training timesteps"),
    (lambda d: edit_json(d / "scheduler" / "scheduler_config.json", beta_schedule="warp"), "scheduler config is unusable"),
    (lambda d: edit_json(d / "scheduler" / "scheduler_config.json", _class_name="EulerDiscreteScheduler"),
     "describes a EulerDiscreteScheduler but model_index.json says scheduler is a DDPMScheduler"),
])
def test_scheduler_config(tiny_pipeline_dir: Path, change, needle: str) -> None:
    change(tiny_pipeline_dir)
    before = tree(tiny_pipeline_dir)
    assert_one_line_error(scan(str(tiny_pipeline_dir)), ExitCode.UNSUPPORTED, needle)
    assert tree(tiny_pipeline_dir) == before


@pytest.mark.parametrize("size", [0, [8, 0], -8])
def test_zero_size_image_config(tiny_pipeline_dir: Path, size) -> None:
    edit_json(tiny_pipeline_dir / "unet" / "config.json", sample_size=size)
    assert_one_line_error(scan(str(tiny_pipeline_dir)), ExitCode.UNSUPPORTED, "invalid sample_size")


def test_unsupported_unet_class(tiny_pipeline_dir: Path) -> None:
    edit_json(tiny_pipeline_dir / "model_index.json", unet=["diffusers", "UNet2DConditionModel"])
    edit_json(tiny_pipeline_dir / "unet" / "config.json", _class_name="UNet2DConditionModel")
    assert_one_line_error(scan(str(tiny_pipeline_dir)), ExitCode.UNSUPPORTED, "not a UNet2DModel")


@pytest.mark.parametrize("flags, needle", [
    (["--samples", "-3"], "--samples must be between 2 and"),
    (["--batch-size", "0"], "--batch-size"),
    (["--threshold", "0"], "--threshold must be in (0, 1]"),
    (["--threshold", "-0.5"], "--threshold"),
    (["--inversion-steps", "-1"], "--inversion-steps"),
    (["--sampler", "ddim:abc"], "expected NAME or NAME:STEPS"),
    (["--sampler", "ddpm:0"], "steps must be between 1 and"),
    (["--device", "warp9"], "--device"),
])
def test_bad_flag_values(tiny_pipeline_dir: Path, tmp_path: Path, flags: list[str], needle: str) -> None:
    out = tmp_path / "out"
    before = tree(tiny_pipeline_dir)
    assert_one_line_error(scan(str(tiny_pipeline_dir), *flags, "-o", str(out)), ExitCode.USAGE, needle)
    assert tree(tiny_pipeline_dir) == before


def test_a_flag_that_does_not_parse_is_a_usage_error(tiny_pipeline_dir: Path) -> None:
    """Type errors are Typer's own usage message (a few lines, by design), exit 2 and no traceback."""
    res = scan(str(tiny_pipeline_dir), "--samples", "many")
    assert res.exit_code == ExitCode.USAGE and "Traceback" not in res.output
    assert "--samples" in res.stderr and res.stdout == ""


def test_output_location_not_writable(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Refused before the scan starts (no model is even loaded), for root too (/proc refuses everyone)."""
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux /proc")
    folder = tmp_path / "is-a-folder"
    folder.mkdir()
    cases = [
        (["--output-dir", "/proc/hfaudit-audit"], "--output-dir /proc/hfaudit-audit is not writable"),
        (["--sarif", "/proc/hfaudit.sarif"], "folder /proc is not writable"),
        (["--json", str(folder)], "it is a folder"),
    ]
    if os.geteuid() != 0:  # permission bits stop everyone but root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.append((["--markdown", str(locked / "r.md")], "is not writable"))
    before = tree(tiny_pipeline_dir)
    for flags, needle in cases:
        assert_one_line_error(scan(str(tiny_pipeline_dir), *flags), ExitCode.USAGE, needle)
    assert tree(tiny_pipeline_dir) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "tiny-ddpm") in (["is-a-folder"], ["is-a-folder", "locked"])


# ----------------------------------------------------------------------------------------- push
@pytest.mark.parametrize("kind, status", [("commit", "disconnect"), ("lfs_batch", 403), ("create_repo", 403)])
def test_interrupted_push_leaves_the_remote_unchanged(hub, tiny_pipeline_dir: Path, capsys, kind, status) -> None:
    """The push fails mid-way: remote unchanged, the local folder unchanged, one line, exit 3."""
    source = hub.new_repo_id("source")
    hub.add_repo(source, files={"model_index.json": "{}"})
    to = hub.new_repo_id("cleaned", namespace="tester")
    if kind != "create_repo":
        hub.add_repo(to, files={"old.txt": "x"}, token=hub.token)
    remote_before = {r: (hub.head(r), hub.files(r)) for r in (source, to) if r in hub.repos}
    local_before = tree(tiny_pipeline_dir)

    @handle_errors
    def push() -> None:
        hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=to, token=hub.token, endpoint=hub.url)

    hub.fail_next(kind, status)
    with pytest.raises(typer.Exit) as exc:
        push()
    assert exc.value.exit_code == ExitCode.NOT_FOUND
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("hfaudit: error:") and to in err, err
    assert {r: (hub.head(r), hub.files(r)) for r in remote_before} == remote_before
    assert hub.pull_requests(source) == []
    if kind == "create_repo":
        assert to not in hub.repos
    assert tree(tiny_pipeline_dir) == local_before


# ------------------------------------------------------------------------------------- Ctrl-C
def test_ctrl_c_during_the_scan(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Interrupted while the model is being audited: exit 130, and no output exists afterwards."""
    import hfaudit.detect.scan as detect_scan

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(detect_scan, "detect", interrupted)
    out = tmp_path / "audit"
    before = tree(tiny_pipeline_dir)
    res = scan(str(tiny_pipeline_dir), "-o", str(out), "--json", str(tmp_path / "r.json"),
               "--sarif", str(tmp_path / "r.sarif"))
    assert_one_line_error(res, ExitCode.INTERRUPTED, "interrupted; partial outputs were removed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-ddpm"]
    assert tree(tiny_pipeline_dir) == before


def test_ctrl_c_while_writing_removes_partial_outputs(tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    """Interrupted after the PNGs and the JSON were written: they are removed, an older report is kept."""
    from test_report import make_result  # a hand-built result: this test is about the writing

    import hfaudit.detect.scan as detect_scan

    monkeypatch.setattr(detect_scan, "scan", lambda *a, **k: make_result("backdoor"))
    written: list[str] = []

    def interrupted(*args, **kwargs):
        written.extend(p.name for p in (tmp_path / "audit").iterdir())
        raise KeyboardInterrupt

    monkeypatch.setattr(report, "to_sarif", interrupted)
    old = tmp_path / "report.json"
    old.write_text('{"from": "an earlier run"}')
    res = scan(str(tiny_pipeline_dir), "-o", str(tmp_path / "audit"), "--json", str(old),
               "--sarif", str(tmp_path / "r.sarif"))
    assert_one_line_error(res, ExitCode.INTERRUPTED, "interrupted")
    assert len(written) >= 5  # 4 PNGs + report.json + report.md were on disk when the interrupt came
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "tiny-ddpm"]
    assert old.read_text() == '{"from": "an earlier run"}'


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_real_signal_during_a_real_scan(tiny_pipeline_dir: Path, tmp_path: Path, sig) -> None:
    """The console script under a real Ctrl-C (SIGINT) or CI cancel (SIGTERM): exit 130, one line, nothing left."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HFAUDIT_QUIET": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-c", "from hfaudit.cli import main; main()", "scan", str(tiny_pipeline_dir),
           "--inversion-steps", "10000", "-o", str(tmp_path / "audit"), "--json", str(tmp_path / "r.json")]
    before = tree(tiny_pipeline_dir)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        # torch is mapped once main() starts importing the libraries; a few seconds later the scan is running.
        # An interrupt that still lands during the imports must give the same one line and exit code.
        while "libtorch_cpu" not in Path(f"/proc/{proc.pid}/maps").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(3.0)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitCode.INTERRUPTED, (proc.returncode, err)
    assert err.strip().splitlines() == ["hfaudit: error: interrupted; partial outputs were removed"], err
    assert out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-ddpm"]
    assert tree(tiny_pipeline_dir) == before
