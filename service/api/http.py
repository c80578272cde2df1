"""Reading request bodies and writing JSON answers: what every route of the gateway shares."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from service.api import binary
from service.errors import (
    ClientGone,
    MalformedRequest,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    decimal,
    quoted,
)

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class JSONResponse(Response):
    """orjson-rendered JSON; numpy arrays are serialised natively (v2 tensor data)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def request_id(request: Request) -> str:
    """The caller's ``X-Request-ID`` when it is sane, else a new one; the same for the whole request."""
    rid: str | None = request.scope.get("modelgate.request_id")
    if rid is None:
        given = request.headers.get("x-request-id")
        rid = given if given and REQUEST_ID.match(given) else secrets.token_hex(16)
        request.scope["modelgate.request_id"] = rid
    return rid


@dataclass(frozen=True)
class BodyLimits:
    """How large a request body may be, and how long it may take to arrive."""

    max_bytes: int
    timeout: float


async def read_body(request: Request, limits: BodyLimits) -> bytes:
    """The body's bytes; 413 past ``limits.max_bytes``, 408 when it takes longer than ``limits.timeout``
    seconds (a client trickling a body holds its buffers only that long)."""
    limit = limits.max_bytes
    declared = decimal(request.headers.get("content-length") or "")
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks = []
    size = 0
    try:
        with anyio.fail_after(limits.timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"request body not received within {limits.timeout:g} s ({size:,} bytes came)"
        ) from None
    except ClientDisconnect:
        raise ClientGone("the client closed the connection before its body arrived") from None
    return b"".join(chunks)


@dataclass(frozen=True)
class Separators:
    """The JSON separators (commas) a body may hold, and why, for the 413 past it."""

    limit: int
    why: str

    def check(self, data: bytes) -> None:
        found = data.count(b",")
        if found > self.limit:
            raise PayloadTooLarge(
                f"request body: {found + 1:,} JSON values, more than {self.why} need "
                f"({self.limit:,} separators at most); send fewer rows a request"
            )


def json_object(data: bytes, separators: Separators | None = None) -> dict[str, Any]:
    """``data`` as a JSON object; 400 when it is not JSON, or not an object; 413 past ``separators``
    (checked before parsing)."""
    if separators is not None:
        separators.check(data)
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data[exc.pos : exc.pos + 9].lstrip(b"-").startswith((b"NaN", b"Infinity")):
            raise MalformedRequest(
                f"request body is not valid JSON: NaN and Infinity are not JSON numbers "
                f"(at char {exc.pos}); send null for a missing value"
            ) from None
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedRequest(f"request body: expected a JSON object, got {type(body).__name__}")
    return body


async def json_body(
    request: Request, limits: BodyLimits, separators: Separators | None = None
) -> dict[str, Any]:
    """The body as a JSON object; 413 past its limits or ``separators``, 400 when it is not JSON."""
    if binary.HEADER in request.headers:
        raise MalformedRequest(
            "binary tensor data (Inference-Header-Content-Length) is accepted by "
            "/v2/models/{name}/infer only; send JSON here"
        )
    return json_object(await read_body(request, limits), separators)


async def infer_body(request: Request, limits: BodyLimits, separators: Separators) -> dict[str, Any]:
    """A v2 inference request, JSON or with binary tensor data after its JSON header."""
    data = await read_body(request, limits)
    raw = request.headers.get(binary.HEADER)
    if raw is None:
        return json_object(data, separators)
    length = binary.header_length(raw, len(data))
    body = json_object(data[:length], separators)
    binary.attach_inputs(body, data, length)
    return body


def routing_key(request: Request, given: Any) -> str | None:
    """The ``X-Routing-Key`` header, else the key in the body: the same key, the same arm."""
    key = request.headers.get("x-routing-key")
    if key is not None or given is None:
        return key
    if not isinstance(given, str) or not given:
        raise MalformedRequest("routing_key: expected a non-empty string", field="routing_key")
    return given


def model_and_version(request: Request) -> tuple[str, int | None]:
    """``{name}`` and the optional ``{version}`` of a v2 model route."""
    params = request.path_params
    raw = params.get("version")
    if raw is None:
        return params["name"], None
    version = decimal(raw)
    if version is None:
        raise NotFound(f"version {quoted(raw)} is not a version number", field="version")
    return params["name"], version
