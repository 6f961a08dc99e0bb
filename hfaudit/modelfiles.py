"""Reading the files of an audited model without trusting them: one place for it.

A model folder is attacker-controlled input. Its "files" may be FIFOs (``open()`` blocks forever),
links to ``/dev/zero`` (an endless read), configs of many megabytes or nested deeper than the JSON
parser's recursion limit. Every read of a model file in hfaudit goes through here: the file is
opened without blocking, checked to be a regular file on the open descriptor (no race between the
check and the read), and read up to a limit. Nothing here writes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

MAX_CONFIG_BYTES = 4 * 1024 * 1024
"""Largest config file read (``model_index.json``, component configs, shard indexes).

A diffusers config is a few kilobytes; a shard index of a multi-gigabyte model a few hundred.
"""


LFS_POINTER_PREFIXES = (b"version https://git-lfs.github.com/spec/v1", b"version https://hawser.github.com/spec/v1")
"""How a Git LFS pointer file starts (git-lfs still reads the pre-release ``hawser`` spelling)."""
MAX_LFS_POINTER_BYTES = 1024
"""The Git LFS specification keeps pointer files under 1024 bytes."""


class UnreadableFile(Exception):
    """A model file that must not or cannot be read; ``reason`` fits in a finding's message."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def kind_of(path: Path) -> str | None:
    """What ``path`` is after following links: None for a regular file or a folder, else a word
    for the reader (``FIFO``, ``character device``, ``dangling link``...). Never opens it."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling link" if os.path.islink(path) else "missing file"
    except OSError as exc:
        return f"unreadable entry ({exc.strerror or exc})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, word in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return word
    return "special file"


def open_regular(path: Path) -> int:
    """Open ``path`` for reading and return the descriptor, only if it is a regular file.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer; the type is
    then checked with ``fstat`` on the descriptor itself, so the file checked is the file read.

    Raises:
        UnreadableFile: not a regular file, or it cannot be opened.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise UnreadableFile(f"cannot be read ({exc.strerror or exc})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise UnreadableFile(f"is a {kind_of(path) or 'special file'}, not a regular file")
    return fd


def read_bytes(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Raises:
        UnreadableFile: not a regular file, unreadable, or larger than ``limit``.
    """
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise UnreadableFile(f"is {size} bytes, more than the {limit} a file of its kind may have")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UnreadableFile(f"is larger than the {limit} bytes a file of its kind may have")
    return data


def read_json(path: Path, limit: int = MAX_CONFIG_BYTES) -> Any:
    """Parse a JSON file of the model.

    Raises:
        UnreadableFile: not a regular file, too large, not UTF-8, not JSON, or nested too deep for
            the parser (a ``RecursionError`` is a property of the file, not a bug of the reader).
    """
    raw = read_bytes(path, limit)
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UnreadableFile("is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise UnreadableFile(f"is not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise UnreadableFile("is not valid JSON (nested too deep)") from None


def is_lfs_pointer(path: Path) -> bool:
    """True when ``path`` is a regular file holding a Git LFS pointer instead of the file's content.

    That is what a clone or ``actions/checkout`` without Git LFS leaves in place of every LFS-tracked
    file (weights, often configs too): about 130 bytes of text naming the object. Reads at most
    ``MAX_LFS_POINTER_BYTES``, never blocks; False for anything it cannot read (the other checks
    report those).
    """
    try:
        fd = open_regular(path)
    except UnreadableFile:
        return False
    try:
        if os.fstat(fd).st_size >= MAX_LFS_POINTER_BYTES:
            return False
        head = os.read(fd, MAX_LFS_POINTER_BYTES)
    except OSError:
        return False
    finally:
        os.close(fd)
    return head.startswith(LFS_POINTER_PREFIXES)
