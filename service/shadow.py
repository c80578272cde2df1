"""Shadow mode: the challenger sees the champion's inputs off the response path, never answering.

The handler, once the champion has answered, offers a job to a bounded
queue and returns: a full queue sheds the job (counted in
``modelgate_shadow_shed_total``), it never waits. One thread per worker
runs the challenger on the jobs (ONNX Runtime releases the GIL while it
computes) and queues one prediction-log record per job under the request's
id, with arm ``shadow``: its prediction, or the error it raised. So a
challenger that fails, is slow or hangs changes nothing the client sees; a
slow one only sheds more of its shadow traffic, a hung one all of it.

The thread also keeps to a budget: after a job that took ``t`` seconds it
rests ``t * (1 - budget) / budget``, so the challenger never takes more
than ``budget`` of the time (a tenth by default) from the cores the
champion answers on; jobs that arrive meanwhile queue, then are shed.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from monitoring.records import RequestRecord
from service.errors import ServiceError
from service.pool import ServedVersion
from service.validation import Batch

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics
    from monitoring.sink import EventSink

log = structlog.get_logger("modelgate.shadow")


@dataclass(frozen=True, slots=True)
class ShadowJob:
    request_id: str
    ts: float
    route: str
    challenger: ServedVersion
    #: the champion's validated batch when the challenger has the same input schema, else None ...
    batch: Batch | None
    #: ... and the request's inputs are validated against the challenger's schema, in the thread
    parse: Callable[[ServedVersion], Batch]


class ShadowRunner:
    def __init__(self, sink: EventSink, capacity: int = 256, budget: float = 0.1) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"shadow budget {budget}: a share of the time, above 0 and at most 1")
        self.sink = sink
        self.budget = budget
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self.shed = 0
        #: set before ``start`` to count what is shed
        self.metrics: GatewayMetrics | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def pending(self) -> int:
        """Jobs queued and not yet taken (the one in hand not counted)."""
        return self._jobs.qsize()

    def offer(self, job: ShadowJob) -> None:
        """Queue the job, or shed it when the queue is full; never waits."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.shed += 1
            if self.metrics is not None:
                self.metrics.shadow_shed.labels(job.challenger.name).inc()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the job in hand; jobs still queued answered no one and are dropped."""
        if not self._thread.is_alive():
            return
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        self._jobs.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("shadow.stop_timed_out", timeout_s=timeout)

    def _run(self) -> None:
        rest = (1.0 - self.budget) / self.budget
        while (job := self._jobs.get()) is not None:
            started = time.perf_counter()
            record = self.mirror(job)
            if rest:
                time.sleep((time.perf_counter() - started) * rest)
            if not self.sink.offer(record):  # the log's queue is full: shed, not waited for
                self.shed += 1
                if self.metrics is not None:
                    self.metrics.shadow_shed.labels(job.challenger.name).inc()

    @staticmethod
    def mirror(job: ShadowJob) -> RequestRecord:
        """Run the challenger on one job; its record whether it predicted, refused or failed."""
        served = job.challenger
        started = time.perf_counter()
        batch, prediction, status, error = job.batch, None, 200, None
        try:
            if batch is None:
                batch = job.parse(served)
            prediction = served.predict(batch)
        except ServiceError as exc:  # the inputs do not fit the challenger's schema
            status, error = exc.status, exc.message
        except Exception as exc:  # the challenger failed: logged, never answered
            status, error = 500, f"{type(exc).__name__}: {exc}"
        return RequestRecord(
            request_id=job.request_id, ts=job.ts, route=job.route, status=status,
            latency_ms=(time.perf_counter() - started) * 1000, model=served.name, version=served.version,
            arm="shadow", rows=batch.rows if batch else 0, features=served.feature_names,
            matrix=batch.matrix if batch else None, columns=batch.columns if batch else None,
            prediction=prediction, error=error, classes=served.manifest.output.classes,
            checker=served.checker if prediction is not None else None,
        )  # fmt: skip
