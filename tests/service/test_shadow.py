"""Shadow mode: the champion answers; the challenger's prediction, failure or refusal is logged under
the same request id; a slow challenger sheds its shadow traffic (counted) instead of holding anyone."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from monitoring.sink import EventSink, LogWriter
from monitoring.store.sqlite import open_sqlite
from registry.aliases import RoutingPolicy
from registry.errors import RegistryError
from service.app import create_app
from service.errors import InvalidInput
from service.serving.pool import ModelPool, ServedVersion, load_version, warmup_batch
from service.serving.shadow import ShadowJob, ShadowRunner
from service.serving.validation import Batch
from service.settings import Settings


def test_the_champion_answers_and_both_predictions_are_logged_under_one_id(cancer_registry, cancer_model):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="shadow"))
    rows = cancer_model.frame.iloc[:3].to_dict(orient="records")
    settings = Settings(
        registry=cancer_registry.root, poll_interval=3600, shadow_budget=1.0, shadow_max_rate=0
    )
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json={"inputs": rows}).json() for _ in range(10)]
        shadow = client.app.state.context.observability.shadow
        for _ in range(100):  # a stop drops what is still queued: let the thread take it all first
            if shadow.pending == 0:
                break
            time.sleep(0.05)
        time.sleep(0.2)  # and finish the one in hand
    assert {(a["arm"], a["version"]) for a in answers} == {("champion", 1)}
    log = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    logged = log.requests.read_after({}, 100)
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


def test_a_failing_or_refusing_challenger_is_a_logged_error_not_an_answer(cancer_registry, tmp_path):
    challenger = served(cancer_registry, 2)
    batch = warmup_batch(challenger.manifest, 2)
    narrow = dataclasses.replace(batch, matrix=np.ascontiguousarray(batch.matrix[:, :29]))
    runner = ShadowRunner(EventSink(LogWriter(open_sqlite(tmp_path / "log.sqlite3").requests)))
    failed = runner.mirror(job(challenger, narrow))  # ONNX Runtime refuses 29 columns
    assert failed.status == 500 and failed.prediction is None and "29" in failed.error

    def refuse(_):
        raise InvalidInput("inputs[0].mean_radius: missing", field="inputs[0].mean_radius")

    refused = runner.mirror(job(challenger, None, refuse))
    assert (refused.status, refused.error, refused.arm) == (422, "inputs[0].mean_radius: missing", "shadow")


class Slow(ServedVersion):
    """A real challenger, made slow (or held) by a gate."""

    gate = threading.Event()

    def predict(self, batch, options=None):
        self.gate.wait(10)
        return super().predict(batch, options)


def test_a_slow_challenger_sheds_shadow_jobs_and_never_holds_the_caller(cancer_registry, tmp_path):
    real = served(cancer_registry, 2)
    slow = Slow(real.manifest, real.model, real.label_datatype, real.checker)
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
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
    mirrored = [r for r in store.requests.read_after({}, 100) if r.arm == "shadow"]
    store.close()
    assert len(mirrored) == 10 - runner.shed and all(r.status == 200 for r in mirrored)


def test_the_shadow_thread_rests_so_the_challenger_keeps_to_its_budget(
    cancer_registry, tmp_path, monkeypatch
):
    rests: list[float] = []
    real = served(cancer_registry, 2)
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
    runner = ShadowRunner(sink, capacity=10, budget=0.2)
    monkeypatch.setattr(runner, "_rest", rests.append)  # the rests asked for, not taken
    runner.start()
    batch = warmup_batch(real.manifest, 64)
    for i in range(5):
        runner.offer(job(real, batch, request_id=f"r{i}"))
    deadline = time.monotonic() + 10
    while len(rests) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop(timeout=10)
    sink.start()
    sink.close()
    took = [r.latency_ms / 1000 for r in store.requests.read_after({}, 10)]
    store.close()
    assert len(took) == 5 and runner.shed == 0
    # rest = time taken * (1 - 0.2) / 0.2: at least four times the prediction it followed
    assert all(rest >= 4 * t > 0 for rest, t in zip(rests, took, strict=True))
    with pytest.raises(ValueError, match="budget"):
        ShadowRunner(sink, budget=0.0)


def test_a_fast_challenger_is_mirrored_at_most_max_rate_times_a_second(
    cancer_registry, tmp_path, monkeypatch
):
    rests: list[float] = []
    real = served(cancer_registry, 2)
    sink = EventSink(LogWriter(open_sqlite(tmp_path / "log.sqlite3").requests))
    runner = ShadowRunner(sink, capacity=10, budget=1.0, max_rate=50)  # no budget rest; 20 ms a job
    monkeypatch.setattr(runner, "_rest", rests.append)
    runner.start()
    for i in range(3):
        runner.offer(job(real, warmup_batch(real.manifest, 1), request_id=f"r{i}"))
    deadline = time.monotonic() + 10
    while len(rests) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    runner.stop(timeout=10)
    # each rest tops the job (well under a millisecond here) up to 1/50 s
    assert len(rests) == 3 and all(0.01 < rest < 0.02 for rest in rests)
    with pytest.raises(ValueError, match="max rate"):
        ShadowRunner(sink, max_rate=-1)


@pytest.fixture
def looping(registry, looping_model):
    """The looping model (hung on inputs of 2 and more) as version 1, loaded."""
    model, reference = looping_model
    registry.push(model, "looping", reference, actor="tests")
    return load_version(registry, "looping", 1, warmup_rows=4, threads=1)


def one_row(x: float) -> Batch:
    return Batch(rows=1, matrix=np.array([[x]], dtype=np.float32))


def test_a_hung_challenger_is_stopped_at_the_shadow_timeout_and_logged_as_504(looping, tmp_path):
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
    runner = ShadowRunner(sink, budget=1.0, timeout=0.2)
    sink.start()
    runner.start()
    runner.offer(job(looping, one_row(3.0), request_id="hung"))
    runner.offer(job(looping, one_row(0.7), request_id="after"))
    deadline = time.monotonic() + 10
    while len(store.requests.read_after({}, 10)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    runner.stop()
    sink.close()
    hung, after = sorted(store.requests.read_after({}, 10), key=lambda r: r.request_id != "hung")
    store.close()
    assert (hung.request_id, hung.status, hung.error) == (
        "hung",
        504,
        "stopped after the shadow timeout of 0.2 s",
    )
    assert 200 <= hung.latency_ms < 2000  # stopped within a few watchdog ticks of the deadline
    # the next job runs as usual
    assert (after.status, after.outputs) == (200, {"value": [pytest.approx(0.2)]})


def test_a_record_is_logged_before_the_rest_and_a_stop_cuts_the_rest_short(looping, tmp_path):
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
    runner = ShadowRunner(sink, budget=0.01, timeout=0.5)  # after the 0.5 s run, a 50 s rest
    sink.start()
    runner.start()
    runner.offer(job(looping, one_row(3.0), request_id="hung"))
    deadline = time.monotonic() + 10
    while not store.requests.read_after({}, 10) and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = store.requests.read_after({}, 10)  # logged while the thread rests
    assert record.status == 504
    started = time.monotonic()
    runner.stop(timeout=10)
    assert time.monotonic() - started < 2
    sink.close()
    store.close()


def test_a_stop_does_not_wait_out_a_hung_challenger(looping, tmp_path):
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
    runner = ShadowRunner(sink, timeout=3600)
    sink.start()
    runner.start()
    runner.offer(job(looping, one_row(3.0), request_id="hung"))
    while runner.pending:
        time.sleep(0.01)
    time.sleep(0.1)  # the thread is in the run
    started = time.monotonic()
    runner.stop(timeout=10)
    assert time.monotonic() - started < 5
    sink.close()
    (record,) = store.requests.read_after({}, 10)
    store.close()
    assert (record.status, record.error) == (503, "stopped: the gateway is shutting down")


def test_the_challenger_runs_niced_on_a_one_thread_session_of_its_own(cancer_registry, tmp_path):
    pool = ModelPool(cancer_registry, threads=2)
    pool.refresh()
    challenger = pool.slots("cancer").challenger
    store = open_sqlite(tmp_path / "log.sqlite3")
    sink = EventSink(LogWriter(store.requests))
    runner = ShadowRunner(sink, budget=1.0, background=pool.single_threaded)
    sink.start()
    runner.start()
    runner.offer(job(challenger, warmup_batch(challenger.manifest, 2)))
    deadline = time.monotonic() + 10
    while not store.requests.read_after({}, 10) and time.monotonic() < deadline:
        time.sleep(0.05)
    (record,) = store.requests.read_after({}, 10)
    stat = Path(f"/proc/self/task/{runner._thread.native_id}/stat").read_text()
    nice = int(stat.rsplit(")", 1)[1].split()[16])  # field 19 of stat(5), counted after the name
    runner.stop()
    sink.close()
    store.close()
    assert (record.status, record.version, record.rows) == (200, 2, 2)
    assert nice == 19 and os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == 0
    twin = runner._twin[1]
    assert twin.model.session is not challenger.model.session
    assert twin.model.session.get_session_options().intra_op_num_threads == 1
    assert challenger.model.session.get_session_options().intra_op_num_threads == 2


def test_a_version_whose_warm_up_hangs_is_refused_within_the_warm_up_timeout(
    registry, single_row_looping_model
):
    model, reference = single_row_looping_model
    registry.push(model, "looping", reference, actor="tests")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=r"warm-up on 1 reference row\(s\) did not finish within 0.3 s"):
        load_version(registry, "looping", 1, warmup_rows=4, threads=1, warmup_timeout=0.3)
    assert time.monotonic() - started < 5
