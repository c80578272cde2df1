"""The demo registry answers the README's request with sensible predictions."""

from __future__ import annotations

import json

from starlette.testclient import TestClient

from registry.demo import DEMO_MODEL, breast_cancer, build_demo, demo_request
from service.app import create_app
from service.settings import Settings


def test_demo_models_predict_the_held_out_data_well(registry):
    demo = build_demo(registry)
    assert demo.champion.lineage.metrics["test_accuracy"] > 0.93
    assert demo.challenger.lineage.metrics["test_accuracy"] > 0.9
    _, x_test, _, y_test = breast_cancer()
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        answer = client.post(
            "/predict", json={"model": DEMO_MODEL, "inputs": x_test.to_dict(orient="records")}
        ).json()
        labels = [p["label"] for p in answer["predictions"]]
        assert sum(a == b for a, b in zip(labels, y_test, strict=True)) / len(labels) > 0.93
        readme_request = client.post("/predict", content=demo_request(2))
        assert readme_request.status_code == 200 and len(readme_request.json()["predictions"]) == 2
    assert json.loads(demo_request(1))["model"] == DEMO_MODEL
    # a benchmark's 256-row batch is 256 rows, though the held-out set has fewer
    assert len(json.loads(demo_request(len(x_test) + 10))["inputs"]) == len(x_test) + 10
