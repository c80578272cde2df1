"""``POST /explain``: each row's per-feature attributions, the base value and the output, for inputs
given as ``/predict`` takes them or for a request already in the prediction log."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from registry.explain.explainers import Explanation, Unexplainable
from service.api.context import Context
from service.api.http import JSONResponse, json_body, request_id
from service.errors import QUOTED_CHARS, InvalidInput, MalformedRequest, NotFound, clipped
from service.explain.versions import METHODS
from service.serving.pool import ServedVersion
from service.serving.validation import instances_to_batch

EXPLAIN_FIELDS = ("model", "version", "inputs", "request_id", "method", "space")
SPACES = ("margin", "probability", "value")


async def explain(ctx: Context, request: Request) -> Response:
    ctx.authorize(request)
    body = await json_body(request, ctx.body_limits, ctx.separators(None))
    unknown = [key for key in body if key not in EXPLAIN_FIELDS]
    if unknown:
        raise MalformedRequest(
            f"{clipped(unknown[0], QUOTED_CHARS)}: unknown field; expected {', '.join(EXPLAIN_FIELDS)}",
            field=unknown[0],
        )
    method, space = _choice(body, "method", METHODS), _choice(body, "space", SPACES)
    served, inputs = await _subject(ctx, body)
    try:
        explainer = await anyio.to_thread.run_sync(ctx.explainers.of, served)
        batch = instances_to_batch(inputs, served.manifest.inputs, ctx.settings.explain_max_rows)
        explanation = await anyio.to_thread.run_sync(explainer.explain, batch, method, space)
    except Unexplainable as exc:
        raise InvalidInput(str(exc), field=exc.field) from exc
    rid = request_id(request)
    return JSONResponse(
        {"request_id": rid, "model": served.name, "version": served.version, **answer(explanation),
         "offered": explainer.offers()},
        headers={"x-request-id": rid},
    )  # fmt: skip


def _choice(body: dict[str, Any], field: str, allowed: tuple[str, ...]) -> Any:
    value = body.get(field)
    if value is not None and value not in allowed:
        raise MalformedRequest(f"{field}: expected one of {', '.join(allowed)}", field=field)
    return value


async def _subject(ctx: Context, body: dict[str, Any]) -> tuple[ServedVersion, Any]:
    """The version to explain and the inputs: the body's, or those the log holds for its request id."""
    rid = body.get("request_id")
    if rid is None:
        if "inputs" not in body:
            raise MalformedRequest(
                "inputs or request_id: required, the rows to explain or a logged request's id", field="inputs"
            )
        name = body.get("model") or ctx.only_model()
        version = body.get("version")
        if not isinstance(name, str):
            raise MalformedRequest("model: expected a model name (string)", field="model")
        if version is not None and type(version) is not int:
            raise MalformedRequest("version: expected an integer version number", field="version")
        return await ctx.pipeline.version_served(name, version), body["inputs"]
    if not isinstance(rid, str) or "inputs" in body or "model" in body or "version" in body:
        raise MalformedRequest(
            "request_id: a logged request's id (string), given without inputs, model or version",
            field="request_id",
        )
    store = ctx.observed.store.requests
    records = await anyio.to_thread.run_sync(store.answered, [rid])
    if not records:
        raise NotFound(
            f"request_id {clipped(rid, QUOTED_CHARS)}: no answered request with this id in the log"
        )
    record = records[-1].decoded()
    if record.model is None or record.version is None or not record.inputs:
        raise InvalidInput(
            f"request_id {clipped(rid, QUOTED_CHARS)}: the log holds no inputs for it; send them instead",
            field="request_id",
        )
    return await ctx.pipeline.version_served(record.model, record.version), record.inputs


def answer(explanation: Explanation) -> dict[str, Any]:
    """The explanation as JSON: per row, each output's base value, output and attributions by feature."""
    outputs, features = explanation.outputs, explanation.features
    rows = []
    for row in range(explanation.attributions.shape[0]):
        item: dict[str, Any] = {
            "output": dict(zip(outputs, _floats(explanation.output[row]), strict=True)),
            "attributions": {
                out: dict(zip(features, _floats(explanation.attributions[row, k]), strict=True))
                for k, out in enumerate(outputs)
            },
        }
        if explanation.error is not None:
            item["standard_error"] = {
                out: dict(zip(features, _floats(explanation.error[row, k]), strict=True))
                for k, out in enumerate(outputs)
            }
        rows.append(item)
    return {
        "method": explanation.method,
        "space": explanation.space,
        "background_rows": explanation.background_rows,
        "base_value": dict(zip(outputs, _floats(explanation.base), strict=True)),
        "explanations": rows,
    }


def _floats(values: np.ndarray) -> list[float]:
    return [float(v) for v in values]
