"""Answer bodies: the friendly ``/predict`` records and the Open Inference Protocol (v2) tensors."""

from __future__ import annotations

from typing import Any

import numpy as np

from registry.onnx_model import Prediction
from service.errors import InvalidInput, quoted
from service.pool import ServedVersion
from service.validation import V2_DATATYPE_OF, V2_TENSOR_DATATYPE

PLATFORM = "onnxruntime_onnx"


def predictions(served: ServedVersion, prediction: Prediction) -> list[dict[str, Any]]:
    """One object a row: ``label`` and ``probabilities`` by class, or ``value``."""
    if prediction.values is not None:
        return [{"value": value} for value in prediction.values.tolist()]
    if prediction.embeddings is not None:
        return [{"embedding": vector} for vector in prediction.embeddings.tolist()]
    assert prediction.labels is not None and prediction.probabilities is not None
    classes = served.manifest.output.classes
    return [
        {"label": label, "probabilities": dict(zip(classes, row, strict=True))}
        for label, row in zip(prediction.labels.tolist(), prediction.probabilities.tolist(), strict=True)
    ]


def plain(prediction: Prediction) -> list[Any]:
    """The label a row for classifiers, the value for regressors: what KServe's and MLflow's
    servers answer for a scikit-learn model."""
    if prediction.values is not None:
        return list(prediction.values.tolist())
    if prediction.embeddings is not None:
        return list(prediction.embeddings.tolist())
    assert prediction.labels is not None
    return list(prediction.labels.tolist())


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
                "datatype": V2_TENSOR_DATATYPE[t.dtype],
                "shape": [-1, *(d or -1 for d in t.shape[1:])],
            }
            for t in schema.tensors
        ]
    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        return [
            {
                "name": schema.tensor_name,
                "datatype": V2_DATATYPE_OF[schema.tensor_dtype],
                "shape": [-1, len(schema.features)],
            }
        ]
    return [{"name": f.name, "datatype": V2_DATATYPE_OF[f.dtype], "shape": [-1, 1]} for f in schema.features]


def model_metadata(served: ServedVersion, versions: list[int]) -> dict[str, Any]:
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
