"""The route table, written once: the app mounts it, ``GET /`` lists it, and the OpenAPI document
describes each of its routes (``service.api.openapi`` adds their bodies and answers). It sits above
the protocols and the API modules whose handlers it names."""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

from service.api import control, explain, openapi, predict, reports, status, ui
from service.api.context import Context
from service.api.http import JSONResponse
from service.api.recording import Handler
from service.errors import MethodNotAllowed, NotFound
from service.protocols import kserve, mlflow, v2

VERSION = importlib.metadata.version("modelgate")
#: Swagger UI on /openapi.json, from the files swagger-ui-bundle ships (no CDN: gateways run offline)
DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>modelgate API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""
#: the path of the route that claims every path no other route does
CATCH_ALL = "/{path:path}"


@dataclass(frozen=True)
class Operation:
    """One method on one path, the handler that answers it, and what it is for."""

    method: str
    path: str
    handler: Handler
    summary: str


async def index(ctx: Context, request: Request) -> Response:
    return JSONResponse(
        {
            "name": "modelgate",
            "version": VERSION,
            "models": ctx.pool.names,
            "routes": [f"{op.method} {op.path}" for op in OPERATIONS],
        }
    )


async def openapi_document(ctx: Context, request: Request) -> Response:
    """The OpenAPI document, from the schemas of the champions served now."""
    champions = [slots.champion for slots in map(ctx.pool.slots, ctx.pool.names) if slots.champion]
    return JSONResponse(openapi.document(champions, VERSION, ctx.settings.max_batch_rows, OPERATIONS))


async def docs(ctx: Context, request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE)


async def not_found(ctx: Context, request: Request) -> Response:
    """The catch-all route: 405 when another route has this path, else 404."""
    path = request.url.path
    allowed = {
        method
        for route in request.app.routes
        if isinstance(route, Route) and route.path != CATCH_ALL
        and route.matches(request.scope)[0] == Match.PARTIAL
        for method in route.methods or ()
    }  # fmt: skip
    if allowed:
        raise MethodNotAllowed(f"{request.method} is not allowed on {path}", allow=tuple(sorted(allowed)))
    raise NotFound(f"no route {request.method} {path}; GET / lists the routes")


OPERATIONS: tuple[Operation, ...] = (
    Operation("POST", "/predict", predict.predict,
              "Predict from records, columns or rows; the champion answers unless a version is pinned"),
    Operation("POST", "/feedback", predict.feedback,
              "Ground truth and/or a business reward by request id: one item, or {feedback: [items]}"),
    Operation("POST", "/explain", explain.explain,
              "Each row's per-feature attributions: rows as /predict takes them, or a logged request_id"),
    Operation("GET", "/models", status.models, "What this process serves, per model and alias"),
    Operation("GET", "/monitoring/drift", reports.drift,
              "The monitor's latest drift and plausibility report"),
    Operation("GET", "/monitoring/compare", reports.compare, "Champion against challenger"),
    Operation("GET", "/monitoring/alerts", reports.alerts, "Alerts firing, pending and recently resolved"),
    Operation("GET", "/monitoring/status", status.monitoring_status,
              "Which replica's monitor leads; this process's log queue"),
    # the pages: read-only views for people (service.ui), and each version's model card
    Operation("GET", "/ui", ui.models, "The models served: versions, routing, traffic, drift, alerts firing"),
    Operation("GET", "/ui/models/{name}", ui.drift,
              "A model's drift: each input and output, reference against window, test and verdict"),
    Operation("GET", "/ui/models/{name}/quality", ui.quality,
              "A model's live quality per version and segment, the label-free estimate, the gate's evidence"),
    Operation("GET", "/ui/models/{name}/compare", ui.compare,
              "Champion against challenger: traffic, errors, latency, agreement, reasoning"),
    Operation("GET", "/ui/models/{name}/history", ui.history, "A model's audit trail as a timeline"),
    Operation("GET", "/models/{name}/versions/{version}/card", ui.card,
              "A version's model card: HTML, or Markdown (?format=markdown or Accept: text/markdown)"),
    Operation("PUT", "/admin/models/{name}/routing", control.set_routing, "Set the routing policy"),
    Operation("PUT", "/admin/models/{name}/log-policy", control.set_log_policy,
              "Set what the prediction log keeps: each feature kept, hashed or dropped; the payload rate"),
    Operation("POST", "/admin/models/{name}/promote", control.promote,
              "Point an alias at a version (by default the challenger becomes champion)"),
    Operation("POST", "/admin/models/{name}/rollback", control.rollback,
              "The champion back to the previous one"),
    # the Open Inference Protocol (v2)
    Operation("GET", "/v2", v2.server_metadata, "Server metadata"),
    Operation("GET", "/v2/health/live", status.live, "Liveness"),
    Operation("GET", "/v2/health/ready", status.ready,
              "Readiness: some model serves and the log takes records"),
    Operation("GET", "/v2/models/{name}", v2.model_metadata, "Model metadata"),
    Operation("GET", "/v2/models/{name}/ready", v2.model_ready, "Model readiness"),
    Operation("GET", "/v2/models/{name}/versions/{version}", v2.model_metadata, "A version's metadata"),
    Operation("GET", "/v2/models/{name}/versions/{version}/ready", v2.model_ready, "A version's readiness"),
    Operation("POST", "/v2/models/{name}/infer", v2.infer,
              "Open Inference Protocol inference; the champion answers"),
    Operation("POST", "/v2/models/{name}/versions/{version}/infer", v2.infer,
              "Open Inference Protocol inference by a pinned version"),
    # KServe v1; its predict route before /v1/models/{name}, whose {name} would take "cancer:predict"
    Operation("GET", "/v1/models", kserve.kserve_models, "KServe v1: the models"),
    Operation("POST", "/v1/models/{name}:predict", kserve.kserve_predict,
              "KServe v1 prediction: instances (rows or records) or columnar inputs"),
    Operation("GET", "/v1/models/{name}", kserve.kserve_model, "KServe v1: model status"),
    # MLflow's scoring server and its health checks
    Operation("POST", "/invocations", mlflow.mlflow_invocations,
              "MLflow's scoring protocol: exactly one of dataframe_split, dataframe_records, instances, "
              "inputs"),
    Operation("GET", "/ping", status.ready, "MLflow's health check"),
    Operation("GET", "/health", status.ready, "MLflow's health check"),
    # BentoML answers these three itself; under any other ASGI server the app does
    Operation("GET", "/livez", status.live, "Liveness"),
    Operation("GET", "/readyz", status.ready, "Readiness"),
    Operation("GET", "/metrics", status.metrics_text, "Prometheus metrics of every process"),
    Operation("GET", "/", index, "The routes"),
    Operation("GET", "/openapi.json", openapi_document, "This document"),
    Operation("GET", "/docs", docs, "This document as a page"),
)  # fmt: skip


def mounted(ctx: Context) -> list[BaseRoute]:
    """The table as Starlette routes, each handler bound to ``ctx``; then Swagger UI's files, and the
    catch-all that answers the rest in JSON (BentoML would answer paths no route claims in plain text)."""
    routes: list[BaseRoute] = [
        Route(op.path, functools.partial(op.handler, ctx), methods=[op.method]) for op in OPERATIONS
    ]
    routes.append(Mount("/docs/static", StaticFiles(directory=str(swagger_ui_path)), name="docs"))
    routes.append(Mount("/ui/static", StaticFiles(packages=[("service.ui", "static")]), name="ui"))
    routes.append(
        Route(CATCH_ALL, functools.partial(not_found, ctx), methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    )
    return routes
