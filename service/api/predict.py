"""The gateway's own prediction routes: ``POST /predict`` (records, columns or rows) and
``POST /feedback`` (ground truth and rewards by request id)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api import answers
from service.api.context import Context
from service.api.http import JSONResponse, Separators, json_body, request_id, routing_key
from service.api.recording import recorded
from service.errors import QUOTED_CHARS, MalformedRequest, clipped
from service.serving.pipeline import Exchange
from service.serving.validation import instances_to_batch, separators_allowed

PREDICT_FIELDS = ("model", "version", "inputs", "routing_key")


def _predict_body(ctx: Context, body: dict[str, Any]) -> tuple[str, int | None]:
    """The model and pinned version a ``/predict`` body names, its fields checked."""
    unknown = [key for key in body if key not in PREDICT_FIELDS]
    if unknown:
        raise MalformedRequest(
            f"{clipped(unknown[0], QUOTED_CHARS)}: unknown field; expected {', '.join(PREDICT_FIELDS)}",
            field=unknown[0],
        )
    name = body.get("model")
    if name is None:
        name = ctx.only_model()
    elif not isinstance(name, str):
        raise MalformedRequest("model: expected a model name (string)", field="model")
    version = body.get("version")
    if version is not None and type(version) is not int:
        raise MalformedRequest("version: expected an integer version number", field="version")
    return name, version


@recorded("predict")
async def predict(ctx: Context, request: Request, exchange: Exchange) -> Response:
    ctx.authorize(request)
    body = await json_body(request, ctx.body_limits, ctx.separators(None))
    name, version = _predict_body(ctx, body)
    served = await ctx.pipeline.resolve(
        exchange, name, version, routing_key(request, body.get("routing_key"))
    )
    if "inputs" not in body:
        raise MalformedRequest(
            "inputs: required, a list of records or an object of feature: list of values", field="inputs"
        )
    inputs, limit, rid = body["inputs"], ctx.settings.max_batch_rows, request_id(request)
    prediction = await ctx.pipeline.predict(
        rid, exchange, "predict", lambda version: instances_to_batch(inputs, version.manifest.inputs, limit)
    )
    return JSONResponse(
        {
            "request_id": rid,
            "model": served.name,
            "version": served.version,
            "arm": exchange.arm,
            "predictions": answers.predictions(served, prediction),
        },
        headers=exchange.headers(rid),
    )


async def feedback(ctx: Context, request: Request) -> Response:
    ctx.authorize(request)
    items, rows = ctx.settings.max_feedback_items, ctx.settings.max_batch_rows
    separators = Separators(separators_allowed(4, items + rows), f"{items:,} feedback items")
    body = await json_body(request, ctx.body_limits, separators)
    status, answer = await ctx.observed.feedback.take(body)
    answer["request_id"] = request_id(request)
    return JSONResponse(answer, status_code=status, headers={"x-request-id": answer["request_id"]})
