"""The prediction log keeps every request, reads it back in order, and takes ground truth once."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from monitoring.prediction_log import FeedbackOutcome, SQLitePredictionLog
from monitoring.records import EncodedRecord, Feedback, RequestRecord
from registry.onnx_model import Prediction


def record(request_id="r1", ts=100.0, model="cancer", status=200, arm="champion", rows=2, **extra):
    defaults = dict(
        features=("a", "b"),
        matrix=np.array([[1.5, np.nan], [3.0, 4.0]], dtype=np.float32)[:rows],
        prediction=Prediction(
            labels=np.array(["yes", "no"], dtype=object)[:rows],
            probabilities=np.array([[0.2, 0.8], [0.9, 0.1]])[:rows],
        ),
    )
    if status != 200:
        defaults = dict(error="inputs[0].a: missing")
    return RequestRecord(request_id=request_id, ts=ts, route="predict", status=status, latency_ms=1.25,
                         model=model, version=1, arm=arm, rows=rows, **{**defaults, **extra})  # fmt: skip


@pytest.fixture
def store(tmp_path):
    log = SQLitePredictionLog(tmp_path / "log" / "predictions.sqlite3")
    yield log
    log.close()


def write(store, *records):
    store.write([EncodedRecord.of(r) for r in records])


def test_records_read_back_in_order_with_inputs_outputs_and_errors(store):
    write(store, record("r1"), record("r2", status=422))
    first, second = store.read_after(0, 10)
    assert (first.seq, second.seq) == (1, 2)
    assert first.inputs["a"] == [1.5, 3.0] and first.inputs["b"][0] is None and first.inputs["b"][1] == 4.0
    assert first.outputs == {"label": ["yes", "no"], "probabilities": [[0.2, 0.8], [0.9, 0.1]]}
    assert (second.status, second.error, second.inputs) == (422, "inputs[0].a: missing", None)
    assert store.read_after(1, 10) == [second]


def test_per_feature_columns_with_strings_round_trip(store):
    columns = {
        "color": np.array(["red", "blue"], dtype=object),
        "size": np.array([1.0, math.nan], np.float32),
    }
    write(store, record(features=("color", "size"), matrix=None, columns=columns))
    (logged,) = store.read_after(0, 1)
    assert logged.inputs == {"color": ["red", "blue"], "size": [1.0, None]}


def test_regression_outputs_round_trip(store):
    write(store, record(prediction=Prediction(values=np.array([151.5, 80.25]))))
    assert store.read_after(0, 1)[0].outputs == {"value": [151.5, 80.25]}


def test_fetch_filters_by_model_and_time(store):
    write(store, record("old", ts=10), record("new", ts=20), record("other", ts=30, model="iris"))
    assert [r.request_id for r in store.fetch("cancer", None)] == ["old", "new"]
    assert [r.request_id for r in store.fetch("cancer", 15)] == ["new"]
    assert [r.request_id for r in store.fetch(None, 15)] == ["new", "other"]


def test_feedback_targets_are_answered_requests_only(store):
    write(store, record("ok"), record("refused", status=422), record("shadow", arm="shadow"))
    targets = store.targets(["ok", "refused", "shadow", "unknown"])
    assert list(targets) == ["ok"] and targets["ok"].rows == 2 and targets["ok"].version == 1


def test_feedback_is_idempotent_and_conflicts_are_refused(store):
    write(store, record("r1"), record("r2"))
    outcomes = store.add_feedback([Feedback("r1", ["yes", "no"], 200.0), Feedback("r2", ["no", "no"], 200.0)])
    assert outcomes == [FeedbackOutcome.ACCEPTED, FeedbackOutcome.ACCEPTED]
    again = store.add_feedback([Feedback("r1", ["yes", "no"], 201.0), Feedback("r2", ["yes", "yes"], 201.0)])
    assert again == [FeedbackOutcome.DUPLICATE, FeedbackOutcome.CONFLICT]
    assert store.feedback(["r1", "r2", "x"])["r2"].ground_truth == ["no", "no"]
    assert [(seq, f.request_id) for seq, f in store.feedback_after(0, 10)] == [(1, "r1"), (2, "r2")]


def test_prune_deletes_what_is_older(store):
    write(store, record("old", ts=10), record("new", ts=20))
    store.add_feedback([Feedback("old", ["yes", "no"], 11.0), Feedback("new", ["yes", "no"], 21.0)])
    assert store.prune(before=15) == (1, 1)
    assert [r.request_id for r in store.read_after(0, 10)] == ["new"]
    assert list(store.feedback(["old", "new"])) == ["new"]


def test_several_writers_on_one_file_lose_nothing(tmp_path):
    path = tmp_path / "shared.sqlite3"
    stores = [SQLitePredictionLog(path) for _ in range(3)]

    def writer(index, store):
        for batch in range(20):
            write(store, *(record(f"w{index}-{batch}-{i}", rows=1) for i in range(10)))

    threads = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate(stores)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logged = stores[0].read_after(0, 10_000)
    assert len(logged) == 600 and len({r.request_id for r in logged}) == 600
    assert [r.seq for r in logged] == sorted(r.seq for r in logged)
    for store in stores:
        store.close()


def test_where_a_monitor_starts(store):
    assert store.seq_before(0) == 0  # an empty log: from the start
    write(store, record("a", ts=10), record("b", ts=20), record("c", ts=30))
    assert store.seq_before(15) == 1  # the first record at or after 15 is seq 2
    assert store.seq_before(99) == 3  # nothing that recent: after the last one
    assert store.seq_before(15, "feedback") == 0
