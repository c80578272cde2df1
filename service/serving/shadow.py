"""Shadow mode: the challenger sees the champion's inputs off the response path, never answering.

The handler, once the champion has answered, offers a job to a bounded
queue and returns: a full queue sheds the job (counted in
``modelgate_shadow_shed_total``), it never waits. One thread per worker
runs the challenger on the jobs and queues one prediction-log record per
job under the request's id, with arm ``shadow``: its prediction, or the
error it raised. So a challenger that fails, is slow or hangs changes
nothing the client sees; a slow one only sheds more of its shadow traffic.

It also keeps off the champion's cores, in five ways:

- a budget: after a job that took ``t`` seconds the thread rests
  ``t * (1 - budget) / budget``, so the challenger never takes more than
  ``budget`` of the time (a tenth by default); jobs that arrive meanwhile
  queue, then are shed;
- a rate: at most ``max_rate`` jobs a second (100 by default), however fast
  the challenger: each mirrored request also costs the worker Python work
  (its record, the log's second row), which the budget does not see, and a
  challenger that fails at once (a refusal, an exception) would otherwise
  be mirrored every request;
- a deadline: a run longer than ``timeout`` seconds is stopped (ONNX
  Runtime's terminate flag, checked between nodes and loop iterations) and
  logged with status 504, so a hung challenger costs one timeout, then rests;
- one thread: the challenger runs on a session of its own with one intra-op
  thread (the champion's sessions share the worker's cores out), so a slow
  run occupies one core, not all of them;
- the lowest CPU priority: on Linux the thread (and so that session's
  computation, which runs on it) is niced to 19, so when the champion's
  threads want a core the scheduler gives it to them.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import onnxruntime as ort
import structlog

from monitoring.records import RequestRecord
from registry.aliases import Arm, LogPolicy
from service.errors import ServiceError
from service.serving.pool import ServedVersion
from service.serving.validation import Batch

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
    #: what the log keeps of the challenger's record (the model's policy)
    policy: LogPolicy | None = None


#: niceness of the shadow thread: the lowest priority
LOWEST_PRIORITY = 19


def emptied(jobs: queue.Queue[Any]) -> None:
    """Drop every job still queued (a background thread's, at its stop)."""
    while True:
        try:
            jobs.get_nowait()
        except queue.Empty:
            return


def lower_priority() -> None:
    """Nice the calling thread (Linux: niceness is per thread) to the lowest priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_PRIORITY)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed: run at the usual priority
        log.warning("shadow.priority_unchanged", error=str(exc))


class ShadowRunner:
    """``background(served)``: the version on a session for the shadow thread (one intra-op thread)."""

    def __init__(
        self,
        sink: EventSink,
        capacity: int = 256,
        budget: float = 0.1,
        timeout: float = 1.0,
        background: Callable[[ServedVersion], ServedVersion] | None = None,
        max_rate: float = 100.0,
    ) -> None:
        if not 0.0 < budget <= 1.0:
            raise ValueError(f"shadow budget {budget}: a share of the time, above 0 and at most 1")
        if timeout <= 0:
            raise ValueError(f"shadow timeout {timeout}: seconds, above 0")
        if max_rate < 0:
            raise ValueError(f"shadow max rate {max_rate}: jobs a second, 0 (no cap) or more")
        self.sink = sink
        self.budget = budget
        self.timeout = timeout
        self.max_rate = max_rate
        self._background = background
        #: the last challenger seen and its background twin; one at a time, so an old one is let go
        self._twin: tuple[ServedVersion, ServedVersion] | None = None
        self._jobs: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        #: when the run in hand started, and its options (whose terminate flag stops it)
        self._running: tuple[float, ort.RunOptions] | None = None
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="shadow-watchdog", daemon=True)
        self.shed = 0
        #: set before ``start`` to count what is shed
        self.metrics: GatewayMetrics | None = None
        #: set to explain the challenger's predictions in the loop: (request id, ts, arm, version, batch)
        self.explain: Callable[[str, float, Arm, ServedVersion, Batch], None] | None = None

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

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
        emptied(self._jobs)
        self._jobs.put(None)
        self._stopping.set()
        running = self._running
        if running is not None:  # a stop does not wait out a slow challenger
            running[1].terminate = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("shadow.stop_timed_out", timeout_s=timeout)

    def _watch(self) -> None:
        """Stop the run in hand once it is past the deadline (ticks of a quarter of the timeout)."""
        while not self._stopping.wait(min(0.25, self.timeout / 4)):
            running = self._running
            if running is not None and time.perf_counter() - running[0] > self.timeout:
                running[1].terminate = True

    def _run(self) -> None:
        lower_priority()
        rest = (1.0 - self.budget) / self.budget
        interval = 1.0 / self.max_rate if self.max_rate else 0.0
        while (job := self._jobs.get()) is not None:
            started = time.perf_counter()
            record = self.mirror(job)
            if not self.sink.offer(record):  # the log's queue is full: shed, not waited for
                self.shed += 1
                if self.metrics is not None:
                    self.metrics.shadow_shed.labels(job.challenger.name).inc()
            took = time.perf_counter() - started
            pause = max(took * rest, interval - took)
            if pause > 0:  # after the record is logged: a long rest must not hold it back
                self._rest(pause)

    def _rest(self, seconds: float) -> None:
        """Sleep, cut short by a stop."""
        self._stopping.wait(seconds)

    def _runner(self, served: ServedVersion) -> ServedVersion:
        """The version on the shadow thread's own session, built on first use of each challenger."""
        if self._background is None:
            return served
        if self._twin is None or self._twin[0] is not served:
            self._twin = None  # the previous twin's session is let go before the next one is built
            self._twin = (served, self._background(served))
        return self._twin[1]

    def mirror(self, job: ShadowJob) -> RequestRecord:
        """Run the challenger on one job; its record whether it predicted, refused, failed or timed out."""
        served = job.challenger
        batch, prediction, status, error = job.batch, None, 200, None
        options = ort.RunOptions()
        options.log_severity_level = 4  # a stopped run is reported here, not as an ORT error line
        started = time.perf_counter()
        try:
            runner = self._runner(served)
            started = time.perf_counter()  # a session built for the first job is not its latency
            if batch is None:
                batch = job.parse(served)
            self._running = (started, options)
            try:
                prediction = runner.predict(batch, options)
            finally:
                self._running = None
        except ServiceError as exc:  # the inputs do not fit the challenger's schema
            status, error = exc.status, exc.message
        except Exception as exc:  # the challenger failed or was stopped: logged, never answered
            if options.terminate and self._stopping.is_set():
                status, error = 503, "stopped: the gateway is shutting down"
            elif options.terminate:
                status, error = 504, f"stopped after the shadow timeout of {self.timeout:g} s"
            else:
                status, error = 500, f"{type(exc).__name__}: {exc}"
        if self.explain is not None and prediction is not None and batch is not None:
            self.explain(job.request_id, job.ts, "shadow", served, batch)
        return RequestRecord(
            request_id=job.request_id, ts=job.ts, route=job.route, status=status,
            latency_ms=(time.perf_counter() - started) * 1000, model=served.name, version=served.version,
            arm="shadow", rows=batch.rows if batch else 0, features=served.feature_names,
            matrix=batch.matrix if batch else None, columns=batch.columns if batch else None,
            prediction=prediction, error=error, classes=served.manifest.output.classes,
            checker=served.checker if prediction is not None else None, policy=job.policy,
        )  # fmt: skip
