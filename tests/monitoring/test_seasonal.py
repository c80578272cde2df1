"""Daily cycles: with a time column in the reference, a window of a few hours is compared with the same
hours of the day, so a feature that follows the clock is quiet on clean traffic and a real shift within
those hours is still found."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson
import pandas as pd
import pytest

from monitoring.baseline import reference
from monitoring.drift import decide, drift_of
from monitoring.monitor import Monitor
from monitoring.records import RequestRecord
from monitoring.sink import encode
from monitoring.store.sqlite import open_sqlite
from monitoring.windows import WindowSettings
from registry.errors import InvalidReferenceData
from registry.prediction import Prediction
from registry.profile import clock_of, hourly, numeric_profile, sample_index

DAY = 86_400.0


def cycling(ts: np.ndarray, rng: np.random.Generator, shift: float = 0.0) -> np.ndarray:
    """A feature that rises and falls over the day by 2 sd, plus noise."""
    return 2 * np.sin(2 * np.pi * (ts % DAY) / DAY) + rng.normal(size=ts.size) + shift


def window_at(hour: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Send times of a 3-hour window starting at ``hour`` (UTC) on some later day."""
    return np.sort(40 * DAY + hour * 3600 + rng.random(rows) * 3 * 3600)


@pytest.fixture(scope="module")
def seasonal_reference():
    rng = np.random.default_rng(0)
    ts = np.sort(rng.random(30 * 24 * 20) * 30 * DAY)  # 30 days, about 20 rows an hour
    return reference_of(ts, cycling(ts, rng))


def reference_of(ts: np.ndarray, x: np.ndarray):
    weekdays, hours = clock_of(pd.Series(ts))
    by_hour = {slot: slices["x"] for slot, slices in hourly({"x": x}, weekdays, hours).items()}
    return reference(numeric_profile(x, sample_index(x.size)), by_hour=by_hour)


def flagged(ref, ts, values, seasonal=True):
    times = ts if seasonal else None
    return any(s["drifted"] for s in decide(drift_of("x", "feature", ref, values, times=times)))


def test_clean_three_hour_windows_at_any_time_of_day_are_quiet_against_the_same_hours(seasonal_reference):
    rng = np.random.default_rng(1)
    seasonal_alarms = whole_alarms = 0
    for start in range(0, 24, 3):
        for _ in range(20):
            ts = window_at(start, 1000, rng)
            values = cycling(ts, rng)
            seasonal_alarms += flagged(seasonal_reference, ts, values)
            whole_alarms += flagged(seasonal_reference, ts, values, seasonal=False)
    assert seasonal_alarms <= 1  # 160 clean windows: at most 1%
    assert whole_alarms >= 150  # against the whole day, nearly every window looks drifted


def test_a_real_shift_within_those_hours_is_still_found(seasonal_reference):
    rng = np.random.default_rng(2)
    found = 0
    for start in range(0, 24, 3):
        ts = window_at(start, 1000, rng)
        found += flagged(seasonal_reference, ts, cycling(ts, rng, shift=0.5))
    assert found == 8


def test_a_weekly_rhythm_is_compared_with_the_same_hours_of_the_same_day_of_the_week():
    """Weekends 2 sd higher on top of the daily cycle; 60 days of reference, so each hour of each day
    of the week has its own slice (about 170 rows)."""
    rng = np.random.default_rng(4)

    def weekly(ts: np.ndarray) -> np.ndarray:
        weekend = (ts // DAY + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        return cycling(ts, rng) + 2.0 * weekend

    ts = np.sort(rng.random(60 * 24 * 20) * 60 * DAY)
    ref = reference_of(ts, weekly(ts))
    assert "5-10" in ref.by_hour and "10" in ref.by_hour  # Saturday 10:00, and 10:00 of any day
    hourly_only = replace(ref, by_hour={slot: d for slot, d in ref.by_hour.items() if "-" not in slot})
    alarms = {"weekly": 0, "hourly": 0}
    saturday, wednesday = 65 * DAY + 2 * DAY, 65 * DAY + 6 * DAY  # day 65 is a Friday
    for day in (saturday, wednesday):
        for start in range(0, 24, 6):
            for _ in range(5):
                sent = np.sort(day + start * 3600 + rng.random(1000) * 3 * 3600)
                values = weekly(sent)
                alarms["weekly"] += flagged(ref, sent, values)
                alarms["hourly"] += flagged(hourly_only, sent, values)
    assert alarms["weekly"] <= 1 and alarms["hourly"] >= 20  # 40 clean windows; the 20 on Saturday


def test_the_monitor_compares_a_window_with_its_hours_of_the_day(registry, centred_model, tmp_path):
    """The centred model (x - 0.5) pushed with a time column: its input and its output both follow the
    clock; traffic at 03:00-06:00 on a later day is not drift, the same traffic shifted is."""
    model, _ = centred_model(False)
    rng = np.random.default_rng(3)
    ts = np.sort(rng.random(30 * 24 * 20) * 30 * DAY)
    reference_file = tmp_path / "seasonal.csv"
    frame = pd.DataFrame(
        {"seen_at": pd.to_datetime(ts, unit="s", utc=True).astype(str), "x": cycling(ts, rng)}
    )
    frame.to_csv(reference_file, index=False)
    manifest = registry.push(model, "cyclic", reference_file, time_column="seen_at", actor="tests")
    assert manifest.reference.time_column == "seen_at" and "seen_at" not in manifest.inputs.names
    assert {str(h) for h in range(24)} <= set(manifest.reference.by_hour)  # and the fuller weekday hours
    assert set(manifest.reference.by_hour["3"]) == {"x", "value"}

    def drifted(shift: float) -> list[str]:
        store = open_sqlite(tmp_path / f"log-{shift}.sqlite3")
        sent = window_at(3, 600, rng)
        xs = cycling(sent, rng, shift).astype(np.float32)
        store.requests.write(encode([
            RequestRecord(request_id=f"r{i}", ts=float(t), route="predict", status=200, latency_ms=1.0,
                          model="cyclic", version=1, rows=1, features=("x",), matrix=np.array([[x]]),
                          prediction=Prediction(values=np.array([x - 0.5])))
            for i, (t, x) in enumerate(zip(sent, xs, strict=True))
        ]))  # fmt: skip
        monitor = Monitor(store.requests, store.feedback, store.reports, registry.manifest, WindowSettings())
        monitor.position = {}
        monitor.step(float(sent[-1]) + 1)
        report = orjson.loads(store.reports.latest("cyclic")[1])
        store.close()
        return [f["name"] for f in report["features"] if f["drifted"]]

    assert drifted(0.0) == []
    assert set(drifted(0.5)) == {"x", "value"}


def test_a_time_column_must_be_there_and_hold_times(registry, centred_model, tmp_path):
    model, _ = centred_model(False)
    reference_file = tmp_path / "reference.csv"
    reference_file.write_text("seen_at,x\nyesterday,0.1\n" + "2026-01-01T00:00:00Z,0.2\n" * 10)
    with pytest.raises(InvalidReferenceData, match="time column 'when' is not in the reference data"):
        registry.push(model, "cyclic", reference_file, time_column="when")
    with pytest.raises(InvalidReferenceData, match="time column 'seen_at': not times"):
        registry.push(model, "cyclic", reference_file, time_column="seen_at")
    assert registry.models() == []


def test_epoch_seconds_are_times_too(registry, centred_model, tmp_path):
    model, _ = centred_model(False)
    reference_file = tmp_path / "reference.csv"
    stamps = np.arange(0, 2 * DAY, 300.0)
    pd.DataFrame({"seen_at": stamps, "x": np.linspace(0.0, 0.4, stamps.size)}).to_csv(
        reference_file, index=False
    )
    manifest = registry.push(model, "cyclic", reference_file, time_column="seen_at", actor="tests")
    assert manifest.reference.by_hour == {}  # 24 rows an hour: too few to profile an hour apart
    assert manifest.reference.time_column == "seen_at"
