"""Tensor models (images, token ids, embeddings): their inputs' schema and per-sample summaries.

A tabular model's inputs are its features; an image's 3,072 pixels are not
3,072 features worth a drift test each, and a sentence's token ids mean
nothing one position at a time. So each sample of a tensor input is
summarised by a few numbers, which the gateway computes on every request and
then logs, checks and monitors exactly as it would a tabular model's
features:

- ``mean``, ``std``, ``min``, ``max`` over the sample's finite values: per
  channel (axis 1) when the input has at least three dimensions and 2 to
  ``MAX_CHANNELS`` channels (an image's colours), else over the whole sample;
- ``nonfinite``: the share of NaN or infinite values (float inputs), which
  the reference had none of, so one is flagged as out of range;
- ``nonzero``: the share of non-zero values (integer inputs): for padded
  token ids, the text's length.

Brighter images move ``mean``, a new camera ``std`` or a channel's ``max``,
longer texts ``nonzero``, an unseen vocabulary ``max``. The reference
profile holds the same summaries of the reference tensors, and the
plausibility rules their ranges ("values seen in the reference").
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from registry.errors import InvalidModel, InvalidReferenceData, SchemaMismatch
from registry.manifest import FeatureSpec, InputSchema, TensorDType, TensorSpec

#: ONNX element types a tensor input may have, as our dtype names
ONNX_TENSOR_TYPES: dict[str, TensorDType] = {
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}
#: inputs with more channels than this (a sequence's positions, say) are summarised whole
MAX_CHANNELS = 16
STATISTICS = ("mean", "std", "min", "max")


def is_float(dtype: TensorDType) -> bool:
    return dtype.startswith("float")


def summary_names(spec: TensorSpec) -> list[str]:
    """The summary features of one input, in order: ``pixels.c0.mean``, ..., ``pixels.nonfinite``."""
    prefixes = [f"{spec.name}.c{c}" for c in range(spec.channels)] if spec.channels else [spec.name]
    names = [f"{prefix}.{statistic}" for prefix in prefixes for statistic in STATISTICS]
    return [*names, f"{spec.name}.{'nonfinite' if is_float(spec.dtype) else 'nonzero'}"]


def summaries(spec: TensorSpec, array: np.ndarray) -> dict[str, np.ndarray]:
    """Each sample's summaries (one float64 array a summary feature, a value a sample)."""
    rows = array.shape[0]
    # floats are reduced in their own precision, accumulated in float64: no float64 copy of an image
    values = (array if is_float(spec.dtype) else array.astype(np.float64)).reshape(
        rows, spec.channels or 1, -1
    )
    finite = np.isfinite(values) if is_float(spec.dtype) else None
    if finite is None or finite.all():
        stats = (
            values.mean(axis=2, dtype=np.float64),
            values.std(axis=2, dtype=np.float64),
            values.min(axis=2).astype(np.float64),
            values.max(axis=2).astype(np.float64),
        )
    else:
        masked = np.where(finite, values, np.nan).astype(np.float64)
        # numpy warns about an all-NaN sample's mean; such a sample is what ``nonfinite`` reports
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = (np.nanmean(masked, 2), np.nanstd(masked, 2), np.nanmin(masked, 2), np.nanmax(masked, 2))
    found: dict[str, np.ndarray] = {}
    prefixes = [f"{spec.name}.c{c}" for c in range(spec.channels)] if spec.channels else [spec.name]
    for channel, prefix in enumerate(prefixes):
        for statistic, per_channel in zip(STATISTICS, stats, strict=True):
            found[f"{prefix}.{statistic}"] = per_channel[:, channel]
    if finite is not None:
        found[f"{spec.name}.nonfinite"] = (~finite).reshape(rows, -1).mean(axis=1)
    else:
        found[f"{spec.name}.nonzero"] = (values.reshape(rows, -1) != 0).mean(axis=1)
    return found


def all_summaries(schema: InputSchema, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    found: dict[str, np.ndarray] = {}
    for spec in schema.tensors:
        found.update(summaries(spec, arrays[spec.name]))
    return found


def read_tensor_reference(path: Path, target: str | None) -> tuple[dict[str, np.ndarray], pd.Series | None]:
    """Reference tensors from ``.npz`` (one array per input, and the ``target`` labels if named) or
    ``.npy`` (a model with one input), each with the samples along axis 0."""
    try:
        if path.suffix.lower() == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError) as exc:
        raise InvalidReferenceData(f"cannot read reference tensors {str(path)!r}: {exc}") from exc
    truth = None
    if target is not None:
        if target not in arrays:
            raise InvalidReferenceData(
                f"target {target!r} is not an array in {path.name}; it has {', '.join(sorted(arrays))}"
            )
        labels = arrays.pop(target)
        truth = pd.Series(labels.reshape(-1).astype(str), name=target)
    sizes = {name or path.name: a.shape[0] if a.ndim else 0 for name, a in arrays.items()}
    if not arrays or 0 in sizes.values() or len(set(sizes.values())) != 1:
        raise InvalidReferenceData(
            f"reference tensors {path.name}: expected arrays with the same number of samples (axis 0, at "
            f"least one), got {', '.join(f'{n}: {s}' for n, s in sizes.items()) or 'no arrays'}"
        )
    if truth is not None and len(truth) != next(iter(sizes.values())):
        raise InvalidReferenceData(
            f"target {target!r} has {len(truth)} labels for {next(iter(sizes.values()))} samples"
        )
    return arrays, truth


def tensor_schema(graph_inputs: list[Any], arrays: dict[str, np.ndarray]) -> InputSchema:
    """Match the graph's inputs with the reference arrays, or say which input does not fit and why.

    ``graph_inputs``: ONNX Runtime's ``NodeArg`` of each input (name, type, shape)."""
    if set(arrays) == {""}:
        if len(graph_inputs) != 1:
            listed = ", ".join(i.name for i in graph_inputs)
            raise SchemaMismatch(
                f"a .npy reference holds one input; the model takes {len(graph_inputs)} ({listed}): use .npz"
            )
        arrays = {graph_inputs[0].name: arrays[""]}
    names = [i.name for i in graph_inputs]
    missing, extra = [n for n in names if n not in arrays], [n for n in arrays if n not in names]
    if missing or extra:
        hint = " (labels? name their array with --target)" if extra and not missing else ""
        raise SchemaMismatch(
            f"the model's inputs and the reference arrays differ: missing from the reference: "
            f"{missing or 'none'}; not model inputs: {extra or 'none'}{hint}"
        )
    specs, features = [], []
    for node in graph_inputs:
        dtype = ONNX_TENSOR_TYPES.get(node.type)
        if dtype is None:
            raise InvalidModel(
                f"input {node.name!r} has type {node.type}: a tensor model's inputs are "
                f"{', '.join(ONNX_TENSOR_TYPES)} (a string or sequence input is served as a table's column)"
            )
        array = arrays[node.name]
        shape = tuple(d if isinstance(d, int) else None for d in node.shape)
        if len(shape) < 1:
            raise InvalidModel(
                f"input {node.name!r} is a scalar; a tensor input needs a batch dimension first"
            )
        channels = array.shape[1] if array.ndim >= 3 and 2 <= array.shape[1] <= MAX_CHANNELS else None
        spec = TensorSpec(
            name=node.name, dtype=dtype, shape=(None, *shape[1:]), sample_shape=tuple(array.shape[1:]),
            channels=channels,
        )  # fmt: skip
        if not spec.fits(array.shape):
            raise SchemaMismatch(
                f"input {node.name!r} has shape {list(node.shape)}; its reference array has shape "
                f"{list(array.shape)}"
            )
        specs.append(spec)
        features += [FeatureSpec(name=n, dtype="float64") for n in summary_names(spec)]
    return InputSchema(layout="tensor", features=tuple(features), tensors=tuple(specs))


def named(schema: InputSchema, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Arrays keyed by input name: a ``.npy`` file's one array (keyed ``""``) named after the model's
    one input."""
    return {schema.tensors[0].name: arrays[""]} if set(arrays) == {""} else arrays


def reference_arrays(schema: InputSchema, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The reference arrays keyed by input name (:func:`named`), cast to each input's dtype."""
    arrays = named(schema, arrays)
    return {
        spec.name: np.asarray(arrays[spec.name]).astype(spec.dtype, copy=False) for spec in schema.tensors
    }
