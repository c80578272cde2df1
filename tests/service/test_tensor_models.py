"""Tensor models (an image classifier, a text classifier and a text embedding model, written with
onnx.helper and trained in the tests): pushed with reference tensors, served over v2 in JSON and
binary, and monitored on per-sample summaries of their inputs and on their outputs."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.http as triton
from starlette.testclient import TestClient

from registry.errors import SchemaMismatch
from service.app import create_app
from service.settings import Settings

DATATYPE = {np.dtype(np.float32): "FP32", np.dtype(np.int64): "INT64"}


#: the drift tests' window, in seconds: what was sent before it is forgotten after a pause this long
SPAN = 4.0


def served(registry, model, name, window_rows=1000, window_seconds=3600.0, **push):
    registry.push(model.onnx, name, model.reference, actor="tests", **push)
    registry.promote(name, 1, "champion", actor="tests")
    settings = Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05,
                        window_rows=window_rows, window_seconds=window_seconds)  # fmt: skip
    return TestClient(create_app(settings), raise_server_exceptions=False)


def infer(client, name, arrays: dict[str, np.ndarray]):
    inputs = [
        {"name": key, "shape": list(a.shape), "datatype": DATATYPE[a.dtype], "data": a.reshape(-1).tolist()}
        for key, a in arrays.items()
    ]
    return client.post(f"/v2/models/{name}/infer", json={"inputs": inputs})


def send(client, name, key, array, batch=25):
    for start in range(0, len(array), batch):
        assert infer(client, name, {key: array[start : start + batch]}).status_code == 200


def report_after(client, name, rows, since=0.0, timeout=15.0):
    """The first report on a window that has seen ``rows`` rows (it tests them, or a sample of them
    when more came), all sent after ``since`` (epoch seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/monitoring/drift", params={"model": name}).json()
        window = body.get("window", {})
        seen = window.get("seen_rows", 0) >= rows and (window.get("oldest") or 0) >= since
        if seen and body.get("status") == "ok":
            return body
        time.sleep(0.05)
    raise AssertionError(f"no report over {rows} rows: {body}")


def drifted(report) -> set[str]:
    return {f["name"] for f in report["features"] if f["drifted"]}


def test_an_image_model_is_served_over_v2_json_and_refused_elsewhere(registry, digits_tensor_model):
    model = digits_tensor_model
    with served(registry, model, "digits", target="digit") as client:
        metadata = client.get("/v2/models/digits").json()
        assert metadata["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert metadata["parameters"]["layout"] == "tensor" and metadata["parameters"]["classes"][0] == "0"
        answer = infer(client, "digits", {"pixels": model.test["pixels"][:100]}).json()
        labels = answer["outputs"][0]["data"]
        assert np.mean(np.array(labels) == model.labels[:100]) > 0.9
        assert answer["outputs"][1]["shape"] == [100, 10]

        refused = client.post("/predict", json={"model": "digits", "inputs": [{"x": 1}]})
        assert refused.status_code == 422
        assert "takes tensors (pixels FP32 ['N', 1, 8, 8])" in refused.json()["error"]
        assert "/v2/models/{name}/infer" in refused.json()["error"]
        flat = infer(client, "digits", {"pixels": model.test["pixels"][:2].reshape(2, 64)})
        assert flat.status_code == 422
        assert (
            flat.json()["error"] == "inputs[0].shape: input 'pixels' takes shape ['N', 1, 8, 8], got [2, 64]"
        )
        strings = client.post(
            "/v2/models/digits/infer",
            json={
                "inputs": [{"name": "pixels", "shape": [1, 1, 8, 8], "datatype": "BYTES", "data": ["x"] * 64}]
            },
        )
        assert (
            strings.status_code == 422 and "BYTES does not fit input 'pixels' (FP32 expected" in strings.text
        )
        unknown = client.post(
            "/v2/models/digits/infer",
            json={"inputs": [{"name": "image", "shape": [1, 64], "datatype": "FP32", "data": [0.0] * 64}]},
        )
        assert unknown.status_code == 422 and "unknown input 'image'; this model takes pixels" in unknown.text
        document = client.get("/openapi.json").json()
        assert "takes tensors" in document["components"]["schemas"]["digits.Inputs"]["description"]


def test_binary_tensors_from_tritonclient_and_a_non_finite_pixel_flagged(registry, digits_tensor_model):
    model = digits_tensor_model
    images = model.test["pixels"][:120].copy()
    images[0, 0, 3, 3] = np.nan  # a broken sensor: answered, and counted as implausible
    with served(registry, model, "digits", target="digit") as client:
        tensor = triton.InferInput("pixels", list(images.shape), "FP32")
        tensor.set_data_from_numpy(images)  # binary, as tritonclient sends by default
        body, json_size = triton.InferenceServerClient.generate_request_body([tensor])
        response = client.post(
            "/v2/models/digits/infer",
            content=body,
            headers={"Inference-Header-Content-Length": str(json_size)},
        )
        assert response.status_code == 200, response.text
        length = int(response.headers["inference-header-content-length"])
        result = triton.InferenceServerClient.parse_response_body(response.content, header_length=length)
        labels = [v.decode() for v in result.as_numpy("label")]
        assert np.mean(np.array(labels[1:]) == model.labels[1:120]) > 0.9
        assert result.as_numpy("probabilities").shape == (120, 10)
        report = report_after(client, "digits", 120)
    rules = {(p["rule"], p["feature"]): p["violations"] for p in report["plausibility"]}
    assert rules[("input_range", "pixels.nonfinite")] == 1


def test_image_drift_is_flagged_when_the_pictures_brighten(registry, digits_tensor_model):
    model = digits_tensor_model
    pixels = model.test["pixels"][:400]
    with served(registry, model, "digits", window_rows=400, window_seconds=SPAN, target="digit") as client:
        send(client, "digits", "pixels", pixels)
        clean = report_after(client, "digits", 400)
        time.sleep(SPAN)  # the clean pictures leave the window
        since = time.time()
        send(client, "digits", "pixels", np.clip(pixels + 0.25, 0, 1))
        brighter = report_after(client, "digits", 400, since)
    assert drifted(clean) == set()
    names = {f["name"] for f in clean["features"]}
    assert {"pixels.mean", "pixels.std", "pixels.min", "pixels.max", "pixels.nonfinite", "label"} <= names
    assert {"pixels.mean", "pixels.min"} <= drifted(brighter)


def test_a_text_classifier_on_token_ids_flags_longer_texts(registry, topics_tensor_model, text_samples):
    model = topics_tensor_model
    with served(registry, model, "topics", 250, SPAN, classes=("a", "b"), target="topic") as client:
        answer = infer(client, "topics", {"input_ids": model.test["input_ids"][:200]}).json()
        assert np.mean(np.array(answer["outputs"][0]["data"]) == model.labels[:200]) > 0.85
        send(client, "topics", "input_ids", model.test["input_ids"][:250])
        clean = report_after(client, "topics", 250)
        longer, _ = text_samples(250, seed=7, longer=True)
        time.sleep(SPAN)  # the clean texts leave the window
        since = time.time()
        send(client, "topics", "input_ids", longer)
        shifted = report_after(client, "topics", 250, since)
    assert drifted(clean) == set()
    assert "input_ids.nonzero" in drifted(shifted)  # the texts' length


def test_an_embedding_model_flags_a_topic_shift_by_mmd(registry, embedder_tensor_model, text_samples):
    model = embedder_tensor_model
    with served(registry, model, "embedder", window_rows=250, window_seconds=SPAN) as client:
        answer = infer(client, "embedder", {"input_ids": model.test["input_ids"][:3]}).json()
        assert answer["outputs"] == [
            {"name": "embedding", "datatype": "FP32", "shape": [3, 8], "data": answer["outputs"][0]["data"]}
        ]
        send(client, "embedder", "input_ids", model.test["input_ids"][:250])
        clean = report_after(client, "embedder", 250)
        answered = infer(client, "embedder", {"input_ids": model.test["input_ids"][:1]})
        truth = {"request_id": answered.headers["x-request-id"], "ground_truth": 1}
        deadline = time.monotonic() + 10
        while (
            feedback := client.post("/feedback", json=truth)
        ).status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.05)  # until the request is in the log
        assert feedback.status_code == 422 and "embedder is an embedding model" in feedback.text
        mostly_b, _ = text_samples(250, seed=8, topic_b_share=0.95)
        time.sleep(SPAN)  # the clean texts leave the window
        since = time.time()
        send(client, "embedder", "input_ids", mostly_b)
        shifted = report_after(client, "embedder", 250, since)
    mmd = {f["name"]: f for f in clean["features"]}["embedding"]
    assert mmd["test"] == "mmd" and mmd["rows"] == 200 and not mmd["drifted"]
    assert "embedding" in drifted(shifted)


def test_batched_requests_of_other_lengths_each_get_their_own_answer(registry, embedder_tensor_model):
    """A free dimension (a text's length): requests of one length share a session run, another length
    runs apart, and every answer is what that request alone gets."""
    model = embedder_tensor_model
    ids = model.test["input_ids"][:6]
    bodies = [{"input_ids": ids[i : i + 1, : 16 if i % 2 else 8]} for i in range(6)]
    with served(registry, model, "embedder") as client:
        alone = [infer(client, "embedder", body).json()["outputs"][0]["data"] for body in bodies]
    settings = Settings(registry=registry.root, poll_interval=3600, batching="embedder:16:300")
    with TestClient(create_app(settings)) as client, ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda body: infer(client, "embedder", body), bodies))
        metadata = client.get("/v2/models/embedder").json()
    assert metadata["inputs"] == [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}]
    assert [a.status_code for a in answers] == [200] * 6
    np.testing.assert_allclose([a.json()["outputs"][0]["data"] for a in answers], alone, atol=1e-6)


def test_push_names_the_input_a_reference_does_not_fit(registry, digits_tensor_model, cancer_model, tmp_path):
    model = digits_tensor_model
    with pytest.raises(
        SchemaMismatch, match=r"input 'pixels' \(tensor\(float\) \['N', 1, 8, 8\]\) is a tensor"
    ):
        registry.push(model.onnx, "digits", cancer_model.reference, actor="tests")
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=np.zeros((10, 1, 4, 4), dtype=np.float32))
    with pytest.raises(
        SchemaMismatch, match=r"input 'pixels' has shape \['N', 1, 8, 8\]; .* \[10, 1, 4, 4\]"
    ):
        registry.push(model.onnx, "digits", wrong, actor="tests")
    other = tmp_path / "other.npz"
    np.savez(other, image=np.zeros((10, 1, 8, 8), dtype=np.float32))
    with pytest.raises(
        SchemaMismatch, match=r"missing from the reference: \['pixels'\]; not model inputs: \['image'\]"
    ):
        registry.push(model.onnx, "digits", other, actor="tests")


def test_the_cli_pushes_a_tensor_classifier_with_its_class_names(registry, topics_tensor_model, capsys):
    from service.cli import main

    model, root = topics_tensor_model, ["--registry", str(registry.root)]
    push = [
        "registry",
        "push",
        str(model.onnx),
        "--name",
        "topics",
        "--reference",
        str(model.reference),
        *root,
    ]
    assert main([*push, "--target", "topic", "--classes", "a,b"]) == 0
    assert "pushed topics:1 (classification, input_ids int64 ['N', 16], sha256 " in capsys.readouterr().out
    assert registry.manifest("topics", 1).output.classes == ("a", "b")
    assert main([*push, "--target", "topic"]) == 1  # its labels are a and b, not 0 and 1
    assert (
        "target column 'topic' holds ['a', 'b'], not among the model's classes ['0', '1']"
        in capsys.readouterr().err
    )
