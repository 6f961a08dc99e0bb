"""Every environment variable hfaudit reads, in one place.

``HF_ENDPOINT`` and ``HF_TOKEN`` are read by huggingface_hub itself (at import time for the
endpoint); we only read them here to tell a private repo from a missing one.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple


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


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``), read at call time, by huggingface_hub's rule
    (``1``, ``ON``, ``YES``, ``TRUE``); unset, huggingface_hub's own value (read at its import)."""
    from huggingface_hub import constants as hf_constants

    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE")
    if value:
        return value.strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(getattr(hf_constants, "HF_HUB_OFFLINE", False))


def hf_hub_cache() -> str:
    """The folder huggingface_hub downloads to when no ``cache_dir`` is given (its import-time value,
    which every download function uses)."""
    from huggingface_hub import constants as hf_constants

    return hf_constants.HF_HUB_CACHE


def quiet() -> bool:
    """``HFAUDIT_QUIET=1`` hides progress bars (CI logs, tests)."""
    return bool(os.environ.get("HFAUDIT_QUIET"))


VERDICT_CACHE_ENV = "HFAUDIT_VERDICT_CACHE"
"""The verdict cache folder when ``--verdict-cache`` is not given (``hfaudit.verdict_cache``); the CLI reads it."""


class HubTimeouts(NamedTuple):
    """Seconds hfaudit waits for the Hub: ``etag`` for file metadata, ``request`` for every other call."""

    etag: float
    request: float


def hub_timeouts() -> HubTimeouts:
    """huggingface_hub's ``HF_HUB_ETAG_TIMEOUT`` and ``HF_HUB_DOWNLOAD_TIMEOUT``, read at call time.

    huggingface_hub reads both once, at import, and its shared HTTP client has no timeout at all, so
    hfaudit reads them here and passes them to every Hub call. Like huggingface_hub, a value that is
    not a positive number counts as unset: huggingface_hub's default. Never None: a Hub call is always bounded.
    """
    from huggingface_hub import constants as hf_constants

    def seconds(name: str, default: float) -> float:
        try:
            value = float(os.environ.get(name, ""))
        except ValueError:
            return float(default)
        return value if math.isfinite(value) and value > 0 else float(default)

    return HubTimeouts(
        etag=seconds("HF_HUB_ETAG_TIMEOUT", hf_constants.DEFAULT_ETAG_TIMEOUT),
        request=seconds("HF_HUB_DOWNLOAD_TIMEOUT", hf_constants.DEFAULT_DOWNLOAD_TIMEOUT),
    )
