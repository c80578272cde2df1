"""The decorator that records each prediction request, answered, refused or failed."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request
from starlette.responses import Response

from service.context import Context, Exchange
from service.errors import Overloaded, ServiceError

#: what a 503 for a backed-up log asks the client to wait, in seconds
LOG_RETRY_AFTER_SECONDS = 1

#: the gateway, or any other implementation of the routes' context
C = TypeVar("C", bound=Context)
#: a prediction handler, and the route function it becomes once recorded
Handler = Callable[[C, Request, Exchange], Awaitable[Response]]
Observed = Callable[[C, Request], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def recorded(route: str) -> Callable[[Handler[C]], Observed[C]]:
    """Time the handler and queue one record of the request, answered, refused or failed."""

    def decorate(handler: Handler[C]) -> Observed[C]:
        @functools.wraps(handler)
        async def observed(self: C, request: Request) -> Response:
            observability = self.observability
            if observability is None:
                return await handler(self, request, Exchange())
            if not await observability.sink.admit():  # the log is backed up: refuse before any work
                raise Overloaded(
                    f"the prediction log is backed up ({observability.sink.depth:,} records queued); "
                    "this request was not served: retry shortly or on another replica",
                    retry_after=LOG_RETRY_AFTER_SECONDS,
                )
            ts, started = time.time(), time.perf_counter()
            exchange = Exchange()
            try:
                response = await handler(self, request, exchange)
            except ServiceError as exc:
                self.record(request, route, exchange, ts, started, exc.status, exc.message)
                raise
            except Exception as exc:
                self.record(request, route, exchange, ts, started, 500, f"{type(exc).__name__}: {exc}")
                raise
            committed = self.record(request, route, exchange, ts, started, 200, None)
            if committed is not None and not await _committed(committed, self.settings.log_ack_timeout):
                raise Overloaded(
                    "this prediction's record was not committed to the prediction log within "
                    f"{self.settings.log_ack_timeout:g} s, so it is not acknowledged (MODELGATE_LOG_ACK="
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
