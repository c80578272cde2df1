"""A version's reference data, read and matched with its model: a table (CSV, Parquet) whose
columns become the input schema, or a tensor model's arrays (``registry.tensors``); the model run on
it once, for the profile and the calibration a push stores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd

from registry.calibration import MIN_CALIBRATION_ROWS, calibrate
from registry.errors import InvalidModel, InvalidReferenceData, SchemaMismatch
from registry.manifest import (
    MISSING_STRING,
    NUMPY_DTYPE,
    Calibration,
    FeatureSpec,
    InputSchema,
    Lineage,
    Manifest,
    OutputSpec,
    ReferenceProfile,
)
from registry.onnx_model import (
    ONNX_TO_DTYPE,
    OnnxModel,
    graph_inputs,
    load_session,
    output_spec,
    tensor_output_spec,
)
from registry.prediction import Prediction
from registry.profile import clock_of, default_rules, numeric_profile, reference_profile, sample_columns
from registry.tensors import (
    ONNX_TENSOR_TYPES,
    all_summaries,
    read_tensor_reference,
    reference_arrays,
    tensor_schema,
)

#: reference files holding tensors, for a tensor model
TENSOR_SUFFIXES = (".npz", ".npy")


def read_reference(path: Path, target: str | None = None) -> tuple[pd.DataFrame, pd.Series | None]:
    """Reference data from CSV or Parquet, and its ``target`` column apart when one is named."""
    if not path.is_file():
        raise InvalidReferenceData(f"reference data {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise InvalidReferenceData(
                f"reference data {str(path)!r}: unknown format {suffix!r}; use .csv or .parquet "
                "(or .npz, .npy: tensors, for a tensor model)"
            )
    except InvalidReferenceData:
        raise
    except Exception as exc:
        raise InvalidReferenceData(f"cannot read reference data {str(path)!r}: {exc}") from exc
    truth = None
    if target is not None:
        if target not in frame.columns:
            raise InvalidReferenceData(f"target column {target!r} is not in the reference data")
        truth = frame[target]
        frame = frame.drop(columns=[target])
    if frame.empty:
        raise InvalidReferenceData(f"reference data {str(path)!r} has no rows")
    return frame, truth


def _time_column(frame: pd.DataFrame, name: str) -> pd.Series:
    """The reference's time column, checked to be read as times (epoch seconds, or ISO 8601 text)."""
    if name not in frame.columns:
        raise InvalidReferenceData(f"time column {name!r} is not in the reference data")
    times = frame[name]
    if times.isna().any():
        raise InvalidReferenceData(f"time column {name!r}: {int(times.isna().sum())} rows have no time")
    try:
        clock_of(times)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidReferenceData(
            f"time column {name!r}: not times (epoch seconds or ISO 8601 text): {str(exc)[:200]}"
        ) from None
    return times


def calibration_of(output: OutputSpec, prediction: Prediction, truth: pd.Series | None) -> Calibration | None:
    """A classifier's calibration on labelled reference rows (see ``monitoring.estimate``); None for
    a regressor, without labels, or with too few of them."""
    if output.kind != "classification" or truth is None:
        return None
    labelled = truth.notna().to_numpy()
    if labelled.sum() < MIN_CALIBRATION_ROWS:
        return None
    values = truth[labelled].astype(str)
    unknown = sorted(set(values) - set(output.classes))
    if unknown:
        raise InvalidReferenceData(
            f"target column {truth.name!r} holds {unknown[:5]}, not among the model's classes "
            f"{list(output.classes)}"
        )
    assert prediction.probabilities is not None
    return calibrate(prediction.probabilities[labelled], values.tolist(), output.classes)


def _column_fits(frame: pd.DataFrame, column: str, dtype: str) -> None:
    series = frame[column]
    if dtype == "string":
        return
    if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
        raise SchemaMismatch(
            f"reference column {column!r} has dtype {series.dtype}, the model expects {dtype}"
        )
    if dtype == "int64" and series.isna().any():
        raise SchemaMismatch(f"reference column {column!r} has missing values; the model input is int64")


def infer_schema(model: Any, frame: pd.DataFrame) -> InputSchema:
    """Match the graph's inputs with the reference columns, or say exactly how they differ."""
    nodes = model.get_inputs()
    for node in nodes:
        if node.type in ONNX_TENSOR_TYPES and (len(node.shape) >= 3 or node.type not in ONNX_TO_DTYPE):
            raise SchemaMismatch(
                f"input {node.name!r} ({node.type} {list(node.shape)}) is a tensor input, not a table's "
                f"columns: push its reference tensors as .npz (one array per input: "
                f"{', '.join(n.name for n in nodes)}) or .npy"
            )
    inputs = graph_inputs(model)
    columns = [str(c) for c in frame.columns]
    if len(inputs) == 1 and len(inputs[0].shape) == 2:
        tensor = inputs[0]
        width = tensor.shape[1]
        if isinstance(width, int) and width != len(columns):
            raise SchemaMismatch(
                f"the model input {tensor.name!r} takes {width} features, the reference data has "
                f"{len(columns)} columns ({', '.join(columns[:8])}{', ...' if len(columns) > 8 else ''})"
            )
        for column in columns:
            _column_fits(frame, column, tensor.dtype)
        features = tuple(
            FeatureSpec(name=c, dtype=tensor.dtype, allow_missing=bool(frame[c].isna().any()))
            for c in columns
        )
        return InputSchema(
            layout="matrix", features=features, tensor_name=tensor.name, tensor_dtype=tensor.dtype
        )
    names = [i.name for i in inputs]
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        raise SchemaMismatch(
            "the model's inputs and the reference columns differ: "
            f"missing from the reference: {missing or 'none'}; not model inputs: {extra or 'none'}"
        )
    for graph_input in inputs:
        rank = len(graph_input.shape)
        if rank not in (1, 2) or (rank == 2 and graph_input.shape[1] not in (1, None)):
            raise InvalidModel(
                f"input {graph_input.name!r} has shape {list(graph_input.shape)}; a per-feature "
                "input must be [N] or [N, 1]"
            )
        _column_fits(frame, graph_input.name, graph_input.dtype)
    features = tuple(
        FeatureSpec(name=i.name, dtype=i.dtype, allow_missing=bool(frame[i.name].isna().any()))
        for i in inputs
    )
    return InputSchema(layout="columns", features=features)


def string_column(series: pd.Series) -> np.ndarray:
    """A string feature as its model receives it: a null is :data:`MISSING_STRING`, as at serving time."""
    column: np.ndarray = (
        series.astype(object).where(series.notna(), MISSING_STRING).astype(str).to_numpy(dtype=object)
    )
    return column


def reference_feeds(model: OnnxModel, frame: pd.DataFrame) -> dict[str, Any]:
    schema = model.schema
    if schema.layout == "matrix":
        assert schema.tensor_dtype is not None
        matrix = frame[list(schema.names)].to_numpy(dtype=NUMPY_DTYPE[schema.tensor_dtype])
        return model.feeds(None, matrix)
    columns = {
        f.name: (
            string_column(frame[f.name])
            if f.dtype == "string"
            else frame[f.name].to_numpy(dtype=NUMPY_DTYPE[f.dtype])
        )
        for f in schema.features
    }
    return model.feeds(columns, None)


@dataclass(frozen=True)
class Examined:
    """A model matched with its reference data: the schema and output it declares, the reference as
    a table (a tensor model's per-sample summaries), the model's predictions on it, and the labels
    and times the reference held apart."""

    schema: InputSchema
    output: OutputSpec
    frame: pd.DataFrame
    prediction: Prediction
    truth: pd.Series | None
    times: pd.Series | None
    #: the loaded model (tabular models: its reference attributions are computed with it)
    model: OnnxModel | None = None

    def manifest(
        self,
        name: str,
        version: int,
        actor: str,
        model_bytes: bytes,
        model_file: str,
        lineage: Lineage,
        *,
        attributions: bool = True,
    ) -> Manifest:
        """The new version's manifest: the model's identity, its schema and output, and what its
        reference data showed (profile, plausibility rules, calibration, and with ``attributions``
        a tabular model's reference attributions)."""
        proto = onnx.load_from_string(model_bytes)
        profile = reference_profile(self.frame, self.schema, self.output, self.prediction, self.times)
        explained = self.schema.layout != "tensor" and self.output.kind != "embedding"
        if attributions and self.model is not None and explained:
            try:
                update = reference_attributions(model_bytes, self.model, profile)
            except Exception as exc:
                raise InvalidModel(
                    "the model failed while its reference attributions were computed (on rows that mix "
                    f"reference values): {exc}; push it without them (--no-attributions) to skip them"
                ) from exc
            profile = profile.model_copy(update=update)
        return Manifest(
            name=name,
            version=version,
            created_at=datetime.now(UTC),
            created_by=actor,
            model_file=model_file,
            sha256=hashlib.sha256(model_bytes).hexdigest(),
            size_bytes=len(model_bytes),
            opset=max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0),
            producer=f"{proto.producer_name} {proto.producer_version}".strip(),
            inputs=self.schema,
            output=self.output,
            lineage=lineage,
            reference=profile,
            plausibility=default_rules(profile, self.output),
            calibration=calibration_of(self.output, self.prediction, self.truth),
        )


def examine(
    model_bytes: bytes,
    reference: Path,
    target: str | None = None,
    classes: tuple[str, ...] = (),
    time_column: str | None = None,
) -> Examined:
    """Load the model, read ``reference`` for it and run it there; refused (a registry error) when
    the two do not fit or the model fails. See ``Registry.push`` for the parameters."""
    session = load_session(model_bytes, intra_op_threads=1)
    tensors = reference.suffix.lower() in TENSOR_SUFFIXES
    times = None
    if tensors and time_column:
        raise InvalidReferenceData("a time column is read from a table (.csv, .parquet), not tensors")
    if tensors:
        arrays, truth = read_tensor_reference(reference, target)
        schema = tensor_schema(session.get_inputs(), arrays)
        feeds = reference_arrays(schema, arrays)
        output = tensor_output_spec(session, model_bytes, classes, {k: v[:256] for k, v in feeds.items()})
        frame = pd.DataFrame(all_summaries(schema, feeds))
    else:
        if classes:
            raise InvalidModel("classes are named only for tensor models (a .npz or .npy reference)")
        frame, truth = read_reference(reference, target)
        times = _time_column(frame, time_column) if time_column else None
        if times is not None:
            frame = frame.drop(columns=[times.name])
        schema = infer_schema(session, frame)
        output = output_spec(session, model_bytes)
    model = OnnxModel(session, schema, output)
    try:
        prediction = model.predict(feeds if tensors else reference_feeds(model, frame))
    except Exception as exc:
        raise InvalidModel(f"the model failed on the reference data: {exc}") from exc
    if prediction.labels is not None:
        unknown = set(map(str, np.unique(prediction.labels.astype(str)))) - set(output.classes)
        if unknown:
            raise InvalidModel(f"the model predicts labels {sorted(unknown)} not among its classes")
    return Examined(schema, output, frame, prediction, truth, times, model)


def reference_attributions(model_bytes: bytes, model: OnnxModel, profile: ReferenceProfile) -> dict[str, Any]:
    """The reference sample's attributions as explanations in the loop compute them (attribution
    drift is tested against them): ``attributions`` (each feature's importance profile) and
    ``attribution_method``. Every sample row for a tree ensemble (exact, fast), the first
    ``REFERENCE_SAMPLED_ROWS`` for a model explained by sampling."""
    from registry.explain.explainers import REFERENCE_SAMPLED_ROWS, loop_explainer, predictor

    schema = model.schema
    columns = sample_columns(schema, profile, profile.sample_rows)
    explainer = loop_explainer(model_bytes, schema, model.output, columns, predictor(model))
    rows = profile.sample_rows if explainer.method.startswith("tree") else REFERENCE_SAMPLED_ROWS
    rows = min(rows, profile.sample_rows)
    importance = explainer.importance({name: c[:rows] for name, c in columns.items()}, rows)
    index = np.arange(rows)
    return {
        "attributions": {
            name: numeric_profile(importance[:, j], index) for j, name in enumerate(schema.names)
        },
        "attribution_method": explainer.method,
    }
