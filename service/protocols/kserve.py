"""KServe's v1 protocol: ``POST /v1/models/{name}:predict`` with ``instances`` (or columnar
``inputs``), answered ``{"predictions": [...]}`` as KServe's scikit-learn server answers: the label
a row for classifiers, the value for regressors. Routing and monitoring treat it like ``/predict``."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from service.api import answers
from service.api.context import Context
from service.api.http import JSONResponse, json_body, request_id, routing_key
from service.api.recording import recorded
from service.protocols.common import answer, one_format
from service.serving.pipeline import Exchange
from service.serving.pool import ServedVersion
from service.serving.validation import Batch, instances_to_batch


@recorded("v1")
async def kserve_predict(ctx: Context, request: Request, exchange: Exchange) -> Response:
    """KServe v1: ``{"instances": [...]}`` (rows as value lists or records), or columnar ``inputs``."""
    ctx.authorize(request)
    name = request.path_params["name"]
    ctx.pool.slots(name)  # an unknown model: 404 before the body is read
    body = await json_body(request, ctx.body_limits, ctx.separators(name))
    key = one_format(body, ("instances", "inputs"), ())
    await ctx.pipeline.resolve(exchange, name, None, routing_key(request, None))
    instances, limit = body[key], ctx.settings.max_batch_rows

    def parse(version: ServedVersion) -> Batch:
        return instances_to_batch(instances, version.manifest.inputs, limit, key)

    prediction = await ctx.pipeline.predict(request_id(request), exchange, "v1", parse)
    return answer(request, exchange, answers.plain(prediction))


async def kserve_model(ctx: Context, request: Request) -> Response:
    """KServe v1 model status: ``{"name", "ready"}``; 404 for a model not served."""
    name = request.path_params["name"]
    ready = ctx.pool.slots(name).champion is not None
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def kserve_models(ctx: Context, request: Request) -> Response:
    return JSONResponse({"models": ctx.pool.names})
