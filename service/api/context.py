"""What a route handler works with: one process's ``Context`` (settings, the model pool, the
prediction pipeline, monitoring, the admin token), built once by the app and passed to every
handler as its first argument."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request

from registry.onnx_model import threads_per_worker
from registry.store import Registry
from service.api.admin import Admin, check_bearer
from service.api.http import BodyLimits, Separators
from service.errors import ModelRequired, NotFound
from service.explain.loop import ExplainRunner
from service.explain.versions import Explainers
from service.serving.observability import Observability
from service.serving.pipeline import Pipeline
from service.serving.pool import ModelPool, ServedVersion
from service.serving.validation import separators_allowed
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics


class Context:
    """One process's gateway as its routes see it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = ModelPool(
            Registry(settings.registry),
            threads=threads_per_worker(settings.workers),
            warmup_rows=settings.warmup_rows,
            warmup_timeout=settings.warmup_timeout,
            pinned_cached=settings.pinned_versions_cached,
            providers=settings.execution_providers,
        )
        #: None when MODELGATE_MONITORING=false: no record, no plausibility check, no metrics
        self.observability = Observability(settings, self.pool) if settings.monitoring else None
        self.pipeline = Pipeline(settings, self.pool, self.observability)
        self.admin = Admin(settings.admin_token, self.pool.registry)
        self.predict_token = settings.predict_token.encode()
        self.body_limits = BodyLimits(settings.max_body_bytes, settings.body_timeout)
        self.explainers = Explainers(self.pool.registry)
        #: explanations in the loop (MODELGATE_EXPLAIN_RATE), where the log takes them
        self.explaining: ExplainRunner | None = None
        if self.observability is not None and settings.explain_rate > 0:
            sink, registry, rate = self.observability.sink, self.pool.registry, settings.explain_rate
            self.explaining = ExplainRunner(sink, registry, rate, self.pool.single_threaded)
            self.pipeline.explain = self.observability.shadow.explain = self.explaining.offer

    @property
    def metrics(self) -> GatewayMetrics | None:
        """Built at start-up, in the worker: see monitoring.metrics on why not at import."""
        return self.pipeline.metrics

    @property
    def observed(self) -> Observability:
        """The monitoring parts, for the routes that need them; 404 when monitoring is off."""
        if self.observability is None:
            raise NotFound("monitoring is off in this gateway (MODELGATE_MONITORING=false)")
        return self.observability

    def authorize(self, request: Request) -> None:
        """The prediction and feedback routes' own token, when one is set."""
        if self.predict_token:
            check_bearer(request, self.predict_token, "prediction routes")

    def only_model(self) -> str:
        names = self.pool.names
        if len(names) != 1:
            raise ModelRequired(
                f"model: required, this gateway serves {len(names)} models: {', '.join(names)}", field="model"
            )
        return names[0]

    def separators(self, name: str | None, served: ServedVersion | None = None) -> Separators:
        """What a prediction body for ``name`` (any model served, when None) may hold: what the
        widest of its versions' rows need, ``max_batch_rows`` of them."""
        versions = [served] if served is not None else self.pool.loaded(name)
        width = max((version.values_per_row for version in versions), default=1)
        rows = self.settings.max_batch_rows
        whom = f"{name}'s" if name is not None else "the widest model's"
        return Separators(separators_allowed(width, rows), f"{rows:,} rows of {whom} {width} values")

    def readiness(self) -> dict[str, Any]:
        """Whether this process can serve: some model's champion is loaded and, with monitoring,
        the prediction log takes records (a backed-up log sheds requests with 503)."""
        answer: dict[str, Any] = {"ready": self.pool.ready(), "models": self.pool.states()}
        if self.observability is not None:
            sink = self.observability.sink
            answer["log"] = {"accepting": sink.accepting, "queued": sink.depth, "capacity": sink.capacity,
                             "shed": sink.shed, "lost": sink.lost}  # fmt: skip
            answer["ready"] = answer["ready"] and sink.accepting
        return answer

    async def start(self) -> list[asyncio.Task[None]]:
        """Load the registry's models, start monitoring, and the tasks that run beside the routes."""
        await anyio.to_thread.run_sync(self.pool.refresh)
        observability = self.observability
        tasks = [asyncio.create_task(self._poll_registry())]
        if observability is not None:
            # imported here, in the worker, after BentoML set PROMETHEUS_MULTIPROC_DIR (monitoring.metrics)
            from prometheus_client import CollectorRegistry

            from monitoring.metrics import GatewayMetrics

            self.pipeline.metrics = GatewayMetrics(CollectorRegistry())
            observability.start(self.pipeline.metrics)
            if self.explaining is not None:
                self.explaining.metrics = self.pipeline.metrics
                self.explaining.start()
            tasks.append(asyncio.create_task(self._report_log_depth(observability)))
        return tasks

    async def stop(self, tasks: list[asyncio.Task[None]]) -> None:
        for task in tasks:
            task.cancel()
        if self.explaining is not None:  # its records into the log's queue before that closes
            await anyio.to_thread.run_sync(self.explaining.stop)
        if self.observability is not None:
            await anyio.to_thread.run_sync(self.observability.stop)

    async def _poll_registry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            await anyio.to_thread.run_sync(self.pool.refresh)

    async def _report_log_depth(self, observability: Observability) -> None:
        """The log queue's depth gauge, every second, from the event loop: the writer thread that
        also sets it may be blocked on a writer that cannot write."""
        while True:
            observability.sink.report_depth()
            await asyncio.sleep(1.0)
