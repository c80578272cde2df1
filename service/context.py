"""What a route handler may use of the gateway: the ``Context`` protocol, and the ``Exchange`` a
prediction handler fills in for its request's record.

Route modules (status, reports, control, protocols, recording) are typed against
``Context``, not against ``service.app.Gateway``, which implements it: the app
imports the routes, and no route imports the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request

from registry.onnx_model import Prediction
from service.pool import ModelPool, ServedVersion
from service.settings import Settings
from service.validation import Batch

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics
    from service.admin import Admin
    from service.http import BodyLimits, Separators
    from service.observability import Observability


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


class Context(Protocol):
    """The gateway as its routes see it."""

    settings: Settings
    pool: ModelPool
    admin: Admin
    body_limits: BodyLimits
    #: None when MODELGATE_MONITORING=false
    observability: Observability | None
    metrics: GatewayMetrics | None

    @property
    def observed(self) -> Observability:
        """The monitoring parts; 404 when monitoring is off."""

    def authorize(self, request: Request) -> None: ...

    def only_model(self) -> str: ...

    def separators(self, name: str | None, served: ServedVersion | None = None) -> Separators: ...

    def readiness(self) -> dict[str, Any]: ...

    async def version_served(self, name: str, version: int | None) -> ServedVersion: ...

    async def resolve(
        self, exchange: Exchange, name: str, version: int | None, key: str | None
    ) -> ServedVersion: ...

    async def predict_batch(
        self, request: Request, exchange: Exchange, route: str, parse: Callable[[ServedVersion], Batch]
    ) -> Prediction: ...

    def record(
        self,
        request: Request,
        route: str,
        exchange: Exchange,
        ts: float,
        started: float,
        status: int,
        error: str | None,
    ) -> asyncio.Future[bool] | None: ...
