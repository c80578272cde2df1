"""The HTTP API in-process: answers, v2 shapes, every bad request a 4xx, and hot swap in the pool."""

from __future__ import annotations

import hashlib
import json
import socket
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def records(cancer_model):
    return cancer_model.frame.iloc[:3].to_dict(orient="records")


def test_predict_answers_labels_and_probabilities(client, records):
    response = client.post(
        "/predict", json={"model": "cancer", "inputs": records}, headers={"X-Request-ID": "abc-1"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["request_id"] == "abc-1" == response.headers["x-request-id"]
    assert (body["model"], body["version"]) == ("cancer", 1)
    assert len(body["predictions"]) == 3
    for prediction in body["predictions"]:
        assert prediction["label"] in ("benign", "malignant")
        assert set(prediction["probabilities"]) == {"benign", "malignant"}
        assert sum(prediction["probabilities"].values()) == pytest.approx(1, abs=1e-5)
        assert prediction["label"] == max(prediction["probabilities"], key=prediction["probabilities"].get)


def test_model_may_be_omitted_when_one_is_served_and_a_version_pinned(client, records):
    body = client.post("/predict", json={"inputs": records[:1]}).json()
    assert body["model"] == "cancer" and body["version"] == 1
    assert client.post("/predict", json={"inputs": records[:1], "version": 2}).json()["version"] == 2


def test_v2_infer_matches_predict(client, records, cancer_model):
    matrix = cancer_model.frame.iloc[:3].to_numpy(dtype=np.float32)
    v2 = client.post(
        "/v2/models/cancer/infer",
        json={
            "id": "req-9",
            "inputs": [{"name": "X", "shape": [3, 30], "datatype": "FP32", "data": matrix.ravel().tolist()}],
        },
    ).json()
    friendly = client.post("/predict", json={"model": "cancer", "inputs": records}).json()
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert v2["id"] == "req-9" and v2["model_version"] == "1"
    assert outputs["label"]["data"] == [p["label"] for p in friendly["predictions"]]
    assert outputs["probabilities"]["shape"] == [3, 2]
    probabilities = np.array(outputs["probabilities"]["data"]).reshape(3, 2)
    expected = [[p["probabilities"][c] for c in ("benign", "malignant")] for p in friendly["predictions"]]
    np.testing.assert_allclose(probabilities, expected, rtol=1e-6)


def test_v2_pinned_version_and_requested_outputs(client, cancer_model):
    data = cancer_model.frame.iloc[:1].to_numpy().ravel().tolist()
    body = client.post(
        "/v2/models/cancer/versions/2/infer",
        json={
            "inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP64", "data": data}],
            "outputs": [{"name": "label"}],
        },
    ).json()
    assert body["model_version"] == "2" and [o["name"] for o in body["outputs"]] == ["label"]


def test_v2_metadata_health_and_readiness(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get("/v2/models/cancer/ready").status_code == 200
    assert client.get("/v2/models/cancer/versions/2/ready").status_code == 200
    metadata = client.get("/v2/models/cancer").json()
    assert metadata["versions"] == ["1", "2"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
    assert [o["name"] for o in metadata["outputs"]] == ["label", "probabilities"]
    assert client.get("/v2/models/cancer/versions/2").json()["parameters"]["served_version"] == "2"
    assert client.get("/v2").json()["name"] == "modelgate"
    assert client.get("/models").json()["models"]["cancer"] == {
        "champion": 1,
        "challenger": 2,
        "routing": {"mode": "off", "challenger_weight": 0.0},
        "errors": {},
    }


def bad_requests(records):
    good = {"model": "cancer", "inputs": records[:1]}
    row = records[0]
    v2 = "/v2/models/cancer/infer"
    return [
        ("POST", "/predict", b"{not json", 400, "not valid JSON"),
        ("POST", "/predict", b"[1, 2]", 400, "expected a JSON object"),
        ("POST", "/predict", b"", 400, "not valid JSON"),
        (
            "POST",
            "/predict",
            b'{"model": "cancer", "inputs": [{"a": NaN}]}',
            400,
            "NaN and Infinity are not JSON",
        ),
        ("POST", "/predict", b'{"model": "cancer", "inputs": [{"a": -Infinity}]}', 400, "send null"),
        ("POST", "/predict", {**good, "input": []}, 400, "input: unknown field"),
        ("POST", "/predict", {"model": "cancer"}, 400, "inputs: required"),
        ("POST", "/predict", {"model": 3, "inputs": []}, 400, "model: expected a model name"),
        ("POST", "/predict", {**good, "model": "dog"}, 404, "model 'dog' is not served"),
        ("POST", "/predict", {**good, "version": 9}, 404, "no version 9"),
        ("POST", "/predict", {**good, "version": "2"}, 400, "version: expected an integer"),
        ("POST", "/predict", {"model": "cancer", "inputs": []}, 422, "batch is empty"),
        (
            "POST",
            "/predict",
            {"model": "cancer", "inputs": [row] * 51},
            413,
            "51 rows exceed the limit of 50",
        ),
        (
            "POST",
            "/predict",
            {"model": "cancer", "inputs": [{**row, "extra": 1}]},
            422,
            "inputs[0].extra: unknown feature",
        ),
        (
            "POST",
            "/predict",
            {"model": "cancer", "inputs": [{**row, "mean_radius": "12"}]},
            422,
            "inputs[0].mean_radius: expected a number",
        ),
        (
            "POST",
            "/predict",
            {"model": "cancer", "inputs": [{**row, "mean_radius": None}]},
            422,
            "null is not accepted",
        ),
        ("POST", "/predict", b"x" * 300_000, 413, "exceeds the limit of 200000 bytes"),
        ("POST", v2, {"inputs": "X"}, 422, "non-empty list of input tensors"),
        (
            "POST",
            v2,
            {"inputs": [{"name": "X", "shape": [1, 29], "datatype": "FP32", "data": [0] * 29}]},
            422,
            "expected [N, 30]",
        ),
        ("POST", v2, {"outputs": [{"name": "score"}], "inputs": []}, 422, "unknown output 'score'"),
        ("POST", v2, {}, 400, "inputs: required"),
        ("POST", "/v2/models/dog/infer", {"inputs": []}, 404, "model 'dog' is not served"),
        ("POST", "/v2/models/cancer/versions/x/infer", {"inputs": []}, 404, "not a version number"),
        ("POST", "/v2/models/cancer/versions/7/infer", {"inputs": []}, 404, "no version 7"),
        ("GET", "/v2/models/dog", None, 404, "not served"),
        ("GET", "/v2/models/cancer/versions/7/ready", None, 404, "no version 7"),
        ("GET", "/predict", None, 405, "GET is not allowed on /predict"),
        ("POST", "/nowhere", {}, 404, "no route POST /nowhere"),
    ]


def test_every_bad_request_gets_a_clear_4xx(client, records):
    for method, path, body, status, message in bad_requests(records):
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        response = client.request(method, path, content=content)
        assert response.status_code == status, (
            path,
            body if not isinstance(body, bytes) else body[:40],
            response.text,
        )
        answer = response.json()
        assert message in answer["error"], (message, answer)
        assert answer["request_id"] == response.headers["x-request-id"]


def test_promotion_is_swapped_in_by_refresh(client, cancer_registry, records):
    gateway = client.app.state.context
    cancer_registry.promote("cancer", 2, "champion", reason="test")
    gateway.pool.refresh()
    assert client.post("/predict", json={"inputs": records[:1]}).json()["version"] == 2
    cancer_registry.rollback("cancer")
    gateway.pool.refresh()
    assert client.post("/predict", json={"inputs": records[:1]}).json()["version"] == 1


def test_a_corrupted_version_is_not_swapped_in(client, cancer_registry, records, cancer_model):
    cancer_registry.push(cancer_model.onnx, "cancer", cancer_model.reference)  # v3, not loaded anywhere yet
    model_file = cancer_registry.root / "models/cancer/versions/3/model.onnx"
    model_file.chmod(0o644)
    model_file.write_bytes(model_file.read_bytes()[:-10])
    cancer_registry.promote("cancer", 3, "champion")
    gateway = client.app.state.context
    gateway.pool.refresh()

    assert client.post("/predict", json={"inputs": records[:1]}).json()["version"] == 1
    status = client.get("/models").json()["models"]["cancer"]
    assert status["champion"] == 1
    assert (
        "version 3 not swapped in" in status["errors"]["champion"]
        and "sha256" in status["errors"]["champion"]
    )


def test_a_version_that_does_not_load_is_not_swapped_in(
    client, cancer_registry, records, cancer_model, diabetes_model
):
    # a registry version whose bytes and hashes agree but which no longer fits its manifest
    cancer_registry.push(cancer_model.onnx, "cancer", cancer_model.reference)  # v3, not loaded anywhere yet
    version_dir = cancer_registry.root / "models/cancer/versions/3"
    (version_dir / "model.onnx").chmod(0o644)
    (version_dir / "manifest.json").chmod(0o644)
    data = diabetes_model.onnx.read_bytes()
    (version_dir / "model.onnx").write_bytes(data)
    manifest = json.loads((version_dir / "manifest.json").read_text())
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
    (version_dir / "manifest.json").write_text(json.dumps(manifest))
    cancer_registry.promote("cancer", 3, "champion")
    client.app.state.context.pool.refresh()

    assert client.post("/predict", json={"inputs": records[:1]}).json()["version"] == 1
    assert "not swapped in" in client.get("/models").json()["models"]["cancer"]["errors"]["champion"]


def test_model_is_required_when_several_are_served(cancer_registry, diabetes_model, records):
    cancer_registry.push(diabetes_model.onnx, "diabetes", diabetes_model.reference)
    cancer_registry.promote("diabetes", 1, "champion")
    app = create_app(Settings(registry=cancer_registry.root, poll_interval=3600))
    with TestClient(app) as client:
        response = client.post("/predict", json={"inputs": records[:1]})
        assert response.status_code == 400
        assert "model: required, this gateway serves 2 models: cancer, diabetes" in response.json()["error"]
        row = diabetes_model.frame.iloc[0].to_dict()
        value = client.post("/predict", json={"model": "diabetes", "inputs": [row]}).json()["predictions"][0][
            "value"
        ]
        assert 25 < value < 350


def test_columns_model_takes_strings_and_nulls(registry, columns_model):
    registry.push(columns_model.onnx, "columns", columns_model.reference)
    registry.promote("columns", 1, "champion")
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        body = client.post(
            "/predict", json={"inputs": [{"color": "red", "size": None}, {"color": "blue", "size": 14.0}]}
        ).json()
        # the null is accepted and reaches the model as NaN (a linear model answers NaN for it)
        assert len(body["predictions"]) == 2 and body["predictions"][1]["label"] == "yes"
        refused = client.post("/predict", json={"inputs": [{"color": 1, "size": 2.0}]})
        assert refused.status_code == 422 and refused.json()["field"] == "inputs[0].color"
        v2 = client.post(
            "/v2/models/columns/infer",
            json={
                "inputs": [
                    {"name": "color", "shape": [1, 1], "datatype": "BYTES", "data": ["green"]},
                    {"name": "size", "shape": [1, 1], "datatype": "FP32", "data": [8.0]},
                ]
            },
        ).json()
        assert v2["outputs"][0]["data"] == ["no"]


def test_zipmap_multiclass_probabilities_are_decoded(registry, iris_zipmap_model):
    registry.push(iris_zipmap_model.onnx, "iris", iris_zipmap_model.reference)
    registry.promote("iris", 1, "champion")
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        rows = iris_zipmap_model.frame.iloc[[0, 75, 149]].to_dict(orient="records")
        predictions = client.post("/predict", json={"inputs": rows}).json()["predictions"]
        assert [p["label"] for p in predictions] == [0, 1, 2]
        assert all(set(p["probabilities"]) == {"0", "1", "2"} for p in predictions)
        assert client.get("/v2/models/iris").json()["outputs"][0]["datatype"] == "INT64"


def test_not_ready_without_a_champion(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        assert client.get("/v2/health/ready").status_code == 503
        response = client.post("/predict", json={"inputs": [{}]})
        assert response.status_code == 503 and "no champion loaded" in response.json()["error"]


def test_a_new_model_without_a_champion_leaves_the_others_ready(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 1, "champion")
    registry.push(cancer_model.onnx, "fresh", cancer_model.reference)  # pushed, not yet promoted
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        for path in ("/readyz", "/v2/health/ready", "/ping"):
            response = client.get(path)
            assert response.status_code == 200, path
        models = client.get("/readyz").json()["models"]
        assert models["cancer"] == {"ready": True, "champion": 1}
        assert models["fresh"]["ready"] is False and "no champion" in models["fresh"]["reason"]
        assert client.get("/v2/models/fresh/ready").status_code == 503
        assert client.get("/v2/models/cancer/ready").status_code == 200


def test_large_batches_are_answered_in_full(client, cancer_model):
    rows = cancer_model.frame.iloc[:50].to_dict(orient="records")
    assert len(client.post("/predict", json={"inputs": rows}).json()["predictions"]) == 50


def test_a_null_string_is_accepted_where_the_reference_had_nulls_and_counted_as_missing(
    registry, nullable_colour_model
):
    manifest = registry.push(nullable_colour_model.onnx, "colours", nullable_colour_model.reference)
    registry.promote("colours", 1, "champion")
    colour = manifest.reference.features["color"]
    assert manifest.inputs.features[0].allow_missing and colour.missing_rate == pytest.approx(0.05)
    assert set(colour.categories) == {"red", "green", "blue"}  # a null is no category
    settings = Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05)
    with TestClient(create_app(settings)) as client:
        rows = [{"color": None if i % 2 else "red", "size": 10.0} for i in range(120)]
        response = client.post("/predict", json={"inputs": rows})
        assert response.status_code == 200 and len(response.json()["predictions"]) == 120
        deadline = time.monotonic() + 30
        while (report := client.get("/monitoring/drift").json()).get("window", {}).get("rows") != 120:
            assert time.monotonic() < deadline, report
            time.sleep(0.05)
    (missing,) = [f for f in report["features"] if f["name"] == "color" and f["test"] == "missing"]
    assert missing["drifted"] and missing["effect"] == pytest.approx(0.5 - 0.05)
    flags = {p["rule"]: p["violations"] for p in report["plausibility"] if p["feature"] == "color"}
    assert flags == {"input_missing": 60}  # missing, not outside the colours seen


def test_the_status_route_names_the_replica_whose_monitor_leads(client):
    deadline = time.monotonic() + 20
    status = client.get("/monitoring/status").json()
    while status["monitor"]["holder"] is None and time.monotonic() < deadline:
        time.sleep(0.2)
        status = client.get("/monitoring/status").json()
    assert status["monitor"]["holder"].startswith(f"{socket.gethostname()} pid ")
    assert status["monitor"]["this_replica"] is True and status["replica"] == socket.gethostname()
    assert status["log"]["accepting"] is True and status["log"]["lost"] == 0
