"""Sequential evidence: an e-value crosses 1/alpha on at most alpha of null streams however long they
run, a real difference is found, and the monitor's contests add up over passes and restarts."""

from __future__ import annotations

import time

import numpy as np
import orjson

from monitoring.monitor import Monitor
from monitoring.records import Feedback, RequestRecord
from monitoring.sequential import Matcher, contests, log_e_value
from monitoring.sink import encode
from monitoring.store.sqlite import open_sqlite
from monitoring.windows import WindowSettings
from registry.prediction import Prediction


def ever_crossed(p: float, streams: int, length: int, alpha: float, p0: float = 0.5) -> np.ndarray:
    """Per stream of ``length`` contests won with probability ``p``: whether its e-value ever reached
    1/alpha, and when (the contest, or ``length``)."""
    rng = np.random.default_rng(0)
    wins = np.cumsum(rng.random((streams, length)) < p, axis=1)
    losses = np.arange(1, length + 1) - wins
    crossed = log_e_value(wins, losses, p0) >= np.log(1 / alpha)
    return np.where(crossed.any(axis=1), crossed.argmax(axis=1), length)


def test_a_null_stream_reaches_one_over_alpha_at_most_alpha_of_the_time_at_any_look():
    for p0, p in ((0.5, 0.5), (0.5, 0.45), (0.05, 0.05), (0.6, 0.6)):
        when = ever_crossed(p, streams=1000, length=3000, alpha=0.05, p0=p0)
        assert np.mean(when < 3000) <= 0.05, (p0, p)
    # one test at every look (the peeking the e-value replaces) is wrong far more often
    rng = np.random.default_rng(1)
    wins = np.cumsum(rng.random((2000, 5000)) < 0.5, axis=1)
    n = np.arange(1, 5001)
    z = (2 * wins - n) / np.sqrt(n)
    assert np.mean((z[:, 30:] > 1.645).any(axis=1)) > 0.3


def test_a_real_difference_is_found_and_a_larger_one_sooner():
    small = ever_crossed(0.6, streams=500, length=5000, alpha=0.05)
    large = ever_crossed(0.75, streams=500, length=5000, alpha=0.05)
    assert np.mean(small < 5000) >= 0.99 and np.median(large) < np.median(small) / 3


def test_contests_count_the_rows_only_one_arm_got_right_or_closer():
    champion = np.array([True, True, False, False])
    assert contests(champion, np.array([True, False, True, False])) == (1, 1)
    assert contests(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.0, 4.0])) == (1, 1)  # ties count for none


def test_a_matcher_pairs_the_arms_in_arrival_order_and_drops_the_oldest_past_its_limit():
    matcher: Matcher[int] = Matcher(limit=3)
    assert list(matcher.add("champion", [1, 2, 3, 4, 5])) == []
    assert list(matcher.add("challenger", [10, 11])) == [(3, 10), (4, 11)]
    assert list(matcher.add("challenger", [12, 13])) == [(5, 12)]
    assert list(matcher.add("champion", [6])) == [(6, 13)]


def test_the_monitor_adds_up_quality_contests_beyond_its_window_and_resumes_them_after_a_restart(
    cancer_registry, tmp_path
):
    """A/B traffic on the cancer model: the challenger right on every row, the champion on every other.
    The window keeps 50 rows; the evidence keeps every contest, and a new monitor (a restart, which
    reads the last hour of the log again) goes on from the saved report without counting twice."""
    features = cancer_registry.manifest("cancer", 1).inputs.names
    matrix = np.zeros((1, len(features)), dtype=np.float32)

    def record(i: int) -> RequestRecord:
        arm = "champion" if i % 2 == 0 else "challenger"
        label = "malignant" if arm == "challenger" or i % 4 == 0 else "benign"
        return RequestRecord(
            request_id=f"r{i}", ts=time.time(), route="predict", status=200, latency_ms=1.0, model="cancer",
            version=1 if arm == "champion" else 2, arm=arm, rows=1, features=features, matrix=matrix,
            prediction=Prediction(np.array([label], dtype=object), np.array([[0.5, 0.5]])),
            classes=("benign", "malignant"),
        )  # fmt: skip

    store = open_sqlite(tmp_path / "p.sqlite3")
    settings = WindowSettings(max_rows=50)
    monitor = Monitor(store.requests, store.feedback, store.reports, cancer_registry.manifest, settings)
    monitor.step(time.time())  # it starts tailing the empty log: the feedback below is read by seq
    for batch in range(4):
        ids = range(100 * batch, 100 * (batch + 1))
        store.requests.write(encode([record(i) for i in ids]))
        store.feedback.add([Feedback(f"r{i}", ["malignant"], time.time() - 7200) for i in ids])  # 2 h ago
        monitor.step(time.time())
    evidence = orjson.loads(store.reports.latest("cancer")[1])["comparison"]["evidence"]
    assert evidence["samples"] == {"champion": 200, "challenger": 200}  # the window holds 50 rows
    assert evidence["contests"] == {"champion": 0, "challenger": 100}  # matched: 100 champion rows wrong
    assert (evidence["better"], evidence["paired"]) == ("challenger", False)
    assert evidence["e_value"]["challenger"] >= evidence["threshold"] == 40.0

    restarted = Monitor(store.requests, store.feedback, store.reports, cancer_registry.manifest, settings)
    restarted.step(time.time())  # traffic to report on, and no feedback within the window's hour
    kept = orjson.loads(store.reports.latest("cancer")[1])["comparison"]["evidence"]
    assert kept["contests"] == {"champion": 0, "challenger": 100}  # its report carries the evidence on
    store.requests.write(encode([record(i) for i in range(400, 420)]))
    store.feedback.add([Feedback(f"r{i}", ["malignant"], time.time()) for i in range(400, 420)])
    restarted.step(time.time())
    evidence = orjson.loads(store.reports.latest("cancer")[1])["comparison"]["evidence"]
    assert evidence["samples"] == {"champion": 210, "challenger": 210}
    assert evidence["contests"] == {"champion": 0, "challenger": 105}
    store.close()
