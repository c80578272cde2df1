"""The hot path's only contact with the prediction log: an O(1) append to a bounded queue.

``EventSink`` holds the queue. A thread wakes every ``flush_seconds`` (or as
soon as ``batch_size`` records wait), takes what has queued up and hands it
to a ``BatchWriter`` in one call. Waking on a timer rather than per record
matters in a Python server: every wake-up and every system call of that
thread hands the GIL back and forth with the event loop, and at a thousand
requests a second those hand-offs were most of the cost.

``LogWriter`` does the writing: it encodes a batch once, checks plausibility,
counts the request metrics, commits the batch in one transaction and writes
one structlog JSON line per request to stdout. In a gateway it runs in a
process of its own beside each worker (``service.log_process``): the worker
only pickles the batch into a pipe, and the writing takes the other core's
time instead of the event loop's GIL.

When the queue is full (the writer cannot keep up), the ``overflow`` policy
decides: ``block`` (the default) makes that request wait for room, in a
worker thread so the event loop keeps serving, and loses nothing; ``drop``
answers at once and discards the record. Both are counted. ``close`` (on a
graceful shutdown, SIGTERM) drains the queue and the writer before it
returns. On a crash, what was queued and not yet committed is lost: at most
``capacity`` records, normally the last ``flush_seconds`` (50 ms).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import TYPE_CHECKING, Literal, Protocol

import anyio.to_thread
import orjson
import structlog

from monitoring.logs import batched_lines
from monitoring.records import EncodedRecord, RequestRecord
from monitoring.store import RequestLog

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

Overflow = Literal["block", "drop"]
SHUTDOWN_ATTEMPTS = 3

log = structlog.get_logger("modelgate.sink")
request_log = structlog.get_logger("modelgate.requests")


class BatchWriter(Protocol):
    def write(self, batch: list[RequestRecord], final: bool) -> None:
        """Write (or hand on) the batch; ``final`` when the gateway is shutting down."""

    def close(self) -> None:
        """Finish what was handed over, then release what the writer holds."""


class EventSink:
    def __init__(
        self,
        writer: BatchWriter,
        *,
        capacity: int = 10_000,
        overflow: Overflow = "block",
        batch_size: int = 512,
        flush_seconds: float = 0.05,
    ) -> None:
        self.writer = writer
        self.capacity = capacity
        self.overflow = overflow
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        # appended by the event loop, popped by the writer: deque operations are atomic
        self._pending: collections.deque[RequestRecord] = collections.deque()
        self._wake = threading.Event()
        self._room = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self.handed = 0
        self.dropped = 0
        self.blocked = 0
        #: set before ``start`` to export the counters (see monitoring.metrics)
        self.metrics: GatewayMetrics | None = None

    @property
    def depth(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._thread.start()

    def offer(self, record: RequestRecord) -> bool:
        """Queue ``record`` if there is room; never waits."""
        pending = self._pending
        if len(pending) >= self.capacity:
            return False
        pending.append(record)
        if len(pending) == self.batch_size:
            self._wake.set()
        return True

    async def put(self, record: RequestRecord) -> None:
        """Queue ``record``; when full, wait for room (``block``) or discard it (``drop``)."""
        if self.offer(record):
            return
        if self.overflow == "drop":
            self.dropped += 1
            if self.metrics is not None:  # not logged, still counted as a request
                self.metrics.log_dropped.inc()
                self.metrics.observe_records(encode([record]))
            return
        self.blocked += 1
        if self.metrics is not None:
            self.metrics.log_blocked.inc()
        await anyio.to_thread.run_sync(self._put_when_room, record)

    def _put_when_room(self, record: RequestRecord) -> None:
        with self._room:
            while not self.offer(record):
                self._wake.set()
                self._room.wait(1.0)

    def close(self, timeout: float = 30.0) -> None:
        """Hand everything queued to the writer, then close it (it finishes writing)."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("log.drain_timed_out", queued=self.depth, timeout_s=timeout)
            return
        self.writer.close()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            stopping = self._stopping  # read before draining: all that was queued before close goes
            # what is queued at wake-up, not what arrives meanwhile: chasing the tail would
            # commit a few records at a time, and a commit costs about as much as a hundred rows
            count = len(self._pending)
            while count or (stopping and self._pending):
                size = min(count or len(self._pending), self.batch_size)
                batch = [self._pending.popleft() for _ in range(size)]
                count = max(count - size, 0)
                self.writer.write(batch, stopping)
                self.handed += len(batch)
                if self.metrics is not None:
                    self.metrics.log_queue_depth.set(self.depth)
                with self._room:
                    self._room.notify_all()
            if stopping:
                return


class LogWriter:
    """Encodes, checks, counts and commits batches of records, and writes their log lines."""

    def __init__(
        self,
        store: RequestLog,
        *,
        payload_rows: int = 100,
        retry_seconds: float = 0.5,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.store = store
        self.payload_rows = payload_rows
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self.written = 0
        self.write_errors = 0

    def close(self) -> None:
        """Nothing to finish: ``write`` returns once its batch is written."""

    def write(self, batch: list[RequestRecord], final: bool) -> None:
        """Write the batch, retrying while the store refuses (the queue backs up meanwhile);
        when shutting down, give up after a few attempts and say how much was lost."""
        encoded = encode(batch)
        if self.metrics is not None:  # the requests happened, whether or not the store takes them
            self.metrics.observe_records(encoded)
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
                if final and attempts >= SHUTDOWN_ATTEMPTS:
                    log.error("log.records_lost", records=len(encoded))
                    return
                time.sleep(self.retry_seconds)
        self.written += len(encoded)
        if self.metrics is not None:
            self.metrics.log_written.inc(len(encoded))
        with batched_lines():
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


def encode(batch: list[RequestRecord]) -> list[EncodedRecord]:
    """The batch encoded, with plausibility checked per version over all its records at once."""
    groups: dict[int, list[int]] = {}
    for i, record in enumerate(batch):
        if record.checker is not None and record.prediction is not None:
            groups.setdefault(id(record.checker), []).append(i)
    violations: dict[int, dict[str, int]] = {}
    for indices in groups.values():
        records = [batch[i] for i in indices]
        checker = records[0].checker
        assert checker is not None
        found = checker.check_each([(r.matrix, r.columns, r.prediction) for r in records if r.prediction])
        violations.update(zip(indices, found, strict=True))
    return [EncodedRecord.of(record, violations.get(i)) for i, record in enumerate(batch)]
