"""The user docs: the README stays short and true to the code, and no link in the docs is dead.

The README is the package page (``pyproject.toml``: ``readme``) and what a user reads first; the
method and the measurements live in ``docs/``. These checks read files only: fast, no model loaded.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hfaudit.errors import EXIT_CODE_MEANINGS, ExitCode, exit_code_epilog, exit_code_table

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP_HEADING = "## Set-up: two commands on a fresh machine"
MAX_README_CHARS = 12_000
REQUIRED = ["docs/design.md", "docs/detection.md", "docs/removal.md", "docs/benchmarks.md", "docs/cli.md",
            "CHANGELOG.md", "LICENSE"]

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)


def readme() -> str:
    return README.read_text(encoding="utf-8")


def code_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced code blocks, in order."""
    return [m.group(0).split("\n", 1)[1].rsplit("\n", 1)[0] for m in FENCE.finditer(markdown)]


def relative_links(markdown: str) -> list[str]:
    """Link and image targets inside the repository (no URL scheme, not a bare #anchor); code is skipped."""
    text = FENCE.sub("", markdown)
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I) and not t.startswith("#")]


def normalise(command: str) -> list[str]:
    """A shell command as words, with ``python3`` read as ``python``."""
    return ["python" if w == "python3" else w for w in shlex.split(command)]


def ci_test_command() -> str:
    """The test command ``.ci/run`` runs: its first pytest line that sets no environment and selects no marker."""
    for line in (ROOT / ".ci" / "run").read_text().splitlines():
        line = line.strip()
        if line.startswith("#") or "pytest" not in line:
            continue
        words = shlex.split(line)
        if "=" not in words[0] and "-m" not in words[words.index("pytest") + 1:]:
            return line
    raise AssertionError(".ci/run runs no plain pytest command")


def ci_torch_pin() -> str:
    match = re.search(r"torch==[\w.+]+", (ROOT / ".ci" / "run").read_text())
    assert match, ".ci/run pins no torch"
    return match.group(0)


def setup_commands() -> list[str]:
    text = readme()
    assert SETUP_HEADING in text, "the README lost its set-up heading"
    section = text.split(SETUP_HEADING, 1)[1].split("\n## ", 1)[0]
    blocks = code_blocks(section)
    assert blocks, "no code block under the set-up heading"
    return [line for line in blocks[0].splitlines() if line.strip()]


def test_the_readme_is_short() -> None:
    """Method and measurements live in docs/; the README is for users."""
    size = len(readme())
    assert size < MAX_README_CHARS, f"README.md has {size} characters (limit {MAX_README_CHARS})"


def test_the_setup_block_holds_the_two_commands_and_the_ci_test_command() -> None:
    """First command: install and scan the shipped example; second: install and run what CI runs."""
    commands = setup_commands()
    assert len(commands) == 2, commands
    install, scan = (part.strip() for part in commands[0].split("&&"))
    assert normalise(scan)[:2] == ["hfaudit", "scan"] and "examples/models/" in scan, scan
    parts = [part.strip() for part in commands[1].split("&&")]
    assert normalise(parts[-1]) == normalise(ci_test_command()), (parts[-1], ci_test_command())
    for cmd in (install, parts[0]):
        assert normalise(cmd)[:2] == ["pip", "install"] and ci_torch_pin() in cmd.split(), cmd


def test_the_readme_holds_the_generated_exit_code_table() -> None:
    """The table is rendered from ``ExitCode``; edit ``hfaudit.errors.EXIT_CODE_MEANINGS``, then paste."""
    table = exit_code_table()
    assert table in readme(), "README.md's exit-code table differs from hfaudit.errors.exit_code_table():\n" + table


def test_the_action_docs_use_the_same_meanings() -> None:
    """docs/github-action.md has its own columns (verdict, fails the step); its meanings are the code's."""
    text = (ROOT / "docs" / "github-action.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if re.match(r"^\| \d+ \| `", line)}
    for code in ExitCode:
        assert f"| {EXIT_CODE_MEANINGS[code]} |" in rows.get(str(int(code)), ""), code


def test_the_exit_code_table_and_epilogs_cover_every_code() -> None:
    table = exit_code_table()
    for code in ExitCode:
        assert f"\n| {int(code)} | " in table, code
    scan, clean = exit_code_epilog("scan"), exit_code_epilog("clean")
    codes = {name: [int(c) for c in re.findall(r"(?:: |, )(\d+) ", text)] for name, text in
             (("scan", scan), ("clean", clean))}
    assert codes["scan"] == [int(c) for c in ExitCode if c not in (ExitCode.CLEANING_FAILED, ExitCode.REMOVAL_UNSUPPORTED)], scan
    assert codes["clean"] == [int(c) for c in ExitCode if c != ExitCode.BACKDOOR], clean
    assert "\n" not in scan + clean


def test_docs_cli_quotes_the_generated_epilogs() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for command in ("scan", "clean"):
        assert exit_code_epilog(command) in text, command


@pytest.mark.parametrize("name", REQUIRED)
def test_the_docs_exist(name: str) -> None:
    path = ROOT / name
    assert path.is_file() and path.stat().st_size > 0, name


def test_the_licence_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text


def doc_files() -> list[Path]:
    return [README, ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
            *sorted((ROOT / "benchmarks" / "results").glob("*.md"))]


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_points_to_a_file_that_exists() -> None:
    dead = []
    for doc in doc_files():
        if not doc.is_file():
            continue
        text = doc.read_text(encoding="utf-8")
        for target in [*relative_links(text), *re.findall(r"\]\((#[^)\s]+)\)", FENCE.sub("", text))]:
            path, _, anchor = target.partition("#")
            file = doc.parent / path if path else doc
            if not file.exists():
                dead.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text(encoding="utf-8")):
                dead.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not dead, "dead links:\n" + "\n".join(dead)


def test_the_link_finder_finds_links() -> None:
    """Guards the test above: a link finder that finds nothing would pass any docs."""
    sample = "see [a](docs/a.md), ![img](x.png), [b](https://x.org), [c](#here), `[d](e.md)`\n```\n[f](g.md)\n```\n"
    assert relative_links(sample) == ["docs/a.md", "x.png"]
    assert len(relative_links(readme())) >= 5


def test_no_readme_line_is_measurement_history() -> None:
    """Where a figure was measured on the way ("/tmp" scripts, "this stop") belongs in CHANGELOG.md."""
    bad = [line for line in readme().splitlines() if "/tmp" in line or "this stop" in line.lower()]
    assert not bad, bad
