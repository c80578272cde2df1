"""MLflow's scoring server protocol: ``POST /invocations`` with one of ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs``, answered ``{"predictions": [...]}``, so apps move
to the gateway without a code change. Routing and monitoring treat it like ``/predict``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service.api import answers
from service.api.context import Context
from service.api.http import json_body, request_id, routing_key
from service.api.recording import recorded
from service.errors import QUOTED_CHARS, MalformedRequest, UnsupportedMediaType, clipped, quoted
from service.protocols.common import answer, one_format
from service.serving.pipeline import Exchange
from service.serving.pool import ServedVersion
from service.serving.validation import Batch, instances_to_batch, records_to_batch, rows_to_batch

#: the input formats of MLflow's scoring protocol; a request carries exactly one
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _dataframe_split(split: Any, limit: int) -> Callable[[ServedVersion], Batch]:
    """pandas' ``to_dict(orient="split")``: ``columns`` (the features, any order) and ``data`` (rows);
    ``index`` is ignored."""
    if not isinstance(split, dict) or not isinstance(split.get("data"), list):
        raise MalformedRequest(
            "dataframe_split: expected an object with data (a list of rows) and columns",
            field="dataframe_split",
        )
    unknown = [key for key in split if key not in ("columns", "data", "index")]
    if unknown:
        where = f"dataframe_split.{clipped(unknown[0], QUOTED_CHARS)}"
        raise MalformedRequest(
            f"{where}: unknown field; expected columns, data, index",
            field=where,
        )
    columns = split.get("columns")
    if columns is not None and not (isinstance(columns, list) and all(isinstance(c, str) for c in columns)):
        raise MalformedRequest(
            "dataframe_split.columns: expected a list of feature names", field="dataframe_split.columns"
        )
    data, names = split["data"], tuple(columns) if columns is not None else None
    return lambda version: rows_to_batch(data, version.manifest.inputs, limit, "dataframe_split.data", names)


def _mlflow_parser(key: str, given: Any, limit: int) -> Callable[[ServedVersion], Batch]:
    """How one of MLflow's input formats becomes a batch for a version's schema."""
    if key == "dataframe_split":
        return _dataframe_split(given, limit)
    convert = records_to_batch if key == "dataframe_records" else instances_to_batch
    return lambda version: convert(given, version.manifest.inputs, limit, key)


@recorded("mlflow")
async def mlflow_invocations(ctx: Context, request: Request, exchange: Exchange) -> Response:
    """MLflow's scoring server: one of ``dataframe_split``, ``dataframe_records``, ``instances``,
    ``inputs`` (``params`` is accepted and unused). ``?model=`` names the model when several are
    served."""
    ctx.authorize(request)
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"content type {quoted(media_type)} is not read here; send application/json with one of "
            f"{', '.join(MLFLOW_FORMATS)}"
        )
    name = request.query_params.get("model") or ctx.only_model()
    ctx.pool.slots(name)
    body = await json_body(request, ctx.body_limits, ctx.separators(name))
    key = one_format(body, MLFLOW_FORMATS, ("params",))
    await ctx.pipeline.resolve(exchange, name, None, routing_key(request, None))
    parse = _mlflow_parser(key, body[key], ctx.settings.max_batch_rows)
    prediction = await ctx.pipeline.predict(request_id(request), exchange, "mlflow", parse)
    return answer(request, exchange, answers.plain(prediction))
