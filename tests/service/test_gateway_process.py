"""The real gateway process over HTTP: a standard v2 client, bad input, and hot swap under load."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from monitoring.store.sqlite import open_sqlite

pytestmark = pytest.mark.slow


def cli(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "service", *args], capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout


@pytest.fixture
def gateway(gateway_factory, cancer_registry):
    return gateway_factory(cancer_registry)


def test_a_standard_v2_client_works_with_json_or_binary_tensors_and_matches_predict(gateway, cancer_model):
    client = triton.InferenceServerClient(url=gateway.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("cancer") and client.is_model_ready("cancer", "2")
    metadata = client.get_model_metadata("cancer")
    assert metadata["inputs"][0] == {"name": "X", "datatype": "FP32", "shape": [-1, 30]}

    rows = cancer_model.frame.iloc[:5]
    tensor = triton.InferInput("X", [5, 30], "FP32")
    tensor.set_data_from_numpy(rows.to_numpy(dtype=np.float32), binary_data=False)
    outputs = [triton.InferRequestedOutput(n, binary_data=False) for n in ("label", "probabilities")]
    result = client.infer("cancer", [tensor], outputs=outputs, request_id="triton-1")
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label").tolist()]
    probabilities = result.as_numpy("probabilities")
    assert result.get_response()["id"] == "triton-1" and probabilities.shape == (5, 2)

    friendly = httpx.post(f"{gateway.url}/predict", json={"inputs": rows.to_dict(orient="records")}).json()
    assert labels == [p["label"] for p in friendly["predictions"]]
    np.testing.assert_allclose(
        probabilities,
        [[p["probabilities"]["benign"], p["probabilities"]["malignant"]] for p in friendly["predictions"]],
    )
    pinned = client.infer("cancer", [tensor], model_version="2", outputs=outputs)
    assert pinned.get_response()["model_version"] == "2"

    # the stock client's defaults: binary tensors in, every output binary out
    binary = triton.InferInput("X", [5, 30], "FP32")
    binary.set_data_from_numpy(rows.to_numpy(dtype=np.float32))
    result = client.infer("cancer", [binary])
    assert [v.decode() for v in result.as_numpy("label")] == labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), probabilities, rtol=1e-6)


def test_bad_input_through_the_real_stack_is_4xx_never_500(gateway, cancer_model):
    row = cancer_model.frame.iloc[0].to_dict()
    cases = [
        ("/predict", b"{oops", 400),
        ("/predict", b'{"inputs": [{"mean_radius": "big"}]}', 422),
        ("/predict", httpx.Request("POST", "/", json={"inputs": [{**row, "x": 1}]}).content, 422),
        ("/predict", httpx.Request("POST", "/", json={"model": "dog", "inputs": [row]}).content, 404),
        ("/predict", httpx.Request("POST", "/", json={"inputs": [row] * 10_001}).content, 413),
        (
            "/v2/models/cancer/infer",
            b'{"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [1]}]}',
            422,
        ),
        ("/v2/models/cancer/versions/99/infer", b'{"inputs": []}', 404),
        ("/no/such/route", b"{}", 404),
    ]
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        for path, body, status in cases:
            response = client.post(path, content=body, headers={"content-type": "application/json"})
            assert response.status_code == status, (path, response.text[:300])
            assert response.json()["error"]
        assert client.get("/predict").status_code == 405
        assert client.get("/readyz").status_code == 200


@pytest.mark.parametrize("via", ["cli", "admin-api"])
def test_promote_and_rollback_under_load_fail_no_request(gateway_factory, cancer_registry, cancer_model, via):
    gateway = gateway_factory(cancer_registry, workers=2, MODELGATE_ADMIN_TOKEN="t0ken")
    script = Path(__file__).resolve().parents[2] / "load_tests/swap_under_load.py"
    run = subprocess.run(
        [sys.executable, str(script), "--url", gateway.url, "--registry", str(cancer_registry.root),
         "--model", "cancer", "--to", "2", "--requests", "3000", "--swaps", "6",
         *(["--admin-token", "t0ken"] if via == "admin-api" else [])],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    report = json.loads(run.stdout)
    assert run.returncode == 0 and report["failed"] == 0, report
    assert report["statuses"] == {"200": 3000} and report["swaps"] == 6
    assert set(report["versions"]) == {"1", "2"}, "both versions answered during the swaps"
    assert cancer_registry.aliases("cancer").champion == 1
    actors = {e.actor for e in cancer_registry.history("cancer") if e.reason == "swap_under_load"}
    assert len(actors) == 1 and (next(iter(actors)).startswith("admin-api@")) == (via == "admin-api")
    time.sleep(1.5)  # both workers settle on the final champion
    body = {"inputs": cancer_model.frame.iloc[:4].to_dict(orient="records")}
    assert {httpx.post(f"{gateway.url}/predict", json=body).json()["version"] for _ in range(40)} == {1}


def test_a_corrupted_promotion_keeps_the_old_version_and_is_logged(gateway, cancer_registry, cancer_model):
    cancer_registry.push(cancer_model.onnx, "cancer", cancer_model.reference)  # v3, not loaded anywhere yet
    model_file = cancer_registry.root / "models/cancer/versions/3/model.onnx"
    model_file.chmod(0o644)
    model_file.write_bytes(b"\x00" + model_file.read_bytes()[1:])
    cli("registry", "promote", "cancer", "3", "--to", "champion", "--registry", str(cancer_registry.root))

    deadline = time.monotonic() + 20
    while "model.swap_failed" not in gateway.output() and time.monotonic() < deadline:
        time.sleep(0.2)
    event = next(json.loads(line) for line in gateway.output().splitlines() if "model.swap_failed" in line)
    assert event["level"] == "error" and event["kept_version"] == 1 and "sha256" in event["error"]
    body = {"inputs": cancer_model.frame.iloc[:1].to_dict(orient="records")}
    assert httpx.post(f"{gateway.url}/predict", json=body).json()["version"] == 1
    assert (
        "not swapped in"
        in httpx.get(f"{gateway.url}/models").json()["models"]["cancer"]["errors"]["champion"]
    )


def test_every_acknowledged_request_is_logged_after_sigterm(gateway_factory, cancer_registry, cancer_model):
    gateway = gateway_factory(cancer_registry, workers=2)
    body = {"inputs": cancer_model.frame.iloc[:2].to_dict(orient="records")}

    async def send() -> list[str]:
        acknowledged: list[str] = []
        tickets = iter(range(1500))
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:

            async def sender() -> None:  # bounded concurrency, as a real client pool
                for i in tickets:
                    response = await client.post("/predict", json=body, headers={"X-Request-ID": f"req-{i}"})
                    assert response.status_code == 200
                    acknowledged.append(response.json()["request_id"])

            await asyncio.gather(*(sender() for _ in range(32)))
        return acknowledged

    acknowledged = asyncio.run(send())
    gateway.stop()  # SIGTERM right after the last answer: the queues drain before exit
    assert gateway.process.returncode is not None

    store = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    records = store.requests.read_after({}, 10_000)
    store.close()
    assert sorted(r.request_id for r in records) == sorted(acknowledged)
    assert all(r.status == 200 and r.rows == 2 and r.outputs for r in records)

    lines = [json.loads(line) for line in gateway.output().splitlines() if '"request.completed"' in line]
    assert len(lines) == 1500
    assert lines[0]["inputs"]["mean_radius"] == pytest.approx(
        [r["mean_radius"] for r in body["inputs"]], rel=1e-6
    )
    assert set(lines[0]["outputs"]) == {"label", "probabilities"}


def test_kserve_v1_and_mlflow_requests_are_answered_logged_and_counted(
    gateway, cancer_model, cancer_registry
):
    frame = cancer_model.frame.iloc[:3]
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        v1 = client.post("/v1/models/cancer:predict", json={"instances": frame.to_numpy().tolist()})
        split = json.loads(frame.to_json(orient="split"))
        mlflow = client.post(
            "/invocations", json={"dataframe_split": split}, headers={"X-Request-ID": "ml-1"}
        )
        assert v1.status_code == mlflow.status_code == 200
        assert v1.json() == mlflow.json() and len(v1.json()["predictions"]) == 3
        deadline = time.monotonic() + 20
        while (
            'route="mlflow"' not in (metrics := client.get("/metrics").text) and time.monotonic() < deadline
        ):
            time.sleep(0.2)
    assert (
        'modelgate_requests_total{arm="champion",model="cancer",route="v1",status="200",version="1"} 1.0'
        in metrics
    )
    assert 'route="mlflow",status="200"' in metrics
    store = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    records = {r.request_id: r for r in store.requests.read_after({}, 100)}
    store.close()
    assert records["ml-1"].route == "mlflow" and records["ml-1"].rows == 3 and records["ml-1"].outputs
    assert sorted(r.route for r in records.values()) == ["mlflow", "v1"]


def test_the_replica_whose_monitor_leads_says_so_in_its_metrics(gateway):
    deadline = time.monotonic() + 30
    leading = f'modelgate_monitor_leading{{host="{socket.gethostname()}"}} 1.0'
    metrics = httpx.get(f"{gateway.url}/metrics").text
    while leading not in metrics and time.monotonic() < deadline:
        time.sleep(0.3)
        metrics = httpx.get(f"{gateway.url}/metrics").text
    assert leading in metrics
