"""What the other servers' protocols share: one input format a request, and a plain answer."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api.http import JSONResponse, request_id
from service.errors import QUOTED_CHARS, MalformedRequest, clipped
from service.serving.pipeline import Exchange


def answer(request: Request, exchange: Exchange, predictions: list[Any]) -> Response:
    rid = request_id(request)
    return JSONResponse({"predictions": predictions}, headers=exchange.headers(rid))


def one_format(body: dict[str, Any], formats: tuple[str, ...], extra: tuple[str, ...]) -> str:
    given = [key for key in formats if key in body]
    unknown = [key for key in body if key not in formats and key not in extra]
    if unknown:
        raise MalformedRequest(
            f"{clipped(unknown[0], QUOTED_CHARS)}: unknown field; expected one of {', '.join(formats)}",
            field=unknown[0],
        )
    if len(given) != 1:
        raise MalformedRequest(
            f"expected exactly one of {', '.join(formats)}; got {', '.join(given) or 'none'}",
            field=given[1] if given else None,
        )
    return given[0]
