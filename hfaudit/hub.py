"""The Hub side of an audit: resolve a source to files on disk, and push a cleaned model back.

Everything goes through the real ``huggingface_hub`` client, with the endpoint passed explicitly
(huggingface_hub reads ``HF_ENDPOINT`` only at import; :func:`hfaudit.constants.hf_endpoint` reads it
at call time). Every Hub failure becomes one hfaudit error with a one-line message that never
contains the token (DESIGN.md sections 4 and 6).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfaudit import constants
from hfaudit.errors import PushError, RepoNotFoundError, UsageError

# Downloaded by default: configs, cards, text, and safetensors weights.
SAFE_PATTERNS = ("*.json", "*.txt", "*.md", "*.safetensors")
# Pickle weights can run code when loaded: only downloaded with an explicit opt-in.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
# The fixed title makes pushes idempotent, like the Hub's safetensors conversion bot.
PR_TITLE = "hfaudit: remove a detected backdoor"
LIBRARY_NAME = "hfaudit"
DEFAULT_REVISION = "main"


@dataclass
class ResolvedSource:
    """Where a model came from and where its files are on disk.

    ``files`` lists every file of the repo or folder at that revision (relative POSIX paths), also
    the pickle weights that were not downloaded, so static checks can still flag them.
    """

    source: str
    local_dir: Path
    repo_id: str | None
    revision: str | None
    commit_sha: str | None
    is_local: bool
    files: list[str]


@dataclass
class PushResult:
    """What a push did: the commit, and the pull request it opened or reused (if any)."""

    repo_id: str
    url: str
    pr_url: str | None
    created_pr: bool
    reused_pr: bool
    commit_sha: str | None


# --------------------------------------------------------------------------------------- resolve
def resolve(
    source: str,
    revision: str | None = None,
    token: str | None = None,
    allow_pickle: bool = False,
    endpoint: str | None = None,
) -> ResolvedSource:
    """Turn a local folder or a Hub repo id into files on disk, pinned to one commit.

    A repo is resolved to its commit sha first (one ``model_info`` call), then downloaded at that
    sha, so the files on disk and the sha in the report always agree even if the branch moves.
    Only configs, cards and safetensors are downloaded unless ``allow_pickle``.

    Args:
        source: An existing local folder, or a Hub repo id (``org/name``).
        revision: Branch, tag or commit sha for a repo (default ``main``); recorded as given.
        token: Hub token; None uses ``HF_TOKEN`` or the login cache.
        allow_pickle: Also download pickle weights (``*.bin``, ``*.pt``, ...).
        endpoint: Hub endpoint; None uses ``HF_ENDPOINT`` as it is now, else huggingface.co.

    Returns:
        The resolved source. For a local folder, ``commit_sha`` is the git HEAD if the folder is
        inside a git work tree, else None.

    Raises:
        RepoNotFoundError: No such folder; repo or revision not found; private or gated repo
            without (sufficient) token; the Hub cannot be reached.
        UsageError: ``revision`` given for a local folder.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if revision is not None:
            raise UsageError(f"a revision ({revision}) only applies to Hub repos, and {source} is a local folder")
        local = path.resolve()
        return ResolvedSource(
            source=source,
            local_dir=local,
            repo_id=None,
            revision=None,
            commit_sha=_git_head(local),
            is_local=True,
            files=_list_files(local),
        )
    if _looks_like_path(source):
        raise RepoNotFoundError(f"no such folder: {source}")
    if not _is_repo_id(source):
        raise RepoNotFoundError(f"no such folder, and not a valid Hub repo id: {source}")

    from huggingface_hub import HfApi, snapshot_download

    endpoint = (endpoint or constants.hf_endpoint()).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME)
    patterns = list(SAFE_PATTERNS) + (list(PICKLE_PATTERNS) if allow_pickle else [])
    try:
        # "main" when none is given, like every huggingface_hub download function; the bare
        # /api/models/{id} route is also one that Hub mirrors (olah offline) refuse with a 401.
        info = api.model_info(source, revision=revision or DEFAULT_REVISION, files_metadata=False)
        sha = info.sha
        if sha is None:
            raise RepoNotFoundError(f"the Hub at {endpoint} gave no commit sha for {source}")
        files = sorted(s.rfilename for s in (info.siblings or []))
        with _quiet_progress():
            local = Path(
                snapshot_download(
                    source, revision=sha, endpoint=endpoint, token=token, allow_patterns=patterns,
                    library_name=LIBRARY_NAME,
                )
            )
    except RepoNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - mapped or re-raised by _map_download_error
        raise _map_download_error(e, source, revision, token, endpoint) from e
    # A repo with no file matching the patterns leaves no snapshot folder behind.
    local.mkdir(parents=True, exist_ok=True)
    return ResolvedSource(
        source=source,
        local_dir=local,
        repo_id=source,
        revision=revision,
        commit_sha=sha,
        is_local=False,
        files=files,
    )


def _map_download_error(
    e: Exception, repo_id: str, revision: str | None, token: str | None, endpoint: str
) -> Exception:
    """One hfaudit error, one line, no token, for anything the download can raise."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    has_token = _token_is_set(token)
    login = "set HF_TOKEN or run `hf auth login`"
    if isinstance(e, GatedRepoError):
        if not has_token:
            return RepoNotFoundError(f"repo {repo_id} is gated: no token is set ({login})")
        return RepoNotFoundError(
            f"repo {repo_id} is gated and your token has no access to it: accept its conditions at {endpoint}/{repo_id}"
        )
    if isinstance(e, RepositoryNotFoundError):
        if not has_token:
            return RepoNotFoundError(f"repo {repo_id} not found, or private: no token is set ({login})")
        return RepoNotFoundError(f"repo {repo_id} not found, or your token has no access to it")
    if isinstance(e, RevisionNotFoundError):
        return RepoNotFoundError(f"revision {revision} not found in {repo_id}")
    if isinstance(e, DisabledRepoError):
        return RepoNotFoundError(f"repo {repo_id} is disabled on the Hub")
    if isinstance(e, OfflineModeIsEnabled):
        return RepoNotFoundError(f"cannot reach the Hub at {endpoint}: offline mode is on (HF_HUB_OFFLINE)")
    if isinstance(e, HfHubHTTPError):
        status = _status(e)
        if status == 401:
            return RepoNotFoundError(
                f"the Hub at {endpoint} rejected the token (HTTP 401): check HF_TOKEN or run `hf auth login` again"
            )
        return RepoNotFoundError(
            f"the Hub at {endpoint} answered HTTP {status} for {repo_id}: {_reason(e, token)}"
        )
    if isinstance(e, _transport_errors()):
        return RepoNotFoundError(f"cannot reach the Hub at {endpoint}: {_reason(e, token)}")
    if isinstance(e, LocalEntryNotFoundError):
        # snapshot_download hides network failures behind a cache miss.
        return RepoNotFoundError(f"cannot download {repo_id} from the Hub at {endpoint}: {_reason(e, token)}")
    return e


# ------------------------------------------------------------------------------------------ push
def push_folder(
    folder: Path,
    *,
    source_repo: str | None,
    to: str | None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str = "hfaudit: backdoor-cleaned weights",
    pr_title: str = PR_TITLE,
    private: bool = False,
) -> PushResult:
    """Push a cleaned model folder in one commit: to a new repo, or as a pull request on the source.

    With ``to``: create ``to`` if needed and commit to its main branch. Without: open a pull request
    on ``source_repo`` titled ``pr_title``, or, when an open one with that title exists, add the
    commit to it instead (never a second PR). The source's main branch is never written. Always
    exactly one commit, and commits are atomic on the Hub, so a failed push leaves the target
    branch as it was. Files already on the target with the same content are not re-sent.

    Args:
        folder: The folder to upload (weights, model card, audit report).
        source_repo: The audited repo id; None when the source was a local folder.
        to: A repo to push to instead of opening a pull request.
        token: Hub token with write access; None uses ``HF_TOKEN`` or the login cache.
        endpoint: Hub endpoint; None uses ``HF_ENDPOINT`` as it is now, else huggingface.co.
        commit_message: Message of the commit (the PR description when a PR is opened).
        pr_title: Title that identifies hfaudit's pull request.
        private: Create ``to`` as a private repo (ignored if it exists).

    Returns:
        What was pushed where.

    Raises:
        PushError: No token, no access, or the Hub failed the upload or commit.
        UsageError: ``to`` is the source repo or not a repo id, neither ``to`` nor
            ``source_repo`` is given, or ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"nothing to push: {folder} is not a folder")
    if to is not None:
        if not _is_repo_id(to):
            raise UsageError(f"--to {to} is not a valid repo id (expected org/name)")
        if source_repo is not None and to.lower() == source_repo.lower():
            raise UsageError(
                f"--to {to} is the audited repo: hfaudit never writes to its main branch; "
                "leave --to out to open a pull request instead"
            )
    elif source_repo is None:
        raise UsageError("nowhere to push: the source is a local folder, so pass --to org/name")

    token = token or _hf_token()
    if not token:
        raise PushError("pushing needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`")

    from huggingface_hub import HfApi

    endpoint = (endpoint or constants.hf_endpoint()).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME)
    target = to if to is not None else source_repo
    assert target is not None
    created_repo = False
    try:
        with _quiet_progress():
            if to is not None:
                created_repo = not api.repo_exists(to)
                api.create_repo(to, private=True if private else None, exist_ok=True)
                info = api.create_commit(to, _folder_operations(folder), commit_message=commit_message)
                return PushResult(
                    repo_id=to, url=f"{endpoint}/{to}", pr_url=None, created_pr=False, reused_pr=False,
                    commit_sha=info.oid,
                )
            open_pr = _find_open_pr(api, target, pr_title)
            if open_pr is not None:
                info = api.create_commit(
                    target, _folder_operations(folder), revision=open_pr.git_reference,
                    commit_message=commit_message,
                )
                return PushResult(
                    repo_id=target, url=open_pr.url, pr_url=open_pr.url, created_pr=False, reused_pr=True,
                    commit_sha=info.oid,
                )
            info = api.create_commit(
                target, _folder_operations(folder), create_pr=True, commit_message=pr_title,
                commit_description=commit_message,
            )
            # No PR when the folder equals main already (the Hub skips empty commits).
            pr_url = info.pr_url
            return PushResult(
                repo_id=target, url=pr_url or f"{endpoint}/{target}", pr_url=pr_url,
                created_pr=pr_url is not None, reused_pr=False, commit_sha=info.oid,
            )
    except Exception as e:  # noqa: BLE001 - mapped or re-raised by _map_push_error
        if created_repo:  # only claim we created it if it is there now
            with contextlib.suppress(Exception):
                created_repo = api.repo_exists(target)
        raise _map_push_error(e, target, token, endpoint, created_repo) from e


def _folder_operations(folder: Path) -> list[Any]:
    """One add operation per file of ``folder``, for a single ``create_commit``.

    Not ``upload_folder``: with ``hf_xet`` installed, huggingface_hub 2.x streams a folder through
    a multi-commit pipeline (batches of up to 256 files), so a push would no longer be one atomic
    commit. ``create_commit`` always makes exactly one.
    """
    from huggingface_hub import CommitOperationAdd

    return [
        CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel))
        for rel in _list_files(folder)
        if not rel.startswith(".cache/huggingface/")  # huggingface_hub's own download metadata
    ]


def _find_open_pr(api: Any, repo_id: str, title: str) -> Any | None:
    """The oldest open pull request on ``repo_id`` titled ``title``, if any."""
    found = [
        d
        for d in api.get_repo_discussions(repo_id, discussion_type="pull_request", discussion_status="open")
        if d.is_pull_request and d.status == "open" and d.title == title
    ]
    return min(found, key=lambda d: d.num) if found else None


def _map_push_error(e: Exception, repo_id: str, token: str, endpoint: str, created_repo: bool) -> Exception:
    """One PushError, one line, no token, for anything a push can raise."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    note = f" (the new repo {repo_id} was created but holds no commit from hfaudit)" if created_repo else ""
    if isinstance(e, RepositoryNotFoundError):
        return PushError(f"cannot push to {repo_id}: repo not found, or your token has no access to it{note}")
    if isinstance(e, HfHubHTTPError):
        status = _status(e)
        if status == 401:
            return PushError(f"the Hub rejected the token (HTTP 401) while pushing to {repo_id}: check HF_TOKEN{note}")
        if status == 403:
            return PushError(f"your token cannot write to {repo_id} (HTTP 403): it needs write access{note}")
        return PushError(
            f"push to {repo_id} failed, nothing was committed: HTTP {status}: {_reason(e, token)}{note}"
        )
    if isinstance(e, _transport_errors()):
        return PushError(
            f"connection to the Hub at {endpoint} failed while pushing to {repo_id}: {_reason(e, token)}; "
            f"commits are atomic, so {repo_id} has either all of this push or none of it{note}"
        )
    if isinstance(e, (ValueError, RuntimeError, OSError)):
        # The client's own checks (LFS batch errors, invalid README metadata, failed uploads).
        return PushError(f"push to {repo_id} failed, nothing was committed: {_reason(e, token)}{note}")
    return e


# ------------------------------------------------------------------------------------- helpers
def _looks_like_path(source: str) -> bool:
    """A source written as a path (not a repo id) that does not exist: say 'no such folder'."""
    return source.startswith((".", "/", "~")) or source.count(os.sep) > 1 or (
        os.altsep is not None and source.count(os.altsep) > 1
    )


def _is_repo_id(value: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError:
        return False
    return True


def _list_files(root: Path) -> list[str]:
    """Every file under ``root`` as a relative POSIX path, without ``.git`` internals."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        for name in filenames:
            out.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(out)


def _git_head(folder: Path) -> str | None:
    """The HEAD commit when ``folder`` is itself a git clone (e.g. ``git clone`` of a Hub repo) with a
    clean work tree; else None. A folder inside some other repo, or with uncommitted changes, has no
    commit that pins what is audited, and reporting one would mislead."""
    def git(*args: str) -> subprocess.CompletedProcess | None:
        try:
            return subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    top = git("rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or Path(top.stdout.strip()).resolve() != folder.resolve():
        return None
    status = git("status", "--porcelain", "--untracked-files=normal")
    if status is None or status.returncode != 0 or status.stdout.strip():
        return None
    head = git("rev-parse", "--verify", "-q", "HEAD")
    sha = head.stdout.strip() if head is not None and head.returncode == 0 else ""
    return sha if len(sha) in (40, 64) else None


def git_toplevel(folder: Path) -> Path | None:
    """The root of the git work tree holding ``folder``, or None (no git, not a work tree)."""
    try:
        run = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
            capture_output=True, text=True, timeout=10, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    top = run.stdout.strip()
    return Path(top) if run.returncode == 0 and top else None


def _hf_token() -> str | None:
    """The implicit token, or None; a broken token source (e.g. failed OIDC) counts as none."""
    try:
        return constants.hf_token()
    except Exception:  # noqa: BLE001 - deciding which message to show must not fail
        return None


def _token_is_set(token: str | None) -> bool:
    return bool(token or _hf_token())


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _reason(e: BaseException, token: str | None) -> str:
    """A short reason: the server's message or the error's first line, with any token masked."""
    text = getattr(e, "server_message", None) or str(e) or type(e).__name__
    text = next((line.strip() for line in str(text).splitlines() if line.strip()), type(e).__name__)
    for secret in {token, _hf_token()}:
        if secret and len(secret) >= 6:  # masking a 1-letter "token" would mangle every word
            text = text.replace(secret, "***")
    return text[:300]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Network-level failures of whichever HTTP library this huggingface_hub uses."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        # A library that was never imported raised nothing: no need to import it here.
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


@contextlib.contextmanager
def _quiet_progress() -> Iterator[None]:
    """Hide huggingface_hub's progress bars while ``HFAUDIT_QUIET`` is set, then restore them."""
    if not constants.quiet():
        yield
        return
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
