"""Adaptive batching: concurrent requests merged into one session run, each answered with its own rows."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import BatchPolicy, Settings, parse_policies


def test_policies_are_parsed_or_refused_with_the_form_to_use():
    assert parse_policies("cancer:64:2, iris:8:0.5") == {
        "cancer": BatchPolicy(64, 0.002),
        "iris": BatchPolicy(8, 0.0005),
    }
    assert parse_policies("") == {}
    for bad in ("cancer", "cancer:64", "cancer:x:2", ":8:2", "cancer:1:2", "cancer:8:0", "cancer:8:5000"):
        with pytest.raises(ValueError, match="setting batching"):
            parse_policies(bad)
    with pytest.raises(ValueError, match="NAME:MAX_ROWS:MAX_WAIT_MS"):
        Settings(batching="cancer:lots:2")


def test_concurrent_requests_share_one_run_and_get_their_own_rows(cancer_registry, cancer_model):
    frame = cancer_model.frame
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, batching="cancer:16:300")
    with TestClient(create_app(settings)) as client:
        bodies = [{"inputs": frame.iloc[i : i + 1 + i % 2].to_dict(orient="records")} for i in range(6)]
        alone = [client.post("/predict", json=body).json()["predictions"] for body in bodies[:1]]
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda body: client.post("/predict", json=body), bodies))
        assert all(a.status_code == 200 for a in answers)
        got = [a.json()["predictions"] for a in answers]
        assert [len(p) for p in got] == [1, 2, 1, 2, 1, 2]
        unbatched = Settings(registry=cancer_registry.root, poll_interval=3600, monitoring=False)
        with TestClient(create_app(unbatched)) as plain:
            expected = [plain.post("/predict", json=body).json()["predictions"] for body in bodies]
        assert alone[0] == expected[0]
        for mine, theirs in zip(got, expected, strict=True):  # a bigger batch may round in another order
            assert [p["label"] for p in mine] == [p["label"] for p in theirs]
            for a, b in zip(mine, theirs, strict=True):
                assert a["probabilities"] == pytest.approx(b["probabilities"], abs=1e-6)
        registry = client.app.state.context.metrics.registry
        runs = registry.get_sample_value("modelgate_batch_rows_count", {"model": "cancer"})
        rows = registry.get_sample_value("modelgate_batch_rows_sum", {"model": "cancer"})
        assert rows == 1 + 9 and runs < 1 + 6  # the first request alone, then the six merged


def test_a_request_above_the_limit_runs_alone(cancer_registry, cancer_model):
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, batching="cancer:4:300")
    with TestClient(create_app(settings)) as client:
        body = {"inputs": cancer_model.frame.iloc[:10].to_dict(orient="records")}
        answer = client.post("/predict", json=body)
        assert answer.status_code == 200 and len(answer.json()["predictions"]) == 10
        assert client.app.state.context.metrics.registry.get_sample_value(
            "modelgate_batch_rows_count", {"model": "cancer"}
        ) in (None, 0.0)
