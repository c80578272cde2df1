"""The hot path's only contact with the prediction log: an O(1) append to a bounded queue.

A writer thread takes what has queued up, encodes it once, commits it in one
transaction, and writes one structlog JSON line per request to stdout.

When the queue is full (the store cannot keep up), the ``overflow`` policy
decides: ``block`` (the default) makes that request wait for room, in a
worker thread so the event loop keeps serving, and loses nothing; ``drop``
answers at once and discards the record. Both are counted. ``close`` (on a
graceful shutdown, SIGTERM) drains the queue before it returns. On a crash,
what was queued and not yet committed is lost: at most ``capacity`` records,
normally the last few milliseconds.
"""

from __future__ import annotations

import queue
import threading
import time
from typing import TYPE_CHECKING, Literal

import anyio.to_thread
import orjson
import structlog

from monitoring.prediction_log import PredictionLog
from monitoring.records import EncodedRecord, RequestRecord

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

Overflow = Literal["block", "drop"]
_STOP = object()
SHUTDOWN_ATTEMPTS = 3

log = structlog.get_logger("modelgate.sink")
request_log = structlog.get_logger("modelgate.requests")


class EventSink:
    def __init__(
        self,
        store: PredictionLog,
        *,
        capacity: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 512,
        payload_rows: int = 100,
        retry_seconds: float = 0.5,
    ) -> None:
        self.store = store
        self.overflow = overflow
        self.batch_size = batch_size
        self.payload_rows = payload_rows
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self.written = 0
        self.dropped = 0
        self.blocked = 0
        self.write_errors = 0
        #: set before ``start`` to export the counters (see monitoring.metrics)
        self.metrics: GatewayMetrics | None = None

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._thread.start()

    def offer(self, record: RequestRecord) -> bool:
        """Queue ``record`` if there is room; never waits."""
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            return False
        return True

    async def put(self, record: RequestRecord) -> None:
        """Queue ``record``; when full, wait for room (``block``) or discard it (``drop``)."""
        if self.offer(record):
            return
        if self.overflow == "drop":
            self.dropped += 1
            if self.metrics is not None:
                self.metrics.log_dropped.inc()
            return
        self.blocked += 1
        if self.metrics is not None:
            self.metrics.log_blocked.inc()
        await anyio.to_thread.run_sync(self._queue.put, record)

    def close(self, timeout: float = 30.0) -> None:
        """Write everything queued, then stop the writer."""
        if not self._thread.is_alive():
            return
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("log.drain_timed_out", queued=self.depth, timeout_s=timeout)

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [item for item in batch if isinstance(item, RequestRecord)]
            stopping = len(records) != len(batch)
            if records:
                self._commit([EncodedRecord.of(r) for r in records], stopping)
            if stopping:
                if self._queue.qsize():  # records that arrived behind the stop marker
                    self._queue.put(_STOP)
                    continue
                return

    def _commit(self, encoded: list[EncodedRecord], stopping: bool) -> None:
        """Write the batch, retrying while the store refuses (the queue backs up meanwhile);
        when shutting down, give up after a few attempts and say how much was lost."""
        attempts = 0
        while True:
            try:
                self.store.write(encoded)
                break
            except Exception as exc:  # locked, disk full, ...: retry rather than lose it
                attempts += 1
                self.write_errors += 1
                if self.metrics is not None:
                    self.metrics.log_write_errors.inc()
                log.error(
                    "log.write_failed", records=len(encoded), error=str(exc), retry_s=self.retry_seconds
                )
                if stopping and attempts >= SHUTDOWN_ATTEMPTS:
                    log.error("log.records_lost", records=len(encoded))
                    return
                time.sleep(self.retry_seconds)
        self.written += len(encoded)
        if self.metrics is not None:
            self.metrics.log_written.inc(len(encoded))
            self.metrics.log_queue_depth.set(self.depth)
        for item in encoded:
            self._emit(item)

    def _emit(self, item: EncodedRecord) -> None:
        r = item.record
        payload: dict[str, object] = {}
        if r.rows <= self.payload_rows:
            if item.inputs is not None:
                payload["inputs"] = orjson.Fragment(item.inputs)
            if item.outputs is not None:
                payload["outputs"] = orjson.Fragment(item.outputs)
        elif r.rows:
            payload["payload"] = f"{r.rows} rows: in the prediction log"
        if item.flags is not None:
            payload["flags"] = orjson.Fragment(item.flags)
        request_log.info(
            "request.completed" if r.error is None else "request.failed",
            request_id=r.request_id,
            route=r.route,
            model=r.model,
            version=r.version,
            arm=r.arm,
            status=r.status,
            latency_ms=round(r.latency_ms, 3),
            rows=r.rows,
            error=r.error,
            **payload,
        )
