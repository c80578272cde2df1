"""Shadow mode: the champion answers; the challenger's prediction, failure or refusal is logged under
the same request id; a slow challenger sheds its shadow traffic (counted) instead of holding anyone."""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from monitoring.prediction_log import SQLitePredictionLog
from monitoring.sink import EventSink, LogWriter
from registry.aliases import RoutingPolicy
from service.app import create_app
from service.errors import InvalidInput
from service.pool import ServedVersion, load_version, warmup_batch
from service.settings import Settings
from service.shadow import ShadowJob, ShadowRunner


def test_the_champion_answers_and_both_predictions_are_logged_under_one_id(cancer_registry, cancer_model):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="shadow"))
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, shadow_budget=1.0)
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json={"inputs": rows}).json() for _ in range(10)]
        shadow = client.app.state.gateway.observability.shadow
        for _ in range(100):  # a stop drops what is still queued: let the thread take it all first
            if shadow.pending == 0:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # and finish the one in hand
    assert {(a["arm"], a["version"]) for a in answers} == {("champion", 1)}
    log = SQLitePredictionLog(cancer_registry.root / "predictions.sqlite3")
    logged = log.read_after(0, 100)
    log.close()
    by_arm = {arm: {r.request_id: r for r in logged if r.arm == arm} for arm in ("champion", "shadow")}
    assert set(by_arm["shadow"]) == set(by_arm["champion"]) == {a["request_id"] for a in answers}
    shadow = next(iter(by_arm["shadow"].values()))
    assert (shadow.version, shadow.status, shadow.rows) == (2, 200, 3) and shadow.outputs
    assert shadow.inputs == by_arm["champion"][shadow.request_id].inputs


def served(registry, version) -> ServedVersion:
    return load_version(registry, "cancer", version, warmup_rows=4, threads=1)


def job(challenger, batch, parse=None, request_id="r1"):
    return ShadowJob(request_id, time.time(), "predict", challenger, batch, parse or (lambda s: batch))


def test_a_failing_or_refusing_challenger_is_a_logged_error_not_an_answer(cancer_registry):
    challenger = served(cancer_registry, 2)
    batch = warmup_batch(challenger.manifest, 2)
    narrow = dataclasses.replace(batch, matrix=np.ascontiguousarray(batch.matrix[:, :29]))
    failed = ShadowRunner.mirror(job(challenger, narrow))  # ONNX Runtime refuses 29 columns
    assert failed.status == 500 and failed.prediction is None and "29" in failed.error

    def refuse(_):
        raise InvalidInput("inputs[0].mean_radius: missing", field="inputs[0].mean_radius")

    refused = ShadowRunner.mirror(job(challenger, None, refuse))
    assert (refused.status, refused.error, refused.arm) == (422, "inputs[0].mean_radius: missing", "shadow")


class Slow(ServedVersion):
    """A real challenger, made slow (or held) by a gate."""

    gate = threading.Event()

    def predict(self, batch):
        self.gate.wait(10)
        return super().predict(batch)


def test_a_slow_challenger_sheds_shadow_jobs_and_never_holds_the_caller(cancer_registry, tmp_path):
    real = served(cancer_registry, 2)
    slow = Slow(real.manifest, real.model, real.label_datatype, real.checker)
    store = SQLitePredictionLog(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store))
    runner = ShadowRunner(sink, capacity=2)
    sink.start()
    runner.start()
    batch = warmup_batch(real.manifest, 1)
    offering = threading.Thread(
        target=lambda: [runner.offer(job(slow, batch, request_id=f"r{i}")) for i in range(10)]
    )
    offering.start()
    offering.join(5)
    assert not offering.is_alive()  # every offer returned while the challenger was held
    assert runner.shed >= 7  # one in hand, two queued: the rest shed
    Slow.gate.set()
    time.sleep(0.5)
    runner.stop()
    sink.close()
    mirrored = [r for r in store.read_after(0, 100) if r.arm == "shadow"]
    store.close()
    assert len(mirrored) == 10 - runner.shed and all(r.status == 200 for r in mirrored)


def test_the_shadow_thread_rests_so_the_challenger_keeps_to_its_budget(
    cancer_registry, tmp_path, monkeypatch
):
    import service.shadow

    rests = []
    monkeypatch.setattr(service.shadow.time, "sleep", rests.append)  # the rests asked for, not taken
    real = served(cancer_registry, 2)
    store = SQLitePredictionLog(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store))
    runner = ShadowRunner(sink, capacity=10, budget=0.2)
    runner.start()
    batch = warmup_batch(real.manifest, 64)
    for i in range(5):
        runner.offer(job(real, batch, request_id=f"r{i}"))
    waited = threading.Event()
    for _ in range(1000):  # at most 10 s (time.sleep is patched: wait on an event)
        if len(rests) == 5:
            break
        waited.wait(0.01)
    runner.stop(timeout=10)
    sink.start()
    sink.close()
    took = [r.latency_ms / 1000 for r in store.read_after(0, 10)]
    store.close()
    assert len(took) == 5 and runner.shed == 0
    # rest = time taken * (1 - 0.2) / 0.2: at least four times the prediction it followed
    assert all(rest >= 4 * t > 0 for rest, t in zip(rests, took, strict=True))
    with pytest.raises(ValueError, match="budget"):
        ShadowRunner(sink, budget=0.0)
