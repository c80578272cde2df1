"""The control plane's routes: set the routing policy, promote, roll back (bearer token, audited)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.admin import promotion, reason, routing_policy
from service.context import Context
from service.http import JSONResponse, json_body


async def set_routing(gateway: Context, request: Request) -> Response:
    actor = gateway.admin.actor(request)
    name = request.path_params["name"]
    body = await json_body(request, gateway.body_limits)
    policy, why = routing_policy(body), reason(body)
    registry = gateway.pool.registry
    entry = await gateway.admin.run(name, lambda: registry.set_routing(name, policy, reason=why, actor=actor))
    return JSONResponse(entry)


async def promote(gateway: Context, request: Request) -> Response:
    """Point an alias at a version; by default the challenger becomes champion."""
    actor = gateway.admin.actor(request)
    name = request.path_params["name"]
    body = await json_body(request, gateway.body_limits)
    (version, alias), why = promotion(body), reason(body)
    registry = gateway.pool.registry
    entry = await gateway.admin.run(
        name,
        lambda: registry.promote(name, registry.resolve(name, version), alias, reason=why, actor=actor),
    )
    return JSONResponse(entry)


async def rollback(gateway: Context, request: Request) -> Response:
    actor = gateway.admin.actor(request)
    name = request.path_params["name"]
    why = reason(await json_body(request, gateway.body_limits))
    registry = gateway.pool.registry
    entry = await gateway.admin.run(name, lambda: registry.rollback(name, reason=why, actor=actor))
    return JSONResponse(entry)
