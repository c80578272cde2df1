"""The Open Inference Protocol (v2, as KServe and Triton speak it): inference in JSON or binary
tensors, and the model and server metadata routes."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from registry.prediction import Prediction
from service.api import binary
from service.api.context import Context
from service.api.http import JSONResponse, infer_body, model_and_version, request_id, routing_key
from service.api.recording import recorded
from service.errors import InvalidInput, MalformedRequest, quoted
from service.serving import datatypes
from service.serving.pipeline import Exchange
from service.serving.pool import ServedVersion
from service.serving.tensors import tensors_to_batch

PLATFORM = "onnxruntime_onnx"
VERSION = importlib.metadata.version("modelgate")


@recorded("v2")
async def infer(ctx: Context, request: Request, exchange: Exchange) -> Response:
    ctx.authorize(request)
    name, version = model_and_version(request)
    # an unknown model or version: 404 before the body is read
    separators = ctx.separators(name, await ctx.pipeline.version_served(name, version))
    body = await infer_body(request, ctx.body_limits, separators)
    echoed = _echoed_id(body.get("id"))
    parameters = body.get("parameters")
    given_key = parameters.get("routing_key") if isinstance(parameters, dict) else None
    served = await ctx.pipeline.resolve(exchange, name, version, routing_key(request, given_key))
    if "inputs" not in body:
        raise MalformedRequest("inputs: required, a list of input tensors", field="inputs")
    outputs, in_binary = requested_outputs(body, served)
    tensors, limit, rid = body["inputs"], ctx.settings.max_batch_rows, request_id(request)
    prediction = await ctx.pipeline.predict(
        rid, exchange, "v2", lambda version: tensors_to_batch(tensors, version.manifest.inputs, limit)
    )
    answer = {
        "model_name": served.name,
        "model_version": str(served.version),
        "id": echoed or rid,
        "outputs": infer_outputs(served, prediction, outputs),
        "parameters": {"arm": exchange.arm},
    }
    headers = exchange.headers(rid)
    if not in_binary:
        return JSONResponse(answer, headers=headers)
    content, length = binary.encode(answer, in_binary)
    headers[binary.HEADER] = str(length)
    return Response(content, media_type="application/octet-stream", headers=headers)


def _echoed_id(given: Any) -> str | None:
    """A v2 request's ``id``, echoed in its answer: a string or a number, at most 256 characters."""
    if given is None or given == "":
        return None
    if not isinstance(given, str | int | float) or isinstance(given, bool) or len(str(given)) > 256:
        raise MalformedRequest(f"id: expected a string of at most 256 characters, got {quoted(str(given))}",
                               field="id")  # fmt: skip
    return str(given)


async def model_metadata(ctx: Context, request: Request) -> Response:
    served = await ctx.pipeline.version_served(*model_and_version(request))
    versions = ctx.pool.registry.versions(served.name)
    return JSONResponse(_metadata(served, versions))


async def model_ready(ctx: Context, request: Request) -> Response:
    served = await ctx.pipeline.version_served(*model_and_version(request))  # 404 / 503 when not servable
    return JSONResponse({"name": served.name, "version": str(served.version), "ready": True})


async def server_metadata(ctx: Context, request: Request) -> Response:
    return JSONResponse({"name": "modelgate", "version": VERSION, "extensions": ["binary_tensor_data"]})


def output_tensors(served: ServedVersion) -> list[dict[str, Any]]:
    """The v2 output tensors the model answers with, as metadata (``-1`` for the batch dimension)."""
    output = served.manifest.output
    if output.kind == "regression":
        return [{"name": "value", "datatype": "FP64", "shape": [-1]}]
    if output.kind == "embedding":
        return [{"name": "embedding", "datatype": "FP32", "shape": [-1, output.embedding_dim or -1]}]
    return [
        {"name": "label", "datatype": served.label_datatype or "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(output.classes)]},
    ]


def input_tensors(served: ServedVersion) -> list[dict[str, Any]]:
    schema = served.manifest.inputs
    if schema.layout == "tensor":
        return [
            {
                "name": t.name,
                "datatype": datatypes.OF_TENSOR[t.dtype],
                "shape": [-1, *(d or -1 for d in t.shape[1:])],
            }
            for t in schema.tensors
        ]
    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        return [
            {
                "name": schema.tensor_name,
                "datatype": datatypes.OF_FEATURE[schema.tensor_dtype],
                "shape": [-1, len(schema.features)],
            }
        ]
    return [
        {"name": f.name, "datatype": datatypes.OF_FEATURE[f.dtype], "shape": [-1, 1]} for f in schema.features
    ]


def _metadata(served: ServedVersion, versions: list[int]) -> dict[str, Any]:
    manifest = served.manifest
    return {
        "name": manifest.name,
        "versions": [str(v) for v in versions],
        "platform": PLATFORM,
        "inputs": input_tensors(served),
        "outputs": output_tensors(served),
        "parameters": {
            "served_version": str(manifest.version),
            "kind": manifest.output.kind,
            "classes": list(manifest.output.classes),
            "features": [f.name for f in manifest.inputs.features],
            "layout": manifest.inputs.layout,
        },
    }


def requested_outputs(body: dict[str, Any], served: ServedVersion) -> tuple[list[str], set[str]]:
    """The names in the request's ``outputs`` list, checked (all outputs when it is absent), and
    those to answer as binary tensor data: each output's ``parameters.binary_data``, by default
    the request's ``parameters.binary_data_output``."""
    available = [t["name"] for t in output_tensors(served)]
    parameters = body.get("parameters")
    all_binary = isinstance(parameters, dict) and parameters.get("binary_data_output") is True
    requested = body.get("outputs")
    if requested is None:
        return available, set(available) if all_binary else set()
    if not isinstance(requested, list) or not all(isinstance(o, dict) and "name" in o for o in requested):
        raise InvalidInput("outputs: expected a list of objects with a name", field="outputs")
    in_binary = set()
    for index, output in enumerate(requested):
        name = output["name"]
        if name not in available:
            raise InvalidInput(
                f"outputs[{index}].name: unknown output {quoted(name)}; available: {', '.join(available)}",
                field=f"outputs[{index}].name",
            )
        given = output.get("parameters")
        wanted = given.get("binary_data", all_binary) if isinstance(given, dict) else all_binary
        if wanted is True:
            in_binary.add(name)
    return [o["name"] for o in requested], in_binary


def infer_outputs(served: ServedVersion, prediction: Prediction, names: list[str]) -> list[dict[str, Any]]:
    rows = prediction.rows
    tensors: dict[str, dict[str, Any]] = {}
    if prediction.embeddings is not None:
        data = np.ascontiguousarray(prediction.embeddings, dtype=np.float32)
        tensors["embedding"] = {
            "name": "embedding",
            "datatype": "FP32",
            "shape": list(data.shape),
            "data": data.reshape(-1),
        }
    elif prediction.values is not None:
        tensors["value"] = {"name": "value", "datatype": "FP64", "shape": [rows], "data": prediction.values}
    else:
        assert prediction.labels is not None and prediction.probabilities is not None
        labels = prediction.labels
        tensors["label"] = {
            "name": "label",
            "datatype": served.label_datatype or "BYTES",
            "shape": [rows],
            "data": labels.tolist() if labels.dtype == object else labels,
        }
        tensors["probabilities"] = {
            "name": "probabilities",
            "datatype": "FP64",
            "shape": list(prediction.probabilities.shape),
            "data": np.ascontiguousarray(prediction.probabilities).reshape(-1),
        }
    return [tensors[name] for name in names]
