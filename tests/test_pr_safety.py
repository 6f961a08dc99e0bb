"""Pull requests a maintainer can merge safely, against the local Hub through the real client.

hfaudit reuses only its own open pull request for the very commit it audited (opened by the token's
account, commits all by that account, the audited-commit marker in the description), bases a new
one on the audited commit (``parent_commit``), keeps the source's model card and licence, and says
in the description what was found, removed and verified. A cleaned copy (``--to``) names the source
as ``base_model`` and carries its licence.

Most tests call ``hub.push_folder`` on a prepared folder; the few that run ``clean`` script the
scan (as tests/test_clean.py does) and use its tiny budgets.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard
from test_card import _result
from test_clean import FAST, FAST_SCAN, box_trigger, make_scan_result
from typer.testing import CliRunner

from hfaudit import __version__
from hfaudit import hub as hfhub
from hfaudit.card import (
    AUDIT_FILE,
    MAX_CARD_BYTES,
    SECTION_BEGIN,
    SECTION_END,
    SourceCard,
    card_files,
    make_card,
    push_description,
    read_source_card,
)
from hfaudit.cleaning import clean
from hfaudit.errors import ExitCode, UsageError
from hfaudit.results import BACKDOOR, CLEAN

SOURCE_CARD = """---
license: apache-2.0
license_link: LICENSE
tags:
- digits
---

# Tiny digits model

Trained by its authors on scikit-learn digits. Please cite our paper.
"""


def _marker(sha: str) -> str:
    return f"<!-- hfaudit-audited-commit: {sha} -->"


def _folder(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def _push(hub, folder: Path, source: str, audited: str, **kw):
    return hfhub.push_folder(folder, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                             audited_commit=audited, **kw)


@pytest.fixture
def scripted_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan finds a backdoor, the re-scan of the cleaned model none (the slow part, scripted)."""
    verdicts = [BACKDOOR, CLEAN]

    def fake_detect(model, config=None, carried=()):
        result = make_scan_result(model.source.source, verdicts.pop(0), box_trigger(), repo_id=model.source.repo_id)
        result.source.commit_sha = model.source.commit_sha  # the commit that was resolved, as a real scan says
        return result

    monkeypatch.setattr("hfaudit.cleaning.detect", fake_detect)


def _clean(hub, source: str, out: Path, **kw):
    return clean(source, output_dir=out, config=FAST, scan_config=FAST_SCAN, device="cpu", push=True,
                 token=hub.token, endpoint=hub.url, **kw)


# ------------------------------------------------------------------------------- which PR is reused
def test_a_same_title_pr_by_another_account_is_never_reused(hub, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, files={"model_index.json": "{}"})
    mallory = hub.add_token("hf_mallory_0000000000000000", "mallory")
    # Same title, and even hfaudit's marker for the audited commit: only the author differs.
    HfApi(endpoint=hub.url, token=mallory).create_commit(
        source, [CommitOperationAdd("evil.py", b"import os; os.system('x')")], create_pr=True,
        commit_message=hfhub.PR_TITLE, commit_description=f"looks like hfaudit\n\n{_marker(main)}",
    )
    hostile_head, hostile_files = hub.head(source, "refs/pr/1"), hub.files(source, "refs/pr/1")

    result = _push(hub, _folder(tmp_path / "c", {"README.md": "# cleaned\n"}), source, main)

    assert result.created_pr and not result.reused_pr and result.pr_url.endswith("/discussions/2")
    assert hub.head(source, "refs/pr/1") == hostile_head and hub.files(source, "refs/pr/1") == hostile_files
    assert "evil.py" not in hub.files(source, "refs/pr/2")
    assert [p.author for p in hub.pull_requests(source)] == ["mallory", hub.user]
    assert hub.head(source) == main


def test_a_pr_someone_else_pushed_onto_is_not_reused(hub, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, files={"model_index.json": "{}"})
    _push(hub, _folder(tmp_path / "c", {"README.md": "# v1\n"}), source, main)
    hub.commit(source, {"evil.py": "x"}, "tweak", ref="refs/pr/1", user="mallory")
    pr1_head = hub.head(source, "refs/pr/1")

    result = _push(hub, tmp_path / "c", source, main)

    assert result.created_pr and result.pr_url.endswith("/discussions/2")
    assert hub.head(source, "refs/pr/1") == pr1_head  # nothing built on top of mallory's commit
    assert "evil.py" not in hub.files(source, "refs/pr/2")


def test_a_closed_pr_of_ours_is_not_reused(hub, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    main = hub.add_repo(source, files={"model_index.json": "{}"})
    folder = _folder(tmp_path / "c", {"README.md": "# v1\n"})
    _push(hub, folder, source, main)
    hub.set_pr_status(source, 1, "closed")
    closed_head = hub.head(source, "refs/pr/1")
    (folder / "README.md").write_text("# v2\n")

    result = _push(hub, folder, source, main)

    assert result.created_pr and result.pr_url.endswith("/discussions/2")
    assert hub.head(source, "refs/pr/1") == closed_head
    assert [p.status for p in hub.pull_requests(source)] == ["closed", "open"]


def test_our_open_pr_is_reused_only_for_the_commit_it_is_based_on(hub, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    first = hub.add_repo(source, files={"model_index.json": "{}", "w.txt": "v1"})
    folder = _folder(tmp_path / "c", {"README.md": "# run 1\n"})
    opened = _push(hub, folder, source, first, description="run 1")
    second = hub.commit(source, {"w.txt": "v2"}, "newer weights")

    # Audited main's newer commit: the open PR is based on another commit, so a new one is opened.
    (folder / "README.md").write_text("# run 2\n")
    other = _push(hub, folder, source, second)
    assert other.created_pr and other.pr_url.endswith("/discussions/2") and other.base_commit == second
    assert hub.commits(source, "refs/pr/2")[1].sha == second
    assert hub.head(source, "refs/pr/1") == opened.commit_sha

    # The first commit again: its own open PR is reused, one more commit on it, and a comment.
    (folder / "README.md").write_text("# run 3\n")
    again = _push(hub, folder, source, first, description="run 3")
    assert again.reused_pr and not again.created_pr and again.pr_url == opened.pr_url
    history = hub.commits(source, "refs/pr/1")
    assert [c.sha for c in history[:3]] == [again.commit_sha, opened.commit_sha, first]
    assert hub.files(source, "refs/pr/1")["README.md"] == b"# run 3\n"
    assert hub.pull_request(source, 1).comments == [hub.pull_request(source, 1).description, "run 3"]
    assert len(hub.pull_requests(source)) == 2 and hub.head(source) == second


def test_a_pr_on_an_older_commit_holds_exactly_the_folder(hub, tmp_path: Path) -> None:
    """huggingface_hub leaves out files equal to main's: on a PR based on an older commit they must go in."""
    source = hub.new_repo_id("source")
    old = hub.add_repo(source, files={"a.json": "old", "b.json": "same"})
    hub.commit(source, {"a.json": "new"}, "main moves on")
    folder = _folder(tmp_path / "c", {"a.json": "new", "b.json": "same", "c.json": "added"})

    result = _push(hub, folder, source, old)

    assert result.created_pr and hub.commits(source, "refs/pr/1")[1].sha == old
    files = hub.files(source, "refs/pr/1")
    assert {k: files[k] for k in ("a.json", "b.json", "c.json")} == {"a.json": b"new", "b.json": b"same",
                                                                     "c.json": b"added"}


def test_a_pull_request_needs_the_audited_commit(hub, tmp_path: Path) -> None:
    source = hub.new_repo_id("source")
    hub.add_repo(source, files={"model_index.json": "{}"})
    folder = _folder(tmp_path / "c", {"README.md": "x\n"})
    before = len(hub.requests)
    for audited in (None, "main", "abc"):
        with pytest.raises(UsageError, match="audited_commit"):
            hfhub.push_folder(folder, source_repo=source, to=None, token=hub.token, endpoint=hub.url,
                              audited_commit=audited)
    assert len(hub.requests) == before and hub.pull_requests(source) == []


# ------------------------------------------------------------------------------- clean end to end
def test_pr_from_an_older_revision_keeps_the_source_card_and_is_based_on_it(
        hub_env, tiny_pipeline_dir: Path, tmp_path: Path, scripted_scan) -> None:
    hub = hub_env
    (tiny_pipeline_dir / "README.md").write_text(SOURCE_CARD)
    source = hub.new_repo_id("suspect")
    older = hub.add_repo(source, tiny_pipeline_dir)
    newer_card = SOURCE_CARD.replace("Please cite our paper.", "Version 2 weights.")
    main = hub.commit(source, {"README.md": newer_card, "notes.txt": "v2"}, "v2")

    result = _clean(hub, source, tmp_path / "out", revision=older, commit_message="Remove the digits backdoor")

    assert result.push.created_pr and result.push.base_commit == older == result.source.commit_sha
    assert hub.commits(source, "refs/pr/1")[1].sha == older  # parent_commit: not main's newer head
    assert hub.head(source) == main
    files = hub.files(source, "refs/pr/1")
    assert "notes.txt" not in files  # nothing of main's newer commit
    readme = files["README.md"].decode()
    assert readme.startswith(SOURCE_CARD)  # the source's card, byte for byte, then the audit section
    assert SECTION_BEGIN in readme and SECTION_END in readme and AUDIT_FILE in readme
    card = ModelCard(readme)
    assert card.data.license == "apache-2.0" and card.data.get("license_link") == "LICENSE"
    assert card.data.tags == ["digits"] and card.data.base_model is None
    assert "Please cite our paper." in card.text
    assert files[AUDIT_FILE].decode().startswith(f"# {source}, backdoor removed by hfaudit")
    pr = hub.pull_request(source, 1)
    assert pr.title == hfhub.PR_TITLE and pr.description.startswith("Remove the digits backdoor")
    for needle in ("**backdoor**", "ASR with the inverted trigger", "Trigger: inverted from the model",
                   f"hfaudit {__version__}", f"audited commit `{older}`", "keeps its text and metadata",
                   _marker(older)):
        assert needle in pr.description, needle


def test_to_a_new_private_repo_names_the_source_as_base_model_and_keeps_its_licence(
        hub_env, tiny_pipeline_dir: Path, tmp_path: Path, scripted_scan) -> None:
    hub = hub_env
    (tiny_pipeline_dir / "README.md").write_text(SOURCE_CARD)
    source = hub.new_repo_id("suspect")
    sha = hub.add_repo(source, tiny_pipeline_dir)
    to = hub.new_repo_id("cleaned", namespace="tester")

    result = _clean(hub, source, tmp_path / "out", to=to, private=True, commit_message="cleaned copy")

    assert hub.repos[to].private and result.push.repo_id == to and result.push.base_commit is None
    assert hub.pull_requests(source) == [] and hub.head(source) == sha
    commit = hub.commits(to)[0]
    assert commit.message == "cleaned copy" and f"commit `{sha}`" in commit.description
    card = ModelCard(hub.files(to)["README.md"].decode())
    assert card.data.base_model == source and card.data.base_model_relation == "finetune"
    assert card.data.license == "apache-2.0"
    assert card.data.get("license_link") == f"{hub.url}/{source}/blob/{sha}/LICENSE"  # still works from the copy
    assert AUDIT_FILE not in hub.files(to)


def test_private_needs_a_new_repo(hub, tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    from hfaudit.cli import app

    for args in (["--push", "--private"], ["--private"], ["--push", "--to", "a/b", "--commit-message", "a\nb"],
                 ["--commit-message", "x"]):
        res = runner.invoke(app, ["clean", str(tiny_pipeline_dir), "-o", str(tmp_path / "o"), *args])
        assert res.exit_code == ExitCode.USAGE, (args, res.output)
        out = res.output.strip()
        assert len(out.splitlines()) == 1 and "Traceback" not in out, out
        assert ("--private" in out) if "--private" in args else ("--commit-message" in out), out
    assert not (tmp_path / "o").exists()
    # The library says the same, and never turns an existing public repo private or pushes into it.
    public = hub.new_repo_id("public", namespace="tester")
    head = hub.add_repo(public, files={"a.txt": "a"}, token=hub.token)
    folder = _folder(tmp_path / "c", {"README.md": "x\n"})
    with pytest.raises(UsageError, match="private"):
        hfhub.push_folder(folder, source_repo=None, to=None, token=hub.token, endpoint=hub.url, private=True)
    with pytest.raises(UsageError, match="exists and is public"):
        hfhub.push_folder(folder, source_repo=None, to=public, token=hub.token, endpoint=hub.url, private=True)
    assert hub.head(public) == head and not hub.repos[public].private


# ------------------------------------------------------------------------------------- the cards
def test_the_source_card_is_read_without_trusting_it(tmp_path: Path) -> None:
    assert read_source_card(tmp_path) == SourceCard()  # no README: nothing to keep
    cases = {
        "big": b"# x\n" + b"a" * MAX_CARD_BYTES,
        "binary": b"---\nlicense: mit\n---\n\xff\xfe",
        "aliases": b"---\na: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\n---\n# bomb\n",
        "bad-yaml": b"---\nlicense: [mit\n---\n# x\n",
        "not-a-mapping": b"---\n- a\n- b\n---\n# x\n",
    }
    for name, raw in cases.items():
        folder = tmp_path / name
        folder.mkdir()
        (folder / "README.md").write_bytes(raw)
        got = read_source_card(folder)
        assert got.problem and got.text is None and got.card is None, name
        files = card_files(_result(), got, pull_request=True)
        assert set(files) == {AUDIT_FILE}, name  # the source's README is left as it is
        assert "left as it is" in push_description(_result(), got, pull_request=True)


def test_a_later_audit_replaces_its_section_and_keeps_line_endings(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_bytes(SOURCE_CARD.replace("\n", "\r\n").encode())
    first = card_files(_result(), read_source_card(tmp_path), pull_request=True)["README.md"]
    assert first.startswith(SOURCE_CARD.replace("\n", "\r\n")) and "\n" not in first.replace("\r\n", "")
    (tmp_path / "README.md").write_bytes(first.encode())
    second = card_files(_result(), read_source_card(tmp_path), pull_request=True)["README.md"]
    assert second.count(SECTION_BEGIN) == 1 and second == first


def test_the_copys_card_says_when_the_source_has_no_licence() -> None:
    card = make_card(_result(), SourceCard(text="# no metadata\n", card=ModelCard("# no metadata\n")))
    assert card.data.get("license") is None and "names no licence" in card.text
    other = ModelCard("---\nlicense: other\nlicense_name: tiny-licence\nlicense_link: https://x.org/l\n---\n# x\n")
    card = make_card(_result(), SourceCard(text=str(other), card=other))
    assert (card.data.license, card.data.get("license_name"), card.data.get("license_link")) == (
        "other", "tiny-licence", "https://x.org/l")
    assert "names no licence" not in card.text


def test_the_pr_description_says_what_was_found_removed_and_verified() -> None:
    result = _result()
    text = push_description(result, SourceCard(), pull_request=True)
    sha = result.source.commit_sha
    for needle in (f"commit `{sha}`", "**backdoor**", "MSCR 0.94", "Trigger: inverted from the model",
                   "ASR with the inverted trigger (worst sampler, 64 samples): 100% -> 0%",
                   "Benign fidelity (Frechet distance, lower is better): 11.08 -> 11.90 (x1.07, 90% interval x0.98-x1.16)",
                   "22 of 1120 channels zeroed", "Re-scan of the cleaned model: clean", f"hfaudit {__version__}",
                   "`README.md` is added", "based on the audited commit"):
        assert needle in text, needle
    assert "UNVERIFIED" not in text
    forced = push_description(_result(problems=["the backdoor still fires"]), SourceCard(), pull_request=True)
    assert "UNVERIFIED" in forced and "the backdoor still fires" in forced
