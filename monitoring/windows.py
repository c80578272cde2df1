"""The monitor's windows: one model version's entries of a span of time, sampled to a bounded number
of rows, and what is read from them (a feature's column, an output, plausibility flags, traffic figures)."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from monitoring.drift import ALPHA, MIN_EFFECT, MIN_ROWS
from monitoring.records import LoggedRequest
from monitoring.report import TrafficSummary


@dataclass(frozen=True)
class WindowSettings:
    """How much traffic a window holds and when drift is tested."""

    #: rows a window holds at most (a sample of its span when more came) ...
    max_rows: int = 1000
    #: ... over this many seconds
    max_age_seconds: float = 3600.0
    #: fewer rows than this: no drift test (too little data to say anything)
    min_rows: int = MIN_ROWS
    #: the chance a clean window is called drifted, at most (see monitoring.drift) ...
    alpha: float = ALPHA
    #: ... and the stricter level a drifted quantity alerts at (see ``alert_alpha``)
    alert_alpha: float = ALPHA
    #: slots of time the span is cut into: a busy window is a sample spread evenly over them
    strata: int = 60
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
    """One version's entries of the last ``max_age`` seconds: all of them while they hold at most
    ``max_rows`` rows, else a random sample of about that many rows spread evenly over the span.

    The span is cut into ``strata`` equal slots of time. When the window outgrows its rows it is
    thinned: each entry has a random key, and a slot gives up its entries of highest key first, down
    to a level of rows every slot is held to (water-filling: a slot with less keeps all it has). A
    slot thinned once holds no more rows than it was cut to (give or take its last entry), and the
    level is never above that, so at 10 and at 40,000 requests/s the window holds the same minutes,
    each as much as any other; a burst fills its own slot, not the window. Which entries are kept
    never depends on their values, so a window of a clean stream is a sample of the clean stream and
    the drift tests keep their level. Memory is bounded: the window is thinned whenever it holds
    twice ``max_rows``.
    """

    def __init__(self, settings: WindowSettings, seed: int = 0) -> None:
        self.settings = settings
        self.width = settings.max_age_seconds / settings.strata
        self._random = random.Random(seed)
        #: the entries held, in the order added, and each one's random key
        self.requests: deque[T] = deque()
        self._keys: deque[float] = deque()
        self.rows = 0
        #: rows added per slot of time still in the span (sampled or not) ...
        self._seen: dict[int, int] = {}
        #: ... and the rows a thinned slot was cut to
        self._cut: dict[int, int] = {}
        #: whether entries came since the last thinning (else thinning again changes nothing)
        self._added = False
        self.last_seen = 0.0

    def add(self, entry: T) -> None:
        """Add ``entry``; past twice ``max_rows``, thin the window at once: a pass that catches up on a
        backlog (the log grows faster than one pass reads it) held every record it read until the
        report trimmed them, 3.4 GB of 256-row records in one minute of binary requests."""
        self.requests.append(entry)
        self._keys.append(self._random.random())
        self.rows += entry.rows
        slot = self._slot(entry.ts)
        self._seen[slot] = self._seen.get(slot, 0) + entry.rows
        self.last_seen = max(self.last_seen, entry.ts)
        self._added = True
        if self.rows > 2 * self.settings.max_rows:
            self.trim(self.last_seen)

    def trim(self, now: float) -> None:
        """Forget what is older than the span, and thin the rest to ``max_rows`` rows."""
        oldest = now - self.settings.max_age_seconds
        while self.requests and self.requests[0].ts < oldest:
            self.rows -= self.requests.popleft().rows
            self._keys.popleft()
        for slots in (self._seen, self._cut):
            for slot in [s for s in slots if (s + 1) * self.width <= oldest]:
                del slots[slot]
        # a slot cut once holds no more since; what is left of a thinned window after the oldest
        # entries go is thinned already (a later cut only ever allows more), so only new entries count
        if self._added and (self.rows > self.settings.max_rows or self._cut):
            self._thin()
        self._added = False

    def _slot(self, ts: float) -> int:
        return math.floor(ts / self.width)

    def _thin(self) -> None:
        """Keep the first ``max_rows`` rows in the order of the level each entry starts at (the rows of
        its slot of lower key), keys breaking the ties; no entry starting at or past the rows a slot
        was cut to before; the order added kept."""
        entries = list(zip(self._keys, self.requests, strict=True))
        slots: dict[int, list[int]] = {}
        for i, (_, entry) in enumerate(entries):
            slots.setdefault(self._slot(entry.ts), []).append(i)
        cap = max(1, min(self._cut.values())) if self._cut else self.settings.max_rows
        order = []
        for members in slots.values():
            level = 0
            for i in sorted(members, key=lambda i: entries[i][0]):
                if level >= cap:
                    break
                order.append((level, entries[i][0], i))
                level += entries[i][1].rows
        kept: list[int] = []
        self.rows = 0
        for _, _, i in sorted(order):
            if self.rows + entries[i][1].rows > self.settings.max_rows:
                break
            kept.append(i)
            self.rows += entries[i][1].rows
        kept.sort()
        held: Counter[int] = Counter()  # rows ...
        left: Counter[int] = Counter()  # ... and entries kept, per slot
        for i in kept:
            held[self._slot(entries[i][1].ts)] += entries[i][1].rows
            left[self._slot(entries[i][1].ts)] += 1
        self._cut.update({slot: held[slot] for slot, members in slots.items() if left[slot] < len(members)})
        self._keys = deque(entries[i][0] for i in kept)
        self.requests = deque(entries[i][1] for i in kept)

    @property
    def seen_rows(self) -> int:
        """Rows added over the span (to the slot), of which the window holds ``rows``."""
        return sum(self._seen.values())

    def replace(self, change: Callable[[T], T]) -> None:
        """Each entry held changed in place (decoded, say), its key and place kept."""
        self.requests = deque(change(entry) for entry in self.requests)


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


def traffic_summary(window: Window[Traffic], now: float) -> TrafficSummary:
    """Requests, the share not answered 200, the median and 99th percentile latency, and plausibility
    violations per predicted row."""
    window.trim(now)
    entries = window.requests
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
