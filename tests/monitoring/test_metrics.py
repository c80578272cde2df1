"""Prometheus metrics: requests, latency, rows, classes, violations, log health, monitor gauges."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from monitoring.metrics import LATENCY_BUCKETS, observe_many
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found, name, **labels):
    matching = [v for (n, ls), v in found.items() if n == name and labels.items() <= dict(ls).items()]
    assert matching, f"no sample {name} {labels}"
    return sum(matching)


def test_observing_many_at_once_gives_the_histogram_observing_each_would():
    values = np.array([0.0, 0.0005, 0.0007, 0.001, 0.3, 0.3, 4.9, 5.0, 7.5, 1e9])
    histograms = {}
    for way in ("each", "many"):
        registry = CollectorRegistry()
        histograms[way] = (registry, Histogram("h", "h", ["a"], buckets=LATENCY_BUCKETS, registry=registry))
    for v in values:
        histograms["each"][1].labels("x").observe(v)
    observe_many(histograms["many"][1].labels("x"), values)
    each, many = (samples(generate_latest(registry).decode()) for registry, _ in histograms.values())
    without_created = {k: v for k, v in many.items() if not k[0].endswith("_created")}
    assert without_created == {k: v for k, v in each.items() if not k[0].endswith("_created")}
    assert value(many, "h_bucket", le="0.001") == 4 and value(many, "h_count") == 10


def test_requests_rows_classes_and_violations_are_counted(cancer_registry, cancer_model, child_metrics):
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    odd = {**rows[0], "mean_area": 1e7}
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, monitor_interval=3600)
    with TestClient(create_app(settings)) as client:
        for _ in range(4):
            client.post("/predict", json={"inputs": rows})
        client.post("/predict", json={"inputs": [odd]})
        client.post("/predict", json={"inputs": [{}]})
        client.post("/predict", json={"model": "dog", "inputs": rows})
    found = samples(child_metrics())  # after shutdown drained the log queue
    labels = {"model": "cancer", "version": "1", "arm": "champion"}
    assert value(found, "modelgate_requests_total", **labels, status="200") == 5
    assert value(found, "modelgate_requests_total", **labels, status="422") == 1
    assert value(found, "modelgate_requests_total", model="unknown", status="404") == 1
    assert value(found, "modelgate_request_latency_seconds_count", **labels, route="predict") == 6
    assert value(found, "modelgate_rows_predicted_total", **labels) == 13
    assert value(found, "modelgate_predictions_total", **labels) == 13
    assert (
        value(found, "modelgate_plausibility_violations_total", rule="input_range", feature="mean_area") == 1
    )
    assert value(found, "modelgate_log_records_written_total") == 7


@pytest.mark.slow
def test_metrics_of_all_workers_and_the_monitor_reach_the_metrics_route(gateway_factory, cancer_registry):
    gateway = gateway_factory(cancer_registry, workers=2)
    _, x_test, _, _ = breast_cancer()
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for start in range(0, len(x_test), 5):
            rows = x_test.iloc[start : start + 5].to_dict(orient="records")
            assert client.post("/predict", json={"inputs": rows}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = samples(client.get("/metrics").text)
            try:
                if value(found, "modelgate_monitor_window_rows", model="cancer") == len(x_test):
                    break
            except AssertionError:
                pass
            time.sleep(0.5)
    requests = -(-len(x_test) // 5)
    assert value(found, "modelgate_requests_total", model="cancer", status="200") == requests
    assert value(found, "modelgate_rows_predicted_total", model="cancer") == len(x_test)
    assert value(found, "modelgate_monitor_window_rows", model="cancer") == len(x_test)
    assert value(found, "modelgate_drift_features_drifted", model="cancer") == 0
    assert value(found, "modelgate_drift_psi", model="cancer", feature="mean_radius") >= 0
    assert value(found, "modelgate_log_queue_depth") == 0
