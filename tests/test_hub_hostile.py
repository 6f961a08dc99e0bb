"""Fail closed on a hostile Hub: an endpoint that never answers, or answers with something that is not
a Hub API response, gives one line and exit 3 in bounded time; an empty source is refused.

Each test starts its own tiny server on 127.0.0.1 (a thread, stopped at the end of the test) and
runs the real huggingface_hub client, or the real CLI in a subprocess.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hfaudit import constants
from hfaudit import hub as hfhub
from hfaudit.errors import ExitCode, PushError, RepoNotFoundError, UsageError

# Seconds huggingface_hub waits per request in these tests (HF_HUB_ETAG_TIMEOUT, HF_HUB_DOWNLOAD_TIMEOUT).
TIMEOUT_S = 2
# Wall-time bound of one CLI run against a hostile endpoint. Measured: 4-9 s (Python start-up and
# imports included; one request times out after TIMEOUT_S), on 2 busy CPU cores.
CLI_BOUND_S = 60
# Wall-time bound of one library call against a silent endpoint (measured: about TIMEOUT_S).
CALL_BOUND_S = 20
TOKEN = "hf_test"
SHA = "0123456789abcdef0123456789abcdef01234567"


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    stopping = False


class _Silent(socketserver.BaseRequestHandler):
    """Accepts the connection, reads the request, never sends a byte (until the test ends, 120 s at most)."""

    def handle(self) -> None:
        self.request.settimeout(0.2)
        deadline = time.monotonic() + 120
        while not self.server.stopping and time.monotonic() < deadline:  # type: ignore[attr-defined]
            try:
                if not self.request.recv(65536):
                    return  # the client gave up
            except socket.timeout:
                continue
            except OSError:
                return


# (method, path) -> (status, content type, body) or (status, content type, body, more headers)
Route = Callable[[str, str], tuple]


def _answering(route: Route) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            status, ctype, body, *more = route(self.command, self.path)
            data = body.encode()
            self.send_response(status)
            self.send_header("content-type", ctype)
            for name, value in (more[0] if more else {}).items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _always(ctype: str, body: str) -> Route:
    return lambda method, path: (200, ctype, body)


@contextmanager
def _serve(handler: type[socketserver.BaseRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free port of 127.0.0.1 in a daemon thread; yield the URL; stop it."""
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.stopping = True
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


SERVERS: dict[str, type[socketserver.BaseRequestHandler]] = {
    "silent": _Silent,
    "html": _answering(_always("text/html", "<html>not json</html>")),
    "json-list": _answering(_always("application/json", "[]")),
}
EXPECTED = {
    "silent": f"no answer within {TIMEOUT_S} s",
    "html": "gave an answer that is not a Hub API response for org/model",
    "json-list": "gave an answer that is not a Hub API response for org/model",
}


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", str(TIMEOUT_S))
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", str(TIMEOUT_S))


# ----------------------------------------------------------------------------------- the CLI
@pytest.mark.parametrize("kind", list(SERVERS))
def test_cli_scan_against_a_hostile_endpoint(kind: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HFAUDIT_DEBUG")}
    with _serve(SERVERS[kind]) as url:
        env.update(
            HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT=str(TIMEOUT_S), HF_HUB_DOWNLOAD_TIMEOUT=str(TIMEOUT_S),
            HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), HFAUDIT_QUIET="1",
        )
        t0 = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-c", "from hfaudit.cli import main; main()", "scan", "org/model"],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90,
        )
        wall = time.monotonic() - t0
    lines = run.stderr.splitlines()
    assert run.returncode == ExitCode.NOT_FOUND, run.stderr
    assert len(lines) == 1 and lines[0].startswith("hfaudit: error:"), run.stderr
    assert "Traceback" not in run.stderr and EXPECTED[kind] in lines[0] and url in lines[0], run.stderr
    assert wall < CLI_BOUND_S, wall


def test_cli_scan_of_an_empty_source(tmp_path: Path) -> None:
    """``hfaudit scan ""`` used to audit the current directory."""
    run = subprocess.run(
        [sys.executable, "-c", "from hfaudit.cli import main; main()", "scan", "  "],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )
    assert run.returncode == ExitCode.USAGE, run.stderr
    assert run.stderr.splitlines() == ["hfaudit: error: no model given: pass a Hub repo id (org/name) or a local "
                                       "pipeline folder"]


# -------------------------------------------------------------------------------- the library
@pytest.mark.parametrize("source", ["", "   ", "\t\n"])
def test_resolve_refuses_an_empty_source(source: str) -> None:
    with pytest.raises(UsageError, match="no model given") as err:
        hfhub.resolve(source)
    assert err.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("source", ["org/mo\x00del", "org/model\n", "org/model\nmain", "\x00", "./a\rb"])
def test_resolve_refuses_control_characters(source: str) -> None:
    with pytest.raises(UsageError, match="control character") as err:
        hfhub.resolve(source)
    assert "\n" not in str(err.value) and "\x00" not in str(err.value) and "\r" not in str(err.value)
    with pytest.raises(UsageError, match="control character"):
        hfhub.resolve("org/model", revision="main\n")


def test_resolve_of_a_name_too_long_for_a_path() -> None:
    with pytest.raises(RepoNotFoundError, match="not a valid Hub repo id") as err:
        hfhub.resolve("a" * 5000)
    assert len(str(err.value)) < 400


def _default_hooks() -> list:
    from huggingface_hub.utils import _http

    return list(_http.default_client_factory().event_hooks["request"])


def test_resolve_silent_hub_is_bounded_and_restores_the_client(short_timeouts: None) -> None:
    from huggingface_hub import get_session
    from huggingface_hub.utils import _http

    before = _http._GLOBAL_CLIENT_FACTORY
    with _serve(_Silent) as url:
        t0 = time.monotonic()
        with pytest.raises(RepoNotFoundError) as err:
            hfhub.resolve("org/model", endpoint=url)
        wall = time.monotonic() - t0
    assert str(err.value) == f"cannot reach the Hub at {url}: no answer within {TIMEOUT_S} s"
    assert err.value.exit_code == ExitCode.NOT_FOUND
    assert wall < CALL_BOUND_S, wall
    assert _http._GLOBAL_CLIENT_FACTORY is before
    session = get_session()  # what the next huggingface_hub call gets: the unbounded default again
    assert session.timeout.as_dict() == {"connect": None, "read": None, "write": None, "pool": None}
    assert [h.__name__ for h in session.event_hooks["request"]] == [h.__name__ for h in _default_hooks()]


def test_a_users_client_factory_is_wrapped_and_kept(short_timeouts: None) -> None:
    """hfaudit bounds the client a library user's own factory builds, and puts that factory back."""
    import httpx2
    from huggingface_hub import get_session, set_client_factory
    from huggingface_hub.utils import _http

    built: list[httpx2.Client] = []

    def users_factory() -> httpx2.Client:
        client = httpx2.Client(headers={"x-users-own": "1"}, timeout=None)
        built.append(client)
        return client

    previous = _http._GLOBAL_CLIENT_FACTORY
    set_client_factory(users_factory)
    try:
        with _serve(_Silent) as url, pytest.raises(RepoNotFoundError, match="no answer within"):
            hfhub.resolve("org/model", endpoint=url)
        assert built and built[0].headers.get("x-users-own") == "1"  # hfaudit used the user's client
        assert _http._GLOBAL_CLIENT_FACTORY is users_factory
        assert get_session() is not built[0] and get_session().event_hooks["request"] == []
    finally:
        set_client_factory(previous)


@pytest.mark.parametrize("mode", ["to", "pr"])
def test_push_to_a_silent_hub_is_bounded(mode: str, short_timeouts: None, tmp_path: Path) -> None:
    from huggingface_hub.utils import _http

    folder = tmp_path / "cleaned"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    before = _http._GLOBAL_CLIENT_FACTORY
    with _serve(_Silent) as url:
        t0 = time.monotonic()
        with pytest.raises(PushError) as err:
            hfhub.push_folder(folder, source_repo="org/model", to="org/cleaned" if mode == "to" else None,
                              token=TOKEN, endpoint=url, audited_commit=SHA)
        wall = time.monotonic() - t0
    msg = str(err.value)
    assert err.value.exit_code == ExitCode.NOT_FOUND
    assert f"the Hub at {url} gave no answer within {TIMEOUT_S} s" in msg
    assert "\n" not in msg and TOKEN not in msg
    assert wall < CALL_BOUND_S, wall
    assert _http._GLOBAL_CLIENT_FACTORY is before


@pytest.mark.parametrize("kind", ["html", "json-list"])
@pytest.mark.parametrize("mode", ["to", "pr"])
def test_push_to_a_hub_that_gives_no_hub_answer(kind: str, mode: str, tmp_path: Path) -> None:
    folder = tmp_path / "cleaned"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    with _serve(SERVERS[kind]) as url, pytest.raises(PushError) as err:
        hfhub.push_folder(folder, source_repo="org/model", to="org/cleaned" if mode == "to" else None,
                          token=TOKEN, endpoint=url, audited_commit=SHA)
    assert "is not a Hub API response" in str(err.value) and TOKEN not in str(err.value)


def _model_info_route(info: object, other: tuple = (404, "application/json", "{}")) -> Route:
    """``info`` as the answer to model_info, ``other`` to every other request."""
    def route(method: str, path: str) -> tuple[int, str, str]:
        if path.startswith("/api/models/org/model/revision/"):
            return 200, "application/json", json.dumps(info)
        return other
    return route


@pytest.mark.parametrize(
    "info",
    [
        {},
        {"id": "org/model", "siblings": []},  # no sha
        {"id": "org/model", "sha": SHA},  # no file list
        {"id": "org/model", "sha": "../../../../tmp/escape", "siblings": []},  # the sha names a cache folder
        {"id": "org/model", "sha": SHA, "siblings": "model_index.json"},
        {"id": "org/model", "sha": SHA, "siblings": [{"rfilename": 3}]},
        {"id": "org/model", "sha": SHA, "siblings": [{"rfilename": "../../etc/passwd"}]},
        {"id": "org/model", "sha": SHA, "siblings": [], "lastModified": "yesterday"},
    ],
    ids=["empty", "no-sha", "no-siblings", "sha-path", "siblings-str", "rfilename-int", "rfilename-dotdot",
         "bad-date"],
)
def test_model_info_of_the_wrong_shape(info: dict) -> None:
    with _serve(_answering(_model_info_route(info))) as url, pytest.raises(RepoNotFoundError) as err:
        hfhub.resolve("org/model", endpoint=url)
    assert str(err.value) == f"the Hub at {url} gave an answer that is not a Hub API response for org/model"


def test_file_listing_that_is_not_json(tmp_path: Path) -> None:
    """model_info is fine, the file download answers HTML (no Hub headers): same error."""
    info = {"id": "org/model", "sha": SHA, "siblings": [{"rfilename": "model_index.json"}]}
    route = _model_info_route(info, other=(200, "text/html", "<html>not json</html>"))
    with _serve(_answering(route)) as url, pytest.raises(RepoNotFoundError, match="not a Hub API response"):
        hfhub.resolve("org/model", endpoint=url)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 10.0), ("2", 2.0), ("2.5", 2.5), ("0", 10.0), ("-1", 10.0), ("soon", 10.0), ("inf", 10.0), ("nan", 10.0)],
)
def test_hub_timeouts_read_at_call_time(value: str | None, expected: float, monkeypatch) -> None:
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert constants.hub_timeouts() == (expected, expected)
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "7")
    assert constants.hub_timeouts().request == 7.0


def _rate_limited(monkeypatch: pytest.MonkeyPatch) -> Route:
    """A Hub whose model_info answers and whose every other route says 429, wait an hour; 1 s timeouts."""
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "1")
    info = {"id": "org/model", "sha": SHA, "siblings": [{"rfilename": "model_index.json"}]}
    wait_an_hour = {"Retry-After": "3600", "RateLimit": '"api";r=0;t=3600'}
    return _model_info_route(info, other=(429, "application/json", "{}", wait_an_hour))


def test_the_waits_a_429_asks_for_are_cut_to_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The fast tier's half of the test below: huggingface_hub's retry sleeps are recorded, not slept."""
    from huggingface_hub.utils import _http

    slept: list[float] = []

    class _Clock:
        def sleep(self, seconds: float) -> None:
            slept.append(seconds)

        def __getattr__(self, name: str):
            return getattr(time, name)

    monkeypatch.setattr(_http, "time", _Clock())
    with _serve(_answering(_rate_limited(monkeypatch))) as url:
        with pytest.raises(RepoNotFoundError) as err:
            hfhub.resolve("org/model", endpoint=url)
    assert str(err.value).startswith(f"the Hub at {url} answered HTTP 429 for org/model"), str(err.value)
    assert slept and max(slept) <= 2, slept  # the timeout (+1 s of huggingface_hub's own), not 3600 s


@pytest.mark.slow  # real waits: five retries of about two seconds each
def test_a_hub_asking_to_wait_an_hour_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub retries a 429 five times, sleeping as long as the answer asks: at most the timeout here."""
    with _serve(_answering(_rate_limited(monkeypatch))) as url:
        t0 = time.monotonic()
        with pytest.raises(RepoNotFoundError) as err:
            hfhub.resolve("org/model", endpoint=url)
        wall = time.monotonic() - t0
    assert str(err.value).startswith(f"the Hub at {url} answered HTTP 429 for org/model"), str(err.value)
    assert wall < 30, wall  # 5 waits of 1 s (+1 s each) instead of 5 hours
