"""Shared fixtures: isolated Hugging Face caches and tokens, a local Hub, a tiny pipeline.

Fixtures, plus the one hook that wires ``RUN_SLOW=1`` (:func:`pytest_configure`); keep them
reusable across test modules.

- ``_isolate_hf`` (autouse): every test gets its own ``HF_HOME``/cache, no token, no telemetry, no
  Xet, quiet output, and a Hub endpoint that refuses connections, so a test that forgets to point
  at the local hub fails fast instead of trying huggingface.co.
- ``hub`` (session): the local Hub (:class:`tests.hub_server.MiniHub`), started once.
- ``hub_env``: ``hub``, with ``HF_ENDPOINT`` and huggingface_hub's import-time endpoint pointed at it,
  for code that does not take an ``endpoint`` argument (diffusers, the CLI).
- ``olah_hub`` (session): olah, a real self-hosted Hub mirror, serving local git repos offline.
- ``tiny_pipeline_dir``: a tiny ``DDPMPipeline`` saved as safetensors, a fresh copy per test.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_server import MiniHub  # tests/ is on the path: `pythonpath` in pyproject.toml

def run_slow() -> bool:
    """``RUN_SLOW=1`` (diffusers' convention) adds the slow tests to the run."""
    return os.environ.get("RUN_SLOW", "").strip().lower() in {"1", "true", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    """With ``RUN_SLOW=1``, lift every ``not slow`` of the marker expression (the default addopts
    ``-m 'not slow'`` included), so slow tests run beside the others; an explicit ``-m slow`` still
    selects the slow ones alone."""
    if run_slow() and config.option.markexpr:
        config.option.markexpr = re.sub(r"\bnot\s+slow\b", "(slow or not slow)", config.option.markexpr)


# Port 9 (discard) on loopback: nothing listens, connections are refused at once.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9"
_UNSET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_OIDC_ID_TOKEN", "HF_ENDPOINT",
              "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN_PATH", "HF_HUB_DISABLE_IMPLICIT_TOKEN")
_HUB: MiniHub | None = None


def _point_hf_at(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """huggingface_hub reads HF_ENDPOINT at import: patch the values it computed from it too.

    That includes the module-level ``HfApi`` behind ``huggingface_hub.model_info`` & co. (what
    diffusers' ``from_pretrained`` calls), whose endpoint was fixed when it was created.
    """
    from huggingface_hub import constants as hf_constants
    from huggingface_hub import hf_api

    monkeypatch.setattr(hf_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(hf_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)


@pytest.fixture(autouse=True)
def _isolate_hf(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Own caches, no token, no telemetry, no Xet, quiet; huggingface_hub constants patched to match.

    Setting the environment is not enough: huggingface_hub (and diffusers) read most of these
    variables once, at import, so the module-level constants are patched as well.
    """
    home = tmp_path_factory.mktemp("hf_home")
    for name in _UNSET_ENV:
        monkeypatch.delenv(name, raising=False)
    for name, value in {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_XET_CACHE": str(home / "xet"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HFAUDIT_QUIET": "1",
        "DO_NOT_TRACK": "1",
    }.items():
        monkeypatch.setenv(name, value)

    from huggingface_hub import constants as hf_constants

    for name, value in {
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HUGGINGFACE_HUB_CACHE": str(home / "hub"),
        "HF_ASSETS_CACHE": str(home / "assets"),
        "HF_TOKEN_PATH": str(home / "token"),
        "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": False,
        "HF_HUB_OFFLINE": False,
    }.items():
        if hasattr(hf_constants, name):
            monkeypatch.setattr(hf_constants, name, value)
    _point_hf_at(monkeypatch, UNREACHABLE_ENDPOINT)
    diffusers_constants = sys.modules.get("diffusers.utils.constants")
    if diffusers_constants is not None:  # only if a test imported diffusers already
        monkeypatch.setattr(diffusers_constants, "HF_MODULES_CACHE", str(home / "modules"), raising=False)

    yield

    if _HUB is not None:  # one-shot failures a test set but never triggered must not leak
        _HUB._failures.clear()
        errors, _HUB.server_errors[:] = list(_HUB.server_errors), []
        if errors:
            pytest.fail("the test hub hit a bug of its own:\n" + "\n".join(errors), pytrace=False)


_REPORT_VALIDATOR = None


@pytest.fixture(autouse=True)
def _reports_follow_the_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every JSON report a test renders (scan, clean, error: anything ``to_json`` gets with
    ``tool: hfaudit``) is checked against the shipped schema, ``hfaudit/schemas/report.schema.json``;
    a report that drifts from it fails the test that wrote it. ``hfaudit.cleaning`` binds ``to_json``
    at import: patched there too when loaded (test modules import it at collection)."""
    import json

    import jsonschema

    from hfaudit import report

    global _REPORT_VALIDATOR
    if _REPORT_VALIDATOR is None:
        _REPORT_VALIDATOR = jsonschema.Draft202012Validator(
            json.loads(report.REPORT_SCHEMA_FILE.read_text()),
            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    original = report.to_json

    def to_json(doc, *args, **kwargs):
        text = original(doc, *args, **kwargs)
        parsed = json.loads(text)
        if isinstance(parsed, dict) and parsed.get("tool") == "hfaudit":
            _REPORT_VALIDATOR.validate(parsed)
        return text

    monkeypatch.setattr(report, "to_json", to_json)
    cleaning = sys.modules.get("hfaudit.cleaning")
    if cleaning is not None and hasattr(cleaning, "to_json"):
        monkeypatch.setattr(cleaning, "to_json", to_json)


@pytest.fixture(scope="session")
def hub() -> Iterator[MiniHub]:
    """The local Hub on 127.0.0.1 (random port), shared by the session.

    Repos persist across tests: use ``hub.new_repo_id()`` for fresh names. Helpers:
    ``url``, ``token`` (a write token), ``add_token``, ``add_repo(repo_id, folder, files=,
    private=, token=)``, ``commit``, ``files``, ``head``, ``commits``, ``pull_requests``,
    ``set_pr_status``, ``fail_next(kind, status)``, ``requests``.
    """
    global _HUB
    with MiniHub() as server:
        _HUB = server
        try:
            yield server
        finally:
            _HUB = None


@pytest.fixture
def hub_env(hub: MiniHub, monkeypatch: pytest.MonkeyPatch) -> MiniHub:
    """``hub``, made the default endpoint (``HF_ENDPOINT`` and huggingface_hub's constants)."""
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    _point_hf_at(monkeypatch, hub.url)
    return hub


class OlahHub:
    """A running olah server (offline) and the folder of git repos it serves as Hub repos."""

    def __init__(self, url: str, mirrors: Path) -> None:
        self.url = url
        self.mirrors = mirrors

    def add_repo(self, repo_id: str, folder: str | Path, message: str = "initial commit") -> str:
        """Serve the files of ``folder`` as model repo ``repo_id`` (one git commit on main); return the sha."""
        dst = self.mirrors / "models" / repo_id
        shutil.copytree(folder, dst)
        git = ["git", "-c", "user.name=hfaudit-tests", "-c", "user.email=tests@hfaudit.invalid",
               "-c", "commit.gpgsign=false", "-C", str(dst)]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "checkout", "-q", "-b", "main"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", message], check=True)
        return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def olah_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OlahHub]:
    """olah (``pip install olah``) in offline mode on 127.0.0.1, serving git repos added with ``add_repo``.

    Read-only, like any mirror: download tests only. Clients must pass a revision (``resolve``
    uses ``main`` by default): olah answers the revision-less ``/api/models/{id}`` with 401.
    Skipped when olah or git is not installed.
    """
    pytest.importorskip("olah")
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("olah")
    (root / "mirrors" / "models").mkdir(parents=True)
    port = _free_port()
    config = root / "olah.toml"
    config.write_text(
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {port}\n"
        f'repos-path = "{(root / "cache").as_posix()}"\n'
        f'mirrors-path = ["{(root / "mirrors").as_posix()}"]\n'
        f'mirror-netloc = "127.0.0.1:{port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{port}"\n'
        "metadata-cache-ttl = 0\n"
        "[accessibility]\n"
        "offline = true\n"
    )
    log = open(root / "olah.out", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen(
        [sys.executable, "-m", "olah.server", "-c", str(config), "--log-path", str(root / "logs")],
        cwd=root, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "NO_COLOR": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"olah exited with {proc.returncode}: {(root / 'olah.out').read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"olah did not start in 60 s: {(root / 'olah.out').read_text()[-2000:]}")
                time.sleep(0.2)
        yield OlahHub(f"http://127.0.0.1:{port}", root / "mirrors")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def _tiny_pipeline_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build and save the tiny pipeline once; tests get copies."""
    import torch
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    )
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))
    out = tmp_path_factory.mktemp("tiny_pipeline_template") / "tiny-ddpm"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture
def tiny_pipeline_dir(_tiny_pipeline_template: Path, tmp_path: Path) -> Path:
    """A tiny DDPMPipeline (8x8, 1 channel, UNet (8, 16)) saved with safetensors; a copy per test."""
    dst = tmp_path / "tiny-ddpm"
    shutil.copytree(_tiny_pipeline_template, dst)
    return dst


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Two shared cores: for tiny models torch's thread pool only adds contention."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _fast_tests_on_one_thread(request: pytest.FixtureRequest) -> None:
    """Every test outside the slow tier runs on one torch thread (``one_thread``): its models are
    tiny, and a second thread only adds contention, which turns seconds into minutes when another
    job shares the two cores."""
    if request.node.get_closest_marker("slow") is None:
        request.getfixturevalue("one_thread")
