"""The control plane over HTTP: promote, roll back and set the routing policy, behind a bearer token.

Each action is a registry write (and so in the model's audit history, with
the actor); every gateway and worker picks it up from the registry within a
poll interval. Without ``MODELGATE_ADMIN_TOKEN`` the routes are disabled
(403), not open; a missing token is 401, a wrong one 403, and each refusal
is logged (``auth.refused``) with the caller's address. The prediction and
feedback routes take a token of their own (``MODELGATE_PREDICT_TOKEN``)
when one is set.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import anyio.to_thread
import structlog
from pydantic import ValidationError
from starlette.requests import Request

from registry.aliases import ALIASES, Alias, AuditEntry, LogPolicy, RoutingPolicy
from registry.errors import RegistryError
from registry.store import Registry
from service.errors import (
    MAX_FIELD_CHARS,
    FieldError,
    Forbidden,
    InvalidInput,
    MalformedRequest,
    Unauthorized,
    clipped,
    from_registry,
)

log = structlog.get_logger("modelgate.admin")


class Admin:
    def __init__(self, token: str, registry: Registry) -> None:
        self._token = token.encode()
        self.registry = registry

    def actor(self, request: Request) -> str:
        """Who is acting, once the bearer token checks out; refusals raise (and are logged)."""
        if not self._token:
            refuse(request, Forbidden("admin routes are disabled: set MODELGATE_ADMIN_TOKEN to enable them"))
        check_bearer(request, self._token, "admin routes")
        return request.headers.get("x-actor") or f"admin-api@{_client(request)}"

    async def run(self, name: str, action: Callable[[], AuditEntry]) -> dict[str, Any]:
        """A registry write on model ``name`` in a thread, its errors as answers a client can act on."""
        try:
            entry = await anyio.to_thread.run_sync(action)
        except RegistryError as exc:
            raise from_registry(exc) from None
        log.info("admin.action", action=entry.action, actor=entry.actor, model=name, seq=entry.seq)
        return entry.model_dump(mode="json", by_alias=True)


def check_bearer(request: Request, token: bytes, routes: str) -> None:
    """401 without an ``Authorization: Bearer`` header, 403 with a wrong token; each refusal logged."""
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        refuse(request, Unauthorized(f"{routes} need an 'Authorization: Bearer <token>' header"))
    if not hmac.compare_digest(given.strip().encode(), token):
        refuse(request, Forbidden(f"wrong token for {routes}"))


def refuse(request: Request, refused: Forbidden | Unauthorized) -> NoReturn:
    path = clipped(request.url.path, MAX_FIELD_CHARS)
    log.warning("auth.refused", path=path, client=_client(request), status=refused.status,
                reason=refused.message)  # fmt: skip
    raise refused


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


Policy = TypeVar("Policy", RoutingPolicy, LogPolicy)


def routing_policy(body: dict[str, Any]) -> RoutingPolicy:
    """The routing policy in a request body; 422 naming the field that is wrong."""
    return _policy(RoutingPolicy, body)


def log_policy(body: dict[str, Any]) -> LogPolicy:
    """The log policy in a request body; 422 naming the field that is wrong."""
    return _policy(LogPolicy, body)


def _policy(kind: type[Policy], body: dict[str, Any]) -> Policy:
    try:
        return kind.model_validate({k: v for k, v in body.items() if k != "reason"})
    except ValidationError as exc:
        details = [
            FieldError(".".join(str(p) for p in error["loc"]) or "body", error["msg"])
            for error in exc.errors()
        ]
        raise InvalidInput(f"{details[0].field}: {details[0].message}", field=details[0].field,
                           details=details) from None  # fmt: skip


def reason(body: dict[str, Any]) -> str:
    given = body.get("reason", "")
    if not isinstance(given, str):
        raise MalformedRequest("reason: expected a string", field="reason")
    return given


def promotion(body: dict[str, Any]) -> tuple[str | int, Alias]:
    """(version, alias) of a promotion: by default the challenger to champion."""
    version = body.get("version", "challenger")
    if not (type(version) is int or version in ("challenger", "latest")):
        raise MalformedRequest(
            "version: expected a version number, 'challenger' or 'latest'", field="version"
        )
    alias = body.get("to", "champion")
    if alias == "champion" or alias == "challenger":
        return version, alias
    raise MalformedRequest(f"to: expected one of {', '.join(ALIASES)}", field="to")
