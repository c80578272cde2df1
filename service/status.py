"""The routes that describe the gateway: health, metadata, the route list, metrics and the OpenAPI
document (with its page)."""

from __future__ import annotations

import importlib.metadata
import os
import socket

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Match, Route

from service import openapi, responses
from service.context import Context
from service.errors import MethodNotAllowed, NotFound
from service.http import JSONResponse, model_and_version

#: the path of the route that claims every path no other route does
CATCH_ALL = "/{path:path}"
VERSION = importlib.metadata.version("modelgate")
#: Swagger UI on /openapi.json, from the files swagger-ui-bundle ships (no CDN: gateways run offline)
DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>modelgate API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body></html>"""


async def model_metadata(gateway: Context, request: Request) -> Response:
    served = await gateway.version_served(*model_and_version(request))
    versions = gateway.pool.registry.versions(served.name)
    return JSONResponse(responses.model_metadata(served, versions))


async def model_ready(gateway: Context, request: Request) -> Response:
    served = await gateway.version_served(*model_and_version(request))  # 404 / 503 when not servable
    return JSONResponse({"name": served.name, "version": str(served.version), "ready": True})


async def index(gateway: Context, request: Request) -> Response:
    return JSONResponse(
        {
            "name": "modelgate",
            "version": VERSION,
            "models": gateway.pool.names,
            "routes": [
                "POST /predict",
                "POST /feedback",
                "GET /models",
                "GET /monitoring/drift?model=NAME",
                "GET /monitoring/alerts",
                "GET /monitoring/compare?model=NAME",
                "GET /monitoring/status",
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


async def not_found(gateway: Context, request: Request) -> Response:
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


async def openapi_document(gateway: Context, request: Request) -> Response:
    """The OpenAPI document, from the schemas of the champions served now."""
    champions = [slots.champion for slots in map(gateway.pool.slots, gateway.pool.names) if slots.champion]
    return JSONResponse(openapi.document(champions, VERSION, gateway.settings.max_batch_rows))


async def docs(gateway: Context, request: Request) -> Response:
    return HTMLResponse(DOCS_PAGE)


async def server_metadata(gateway: Context, request: Request) -> Response:
    return JSONResponse({"name": "modelgate", "version": VERSION, "extensions": ["binary_tensor_data"]})


async def live(gateway: Context, request: Request) -> Response:
    return JSONResponse({"live": True})


async def metrics_text(gateway: Context, request: Request) -> Response:
    """Prometheus text of every process of the deployment (workers, log writers, the monitor)
    when they share a multiprocess directory, as under ``modelgate serve``; else this process's."""
    body = await anyio.to_thread.run_sync(_exposition, gateway)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _exposition(gateway: Context) -> bytes:
    # imported here: prometheus-client picks its value class at import, from the environment
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = gateway.metrics.registry if gateway.metrics is not None else REGISTRY
    return generate_latest(registry)


async def ready(gateway: Context, request: Request) -> Response:
    """Ready while some model serves and the prediction log takes records; which model serves, and
    the log's state, in the body. Reads memory only: it never waits on the log or the registry."""
    readiness = gateway.readiness()
    return JSONResponse(readiness, status_code=200 if readiness["ready"] else 503)


async def monitoring_status(gateway: Context, request: Request) -> Response:
    """Which replica's monitor holds the lease, and this process's log queue."""
    observed = gateway.observed
    holder = await anyio.to_thread.run_sync(observed.store.lease.holder)
    host = socket.gethostname()
    here = holder is not None and holder.startswith(f"{host} ")
    return JSONResponse(
        {
            "monitor": {"holder": holder, "this_replica": here},
            "replica": host,
            "log": gateway.readiness()["log"],
        }
    )


async def models(gateway: Context, request: Request) -> Response:
    """What this process serves, per model and alias, with any load failure."""
    listing = {}
    for name in gateway.pool.names:
        slots = gateway.pool.slots(name)
        listing[name] = {
            "champion": slots.champion.version if slots.champion else None,
            "challenger": slots.challenger.version if slots.challenger else None,
            "routing": {"mode": slots.routing.mode, "challenger_weight": slots.routing.challenger_weight},
            "errors": slots.errors,
        }
    return JSONResponse({"models": listing, "refreshed_at": gateway.pool.refreshed_at})
