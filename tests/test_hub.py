"""hfaudit.hub against a local Hub, through the real huggingface_hub client (no network)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from hfaudit import hub as hfhub
from hfaudit.errors import ExitCode, PushError, RepoNotFoundError, UsageError

SECRET = "hf_s3cr3t_do_not_print_0123456789"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _with_pickles(folder: Path) -> Path:
    """Add pickle weights next to the safetensors ones, as many Hub repos have."""
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04pickle-not-really")
    (folder / "extra.ckpt").write_bytes(b"\x80\x04more")
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------- resolve: local
def test_resolve_local_folder(tiny_pipeline_dir: Path) -> None:
    src = hfhub.resolve(str(tiny_pipeline_dir))
    assert src.is_local and src.repo_id is None and src.revision is None
    assert src.local_dir == tiny_pipeline_dir.resolve()
    assert src.commit_sha is None  # tmp is not inside a git work tree
    assert src.files == sorted(_tree(tiny_pipeline_dir))
    assert {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
            "scheduler/scheduler_config.json"} <= set(src.files)


def test_resolve_local_git_folder_records_head(tiny_pipeline_dir: Path) -> None:
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tiny_pipeline_dir)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    src = hfhub.resolve(str(tiny_pipeline_dir))  # the clone itself, clean: the commit pins it
    assert src.commit_sha == head
    assert not any(f.startswith(".git/") for f in src.files)
    # a folder inside some other work tree is not pinned by that tree's HEAD
    assert hfhub.resolve(str(tiny_pipeline_dir / "unet")).commit_sha is None
    # uncommitted changes: HEAD no longer describes what is audited
    (tiny_pipeline_dir / "scheduler" / "scheduler_config.json").write_text("{}")
    assert hfhub.resolve(str(tiny_pipeline_dir)).commit_sha is None


def test_resolve_local_folder_rejects_revision(tiny_pipeline_dir: Path) -> None:
    with pytest.raises(UsageError):
        hfhub.resolve(str(tiny_pipeline_dir), revision="main")


@pytest.mark.parametrize("source", ["./missing", "/no/such/dir", "~/no-such-dir-hfaudit", "a/b/c"])
def test_resolve_missing_folder(source: str, hub) -> None:
    before = len(hub.requests)
    with pytest.raises(RepoNotFoundError, match="no such folder") as err:
        hfhub.resolve(source, endpoint=hub.url)
    assert err.value.exit_code == ExitCode.NOT_FOUND
    assert len(hub.requests) == before  # decided locally, the Hub is not asked


def test_resolve_invalid_repo_id(hub) -> None:
    with pytest.raises(RepoNotFoundError, match="not a valid Hub repo id"):
        hfhub.resolve("not a repo!", endpoint=hub.url)


# -------------------------------------------------------------------------------- resolve: Hub
def test_resolve_repo_downloads_safe_files_only(hub, tiny_pipeline_dir: Path) -> None:
    folder = _with_pickles(tiny_pipeline_dir)
    repo = hub.new_repo_id("tiny")
    sha = hub.add_repo(repo, folder)

    src = hfhub.resolve(repo, endpoint=hub.url)

    assert not src.is_local and src.repo_id == repo and src.revision is None
    assert src.commit_sha == sha == hub.head(repo)
    # Every file of the repo is listed, also the ones not downloaded.
    assert src.files == sorted(hub.files(repo))
    assert {"unet/diffusion_pytorch_model.bin", "extra.ckpt", ".gitattributes"} <= set(src.files)
    on_disk = _tree(src.local_dir)
    expected = {k: v for k, v in _tree(folder).items() if not k.endswith((".bin", ".ckpt"))}
    assert on_disk == expected  # same bytes, and no pickle (nor .gitattributes) downloaded


def test_resolve_repo_allow_pickle(hub, tiny_pipeline_dir: Path) -> None:
    folder = _with_pickles(tiny_pipeline_dir)
    repo = hub.new_repo_id("tiny")
    hub.add_repo(repo, folder)
    src = hfhub.resolve(repo, endpoint=hub.url, allow_pickle=True)
    # the unet's pickle too; never a top-level checkpoint no component loads
    assert _tree(src.local_dir) == {k: v for k, v in _tree(folder).items() if k != "extra.ckpt"}


def test_resolve_pins_revision_to_a_sha(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("tiny")
    first = hub.add_repo(repo, tiny_pipeline_dir)
    second = hub.commit(repo, {"model_index.json": '{"moved": true}'}, "move main")

    at_main = hfhub.resolve(repo, revision="main", endpoint=hub.url)
    assert at_main.revision == "main" and at_main.commit_sha == second
    assert (at_main.local_dir / "model_index.json").read_text() == '{"moved": true}'

    at_first = hfhub.resolve(repo, revision=first, endpoint=hub.url)
    assert at_first.commit_sha == first
    assert (at_first.local_dir / "model_index.json").read_bytes() == (tiny_pipeline_dir / "model_index.json").read_bytes()


def test_resolve_reads_hf_endpoint_at_call_time(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    repo = hub.new_repo_id("tiny")
    sha = hub.add_repo(repo, tiny_pipeline_dir)
    monkeypatch.setenv("HF_ENDPOINT", hub.url)  # after huggingface_hub was imported
    assert hfhub.resolve(repo).commit_sha == sha


def test_private_repo_without_token(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("private")
    hub.add_repo(repo, tiny_pipeline_dir, private=True, token=SECRET)
    with pytest.raises(RepoNotFoundError) as err:
        hfhub.resolve(repo, endpoint=hub.url)
    msg = str(err.value)
    assert "no token is set" in msg and "HF_TOKEN" in msg and repo in msg
    assert "\n" not in msg
    assert err.value.exit_code == ExitCode.NOT_FOUND


def test_private_repo_with_a_token_that_has_no_access(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("private")
    hub.add_repo(repo, tiny_pipeline_dir, private=True, token=hub.add_token("hf_owner_token_xyz"))
    other = hub.add_token(SECRET)  # valid on the Hub, but not for this repo
    with pytest.raises(RepoNotFoundError, match="your token has no access") as err:
        hfhub.resolve(repo, token=other, endpoint=hub.url)
    assert SECRET not in str(err.value)


def test_private_repo_with_an_unknown_token(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("private")
    hub.add_repo(repo, tiny_pipeline_dir, private=True, token=hub.add_token("hf_owner_token_abc"))
    with pytest.raises(RepoNotFoundError, match="rejected the token") as err:
        hfhub.resolve(repo, token="hf_never_issued_" + SECRET, endpoint=hub.url)
    assert SECRET not in str(err.value)


def test_private_repo_with_token(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    repo = hub.new_repo_id("private")
    sha = hub.add_repo(repo, tiny_pipeline_dir, private=True, token=SECRET)
    assert hfhub.resolve(repo, token=SECRET, endpoint=hub.url).commit_sha == sha
    monkeypatch.setenv("HF_TOKEN", SECRET)  # the implicit token works as well
    src = hfhub.resolve(repo, endpoint=hub.url)
    assert src.commit_sha == sha
    assert (src.local_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_missing_repo(hub) -> None:
    with pytest.raises(RepoNotFoundError, match="not found, or private: no token is set"):
        hfhub.resolve("org/does-not-exist", endpoint=hub.url)


def test_missing_repo_with_token(hub, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.token)
    with pytest.raises(RepoNotFoundError, match="not found, or your token has no access"):
        hfhub.resolve("org/does-not-exist", endpoint=hub.url)


def test_missing_revision(hub, tiny_pipeline_dir: Path) -> None:
    repo = hub.new_repo_id("tiny")
    hub.add_repo(repo, tiny_pipeline_dir)
    with pytest.raises(RepoNotFoundError, match=f"revision no-such-branch not found in {repo}"):
        hfhub.resolve(repo, revision="no-such-branch", endpoint=hub.url)


def test_unreachable_hub() -> None:
    endpoint = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(RepoNotFoundError, match=f"cannot reach the Hub at {endpoint}"):
        hfhub.resolve("org/name", endpoint=endpoint)


# ------------------------------------------------------------------------------------------ push
def test_push_to_new_repo(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    source_head = hub.add_repo(source, tiny_pipeline_dir)
    (tiny_pipeline_dir / "README.md").write_text("---\nbase_model: x\n---\n# cleaned\n")
    to = hub.new_repo_id("cleaned", namespace="tester")

    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=to, token=hub.token, endpoint=hub.url)

    assert result.repo_id == to and result.url == f"{hub.url}/{to}"
    assert not result.created_pr and not result.reused_pr and result.pr_url is None
    commits = hub.commits(to)
    assert [c.message for c in commits] == ["hfaudit: backdoor-cleaned weights", "initial commit"]
    assert result.commit_sha == commits[0].sha == hub.head(to)
    remote = hub.files(to)
    assert {k: v for k, v in remote.items() if k != ".gitattributes"} == _tree(tiny_pipeline_dir)
    assert hub.head(source) == source_head and hub.pull_requests(source) == []


def test_push_to_existing_repo_adds_one_commit(hub, tiny_pipeline_dir: Path) -> None:
    to = hub.new_repo_id("cleaned")
    before = hub.add_repo(to, files={"old.txt": "x"}, token=hub.token)
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=to, token=hub.token, endpoint=hub.url)
    commits = hub.commits(to)
    assert commits[1].sha == before and commits[0].sha == result.commit_sha


def test_push_private_repo(hub, tiny_pipeline_dir: Path) -> None:
    to = hub.new_repo_id("cleaned", namespace="tester")
    hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=to, token=hub.token, endpoint=hub.url, private=True)
    assert hub.repos[to].private


def test_push_refuses_the_source_as_target(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    hub.add_repo(source, tiny_pipeline_dir)
    before = len(hub.requests)
    for to in (source, source.upper()):
        with pytest.raises(UsageError, match="never writes to its main branch"):
            hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=to, token=hub.token, endpoint=hub.url)
    with pytest.raises(UsageError):
        hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to="not a repo", token=hub.token, endpoint=hub.url)
    with pytest.raises(UsageError, match="pass --to"):
        hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=None, token=hub.token, endpoint=hub.url)
    assert len(hub.requests) == before


def test_push_opens_then_reuses_one_pr(hub, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, tiny_pipeline_dir)
    cleaned = tmp_path / "cleaned"
    cleaned.mkdir()
    (cleaned / "README.md").write_text("# cleaned v1\n")
    (cleaned / "audit.json").write_text('{"verdict": "backdoor"}')

    first = hfhub.push_folder(cleaned, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                              audited_commit=main, description="found and removed")

    prs = hub.pull_requests(source)
    assert [(p.num, p.title, p.status) for p in prs] == [(1, hfhub.PR_TITLE, "open")]
    assert first.created_pr and not first.reused_pr
    assert first.pr_url == first.url == f"{hub.url}/{source}/discussions/1"
    assert first.commit_sha == hub.head(source, "refs/pr/1")
    assert hub.head(source) == main  # main untouched
    assert hub.files(source, "refs/pr/1")["audit.json"] == b'{"verdict": "backdoor"}'
    pr_commit = hub.commits(source, "refs/pr/1")[0]
    assert pr_commit.message == hfhub.PR_TITLE and pr_commit.parents == [main]
    assert prs[0].author == hub.user and f"<!-- hfaudit-audited-commit: {main} -->" in prs[0].description
    assert prs[0].description.startswith("found and removed")

    (cleaned / "README.md").write_text("# cleaned v2\n")
    second = hfhub.push_folder(cleaned, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                               audited_commit=main, description="second run")

    assert second.reused_pr and not second.created_pr and second.pr_url == first.pr_url
    assert len(hub.pull_requests(source)) == 1  # never a second PR
    assert hub.head(source) == main
    pr_history = hub.commits(source, "refs/pr/1")
    assert [c.sha for c in pr_history[:3]] == [second.commit_sha, first.commit_sha, main]
    assert hub.files(source, "refs/pr/1")["README.md"] == b"# cleaned v2\n"
    assert hub.pull_request(source, 1).comments[-1] == "second run"  # the reviewers are told what changed
    # The only commit request on main asked for a PR; the other went to the PR ref.
    commits = [(path, query) for method, path, query in hub.requests if method == "POST" and "/commit/" in path]
    assert commits[-2:] == [(f"/api/models/{source}/commit/main", "create_pr=1"),
                            (f"/api/models/{source}/commit/refs%2Fpr%2F1", "")]

    # Pushing the same folder again changes nothing: no commit, no PR.
    third = hfhub.push_folder(cleaned, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                              audited_commit=main, description="third run")
    assert third.reused_pr and third.commit_sha == second.commit_sha == hub.head(source, "refs/pr/1")
    assert len(hub.pull_requests(source)) == 1 and hub.head(source) == main
    assert "third run" not in hub.pull_request(source, 1).comments  # no commit, no comment


def test_push_of_what_main_already_has_opens_no_pr(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, tiny_pipeline_dir)
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                               audited_commit=main)
    assert not result.created_pr and result.pr_url is None and result.commit_sha == main
    assert hub.pull_requests(source) == [] and hub.head(source) == main


def test_push_opens_a_new_pr_once_the_old_one_is_closed(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, files={"model_index.json": "{}"})
    hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                      audited_commit=main)
    hub.set_pr_status(source, 1, "closed")
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                               audited_commit=main)
    assert result.created_pr and result.pr_url.endswith("/discussions/2")
    assert [p.status for p in hub.pull_requests(source)] == ["closed", "open"]


def test_push_ignores_other_open_prs(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, files={"model_index.json": "{}"})
    from huggingface_hub import HfApi

    HfApi(endpoint=hub.url, token=hub.token).upload_folder(
        repo_id=source, folder_path=tiny_pipeline_dir, create_pr=True, commit_message="someone else's PR"
    )
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                               audited_commit=main)
    assert result.created_pr and result.pr_url.endswith("/discussions/2")


def test_push_without_token(hub, tiny_pipeline_dir: Path) -> None:
    source = hub.new_repo_id("source")
    hub.add_repo(source, tiny_pipeline_dir)
    before = len(hub.requests)
    with pytest.raises(PushError, match="HF_TOKEN") as err:
        hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=None, endpoint=hub.url, audited_commit="c" * 40)
    assert "\n" not in str(err.value)
    assert len(hub.requests) == before


def test_push_uses_the_implicit_token(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", hub.token)
    to = hub.new_repo_id("cleaned")
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=to, endpoint=hub.url)
    assert result.commit_sha == hub.head(to)


def test_push_without_write_access(hub, tiny_pipeline_dir: Path) -> None:
    owner = hub.add_token("hf_owner_of_target")
    to = hub.new_repo_id("theirs")
    head = hub.add_repo(to, files={"a.txt": "a"}, token=owner)
    with pytest.raises(PushError, match="cannot write") as err:
        hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=to, token=hub.add_token(SECRET), endpoint=hub.url)
    assert SECRET not in str(err.value)
    assert hub.head(to) == head


@pytest.mark.parametrize(
    ("kind", "status"),
    [("commit", 500), ("commit", "disconnect"), ("lfs_upload", 403), ("preupload", 400)],
)
@pytest.mark.parametrize("mode", ["to", "pr"])
def test_interrupted_push_leaves_the_remote_unchanged(hub, tiny_pipeline_dir: Path, kind, status, mode) -> None:
    source = hub.new_repo_id("source")
    hub.add_repo(source, files={"model_index.json": "{}"})
    to = None
    if mode == "to":
        to = hub.new_repo_id("cleaned")
        hub.add_repo(to, files={"old.txt": "x"}, token=hub.token)
    target = to or source
    heads = {r: hub.head(r) for r in {source, target}}
    files = {r: hub.files(r) for r in {source, target}}

    hub.fail_next(kind, status)
    with pytest.raises(PushError) as err:
        hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=to, token=hub.token, endpoint=hub.url,
                          audited_commit=heads[source])

    msg = str(err.value)
    assert target in msg and "\n" not in msg and SECRET not in msg
    assert {r: hub.head(r) for r in heads} == heads
    assert {r: hub.files(r) for r in files} == files
    assert hub.pull_requests(source) == []
    # and the next try goes through
    result = hfhub.push_folder(tiny_pipeline_dir, source_repo=source, to=to, token=hub.token, endpoint=hub.url,
                               audited_commit=heads[source])
    assert result.commit_sha == hub.head(target, "main" if to else "refs/pr/1")


def test_token_never_in_error_messages(hub, tiny_pipeline_dir: Path, monkeypatch) -> None:
    """Every error path, with a distinctive token: the token appears in no message."""
    private = hub.new_repo_id("private")
    hub.add_repo(private, tiny_pipeline_dir, private=True, token="hf_owner_only")
    hub.add_token(SECRET)
    unreachable = f"http://127.0.0.1:{_free_port()}"
    errors: list[Exception] = []
    calls = [
        lambda: hfhub.resolve(private, token=SECRET, endpoint=hub.url),
        lambda: hfhub.resolve(private, token=SECRET + "x", endpoint=hub.url),
        lambda: hfhub.resolve("org/missing", token=SECRET, endpoint=hub.url),
        lambda: hfhub.resolve(private, revision="nope", token=SECRET, endpoint=hub.url),
        lambda: hfhub.resolve("org/x", token=SECRET, endpoint=unreachable),
        lambda: hfhub.push_folder(tiny_pipeline_dir, source_repo=private, to=None, token=SECRET, endpoint=hub.url,
                                  audited_commit="b" * 40),
        lambda: hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to=private, token=SECRET, endpoint=hub.url),
        lambda: hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to="org/y", token=SECRET, endpoint=unreachable),
        lambda: hfhub.push_folder(tiny_pipeline_dir, source_repo=None, to="org/z", token=SECRET + "x", endpoint=hub.url),
    ]
    monkeypatch.setenv("HF_TOKEN", SECRET)
    calls.append(lambda: hfhub.resolve(private, endpoint=hub.url))
    for call in calls:
        with pytest.raises((RepoNotFoundError, PushError)) as err:
            call()
        errors.append(err.value)
    for e in errors:
        assert SECRET not in str(e) and SECRET not in repr(e.args), e
        assert "\n" not in str(e)


# ------------------------------------------------------------------------------------------ olah
def test_resolve_through_olah(olah_hub, tiny_pipeline_dir: Path) -> None:
    """A real Hub mirror (olah, offline) serving a local git repo: the same code path as the Hub."""
    folder = _with_pickles(tiny_pipeline_dir)
    sha = olah_hub.add_repo("org/tiny-olah", folder)

    src = hfhub.resolve("org/tiny-olah", endpoint=olah_hub.url)

    assert src.commit_sha == sha and src.repo_id == "org/tiny-olah"
    assert src.files == sorted(_tree(folder))
    expected = {k: v for k, v in _tree(folder).items() if not k.endswith((".bin", ".ckpt"))}
    assert _tree(src.local_dir) == expected
    # olah answers an unknown revision like an unknown repo (401 RepoNotFound), not RevisionNotFound.
    with pytest.raises(RepoNotFoundError, match="org/tiny-olah"):
        hfhub.resolve("org/tiny-olah", revision="nope", endpoint=olah_hub.url)
    with pytest.raises(RepoNotFoundError, match="not found"):
        hfhub.resolve("org/not-mirrored", endpoint=olah_hub.url)


def test_hub_env_serves_code_without_an_endpoint_argument(hub_env, tiny_pipeline_dir: Path) -> None:
    """diffusers knows nothing of hfaudit's endpoint: through hub_env it loads from the local hub."""
    from diffusers import DiffusionPipeline

    repo = hub_env.new_repo_id("tiny")
    hub_env.add_repo(repo, tiny_pipeline_dir)
    assert hfhub.resolve(repo).commit_sha == hub_env.head(repo)
    pipe = DiffusionPipeline.from_pretrained(repo, revision="main", use_safetensors=True)
    assert type(pipe).__name__ == "DDPMPipeline" and pipe.unet.config.sample_size == 8
