"""``POST /explain`` on the demo's two versions (logistic regression, champion; gradient boosting,
challenger): attributions that add up to what ``/predict`` answers, a logged request explained by
its id through a real gateway, and a clear 4xx for what cannot be explained."""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from registry.demo import DEMO_MODEL, build_demo, demo_request
from registry.store import Registry
from service.app import create_app
from service.settings import Settings

BOOSTED = 2  # the demo's gradient-boosting challenger


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    registry = Registry(tmp_path_factory.mktemp("explain") / "registry")
    build_demo(registry)
    return registry


@pytest.fixture(scope="module")
def client(demo_registry):
    settings = Settings(registry=demo_registry.root, poll_interval=3600, explain_max_rows=20)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def rows(count: int) -> list[dict[str, float]]:
    return json.loads(demo_request(count))["inputs"]


def added_up(answer: dict, row: int, output: str) -> float:
    item = answer["explanations"][row]
    return answer["base_value"][output] + sum(item["attributions"][output].values())


def test_tree_attributions_add_up_to_the_probability_predict_answers(client):
    inputs = rows(5)
    predicted = client.post("/predict", json={"inputs": inputs, "version": BOOSTED}).json()
    answer = client.post("/explain", json={"inputs": inputs, "version": BOOSTED, "space": "probability"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["method"], body["space"], body["version"]) == ("tree-interventional", "probability", BOOSTED)
    assert body["offered"] == {"tree": ["margin", "probability"], "sampling": ["probability"]}
    for row, prediction in enumerate(predicted["predictions"]):
        for output, probability in prediction["probabilities"].items():
            assert added_up(body, row, output) == pytest.approx(probability, abs=1e-6)
        assert set(body["explanations"][row]["attributions"]["malignant"]) == set(inputs[0])


def test_the_default_for_trees_is_the_exact_margin_and_names_its_space(client):
    body = client.post("/explain", json={"inputs": rows(2), "version": BOOSTED}).json()
    assert (body["method"], body["space"], body["background_rows"]) == ("tree-path-dependent", "margin", 0)
    item = body["explanations"][0]
    margin = item["output"]["malignant"]
    assert item["output"]["benign"] == pytest.approx(-margin)  # one log-odds, both ways
    assert added_up(body, 0, "malignant") == pytest.approx(margin, abs=1e-9)
    assert "standard_error" not in item


def test_a_model_without_trees_is_explained_by_sampling_with_its_error(client):
    inputs = rows(2)
    predicted = client.post("/predict", json={"inputs": inputs}).json()["predictions"]
    body = client.post("/explain", json={"inputs": inputs}).json()
    assert (body["method"], body["space"], body["version"]) == ("sampling", "probability", 1)
    assert body["offered"] == {"sampling": ["probability"]}
    for row in range(2):
        probability = predicted[row]["probabilities"]["malignant"]
        assert added_up(body, row, "malignant") == pytest.approx(probability, abs=1e-6)
        errors = body["explanations"][row]["standard_error"]["malignant"]
        assert all(0 <= error < 0.05 for error in errors.values())


@pytest.mark.parametrize(
    ("body", "status", "says", "field"),
    [
        ({"inputs": rows(1), "method": "magic"}, 400, "method: expected one of tree, sampling", "method"),
        ({"inputs": rows(1), "method": "tree"}, 422, "method tree: not offered for this version", "method"),
        ({"inputs": rows(1), "space": "margin"}, 422, "method sampling explains probability", "space"),
        (
            {"inputs": rows(1), "version": BOOSTED, "space": "value"},
            422,
            "explains margin or probability",
            "space",
        ),
        ({"model": DEMO_MODEL}, 400, "inputs or request_id: required", "inputs"),
        ({"request_id": "never-sent"}, 404, "no answered request", None),
        ({"request_id": "x", "inputs": rows(1)}, 400, "given without inputs, model or version", "request_id"),
        ({"inputs": rows(21)}, 413, "exceed the limit of 20 rows", "inputs"),
        ({"inputs": rows(1), "colour": 1}, 400, "colour: unknown field", "colour"),
        ({"inputs": [{"mean_radius": "big"}]}, 422, "mean_radius", None),
    ],
)
def test_what_cannot_be_explained_gets_a_clear_4xx(client, body, status, says, field):
    answer = client.post("/explain", json=body)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"] + json.dumps(answer.json().get("details", []))
    if field is not None:
        assert answer.json()["field"] == field


def test_a_tensor_model_says_its_attributions_are_not_offered(registry, digits_tensor_model):
    model = digits_tensor_model
    registry.push(model.onnx, "digits", model.reference, actor="tests", target="digit")
    registry.promote("digits", 1, "champion", actor="tests")
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        image = np.zeros((1, 1, 8, 8), dtype=np.float32).tolist()
        answer = client.post("/explain", json={"model": "digits", "inputs": {"pixels": image}})
    assert answer.status_code == 422
    assert "tensors" in answer.json()["error"]


@pytest.mark.slow
def test_a_logged_request_is_explained_by_its_id_in_a_real_gateway(demo_registry, gateway_factory):
    gateway = gateway_factory(demo_registry)
    inputs = rows(3)
    predicted = httpx.post(f"{gateway.url}/predict", json={"inputs": inputs, "version": BOOSTED}).json()
    deadline = time.monotonic() + 10
    while True:  # the record is in the log once its writer commits it (every 50 ms)
        by_id = httpx.post(f"{gateway.url}/explain", json={"request_id": predicted["request_id"]}, timeout=30)
        if by_id.status_code != 404 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert by_id.status_code == 200, by_id.text
    direct = httpx.post(f"{gateway.url}/explain", json={"inputs": inputs, "version": BOOSTED}, timeout=30)
    assert by_id.json()["version"] == BOOSTED
    assert by_id.json()["explanations"] == direct.json()["explanations"]
