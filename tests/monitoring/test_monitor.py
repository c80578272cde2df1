"""The monitor reads the log into rolling windows and reports drift and plausibility per model."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from monitoring.monitor import ROWS_A_READ, UNPAIRED_MAX_ROWS, Monitor
from monitoring.records import RequestRecord
from monitoring.sink import encode
from monitoring.store.sql import SqlRequestLog
from monitoring.store.sqlite import SQLiteDatabase, open_sqlite
from monitoring.windows import WindowSettings
from registry.demo import breast_cancer
from registry.prediction import Prediction
from service.app import create_app
from service.settings import Settings


def settings_for(registry, **extra):
    return Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05, **extra)


def send(client, frame, batch=10):
    for start in range(0, len(frame), batch):
        rows = frame.iloc[start : start + batch].to_dict(orient="records")
        assert client.post("/predict", json={"model": "cancer", "inputs": rows}).status_code == 200


def report_after(client, rows, timeout=10.0, model="cancer"):
    """The drift report once the monitor has seen ``rows`` rows."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/monitoring/drift", params={"model": model}).json()
        if body.get("window", {}).get("rows") == rows:
            return body
        time.sleep(0.05)
    raise AssertionError(f"no report over {rows} rows: {body}")


def test_reference_like_traffic_does_not_drift(cancer_registry):
    _, x_test, _, _ = breast_cancer()
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        assert client.get("/monitoring/drift").json()["status"] == "no_traffic"
        send(client, x_test)
        report = report_after(client, len(x_test))
    assert report["status"] == "ok" and report["version"] == 1
    assert report["drifted_features"] == 0
    names = {f["name"] for f in report["features"]}
    assert {"mean_radius", "label", "probability:benign"} <= names and len(names) == 33
    feature = next(f for f in report["features"] if f["name"] == "mean_radius")
    assert set(feature) >= {
        "test",
        "effect",
        "rows",
        "p_value",
        "p_adjusted",
        "psi",
        "js_distance",
        "drifted",
        "window",
    }
    assert report["thresholds"] == {
        "alpha": 0.001,
        "alert_alpha": 0.05 / (30 * 86_400),  # the false-alert budget spent over passes every 0.05 s
        "min_effect": 0.02,
        "min_rows": 100,
        "correction": "benjamini-hochberg",
    }


def test_a_shifted_feature_is_reported_as_drifted(cancer_registry):
    _, x_test, _, _ = breast_cancer()
    shifted = x_test.assign(mean_texture=x_test["mean_texture"] * 1.6)
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        send(client, shifted)
        report = report_after(client, len(shifted))
    drifted = {f["name"] for f in report["features"] if f["drifted"]}
    assert "mean_texture" in drifted and report["drifted_features"] == len(drifted)
    # the shift also moves the model's answers, which the report shows as prediction drift
    assert {f["kind"] for f in report["features"] if f["drifted"]} <= {"feature", "prediction"}


def test_plausibility_violations_are_reported_as_rates(cancer_registry):
    _, x_test, _, _ = breast_cancer()
    odd = x_test.copy()
    odd.loc[odd.index[:20], "worst_area"] = 1e6
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        send(client, odd)
        report = report_after(client, len(odd))
    (entry,) = [p for p in report["plausibility"] if p["feature"] == "worst_area"]
    assert entry["rule"] == "input_range" and entry["violations"] == 20
    assert entry["rate"] == pytest.approx(20 / len(odd))


def test_too_little_traffic_is_not_tested(cancer_registry):
    _, x_test, _, _ = breast_cancer()
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        send(client, x_test.iloc[:30])
        report = report_after(client, 30)
    assert report["status"] == "insufficient_data" and report["features"] == []
    assert report["reason"].startswith("30 rows in the window") and "tested from 100 rows" in report["reason"]


def test_a_restarted_monitor_rebuilds_its_window_from_the_log(cancer_registry):
    _, x_test, _, _ = breast_cancer()
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        send(client, x_test)
        report_after(client, len(x_test))
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        send(client, x_test.iloc[:10])
        assert report_after(client, len(x_test) + 10)["window"]["requests"] == 16


def test_one_monitor_leads_a_log_until_it_stops(tmp_path):
    path = tmp_path / "p.sqlite3"
    first, second = open_sqlite(path), open_sqlite(path)
    assert first.lease.acquire() and first.lease.acquire()
    assert not second.lease.acquire() and second.lease.held()
    first.close()
    assert second.lease.acquire()
    second.close()


class CountedLog(SqlRequestLog):
    """The real log, remembering how many records each read asked for."""

    def __init__(self, db):
        super().__init__(db)
        self.limits: list[int] = []

    def read_after(self, position, limit, decode=True):
        self.limits.append(limit)
        return super().read_after(position, limit, decode)


def test_big_batches_are_read_a_few_at_a_time_and_unmirrored_ones_are_not_hoarded(cancer_registry, tmp_path):
    """256-row requests at peak rate once held the monitor at over 1 GB: reads of 5,000 records, and
    10,000 champion predictions kept waiting for shadow twins the shed queue never produced."""
    _, x_test, _, _ = breast_cancer()
    features = cancer_registry.manifest("cancer", 1).inputs.names
    matrix = np.resize(x_test[list(features)].to_numpy(dtype=np.float32), (256, len(features)))
    labels = np.array(["benign"] * 256, dtype=object)
    prediction = Prediction(labels=labels, probabilities=np.full((256, 2), 0.5))

    def record(i, arm="champion"):
        return RequestRecord(
            request_id=f"r{i}", ts=time.time(), route="predict", status=200, latency_ms=1.0, model="cancer",
            version=1 if arm == "champion" else 2, arm=arm, rows=256, features=features, matrix=matrix,
            prediction=prediction, classes=("benign", "malignant"),
        )  # fmt: skip

    store = open_sqlite(tmp_path / "p.sqlite3")
    log = CountedLog(SQLiteDatabase(tmp_path / "p.sqlite3"))
    log.write(encode([record(i) for i in range(300)]))
    monitor = Monitor(log, store.feedback, store.reports, cancer_registry.manifest, WindowSettings())
    assert monitor.step(time.time()) == 300
    assert max(log.limits[1:]) * 256 <= ROWS_A_READ  # after the first, small read: by rows
    kept = monitor.windows[("cancer", 1)].requests  # what the report tested drift on, decoded
    assert sum(r.rows for r in kept) <= 1000 + 256 and all(len(r.inputs[features[0]]) == 256 for r in kept)
    assert orjson.loads(store.reports.latest("cancer")[1])["window"]["rows"] == sum(r.rows for r in kept)
    waiting = monitor.unpaired["champion"]
    assert monitor.unpaired_rows["champion"] == 256 * len(waiting) <= UNPAIRED_MAX_ROWS
    assert "r299" in waiting and "r0" not in waiting  # the newest wait, the oldest gave up
    log.write(encode([record(299, arm="shadow")]))  # the newest one's twin still pairs
    monitor.step(time.time())
    assert monitor.pairs["cancer"].rows == 256 and "r299" not in waiting
    log.db.close()
    store.close()


def test_feedback_turns_into_live_quality_per_version(cancer_registry):
    _, x_test, _, y_test = breast_cancer()
    with TestClient(create_app(settings_for(cancer_registry))) as client:
        feedback = []
        for start in range(0, len(x_test), 10):
            rows = x_test.iloc[start : start + 10].to_dict(orient="records")
            answer = client.post("/predict", json={"inputs": rows}).json()
            feedback.append(
                {"request_id": answer["request_id"], "ground_truth": list(y_test.iloc[start : start + 10])}
            )
        assert client.post("/feedback", json={"feedback": feedback}).status_code == 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            report = client.get("/monitoring/drift").json()
            if report.get("quality") and report["quality"][0]["samples"] == len(x_test):
                break
            time.sleep(0.05)
    (quality,) = report["quality"]
    assert quality["version"] == 1 and quality["samples"] == len(x_test)
    assert quality["accuracy"] > 0.93 and quality["roc_auc"] > 0.97 and 0 < quality["log_loss"] < 0.3


def test_quality_metrics_by_kind():
    from monitoring.quality import classification_quality, regression_quality

    classes = ("a", "b", "c")
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    labels = np.array(["a", "b", "c"], dtype=object)
    complete = classification_quality(np.array(["a", "b", "c"], dtype=object), labels, probabilities, classes)
    assert complete["accuracy"] == 1 and complete["roc_auc"] == 1
    partial = classification_quality(np.array(["a", "b", "b"], dtype=object), labels, probabilities, classes)
    assert partial["accuracy"] == pytest.approx(2 / 3) and partial["roc_auc"] is None  # "c" never seen
    measured = regression_quality(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0]))
    assert measured == {"samples": 3, "mae": pytest.approx(1.0), "rmse": pytest.approx(np.sqrt(5 / 3))}


def test_a_model_whose_outputs_break_the_rules_is_counted(registry, centred_model, child_metrics):
    """1 / (x - 0.5): its reference rows stay away from 0.5, live traffic does not."""
    model, reference = centred_model(True)
    registry.push(model, "unstable", reference, actor="tests")
    registry.promote("unstable", 1, "champion", actor="tests")

    rows = [{"x": v} for v in np.linspace(0, 0.4, 100)] + [{"x": 0.5005}] * 10 + [{"x": 0.5}] * 5
    with TestClient(create_app(settings_for(registry))) as client:
        for start in range(0, len(rows), 5):
            assert client.post("/predict", json={"inputs": rows[start : start + 5]}).status_code == 200
        report = report_after(client, len(rows), model="unstable")
    rates = {p["rule"]: p["violations"] for p in report["plausibility"]}
    assert rates == {"value_range": 10, "value_finite": 5}  # and no input rule: x stays in [0, 1]
    exported = child_metrics()
    assert 'rule="value_range"' in exported and 'rule="value_finite"' in exported
