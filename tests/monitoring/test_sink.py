"""The event sink: nothing acknowledged is lost on a graceful close; a full queue holds new requests
then sheds them, or drops; a store that refuses is retried in parts, and what it still refuses at a
stop is counted."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from structlog.testing import capture_logs

from monitoring.records import RequestRecord
from monitoring.sink import EventSink, LogWriter
from monitoring.store.sqlite import open_sqlite
from registry.prediction import Prediction


def record(i: int, rows: int = 1) -> RequestRecord:
    return RequestRecord(
        request_id=f"r{i}", ts=float(i), route="predict", status=200, latency_ms=0.5, model="m", version=1,
        rows=rows, features=("x",), matrix=np.full((rows, 1), float(i), dtype=np.float32),
        prediction=Prediction(values=np.full(rows, 2.0 * i)),
    )  # fmt: skip


@pytest.fixture
def store(tmp_path):
    log = open_sqlite(tmp_path / "p.sqlite3")
    yield log
    log.close()


class GatedStore:
    """A store whose writes wait until the test opens the gate, and may fail first."""

    def __init__(self, inner, failures=0):
        self.inner = inner
        self.gate = threading.Event()
        self.failures = failures

    def write(self, records):
        self.gate.wait(10)
        if self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        self.inner.write(records)


def test_close_drains_everything_queued(store):
    writer = LogWriter(store.requests)
    sink = EventSink(writer, capacity=10_000)
    sink.start()
    for i in range(5000):
        assert sink.offer(record(i))
    sink.close()
    assert writer.written == 5000 and len(store.requests.read_after({}, 10_000)) == 5000


def test_each_request_is_one_json_log_line_with_its_payload(store):
    sink = EventSink(LogWriter(store.requests, payload_rows=2))
    with capture_logs() as logs:
        sink.start()
        sink.offer(record(1))
        sink.offer(record(2, rows=3))
        sink.close()
    lines = [e for e in logs if e["event"] == "request.completed"]
    assert [(e["request_id"], e["status"], e["rows"]) for e in lines] == [("r1", 200, 1), ("r2", 200, 3)]
    assert "inputs" in lines[0] and "outputs" in lines[0]
    assert "payload" in lines[1] and "inputs" not in lines[1]


def overflow_dropping(store, metrics=None):
    """20 records into a sink of 5 under the drop policy while the store waits; then drained."""
    gated = GatedStore(store.requests)
    sink = EventSink(LogWriter(gated, metrics=metrics), capacity=5, overflow="drop", batch_size=1)
    sink.metrics = metrics
    sink.start()

    for i in range(20):
        sink.put(record(i))
    gated.gate.set()
    sink.close()
    return sink


def test_a_full_queue_drops_and_counts_under_the_drop_policy(store):
    sink = overflow_dropping(store)
    assert sink.dropped > 0 and sink.handed + sink.dropped == 20
    assert len(store.requests.read_after({}, 100)) == sink.handed


def test_a_full_queue_holds_new_requests_then_sheds_them_and_loses_nothing_admitted(store):
    gated = GatedStore(store.requests)
    sink = EventSink(LogWriter(gated), capacity=5, overflow="block", block_seconds=0.3, batch_size=1)
    sink.start()
    admitted = 0

    async def serve(i: int) -> None:
        nonlocal admitted
        if await sink.admit():
            admitted += 1
            sink.put(record(i))

    async def send():
        for i in range(8):  # the writer holds one, the queue five: then it is full
            await serve(i)
        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        started = time.monotonic()
        assert not await sink.admit()  # held for block_seconds, then refused before any work
        assert 0.3 <= time.monotonic() - started < 1.0 and ticks > 10  # the loop kept running
        waiting = asyncio.create_task(serve(100))
        await asyncio.sleep(0.05)
        gated.gate.set()  # room again: the waiting request goes in
        await waiting
        ticker.cancel()

    asyncio.run(send())
    sink.close()
    assert sink.blocked >= 2 and sink.shed >= 1 and sink.dropped == 0
    assert len(store.requests.read_after({}, 100)) == admitted == sink.handed


def test_a_failing_store_is_retried_not_lost(store):
    gated = GatedStore(store.requests, failures=2)
    gated.gate.set()
    writer = LogWriter(gated, retry_seconds=0.01)
    sink = EventSink(writer)
    sink.start()
    sink.offer(record(1))
    sink.close()
    assert writer.write_errors == 2 and writer.written == 1 and len(store.requests.read_after({}, 10)) == 1


def test_requests_are_counted_in_metrics_even_when_the_log_drops_them(store):
    from prometheus_client import CollectorRegistry

    from monitoring.metrics import GatewayMetrics

    metrics = GatewayMetrics(CollectorRegistry())
    sink = overflow_dropping(store, metrics)
    labels = {"model": "m", "version": "1", "arm": "champion", "route": "predict", "status": "200"}
    assert sink.dropped > 0
    assert metrics.registry.get_sample_value("modelgate_requests_total", labels) == 20
    assert metrics.registry.get_sample_value("modelgate_log_records_dropped_total") == sink.dropped


def test_a_dropped_record_still_has_its_plausibility_counted(store):
    from prometheus_client import CollectorRegistry

    from monitoring.metrics import GatewayMetrics

    class AlwaysOneViolation:
        def check_each(self, batches):
            return [{"value_range": 1} for _ in batches]

    metrics = GatewayMetrics(CollectorRegistry())
    sink = EventSink(LogWriter(store.requests), capacity=0, overflow="drop")
    sink.metrics = metrics
    sink.put(replace(record(1), checker=AlwaysOneViolation()))
    labels = {"model": "m", "version": "1", "arm": "champion", "rule": "value_range", "feature": ""}
    assert sink.dropped == 1
    assert metrics.registry.get_sample_value("modelgate_plausibility_violations_total", labels) == 1


class RoomFor:
    """A store with room for ``room`` more records: a write that would not fit is refused whole,
    as a full disk refuses a transaction."""

    def __init__(self, inner, room):
        self.inner = inner
        self.room = room
        self.attempts = 0

    def write(self, records):
        self.attempts += 1
        if len(records) > self.room:
            raise OSError("database or disk is full")
        self.room -= len(records)
        self.inner.write(records)


def test_a_batch_larger_than_the_room_is_split_to_fit(store):
    full = RoomFor(store.requests, room=7)
    writer = LogWriter(full, retry_seconds=0.01)
    done = threading.Thread(target=writer.write, args=([record(i) for i in range(20)], False))
    done.start()
    time.sleep(0.3)
    assert len(store.requests.read_after({}, 100)) == 7  # what fits is in; the rest waits for room
    full.room = 100  # space comes back: the rest goes in, without a restart
    done.join(5)
    assert not done.is_alive() and writer.written == 20 and writer.lost == 0
    assert [r.request_id for r in store.requests.read_after({}, 100)] == [f"r{i}" for i in range(20)]


def test_what_a_full_store_refuses_at_a_stop_is_counted_lost_quickly(store):
    from prometheus_client import CollectorRegistry

    from monitoring.metrics import GatewayMetrics

    metrics = GatewayMetrics(CollectorRegistry())
    writer = LogWriter(RoomFor(store.requests, room=3), retry_seconds=0.05, metrics=metrics)
    sink = EventSink(writer, batch_size=100)
    sink.start()
    for i in range(1_000):
        sink.offer(record(i))
    time.sleep(0.3)  # retrying: nothing fits after the first three
    started = time.monotonic()
    with capture_logs() as logs:
        sink.close()  # drain: each record the store refuses now is given up on, not retried forever
    assert time.monotonic() - started < 2.0
    assert writer.written == 3 and writer.lost == 997
    assert metrics.registry.get_sample_value("modelgate_log_records_lost_total") == 997
    lost = [e for e in logs if e["event"] == "log.records_lost"]
    assert sum(e["records"] for e in lost) == 997 and lost[0]["request_ids"][0] == "r3"
