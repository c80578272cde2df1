"""Other servers' request formats, so apps move to the gateway without a code change.

KServe's v1 protocol (``POST /v1/models/{name}:predict`` with ``instances``) and
MLflow's scoring server (``POST /invocations`` with ``dataframe_split``,
``dataframe_records``, ``instances`` or ``inputs``). Each answers in its own
protocol's shape, ``{"predictions": [...]}``: the label a row for classifiers,
as those servers answer for a scikit-learn model, the value for regressors.
Routing, the prediction log and monitoring treat them like ``/predict``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from service import responses
from service.context import Context, Exchange
from service.errors import QUOTED_CHARS, MalformedRequest, UnsupportedMediaType, clipped, quoted
from service.http import JSONResponse, json_body, request_id, routing_key
from service.pool import ServedVersion
from service.recording import recorded
from service.validation import Batch, instances_to_batch, records_to_batch, rows_to_batch

#: the input formats of MLflow's scoring protocol; a request carries exactly one
MLFLOW_FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _answer(request: Request, exchange: Exchange, predictions: list[Any]) -> Response:
    rid = request_id(request)
    return JSONResponse({"predictions": predictions}, headers=exchange.headers(rid))


def _one_format(body: dict[str, Any], formats: tuple[str, ...], extra: tuple[str, ...]) -> str:
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


@recorded("v1")
async def kserve_predict(gateway: Context, request: Request, exchange: Exchange) -> Response:
    """KServe v1: ``{"instances": [...]}`` (rows as value lists or records), or columnar ``inputs``."""
    gateway.authorize(request)
    name = request.path_params["name"]
    gateway.pool.slots(name)  # an unknown model: 404 before the body is read
    body = await json_body(request, gateway.body_limits, gateway.separators(name))
    key = _one_format(body, ("instances", "inputs"), ())
    await gateway.resolve(exchange, name, None, routing_key(request, None))
    instances, limit = body[key], gateway.settings.max_batch_rows

    def parse(version: ServedVersion) -> Batch:
        return instances_to_batch(instances, version.manifest.inputs, limit, key)

    prediction = await gateway.predict_batch(request, exchange, "v1", parse)
    return _answer(request, exchange, responses.plain(prediction))


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
async def mlflow_invocations(gateway: Context, request: Request, exchange: Exchange) -> Response:
    """MLflow's scoring server: one of ``dataframe_split``, ``dataframe_records``, ``instances``,
    ``inputs`` (``params`` is accepted and unused). ``?model=`` names the model when several are
    served."""
    gateway.authorize(request)
    media_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if media_type != "application/json":
        raise UnsupportedMediaType(
            f"content type {quoted(media_type)} is not read here; send application/json with one of "
            f"{', '.join(MLFLOW_FORMATS)}"
        )
    name = request.query_params.get("model") or gateway.only_model()
    gateway.pool.slots(name)
    body = await json_body(request, gateway.body_limits, gateway.separators(name))
    key = _one_format(body, MLFLOW_FORMATS, ("params",))
    await gateway.resolve(exchange, name, None, routing_key(request, None))
    parse = _mlflow_parser(key, body[key], gateway.settings.max_batch_rows)
    prediction = await gateway.predict_batch(request, exchange, "mlflow", parse)
    return _answer(request, exchange, responses.plain(prediction))


async def kserve_model(gateway: Context, request: Request) -> Response:
    """KServe v1 model status: ``{"name", "ready"}``; 404 for a model not served."""
    name = request.path_params["name"]
    ready = gateway.pool.slots(name).champion is not None
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def kserve_models(gateway: Context, request: Request) -> Response:
    return JSONResponse({"models": gateway.pool.names})
