"""Downloads like diffusers: model_index.json first, only what the components need, the HF cache and
offline mode, Git LFS pointers, hf:// and page-address sources, --token, and the user agent.

Every Hub test runs the real huggingface_hub client against the local MiniHub and counts what it
asked for in the hub's request log.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import hfaudit
from helpers import FAST_SCAN_FLAGS, UNET_ST, assert_one_line_error, searches_off, validate_sarif
from hfaudit import hub as hfhub
from hfaudit import report
from hfaudit.cli import app
from hfaudit.errors import ExitCode, RepoNotFoundError, UsageError
from hfaudit.safety import RULES, static_checks
from hfaudit.sources import HubSource, parse_uri

runner = CliRunner()
QUICK = [*FAST_SCAN_FLAGS, *searches_off(), "-q"]
SECRET = "hf_downloads_private_token_0123456789"
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"  # as in conftest.py: nothing listens there
POINTER = ("version https://git-lfs.github.com/spec/v1\n"
           "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")


def _resolve_requests(hub, since: int) -> list[tuple[str, str]]:
    """(method, file path in the repo) of every file request (``/resolve/``) since ``since``."""
    out = []
    for method, path, _query in hub.requests[since:]:
        parts = path.split("/")
        if len(parts) > 5 and parts[3] == "resolve":
            out.append((method, "/".join(parts[5:])))
    return out


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _repo_files(tiny: Path) -> dict[str, bytes]:
    return {p.relative_to(tiny).as_posix(): p.read_bytes() for p in tiny.rglob("*") if p.is_file()}


def _sd_like(class_name: str) -> dict[str, bytes]:
    """A repo of a pipeline hfaudit refuses, with weights worth not downloading."""
    big = b"\0" * (3 * 2**20)
    index = {"_class_name": class_name, "_diffusers_version": "0.30.0",
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "text_encoder": ["transformers", "CLIPTextModel"], "scheduler": ["diffusers", "EulerDiscreteScheduler"]}
    return {
        "model_index.json": json.dumps(index).encode(),
        "README.md": b"# a text-to-image model\n",
        "unet/config.json": b'{"_class_name": "UNet2DConditionModel"}',
        "unet/diffusion_pytorch_model.safetensors": big,
        "unet/diffusion_pytorch_model.fp16.safetensors": big,
        "vae/config.json": b'{"_class_name": "AutoencoderKL"}',
        "vae/diffusion_pytorch_model.safetensors": big,
        "text_encoder/model.safetensors": big,
        "scheduler/scheduler_config.json": b'{"_class_name": "EulerDiscreteScheduler"}',
        "sd_xl_base_1.0.safetensors": big,
    }


# ------------------------------------------------------------------------- what is downloaded
@pytest.mark.parametrize("class_name", ["StableDiffusionXLPipeline", "MyOwnPipeline"])
def test_a_refused_repo_downloads_nothing_but_model_index(hub_env, class_name: str, tmp_path: Path) -> None:
    repo = hub_env.new_repo_id("sdxl")
    hub_env.add_repo(repo, files=_sd_like(class_name))
    before = len(hub_env.requests)

    res = runner.invoke(app, ["scan", repo, *QUICK, "--sarif", str(tmp_path / "out.sarif")])

    assert_one_line_error(res, ExitCode.UNSUPPORTED, class_name, "not supported")
    assert {path for _m, path in _resolve_requests(hub_env, before)} == {"model_index.json"}
    info = [p for m, p, _q in hub_env.requests[before:] if p.startswith("/api/")]
    assert info == [f"/api/models/{repo}/revision/main"]  # one model_info call, nothing else
    sarif = validate_sarif((tmp_path / "out.sarif").read_text())
    assert [r["ruleId"] for r in sarif["runs"][0]["results"]] == ["HFA102"]


def test_an_audited_repo_downloads_only_what_its_components_need(hub, tiny_pipeline_dir: Path) -> None:
    files = _repo_files(tiny_pipeline_dir)
    weights = files[UNET_ST]
    extra = {
        "README.md": b"---\nlicense: mit\n---\n# tiny\n",
        "unet/diffusion_pytorch_model.fp16.safetensors": weights,       # a variant beside the default
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json": b"{}",
        "unet/diffusion_pytorch_model.bin": b"\x80\x04not-loaded",       # pickle, no --allow-pickle
        "unet/old/diffusion_pytorch_model.safetensors": weights,         # a subfolder no loader reads
        "unrelated/model.safetensors": weights,                          # a folder no component names
        "unrelated/config.json": b"{}",
        "v1-5-pruned.ckpt": b"\x80\x04pickle",                           # top-level checkpoints
        "model.safetensors": weights,
        "notes.txt": b"x",
    }
    repo = hub.new_repo_id("tiny")
    hub.add_repo(repo, files={**files, **extra})
    before = len(hub.requests)

    src = hfhub.resolve(repo, endpoint=hub.url)

    expected = set(files) | {"README.md"}
    assert _files(src.local_dir) == expected
    assert {p for _m, p in _resolve_requests(hub, before)} == expected
    assert set(src.files) == set(files) | set(extra) | {".gitattributes"}  # the full listing all the same
    # the pickle that was not downloaded is still named, as not scanned
    report_ = static_checks(src.local_dir, src.files)
    assert any(f.rule == "HFA213" and f.path == "unet/diffusion_pytorch_model.bin" for f in report_.findings)

    # with --allow-pickle: the unet's pickle too, still no top-level checkpoint
    before = len(hub.requests)
    again = hfhub.resolve(repo, endpoint=hub.url, allow_pickle=True)
    assert _files(again.local_dir) == expected | {"unet/diffusion_pytorch_model.bin"}
    # what the cache holds at that commit is not asked for again
    assert {p for _m, p in _resolve_requests(hub, before)} == {"unet/diffusion_pytorch_model.bin"}


def test_a_variant_is_downloaded_when_it_is_the_only_weights(hub, tiny_pipeline_dir: Path) -> None:
    files = _repo_files(tiny_pipeline_dir)
    files["unet/diffusion_pytorch_model.fp16.safetensors"] = files.pop(UNET_ST)
    repo = hub.new_repo_id("fp16-only")
    hub.add_repo(repo, files=files)
    src = hfhub.resolve(repo, endpoint=hub.url)
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in _files(src.local_dir)


@pytest.mark.parametrize(("names", "allow_pickle", "expected"), [
    # sharded default weights and their index; the fp16 shards and index left out
    (["unet/diffusion_pytorch_model-00001-of-00002.safetensors", "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
      "unet/diffusion_pytorch_model.safetensors.index.json", "unet/diffusion_pytorch_model.fp16-00001-of-00001.safetensors",
      "unet/diffusion_pytorch_model.safetensors.index.fp16.json"], False,
     ["unet/diffusion_pytorch_model-00001-of-00002.safetensors", "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
      "unet/diffusion_pytorch_model.safetensors.index.json"]),
    # only a variant: it and its index
    (["unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors.index.fp16.json"], False,
     ["unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors.index.fp16.json"]),
    # pickle only with allow_pickle, default variant first
    (["unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin"], False, []),
    (["unet/diffusion_pytorch_model.bin", "unet/diffusion_pytorch_model.fp16.bin"], True,
     ["unet/diffusion_pytorch_model.bin"]),
])
def test_files_to_download_picks_the_default_variant(names: list[str], allow_pickle: bool, expected: list[str]) -> None:
    index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
             "scheduler": ["diffusers", "DDPMScheduler"], "../escape": ["diffusers", "X"]}
    base = ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json"]
    got = hfhub.files_to_download([*base, *names, "../escape/x.safetensors"], index, allow_pickle)
    assert got == sorted([*base, *expected])


def test_no_model_index_downloads_nothing(hub) -> None:
    repo = hub.new_repo_id("no-index")
    hub.add_repo(repo, files={"unet/diffusion_pytorch_model.safetensors": b"\0" * 1024, "README.md": "# hi"})
    before = len(hub.requests)
    src = hfhub.resolve(repo, endpoint=hub.url)
    assert _resolve_requests(hub, before) == [] and _files(src.local_dir) == set()
    assert [f.rule for f in static_checks(src.local_dir, src.files).blocking] == ["HFA100"]


# --------------------------------------------------------------------------- cache and offline
def test_offline_resolve_uses_the_cached_commit(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    repo = hub.new_repo_id("tiny")
    first = hub.add_repo(repo, tiny_pipeline_dir)
    online = hfhub.resolve(repo, endpoint=hub.url)
    hub.commit(repo, {"README.md": "# moved on, never downloaded"})  # main moves on the Hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub.requests)

    offline = hfhub.resolve(repo, endpoint=hub.url)
    at_sha = hfhub.resolve(repo, revision=first, endpoint=hub.url)

    assert len(hub.requests) == before  # not a single request
    assert offline.commit_sha == at_sha.commit_sha == online.commit_sha == first
    assert offline.local_dir == online.local_dir and offline.revision is None and not offline.is_local
    assert set(offline.files) == _files(online.local_dir)
    with pytest.raises(RepoNotFoundError, match="not in the Hugging Face cache"):
        hfhub.resolve(repo, revision="other-branch", endpoint=hub.url)


def test_offline_and_not_cached_is_one_line_exit_3(hub_env, monkeypatch) -> None:
    repo = hub_env.new_repo_id("never-downloaded")
    hub_env.add_repo(repo, files={"model_index.json": "{}"})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub_env.requests)
    res = runner.invoke(app, ["scan", repo, *QUICK])
    assert_one_line_error(res, ExitCode.NOT_FOUND, repo, "not in the Hugging Face cache", "HF_HUB_OFFLINE")
    assert len(hub_env.requests) == before


def test_offline_refuses_a_partly_cached_pipeline(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    repo = hub.new_repo_id("tiny")
    hub.add_repo(repo, tiny_pipeline_dir)
    src = hfhub.resolve(repo, endpoint=hub.url)
    for p in (src.local_dir / "unet").iterdir():
        p.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RepoNotFoundError, match="only partly in the Hugging Face cache.*unet"):
        hfhub.resolve(repo)


def test_cache_dir(hub_env, tiny_pipeline_dir: Path, tmp_path: Path, monkeypatch) -> None:
    repo = hub_env.new_repo_id("tiny")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    cache = tmp_path / "my-cache"
    src = hfhub.resolve(repo, cache_dir=cache)
    assert src.local_dir.is_relative_to(cache) and (src.local_dir / UNET_ST).is_file()
    assert (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").read_text() == src.commit_sha
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hfhub.resolve(repo, cache_dir=cache).local_dir == src.local_dir
    with pytest.raises(RepoNotFoundError, match="not in the Hugging Face cache"):
        hfhub.resolve(repo)  # the default cache never saw it
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        hfhub.resolve(repo, cache_dir=tmp_path / "a-file")


def test_clean_takes_cache_dir_and_token(hub_env, tmp_path: Path) -> None:
    """A private repo of a pipeline hfaudit refuses: exit 4 (not 3) shows the token reached the Hub,
    and model_index.json lands in --cache-dir."""
    repo = hub_env.new_repo_id("private-sdxl")
    hub_env.add_repo(repo, files=_sd_like("StableDiffusionXLPipeline"), private=True, token=SECRET)
    cache = tmp_path / "c"
    without = runner.invoke(app, ["clean", repo, "-o", str(tmp_path / "o1"), "-q", "--cache-dir", str(cache)])
    assert_one_line_error(without, ExitCode.NOT_FOUND, "no token is set")
    res = runner.invoke(app, ["clean", repo, "-o", str(tmp_path / "o2"), "-q", "--token", SECRET,
                              "--cache-dir", str(cache)])
    err = assert_one_line_error(res, ExitCode.UNSUPPORTED, "StableDiffusionXLPipeline")
    assert SECRET not in err
    assert [p.relative_to(cache).parts[-1] for p in cache.rglob("*") if p.is_file() and "snapshots" in p.parts] \
        == ["model_index.json"]


def test_scan_with_token_reaches_a_private_repo(hub_env, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    repo = hub_env.new_repo_id("private-tiny")
    sha = hub_env.add_repo(repo, tiny_pipeline_dir, private=True, token=SECRET)
    assert_one_line_error(runner.invoke(app, ["scan", repo, *QUICK]), ExitCode.NOT_FOUND, "no token is set")
    res = runner.invoke(app, ["scan", repo, *QUICK, "--token", SECRET, "--json", str(tmp_path / "r.json")])
    assert res.exit_code in (ExitCode.CLEAN, ExitCode.BACKDOOR), res.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["source"]["commit_sha"] == sha and SECRET not in (tmp_path / "r.json").read_text()


def test_offline_scan_in_process_gives_the_same_verdict(hub_env, tiny_pipeline_dir: Path, tmp_path: Path,
                                                        monkeypatch) -> None:
    """HF_HUB_OFFLINE set after import (a library user, a notebook) counts as well: hfaudit reads it per call."""
    repo = hub_env.new_repo_id("tiny")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    online = runner.invoke(app, ["scan", repo, *QUICK, "--json", str(tmp_path / "online.json")])
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(hub_env.requests)
    offline = runner.invoke(app, ["scan", repo, *QUICK, "--json", str(tmp_path / "offline.json")])
    assert len(hub_env.requests) == before
    assert offline.exit_code == online.exit_code and online.exit_code in (ExitCode.CLEAN, ExitCode.BACKDOOR)
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("online", "offline"))
    assert (a["verdict"], a["source"]) == (b["verdict"], b["source"])


@pytest.mark.slow
def test_offline_scan_of_a_cached_model_gives_the_same_report(hub_env, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    """Online first (the cache is the test's own HF_HOME), then the console script in a child
    process with HF_HUB_OFFLINE=1 set before huggingface_hub is imported, as a user runs it."""
    repo = hub_env.new_repo_id("tiny")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    online = runner.invoke(app, ["scan", repo, *QUICK, "--json", str(tmp_path / "online.json")])
    assert online.exit_code in (ExitCode.CLEAN, ExitCode.BACKDOOR), online.output
    before = len(hub_env.requests)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": UNREACHABLE_ENDPOINT, "OMP_NUM_THREADS": "1"}
    child = subprocess.run([sys.executable, "-m", "hfaudit", "scan", repo, *QUICK, "--json",
                            str(tmp_path / "offline.json")], env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == online.exit_code, child.stderr
    assert len(hub_env.requests) == before
    a, b = (report.stable(json.loads((tmp_path / f"{n}.json").read_text())) for n in ("online", "offline"))
    assert a == b


# ------------------------------------------------------------------------------- LFS pointers
def test_lfs_pointer_checkout_is_exit_3_not_a_security_finding(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    (tiny_pipeline_dir / UNET_ST).write_text(POINTER)
    sarif_path = tmp_path / "out.sarif"
    res = runner.invoke(app, ["scan", str(tiny_pipeline_dir), *QUICK, "--sarif", str(sarif_path)])
    err = assert_one_line_error(res, ExitCode.NOT_FOUND, "git lfs pull", UNET_ST)
    assert "corrupt" not in err.lower() and "tamper" not in err.lower()
    run = validate_sarif(sarif_path.read_text())["runs"][0]
    assert [r["ruleId"] for r in run["results"]] == ["HFA108"]
    rules = {r["id"]: r for r in run["tool"]["driver"]["rules"]}
    assert "security-severity" not in rules["HFA108"]["properties"]
    assert RULES["HFA108"].security_severity is None


def test_every_file_a_pointer_is_still_exit_3(tiny_pipeline_dir: Path) -> None:
    """What actions/checkout without lfs leaves: weights, configs and a pickle beside them all pointers."""
    for rel in (UNET_ST, "unet/config.json", "unet/diffusion_pytorch_model.bin", "model_index.json"):
        (tiny_pipeline_dir / rel).write_text(POINTER)
    report_ = static_checks(tiny_pipeline_dir)
    assert {f.rule for f in report_.blocking} == {"HFA108"}
    with pytest.raises(RepoNotFoundError, match="git lfs pull") as err:
        report_.raise_for_blocking()
    assert err.value.exit_code == ExitCode.NOT_FOUND and "3 more" in str(err.value)


# ---------------------------------------------------------------------------------- sources
@pytest.mark.parametrize(("text", "revision", "expected"), [
    ("hf://org/model", None, HubSource("org/model", None)),
    ("hf://org/model@v1", None, HubSource("org/model", "v1")),
    ("hf://org/model@refs%2Fpr%2F3", None, HubSource("org/model", "refs/pr/3")),
    ("hf://org/model/", "main", HubSource("org/model", "main")),
    ("https://huggingface.co/org/model", None, HubSource("org/model", None)),
    ("https://huggingface.co/org/model/", "dev", HubSource("org/model", "dev")),
    ("https://huggingface.co/org/model/tree/v1", "v1", HubSource("org/model", "v1")),
    ("https://hf.co/org/model/tree/refs%2Fpr%2F3", None, HubSource("org/model", "refs/pr/3")),
    ("http://127.0.0.1:9/org/model", None, HubSource("org/model", None)),
])
def test_parse_uri(text: str, revision: str | None, expected: HubSource) -> None:
    assert parse_uri(text, revision, endpoint=UNREACHABLE_ENDPOINT) == expected


@pytest.mark.parametrize(("text", "needle"), [
    ("hf://org/model@v1", "disagrees"),                                   # with revision="main"
    ("https://huggingface.co/org/model/tree/v1", "disagrees"),
    ("hf://datasets/org/data", "not a model repo"),
    ("https://huggingface.co/spaces/org/app", "not a model repo"),
    ("https://huggingface.co/org/model/blob/main/model_index.json", "not the page of a model repo"),
    ("hf://org/model@main/unet", "names a file"),
    ("https://example.com/org/model", "not on the Hugging Face Hub"),
    ("hf://org", "does not name a model repo"),
    ("hf://org/model@", "empty revision"),
])
def test_parse_uri_refuses(text: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        parse_uri(text, "main")


def test_hf_uri_and_page_address_resolve(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("tiny")
    first = hub.add_repo(repo, tiny_pipeline_dir)
    second = hub.commit(repo, {"README.md": "# v2"})
    for source, revision, sha in [(f"hf://{repo}", None, second), (f"hf://{repo}@{first}", None, first),
                                  (f"{hub.url}/{repo}", None, second), (f"{hub.url}/{repo}/tree/{first}", None, first),
                                  (f"https://huggingface.co/{repo}/tree/main", "main", second)]:
        src = hfhub.resolve(source, revision=revision, endpoint=hub.url)
        assert (src.repo_id, src.commit_sha, src.source) == (repo, sha, source)
        assert (src.local_dir / UNET_ST).is_file()


def test_cli_revision_disagreeing_with_the_source(hub_env) -> None:
    before = len(hub_env.requests)
    res = runner.invoke(app, ["scan", "hf://org/model@v1", "--revision", "v2", *QUICK])
    assert_one_line_error(res, ExitCode.USAGE, "--revision v2 disagrees", "v1")
    assert len(hub_env.requests) == before


# -------------------------------------------------------------------------------- user agent
def test_the_user_agent_names_the_version(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("tiny")
    hub.add_repo(repo, tiny_pipeline_dir)
    before = len(hub.user_agents)
    hfhub.resolve(repo, endpoint=hub.url)
    agents = hub.user_agents[before:]
    assert agents and all(f"hfaudit/{hfaudit.__version__}" in a for a in agents), agents
    assert not any("hfaudit/None" in a for a in agents)
