"""The monitor's findings over HTTP: drift and plausibility, champion against challenger, alerts."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request
from starlette.responses import Response

from monitoring.notify import RECENT_SECONDS
from service.api.context import Context
from service.api.http import JSONResponse


async def drift(ctx: Context, request: Request) -> Response:
    """The monitor's latest report on a model: drift per feature and output, plausibility rates."""
    name = request.query_params.get("model") or ctx.only_model()
    ctx.pool.slots(name)  # 404 for a model this gateway does not serve
    saved = await anyio.to_thread.run_sync(ctx.observed.store.reports.latest, name)
    if saved is None:
        return JSONResponse({"model": name, "status": "no_traffic", "features": [], "plausibility": []})
    return Response(saved[1], media_type="application/json")


async def compare(ctx: Context, request: Request) -> Response:
    """Champion against challenger, from the monitor's latest report on the model."""
    name = request.query_params.get("model") or ctx.only_model()
    ctx.pool.slots(name)  # 404 for a model this gateway does not serve
    saved = await anyio.to_thread.run_sync(ctx.observed.store.reports.latest, name)
    comparison = orjson.loads(saved[1]).get("comparison") if saved is not None else None
    if saved is None or comparison is None:
        return JSONResponse({"model": name, "status": "no_challenger_traffic"})
    return JSONResponse({"model": name, "status": "ok", "computed_at": saved[0], **comparison})


async def alerts(ctx: Context, request: Request) -> Response:
    """Alerts firing and pending now, and those resolved in the last day."""
    alerts = await anyio.to_thread.run_sync(ctx.observed.store.alerts.since, time.time() - RECENT_SECONDS)
    grouped: dict[str, list[dict[str, Any]]] = {"firing": [], "pending": [], "resolved": []}
    for alert in alerts:
        grouped[alert.status].append({**alert.as_json(), "status": alert.status, "value": alert.value})
    return JSONResponse(grouped)
