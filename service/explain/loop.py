"""Explanations in the loop: ``MODELGATE_EXPLAIN_RATE`` of the answered requests (chosen by request
id, alike in every process) and of the shadow challenger's predictions of them, explained off the
request path and logged.

``offer`` queues a job and returns; a full queue, or a full log queue once explained, sheds it
(counted, like the shadow runner's). One
thread at the lowest priority takes the jobs, explains each with the version's loop explainer
(``registry.explain.explainers.LoopExplainer``: as its reference attributions were computed at
push) on a session with one intra-op thread, and queues one record of route ``explain`` for the
log: each row's importance of each feature. The monitor tests their distribution against the
reference's (attribution drift) and compares champion and challenger on them.
"""

from __future__ import annotations

import queue
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from monitoring.records import EXPLAIN_ROUTE, RequestRecord
from monitoring.sink import EventSink
from registry.aliases import Arm
from registry.explain.explainers import Unexplainable
from registry.store import Registry
from service.explain.versions import VersionExplainer, columns_of
from service.serving.pool import ServedVersion
from service.serving.shadow import emptied, lower_priority
from service.serving.validation import Batch

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

log = structlog.get_logger("modelgate.explain")

#: versions whose explainers one runner keeps built
CACHED_VERSIONS = 8


def chosen(request_id: str, rate: float) -> bool:
    """Whether a request is explained at ``rate`` (by its id: a request and its shadow alike)."""
    return rate >= 1.0 or zlib.crc32(b"explain:" + request_id.encode()) < rate * 2**32


@dataclass(frozen=True)
class ExplainJob:
    request_id: str
    ts: float
    arm: Arm
    served: ServedVersion
    batch: Batch


class ExplainRunner:
    """``background(served)``: the version on a session with one intra-op thread (the pool's)."""

    def __init__(
        self,
        sink: EventSink,
        registry: Registry,
        rate: float,
        background: Callable[[ServedVersion], ServedVersion],
        capacity: int = 64,
    ) -> None:
        self.sink = sink
        self.registry = registry
        self.rate = rate
        self._background = background
        self._jobs: queue.Queue[ExplainJob | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="explain", daemon=True)
        #: per version: the served version it was built for, and its explainer (None: unexplainable)
        self._explainers: dict[tuple[str, int], tuple[ServedVersion, VersionExplainer | None]] = {}
        self.shed = 0
        self.explained = 0
        #: set before ``start`` to count what is shed
        self.metrics: GatewayMetrics | None = None

    def start(self) -> None:
        self._thread.start()

    def offer(self, request_id: str, ts: float, arm: Arm, served: ServedVersion, batch: Batch) -> None:
        """Queue the request for explaining when its id is chosen; never waits."""
        if not chosen(request_id, self.rate):
            return
        try:
            self._jobs.put_nowait(ExplainJob(request_id, ts, arm, served, batch))
        except queue.Full:
            self._shed(served.name)

    def _shed(self, model: str) -> None:
        self.shed += 1
        if self.metrics is not None:
            self.metrics.explain_shed.labels(model).inc()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the job in hand; the jobs still queued are dropped (they answered no one)."""
        if not self._thread.is_alive():
            return
        emptied(self._jobs)
        self._jobs.put(None)
        self._thread.join(timeout)

    def _explainer(self, served: ServedVersion) -> VersionExplainer | None:
        key = (served.name, served.version)
        built = self._explainers.get(key)
        if built is None or built[0] is not served:
            explainer = None
            try:
                twin = self._background(served)
                explainer = VersionExplainer(twin, self.registry.read_model(*key)[1])
            except Unexplainable as exc:
                log.info("explain.not_offered", model=served.name, version=served.version, reason=str(exc))
            while len(self._explainers) >= CACHED_VERSIONS:
                self._explainers.pop(next(iter(self._explainers)))
            built = self._explainers[key] = (served, explainer)
        return built[1]

    def _run(self) -> None:
        lower_priority()
        while (job := self._jobs.get()) is not None:
            try:
                self._explain(job)
            except Exception:  # an explanation that fails must not stop the others
                log.exception("explain.failed", request_id=job.request_id, model=job.served.name)

    def _explain(self, job: ExplainJob) -> None:
        explainer = self._explainer(job.served)
        if explainer is None:
            return
        started = time.perf_counter()
        seed = zlib.crc32(job.request_id.encode())
        importance = explainer.loop.importance(columns_of(job.served, job.batch), job.batch.rows, seed)
        served = job.served
        record = RequestRecord(
            request_id=job.request_id, ts=job.ts, route=EXPLAIN_ROUTE, status=200,
            latency_ms=(time.perf_counter() - started) * 1000, model=served.name, version=served.version,
            arm=job.arm, rows=job.batch.rows, features=served.feature_names, attributions=importance,
        )  # fmt: skip
        if self.sink.offer(record):  # a backed-up log sheds explanations, never waits on them
            self.explained += 1
        else:
            self._shed(served.name)
