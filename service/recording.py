"""What a prediction handler learned about its request, and the decorator that records it."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response

from registry.onnx_model import Prediction
from service.errors import Overloaded, ServiceError
from service.pool import ServedVersion
from service.validation import Batch

if TYPE_CHECKING:
    from service.app import Gateway


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

    def headers(self, rid: str) -> dict[str, str]:
        """The headers every prediction answer carries: its request id and the arm that answered."""
        return {"x-request-id": rid, "x-modelgate-arm": self.arm}


#: what a 503 for a backed-up log asks the client to wait, in seconds
LOG_RETRY_AFTER_SECONDS = 1

Handler = Callable[["Gateway", Request, Exchange], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def recorded(route: str) -> Callable[[Handler], Callable[[Gateway, Request], Awaitable[Response]]]:
    """Time the handler and queue one record of the request, answered, refused or failed."""

    def decorate(handler: Handler) -> Callable[[Gateway, Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def observed(self: Gateway, request: Request) -> Response:
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
