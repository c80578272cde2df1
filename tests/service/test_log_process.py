"""The log writer process beside each worker: it writes what the worker hands it, exactly as the
worker would have, survives its own death and the group's signals, and finishes before it exits."""

from __future__ import annotations

import os
import signal

import pytest

from monitoring.records import RequestRecord
from monitoring.sink import LogWriter
from monitoring.store.sqlite import open_sqlite
from service.processes.log_writer import LogShipper
from service.serving.pool import load_version, warmup_batch
from service.settings import Settings


@pytest.fixture
def settings(cancer_registry, tmp_path):
    return Settings(registry=cancer_registry.root, log_path=tmp_path / "log.sqlite3")


@pytest.fixture
def records(cancer_registry):
    """Answered, plausibility-checked, failed and refused requests of the cancer champion."""
    served = load_version(cancer_registry, "cancer", 1, warmup_rows=8, threads=1)
    batch = warmup_batch(served.manifest, 8)
    matrix = batch.matrix.copy()
    matrix[2, 3] = 1e7  # far out of its reference range: an input_range violation
    made = []
    for i in range(8):
        rows = matrix[i : i + 1 + i % 3]
        prediction = served.model.predict(served.model.feeds(None, rows))
        made.append(
            RequestRecord(
                request_id=f"r{i}", ts=1000.0 + i, route="predict", status=200, latency_ms=1.5 * i,
                model="cancer", version=1, rows=len(rows), features=served.feature_names, matrix=rows,
                prediction=prediction, classes=served.manifest.output.classes, checker=served.checker,
            )
        )  # fmt: skip
    made.append(RequestRecord(request_id="bad", ts=2000.0, route="predict", status=422, latency_ms=0.3,
                              model="cancer", version=1, error="inputs[0].x: missing"))  # fmt: skip
    made.append(RequestRecord(request_id="nomodel", ts=2001.0, route="v2", status=404, latency_ms=0.1,
                              error="no model dog"))  # fmt: skip
    return made


def logged(path):
    store = open_sqlite(path)
    try:
        return [(r.request_id, r.status, r.rows, r.inputs, r.outputs, r.flags, r.error)
                for r in store.requests.read_after({}, 1000)]  # fmt: skip
    finally:
        store.close()


def test_the_writer_process_logs_what_writing_in_the_worker_would(settings, records, tmp_path):
    shipper = LogShipper(settings)
    shipper.start()
    shipper.write(records[:5], final=False)
    shipper.write(records[5:], final=True)
    shipper.close()

    direct = open_sqlite(tmp_path / "direct.sqlite3")
    LogWriter(direct.requests).write(records, final=True)
    direct.close()
    expected = logged(tmp_path / "direct.sqlite3")
    assert logged(settings.prediction_log) == expected
    assert expected[2][5] == {"input_range:mean_area": 1}  # plausibility checked there too
    assert [entry[0] for entry in expected] == [r.request_id for r in records]


def test_a_writer_that_dies_is_started_again_and_the_next_batch_is_logged(settings, records):
    shipper = LogShipper(settings, retry_seconds=0.01)
    shipper.start()
    shipper.write(records[:2], final=False)
    first = shipper.child
    assert first is not None
    first.kill()
    first.wait()
    shipper.write(records[2:4], final=False)
    assert shipper.child is not None and shipper.child.pid != first.pid
    shipper.close()
    ids = [entry[0] for entry in logged(settings.prediction_log)]
    assert ids[-2:] == ["r2", "r3"]  # what the dead one had not committed may be lost, not what came after


def test_the_writer_ignores_the_groups_stop_signals_and_drains_before_it_exits(settings, records):
    shipper = LogShipper(settings)
    shipper.start()
    assert shipper.child is not None
    for sig in (signal.SIGTERM, signal.SIGINT):
        os.kill(shipper.child.pid, sig)
    shipper.write(records, final=True)
    shipper.close()
    assert len(logged(settings.prediction_log)) == len(records)
    assert shipper.child is None


def test_a_writer_that_cannot_start_fails_the_start_with_a_reason(settings, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    shipper = LogShipper(Settings(registry=settings.registry, log_path=blocked / "log.sqlite3"))
    with pytest.raises(RuntimeError, match="did not start"):
        shipper.start(timeout=30)
    assert shipper.child is not None and shipper.child.wait(10) != 0


def test_a_shipment_gives_back_every_record_whatever_its_arrays(records, cancer_registry):
    """Stacked when the arrays stack (one matrix width, one dtype), one a record when they do not
    (another model's width), and none for refused requests."""
    import numpy as np

    from monitoring.records import RequestRecord
    from registry.prediction import Prediction
    from service.processes.log_writer import Checkers, ship, unship

    other = RequestRecord(request_id="wide", ts=3000.0, route="v1", status=200, latency_ms=1.0, model="x",
                          version=1, rows=2, features=("a", "b"), matrix=np.ones((2, 2), np.float64),
                          prediction=Prediction(values=np.array([1.5, 2.5])))  # fmt: skip
    batch = [*records, other]
    back = unship(ship(batch, final=True), Checkers(str(cancer_registry.root)))
    assert [r.request_id for r in back] == [r.request_id for r in batch]
    for sent, got in zip(batch, back, strict=True):
        assert (sent.matrix is None) == (got.matrix is None)
        if sent.matrix is not None:
            np.testing.assert_array_equal(sent.matrix, got.matrix)
        assert (sent.prediction is None) == (got.prediction is None)
        if sent.prediction is not None:
            for part in ("labels", "probabilities", "values"):
                mine, theirs = getattr(sent.prediction, part), getattr(got.prediction, part)
                assert (mine is None) == (theirs is None)
                if mine is not None:
                    np.testing.assert_array_equal(mine, theirs)
        assert (sent.error, sent.rows, sent.route, sent.status) == (
            got.error,
            got.rows,
            got.route,
            got.status,
        )
        assert (got.checker is not None) == (sent.checker is not None and sent.model == "cancer")
