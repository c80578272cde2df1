"""Live quality per segment: a model good on average but wrong for one group of users shows it, in the
drift report, the metrics and an alert naming the segment."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from starlette.testclient import TestClient

from monitoring.alerts import AlertRule, conditions
from monitoring.quality import segment_of
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def columns_registry(registry, columns_model):
    """The two-feature model (``color``: red, green or blue; ``size``: a number) as champion."""
    registry.push(columns_model.onnx, "columns", columns_model.reference, actor="tests")
    registry.promote("columns", 1, "champion", actor="tests")
    return registry


def test_segments_are_reference_categories_or_quintiles(columns_registry):
    features = columns_registry.manifest("columns", 1).reference.features
    colours = segment_of(features["color"], np.array(["red", "mauve", None, "blue"], dtype=object))
    assert colours.tolist() == ["red", "other", "missing", "blue"]
    sizes = segment_of(features["size"], np.array([-100.0, 10.0, 100.0, None], dtype=object)).tolist()
    assert sizes[0].startswith("(-inf, ") and sizes[2].endswith(", +inf)") and sizes[3] == "missing"
    edges = sorted({s for s in segment_of(features["size"], np.linspace(0, 20, 500).astype(object))})
    assert len(edges) == 5  # quintiles of the reference


def test_a_segment_the_model_fails_is_measured_and_alerted(
    columns_registry, columns_model, tmp_path, child_metrics
):
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "rules:\n  - {name: SegmentQualityDrop, kind: quality, metric: accuracy, threshold: 0.8, "
        "min_samples: 20, segment: color, for: 0s}\n"
    )
    settings = Settings(
        registry=columns_registry.root, poll_interval=3600, monitor_interval=0.05,
        quality_segments="color,size,not_a_feature", alert_rules=str(rules),
    )  # fmt: skip
    frame = pd.read_csv(columns_model.reference).dropna().iloc[:240]
    with TestClient(create_app(settings)) as client:
        feedback = []
        for start in range(0, len(frame), 10):
            rows = frame.iloc[start : start + 10]
            answer = client.post("/predict", json={"inputs": rows.to_dict(orient="records")}).json()
            predicted = [p["label"] for p in answer["predictions"]]
            # the truth agrees with the model except for blue rows, where it always disagrees
            truth = [
                ("no" if label == "yes" else "yes") if color == "blue" else label
                for label, color in zip(predicted, rows["color"], strict=True)
            ]
            feedback.append({"request_id": answer["request_id"], "ground_truth": truth})
        assert client.post("/feedback", json={"feedback": feedback}).status_code == 200
        report = wait_for(client, lambda r: [q["samples"] for q in r.get("quality", [])] == [len(frame)])
        alerts = wait_for_alerts(client)
    (quality,) = report["quality"]
    by_colour = {s["segment"]: s for s in quality["segments"] if s["feature"] == "color"}
    assert set(by_colour) == {"red", "green", "blue"}
    assert by_colour["blue"]["accuracy"] == 0 and by_colour["red"]["accuracy"] == 1
    assert sum(s["samples"] for s in by_colour.values()) == len(frame)
    sizes = [s for s in quality["segments"] if s["feature"] == "size"]
    assert len(sizes) == 5 and sum(s["samples"] for s in sizes) == len(frame)
    assert {a["labels"]["segment"] for a in alerts} == {"blue"}
    assert "color blue" in alerts[0]["annotations"]["description"]
    metrics = child_metrics()
    assert (
        'modelgate_segment_quality{feature="color",metric="accuracy",model="columns",segment="blue",'
        'version="1"} 0.0' in metrics
    )


def test_a_segment_rule_judges_each_segment_with_enough_rows():
    rule = AlertRule(name="Q", kind="quality", threshold=0.8, metric="accuracy", min_samples=50, segment="g")
    segments = [
        {"feature": "g", "segment": "a", "samples": 400, "accuracy": 0.95},
        {"feature": "g", "segment": "b", "samples": 60, "accuracy": 0.5},
        {"feature": "g", "segment": "c", "samples": 10, "accuracy": 0.0},  # too few rows to judge
        {"feature": "h", "segment": "x", "samples": 400, "accuracy": 0.1},  # another feature's
    ]
    traffic = {"requests": 0, "error_rate": 0.0, "latency_p99_ms": None}
    quality = [{"version": 1, "samples": 470, "accuracy": 0.9, "segments": segments}]
    report = {"model": "m", "version": 1, "drifted_features": 0, "features": [], "plausibility": [],
              "traffic": traffic, "quality": quality}  # fmt: skip
    (held,) = conditions((rule,), report)
    assert held.labels["segment"] == "b" and held.labels["feature"] == "g" and held.value == 0.5


def wait_for(client, ready, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = client.get("/monitoring/drift", params={"model": "columns"}).json()
        if report.get("status") and ready(report):
            return report
        time.sleep(0.05)
    raise AssertionError(f"no such report: {report}")


def wait_for_alerts(client, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        firing = client.get("/monitoring/alerts").json()["firing"]
        if firing:
            return firing
        time.sleep(0.05)
    raise AssertionError("no alert fired")
