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
process of its own beside each worker (``service.processes.log_writer``): the worker
only pickles the batch into a pipe, and the writing takes the other core's
time instead of the event loop's GIL.

When the queue is full (the writer cannot keep up, or the disk is full),
the ``overflow`` policy decides: ``block`` (the default) admits a new
request only once there is room, waiting at most ``block_seconds`` on the
event loop (not in a thread: blocked requests must not use up the threads
``/metrics`` and the models need), and refuses it past that, before any work,
so nothing answered 200 is lost and the caller can retry elsewhere; ``drop``
answers and discards the record. All are counted. Memory stays bounded: an
admitted request's record is queued even past ``capacity``, by at most the
requests in flight.

``close`` (on a graceful shutdown, SIGTERM) tells the writer to stop
retrying (``drain``), hands it everything queued and closes it: what it
cannot write then is counted in ``modelgate_log_records_lost_total`` and a
``log.records_lost`` line, never silently. On a crash, what was queued and
not yet committed is lost: normally the last ``flush_seconds`` (50 ms).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

import orjson
import structlog

from monitoring.logs import batched_lines
from monitoring.records import EXPLAIN_ROUTE, EncodedRecord, RequestRecord
from monitoring.store import RequestLog

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics
    from monitoring.redaction import Redactor

Overflow = Literal["block", "drop"]
#: called once a batch handed to a writer is committed (True) or given up on (False)
OnCommit = Callable[[bool], None]
#: durable acknowledgement: how long the sink waits for a batch's commit before it hands on the next
#: anyway (a writer that died never reports it; the answers waiting time out on their own)
COMMIT_WAIT_SECONDS = 1.0
SHUTDOWN_ATTEMPTS = 3

log = structlog.get_logger("modelgate.sink")
request_log = structlog.get_logger("modelgate.requests")


class BatchWriter(Protocol):
    def write(self, batch: list[RequestRecord], final: bool, on_commit: OnCommit | None = None) -> None:
        """Write (or hand on) the batch; ``final`` when the gateway is shutting down; ``on_commit``
        (from any thread, maybe later) once it is committed or given up on."""

    def drain(self) -> None:
        """The gateway is stopping: stop retrying what fails; count it lost instead."""

    def close(self) -> None:
        """Finish what was handed over, then release what the writer holds."""


class EventSink:
    def __init__(
        self,
        writer: BatchWriter,
        *,
        capacity: int = 10_000,
        overflow: Overflow = "block",
        block_seconds: float = 0.5,
        batch_size: int = 512,
        flush_seconds: float = 0.05,
    ) -> None:
        self.writer = writer
        self.capacity = capacity
        self.overflow = overflow
        self.block_seconds = block_seconds
        self.batch_size = batch_size
        self.flush_seconds = flush_seconds
        # appended by the event loop, popped by the writer: deque operations are atomic
        self._pending: collections.deque[RequestRecord] = collections.deque()
        #: durable acknowledgement: a record's future, by its id(), resolved once it is committed
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self.handed = 0
        self.dropped = 0
        self.blocked = 0
        self.shed = 0
        self.lost = 0
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

    @property
    def accepting(self) -> bool:
        """Whether a request would be admitted now without waiting."""
        return self.overflow == "drop" or len(self._pending) < self.capacity

    async def admit(self) -> bool:
        """Whether a new request may be served: under ``block``, once the queue has room, waiting
        ``block_seconds`` at most (False past that: refuse it before doing any work)."""
        if self.accepting:
            return True
        self.blocked += 1
        if self.metrics is not None:
            self.metrics.log_blocked.inc()
        self.report_depth()
        deadline = time.monotonic() + self.block_seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.01)
            if self.accepting:
                return True
        self.shed += 1
        if self.metrics is not None:
            self.metrics.log_shed.inc()
        return False

    def put(self, record: RequestRecord, committed: asyncio.Future[bool] | None = None) -> None:
        """Queue the record of an admitted request: past ``capacity`` too under ``block`` (by at most
        the requests in flight), discarded and counted under ``drop``. ``committed`` is resolved
        True once the record is committed (False: given up on, or discarded); the writer is woken
        at once, and what queues while it commits goes in its next transaction (group commit)."""
        if committed is not None:
            self._waiters[id(record)] = committed
        if not self.offer(record):
            if self.overflow == "drop":
                self._drop(record)
                if committed is not None:
                    self._waiters.pop(id(record))
                    committed.set_result(False)
                return
            self._pending.append(record)  # admitted while full: queued all the same
        if committed is not None:
            self._wake.set()

    def _drop(self, record: RequestRecord) -> None:
        self.dropped += 1
        if self.metrics is not None:  # not logged, still counted as a request
            self.metrics.log_dropped.inc()
            self.metrics.observe_records(encode([record]))

    def report_depth(self) -> None:
        """Set the queue-depth gauge now; called on a timer, as the writer thread may be blocked."""
        if self.metrics is not None:
            self.metrics.log_queue_depth.set(self.depth)

    def close(self, timeout: float = 30.0) -> None:
        """Tell the writer to stop retrying, hand it everything queued, then close it (it finishes
        writing); what is left when ``timeout`` runs out is counted lost."""
        if not self._thread.is_alive():
            return
        self._stopping = True
        self.writer.drain()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.count_lost(self.depth, "the log writer did not take them before the stop timed out")
            return
        self.writer.close()

    def count_lost(self, records: int, why: str) -> None:
        self.lost += records
        if self.metrics is not None:
            self.metrics.log_lost.inc(records)
        log.error("log.records_lost", records=records, reason=why)

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
                waiters = [self._waiters.pop(id(r)) for r in batch if id(r) in self._waiters]
                if not waiters:
                    self.writer.write(batch, stopping)
                else:  # group commit: what queues while this commits goes in the next transaction
                    landed = threading.Event()
                    self.writer.write(batch, stopping, _settler(waiters, landed))
                    landed.wait(COMMIT_WAIT_SECONDS)
                self.handed += len(batch)
                self.report_depth()
            if stopping:
                return


def _settler(waiters: list[asyncio.Future[bool]], landed: threading.Event) -> OnCommit:
    """What tells the requests waiting on a batch (on their event loop) how its commit went, and
    the sink that the next batch may go."""

    def settle(ok: bool) -> None:
        landed.set()
        for waiter in waiters:
            waiter.get_loop().call_soon_threadsafe(_settle, waiter, ok)

    return settle


def _settle(waiter: asyncio.Future[bool], ok: bool) -> None:
    if not waiter.done():  # a request that stopped waiting (timed out) has cancelled it
        waiter.set_result(ok)


class LogWriter:
    """Encodes, checks, counts and commits batches of records, and writes their log lines.

    A write the store refuses (locked, disk full) is split in halves and retried, so that what fits
    in the space there is goes in; a single record that still fails is retried every
    ``retry_seconds`` (the queue backs up meanwhile, and the gateway sheds load), until the store
    takes it or the writer is told to ``drain`` (the gateway stops) or ``orphaned`` says its
    gateway is gone: then each record gets ``SHUTDOWN_ATTEMPTS`` and is counted lost after that.
    """

    def __init__(
        self,
        store: RequestLog,
        *,
        payload_rows: int = 100,
        retry_seconds: float = 0.5,
        metrics: GatewayMetrics | None = None,
        orphaned: Callable[[], bool] = lambda: False,
        redactor: Redactor | None = None,
    ) -> None:
        self.store = store
        self.redactor = redactor
        self.payload_rows = payload_rows
        self.retry_seconds = retry_seconds
        self.metrics = metrics
        self.orphaned = orphaned
        self.draining = False
        #: while stopping, a record was given up on: what the store refuses next is lost at once
        self.gave_up = False
        self.written = 0
        self.write_errors = 0
        self.lost = 0

    def drain(self) -> None:
        self.draining = True

    def close(self) -> None:
        """Nothing to finish: ``write`` returns once its batch is written."""

    def write(self, batch: list[RequestRecord], final: bool, on_commit: OnCommit | None = None) -> None:
        """Write the batch (see the class); log each request's line, written or lost."""
        lost = self._write(batch, final)
        if on_commit is not None:
            on_commit(not lost)

    def _write(self, batch: list[RequestRecord], final: bool) -> int:
        """Write the batch; the number of its records given up on."""
        encoded = encode(batch, self.redactor)
        if self.metrics is not None:  # the requests happened, whether or not the store takes them
            self.metrics.observe_records(encoded)
        lost = self._commit(encoded, final)
        self.written += len(encoded) - len(lost)
        if self.metrics is not None:
            self.metrics.log_written.inc(len(encoded) - len(lost))
        if lost:
            self.lost += len(lost)
            if self.metrics is not None:
                self.metrics.log_lost.inc(len(lost))
            ids = [item.record.request_id for item in lost]
            log.error("log.records_lost", records=len(lost), request_ids=ids[:100],
                      reason="the store refused them while the gateway stopped")  # fmt: skip
        with batched_lines():
            for item in encoded:
                self._emit(item)
        return len(lost)

    def _commit(self, encoded: list[EncodedRecord], final: bool) -> list[EncodedRecord]:
        """Commit ``encoded``, in parts when it must; the records given up on."""
        parts, lost, attempts = [encoded], [], 0
        while parts:
            part = parts.pop()
            try:
                self.store.write(part)
                attempts = 0
                continue
            except Exception as exc:  # locked, disk full, ...
                self.write_errors += 1
                if self.metrics is not None:
                    self.metrics.log_write_errors.inc()
                error = str(exc)
            stopping = final or self.draining or self.orphaned()
            if stopping and self.gave_up:  # the store refused the last records of this stop already
                lost += part
                continue
            if len(part) > 1:  # what fits in the room there is goes in; the rest is tried again
                half = len(part) // 2
                parts += [part[half:], part[:half]]
                continue
            attempts += 1
            if stopping and attempts >= SHUTDOWN_ATTEMPTS:
                lost += part
                self.gave_up = True
                attempts = 0
                continue
            if attempts == 1 or attempts % 20 == 0:  # a line a record, then one every 10 s or so
                log.error("log.write_failed", records=sum(map(len, parts)) + 1, error=error,
                          attempts=attempts, retry_s=self.retry_seconds)  # fmt: skip
            time.sleep(self.retry_seconds)
            parts.append(part)
        return lost

    def _emit(self, item: EncodedRecord) -> None:
        r = item.record
        if r.route == EXPLAIN_ROUTE:
            request_log.info("request.explained", request_id=r.request_id, model=r.model, version=r.version,
                             arm=r.arm, rows=r.rows, latency_ms=round(r.latency_ms, 3))  # fmt: skip
            return
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


def encode(batch: list[RequestRecord], redactor: Redactor | None = None) -> list[EncodedRecord]:
    """The batch encoded, with plausibility checked per version over all its records at once (on the
    values as sent), then each record's log policy applied by ``redactor``."""
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
    return [EncodedRecord.of(record, violations.get(i), redactor) for i, record in enumerate(batch)]
