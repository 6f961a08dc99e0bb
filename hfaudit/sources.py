"""What a model source names on the Hub: one parser for every way a user writes one.

A source is a local folder, a Hub repo id (``org/name``), an ``hf://org/name[@revision]`` URI (the
form of huggingface_hub's ``HfFileSystem``), or the address of the repo's page
(``https://huggingface.co/org/name``, optionally ``/tree/<revision>``, as copied from a browser).
The last two carry a revision of their own; giving another one as well is a usage error, never a
silent choice between them. Nothing here touches the network or the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from hfaudit.errors import UsageError

HUB_HOSTS = frozenset({"huggingface.co", "www.huggingface.co", "hf.co"})
"""Hosts whose repo pages name a Hub repo (the configured endpoint's host counts as well)."""
_NOT_MODELS = ("datasets", "spaces", "buckets")


@dataclass(frozen=True)
class HubSource:
    """A Hub model repo and the revision the source asks for (None: the default branch)."""

    repo_id: str
    revision: str | None


def is_uri(source: str) -> bool:
    """True when ``source`` is written as an ``hf://`` URI or a web address, not a folder or a repo id."""
    return source.lower().startswith(("hf://", "http://", "https://"))


def parse_uri(source: str, revision: str | None = None, endpoint: str | None = None) -> HubSource:
    """The repo and revision an ``hf://`` URI or a Hub page address names.

    Accepted: ``hf://org/name``, ``hf://org/name@rev`` (``rev`` URL-encoded when it holds a ``/``,
    as in ``refs%2Fpr%2F1``), and ``http(s)://<host>/org/name`` with an optional ``/tree/<rev>``,
    where ``<host>`` is huggingface.co, hf.co or the host of ``endpoint``. A revision in the source
    and ``revision`` must agree when both are given.

    Raises:
        UsageError: not one of these forms (a dataset or Space, a file inside the repo, another
            host, an invalid repo id), or two different revisions.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    shown = source if len(source) <= 200 else source[:200] + "..."
    expected = "expected hf://org/name[@revision] or https://huggingface.co/org/name[/tree/revision]"
    if source.lower().startswith("hf://"):
        path = source[len("hf://"):].strip("/")
        repo_part, at, rev_part = path.partition("@")
        if "/" in rev_part:
            raise UsageError(f"{shown} names a file inside the repo; {expected}")
        in_source = unquote(rev_part) if at else None
        if at and not in_source:
            raise UsageError(f"{shown} has an empty revision after '@'; {expected}")
        parts = repo_part.split("/")
    else:
        url = urlsplit(source)
        hosts = set(HUB_HOSTS)
        if endpoint:
            hosts.add(urlsplit(endpoint).netloc.lower())
        if url.netloc.lower() not in hosts:
            raise UsageError(f"{shown} is not on the Hugging Face Hub ({', '.join(sorted(hosts))}); {expected}")
        segs = [s for s in url.path.split("/") if s]
        if segs and segs[0] in _NOT_MODELS:
            raise UsageError(f"{shown} is a {segs[0][:-1]}, not a model repo; {expected}")
        parts, in_source = segs[:2], None
        rest = segs[2:]
        if rest:
            if rest[0] != "tree" or len(rest) != 2:
                raise UsageError(f"{shown} is not the page of a model repo; {expected}")
            in_source = unquote(rest[1])
    if parts and parts[0] in _NOT_MODELS:
        raise UsageError(f"{shown} is a {parts[0][:-1]}, not a model repo; {expected}")
    repo_id = "/".join(parts)
    try:
        if len(parts) != 2:
            raise HFValidationError("not org/name")
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UsageError(f"{shown} does not name a model repo (org/name); {expected}") from None
    if in_source is not None and revision is not None and in_source != revision:
        raise UsageError(f"revision {revision} disagrees with the revision {in_source} in {shown}: give one of them",
                         param="revision")
    return HubSource(repo_id=repo_id, revision=in_source if in_source is not None else revision)


def hub_repo_id(source: str, endpoint: str | None = None) -> str | None:
    """The Hub repo ``source`` names when it is written as a URI or address, else None (never raises)."""
    if not is_uri(source):
        return None
    try:
        return parse_uri(source, endpoint=endpoint).repo_id
    except UsageError:
        return None
