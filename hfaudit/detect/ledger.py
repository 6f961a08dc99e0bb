"""What each phase of a scan spent and skipped, and whether more work fits the cap: the one place a
budget is enforced, for the unconditional scan (``detect.scan``) and the text-to-image one (``detect.t2i``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hfaudit.sampling import EvalCounter


class Ledger:
    """What each phase of a scan spent (UNet evaluations as counted, seconds), what it skipped and
    why, and whether a search still fits the cap: the one place a budget is enforced."""

    def __init__(self, counter: EvalCounter, cap: int | None, reserve: Callable[[], int] = lambda: 0) -> None:
        self.counter = counter
        self.cap = cap
        self.reserve = reserve
        """What the cap must still hold back for later work (the painted nulls left to probe)."""
        self.evaluations: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.skipped: list[dict[str, str]] = []
        self._inner: list[list[float]] = []  # per open phase: what phases nested in it spent

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Charge what runs inside to ``name`` (phases of one name add up); a phase opened inside
        another is charged to itself only, so the phases add up to the scan's count."""
        count, t0 = self.counter.count, time.perf_counter()
        self._inner.append([0, 0.0])
        try:
            yield
        finally:
            inner_n, inner_s = self._inner.pop()
            spent, took = self.counter.count - count, time.perf_counter() - t0
            self.evaluations[name] = self.evaluations.get(name, 0) + spent - int(inner_n)
            self.seconds[name] = self.seconds.get(name, 0.0) + took - inner_s
            if self._inner:
                self._inner[-1][0] += spent
                self._inner[-1][1] += took

    def refusal(self, cost: int) -> str | None:
        """Why a search of planned ``cost`` may not start (None: it fits what is left of the cap)."""
        if self.cap is None or self.counter.count + cost + self.reserve() <= self.cap:
            return None
        return (f"over the budget: it can cost {cost:,} UNet evaluations and "
                f"{max(self.cap - self.counter.count - self.reserve(), 0):,} of {self.cap:,} are left")

    def skip(self, phase: str, search: str, reason: str) -> None:
        """Record a search that did not run."""
        self.skipped.append({"phase": phase, "search": search, "reason": reason})
