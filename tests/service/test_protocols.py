"""Other clients' formats in-process: v2 binary tensors, columnar /predict, KServe v1, MLflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.http as triton
from starlette.testclient import TestClient

from service.app import create_app
from service.settings import Settings


@pytest.fixture
def frame(cancer_model):
    return cancer_model.frame.iloc[:4]


def friendly(client, frame) -> list[dict]:
    return client.post("/predict", json={"inputs": frame.to_dict(orient="records")}).json()["predictions"]


def triton_infer(client, inputs, outputs=None, path="/v2/models/cancer/infer"):
    """What ``tritonclient.http`` sends for ``infer(model, inputs, outputs)``, and its parse of the answer."""
    body, json_size = triton.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    headers = {"Inference-Header-Content-Length": str(json_size)} if json_size is not None else {}
    response = client.post(path, content=body, headers=headers)
    assert response.status_code == 200, response.text
    length = response.headers.get("inference-header-content-length")
    return triton.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length else None
    )


def test_tritonclient_defaults_binary_in_and_out_match_predict(client, frame):
    tensor = triton.InferInput("X", [4, 30], "FP32")
    tensor.set_data_from_numpy(frame.to_numpy(dtype=np.float32))  # binary_data=True by default
    result = triton_infer(client, [tensor])  # no outputs named: all come back binary
    expected = friendly(client, frame)
    assert [v.decode() for v in result.as_numpy("label")] == [p["label"] for p in expected]
    np.testing.assert_allclose(
        result.as_numpy("probabilities"),
        [[p["probabilities"]["benign"], p["probabilities"]["malignant"]] for p in expected],
        rtol=1e-6,
    )


def test_binary_and_json_outputs_mix_as_each_output_asks(client, frame):
    tensor = triton.InferInput("X", [4, 30], "FP64")  # cast to the model's FP32, as JSON data is
    tensor.set_data_from_numpy(frame.to_numpy(dtype=np.float64))
    outputs = [
        triton.InferRequestedOutput("label", binary_data=False),
        triton.InferRequestedOutput("probabilities"),
    ]
    result = triton_infer(client, [tensor], outputs)
    response = result.get_response()
    assert "data" in response["outputs"][0] and "binary_data_size" in response["outputs"][1]["parameters"]
    assert result.as_numpy("probabilities").shape == (4, 2)


def test_binary_strings_reach_a_columns_model(registry, columns_model):
    registry.push(columns_model.onnx, "columns", columns_model.reference)
    registry.promote("columns", 1, "champion")
    with TestClient(create_app(Settings(registry=registry.root, poll_interval=3600))) as client:
        color = triton.InferInput("color", [3, 1], "BYTES")
        color.set_data_from_numpy(np.array([["red"], ["blue"], ["green"]], dtype=object))
        size = triton.InferInput("size", [3, 1], "FP32")
        size.set_data_from_numpy(np.array([[9.0], [14.0], [8.0]], dtype=np.float32))
        result = triton_infer(client, [color, size], path="/v2/models/columns/infer")
        assert [v.decode() for v in result.as_numpy("label")] == ["yes", "yes", "no"]
        size_tensor = {"name": "size", "shape": [1], "datatype": "FP32", "data": [9.0]}

        def strings(shape: list[int], blob: bytes) -> tuple[int, str]:
            color = {"name": "color", "shape": shape, "datatype": "BYTES",
                     "parameters": {"binary_data_size": len(blob)}}  # fmt: skip
            body, headers = binary_request({"inputs": [color, size_tensor]}, blob)
            answer = client.post("/v2/models/columns/infer", content=body, headers=headers)
            return answer.status_code, answer.json()["error"]

        assert strings([1], b"\x05\x00\x00") == (
            422,
            "inputs[0].data: a BYTES element's 4-byte length is cut short",
        )
        # elements past the shape are refused, not decoded: two million empty strings for one row
        status, error = strings([1], b"\x00\x00\x00\x00" * 2_000_000)
        assert (status, error) == (422, "inputs[0].data: more BYTES elements than its shape holds (1)")


def binary_request(header: dict, blob: bytes, length: int | None = None) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head) if length is None else length)}


def tensor(size: int, datatype: str = "FP32", shape=(1, 30), **extra) -> dict:
    return {"name": "X", "shape": list(shape), "datatype": datatype,
            "parameters": {"binary_data_size": size}, **extra}  # fmt: skip


def test_bad_binary_requests_are_a_clear_4xx(client):
    row = np.zeros(30, dtype=np.float32).tobytes()
    cases = [
        (
            *binary_request({"inputs": [tensor(120)]}, row, length=10_000),
            400,
            "Inference-Header-Content-Length",
        ),
        (*binary_request({"inputs": [tensor(120)]}, row, length=-1), 400, "Inference-Header-Content-Length"),
        (*binary_request({"inputs": [tensor(120)]}, row[:100]), 400, "only 100 follow"),
        (*binary_request({"inputs": [tensor(120)]}, row + b"xx"), 400, "2 bytes after"),
        (*binary_request({"inputs": [tensor(118)]}, row[:118]), 422, "not a whole number of FP32"),
        (*binary_request({"inputs": [tensor(120, data=[0] * 30)]}, row), 400, "both data and"),
        (*binary_request({"inputs": [tensor(120, shape=(2, 30))]}, row), 422, "do not fill shape"),
        (*binary_request({"inputs": [tensor(120, datatype="FP128")]}, row), 422, "not an Open Inference"),
        # refused for its datatype before a BYTES element is decoded
        (
            *binary_request({"inputs": [tensor(3, datatype="BYTES")]}, b"\x05\x00\x00"),
            422,
            "BYTES does not fit",
        ),
        (*binary_request({"inputs": [tensor("x")]}, row), 400, "non-negative integer"),
        (
            *binary_request({"inputs": [tensor(120)]}, np.full(30, np.inf, np.float32).tobytes()),
            422,
            "overflow",
        ),
    ]
    for body, headers, status, message in cases:
        response = client.post("/v2/models/cancer/infer", content=body, headers=headers)
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"], (message, response.json())
    refused = client.post("/predict", content=b"{}", headers={"Inference-Header-Content-Length": "2"})
    assert refused.status_code == 400 and "/v2/models/{name}/infer only" in refused.json()["error"]


def test_predict_takes_columns_and_rows_as_well_as_records(client, frame):
    expected = friendly(client, frame)
    columns = {name: frame[name].tolist() for name in reversed(frame.columns)}  # any key order
    assert client.post("/predict", json={"inputs": columns}).json()["predictions"] == expected
    rows = frame.to_numpy().tolist()
    assert client.post("/predict", json={"inputs": rows}).json()["predictions"] == expected


def test_bad_columns_name_the_feature_and_row(client, frame):
    columns = {name: frame[name].tolist() for name in frame.columns}
    cases = [
        ({**columns, "mean_radius": [1, 2, "x", 4]}, 422, "inputs.mean_radius[2]: expected a number"),
        (
            {**columns, "mean_radius": [1, 2]},
            422,
            "inputs.mean_radius: 2 values, but the other features have 4",
        ),
        ({**columns, "colour": [1] * 4}, 422, "inputs.colour: unknown feature"),
        ({k: v for k, v in columns.items() if k != "worst_area"}, 422, "inputs.worst_area: missing"),
        ({**columns, "mean_area": 3}, 422, "inputs.mean_area: expected a list of values"),
        ({**columns, "mean_area": [1e39] * 4}, 422, "inputs.mean_area[0]: 1e+39 overflows float32"),
        ({name: [] for name in columns}, 422, "the batch is empty"),
        ({name: values * 13 for name, values in columns.items()}, 413, "52 rows exceed"),
        ([[1.0] * 29], 422, "inputs[0]: expected a list of 30 values"),
        ("x", 422, "expected a list of records, a list of value lists, or an object"),
    ]
    for inputs, status, message in cases:
        response = client.post("/predict", json={"inputs": inputs})
        assert response.status_code == status, (message, response.text)
        assert message in response.json()["error"], (message, response.json())


def test_kserve_v1_predicts_labels_from_rows_records_or_columns(client, frame):
    labels = [p["label"] for p in friendly(client, frame)]
    for instances in (frame.to_numpy().tolist(), frame.to_dict(orient="records")):
        response = client.post("/v1/models/cancer:predict", json={"instances": instances})
        assert response.status_code == 200 and response.json() == {"predictions": labels}
        assert response.headers["x-modelgate-arm"] == "champion"
    columns = {name: frame[name].tolist() for name in frame.columns}
    assert client.post("/v1/models/cancer:predict", json={"inputs": columns}).json()["predictions"] == labels
    assert client.get("/v1/models/cancer").json() == {"name": "cancer", "ready": True}
    assert client.get("/v1/models").json() == {"models": ["cancer"]}


def test_mlflow_invocations_take_every_json_format(client, frame):
    labels = [p["label"] for p in friendly(client, frame)]
    split = json.loads(frame[list(reversed(frame.columns))].to_json(orient="split"))
    bodies = [
        {"dataframe_split": split},
        {"dataframe_split": {"data": frame.to_numpy().tolist()}},  # no columns: the schema's order
        {"dataframe_records": frame.to_dict(orient="records"), "params": {}},
        {"instances": frame.to_dict(orient="records")},
        {"inputs": {name: frame[name].tolist() for name in frame.columns}},
    ]
    for body in bodies:
        response = client.post("/invocations", json=body)
        assert response.status_code == 200, (list(body), response.text)
        assert response.json() == {"predictions": labels}
    assert client.get("/ping").status_code == 200 and client.get("/health").status_code == 200


def test_other_protocols_refuse_bad_requests_clearly(client, frame):
    row = frame.to_numpy().tolist()[0]
    cases = [
        ("/v1/models/dog:predict", {"instances": [row]}, 404, "model 'dog' is not served"),
        ("/v1/models/cancer:predict", {"rows": [row]}, 400, "rows: unknown field"),
        ("/v1/models/cancer:predict", {}, 400, "expected exactly one of instances, inputs"),
        ("/v1/models/cancer:predict", {"instances": [row[:-1]]}, 422, "instances[0]: expected a list of 30"),
        ("/v1/models/cancer:predict", {"instances": [[*row[:-1], "x"]]}, 422, "worst_fractal_dimension[0]"),
        ("/invocations", {"instances": [row], "inputs": [row]}, 400, "exactly one of"),
        (
            "/invocations",
            {"dataframe_split": {"columns": ["a"], "data": [[1]]}},
            422,
            "dataframe_split.data.a",
        ),
        ("/invocations", {"dataframe_split": {"data": 3}}, 400, "dataframe_split: expected an object"),
        ("/invocations", {"dataframe_split": {"data": [], "dtypes": 1}}, 400, "dataframe_split.dtypes"),
        ("/invocations", {"dataframe_split": {"columns": "a", "data": [[1]]}}, 400, "list of feature names"),
        (
            "/invocations",
            {"dataframe_records": {"a": 1}},
            422,
            "dataframe_records: expected a list of records",
        ),
        ("/invocations?model=dog", {"instances": [row]}, 404, "not served"),
    ]
    for path, body, status, message in cases:
        response = client.post(path, json=body)
        assert response.status_code == status, (path, message, response.text)
        assert message in response.json()["error"], (message, response.json())
    csv = client.post("/invocations", content=b"a,b\n1,2", headers={"content-type": "text/csv"})
    assert csv.status_code == 415 and "application/json" in csv.json()["error"]
    assert client.get("/v1/models/dog").status_code == 404
