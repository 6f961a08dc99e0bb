"""Ctrl-C and SIGTERM that cannot be lost: the one place that handles both.

A signal becomes ``KeyboardInterrupt`` at once, and is also remembered: importing torch, diffusers
and accelerate takes seconds, and a library that imports an optional module under a bare
``except:`` swallows a ``KeyboardInterrupt`` raised there, after which the scan would run on.
:func:`check` at the start of every command and of every progress bar raises it again.
"""

from __future__ import annotations

import signal

_received: list[int] = []


def _handler(signum: int, frame: object) -> None:
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT and SIGTERM (a cancelled CI job) to :func:`_handler`; main thread only."""
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)


def check() -> None:
    """Raises:
        KeyboardInterrupt: a signal arrived earlier, even if something swallowed its exception."""
    if _received:
        raise KeyboardInterrupt
