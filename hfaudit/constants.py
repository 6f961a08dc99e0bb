"""Every environment variable hfaudit reads, in one place.

``HF_ENDPOINT`` and ``HF_TOKEN`` are read by huggingface_hub itself (at import time for the
endpoint); we only read them here to tell a private repo from a missing one.
"""

from __future__ import annotations

import os


def hf_token() -> str | None:
    """The token huggingface_hub will use (``HF_TOKEN`` or the login cache), or None."""
    from huggingface_hub import get_token

    return get_token()


def hf_endpoint() -> str:
    """The Hub endpoint, read at call time so that a later ``HF_ENDPOINT`` (tests, CLI) still counts.

    huggingface_hub reads ``HF_ENDPOINT`` once, at import; hfaudit passes this value explicitly to
    every Hub call instead of relying on that import-time snapshot.
    """
    from huggingface_hub import constants as hf_constants

    return (os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def quiet() -> bool:
    """``HFAUDIT_QUIET=1`` hides progress bars (CI logs, tests)."""
    return bool(os.environ.get("HFAUDIT_QUIET"))


def run_slow() -> bool:
    """``RUN_SLOW=1`` enables slow tests (diffusers' convention)."""
    return os.environ.get("RUN_SLOW", "").lower() in {"1", "true", "yes"}
