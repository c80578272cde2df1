"""The monitor's windows: recent entries of one model version, bounded in rows and age, and what
is read from them (a feature's column, an output, plausibility flags, traffic figures)."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from monitoring.drift import ALPHA, MIN_EFFECT, MIN_ROWS
from monitoring.records import LoggedRequest
from monitoring.report import TrafficSummary


@dataclass(frozen=True)
class WindowSettings:
    """How much traffic a window holds and when drift is tested."""

    max_rows: int = 1000
    max_age_seconds: float = 3600.0
    #: fewer rows than this: no drift test (too little data to say anything)
    min_rows: int = MIN_ROWS
    #: the chance a clean window is called drifted, at most (see monitoring.drift) ...
    alpha: float = ALPHA
    #: ... and the stricter level a drifted quantity alerts at (see ``alert_alpha``)
    alert_alpha: float = ALPHA
    #: the smallest change called drift
    min_effect: float = MIN_EFFECT
    #: significance of champion against challenger quality
    compare_alpha: float = 0.05
    #: input features whose values live quality is also measured per (see monitoring.quality)
    quality_segments: tuple[str, ...] = ()


def alert_alpha(alpha: float, pass_seconds: float, false_alert_days: float) -> float:
    """The level each pass's drift test alerts at, so that on clean traffic alerts are expected at most
    once in ``false_alert_days``, whatever the traffic.

    Every pass tests the window again; by the union bound the expected number of passes with a false
    alarm over a period is at most the sum of their levels, whatever the dependence between the
    overlapping windows. Spending ``pass_seconds / (false_alert_days * 86400)`` a pass keeps that sum
    at one over the period (7.7e-7 at the 2 s default and 30 days). Busy models lose nothing (at
    1,000 requests/s a shift of 0.5 sd gives p-values far below it); ``alpha`` stays the level a window
    is *called* drifted at, in the report.
    """
    return min(alpha, pass_seconds / (false_alert_days * 86_400.0))


class Timed(Protocol):
    @property
    def ts(self) -> float: ...

    @property
    def rows(self) -> int: ...


T = TypeVar("T", bound=Timed)


@dataclass(frozen=True)
class Labelled:
    """An answered request with the ground truth given for it (at ``ts``, when the truth came)."""

    ts: float
    rows: int
    request: LoggedRequest
    truth: list[Any]


class Window(Generic[T]):
    """Recent entries of one model version, at most ``max_rows`` rows and ``max_age`` old."""

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self.requests: deque[T] = deque()
        self.rows = 0

    def add(self, entry: T) -> None:
        """Add ``entry``, dropping the oldest past ``max_rows`` at once: a pass that catches up on a
        backlog (the log grows faster than one pass reads it) held every record it read until the
        report trimmed them, 3.4 GB of 256-row records in one minute of binary requests."""
        self.requests.append(entry)
        self.rows += entry.rows
        while self.rows > self.settings.max_rows and self.requests:
            self.rows -= self.requests.popleft().rows

    def trim(self, now: float) -> None:
        oldest = now - self.settings.max_age_seconds
        while self.requests and (self.rows > self.settings.max_rows or self.requests[0].ts < oldest):
            self.rows -= self.requests.popleft().rows

    @property
    def last_seen(self) -> float:
        return self.requests[-1].ts if self.requests else 0.0


def column(requests: Iterable[LoggedRequest], name: str, numeric: bool) -> np.ndarray:
    """One input feature over the requests, in one conversion (a null is NaN for a number)."""
    values = list(itertools.chain.from_iterable(r.inputs[name] for r in requests if r.inputs))
    return np.array(values, dtype=np.float64 if numeric else object)


def outputs(requests: Iterable[LoggedRequest], key: str) -> np.ndarray:
    parts = [np.asarray(r.outputs[key]) for r in requests if r.outputs and key in r.outputs]
    return np.concatenate(parts) if parts else np.empty(0)


def flag_totals(requests: Iterable[LoggedRequest]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for request in requests:
        for key, count in request.flags.items():
            totals[key] = totals.get(key, 0) + count
    return totals


@dataclass(frozen=True, slots=True)
class Traffic:
    """A request as the traffic window keeps it: a window of requests, not rows."""

    ts: float
    status: int
    latency_ms: float
    rows: int = 1
    #: rows it predicted, and the plausibility violations found in them
    predicted: int = 0
    violations: int = 0


def traffic_summary(window: Window[Traffic], now: float, since: float = 0.0) -> TrafficSummary:
    """Requests (at or after ``since``), the share not answered 200, the median and 99th percentile
    latency, and plausibility violations per predicted row."""
    window.trim(now)
    entries = [r for r in window.requests if r.ts >= since] if since else window.requests
    statuses = np.array([r.status for r in entries])
    latencies = np.array([r.latency_ms for r in entries])
    predicted = sum(r.predicted for r in entries)
    return {
        "requests": int(statuses.size),
        "violation_rate": sum(r.violations for r in entries) / predicted if predicted else 0.0,
        "error_rate": float(np.mean(statuses != 200)) if statuses.size else 0.0,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
        "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies.size else None,
    }
