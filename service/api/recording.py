"""The decorator that records each prediction request, answered, refused or failed."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from service.api.context import Context
from service.api.http import request_id
from service.errors import Overloaded, ServiceError
from service.serving.pipeline import Exchange

#: what a 503 for a backed-up log asks the client to wait, in seconds
LOG_RETRY_AFTER_SECONDS = 1

#: a prediction handler, and the route handler it becomes once recorded
Predicting = Callable[[Context, Request, Exchange], Awaitable[Response]]
Handler = Callable[[Context, Request], Awaitable[Response]]


def recorded(route: str) -> Callable[[Predicting], Handler]:
    """Time the handler and queue one record of the request, answered, refused or failed."""

    def decorate(handler: Predicting) -> Handler:
        @functools.wraps(handler)
        async def observed(ctx: Context, request: Request) -> Response:
            observability = ctx.observability
            if observability is None:
                return await handler(ctx, request, Exchange())
            if not await observability.sink.admit():  # the log is backed up: refuse before any work
                raise Overloaded(
                    f"the prediction log is backed up ({observability.sink.depth:,} records queued); "
                    "this request was not served: retry shortly or on another replica",
                    retry_after=LOG_RETRY_AFTER_SECONDS,
                )
            ts, started = time.time(), time.perf_counter()
            exchange = Exchange()
            record, rid = ctx.pipeline.record, request_id(request)
            try:
                response = await handler(ctx, request, exchange)
            except ServiceError as exc:
                exc.logged = ctx.pipeline.loggable(exchange, exc)
                record(rid, route, exchange, ts, started, exc.status, exc.logged)
                raise
            except Exception as exc:
                record(rid, route, exchange, ts, started, 500, f"{type(exc).__name__}: {exc}")
                raise
            committed = record(rid, route, exchange, ts, started, 200, None)
            timeout = ctx.settings.log_ack_timeout
            if committed is not None and not await _committed(committed, timeout):
                raise Overloaded(
                    "this prediction's record was not committed to the prediction log within "
                    f"{timeout:g} s, so it is not acknowledged (MODELGATE_LOG_ACK="
                    "committed); retry it: the log may still show it answered",
                    retry_after=LOG_RETRY_AFTER_SECONDS,
                )
            return response

        return observed

    return decorate


async def _committed(committed: asyncio.Future[bool], timeout: float) -> bool:
    try:
        return await asyncio.wait_for(committed, timeout)
    except TimeoutError:
        return False
