"""Hostile requests in-process: odd digits, attacker-sized strings and records get a small, clear 4xx.

The same probes against a real gateway process, with the health of other
clients watched meanwhile, are in tests/test_faults.py.
"""

from __future__ import annotations

import orjson
import pytest
from starlette.testclient import TestClient

from monitoring.store.sqlite import open_sqlite
from service.app import create_app
from service.settings import Settings

#: bytes an answer to a hostile request may take, whatever it sent
SMALL = 4_000
HUGE = "k" * 3_000_000
ROW_TENSOR = {"name": "X", "shape": [1, 30], "datatype": "FP32", "data": [0.0] * 30}


@pytest.fixture
def roomy(cancer_registry):
    """The app with the default row limit and room for a 40 MB body."""
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, max_body_bytes=40_000_000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_a_unicode_digit_is_not_a_version_number(client):
    # a superscript one: str.isdigit() says yes, int() says no
    for path in ("/v2/models/cancer/versions/%C2%B9/ready", "/v2/models/cancer/versions/%C2%B9"):
        response = client.get(path)
        assert response.status_code == 404 and "is not a version number" in response.json()["error"], path
    infer = client.post("/v2/models/cancer/versions/%C2%B9/infer", json={"inputs": []})
    assert infer.status_code == 404
    # a latin-1 header value: the binary extension's length
    binary = client.post(
        "/v2/models/cancer/infer",
        content=b"{}",
        headers={"Inference-Header-Content-Length": "\u00b9".encode("latin-1")},
    )
    assert binary.status_code == 400 and "Inference-Header-Content-Length" in binary.json()["error"]


def test_what_a_client_sent_is_quoted_only_so_far(roomy, cancer_model, cancer_registry):
    row = cancer_model.frame.iloc[0].to_dict()
    probes = {
        "key": ("/predict", {"inputs": [{**row, HUGE: 1}]}, 422),
        "column": ("/predict", {"inputs": {HUGE: [1.0]}}, 422),
        "model": ("/predict", {"model": HUGE, "inputs": [row]}, 404),
        "field": ("/predict", {HUGE: 1, "inputs": [row]}, 400),
        "v2 input": ("/v2/models/cancer/infer",
                     {"inputs": [{"name": HUGE, "shape": [1], "datatype": "FP32", "data": [1.0]}]}, 422),
        "v2 id": ("/v2/models/cancer/infer", {"id": HUGE, "inputs": [ROW_TENSOR]}, 400),
        "kserve field": ("/v1/models/cancer:predict", {HUGE: [row]}, 400),
        "feedback": ("/feedback", {"request_id": HUGE, "ground_truth": "benign"}, 404),
    }  # fmt: skip
    for what, (path, body, status) in probes.items():
        response = roomy.post(path, content=orjson.dumps(body))
        assert response.status_code == status, (what, response.text[:300])
        assert len(response.content) < SMALL, (what, len(response.content))
        assert "characters)" in response.text, what  # it says how long the string was
    roomy.__exit__(None, None, None)  # the gateway stops: its log is written
    store = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    records = store.requests.fetch(None, None)
    store.close()
    assert 0 < max(len(r.error or "") for r in records) < 2_000
    assert max(len(r.model or "") for r in records) < 100


def test_a_path_is_quoted_only_so_far(client):
    response = client.get("/" + "p" * 60_000)
    assert response.status_code == 404 and len(response.content) < SMALL


def test_a_record_of_millions_of_keys_is_refused_before_it_is_parsed(roomy, cancer_model):
    row = cancer_model.frame.iloc[0].to_dict()
    keys = {f"k{i}": 1 for i in range(2_300_000)}
    for path, body in (
        ("/predict", {"inputs": [keys]}),
        ("/v1/models/cancer:predict", {"instances": [keys]}),
        ("/invocations", {"dataframe_records": [keys]}),
        ("/v2/models/cancer/infer", {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32",
                                                 "data": [0.0] * 2_300_000}]}),
    ):  # fmt: skip
        response = roomy.post(path, content=orjson.dumps(body))
        assert response.status_code == 413, (path, response.text[:300])
        assert "JSON values, more than 10,000 rows of" in response.json()["error"], path
    # within the bound, the diagnosis stops at a few problems instead of walking every key
    many = roomy.post("/predict", json={"inputs": [{**row, **{f"k{i}": 1 for i in range(50_000)}}]})
    assert many.status_code == 422 and len(many.json()["details"]) == 20
    assert "(and at least 20 more problems)" in many.json()["error"]
    # a legitimate full batch still fits
    full = roomy.post("/predict", json={"inputs": [row] * 10_000})
    assert full.status_code == 200 and len(full.json()["predictions"]) == 10_000


def test_binary_strings_past_the_shape_are_not_decoded(roomy):
    blob = b"\x00\x00\x00\x00" * 8_000_000  # eight million empty BYTES elements
    tensor = {
        "name": "X",
        "shape": [1, 30],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(blob)},
    }
    header = orjson.dumps({"inputs": [tensor]})
    response = roomy.post(
        "/v2/models/cancer/infer",
        content=header + blob,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 422 and "BYTES does not fit this input" in response.json()["error"]
