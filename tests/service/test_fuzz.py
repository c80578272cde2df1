"""Whatever a client sends, the answer is a prediction or a 4xx that says why: never a 500."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings

FEATURES = ["mean_radius", "mean_texture", "worst_area"]
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
near_records = st.lists(
    st.dictionaries(st.sampled_from(FEATURES) | st.text(max_size=4), json_values, max_size=4), max_size=4
)


@pytest.fixture(scope="module")
def client(tmp_path_factory, cancer_model):
    from registry.store import Registry

    registry = Registry(tmp_path_factory.mktemp("fuzz") / "registry")
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 1, "champion")
    with TestClient(
        create_app(Settings(registry=registry.root, poll_interval=3600)), raise_server_exceptions=False
    ) as c:
        yield c


def assert_answered(response):
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.text
    if response.status_code != 200:
        assert response.json()["error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values)
def test_any_json_body_is_answered_without_a_500(client, body):
    for path in ("/predict", "/v2/models/cancer/infer"):
        assert_answered(client.post(path, content=json.dumps(body)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=near_records, model=st.sampled_from(["cancer", None, "x"]), version=json_scalars)
def test_near_valid_predict_requests_are_answered_without_a_500(client, records, model, version):
    body = {"inputs": records, "model": model, "version": version}
    assert_answered(client.post("/predict", content=json.dumps(body)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    shape=st.lists(st.integers(-1, 40), max_size=3),
    datatype=st.sampled_from(["FP32", "FP64", "INT64", "BYTES", "BOOL", "fp32", 7]),
    data=json_values,
    name=st.sampled_from(["X", "mean_radius", "nope"]),
)
def test_near_valid_v2_tensors_are_answered_without_a_500(client, shape, datatype, data, name):
    body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    assert_answered(client.post("/v2/models/cancer/infer", content=json.dumps(body)))
