"""The gateway's HTTP app: the route table (``service.routes``) over one process's context
(``service.api.context``), its start-up and shutdown, and the one JSON shape of every error.

``modelgate serve`` runs this app on uvicorn (``service.server``), BentoML mounts
it (``service.gateway``), and the unit tests drive it in-process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from service import routes
from service.api.context import Context
from service.api.http import JSONResponse, request_id
from service.errors import MAX_FIELD_CHARS, MethodNotAllowed, Overloaded, ServiceError, clipped
from service.processes.runtime import tune_garbage_collector
from service.settings import Settings

log = structlog.get_logger("modelgate.app")


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    rid = request_id(request)
    body: dict[str, Any] = {"error": exc.message, "request_id": rid}
    if exc.field:
        body["field"] = exc.field
    if exc.details:
        body["details"] = [{"field": d.field, "message": d.message} for d in exc.details]
    path = clipped(request.url.path, MAX_FIELD_CHARS)
    log.info("request.refused", path=path, status=exc.status, error=exc.logged, request_id=rid)
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
    ctx = Context(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        tasks = await ctx.start()
        log.info(
            "gateway.started", registry=str(settings.registry), models=ctx.pool.names, ready=ctx.pool.ready()
        )
        tune_garbage_collector()
        yield
        await ctx.stop(tasks)

    app = Starlette(
        routes=routes.mounted(ctx),
        lifespan=lifespan,
        exception_handlers={
            ServiceError: _service_error,
            HTTPException: _http_error,
            Exception: _unexpected_error,
        },
    )
    app.state.context = ctx
    return app
