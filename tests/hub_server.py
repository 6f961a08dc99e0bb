"""A minimal Hugging Face Hub endpoint for tests, driven only through the real ``huggingface_hub`` client.

No local server accepts uploads (olah is read-only), so the push tests need one. This one speaks
just enough of the Hub's wire format (checked against huggingface_hub 2.4.0's source) for:

- ``model_info`` / ``repo_info`` (with ``sha`` and ``siblings``), ``list_repo_tree``
- ``hf_hub_download`` / ``snapshot_download`` (``HEAD`` + ``GET`` on ``/{repo}/resolve/{rev}/{path}``
  with ``X-Repo-Commit``, ``ETag``, ``Content-Length``, and ``X-Linked-Etag``/``X-Linked-Size`` for LFS)
- ``create_repo``, ``preupload``, the LFS batch API + single-part ``PUT``, ``create_commit`` (NDJSON),
  ``create_pr`` (``?create_pr=1``, with ``parentCommit`` the commit the pull request is based on), commits
  to ``refs/pr/N``, ``get_repo_discussions`` (``author`` filter), ``get_discussion_details`` (the
  description comment, one commit event per commit on the PR ref, with its author), ``comment_discussion``,
  ``whoami``, ``validate-yaml``
- private repos and missing repos/revisions/files, answered like the Hub (``X-Error-Code`` header), so
  the client raises ``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``.

Commits are atomic, as on the Hub: a commit request that fails (or is made to fail with
:meth:`MiniHub.fail_next`) moves no ref. Xet is not spoken: run the client with
``HF_HUB_DISABLE_XET=1`` (``huggingface_hub.constants.HF_HUB_DISABLE_XET = True`` after import).

Stdlib only; state lives in memory. Not thread-safe beyond one lock around the state, which is all
the client's small thread pools need.
"""

from __future__ import annotations

import base64
import datetime as _dt
import fnmatch
import hashlib
import json
import threading
import traceback
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# What the Hub stores in LFS by default (its stock .gitattributes), plus anything binary or >= 10 MB.
LFS_PATTERNS = (
    "*.safetensors", "*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.h5", "*.onnx",
    "*.msgpack", "*.npy", "*.npz", "*.gguf", "*.zip", "*.tar.*", "*.png", "*.jpg", "*.jpeg", "*.gif",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()
_FAILURE_KINDS = ("commit", "lfs_upload", "lfs_batch", "preupload", "create_repo")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob (what the Hub calls a regular file's ``oid``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _is_lfs(path: str, data_or_sample: bytes, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return (
        any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)
        or size >= LFS_SIZE_THRESHOLD
        or b"\0" in data_or_sample[:512]
    )


@dataclass
class StoredFile:
    """One file of a commit: its content and how the Hub would describe it."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_oid(self) -> str:
        return git_blob_sha(self.data)

    @property
    def etag(self) -> str:
        # The Hub's ETag: the sha256 for LFS files (via X-Linked-Etag), the git blob id otherwise.
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer(self) -> bytes:
        return (
            f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(self.data)}\n"
        ).encode()


@dataclass
class Commit:
    """An immutable snapshot of a repo."""

    sha: str
    message: str
    description: str
    parents: list[str]
    files: dict[str, StoredFile]
    date: str = field(default_factory=_now)


@dataclass
class PullRequest:
    """A pull request (the Hub calls them discussions); ``ref`` is ``refs/pr/{num}``."""

    num: int
    title: str
    status: str  # "open" | "closed" | "merged" | "draft"
    author: str
    created_at: str = field(default_factory=_now)
    base: str = ""  # the commit the pull request was opened from
    events: list[dict[str, Any]] = field(default_factory=list)  # as get_discussion_details reads them

    def add_event(self, kind: str, author: str, data: dict[str, Any]) -> dict[str, Any]:
        event = {"id": hashlib.sha1(f"{self.num}-{len(self.events)}-{kind}".encode()).hexdigest()[:24],
                 "type": kind, "createdAt": _now(), "author": {"name": author}, "data": data}
        self.events.append(event)
        return event

    def add_comment(self, author: str, text: str) -> dict[str, Any]:
        latest = {"raw": text, "html": text, "updatedAt": _now(), "author": {"name": author}}
        return self.add_event("comment", author, {"edited": False, "hidden": False, "latest": latest,
                                                  "history": [latest]})

    @property
    def description(self) -> str:
        """The first comment's text (what ``create_commit(create_pr=True)`` set as description)."""
        first = next((e for e in self.events if e["type"] == "comment"), None)
        return "" if first is None else first["data"]["latest"]["raw"]

    @property
    def comments(self) -> list[str]:
        return [e["data"]["latest"]["raw"] for e in self.events if e["type"] == "comment"]

    @property
    def ref(self) -> str:
        return f"refs/pr/{self.num}"


@dataclass
class Repo:
    """One model repo: its commits, refs (``main`` and ``refs/pr/N``) and pull requests."""

    repo_id: str
    private: bool = False
    tokens: set[str] = field(default_factory=set)  # tokens that may read (if private) and write main
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    pulls: list[PullRequest] = field(default_factory=list)
    created_at: str = field(default_factory=_now)


class _HubError(Exception):
    """An HTTP error answered the way the Hub answers it."""

    def __init__(self, status: int, message: str, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra


class _Disconnect(Exception):
    """Drop the connection without an answer (an interrupted request)."""


class _QuietServer(ThreadingHTTPServer):
    """No tracebacks on stderr for connections the client (or ``fail_next('...', 'disconnect')``) drops."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class MiniHub:
    """The in-memory Hub plus the HTTP server in front of it.

    Use as a context manager, or call :meth:`start`/:meth:`stop`. ``url`` is the endpoint to give
    ``HfApi(endpoint=...)`` or ``HF_ENDPOINT``. ``token`` (user ``tester``) is a ready-made token that
    can read and write every repo made with :meth:`add_repo` and every repo it creates through the
    API; other tokens only count once registered with :meth:`add_token` (or ``add_repo(token=)``).

    Access rules, as on the Hub: a private repo is readable only with one of its tokens (401
    ``RepoNotFound`` anonymously, 404 with another valid token); an unregistered token gets 401
    "Invalid credentials"; writing a branch needs one of the repo's tokens (else 403); opening or
    updating a pull request needs only a valid token that can read the repo.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.RLock()
        self.repos: dict[str, Repo] = {}
        self.users: dict[str, str] = {}  # token -> user name
        # (repo id, sha256) -> content: LFS objects uploaded (maybe never committed); per repo, like LFS.
        self.lfs_store: dict[tuple[str, str], bytes] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, raw path, raw query) of every request
        self.user_agents: list[str] = []  # the User-Agent header of every request, in the same order
        self.server_errors: list[str] = []  # tracebacks of bugs in this server (should stay empty)
        self._failures: dict[str, int | str] = {}
        self._counter = 0
        self.token = "hf_minihub_write_token_0000000000"
        self.user = "tester"
        self.add_token(self.token, self.user)
        self._server = _QuietServer((host, port), _make_handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> MiniHub:
        self._thread = threading.Thread(target=self._server.serve_forever, name="minihub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> MiniHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every repo, upload, injected failure and logged request (tokens stay)."""
        with self._lock:
            self.repos.clear()
            self.lfs_store.clear()
            self.requests.clear()
            self.user_agents.clear()
            self.server_errors.clear()
            self._failures.clear()

    # ----------------------------------------------------------------------------- test helpers
    def add_token(self, token: str, user: str | None = None) -> str:
        """Register a valid token (the Hub answers 401 'Invalid credentials' to unknown ones)."""
        with self._lock:
            self.users[token] = user or f"user{len(self.users)}"
        return token

    def add_repo(
        self,
        repo_id: str,
        folder: str | Path | None = None,
        *,
        files: dict[str, bytes | str] | None = None,
        private: bool = False,
        token: str | None = None,
        message: str = "Upload folder",
    ) -> str:
        """Create ``repo_id`` holding the files of ``folder`` (and/or ``files``); return the commit sha.

        The repo gets the Hub's initial ``.gitattributes`` commit first, then one commit with the
        files. A private repo is readable only with ``token`` (registered if new) or ``self.token``.
        """
        content: dict[str, bytes] = {}
        if folder is not None:
            root = Path(folder)
            for path in sorted(root.rglob("*")):
                if path.is_file() and ".git" not in path.relative_to(root).parts:
                    content[path.relative_to(root).as_posix()] = path.read_bytes()
        for name, data in (files or {}).items():
            content[name] = data.encode() if isinstance(data, str) else data
        with self._lock:
            if repo_id in self.repos:
                raise ValueError(f"repo {repo_id} exists already")
            repo = self._create_repo(repo_id, private=private)
            repo.tokens.add(self.token)
            if token is not None:
                if token not in self.users:
                    self.add_token(token)
                repo.tokens.add(token)
            new = dict(repo.commits[repo.refs["main"]].files)
            for name, data in content.items():
                new[name] = StoredFile(data, lfs=_is_lfs(name, data, len(data)))
            return self._commit(repo, "main", new, message, "").sha

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        message: str = "Update",
        *,
        ref: str = "main",
        delete: tuple[str, ...] = (),
        user: str = "someone",
    ) -> str:
        """Commit ``files`` (and delete ``delete``) on ``ref`` directly, as ``user`` would; return the sha.

        On a pull request's ref (``refs/pr/N``) the pull request records the commit as ``user``'s.
        """
        with self._lock:
            repo = self.repos[repo_id]
            new = dict(self._commit_at(repo, ref).files)
            for name in delete:
                del new[name]
            for name, data in files.items():
                raw = data.encode() if isinstance(data, str) else data
                new[name] = StoredFile(raw, lfs=_is_lfs(name, raw, len(raw)))
            commit = self._commit(repo, ref, new, message, "")
            self._record_pr_commit(repo, ref, user, commit)
            return commit.sha

    def new_repo_id(self, name: str = "model", namespace: str = "org") -> str:
        """A repo id no test has used yet (the hub lives for the whole session)."""
        with self._lock:
            self._counter += 1
            return f"{namespace}/{name}-{self._counter}"

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """Path -> content of ``repo_id`` at ``revision`` (a branch, ``refs/pr/N`` or a sha)."""
        with self._lock:
            commit = self._commit_at(self.repos[repo_id], revision)
            return {p: f.data for p, f in commit.files.items()}

    def head(self, repo_id: str, revision: str = "main") -> str:
        """The commit sha ``revision`` points to."""
        with self._lock:
            return self._commit_at(self.repos[repo_id], revision).sha

    def commits(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """The history of ``revision``, newest first (first-parent chain)."""
        with self._lock:
            repo = self.repos[repo_id]
            out, commit = [], self._commit_at(repo, revision)
            while True:
                out.append(commit)
                if not commit.parents:
                    return out
                commit = repo.commits[commit.parents[0]]

    def pull_requests(self, repo_id: str, status: str | None = None) -> list[PullRequest]:
        """The pull requests of ``repo_id`` (all, or only those with ``status``)."""
        with self._lock:
            return [p for p in self.repos[repo_id].pulls if status is None or p.status == status]

    def pull_request(self, repo_id: str, num: int) -> PullRequest:
        """Pull request ``num`` of ``repo_id`` (its events, description, base)."""
        with self._lock:
            return next(p for p in self.repos[repo_id].pulls if p.num == num)

    def set_pr_status(self, repo_id: str, num: int, status: str) -> None:
        """Close or merge a pull request by hand (merging is not applied to ``main``)."""
        with self._lock:
            for pr in self.repos[repo_id].pulls:
                if pr.num == num:
                    pr.status = status
                    return
        raise KeyError(num)

    def fail_next(self, kind: str, status: int | str = 500) -> None:
        """Make the next request of ``kind`` fail, then behave normally again.

        ``kind`` is one of ``commit``, ``lfs_upload``, ``lfs_batch``, ``preupload``, ``create_repo``;
        ``status`` an HTTP status, or ``"disconnect"`` to drop the connection after reading the
        request (the client sees the connection die mid-request). Either way no ref moves.
        Note the client retries ``lfs_upload``/``lfs_batch``/``preupload`` on 5xx (with 1-8 s
        back-off): use a 4xx there to keep a test fast.
        """
        if kind not in _FAILURE_KINDS:
            raise ValueError(f"kind must be one of {_FAILURE_KINDS}")
        with self._lock:
            self._failures[kind] = status

    # ----------------------------------------------------------------------------- internals
    def _maybe_fail(self, kind: str) -> None:
        with self._lock:
            status = self._failures.pop(kind, None)
        if status == "disconnect":
            raise _Disconnect()
        if status is not None:
            raise _HubError(int(status), f"injected failure ({kind})")

    def _new_sha(self, *parts: str) -> str:
        self._counter += 1
        return hashlib.sha1("\0".join((*parts, str(self._counter), _now())).encode()).hexdigest()

    def _create_repo(self, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_id=repo_id, private=private)
        self.repos[repo_id] = repo
        gitattributes = {".gitattributes": StoredFile(DEFAULT_GITATTRIBUTES, lfs=False)}
        self._commit(repo, "main", gitattributes, "initial commit", "", allow_new_ref=True)
        return repo

    def _commit(
        self,
        repo: Repo,
        ref: str,
        files: dict[str, StoredFile],
        message: str,
        description: str,
        *,
        parent: str | None = None,
        allow_new_ref: bool = False,
    ) -> Commit:
        if parent is None:
            parent = repo.refs.get(ref)
            if parent is None and not allow_new_ref:
                raise _HubError(404, f"Invalid rev id: {ref}", "RevisionNotFound")
        commit = Commit(
            sha=self._new_sha(repo.repo_id, ref, message),
            message=message,
            description=description,
            parents=[parent] if parent else [],
            files=files,
        )
        repo.commits[commit.sha] = commit
        repo.refs[ref] = commit.sha
        return commit

    def _record_pr_commit(self, repo: Repo, ref: str, user: str, commit: Commit) -> None:
        """A commit on ``refs/pr/N`` is an event of pull request N, as on the Hub."""
        for pr in repo.pulls:
            if pr.ref == ref:
                pr.add_event("commit", user, {"subject": commit.message, "oid": commit.sha})

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        if revision in repo.refs:
            return repo.commits[repo.refs[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _user(self, auth: str | None) -> str | None:
        """The user behind an ``Authorization`` header; 401 for a token the Hub does not know."""
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.users:
            raise _HubError(401, "Invalid credentials in Authorization header")
        return self.users[token]

    def _readable(self, repo_id: str, auth: str | None) -> Repo:
        """The repo, or the Hub's answer for a missing or private one (401 anonymous, 404 otherwise)."""
        user = self._user(auth)
        repo = self.repos.get(repo_id)
        token = auth.removeprefix("Bearer ").strip() if auth else None
        if repo is None or (repo.private and token not in repo.tokens):
            if user is None:
                raise _HubError(401, "Invalid username or password.", "RepoNotFound")
            raise _HubError(404, "Repository not found", "RepoNotFound")
        return repo

    def _writable(self, repo_id: str, auth: str | None, ref: str, create_pr: bool) -> Repo:
        """Pull requests need read access and a token; anything else needs the repo's own token."""
        repo = self._readable(repo_id, auth)
        if self._user(auth) is None:
            raise _HubError(401, "You must be authenticated to write to a repo")
        token = auth.removeprefix("Bearer ").strip() if auth else None
        if not (create_pr or ref.startswith("refs/pr/")) and token not in repo.tokens:
            raise _HubError(403, f"You don't have the rights to create a commit in {repo_id} on {ref}")
        return repo


def _make_handler(hub: MiniHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr
            pass

        # ------------------------------------------------------------------ plumbing
        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  head: bool = False) -> None:
            self.send_response(status)
            headers = {"Content-Type": "application/json", **(headers or {})}
            for k, v in headers.items():
                self.send_header(k, v)
            if "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head and body:
                self.wfile.write(body)

        def _json(self, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(obj).encode(), headers)

        def _handle(self, method: str) -> None:
            raw = self._body() if method in ("POST", "PUT") else b""
            split = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            # Split before unquoting: a revision like refs%2Fpr%2F1 is one segment.
            segs = [unquote(s) for s in split.path.split("/")[1:]]
            with hub._lock:
                hub.requests.append((method, split.path, split.query))
                hub.user_agents.append(self.headers.get("User-Agent", ""))
            try:
                self._route(method, segs, query, raw)
            except _Disconnect:
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
            except _HubError as e:
                headers = {"X-Error-Message": e.message}
                if e.code:
                    headers["X-Error-Code"] = e.code
                head = method == "HEAD"
                body = json.dumps({"error": e.message, **e.extra}).encode()
                self._send(e.status, body, headers, head=head)
            except Exception as e:  # a bug in the test hub: answer 500 and keep it for the test to see
                with hub._lock:
                    hub.server_errors.append(traceback.format_exc())
                self._send(500, json.dumps({"error": repr(e)}).encode(), {"X-Error-Message": repr(e)[:200]})

        def do_GET(self) -> None:  # noqa: N802
            self._handle("GET")

        def do_HEAD(self) -> None:  # noqa: N802
            self._handle("HEAD")

        def do_POST(self) -> None:  # noqa: N802
            self._handle("POST")

        def do_PUT(self) -> None:  # noqa: N802
            self._handle("PUT")

        # ------------------------------------------------------------------ routing
        def _route(self, method: str, segs: list[str], query: dict[str, str], raw: bytes) -> None:
            auth = self.headers.get("Authorization")
            if segs[:2] == ["api", "repos"] and segs[2:3] == ["create"] and method == "POST":
                return self._create_repo(auth, json.loads(raw or b"{}"))
            if segs[:2] == ["api", "validate-yaml"] and method == "POST":
                return self._json({"errors": [], "warnings": []})
            if segs[:2] == ["api", "whoami-v2"] and method == "GET":
                user = hub._user(auth)
                if user is None:
                    raise _HubError(401, "Invalid username or password.")
                return self._json({"type": "user", "name": user, "orgs": [], "auth": {"type": "access_token"}})
            if segs[:2] == ["api", "models"] and len(segs) >= 4:
                repo_id, action, rest = f"{segs[2]}/{segs[3]}", segs[4:5], segs[5:]
                if not action and method == "GET":
                    return self._info(repo_id, "main", auth, query)
                if action == ["revision"] and method == "GET" and rest:
                    return self._info(repo_id, rest[0], auth, query)
                if action == ["tree"] and method == "GET" and rest:
                    return self._tree(repo_id, rest[0], "/".join(rest[1:]), auth, query)
                if action == ["preupload"] and method == "POST" and rest:
                    return self._preupload(repo_id, rest[0], auth, query, json.loads(raw))
                if action == ["commit"] and method == "POST" and rest:
                    return self._create_commit(repo_id, rest[0], auth, query, raw)
                if action == ["discussions"] and method == "GET" and not rest:
                    return self._discussions(repo_id, auth, query)
                if action == ["discussions"] and method == "GET" and len(rest) == 1 and rest[0].isdigit():
                    return self._discussion(repo_id, int(rest[0]), auth)
                if action == ["discussions"] and method == "POST" and rest[1:] == ["comment"] and rest[0].isdigit():
                    return self._comment(repo_id, int(rest[0]), auth, json.loads(raw or b"{}"))
            if segs[:1] == ["__lfs"] and method == "PUT" and len(segs) == 4:
                return self._lfs_put(f"{segs[1]}/{segs[2]}", segs[3], raw)
            if len(segs) >= 5 and segs[1].endswith(".git") and segs[2:] == ["info", "lfs", "objects", "batch"]:
                return self._lfs_batch(f"{segs[0]}/{segs[1][:-4]}", auth, json.loads(raw))
            if len(segs) >= 5 and segs[2] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve(f"{segs[0]}/{segs[1]}", segs[3], "/".join(segs[4:]), auth, method)
            raise _HubError(404, f"Not found: {method} {self.path} (not served by the test hub)")

        # ------------------------------------------------------------------ read API
        def _info(self, repo_id: str, revision: str, auth: str | None, query: dict[str, str]) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                commit = hub._commit_at(repo, revision)
                blobs = query.get("blobs", "").lower() in ("1", "true")
                siblings = []
                for path in sorted(commit.files):
                    f = commit.files[path]
                    sib: dict[str, Any] = {"rfilename": path}
                    if blobs:
                        sib.update(size=len(f.data), blobId=f.git_oid)
                        if f.lfs:
                            sib["lfs"] = {"size": len(f.data), "sha256": f.sha256, "pointerSize": len(f.pointer)}
                    siblings.append(sib)
                self._json({
                    "_id": hashlib.md5(repo_id.encode()).hexdigest()[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "author": repo_id.split("/")[0],
                    "sha": commit.sha,
                    "lastModified": commit.date,
                    "createdAt": repo.created_at,
                    "private": repo.private,
                    "gated": False,
                    "disabled": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                })

        def _tree(self, repo_id: str, revision: str, prefix: str, auth: str | None,
                  query: dict[str, str]) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                commit = hub._commit_at(repo, revision)
                recursive = query.get("recursive", "").lower() in ("1", "true")
                base = prefix.strip("/")
                entries: dict[str, dict[str, Any]] = {}
                for path, f in sorted(commit.files.items()):
                    if base and not path.startswith(base + "/"):
                        continue
                    rel = path[len(base) + 1:] if base else path
                    parts = rel.split("/")
                    # Folders on the way (all of them when recursive, the first level otherwise).
                    for depth in range(1, len(parts) if recursive else min(2, len(parts))):
                        folder = "/".join(([base] if base else []) + parts[:depth])
                        entries.setdefault(folder, {"type": "directory", "oid": git_blob_sha(folder.encode()),
                                                    "size": 0, "path": folder})
                    if recursive or len(parts) == 1:
                        entry: dict[str, Any] = {"type": "file", "oid": f.git_oid, "size": len(f.data),
                                                 "path": path}
                        if f.lfs:
                            entry["oid"] = git_blob_sha(f.pointer)
                            entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": len(f.pointer)}
                        entries[path] = entry
                if base and not entries:
                    raise _HubError(404, f"{base} does not exist on {revision}", "EntryNotFound")
                self._json(list(entries.values()))

        def _resolve(self, repo_id: str, revision: str, path: str, auth: str | None, method: str) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                commit = hub._commit_at(repo, revision)
                f = commit.files.get(path)
                if f is None:
                    raise _HubError(404, f"Entry not found: {path}", "EntryNotFound")
                data = f.data
                headers = {
                    "Content-Type": "application/octet-stream",
                    "Content-Length": str(len(data)),
                    "X-Repo-Commit": commit.sha,
                    "ETag": f'"{f.etag}"',
                    "Accept-Ranges": "none",
                }
                if f.lfs:
                    headers.update({"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(data))})
            self._send(200, data, headers, head=method == "HEAD")

        def _discussions(self, repo_id: str, auth: str | None, query: dict[str, str]) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                kind, status = query.get("type", "all"), query.get("status", "all")
                pulls = [p for p in repo.pulls if status == "all" or p.status == status]
                if query.get("author"):
                    pulls = [p for p in pulls if p.author == query["author"]]
                if kind == "discussion":
                    pulls = []  # the test hub only has pull requests
                pulls.sort(key=lambda p: -p.num)
                page, size = int(query.get("p", 0)), 50
                chunk = pulls[page * size:(page + 1) * size]
                self._json({
                    "discussions": [
                        {"num": p.num, "title": p.title, "status": p.status, "isPullRequest": True,
                         "createdAt": p.created_at, "author": {"name": p.author},
                         "repo": {"name": repo_id, "type": "model"}, "pinned": False, "numComments": 1,
                         "topReactions": []}
                        for p in chunk
                    ],
                    "count": len(pulls),
                    "start": page * size,
                    "numClosedDiscussions": sum(p.status != "open" for p in repo.pulls),
                })

        def _discussion(self, repo_id: str, num: int, auth: str | None) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                pr = next((p for p in repo.pulls if p.num == num), None)
                if pr is None:
                    raise _HubError(404, "Discussion not found")
                self._json({
                    "num": pr.num, "title": pr.title, "status": pr.status, "isPullRequest": True,
                    "createdAt": pr.created_at, "author": {"name": pr.author},
                    "repo": {"name": repo_id, "type": "model"}, "pinned": False, "locked": False,
                    "events": pr.events, "changes": {"base": "refs/heads/main"}, "filesWithConflicts": [],
                    "diff": "",
                })

        def _comment(self, repo_id: str, num: int, auth: str | None, payload: dict[str, Any]) -> None:
            with hub._lock:
                repo = hub._readable(repo_id, auth)
                user = hub._user(auth)
                if user is None:
                    raise _HubError(401, "You must be authenticated to comment")
                pr = next((p for p in repo.pulls if p.num == num), None)
                if pr is None:
                    raise _HubError(404, "Discussion not found")
                self._json({"newMessage": pr.add_comment(user, str(payload.get("comment", "")))})

        # ------------------------------------------------------------------ write API
        def _create_repo(self, auth: str | None, payload: dict[str, Any]) -> None:
            hub._maybe_fail("create_repo")
            with hub._lock:
                if hub._user(auth) is None:
                    raise _HubError(401, "You must be authenticated to create a repo")
                if payload.get("type", "model") != "model":
                    raise _HubError(400, "the test hub only serves model repos")
                name, org = payload["name"], payload.get("organization") or hub._user(auth)
                repo_id = f"{org}/{name}"
                if repo_id in hub.repos:
                    # The Hub's 409 carries the url: create_repo(exist_ok=True) reads it.
                    raise _HubError(409, "You already created this model repo", url=f"{hub.url}/{repo_id}")
                # "visibility" from huggingface_hub's newer releases, "private" from older ones (the Hub takes both)
                private = payload.get("visibility") == "private" or payload.get("private") is True
                repo = hub._create_repo(repo_id, private=private)
                repo.tokens.add(auth.removeprefix("Bearer ").strip())  # type: ignore[union-attr]
                self._json({"url": f"{hub.url}/{repo_id}", "name": repo_id, "id": repo.created_at})

        def _preupload(self, repo_id: str, revision: str, auth: str | None, query: dict[str, str],
                       payload: dict[str, Any]) -> None:
            hub._maybe_fail("preupload")
            create_pr = query.get("create_pr") == "1"
            with hub._lock:
                repo = hub._writable(repo_id, auth, revision, create_pr)
                commit = hub._commit_at(repo, revision)
                out = []
                for item in payload["files"]:
                    sample = base64.b64decode(item["sample"])
                    lfs = _is_lfs(item["path"], sample, int(item["size"]))
                    existing = commit.files.get(item["path"])
                    oid = None
                    if existing is not None:
                        oid = existing.sha256 if existing.lfs else existing.git_oid
                    out.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular",
                                "shouldIgnore": False, "oid": oid})
                self._json({"files": out, "commitOid": commit.sha})

        def _lfs_batch(self, repo_id: str, auth: str | None, payload: dict[str, Any]) -> None:
            hub._maybe_fail("lfs_batch")
            with hub._lock:
                ref = (payload.get("ref") or {}).get("name") or "refs/pr/new"
                hub._writable(repo_id, auth, ref, create_pr=ref.startswith("refs/pr/"))
                objects = []
                for obj in payload["objects"]:
                    entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
                    if (repo_id, obj["oid"]) not in hub.lfs_store:
                        entry["actions"] = {"upload": {"href": f"{hub.url}/__lfs/{repo_id}/{obj['oid']}"}}
                    objects.append(entry)
            self._json({"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                       headers={"Content-Type": "application/vnd.git-lfs+json"})

        def _lfs_put(self, repo_id: str, oid: str, raw: bytes) -> None:
            hub._maybe_fail("lfs_upload")
            if hashlib.sha256(raw).hexdigest() != oid:
                raise _HubError(400, "sha256 mismatch for the uploaded object")
            with hub._lock:
                hub.lfs_store[(repo_id, oid)] = raw
            self._send(200, b"")

        def _create_commit(self, repo_id: str, revision: str, auth: str | None, query: dict[str, str],
                           raw: bytes) -> None:
            create_pr = query.get("create_pr") == "1"
            lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
            hub._maybe_fail("commit")
            with hub._lock:
                repo = hub._writable(repo_id, auth, revision, create_pr)
                if revision not in repo.refs:  # commits go on a branch or a PR ref, never on a sha
                    raise _HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                base = hub._commit_at(repo, revision)
                header = next((x["value"] for x in lines if x["key"] == "header"), None)
                if header is None:
                    raise _HubError(400, "missing commit header")
                parent = header.get("parentCommit")
                if create_pr and parent is not None:  # the pull request is created from parent_commit
                    if parent not in repo.commits:
                        raise _HubError(404, f"Invalid rev id: {parent}", "RevisionNotFound")
                    base = repo.commits[parent]
                elif parent is not None and parent != base.sha:
                    raise _HubError(412, "A commit has happened since. Please refresh and try again.")
                files = dict(base.files)
                for item in lines:
                    key, value = item["key"], item.get("value", {})
                    if key == "file":
                        data = base64.b64decode(value["content"])
                        files[value["path"]] = StoredFile(data, lfs=False)
                    elif key == "lfsFile":
                        data = hub.lfs_store.get((repo_id, value["oid"]))
                        if data is None:
                            # The Hub refuses a commit that points at an object it never received.
                            raise _HubError(422, f"LFS object {value['oid']} not found for {value['path']}")
                        files[value["path"]] = StoredFile(data, lfs=True)
                    elif key == "deletedFile":
                        if files.pop(value["path"], None) is None:
                            raise _HubError(404, "A file with this name doesn't exist", "EntryNotFound")
                    elif key == "deletedFolder":
                        prefix = value["path"].rstrip("/") + "/"
                        for p in [p for p in files if p.startswith(prefix)]:
                            del files[p]
                    elif key != "header":
                        raise _HubError(400, f"unsupported commit operation {key}")
                user = hub._user(auth) or "anonymous"
                summary, description = header.get("summary", ""), header.get("description", "")
                pr_url = None
                if create_pr:
                    num = 1 + max((p.num for p in repo.pulls), default=0)
                    pr = PullRequest(num=num, title=summary, status="open", author=user, base=base.sha)
                    pr.add_comment(user, description)
                    commit = hub._commit(repo, pr.ref, files, summary, description, parent=base.sha)
                    repo.pulls.append(pr)
                    hub._record_pr_commit(repo, pr.ref, user, commit)
                    pr_url = f"{hub.url}/{repo_id}/discussions/{num}"
                else:
                    commit = hub._commit(repo, revision, files, summary, description, parent=base.sha)
                    hub._record_pr_commit(repo, revision, user, commit)
                body = {"success": True, "commitOid": commit.sha,
                        "commitUrl": f"{hub.url}/{repo_id}/commit/{commit.sha}", "hookOutput": ""}
                if pr_url is not None:
                    body["pullRequestUrl"] = pr_url
                self._json(body)

    return Handler
