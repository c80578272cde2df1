"""Every prediction request lands in the prediction log; ground truth is taken per request id."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from monitoring.store.sqlite import open_sqlite
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def settings(cancer_registry):
    return Settings(registry=cancer_registry.root, poll_interval=3600)


@pytest.fixture
def client(settings):
    with TestClient(create_app(settings)) as client:
        yield client


def logged(settings):
    """What the log holds once the gateway has shut down (which drains the queue)."""
    store = open_sqlite(settings.prediction_log)
    try:
        return store.requests.read_after({}, 10_000)
    finally:
        store.close()


def test_answered_refused_and_pinned_requests_are_all_recorded(settings, cancer_model):
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    with TestClient(create_app(settings)) as client:
        ok = client.post("/predict", json={"inputs": rows}, headers={"X-Request-ID": "ok-1"}).json()
        client.post("/predict", json={"inputs": [{"mean_radius": "x"}]}, headers={"X-Request-ID": "bad-1"})
        client.post("/predict", json={"inputs": rows[:1], "version": 2}, headers={"X-Request-ID": "pin-1"})
        client.post(
            "/v2/models/cancer/infer",
            json={"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                              "data": cancer_model.frame.iloc[0].tolist()}]},
            headers={"X-Request-ID": "v2-1"},
        )  # fmt: skip
    records = {r.request_id: r for r in logged(settings)}
    assert set(records) == {"ok-1", "bad-1", "pin-1", "v2-1"}

    answered = records["ok-1"]
    assert (answered.status, answered.model, answered.version, answered.arm, answered.rows) == (
        200,
        "cancer",
        1,
        "champion",
        3,
    )
    assert answered.inputs["mean_radius"] == pytest.approx(
        cancer_model.frame["mean_radius"].iloc[:3].tolist()
    )
    assert answered.outputs["label"] == [p["label"] for p in ok["predictions"]]
    assert answered.latency_ms > 0 and answered.route == "predict"

    refused = records["bad-1"]
    assert refused.status == 422 and "inputs[0].mean_radius" in refused.error and refused.inputs is None
    assert (records["pin-1"].arm, records["pin-1"].version) == ("pinned", 2)
    assert (records["v2-1"].route, records["v2-1"].rows) == ("v2", 1)


def test_feedback_for_one_request(client, cancer_model):
    row = cancer_model.frame.iloc[:1].to_dict(orient="records")
    client.post("/predict", json={"inputs": row}, headers={"X-Request-ID": "one"})
    first = client.post("/feedback", json={"request_id": "one", "ground_truth": "benign"})
    assert first.status_code == 200 and first.json()["outcome"] == "accepted"
    again = client.post("/feedback", json={"request_id": "one", "ground_truth": "benign"})
    assert again.status_code == 200 and again.json()["outcome"] == "duplicate"
    changed = client.post("/feedback", json={"request_id": "one", "ground_truth": "malignant"})
    assert changed.status_code == 409 and "already stored" in changed.json()["error"]


def test_feedback_carries_a_reward_with_or_without_ground_truth(client, cancer_model):
    row = cancer_model.frame.iloc[:1].to_dict(orient="records")
    for request_id in ("paid", "both"):
        client.post("/predict", json={"inputs": row}, headers={"X-Request-ID": request_id})
    paid = client.post("/feedback", json={"request_id": "paid", "reward": 19.99})
    assert paid.json()["outcome"] == "accepted"
    both = client.post("/feedback", json={"request_id": "both", "ground_truth": "benign", "reward": 0})
    assert both.status_code == 200
    later = client.post("/feedback", json={"request_id": "paid", "ground_truth": "benign"})
    assert later.status_code == 409 and "different feedback is already stored" in later.json()["error"]


def test_feedback_in_bulk_answers_each_item(client, cancer_model):
    rows = cancer_model.frame.iloc[:2].to_dict(orient="records")
    client.post("/predict", json={"inputs": rows}, headers={"X-Request-ID": "batch"})
    client.post("/predict", json={"inputs": rows[:1]}, headers={"X-Request-ID": "single"})
    client.post("/predict", json={"inputs": [{"x": 1}]}, headers={"X-Request-ID": "refused"})
    response = client.post(
        "/feedback",
        json={"feedback": [
            {"request_id": "batch", "ground_truth": ["benign", "malignant"]},
            {"request_id": "single", "ground_truth": "cat"},
            {"request_id": "nobody", "ground_truth": "benign"},
            {"request_id": "refused", "ground_truth": "benign"},
            {"request_id": "batch", "ground_truth": "benign"},
            {"ground_truth": "benign"},
            "text",
        ]},
    )  # fmt: skip
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 1
    statuses = [r["status"] for r in body["results"]]
    assert statuses == [200, 422, 404, 404, 422, 422, 422]
    errors = [r.get("error", "") for r in body["results"]]
    assert "'cat' is not a class of cancer (benign, malignant)" in errors[1]
    assert "no answered request has this id" in errors[2]
    assert "1 values for a request of 2 rows" in errors[4]
    assert errors[5] == "feedback[5]: request_id: required, a string"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"feedback": []}, 400, "non-empty list"),
        ({"feedback": [{}], "extra": 1}, 400, "nothing else"),
        ({"request_id": "x"}, 422, "ground_truth or reward: required"),
        ({"request_id": "x", "reward": "10"}, 422, "reward: expected a finite number, got '10'"),
        ({"request_id": "x", "reward": True}, 422, "reward: expected a finite number"),
        ({"request_id": "x", "reward": 1, "y" * 10_000: 1}, 422, "unknown field 'yyyy"),
        ({"request_id": 5, "ground_truth": 1}, 422, "request_id: required, a string"),
    ],
)
def test_malformed_feedback_is_refused_clearly(client, body, status, message):
    response = client.post("/feedback", json=body)
    assert response.status_code == status and message in response.json()["error"]


def test_regression_feedback_takes_finite_numbers(registry, diabetes_model):
    registry.push(diabetes_model.onnx, "diabetes", diabetes_model.reference)
    registry.promote("diabetes", 1, "champion")
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        client.post("/predict", json={"inputs": diabetes_model.frame.iloc[:1].to_dict(orient="records")},
                    headers={"X-Request-ID": "d1"})  # fmt: skip
        assert client.post("/feedback", json={"request_id": "d1", "ground_truth": "high"}).status_code == 422
        assert client.post("/feedback", json={"request_id": "d1", "ground_truth": 151}).status_code == 200


def test_implausible_inputs_are_flagged_on_the_record(settings, cancer_model):
    row = cancer_model.frame.iloc[0].to_dict()
    huge = {**row, "mean_area": row["mean_area"] * 100}
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json={"inputs": [row, huge]}, headers={"X-Request-ID": "odd"})
        assert answer.status_code == 200  # flag is the default policy: answered, and counted
    (record,) = logged(settings)
    assert record.flags == {"input_range:mean_area": 1}


def test_a_rejected_rule_refuses_the_request_with_422(cancer_registry, cancer_model):
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, reject_rules="input_range")
    row = cancer_model.frame.iloc[0].to_dict()
    with TestClient(create_app(settings)) as client:
        refused = client.post("/predict", json={"inputs": [{**row, "worst_area": -5000.0}]})
        assert refused.status_code == 422
        assert "implausible, refused by policy: input_range:worst_area (1 rows)" in refused.json()["error"]
        assert client.post("/predict", json={"inputs": [row]}).status_code == 200
    records = {r.status: r for r in logged(settings)}
    assert records[422].flags == {"input_range:worst_area": 1}


def test_unknown_reject_rules_are_refused_at_start(cancer_registry):
    with pytest.raises(ValueError, match="unknown rules \\['input_rnage'\\]"):
        Settings(registry=cancer_registry.root, reject_rules="input_rnage")


def test_with_monitoring_off_the_gateway_only_serves(cancer_registry, cancer_model):
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, monitoring=False)
    rows = cancer_model.frame.iloc[:2].to_dict(orient="records")
    with TestClient(create_app(settings)) as client:
        answer = client.post("/predict", json={"inputs": rows}, headers={"X-Request-ID": "off-1"})
        feedback = client.post("/feedback", json={"request_id": "off-1", "ground_truth": 1})
        drift = client.get("/monitoring/drift")
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 2
    for refused in (feedback, drift):
        assert refused.status_code == 404
        assert "MODELGATE_MONITORING=false" in refused.json()["error"]
    assert not settings.prediction_log.exists()


@pytest.mark.parametrize(("raw", "expected"), [("off", False), ("0", False), ("True", True), ("yes", True)])
def test_monitoring_switch_reads_the_usual_words(raw, expected, tmp_path):
    settings = Settings.from_env({"MODELGATE_REGISTRY": str(tmp_path), "MODELGATE_MONITORING": raw})
    assert settings.monitoring is expected


def test_a_switch_that_is_not_a_boolean_is_refused(tmp_path):
    with pytest.raises(ValueError, match="setting monitoring: 'maybe' is not a valid bool"):
        Settings.from_env({"MODELGATE_REGISTRY": str(tmp_path), "MODELGATE_MONITORING": "maybe"})


def test_a_false_alert_budget_of_no_days_is_refused(tmp_path):
    environ = {"MODELGATE_REGISTRY": str(tmp_path), "MODELGATE_DRIFT_FALSE_ALERT_DAYS": "0"}
    with pytest.raises(ValueError, match=r"setting drift_false_alert_days: 0\.0 is not above 0"):
        Settings.from_env(environ)
