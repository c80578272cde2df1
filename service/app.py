"""The gateway's HTTP API as a Starlette app: the prediction path (``/predict``, the Open Inference
Protocol, feedback) and the routes of every other module, wired together in ``create_app``.

``modelgate serve`` runs this app on uvicorn (``service.server``), BentoML mounts
it (``service.gateway``), and the unit tests drive it in-process. Other
servers' formats live in ``service.protocols``, status and metadata routes in
``service.status``, the monitor's findings in ``service.reports``, the control
plane in ``service.control``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from monitoring.plausibility import rule_parts
from monitoring.records import RequestRecord
from registry.onnx_model import Prediction, threads_per_worker
from registry.store import Registry
from service import binary, control, protocols, reports, responses, status
from service.admin import Admin, check_bearer
from service.batching import Batcher, BatchPolicy
from service.context import Exchange
from service.errors import (
    MAX_FIELD_CHARS,
    QUOTED_CHARS,
    Implausible,
    MalformedRequest,
    MethodNotAllowed,
    ModelRequired,
    NotFound,
    Overloaded,
    ServiceError,
    clipped,
    quoted,
)
from service.http import (
    BodyLimits,
    JSONResponse,
    Separators,
    infer_body,
    json_body,
    model_and_version,
    request_id,
    routing_key,
)
from service.observability import Observability
from service.pool import ModelPool, ServedVersion
from service.recording import Endpoint, recorded
from service.routing import to_challenger
from service.runtime import tune_garbage_collector
from service.settings import Settings
from service.shadow import ShadowJob
from service.validation import Batch, instances_to_batch, separators_allowed, tensors_to_batch

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

log = structlog.get_logger("modelgate.app")

PREDICT_FIELDS = ("model", "version", "inputs", "routing_key")


class Gateway:
    """Request handlers over one process's model pool, recording every prediction request."""

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
        self.rejected_rules = settings.rejected_rules
        self.batch_policies = settings.batch_policies
        self.batchers: dict[tuple[str, int], Batcher] = {}
        self.admin = Admin(settings.admin_token, self.pool.registry)
        self.predict_token = settings.predict_token.encode()
        self.body_limits = BodyLimits(settings.max_body_bytes, settings.body_timeout)
        #: built at start-up, in the worker: see monitoring.metrics on why not at import
        self.metrics: GatewayMetrics | None = None

    @property
    def observed(self) -> Observability:
        """The monitoring parts, for the routes that need them; 404 when monitoring is off."""
        if self.observability is None:
            raise NotFound("monitoring is off in this gateway (MODELGATE_MONITORING=false)")
        return self.observability

    def record(
        self,
        request: Request,
        route: str,
        exchange: Exchange,
        ts: float,
        started: float,
        status: int,
        error: str | None,
    ) -> asyncio.Future[bool] | None:
        """Queue the request's record; with ``MODELGATE_LOG_ACK=committed``, an answered request's
        record comes with a future resolved once it is committed, which its answer waits for."""
        served, batch = exchange.served, exchange.batch
        durable = self.settings.log_ack == "committed" and status == 200
        committed = asyncio.get_running_loop().create_future() if durable else None
        latency = time.perf_counter() - started
        assert self.observability is not None
        self.observability.sink.put(
            RequestRecord(
                request_id=request_id(request),
                ts=ts,
                route=route,
                status=status,
                latency_ms=latency * 1000,
                model=served.name if served else None,
                version=served.version if served else None,
                arm=exchange.arm,
                rows=batch.rows if batch else 0,
                features=served.feature_names if served else (),
                matrix=batch.matrix if batch else None,
                columns=batch.columns if batch else None,
                prediction=exchange.prediction,
                error=error,
                flags=exchange.flags or {},
                classes=served.manifest.output.classes if served else (),
                checker=served.checker if served and exchange.flags is None else None,
            ),
            committed,
        )  # fmt: skip
        return committed

    async def run(self, exchange: Exchange) -> Prediction:
        """Predict. Plausibility is checked here only when a rule refuses requests (422 when one
        is broken); otherwise the log writer checks, off the request path."""
        served, batch = exchange.served, exchange.batch
        assert served is not None and batch is not None
        policy = self.batch_policies.get(served.name)
        if policy is None:
            prediction = await self._predict(served, batch)
        else:
            prediction = await self._batcher(served, policy).predict(batch)
        exchange.prediction = prediction
        if self.observability is None or not self.rejected_rules:
            return prediction  # the log writer checks it, off the request path
        exchange.flags = served.checker.check(batch.matrix, batch.columns, prediction)
        rejected = [key for key in exchange.flags if rule_parts(key)[0] in self.rejected_rules]
        if rejected:
            broken = ", ".join(f"{key} ({exchange.flags[key]} rows)" for key in rejected)
            raise Implausible(f"implausible, refused by policy: {broken}", field=rejected[0])
        return prediction

    async def _predict(self, served: ServedVersion, batch: Batch) -> Prediction:
        """On the event loop when the version should be done within ``inline_ms``, else in a thread."""
        if batch.rows * served.row_ms <= self.settings.inline_ms:
            return served.predict(batch)
        return await anyio.to_thread.run_sync(served.predict, batch)

    def _batcher(self, served: ServedVersion, policy: BatchPolicy) -> Batcher:
        """The version's batcher; a new one when the version was loaded again."""
        key = (served.name, served.version)
        batcher = self.batchers.get(key)
        if batcher is None or batcher.served is not served:
            metrics = self.metrics
            observe = None if metrics is None else metrics.batch_rows.labels(served.name).observe
            batcher = self.batchers[key] = Batcher(served, policy, self._predict, observe)
        return batcher

    async def predict_batch(
        self, request: Request, exchange: Exchange, route: str, parse: Callable[[ServedVersion], Batch]
    ) -> Prediction:
        """Parse the request's inputs for the version it resolved (``parse``), predict, and in shadow
        mode offer them to the challenger (parsed for its schema)."""
        assert exchange.served is not None
        exchange.batch = parse(exchange.served)
        prediction = await self.run(exchange)
        self.mirror(request, exchange, route, parse)
        return prediction

    async def version_served(self, name: str, version: int | None) -> ServedVersion:
        """The champion, or a pinned version (loaded in a thread the first time)."""
        if version is None:
            return self.pool.champion(name)
        cached = self.pool.cached(name, version)
        if cached is not None:
            return cached
        return await anyio.to_thread.run_sync(self.pool.load_pinned, name, version)

    def _answering(self, exchange: Exchange, name: str, key: str | None) -> ServedVersion:
        """The champion, or the challenger when the model's routing policy sends this request there."""
        slots = self.pool.slots(name)
        champion = self.pool.champion(name)
        if slots.challenger is not None and to_challenger(slots.routing, name, key):
            return exchange.resolved(slots.challenger, "challenger")
        return exchange.resolved(champion, "champion")

    async def resolve(
        self, exchange: Exchange, name: str, version: int | None, key: str | None
    ) -> ServedVersion:
        """A pinned version answers as pinned, bypassing any split."""
        if version is not None:
            return exchange.resolved(await self.version_served(name, version), "pinned")
        return self._answering(exchange, name, key)

    def mirror(
        self, request: Request, exchange: Exchange, route: str, parse: Callable[[ServedVersion], Batch]
    ) -> None:
        """In shadow mode, offer the challenger the champion's inputs, off the response path."""
        served = exchange.served
        if self.observability is None or served is None or exchange.arm != "champion":
            return
        slots = self.pool.slots(served.name)
        challenger = slots.challenger
        if slots.routing.mode != "shadow" or challenger is None:
            return
        same_schema = challenger.manifest.inputs == served.manifest.inputs
        self.observability.shadow.offer(
            ShadowJob(request_id(request), time.time(), route, challenger,
                      exchange.batch if same_schema else None, parse)
        )  # fmt: skip

    def authorize(self, request: Request) -> None:
        """The prediction and feedback routes' own token, when one is set."""
        if self.predict_token:
            check_bearer(request, self.predict_token, "prediction routes")

    @recorded("predict")
    async def predict(self, request: Request, exchange: Exchange) -> Response:
        self.authorize(request)
        body = await json_body(request, self.body_limits, self.separators(None))
        unknown = [key for key in body if key not in PREDICT_FIELDS]
        if unknown:
            raise MalformedRequest(
                f"{clipped(unknown[0], QUOTED_CHARS)}: unknown field; expected {', '.join(PREDICT_FIELDS)}",
                field=unknown[0],
            )
        name = body.get("model")
        if name is None:
            name = self.only_model()
        elif not isinstance(name, str):
            raise MalformedRequest("model: expected a model name (string)", field="model")
        version = body.get("version")
        if version is not None and type(version) is not int:
            raise MalformedRequest("version: expected an integer version number", field="version")
        served = await self.resolve(exchange, name, version, routing_key(request, body.get("routing_key")))
        if "inputs" not in body:
            raise MalformedRequest(
                "inputs: required, a list of records or an object of feature: list of values", field="inputs"
            )
        inputs, limit = body["inputs"], self.settings.max_batch_rows
        prediction = await self.predict_batch(
            request,
            exchange,
            "predict",
            lambda version: instances_to_batch(inputs, version.manifest.inputs, limit),
        )
        rid = request_id(request)
        return JSONResponse(
            {
                "request_id": rid,
                "model": served.name,
                "version": served.version,
                "arm": exchange.arm,
                "predictions": responses.predictions(served, prediction),
            },
            headers=exchange.headers(rid),
        )

    @recorded("v2")
    async def infer(self, request: Request, exchange: Exchange) -> Response:
        self.authorize(request)
        name, version = model_and_version(request)
        # an unknown model or version: 404 before the body is read
        separators = self.separators(name, await self.version_served(name, version))
        body = await infer_body(request, self.body_limits, separators)
        echoed = _echoed_id(body.get("id"))
        parameters = body.get("parameters")
        given_key = parameters.get("routing_key") if isinstance(parameters, dict) else None
        served = await self.resolve(exchange, name, version, routing_key(request, given_key))
        if "inputs" not in body:
            raise MalformedRequest("inputs: required, a list of input tensors", field="inputs")
        outputs, in_binary = responses.requested_outputs(body, served)
        tensors, limit = body["inputs"], self.settings.max_batch_rows
        prediction = await self.predict_batch(
            request, exchange, "v2", lambda version: tensors_to_batch(tensors, version.manifest.inputs, limit)
        )
        rid = request_id(request)
        answer = {
            "model_name": served.name,
            "model_version": str(served.version),
            "id": echoed or rid,
            "outputs": responses.infer_outputs(served, prediction, outputs),
            "parameters": {"arm": exchange.arm},
        }
        headers = exchange.headers(rid)
        if not in_binary:
            return JSONResponse(answer, headers=headers)
        content, length = binary.encode(answer, in_binary)
        headers[binary.HEADER] = str(length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def feedback(self, request: Request) -> Response:
        self.authorize(request)
        items, rows = self.settings.max_feedback_items, self.settings.max_batch_rows
        separators = Separators(separators_allowed(4, items + rows), f"{items:,} feedback items")
        body = await json_body(request, self.body_limits, separators)
        status, answer = await self.observed.feedback.take(body)
        answer["request_id"] = request_id(request)
        return JSONResponse(answer, status_code=status, headers={"x-request-id": answer["request_id"]})

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

    def only_model(self) -> str:
        names = self.pool.names
        if len(names) != 1:
            raise ModelRequired(
                f"model: required, this gateway serves {len(names)} models: {', '.join(names)}", field="model"
            )
        return names[0]

    async def poll_registry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            await anyio.to_thread.run_sync(self.pool.refresh)

    async def report_log_depth(self, observability: Observability) -> None:
        """The log queue's depth gauge, every second, from the event loop: the writer thread that
        also sets it may be blocked on a writer that cannot write."""
        while True:
            observability.sink.report_depth()
            await asyncio.sleep(1.0)


def _echoed_id(given: Any) -> str | None:
    """A v2 request's ``id``, echoed in its answer: a string or a number, at most 256 characters."""
    if given is None or given == "":
        return None
    if not isinstance(given, str | int | float) or isinstance(given, bool) or len(str(given)) > 256:
        raise MalformedRequest(f"id: expected a string of at most 256 characters, got {quoted(str(given))}",
                               field="id")  # fmt: skip
    return str(given)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    rid = request_id(request)
    body: dict[str, Any] = {"error": exc.message, "request_id": rid}
    if exc.field:
        body["field"] = exc.field
    if exc.details:
        body["details"] = [{"field": d.field, "message": d.message} for d in exc.details]
    path = clipped(request.url.path, MAX_FIELD_CHARS)
    log.info("request.refused", path=path, status=exc.status, error=exc.message, request_id=rid)
    headers = {"x-request-id": rid}
    if isinstance(exc, MethodNotAllowed):
        headers["allow"] = ", ".join(exc.allow)
    if isinstance(exc, Overloaded):
        headers["retry-after"] = str(exc.retry_after)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a method no route takes, such as OPTIONS), in our JSON shape."""
    assert isinstance(exc, HTTPException)
    rid, path = request_id(request), clipped(request.url.path, MAX_FIELD_CHARS)
    return JSONResponse(
        {"error": f"{exc.detail}: {request.method} {path}", "request_id": rid},
        status_code=exc.status_code,
        headers={**(exc.headers or {}), "x-request-id": rid},
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    log.exception("request.failed", path=clipped(request.url.path, MAX_FIELD_CHARS), request_id=rid)
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}); see the gateway log", "request_id": rid},
        status_code=500,
    )


def create_app(settings: Settings) -> Starlette:
    gateway = Gateway(settings)

    def bound(handler: Callable[[Gateway, Request], Awaitable[Response]]) -> Endpoint:
        return functools.partial(handler, gateway)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(gateway.pool.refresh)
        log.info(
            "gateway.started",
            registry=str(settings.registry),
            models=gateway.pool.names,
            ready=gateway.pool.ready(),
        )
        observability = gateway.observability
        if observability is not None:
            # imported here, in the worker, after BentoML set PROMETHEUS_MULTIPROC_DIR (monitoring.metrics)
            from prometheus_client import CollectorRegistry

            from monitoring.metrics import GatewayMetrics

            gateway.metrics = GatewayMetrics(CollectorRegistry())
            observability.start(gateway.metrics)
        tasks = [asyncio.create_task(gateway.poll_registry())]
        if observability is not None:
            tasks.append(asyncio.create_task(gateway.report_log_depth(observability)))
        tune_garbage_collector()
        yield
        for task in tasks:
            task.cancel()
        if observability is not None:
            await anyio.to_thread.run_sync(observability.stop)

    routes = [
        Route("/predict", gateway.predict, methods=["POST"]),
        Route("/feedback", gateway.feedback, methods=["POST"]),
        Route("/models", bound(status.models), methods=["GET"]),
        Route("/monitoring/drift", bound(reports.drift), methods=["GET"]),
        Route("/monitoring/alerts", bound(reports.alerts), methods=["GET"]),
        Route("/monitoring/compare", bound(reports.compare), methods=["GET"]),
        Route("/monitoring/status", bound(status.monitoring_status), methods=["GET"]),
        Route("/admin/models/{name}/routing", bound(control.set_routing), methods=["PUT"]),
        Route("/admin/models/{name}/promote", bound(control.promote), methods=["POST"]),
        Route("/admin/models/{name}/rollback", bound(control.rollback), methods=["POST"]),
        # BentoML answers these three itself; under any other ASGI server the app does
        Route("/livez", bound(status.live), methods=["GET"]),
        Route("/readyz", bound(status.ready), methods=["GET"]),
        Route("/metrics", bound(status.metrics_text), methods=["GET"]),
        Route("/v2", bound(status.server_metadata), methods=["GET"]),
        Route("/v2/health/live", bound(status.live), methods=["GET"]),
        Route("/v2/health/ready", bound(status.ready), methods=["GET"]),
        Route("/v2/models/{name}", bound(status.model_metadata), methods=["GET"]),
        Route("/v2/models/{name}/ready", bound(status.model_ready), methods=["GET"]),
        Route("/v2/models/{name}/infer", gateway.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", bound(status.model_metadata), methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", bound(status.model_ready), methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", gateway.infer, methods=["POST"]),
        # KServe v1 and MLflow's scoring protocol (service.protocols)
        Route("/v1/models", bound(protocols.kserve_models), methods=["GET"]),
        # before /v1/models/{name}, whose {name} would take "cancer:predict" (and answer a POST 405)
        Route("/v1/models/{name}:predict", bound(protocols.kserve_predict), methods=["POST"]),
        Route("/v1/models/{name}", bound(protocols.kserve_model), methods=["GET"]),
        Route("/invocations", bound(protocols.mlflow_invocations), methods=["POST"]),
        # MLflow's health checks
        Route("/ping", bound(status.ready), methods=["GET"]),
        Route("/health", bound(status.ready), methods=["GET"]),
        Route("/openapi.json", bound(status.openapi_document), methods=["GET"]),
        Route("/docs", bound(status.docs), methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs"),
        Route("/", bound(status.index), methods=["GET"]),
        # BentoML answers paths no mounted route claims with plain text; claim them all, in JSON
        Route(status.CATCH_ALL, bound(status.not_found), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )

    app.state.gateway = gateway
    return app
