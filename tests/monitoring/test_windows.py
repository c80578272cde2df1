"""The monitor's windows: a time span, all of it while it is small, an even sample of it when busy."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest

from monitoring.baseline import reference
from monitoring.drift import drift_of
from monitoring.windows import Traffic, Window, WindowSettings
from registry.profile import numeric_profile, sample_index


@dataclass(frozen=True)
class Value:
    ts: float
    value: float
    rows: int = 1


def slots(window: Window[Value], width: float) -> Counter[int]:
    return Counter(math.floor(entry.ts / width) for entry in window.requests)


def test_a_quiet_window_holds_every_entry_of_its_span():
    window: Window[Traffic] = Window(WindowSettings(max_rows=10, max_age_seconds=100))
    for i in range(6):
        window.add(Traffic(ts=float(i * 10), status=200, latency_ms=1.0))
    window.trim(now=50.0)
    assert [r.ts for r in window.requests] == [0, 10, 20, 30, 40, 50] and window.rows == window.seen_rows == 6
    window.trim(now=145.0)
    assert [r.ts for r in window.requests] == [50.0] and window.rows == window.seen_rows == 1


@pytest.mark.parametrize("rate", [10, 4000])
def test_a_window_covers_its_span_at_any_traffic(rate):
    """At 4,000 requests/s the last 1,000 rows are a quarter of a second; the window still holds the
    same minute as at 10 requests/s, with the same share of it from every second."""
    window: Window[Value] = Window(WindowSettings(max_rows=1000, max_age_seconds=60))
    for second in range(120):
        for i in range(rate):
            window.add(Value(second + i / rate, 0.0))
            assert window.rows <= 2000  # memory stays bounded between reports
    window.trim(now=120.0)
    held = slots(window, 1.0)
    assert window.seen_rows == 60 * rate and min(held) == 60 and max(held) == 119
    if rate * 60 <= 1000:
        assert window.rows == window.seen_rows
    else:
        # every second as much as any other, short of the 1,000 rows by less than a row a second
        assert len(set(held.values())) == 1 and 1000 - 60 < window.rows <= 1000
    assert [r.ts for r in window.requests] == sorted(r.ts for r in window.requests)


def test_a_burst_fills_its_own_slot_not_the_window():
    window: Window[Value] = Window(WindowSettings(max_rows=600, max_age_seconds=60))
    for second in range(59):
        for i in range(100):
            window.add(Value(second + i / 100, 0.0))
    for i in range(50_000):  # 500 times the traffic, in the last second
        window.add(Value(59 + i / 50_000, 0.0))
    window.trim(now=60.0)
    held = slots(window, 1.0)
    assert len(held) == 60 and held[59] <= 10 and window.rows >= 590


def test_a_backlog_of_large_batches_is_thinned_as_it_is_read_and_spread_over_the_span():
    """A pass catching up on a backlog adds thousands of records before its report trims: the window
    is thinned on the way, so the monitor's memory is the window's, not the backlog's."""
    window: Window[Traffic] = Window(WindowSettings(max_rows=1000, max_age_seconds=3600))
    for i in range(300):
        window.add(Traffic(ts=float(i), status=200, latency_ms=1.0, rows=256))
        assert window.rows <= 2000
    window.trim(now=300.0)
    held = [entry.ts for entry in window.requests]
    assert window.rows == 768 and len({math.floor(ts / 60) for ts in held}) == 3  # three of its five minutes


def test_sampled_windows_of_a_clean_stream_keep_the_drift_tests_level():
    """Which entries a busy window keeps never depends on their values: over 300 clean streams of
    uneven traffic (bursts of up to 50 times the quiet rate), the windows' drift tests reject at no
    more than their level."""
    rng = np.random.default_rng(11)
    draws = rng.normal(size=20_000)
    ref = reference(numeric_profile(draws, sample_index(draws.size), "float64"))
    rejected = []
    for _ in range(300):
        window: Window[Value] = Window(WindowSettings(max_rows=500, max_age_seconds=60))
        rates = np.maximum(1, rng.lognormal(3, 1.3, size=60).astype(int))  # requests in each second
        times = np.concatenate([s + np.sort(rng.random(n)) for s, n in enumerate(rates)])
        for ts, value in zip(times, rng.normal(size=times.size), strict=True):
            window.add(Value(float(ts), float(value)))
        window.trim(now=60.0)
        values = np.array([entry.value for entry in window.requests])
        (statistic,) = drift_of("x", "feature", ref, values)
        rejected.append(statistic["p_value"] < 0.05)
    assert np.mean(rejected) <= 0.08  # 0.05 and three standard errors of 300 windows
