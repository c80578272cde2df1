"""The gateway's HTTP API as a Starlette app: ``/predict``, the Open Inference Protocol, status.

BentoML mounts this app (``service.gateway``); it also runs on its own under
any ASGI server, which is how the unit tests drive it.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.metadata
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import orjson
import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from monitoring.notify import RECENT_SECONDS, alert_json
from monitoring.plausibility import rule_parts
from monitoring.records import RequestRecord
from registry.onnx_model import Prediction, threads_per_worker
from registry.store import Registry
from service import binary, openapi, responses
from service.admin import Admin, check_bearer, promotion, reason, routing_policy
from service.batching import Batcher, BatchPolicy
from service.errors import (
    Implausible,
    MalformedRequest,
    MethodNotAllowed,
    ModelRequired,
    NotFound,
    PayloadTooLarge,
    ServiceError,
)
from service.observability import Observability
from service.pool import ModelPool, ServedVersion
from service.routing import to_challenger
from service.runtime import tune_garbage_collector
from service.settings import Settings
from service.shadow import ShadowJob
from service.validation import Batch, instances_to_batch, tensors_to_batch

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

log = structlog.get_logger("modelgate.app")

PREDICT_FIELDS = ("model", "version", "inputs", "routing_key")
CATCH_ALL = "/{path:path}"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
VERSION = importlib.metadata.version("modelgate")
#: Swagger UI on /openapi.json, from the files swagger-ui-bundle ships (no CDN: gateways run offline)
DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>modelgate API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


class JSONResponse(Response):
    """orjson-rendered JSON; numpy arrays are serialised natively (v2 tensor data)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` when it is sane, else a new one; the same for the whole request."""
    rid: str | None = request.scope.get("modelgate.request_id")
    if rid is None:
        given = request.headers.get("x-request-id")
        rid = given if given and REQUEST_ID.match(given) else secrets.token_hex(16)
        request.scope["modelgate.request_id"] = rid
    return rid


async def _read_body(request: Request, limit: int) -> bytes:
    """The body's bytes; 413 past ``limit``."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_object(data: bytes) -> dict[str, Any]:
    """``data`` as a JSON object; 400 when it is not JSON, or not an object."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data[exc.pos : exc.pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
            raise MalformedRequest(
                f"request body is not valid JSON: NaN and Infinity are not JSON numbers "
                f"(at char {exc.pos}); send null for a missing value"
            ) from None
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest(f"request body: expected a JSON object, got {type(body).__name__}")
    return body


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; 413 past ``limit`` bytes, 400 when it is not JSON."""
    if binary.HEADER in request.headers:
        raise MalformedRequest(
            "binary tensor data (Inference-Header-Content-Length) is accepted by "
            "/v2/models/{name}/infer only; send JSON here"
        )
    return _json_object(await _read_body(request, limit))


async def _infer_body(request: Request, limit: int) -> dict[str, Any]:
    """A v2 inference request, JSON or with binary tensor data after its JSON header."""
    data = await _read_body(request, limit)
    raw = request.headers.get(binary.HEADER)
    if raw is None:
        return _json_object(data)
    length = binary.header_length(raw, len(data))
    body = _json_object(data[:length])
    binary.attach_inputs(body, data, length)
    return body


def routing_key(request: Request, given: Any) -> str | None:
    """The ``X-Routing-Key`` header, else the key in the body: the same key, the same arm."""
    key = request.headers.get("x-routing-key")
    if key is not None or given is None:
        return key
    if not isinstance(given, str) or not given:
        raise MalformedRequest("routing_key: expected a non-empty string", field="routing_key")
    return given


def _model_and_version(request: Request) -> tuple[str, int | None]:
    """``{name}`` and the optional ``{version}`` of a v2 model route."""
    params = request.path_params
    raw = params.get("version")
    if raw is not None and not raw.isdigit():
        raise NotFound(f"version {raw!r} is not a version number", field="version")
    return params["name"], None if raw is None else int(raw)


@dataclass
class Exchange:
    """What a handler learned about its request, for the request's record in the prediction log."""

    served: ServedVersion | None = None
    arm: str = "champion"
    batch: Batch | None = None
    prediction: Prediction | None = None
    #: plausibility, when checked on the request path (a rule that refuses is configured)
    flags: dict[str, int] | None = None

    def resolved(self, served: ServedVersion, arm: str) -> ServedVersion:
        self.served = served
        self.arm = arm
        return served


Handler = Callable[["Gateway", Request, Exchange], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def recorded(route: str) -> Callable[[Handler], Callable[[Gateway, Request], Awaitable[Response]]]:
    """Time the handler and queue one record of the request, answered, refused or failed."""

    def decorate(handler: Handler) -> Callable[[Gateway, Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def observed(self: Gateway, request: Request) -> Response:
            if self.observability is None:
                return await handler(self, request, Exchange())
            ts, started = time.time(), time.perf_counter()
            exchange = Exchange()
            try:
                response = await handler(self, request, exchange)
            except ServiceError as exc:
                await self.record(request, route, exchange, ts, started, exc.status, exc.message)
                raise
            except Exception as exc:
                await self.record(request, route, exchange, ts, started, 500, f"{type(exc).__name__}: {exc}")
                raise
            await self.record(request, route, exchange, ts, started, 200, None)
            return response

        return observed

    return decorate


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
        #: built at start-up, in the worker: see monitoring.metrics on why not at import
        self.metrics: GatewayMetrics | None = None

    @property
    def observed(self) -> Observability:
        """The monitoring parts, for the routes that need them; 404 when monitoring is off."""
        if self.observability is None:
            raise NotFound("monitoring is off in this gateway (MODELGATE_MONITORING=false)")
        return self.observability

    async def record(
        self,
        request: Request,
        route: str,
        exchange: Exchange,
        ts: float,
        started: float,
        status: int,
        error: str | None,
    ) -> None:
        served, batch = exchange.served, exchange.batch
        latency = time.perf_counter() - started
        assert self.observability is not None
        await self.observability.sink.put(
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
            )
        )  # fmt: skip

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

    async def _served(self, name: str, version: int | None) -> ServedVersion:
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
            return exchange.resolved(await self._served(name, version), "pinned")
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
        body = await json_body(request, self.settings.max_body_bytes)
        unknown = [key for key in body if key not in PREDICT_FIELDS]
        if unknown:
            raise MalformedRequest(
                f"{unknown[0]}: unknown field; expected {', '.join(PREDICT_FIELDS)}", field=unknown[0]
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
            headers={"x-request-id": rid, "x-modelgate-arm": exchange.arm},
        )

    @recorded("v2")
    async def infer(self, request: Request, exchange: Exchange) -> Response:
        self.authorize(request)
        name, version = _model_and_version(request)
        await self._served(name, version)  # an unknown model or version: 404 before the body is read
        body = await _infer_body(request, self.settings.max_body_bytes)
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
            "id": str(body.get("id") or rid),
            "outputs": responses.infer_outputs(served, prediction, outputs),
            "parameters": {"arm": exchange.arm},
        }
        headers = {"x-request-id": rid, "x-modelgate-arm": exchange.arm}
        if not in_binary:
            return JSONResponse(answer, headers=headers)
        content, length = binary.encode(answer, in_binary)
        headers[binary.HEADER] = str(length)
        return Response(content, media_type="application/octet-stream", headers=headers)

    async def set_routing(self, request: Request) -> Response:
        actor = self.admin.actor(request)
        name = request.path_params["name"]
        body = await json_body(request, self.settings.max_body_bytes)
        policy, why = routing_policy(body), reason(body)
        registry = self.pool.registry
        entry = await self.admin.run(
            name, lambda: registry.set_routing(name, policy, reason=why, actor=actor)
        )
        return JSONResponse(entry)

    async def promote(self, request: Request) -> Response:
        """Point an alias at a version; by default the challenger becomes champion."""
        actor = self.admin.actor(request)
        name = request.path_params["name"]
        body = await json_body(request, self.settings.max_body_bytes)
        (version, alias), why = promotion(body), reason(body)
        registry = self.pool.registry
        entry = await self.admin.run(
            name,
            lambda: registry.promote(name, registry.resolve(name, version), alias, reason=why, actor=actor),
        )
        return JSONResponse(entry)

    async def rollback(self, request: Request) -> Response:
        actor = self.admin.actor(request)
        name = request.path_params["name"]
        why = reason(await json_body(request, self.settings.max_body_bytes))
        registry = self.pool.registry
        entry = await self.admin.run(name, lambda: registry.rollback(name, reason=why, actor=actor))
        return JSONResponse(entry)

    async def feedback(self, request: Request) -> Response:
        self.authorize(request)
        body = await json_body(request, self.settings.max_body_bytes)
        status, answer = await self.observed.feedback.take(body)
        answer["request_id"] = request_id(request)
        return JSONResponse(answer, status_code=status, headers={"x-request-id": answer["request_id"]})

    async def drift(self, request: Request) -> Response:
        """The monitor's latest report on a model: drift per feature and output, plausibility rates."""
        name = request.query_params.get("model") or self.only_model()
        self.pool.slots(name)  # 404 for a model this gateway does not serve
        saved = await anyio.to_thread.run_sync(self.observed.log.report, name)
        if saved is None:
            return JSONResponse({"model": name, "status": "no_traffic", "features": [], "plausibility": []})
        return Response(saved[1], media_type="application/json")

    async def compare(self, request: Request) -> Response:
        """Champion against challenger, from the monitor's latest report on the model."""
        name = request.query_params.get("model") or self.only_model()
        self.pool.slots(name)  # 404 for a model this gateway does not serve
        saved = await anyio.to_thread.run_sync(self.observed.log.report, name)
        comparison = orjson.loads(saved[1]).get("comparison") if saved is not None else None
        if saved is None or comparison is None:
            return JSONResponse({"model": name, "status": "no_challenger_traffic"})
        return JSONResponse({"model": name, "status": "ok", "computed_at": saved[0], **comparison})

    async def alerts(self, request: Request) -> Response:
        """Alerts firing and pending now, and those resolved in the last day."""
        alerts = await anyio.to_thread.run_sync(self.observed.log.alerts, time.time() - RECENT_SECONDS)
        grouped: dict[str, list[dict[str, Any]]] = {"firing": [], "pending": [], "resolved": []}
        for alert in alerts:
            grouped[alert.status].append({**alert_json(alert), "status": alert.status, "value": alert.value})
        return JSONResponse(grouped)

    def only_model(self) -> str:
        names = self.pool.names
        if len(names) != 1:
            raise ModelRequired(
                f"model: required, this gateway serves {len(names)} models: {', '.join(names)}", field="model"
            )
        return names[0]

    async def model_metadata(self, request: Request) -> Response:
        served = await self._served(*_model_and_version(request))
        versions = self.pool.registry.versions(served.name)
        return JSONResponse(responses.model_metadata(served, versions))

    async def model_ready(self, request: Request) -> Response:
        served = await self._served(*_model_and_version(request))  # 404 / 503 when not servable
        return JSONResponse({"name": served.name, "version": str(served.version), "ready": True})

    async def index(self, request: Request) -> Response:
        return JSONResponse(
            {
                "name": "modelgate",
                "version": VERSION,
                "models": self.pool.names,
                "routes": [
                    "POST /predict",
                    "POST /feedback",
                    "GET /models",
                    "GET /monitoring/drift?model=NAME",
                    "GET /monitoring/alerts",
                    "GET /monitoring/compare?model=NAME",
                    "PUT /admin/models/{name}/routing (bearer token)",
                    "POST /admin/models/{name}/promote (bearer token)",
                    "POST /admin/models/{name}/rollback (bearer token)",
                    "GET /livez",
                    "GET /readyz",
                    "GET /v1/models",
                    "GET /v1/models/{name}",
                    "POST /v1/models/{name}:predict",
                    "POST /invocations[?model=NAME]",
                    "GET /ping",
                    "GET /health",
                    "GET /v2/health/live",
                    "GET /v2/health/ready",
                    "GET /v2/models/{name}[/versions/{version}]",
                    "GET /v2/models/{name}[/versions/{version}]/ready",
                    "POST /v2/models/{name}[/versions/{version}]/infer",
                    "GET /metrics",
                    "GET /openapi.json",
                    "GET /docs",
                ],
            }
        )

    async def not_found(self, request: Request) -> Response:
        """The catch-all route: 405 when another route has this path, else 404."""
        allowed = {
            method
            for route in request.app.routes
            if isinstance(route, Route) and route.path != CATCH_ALL
            and route.matches(request.scope)[0] == Match.PARTIAL
            for method in route.methods or ()
        }  # fmt: skip
        if allowed:
            raise MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}", allow=tuple(sorted(allowed))
            )
        raise NotFound(f"no route {request.method} {request.url.path}; GET / lists the routes")

    async def openapi(self, request: Request) -> Response:
        """The OpenAPI document, from the schemas of the champions served now."""
        champions = [slots.champion for slots in map(self.pool.slots, self.pool.names) if slots.champion]
        return JSONResponse(openapi.document(champions, VERSION, self.settings.max_batch_rows))

    async def docs(self, request: Request) -> Response:
        return HTMLResponse(DOCS_PAGE)

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": "modelgate", "version": VERSION, "extensions": ["binary_tensor_data"]})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def metrics_text(self, request: Request) -> Response:
        """Prometheus text of every process of the deployment (workers, log writers, the monitor)
        when they share a multiprocess directory, as under ``modelgate serve``; else this process's."""
        body = await anyio.to_thread.run_sync(self._exposition)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    def _exposition(self) -> bytes:
        # imported here: prometheus-client picks its value class at import, from the environment
        from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if directory:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=directory)
        else:
            registry = self.metrics.registry if self.metrics is not None else REGISTRY
        return generate_latest(registry)

    async def ready(self, request: Request) -> Response:
        ready = self.pool.ready()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def models(self, request: Request) -> Response:
        """What this process serves, per model and alias, with any load failure."""
        listing = {}
        for name in self.pool.names:
            slots = self.pool.slots(name)
            listing[name] = {
                "champion": slots.champion.version if slots.champion else None,
                "challenger": slots.challenger.version if slots.challenger else None,
                "routing": {"mode": slots.routing.mode, "challenger_weight": slots.routing.challenger_weight},
                "errors": slots.errors,
            }
        return JSONResponse({"models": listing, "refreshed_at": self.pool.refreshed_at})

    async def poll_registry(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            await anyio.to_thread.run_sync(self.pool.refresh)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    rid = request_id(request)
    body: dict[str, Any] = {"error": exc.message, "request_id": rid}
    if exc.field:
        body["field"] = exc.field
    if exc.details:
        body["details"] = [{"field": d.field, "message": d.message} for d in exc.details]
    log.info("request.refused", path=request.url.path, status=exc.status, error=exc.message, request_id=rid)
    headers = {"x-request-id": rid}
    if isinstance(exc, MethodNotAllowed):
        headers["allow"] = ", ".join(exc.allow)
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (a method no route takes, such as OPTIONS), in our JSON shape."""
    assert isinstance(exc, HTTPException)
    rid = request_id(request)
    return JSONResponse(
        {"error": f"{exc.detail}: {request.method} {request.url.path}", "request_id": rid},
        status_code=exc.status_code,
        headers={**(exc.headers or {}), "x-request-id": rid},
    )


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    rid = request_id(request)
    log.exception("request.failed", path=request.url.path, request_id=rid)
    return JSONResponse(
        {"error": f"internal error ({type(exc).__name__}); see the gateway log", "request_id": rid},
        status_code=500,
    )


def create_app(settings: Settings) -> Starlette:
    # the other protocols' handlers are built on this module's Gateway, so imported once it exists
    from service import protocols

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
        poller = asyncio.create_task(gateway.poll_registry())
        tune_garbage_collector()
        yield
        poller.cancel()
        if observability is not None:
            await anyio.to_thread.run_sync(observability.stop)

    routes = [
        Route("/predict", gateway.predict, methods=["POST"]),
        Route("/feedback", gateway.feedback, methods=["POST"]),
        Route("/models", gateway.models, methods=["GET"]),
        Route("/monitoring/drift", gateway.drift, methods=["GET"]),
        Route("/monitoring/alerts", gateway.alerts, methods=["GET"]),
        Route("/monitoring/compare", gateway.compare, methods=["GET"]),
        Route("/admin/models/{name}/routing", gateway.set_routing, methods=["PUT"]),
        Route("/admin/models/{name}/promote", gateway.promote, methods=["POST"]),
        Route("/admin/models/{name}/rollback", gateway.rollback, methods=["POST"]),
        # BentoML answers these three itself; under any other ASGI server the app does
        Route("/livez", gateway.live, methods=["GET"]),
        Route("/readyz", gateway.ready, methods=["GET"]),
        Route("/metrics", gateway.metrics_text, methods=["GET"]),
        Route("/v2", gateway.server_metadata, methods=["GET"]),
        Route("/v2/health/live", gateway.live, methods=["GET"]),
        Route("/v2/health/ready", gateway.ready, methods=["GET"]),
        Route("/v2/models/{name}", gateway.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/ready", gateway.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/infer", gateway.infer, methods=["POST"]),
        Route("/v2/models/{name}/versions/{version}", gateway.model_metadata, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/ready", gateway.model_ready, methods=["GET"]),
        Route("/v2/models/{name}/versions/{version}/infer", gateway.infer, methods=["POST"]),
        # KServe v1 and MLflow's scoring protocol (service.protocols)
        Route("/v1/models", bound(protocols.kserve_models), methods=["GET"]),
        # before /v1/models/{name}, whose {name} would take "cancer:predict" (and answer a POST 405)
        Route("/v1/models/{name}:predict", bound(protocols.kserve_predict), methods=["POST"]),
        Route("/v1/models/{name}", bound(protocols.kserve_model), methods=["GET"]),
        Route("/invocations", bound(protocols.mlflow_invocations), methods=["POST"]),
        Route("/ping", bound(protocols.ping), methods=["GET"]),
        Route("/health", bound(protocols.ping), methods=["GET"]),
        Route("/openapi.json", gateway.openapi, methods=["GET"]),
        Route("/docs", gateway.docs, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs"),
        Route("/", gateway.index, methods=["GET"]),
        # BentoML answers paths no mounted route claims with plain text; claim them all, in JSON
        Route(CATCH_ALL, gateway.not_found, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
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
