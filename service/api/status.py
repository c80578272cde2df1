"""The routes that say how the gateway is: liveness, readiness, what it serves, its metrics and
which replica's monitor leads."""

from __future__ import annotations

import os
import socket

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response

from service.api.context import Context
from service.api.http import JSONResponse


async def live(ctx: Context, request: Request) -> Response:
    return JSONResponse({"live": True})


async def metrics_text(ctx: Context, request: Request) -> Response:
    """Prometheus text of every process of the deployment (workers, log writers, the monitor)
    when they share a multiprocess directory, as under ``modelgate serve``; else this process's."""
    body = await anyio.to_thread.run_sync(_exposition, ctx)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


def _exposition(ctx: Context) -> bytes:
    # imported here: prometheus-client picks its value class at import, from the environment
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry = ctx.metrics.registry if ctx.metrics is not None else REGISTRY
    return generate_latest(registry)


async def ready(ctx: Context, request: Request) -> Response:
    """Ready while some model serves and the prediction log takes records; which model serves, and
    the log's state, in the body. Reads memory only: it never waits on the log or the registry."""
    readiness = ctx.readiness()
    return JSONResponse(readiness, status_code=200 if readiness["ready"] else 503)


async def monitoring_status(ctx: Context, request: Request) -> Response:
    """Which replica's monitor holds the lease (each shard's, where monitors share the models), and
    this process's log queue."""
    leases = ctx.observed.monitor.leases
    holders = await anyio.to_thread.run_sync(lambda: [lease.holder() for lease in leases])
    host = socket.gethostname()

    def here(holder: str | None) -> bool:
        return holder is not None and holder.startswith(f"{host} ")

    monitor: dict[str, object] = {"holder": holders[0], "this_replica": here(holders[0])}
    if len(holders) > 1:  # shard 0's is the one above
        monitor["shards"] = [
            {"shard": shard, "holder": holder, "this_replica": here(holder)}
            for shard, holder in enumerate(holders)
        ]
    return JSONResponse({"monitor": monitor, "replica": host, "log": ctx.readiness()["log"]})


async def models(ctx: Context, request: Request) -> Response:
    """What this process serves, per model and alias, with any load failure."""
    listing = {}
    for name in ctx.pool.names:
        slots = ctx.pool.slots(name)
        listing[name] = {
            "champion": slots.champion.version if slots.champion else None,
            "challenger": slots.challenger.version if slots.challenger else None,
            "routing": {"mode": slots.routing.mode, "challenger_weight": slots.routing.challenger_weight},
            "errors": slots.errors,
        }
    return JSONResponse({"models": listing, "refreshed_at": ctx.pool.refreshed_at})
