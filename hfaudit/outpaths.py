"""Where hfaudit may write: report paths checked before any work and again at write time (fail closed).

An audit tool that overwrites what it audits destroys the evidence, so every output of ``scan`` and
``clean`` (the output folder, ``--json``, ``--markdown``, ``--sarif``) goes through this module:

- ``-``, ``/dev/stdout``, ``/dev/fd/1``, ``/proc/self/fd/1`` and any path that is the process's
  stdout mean standard output, and at most one format may go there (two would be one unreadable stream).
- A path is followed through symlinks: a symlink is written *in place*, its target replaced atomically
  and the link left a link. FIFOs, sockets and devices other than ``/dev/null`` are refused and never
  opened (opening a FIFO for writing blocks until a reader comes); ``/dev/null`` is accepted and
  nothing is written to it.
- Nothing may land in a :class:`Protected` place: the audited model's folder (and the files its
  symlinks point to), or for a Hub repo its huggingface_hub cache folder. A path is compared both as
  written and resolved, and by device and inode, so a symlinked or bind-mounted way into the model
  is refused as well.
- Writability is checked by creating and removing a file: permission bits say nothing for root,
  read-only mounts or ACLs.
- Writes are all-or-nothing (:class:`Staging` for files, :func:`replace_folder` for ``clean``'s
  output folder): an interrupted run leaves no partial output, and earlier files stay as they were.

The one output module: report rendering (``hfaudit.report``) and ``clean`` write through it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from hfaudit.errors import OutputError
from hfaudit.hub import is_repo_id
from hfaudit.sources import hub_repo_id

STDOUT = "-"
"""How a normalised path names standard output."""
STDOUT_ALIASES = frozenset({"-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"})
SPECIAL_HINT = "hfaudit writes reports to regular files or '-'"
NEVER_INTO_MODEL = "hfaudit never writes into the model it audits"

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Protected:
    """A folder (or file) no output may be in or equal to; ``what`` names it in messages."""

    path: Path
    what: str


# -------------------------------------------------------------------------------------- stdout
def is_stdout(path: PathLike | None) -> bool:
    """True when ``path`` means the process's standard output (an alias, or the very file fd 1 is).

    ``/dev/null`` is never stdout here, even when stdout is ``/dev/null``: it stays a discard.
    """
    if path is None:
        return False
    text = os.fspath(path)
    if text == STDOUT or os.path.normpath(text) in STDOUT_ALIASES:
        return True
    return _std_stream(text) == 1


def normalize(path: PathLike | None) -> str | None:
    """``path`` as a string, with every way of naming stdout turned into ``-``; None stays None."""
    if path is None:
        return None
    return STDOUT if is_stdout(path) else os.fspath(path)


def normalize_files(files: Mapping[str, PathLike | None]) -> dict[str, str | None]:
    """Normalise ``{flag: path}``, refusing two formats on stdout.

    Raises:
        OutputError: more than one flag names standard output.
    """
    out = {name: normalize(p) for name, p in files.items()}
    on_stdout = [name for name, p in out.items() if p == STDOUT]
    if len(on_stdout) > 1:
        raise OutputError(f"{' and '.join(on_stdout)} both write to standard output; send at most one format "
                          "there and the others to files")
    return out


# --------------------------------------------------------------------------------- protection
def protected_paths(source: str, local_dir: PathLike | None = None) -> list[Protected]:
    """The places no output of an audit of ``source`` may touch.

    A local folder (as ``hub.resolve`` decides: an existing folder): the folder and every target of a
    symlink inside it. A Hub repo (id, ``hf://`` URI or page address): its folder in each
    huggingface_hub cache the environment names, read now (not at import), so no Hub call is needed.
    ``local_dir`` (what ``hub.resolve`` returned) is protected as well, once known.
    """
    out: list[Protected] = []
    folder = os.path.expanduser(source)
    if os.path.isdir(folder):
        out += _folder_and_links(folder, f"the source folder {source}")
    elif (repo := hub_repo_id(source) or (source if is_repo_id(source) else None)) is not None:
        from huggingface_hub.file_download import repo_folder_name

        for cache in _hub_caches():
            repo_cache = os.path.join(cache, repo_folder_name(repo_id=repo, repo_type="model"))
            out.append(Protected(Path(os.path.abspath(repo_cache)), f"the Hugging Face cache of {repo} ({repo_cache})"))
    if local_dir is not None:
        out += _folder_and_links(os.fspath(local_dir), f"the source folder {local_dir}")
    return _unique(out)


def check_not_protected(path: PathLike, protected: Iterable[Protected], *, name: str | None = None,
                        both_ways: bool = False) -> None:
    """Refuse ``path`` when it is in (or equal to) a protected place; ``both_ways``: also when it holds one.

    Raises:
        OutputError: naming the flag, the path and the protected place.
    """
    label = _label(path, name)
    for entry in protected:
        if _inside(path, entry.path):
            verb = "overlaps" if both_ways else "is in"
            raise OutputError(f"{label} {verb} {entry.what}: {NEVER_INTO_MODEL}")
        if both_ways and _inside(entry.path, path):
            raise OutputError(f"{label} overlaps {entry.what}: {NEVER_INTO_MODEL}")


# ------------------------------------------------------------------------------ file outputs
def destination(path: PathLike, protected: Iterable[Protected] = (), *, name: str | None = None) -> Path | None:
    """The regular file a report named ``path`` really replaces (symlinks followed), or None for ``/dev/null``.

    Called before the work and again when a file is staged, so the check holds for library callers too.

    Raises:
        OutputError: a folder, FIFO, socket, device, the process's stdin or stderr, or a protected place.
    """
    label = _label(path, name)
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except FileNotFoundError:
        st = None
    except OSError as exc:  # a symlink loop, a path through a file...
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if st is not None:
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {path}: it is a folder")
        if _is_devnull(st):
            return None
        if not stat.S_ISREG(st.st_mode):
            raise OutputError(f"{label} is a {_kind(st.st_mode)}; {SPECIAL_HINT}")
        fd = _std_stream(real)
        if fd in (0, 2):
            raise OutputError(f"{label} is the process's standard {'input' if fd == 0 else 'error'}; {SPECIAL_HINT}")
    check_not_protected(path, protected, name=name)
    return Path(real)


def check_file(path: PathLike, protected: Iterable[Protected] = (), *, name: str | None = None) -> Path | None:
    """Fail before the (long) work when a report file cannot or must not be written; stdout passes.

    Returns:
        The real destination (None for stdout and ``/dev/null``).

    Raises:
        OutputError: see :func:`destination`; also a missing or unwritable folder.
    """
    if is_stdout(path):
        return None
    dest = destination(path, protected, name=name)
    if dest is None:
        return None
    given = Path(path).parent
    shown = given if os.path.realpath(given) == str(dest.parent) else dest.parent
    if not dest.parent.is_dir():
        raise OutputError(f"cannot write {path}: folder {shown} does not exist")
    probe_write(dest.parent, f"cannot write {path}: folder {shown} is not writable")
    return dest


def check_files(files: Mapping[str, PathLike | None], protected: Iterable[Protected] = ()) -> dict[str, str | None]:
    """:func:`normalize_files`, then :func:`check_file` for each, refusing two formats in one file.

    Returns:
        ``{flag: path}`` normalised (stdout as ``-``).

    Raises:
        OutputError: the first path that cannot or must not be written.
    """
    protected = list(protected)
    out = normalize_files(files)
    seen: dict[Path, str] = {}
    for name, p in out.items():
        if p is None:
            continue
        dest = check_file(p, protected, name=name)
        if dest is not None and dest in seen:
            raise OutputError(f"{seen[dest]} and {name} both write to {p}; give each format its own file")
        if dest is not None:
            seen[dest] = name
    return out


# -------------------------------------------------------------------------------- output folder
def check_output_dir(out: PathLike, protected: Iterable[Protected] = (), *, name: str = "--output-dir") -> None:
    """Fail early when a folder of outputs must not or cannot be written.

    A folder that *holds* the model is allowed (only fixed names at its top level are written, each
    checked again by :func:`destination`); one in the model is not.

    Raises:
        OutputError: in a protected place, a file, under a file, or not writable.
    """
    check_not_protected(out, protected, name=name)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{name} {out} exists and is not a folder")
    existing = out if out.exists() else next((a for a in out.parents if a.exists()), Path("."))
    if not existing.is_dir():
        raise OutputError(f"{name} {out}: {existing} is not a folder")
    probe_write(existing, f"{name} {out} is not writable")


def probe_write(folder: PathLike, message: str) -> None:
    """Create and remove a file in ``folder``: permission bits say nothing for root, read-only mounts or ACLs.

    Raises:
        OutputError: with ``message``, when the file cannot be created.
    """
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".hfaudit-probe-")
        os.close(fd)
        os.unlink(tmp)
    except OSError:
        raise OutputError(message) from None


# ------------------------------------------------------------------------------------ helpers
def _label(path: PathLike, name: str | None) -> str:
    return f"{name} {os.fspath(path)}" if name else os.fspath(path)


def _forms(path: PathLike) -> set[str]:
    """``path`` absolute as written, and with every symlink resolved."""
    return {os.path.abspath(path), os.path.realpath(path)}


def _key(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if st.st_ino else None


def _ancestor_keys(path: str) -> set[tuple[int, int]]:
    """(device, inode) of ``path`` and of every existing folder above it, symlinks followed."""
    keys, p = set(), path
    while True:
        key = _key(p)
        if key is not None:
            keys.add(key)
        parent = os.path.dirname(p)
        if parent == p:
            return keys
        p = parent


def _inside(path: PathLike, folder: PathLike) -> bool:
    """``path`` is ``folder`` or below it: by name (as written and resolved) or by device and inode."""
    forms, folders = _forms(path), _forms(folder)
    for f in forms:
        for d in folders:
            if f == d or f.startswith(d.rstrip(os.sep) + os.sep):
                return True
    key = _key(os.path.realpath(folder))
    return key is not None and any(key in _ancestor_keys(f) for f in forms)


def _folder_and_links(folder: str, what: str) -> list[Protected]:
    """``folder``, and the target of every symlink in it (a model's files may live elsewhere)."""
    out = [Protected(Path(os.path.abspath(folder)), what)]
    for dirpath, dirnames, filenames in os.walk(folder):  # symlinked folders are listed, not entered
        for entry in (*dirnames, *filenames):
            full = os.path.join(dirpath, entry)
            if os.path.islink(full):
                out.append(Protected(Path(os.path.realpath(full)), f"{os.path.realpath(full)}, linked from {what}"))
    return out


def _unique(items: Sequence[Protected]) -> list[Protected]:
    seen: set[Path] = set()
    out = []
    for item in items:
        if item.path not in seen:
            seen.add(item.path)
            out.append(item)
    return out


def _hub_caches() -> list[str]:
    """Every huggingface_hub cache folder the environment names now (env first, then the import-time value)."""
    from huggingface_hub import constants

    names = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE"),
             os.path.join(os.environ["HF_HOME"], "hub") if os.environ.get("HF_HOME") else None,
             constants.HF_HUB_CACHE]
    return list(dict.fromkeys(os.path.expanduser(n) for n in names if n))


def _is_devnull(st: os.stat_result) -> bool:
    try:
        null = os.stat(os.devnull)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == null.st_rdev


def _std_stream(path: str) -> int | None:
    """Which of fds 0, 1, 2 ``path`` is the very file of (same device and inode), if any; never ``/dev/null``."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if _is_devnull(st) or not st.st_ino:
        return None
    for fd in (1, 0, 2):
        try:
            std = os.fstat(fd)
        except OSError:
            continue
        if (std.st_dev, std.st_ino) == (st.st_dev, st.st_ino):
            return fd
    return None


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISBLK(mode):
        return "block device"
    if stat.S_ISCHR(mode):
        return "character device"
    return "special file"


# ------------------------------------------------------------------------------------- writing
class Staging:
    """All-or-nothing writes: files are staged beside their destinations and renamed into place
    together by :meth:`commit`, so an interrupted run leaves no partial output and any earlier file
    at the same path as it was. Every path is checked against ``protected`` again at staging time,
    so a caller that skipped the early checks cannot write into the model or onto a device either.
    """

    def __init__(self, protected: list[Protected]) -> None:
        self.protected = protected
        """Shared with the owner, who may add to it (the model's folder becomes known late)."""
        self._staged: list[tuple[Path, Path]] = []
        self._stdout: list[str] = []
        self._made_dirs: list[Path] = []

    def stage(self, path: PathLike, data: str | bytes) -> None:
        """Write ``data`` to a hidden temp file beside the file ``path`` really names (stdout: hold it).

        A symlink is followed: the temp file goes beside its target, which the commit replaces (the
        link stays a link). ``/dev/null`` takes nothing.

        Raises:
            OutputError: the folder cannot be created or written; a FIFO, device or protected place.
        """
        if is_stdout(path):
            self._stdout.append(data if isinstance(data, str) else data.decode())
            return
        dest = destination(path, self.protected)
        if dest is None:  # /dev/null
            return
        try:
            self._mkdirs(dest.parent)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".hfaudit-tmp")
            self._staged.append((Path(tmp), dest))
            os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
        except OSError as exc:
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None

    def commit(self) -> None:
        """Move every staged file into place, then print what was meant for stdout."""
        try:
            for tmp, dest in self._staged:
                os.replace(tmp, dest)
        except OSError as exc:
            raise OutputError(f"cannot write {dest}: {exc.strerror or exc}") from None
        self._staged.clear()
        self._made_dirs.clear()  # they hold committed files now
        for text in self._stdout:
            sys.stdout.write(text)
        sys.stdout.flush()
        self._stdout.clear()

    def discard(self) -> None:
        """Remove every staged temp file and every folder this run created."""
        for tmp, _dest in self._staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._staged.clear()
        self._stdout.clear()
        for d in reversed(self._made_dirs):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty: never removes someone else's files
        self._made_dirs.clear()

    def _mkdirs(self, folder: Path) -> None:
        missing = [p for p in (folder, *folder.parents) if not p.exists()]
        for d in reversed(missing):
            d.mkdir()
            self._made_dirs.append(d)


def replace_folder(new: Path, out: Path) -> None:
    """Replace the folder ``out`` (missing, or one the caller has checked may go) by ``new``, with
    renames only: at every moment ``out`` is either the old folder or the new one."""
    old = out.parent / f".{out.name}.hfaudit-old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    try:
        new.rename(out)
    except OSError:
        if old.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
