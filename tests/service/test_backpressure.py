"""A log that cannot keep up: new requests are refused with 503 and Retry-After instead of hanging,
readiness follows, health and metrics answer at once, and logging resumes by itself.

The writer process is paused (SIGSTOP) to stand for a disk that takes nothing: its pipe fills, then
the queue. The same with a real full disk (a small tmpfs) is in tests/test_faults.py.
"""

from __future__ import annotations

import signal
import time

import pytest
from starlette.testclient import TestClient

from monitoring.store.sqlite import open_sqlite
from service.app import create_app
from service.settings import Settings


@pytest.fixture
def stalled(cancer_registry):
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, log_queue_size=20,
                        log_block_seconds=0.2)  # fmt: skip
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        writer = client.app.state.context.observability.shipper.child
        writer.send_signal(signal.SIGSTOP)
        try:
            yield client
        finally:
            writer.send_signal(signal.SIGCONT)


def test_a_backed_up_log_sheds_new_requests_and_recovers(stalled, cancer_model):
    rows = cancer_model.frame.iloc[:1].to_dict(orient="records")
    answers = []
    for _ in range(2_000):  # until the pipe and then the queue are full
        started = time.monotonic()
        response = stalled.post("/predict", json={"inputs": rows})
        answers.append((response.status_code, time.monotonic() - started))
        if response.status_code == 503:
            break
    status, took = answers[-1]
    assert status == 503 and took < 1.0
    assert (
        response.headers["retry-after"] == "1" and "prediction log is backed up" in response.json()["error"]
    )
    assert {s for s, _ in answers[:-1]} == {200}
    # health and metrics never wait on the log; readiness says why it is out
    ready = stalled.get("/readyz")
    assert ready.status_code == 503 and ready.json()["log"]["accepting"] is False
    assert stalled.get("/livez").status_code == 200
    metrics = stalled.get("/metrics").text
    assert "modelgate_log_shed_total 1.0" in metrics
    depth = next(line for line in metrics.splitlines() if line.startswith("modelgate_log_queue_depth"))
    assert float(depth.split()[-1]) >= 20  # the gauge follows the queue though its writer is stuck
    # the disk takes records again: the queue drains and requests are served, no restart
    stalled.app.state.context.observability.shipper.child.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while stalled.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stalled.post("/predict", json={"inputs": rows}).status_code == 200


def test_with_durable_acknowledgement_an_answer_means_its_record_is_committed(cancer_registry, cancer_model):
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, log_ack="committed",
                        log_ack_timeout=0.5)  # fmt: skip
    rows = cancer_model.frame.iloc[:1].to_dict(orient="records")
    log = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        for i in range(20):
            response = client.post("/predict", json={"inputs": rows}, headers={"x-request-id": f"d{i}"})
            assert response.status_code == 200
            # committed before the answer left: another connection reads it at once
            assert [r.request_id for r in log.requests.answered([f"d{i}"])] == [f"d{i}"]
        writer = client.app.state.context.observability.shipper.child
        writer.send_signal(signal.SIGSTOP)  # a writer that commits nothing: no answer is acknowledged
        try:
            started = time.monotonic()
            refused = client.post("/predict", json={"inputs": rows})
            assert refused.status_code == 503 and 0.5 <= time.monotonic() - started < 2
            assert "not committed to the prediction log within 0.5 s" in refused.json()["error"]
            assert refused.headers["retry-after"] == "1"
        finally:
            writer.send_signal(signal.SIGCONT)
        assert client.post("/predict", json={"inputs": rows}).status_code == 200
    log.close()
