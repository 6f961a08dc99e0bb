"""The Hub side of an audit: resolve a source to files on disk, and push a cleaned model back.

Everything goes through the real ``huggingface_hub`` client, with the endpoint passed explicitly
(huggingface_hub reads ``HF_ENDPOINT`` only at import; :func:`hfaudit.constants.hf_endpoint` reads it
at call time). Every Hub failure becomes one hfaudit error with a one-line message that never
contains the token (docs/design.md sections 4 and 6).

Every Hub call is bounded in time (:func:`hfaudit.constants.hub_timeouts`): a ``timeout`` where the
call takes one, and, for the calls that take none, huggingface_hub's shared HTTP client made to time
out and to cap the waits a 429/5xx answer asks for before a retry (:func:`_bounded_hub_client`). An
answer that is not a Hub API response (not JSON, the wrong shape) is the Hub's failure, not
hfaudit's: it is reported like an unreachable Hub (exit 3), never as an internal error.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hfaudit import __version__, constants, sources
from hfaudit.errors import HfAuditError, PushError, RepoNotFoundError, UsageError
from hfaudit.modelfiles import UnreadableFile, read_bytes, read_json

# A fixed title, like the Hub's safetensors conversion bot: a later run finds its own pull request.
PR_TITLE = "hfaudit: remove a detected backdoor"
LIBRARY_NAME = "hfaudit"
DEFAULT_REVISION = "main"
INDEX_FILE = "model_index.json"
CARD_FILE = "README.md"
# The shard index of a weights variant (diffusion_pytorch_model.safetensors.index.fp16.json).
_VARIANT_INDEX = re.compile(r"\.(safetensors|bin)\.index\.[^./]+\.json$")
# A commit sha as the Hub gives it (SHA-1; SHA-256 for git's newer object format). It names a cache folder.
_COMMIT_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


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
    base_commit: str | None = None
    """The audited commit a pull request is based on (None for a push to ``to``)."""


# --------------------------------------------------------------------------------------- resolve
def resolve(
    source: str,
    revision: str | None = None,
    token: str | None = None,
    allow_pickle: bool = False,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    pipelines: Iterable[str] | None = None,
) -> ResolvedSource:
    """Turn a local folder or a Hub repo into files on disk, pinned to one commit.

    A repo is resolved to its commit sha first (one ``model_info`` call), then downloaded at that
    sha, so the files on disk and the sha in the report always agree even if the branch moves.
    ``model_index.json`` comes first: a pipeline hfaudit does not audit (``safety.index_refusal``)
    stops there, before any weights; an audited one brings only what its components need
    (:func:`files_to_download`), as diffusers would load them. With ``HF_HUB_OFFLINE`` set, the Hub
    is not asked: the revision is the commit the cache recorded for it, the files the cached ones.

    Args:
        source: An existing local folder, a Hub repo id (``org/name``), ``hf://org/name[@revision]``
            or ``https://huggingface.co/org/name[/tree/revision]``.
        revision: Branch, tag or commit sha for a repo (default ``main``); recorded as given. It
            must agree with a revision written in ``source``.
        token: Hub token; None uses ``HF_TOKEN`` or the login cache.
        allow_pickle: Also download the components' pickle weights (``*.bin``, ``*.pt``, ...).
        endpoint: Hub endpoint; None uses ``HF_ENDPOINT`` as it is now, else huggingface.co.
        cache_dir: huggingface_hub cache folder to download into and read offline (like
            diffusers' ``cache_dir``); None uses ``HF_HUB_CACHE``.
        pipelines: the pipeline classes the caller will load; a repo of another class stops after
            ``model_index.json``. None: every class hfaudit audits (``safety.SUPPORTED_PIPELINES``).

    Returns:
        The resolved source. For a local folder, ``commit_sha`` is the git HEAD if the folder is
        inside a git work tree, else None.

    Raises:
        RepoNotFoundError: No such folder; repo or revision not found; private or gated repo
            without (sufficient) token; the Hub cannot be reached, does not answer in time
            (``HF_HUB_DOWNLOAD_TIMEOUT``, ``HF_HUB_ETAG_TIMEOUT``) or gives no Hub API answer;
            offline and the repo is not (completely) in the cache.
        UsageError: no source given (empty), control characters in ``source``, ``revision`` or
            ``cache_dir``, ``revision`` given for a local folder or disagreeing with the one in
            ``source``, a URI or address that names no model repo, ``cache_dir`` not a folder.
    """
    if not isinstance(source, str) or not source.strip():
        raise UsageError("no model given: pass a Hub repo id (org/name) or a local pipeline folder")
    cache_text = os.fspath(cache_dir) if cache_dir is not None else None
    for what, value in (("model", source), ("revision", revision), ("cache_dir", cache_text)):
        if isinstance(value, str) and _CONTROL_CHARS.search(value):
            raise UsageError(f"the {what} {_shown(value)} holds a control character (a NUL byte, a line break...)")
    if sources.is_uri(source):
        endpoint = (endpoint or constants.hf_endpoint()).rstrip("/")
        parsed = sources.parse_uri(source, revision, endpoint)
        repo_id, revision = parsed.repo_id, parsed.revision
    else:
        path = Path(source).expanduser()
        if _is_dir(path):
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
            raise RepoNotFoundError(f"no such folder: {_shown(source)}")
        if not is_repo_id(source):
            raise RepoNotFoundError(f"no such folder, and not a valid Hub repo id: {_shown(source)}")
        repo_id = source
        endpoint = (endpoint or constants.hf_endpoint()).rstrip("/")
    cache = _cache_root(cache_text)
    if constants.hub_offline():
        return _resolve_from_cache(source, repo_id, revision, cache, allow_pickle, pipelines)

    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME, library_version=__version__)
    timeouts = constants.hub_timeouts()
    try:
        with _bounded_hub_client(timeouts.request):
            with _hub_answer(_NOT_AN_ANSWER_ON_DOWNLOAD):
                # "main" when none is given, like every huggingface_hub download function; the bare
                # /api/models/{id} route is also one that Hub mirrors (olah offline) refuse with a 401.
                info = api.model_info(
                    repo_id, revision=revision or DEFAULT_REVISION, files_metadata=False, timeout=timeouts.request
                )
            sha, files = _pinned_files(info)
            local = _snapshot_dir(cache, repo_id, sha)

            def fetch(names: Iterable[str]) -> None:
                with _quiet_progress(), _hub_answer(_NOT_AN_ANSWER_ON_DOWNLOAD):
                    for name in names:
                        _download(repo_id, name, sha, endpoint=endpoint, token=token, cache=cache,
                                  etag_timeout=timeouts.etag)

            first = [INDEX_FILE] if INDEX_FILE in files else []
            fetch(first)  # alone first: it decides whether anything else is worth downloading
            index = _read_index(local / INDEX_FILE) if first else None
            fetch(n for n in files_to_download(files, index, allow_pickle, pipelines) if n not in first)
    except Exception as e:  # noqa: BLE001 - mapped or re-raised by _map_download_error
        raise _map_download_error(e, repo_id, revision, token, endpoint, timeouts.request) from e
    # A repo with nothing to download leaves no snapshot folder behind.
    local.mkdir(parents=True, exist_ok=True)
    _record_ref(local.parent.parent, revision or DEFAULT_REVISION, sha)
    return ResolvedSource(
        source=source,
        local_dir=local,
        repo_id=repo_id,
        revision=revision,
        commit_sha=sha,
        is_local=False,
        files=files,
    )


def files_to_download(files: Iterable[str], index: Any, allow_pickle: bool = False,
                      pipelines: Iterable[str] | None = None) -> list[str]:
    """What an audit needs of a Hub repo's files (repo-relative paths), given its ``model_index.json``.

    ``model_index.json`` itself; and, only when it names a pipeline hfaudit audits
    (``safety.index_refusal``, for the classes of ``pipelines``; None: all it audits): the model card,
    and in each component folder the audit reads (``safety.needed_components``: never a safety checker
    or feature extractor) the configs (``*.json``; a tokenizer's ``*.txt`` too) and the default variant
    of the weights: safetensors, plus pickle only with ``allow_pickle``. A variant
    (``*.fp16.safetensors``) only when a folder has no default weights of that kind. Never top-level
    weights (``*.ckpt``), subfolders, or folders no component names. ``index`` is the parsed
    ``model_index.json`` (None when absent or unreadable: nothing more).
    """
    from hfaudit.safety import PICKLE_SUFFIXES, TOKENIZER_CLASSES, TOKENIZER_SUFFIXES, needed_components

    files = set(files)
    wanted = {INDEX_FILE} & files
    if not _accepted(index, pipelines):
        return sorted(wanted)
    wanted |= {CARD_FILE} & files
    kinds = [(".safetensors",)] + ([PICKLE_SUFFIXES] if allow_pickle else [])
    for name, (_lib, cls) in needed_components(index).items():
        if not _is_plain_name(name):
            continue
        inside = sorted(f for f in files if f.startswith(name + "/") and "/" not in f[len(name) + 1:])
        if cls in TOKENIZER_CLASSES:
            wanted |= {f for f in inside if f.endswith(TOKENIZER_SUFFIXES)}
            continue
        chosen: list[str] = []
        for suffixes in kinds:
            weights = [f for f in inside if f.endswith(suffixes)]
            chosen += [f for f in weights if not _is_variant(f, suffixes)] or weights
        variants = any(_is_variant(f, suffixes) for f in chosen for suffixes in kinds if f.endswith(suffixes))
        wanted |= set(chosen)
        wanted |= {f for f in inside if f.endswith(".json") and (variants or not _VARIANT_INDEX.search(f))}
    return sorted(wanted)


def _is_variant(path: str, suffixes: tuple[str, ...]) -> bool:
    """A weights variant: a dot in the file name before its weight suffix (``model.fp16.safetensors``,
    ``model.fp16-00001-of-00002.safetensors``), unlike the default (``model-00001-of-00002.safetensors``)."""
    name = path.rsplit("/", 1)[-1]
    suffix = next((s for s in suffixes if name.endswith(s)), "")
    return "." in name[: len(name) - len(suffix)]


def _is_plain_name(name: str) -> bool:
    """A component folder name: one path segment, not '.' or '..', no control character."""
    return (bool(name) and "/" not in name and "\\" not in name and name not in (".", "..")
            and not _CONTROL_CHARS.search(name))


def _read_index(path: Path) -> Any:
    """The parsed ``model_index.json`` (bounded read, regular files only), None when it cannot be read.
    An unreadable one gets its finding from the static checks; here it only means: download nothing more."""
    try:
        return read_json(path)
    except UnreadableFile:
        return None


def _download(repo_id: str, name: str, sha: str, *, endpoint: str, token: str | None, cache: Path,
              etag_timeout: float) -> None:
    """One file of the repo at ``sha`` into the cache (nothing sent when it is already there)."""
    from huggingface_hub import hf_hub_download

    hf_hub_download(repo_id, name, revision=sha, endpoint=endpoint, token=token, cache_dir=str(cache),
                    library_name=LIBRARY_NAME, library_version=__version__, etag_timeout=etag_timeout)


def _cache_root(cache_dir: str | None) -> Path:
    """The huggingface_hub cache folder to use: ``cache_dir``, else ``HF_HUB_CACHE``.

    Raises:
        UsageError: ``cache_dir`` exists and is not a folder.
    """
    if cache_dir is None:
        return Path(constants.hf_hub_cache()).expanduser()
    root = Path(cache_dir).expanduser()
    if root.exists() and not root.is_dir():
        raise UsageError(f"cache_dir {_shown(cache_dir)} is not a folder", param="cache_dir")
    return root


def _snapshot_dir(cache: Path, repo_id: str, sha: str) -> Path:
    """Where huggingface_hub keeps the files of ``repo_id`` at commit ``sha`` in ``cache``."""
    from huggingface_hub.file_download import repo_folder_name

    return cache / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots" / sha


def _record_ref(storage: Path, revision: str, sha: str) -> None:
    """Write ``refs/<revision>`` in the repo's cache folder, as huggingface_hub does when it downloads
    at a branch: files are downloaded at the sha, and an offline run needs to know which one
    ``revision`` was. Best effort: a cache that cannot be written only costs that."""
    if revision == sha or not _is_repo_file_name(revision):
        return
    ref = storage / "refs" / revision
    with contextlib.suppress(OSError):
        if not (ref.is_file() and ref.read_text() == sha):
            ref.parent.mkdir(parents=True, exist_ok=True)
            ref.write_text(sha)


def _resolve_from_cache(source: str, repo_id: str, revision: str | None, cache: Path,
                        allow_pickle: bool, pipelines: Iterable[str] | None = None) -> ResolvedSource:
    """The cached snapshot of ``repo_id`` at ``revision``, for offline mode: no Hub call at all.

    A branch or tag is the commit the cache recorded for it (``refs/<revision>``, written by every
    download at a branch); a commit sha is its own snapshot. ``files`` lists the cached files.

    Raises:
        RepoNotFoundError: the revision or its snapshot is not in the cache, or the snapshot lacks
            ``model_index.json`` or files its components need.
    """
    from huggingface_hub.file_download import repo_folder_name

    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    rev = revision or DEFAULT_REVISION
    where = repo_id if revision is None else f"{repo_id} at revision {revision}"
    hint = "run once online to download it, or unset HF_HUB_OFFLINE"
    sha = rev if _COMMIT_SHA.fullmatch(rev) else _cached_ref(storage, rev)
    local = storage / "snapshots" / sha if sha else None
    if local is None or not _is_dir(local) or not (local / INDEX_FILE).is_file():
        raise RepoNotFoundError(f"{where} is not in the Hugging Face cache ({cache}) and offline mode is on "
                                f"(HF_HUB_OFFLINE): {hint}")
    files = _list_files(local)
    index = _read_index(local / INDEX_FILE)
    if _accepted(index, pipelines):
        from hfaudit.safety import needed_components

        wanted = files_to_download(files, index, allow_pickle, pipelines)
        for name in filter(_is_plain_name, needed_components(index)):
            if not any(f.startswith(name + "/") for f in wanted):
                raise RepoNotFoundError(f"{where} is only partly in the Hugging Face cache ({cache}): nothing of "
                                        f"its {name}, and offline mode is on (HF_HUB_OFFLINE): {hint}")
    return ResolvedSource(source=source, local_dir=local, repo_id=repo_id, revision=revision, commit_sha=sha,
                          is_local=False, files=files)


def _accepted(index: Any, pipelines: Iterable[str] | None = None) -> bool:
    """True when a parsed ``model_index.json`` names a pipeline of ``pipelines`` (None: any hfaudit
    audits) that hfaudit audits (the static checks' rule)."""
    from hfaudit.safety import SUPPORTED_PIPELINES, index_refusal

    supported = SUPPORTED_PIPELINES if pipelines is None else SUPPORTED_PIPELINES & frozenset(pipelines)
    return index is not None and bool(supported) and index_refusal(index, supported) is None


def _cached_ref(storage: Path, revision: str) -> str | None:
    """The commit sha the cache recorded for ``revision`` (``refs/<revision>``), or None."""
    if not _is_repo_file_name(revision):
        return None
    try:
        sha = read_bytes(storage / "refs" / revision, 128).decode("ascii").strip()
    except (UnreadableFile, UnicodeDecodeError):
        return None
    return sha if _COMMIT_SHA.fullmatch(sha) else None


def _pinned_files(info: Any) -> tuple[str, list[str]]:
    """The commit sha and file list of a ``model_info`` answer; ``_NotAHubAnswer`` if it has neither.

    The sha becomes a folder name in the cache, so only a real commit sha is accepted.
    """
    sha = getattr(info, "sha", None)
    siblings = getattr(info, "siblings", None)
    names = [getattr(s, "rfilename", None) for s in siblings] if isinstance(siblings, list) else None
    if not isinstance(sha, str) or not _COMMIT_SHA.fullmatch(sha) or names is None:
        raise _NotAHubAnswer("model_info without a commit sha or a file list")
    if not all(isinstance(n, str) and _is_repo_file_name(n) for n in names):
        raise _NotAHubAnswer("model_info with a file name that is no repo path")
    return sha, sorted(names)


def _is_repo_file_name(name: str) -> bool:
    """A relative path inside the repo, as the Hub lists them: not empty, not absolute, no '..', no NUL."""
    return (
        bool(name) and not name.startswith(("/", "\\")) and "\x00" not in name
        and ".." not in name.replace("\\", "/").split("/")
    )


def _map_download_error(
    e: Exception, repo_id: str, revision: str | None, token: str | None, endpoint: str,
    timeout: float | None = None,
) -> Exception:
    """One hfaudit error, one line, no token, for anything the download can raise."""
    from huggingface_hub.errors import (
        DisabledRepoError,
        FileMetadataError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(e, _NotAHubAnswer) or _cause_of_type(e, FileMetadataError) is not None:
        # FileMetadataError: a file answer without the Hub's headers (X-Repo-Commit, ETag...), e.g. HTML.
        return RepoNotFoundError(f"the Hub at {endpoint} gave an answer that is not a Hub API response for {repo_id}")
    timed_out = _timeout_in(e)
    if timed_out is not None:  # raised as is, or hidden behind LocalEntryNotFoundError by hf_hub_download
        return RepoNotFoundError(
            f"cannot reach the Hub at {endpoint}: no answer within {_seconds(timed_out, timeout)}"
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
        # hf_hub_download hides network failures (and 429/5xx answers) behind a cache miss.
        cause = e.__cause__
        if cause is not None and cause is not e and isinstance(cause, (HfHubHTTPError, *_transport_errors())):
            return _map_download_error(cause, repo_id, revision, token, endpoint, timeout)  # type: ignore[arg-type]
        return RepoNotFoundError(f"cannot download {repo_id} from the Hub at {endpoint}: {_reason(e, token)}")
    return e


# ------------------------------------------------------------------------------------------ push
DEFAULT_COMMIT_MESSAGE = "hfaudit: backdoor-cleaned weights"
# hfaudit's record of the commit a pull request is based on: the Hub's API names a pull request's
# target branch (``changes.base``), never the commit it was opened from. A hidden line of the PR
# description, which only the PR's author (or a repo admin, which shows as an edit) can change.
_AUDITED_MARKER = "<!-- hfaudit-audited-commit: {sha} -->"
_AUDITED_MARKER_RE = re.compile(r"<!-- hfaudit-audited-commit: ([0-9a-f]{40}|[0-9a-f]{64}) -->")


def check_commit_message(message: str | None) -> None:
    """Refuse a commit message the Hub would refuse or that would forge a second line.

    Raises:
        UsageError: empty, only spaces, or with a control character (a line break...).
    """
    if message is None:
        return
    if not isinstance(message, str) or not message.strip():
        raise UsageError("commit_message is empty: give a one-line message", param="commit_message")
    if _CONTROL_CHARS.search(message):
        raise UsageError(f"commit_message {_shown(message)} holds a control character (a line break...): "
                         "give a one-line message", param="commit_message")


def push_folder(
    folder: Path,
    *,
    source_repo: str | None,
    to: str | None,
    token: str | None = None,
    endpoint: str | None = None,
    commit_message: str | None = None,
    description: str = "",
    audited_commit: str | None = None,
    pr_title: str = PR_TITLE,
    private: bool = False,
) -> PushResult:
    """Push a cleaned model folder in one commit: to a repo of its own, or as a pull request on the source.

    With ``to``: create ``to`` if needed (private with ``private``) and commit to its main branch.
    Without: a pull request on ``source_repo`` based on ``audited_commit`` (``parent_commit``), not
    on whatever main is now, so merging it cannot silently replace what main gained after the audit
    (the Hub shows such files as conflicts). An open pull request is reused only when it is hfaudit's
    own for this commit: titled ``pr_title``, opened by the token's account (``whoami``), still
    open, its description holding hfaudit's audited-commit marker for ``audited_commit`` (written
    by hfaudit when it opened it: the Hub gives no base commit for a pull request), and every commit
    on it made by that account. The reusing commit names the PR head it checked as its parent, so a
    push onto the PR meanwhile fails it instead of being built on, and a comment with
    ``description`` tells the reviewers what changed. Any other PR (someone else's with the same
    title, a closed one, one based on another commit) is left alone and a new one is opened.

    The source's main branch is never written. Always exactly one commit, and commits are atomic on
    the Hub, so a failed push leaves the target branch as it was.

    Args:
        folder: The folder to upload (weights, model card, audit report).
        source_repo: The audited repo id; None when the source was a local folder.
        to: A repo to push to instead of opening a pull request.
        token: Hub token with write access; None uses ``HF_TOKEN`` or the login cache.
        endpoint: Hub endpoint; None uses ``HF_ENDPOINT`` as it is now, else huggingface.co.
        commit_message: The commit's one-line message (default :data:`DEFAULT_COMMIT_MESSAGE`). A new
            pull request keeps the title ``pr_title`` (the Hub titles it after its first commit),
            and a message given here heads its description instead.
        description: What was found, removed and verified: the commit's description, the new pull
            request's description, and the comment on a reused one.
        audited_commit: The commit sha the cleaned copy was made from; required for a pull request.
        pr_title: Title that identifies hfaudit's pull requests.
        private: Create ``to`` as a private repo; refused without ``to``, and when ``to`` exists
            and is public (hfaudit never changes a repo's visibility).

    Returns:
        What was pushed where.

    Raises:
        PushError: No token, no access, or the Hub failed the upload or commit, did not answer in
            time (``HF_HUB_DOWNLOAD_TIMEOUT``) or gave no Hub API answer.
        UsageError: ``to`` is the source repo or not a repo id, neither ``to`` nor
            ``source_repo`` is given, ``folder`` is not a folder, ``private`` without ``to`` or for
            an existing public repo, a bad ``commit_message``, or no ``audited_commit`` for a PR.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"nothing to push: {folder} is not a folder")
    check_commit_message(commit_message)
    if private and to is None:
        raise UsageError("private only applies with --to (a new repo): a pull request goes to the source "
                         "repo, whose visibility hfaudit never changes", param="private")
    if to is not None:
        if not is_repo_id(to):
            raise UsageError(f"to {to} is not a valid repo id (expected org/name)", param="to")
        if source_repo is not None and to.lower() == source_repo.lower():
            raise UsageError(
                f"--to {to} is the audited repo: hfaudit never writes to its main branch; "
                "leave --to out to open a pull request instead"
            )
    elif source_repo is None:
        raise UsageError("nowhere to push: the source is a local folder, so pass --to org/name")
    elif audited_commit is None or not _COMMIT_SHA.fullmatch(audited_commit):
        raise UsageError("audited_commit must be the commit sha the cleaned copy was made from: the pull "
                         "request is based on it", param="audited_commit")

    token = token or _hf_token()
    if not token:
        raise PushError("pushing needs a Hugging Face token with write access: set HF_TOKEN or run `hf auth login`")

    from huggingface_hub import HfApi

    endpoint = (endpoint or constants.hf_endpoint()).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token, library_name=LIBRARY_NAME, library_version=__version__)
    target = to if to is not None else source_repo
    assert target is not None
    message = DEFAULT_COMMIT_MESSAGE if commit_message is None else commit_message
    timeout = constants.hub_timeouts().request
    answer = _hub_answer(_NOT_AN_ANSWER_ON_PUSH)  # stateless: one instance serves every ``with``
    created_repo = False
    with _bounded_hub_client(timeout):  # none of these calls takes a timeout of its own
        try:
            with _quiet_progress():
                if to is not None:
                    with answer:
                        exists = api.repo_exists(to)
                        if private and exists and api.model_info(to, timeout=timeout).private is not True:
                            raise UsageError(f"private: {to} exists and is public, and hfaudit never changes a "
                                             "repo's visibility: make it private on the Hub first, or push to a "
                                             "new repo", param="private")
                        created_repo = not exists
                        api.create_repo(to, private=True if private else None, exist_ok=True)
                    operations = _folder_operations(folder)
                    with answer:
                        info = api.create_commit(to, operations, commit_message=message,
                                                 commit_description=description)
                        return PushResult(
                            repo_id=to, url=f"{endpoint}/{to}", pr_url=None, created_pr=False, reused_pr=False,
                            commit_sha=_commit_oid(info),
                        )
                assert audited_commit is not None
                marker = _AUDITED_MARKER.format(sha=audited_commit)
                with answer:
                    user = _account(api)
                    own = _find_own_pr(api, target, pr_title, user, audited_commit)
                operations = _folder_operations(folder)
                if own is not None:
                    num, url, head = own
                    with answer:
                        info = api.create_commit(
                            target, operations, revision=f"refs/pr/{num}", parent_commit=head,
                            commit_message=message, commit_description=f"{description}\n\n{marker}".strip(),
                        )
                        sha = _commit_oid(info)
                    if sha != head and description.strip():  # a commit was made: tell the reviewers
                        # Best effort: the commit is made and carries the same description.
                        with contextlib.suppress(Exception), answer:
                            api.comment_discussion(target, num, description)
                    return PushResult(
                        repo_id=target, url=url, pr_url=url, created_pr=False, reused_pr=True, commit_sha=sha,
                        base_commit=audited_commit,
                    )
                with answer:
                    main_head = _commit_sha_of(api.model_info(target, revision=DEFAULT_REVISION, timeout=timeout))
                    if main_head != audited_commit:
                        _compare_with_nothing(api, target, operations)
                    lead = "" if commit_message is None else commit_message + "\n\n"
                    info = api.create_commit(
                        target, operations, create_pr=True, parent_commit=audited_commit, commit_message=pr_title,
                        commit_description=f"{lead}{description}\n\n{marker}".strip(),
                    )
                    # No PR when the folder equals the audited commit, which is main (the Hub skips empty commits).
                    pr_url = info.pr_url
                    if pr_url is not None and not isinstance(pr_url, str):
                        raise _NotAHubAnswer("a pull request url that is not a string")
                    return PushResult(
                        repo_id=target, url=pr_url or f"{endpoint}/{target}", pr_url=pr_url,
                        created_pr=pr_url is not None, reused_pr=False, commit_sha=_commit_oid(info),
                        base_commit=audited_commit,
                    )
        except Exception as e:  # noqa: BLE001 - mapped or re-raised by _map_push_error
            if created_repo:  # only claim we created it if it is there now
                with contextlib.suppress(Exception):
                    created_repo = api.repo_exists(target)
            raise _map_push_error(e, target, token, endpoint, created_repo, timeout) from e


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


def _compare_with_nothing(api: Any, repo_id: str, operations: list[Any]) -> None:
    """Make ``create_commit(create_pr=True)`` send every file, for a pull request based on a commit
    that is not main's head.

    huggingface_hub leaves out of a commit the files whose content equals main's, also when
    ``parent_commit`` bases the pull request on an older commit: the pull request would then keep
    the old commit's file where the cleaned copy has main's. Pre-uploading here (huggingface_hub's
    own two-step upload: ``create_commit`` does not ask again) and forgetting main's file ids sends
    every file, so the pull request holds exactly the folder.
    """
    api.preupload_lfs_files(repo_id, additions=operations, create_pr=True)
    for op in operations:
        op._remote_oid = None  # noqa: SLF001 - read by create_commit's "file unchanged" test only


def _account(api: Any) -> str:
    """The account name of the token (``whoami``): who opens, and may reuse, a pull request."""
    name = api.whoami().get("name")
    if not isinstance(name, str) or not name:
        raise _NotAHubAnswer("whoami without an account name")
    return name


def _commit_sha_of(info: Any) -> str:
    """The commit sha of a ``model_info`` answer; ``_NotAHubAnswer`` if it has none."""
    sha = getattr(info, "sha", None)
    if not isinstance(sha, str) or not _COMMIT_SHA.fullmatch(sha):
        raise _NotAHubAnswer("model_info without a commit sha")
    return sha


def _find_own_pr(api: Any, repo_id: str, title: str, user: str, audited_commit: str) -> tuple[int, str, str] | None:
    """hfaudit's own open pull request for ``audited_commit``, oldest first: (number, url, head sha), or None.

    Listed by the Hub's author filter, and checked again here with the details of each candidate
    (:func:`_own_pr_head`): a PR is never reused on its title alone.
    """
    listed = [
        d
        for d in api.get_repo_discussions(repo_id, author=user, discussion_type="pull_request",
                                          discussion_status="open")
        if d.is_pull_request and d.status == "open" and d.title == title and d.author == user
    ]
    for d in sorted(listed, key=lambda d: d.num):
        head = _own_pr_head(api.get_discussion_details(repo_id, d.num), user, audited_commit)
        if head is not None:
            return d.num, d.url, head
    return None


def _own_pr_head(details: Any, user: str, audited_commit: str) -> str | None:
    """The head commit of a pull request that is hfaudit's own for ``audited_commit``, else None.

    Own: opened by ``user`` and open; its description (the first event, a comment by ``user``,
    unedited or last edited by ``user``) holds the audited-commit marker of ``audited_commit`` and no
    other; and it has commits, every one by ``user``. The head is the last commit's sha.
    """
    from huggingface_hub import DiscussionComment, DiscussionCommit

    if not (details.is_pull_request and details.status == "open" and details.author == user):
        return None
    events = list(details.events or [])
    first = events[0] if events else None
    if not isinstance(first, DiscussionComment) or first.author != user or not isinstance(first.content, str):
        return None
    if first.edited and _last_editor(first) != user:
        return None
    if set(_AUDITED_MARKER_RE.findall(first.content)) != {audited_commit}:
        return None
    commits = [e for e in events if isinstance(e, DiscussionCommit)]
    if not commits or any(c.author != user for c in commits):
        return None
    head = commits[-1].oid
    return head if isinstance(head, str) and _COMMIT_SHA.fullmatch(head) else None


def _last_editor(comment: Any) -> str | None:
    """Who last edited a comment, or None when the answer does not say."""
    try:
        return comment.last_edited_by
    except (KeyError, TypeError, AttributeError):
        return None


def _commit_oid(info: Any) -> str | None:
    oid = getattr(info, "oid", None)
    if oid is not None and not isinstance(oid, str):
        raise _NotAHubAnswer("a commit id that is not a string")
    return oid


def _map_push_error(
    e: Exception, repo_id: str, token: str, endpoint: str, created_repo: bool, timeout: float | None = None
) -> Exception:
    """One PushError, one line, no token, for anything a push can raise."""
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if isinstance(e, HfAuditError):  # hfaudit's own refusal (a usage error found on the Hub): as it is
        return e
    note = f" (the new repo {repo_id} was created but holds no commit from hfaudit)" if created_repo else ""
    atomic = f"commits are atomic, so {repo_id} has either all of this push or none of it"
    if isinstance(e, _NotAHubAnswer):
        return PushError(
            f"push to {repo_id} failed: the Hub at {endpoint} gave an answer that is not a Hub API response; "
            f"{atomic}{note}"
        )
    timed_out = _timeout_in(e)
    if timed_out is not None:
        return PushError(
            f"push to {repo_id} failed: the Hub at {endpoint} gave no answer within {_seconds(timed_out, timeout)}; "
            f"{atomic}{note}"
        )
    if isinstance(e, RepositoryNotFoundError):
        return PushError(f"cannot push to {repo_id}: repo not found, or your token has no access to it{note}")
    if isinstance(e, HfHubHTTPError):
        status = _status(e)
        if status == 401:
            return PushError(f"the Hub rejected the token (HTTP 401) while pushing to {repo_id}: check HF_TOKEN{note}")
        if status == 403:
            return PushError(f"your token cannot write to {repo_id} (HTTP 403): it needs write access{note}")
        if status == 412:
            return PushError(f"push to {repo_id} failed, nothing was committed: the pull request received another "
                             f"commit while hfaudit pushed (HTTP 412); run it again{note}")
        return PushError(
            f"push to {repo_id} failed, nothing was committed: HTTP {status}: {_reason(e, token)}{note}"
        )
    if isinstance(e, _transport_errors()):
        return PushError(
            f"connection to the Hub at {endpoint} failed while pushing to {repo_id}: {_reason(e, token)}; "
            f"{atomic}{note}"
        )
    if isinstance(e, (ValueError, RuntimeError, OSError)):
        # The client's own checks (LFS batch errors, invalid README metadata, failed uploads).
        return PushError(f"push to {repo_id} failed, nothing was committed: {_reason(e, token)}{note}")
    return e


# ------------------------------------------------------------------------------------- helpers
# C0 controls and DEL: no repo id holds one, and a folder name with a NUL or a line break is an injection.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")


def _shown(value: str, limit: int = 200) -> str:
    """``value`` fit for a one-line message: control characters escaped, at most ``limit`` characters."""
    text = repr(value)[1:-1] if _CONTROL_CHARS.search(value) else value
    return text if len(text) <= limit else text[:limit] + "..."


def _is_dir(path: Path) -> bool:
    """``path.is_dir()``, False where the name itself is not a valid path (too long, ...)."""
    try:
        return path.is_dir()
    except (OSError, ValueError):
        return False


def _looks_like_path(source: str) -> bool:
    """A source written as a path (not a repo id) that does not exist: say 'no such folder'."""
    return source.startswith((".", "/", "~")) or source.count(os.sep) > 1 or (
        os.altsep is not None and source.count(os.altsep) > 1
    )


def is_repo_id(value: str) -> bool:
    """True when ``value`` is a valid Hub repo id (``org/name``), by huggingface_hub's own rule."""
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


class _NotAHubAnswer(Exception):
    """A Hub answer huggingface_hub or hfaudit could not read: not JSON, or JSON of the wrong shape."""


# What huggingface_hub raises on an answer it cannot parse: ``r.json()`` on HTML (JSONDecodeError, a
# ValueError), ``ModelInfo(**[])`` (TypeError), a missing key (KeyError), ``[].get`` (AttributeError),
# a date that is not one (ValueError), JSON nested too deep (RecursionError). Around a download no
# ValueError can be ours (the repo id is checked before); around a push ValueError is also the
# client's own checks (invalid README metadata, ...), which _map_push_error reports with their reason.
_NOT_AN_ANSWER_ON_DOWNLOAD: tuple[type[BaseException], ...] = (
    ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError,
)
_NOT_AN_ANSWER_ON_PUSH: tuple[type[BaseException], ...] = (
    json.JSONDecodeError, TypeError, KeyError, AttributeError, IndexError, RecursionError,
)


class _hub_answer:  # noqa: N801 - used like contextlib's context managers
    """Around huggingface_hub calls only: ``errors`` raised there mean the Hub's answer was unreadable.

    Wraps the Hub calls, never hfaudit's own code, so that a bug of ours still surfaces as one.
    HTTP errors (``HfHubHTTPError`` is an ``OSError``) and transport errors pass through unchanged.
    """

    def __init__(self, errors: tuple[type[BaseException], ...]) -> None:
        self.errors = errors

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if exc is not None and isinstance(exc, self.errors) and not _is_hub_error(exc):
            raise _NotAHubAnswer(f"{type(exc).__name__}: {exc}") from exc
        return False


def _is_hub_error(e: BaseException) -> bool:
    """huggingface_hub's own errors (validation, HTTP...), which must keep their meaning."""
    return type(e).__module__.startswith("huggingface_hub.errors")


_RESET_IN = re.compile(r"(\bt\s*=\s*)(\d+)")  # the reset time of a RateLimit header: "api";r=0;t=55
_CLIENT_LOCK = threading.Lock()
_client_users = 0
_client_restore: tuple[Any, Any] | None = None  # (the factory set before, the bounded one installed)


@contextlib.contextmanager
def _bounded_hub_client(timeout: float) -> Iterator[None]:
    """huggingface_hub's shared HTTP client, with a finite timeout while hfaudit talks to the Hub.

    huggingface_hub 2.x builds its shared client with ``timeout=None``, and many calls take no timeout
    or pass ``timeout=None`` explicitly (``list_repo_tree``, ``create_commit``, ``get_repo_discussions``,
    ``repo_exists``...): a Hub that accepts the connection and never answers would hang them forever.
    And its retries sleep as long as a 429/5xx answer asks (``Retry-After: 3600``, five times).
    This wraps the client factory that is set (a library user's own included: its proxies,
    certificates, hooks and finite timeouts are kept) so that every request of its client gives the
    timeouts it leaves unset ``timeout`` seconds, and no answer asks for a longer wait than that
    before a retry; then it puts that factory back. Nested and concurrent uses share one
    installation; the last one out restores the factory, unless someone else has set another one
    meanwhile. Switching factories closes the shared client (huggingface_hub reopens it on the next
    call).
    """
    global _client_users, _client_restore
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    with _CLIENT_LOCK:
        if _client_users == 0:
            previous = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) or _http.default_client_factory

            def bound(request: Any) -> None:
                # A request hook, not only the client's default: an explicit ``timeout=None`` (as
                # huggingface_hub's pagination passes) overrides a client default, not this.
                phases = request.extensions.get("timeout") or {}
                request.extensions["timeout"] = {
                    k: timeout if phases.get(k) is None else phases[k] for k in ("connect", "read", "write", "pool")
                }

            def shorten_waits(response: Any) -> None:
                # What huggingface_hub's retries read: ``Retry-After: N`` and ``RateLimit: ...;t=N``.
                headers = response.headers
                wait = headers.get("retry-after", "").strip()
                if wait.isdigit() and int(wait) > longest_wait:
                    headers["retry-after"] = str(longest_wait)
                if "ratelimit" in headers:
                    headers["ratelimit"] = _RESET_IN.sub(
                        lambda m: m.group(1) + str(min(int(m.group(2)), longest_wait)), headers["ratelimit"]
                    )

            longest_wait = max(1, int(timeout))

            def bounded() -> Any:
                client = previous()
                hooks = getattr(client, "event_hooks", None)
                if hooks is not None:
                    client.event_hooks = {
                        **hooks,
                        "request": [*hooks.get("request", []), bound],
                        "response": [*hooks.get("response", []), shorten_waits],
                    }
                return client

            set_client_factory(bounded)
            _client_restore = (previous, bounded)
        _client_users += 1
    try:
        yield
    finally:
        with _CLIENT_LOCK:
            _client_users -= 1
            if _client_users == 0 and _client_restore is not None:
                previous, bounded = _client_restore
                _client_restore = None
                if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is bounded:
                    set_client_factory(previous)


def _timeout_errors() -> tuple[type[BaseException], ...]:
    """"No answer in time" of whichever HTTP library this huggingface_hub uses, and Python's own."""
    errors: list[type[BaseException]] = [TimeoutError]
    for module, name in (("httpx2", "TimeoutException"), ("httpx", "TimeoutException"), ("requests", "Timeout")):
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            errors.append(cls)
    return tuple(errors)


def _cause_of_type(e: BaseException, cls: type[BaseException] | tuple[type[BaseException], ...]) -> BaseException | None:
    """``e`` or the first of its explicit causes (``raise ... from``) that is a ``cls``, or None."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, cls):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__
    return None


def _timeout_in(e: BaseException) -> BaseException | None:
    """The timeout behind ``e``: itself or its explicit cause (``raise ... from``, as huggingface_hub
    re-raises some as ``LocalEntryNotFoundError``), or None."""
    return _cause_of_type(e, _timeout_errors())


def _seconds(e: BaseException, fallback: float | None) -> str:
    """'N s': the timeout that expired, as the HTTP request recorded it, else ``fallback``."""
    phase = {"ConnectTimeout": "connect", "ReadTimeout": "read", "WriteTimeout": "write",
             "PoolTimeout": "pool"}.get(type(e).__name__)
    value: Any = fallback
    try:
        recorded = e.request.extensions.get("timeout") or {}  # type: ignore[attr-defined]
        if phase and isinstance(recorded.get(phase), (int, float)):
            value = recorded[phase]
    except Exception:  # noqa: BLE001 - httpx raises RuntimeError when the request is unknown
        pass
    return f"{value:g} s" if isinstance(value, (int, float)) else "the timeout"


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
