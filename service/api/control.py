"""The control plane's routes: set the routing policy, promote, roll back (bearer token, audited)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.api.admin import log_policy, promotion, reason, routing_policy
from service.api.context import Context
from service.api.http import JSONResponse, json_body


async def set_routing(ctx: Context, request: Request) -> Response:
    actor = ctx.admin.actor(request)
    name = request.path_params["name"]
    body = await json_body(request, ctx.body_limits)
    policy, why = routing_policy(body), reason(body)
    registry = ctx.pool.registry
    entry = await ctx.admin.run(name, lambda: registry.set_routing(name, policy, reason=why, actor=actor))
    return JSONResponse(entry)


async def set_log_policy(ctx: Context, request: Request) -> Response:
    """What the prediction log keeps of the model's requests: each feature kept, hashed or dropped,
    and the share of requests whose inputs and outputs are kept at all."""
    actor = ctx.admin.actor(request)
    name = request.path_params["name"]
    body = await json_body(request, ctx.body_limits)
    policy, why = log_policy(body), reason(body)
    registry = ctx.pool.registry
    entry = await ctx.admin.run(name, lambda: registry.set_log_policy(name, policy, reason=why, actor=actor))
    return JSONResponse(entry)


async def promote(ctx: Context, request: Request) -> Response:
    """Point an alias at a version; by default the challenger becomes champion."""
    actor = ctx.admin.actor(request)
    name = request.path_params["name"]
    body = await json_body(request, ctx.body_limits)
    (version, alias), why = promotion(body), reason(body)
    registry = ctx.pool.registry
    entry = await ctx.admin.run(
        name,
        lambda: registry.promote(name, registry.resolve(name, version), alias, reason=why, actor=actor),
    )
    return JSONResponse(entry)


async def rollback(ctx: Context, request: Request) -> Response:
    actor = ctx.admin.actor(request)
    name = request.path_params["name"]
    why = reason(await json_body(request, ctx.body_limits))
    registry = ctx.pool.registry
    entry = await ctx.admin.run(name, lambda: registry.rollback(name, reason=why, actor=actor))
    return JSONResponse(entry)
