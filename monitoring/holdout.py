"""Evaluating a candidate version against the champion on a labelled holdout: reading the data
(a table, or a tensor model's arrays), running both versions on it, scoring them with
``monitoring.evaluation`` and keeping the verdict in the registry's audit trail."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from monitoring.compare import correct
from monitoring.evaluation import evaluate
from registry.aliases import AuditEntry
from registry.errors import EvaluationRefused
from registry.onnx_model import OnnxModel, load_session
from registry.reference import read_reference, reference_feeds
from registry.store import Registry
from registry.tensors import named, read_tensor_reference, reference_arrays


@dataclass(frozen=True)
class Holdout:
    """What to evaluate: ``candidate`` of model ``name`` on the labelled ``data`` (``target`` the
    label column or array), per value of each of ``segments`` too."""

    name: str
    candidate: int
    data: Path
    target: str
    segments: tuple[str, ...] = ()
    alpha: float = 0.05
    min_segment_rows: int = 30
    reason: str = ""


class _TableData:
    """Labelled rows for a tabular model's evaluation: a CSV or Parquet table."""

    def __init__(self, holdout: Holdout) -> None:
        self.data = holdout.data
        self.frame, _ = read_reference(holdout.data)
        missing = [c for c in [holdout.target, *holdout.segments] if c not in self.frame.columns]
        if missing:
            raise EvaluationRefused(
                f"--data {holdout.data}: no column {', '.join(map(repr, missing))}; "
                f"it has {', '.join(self.frame.columns)}"
            )
        self.truth: list[Any] = self.frame[holdout.target].tolist()
        self.segments = {column: self.frame[column].to_numpy() for column in holdout.segments}

    def feeds(self, model: OnnxModel, version: int) -> list[dict[str, Any]]:
        try:
            return [reference_feeds(model, self.frame)]
        except KeyError as exc:
            raise EvaluationRefused(
                f"--data {self.data}: version {version} needs the feature {exc}, not in the data"
            ) from None


class _TensorData:
    """Labelled samples for a tensor model's evaluation: a ``.npz`` with one array an input, the
    ``--target`` labels and each ``--segment``, one value a sample (or a ``.npy`` of the one input, with
    neither), run through the models a chunk at a time so a large holdout of images fits in memory."""

    CHUNK = 256

    def __init__(self, holdout: Holdout) -> None:
        data = self.data = holdout.data
        self.arrays, truth = read_tensor_reference(data, holdout.target)
        assert truth is not None
        self.truth = truth.tolist()
        self.segments: dict[str, np.ndarray] = {}
        for column in holdout.segments:
            if column not in self.arrays:
                raise EvaluationRefused(
                    f"--data {data}: no array {column!r} for --segment; it has {', '.join(self.arrays)}"
                )
            values = self.arrays.pop(column)
            if values.ndim != 1:
                raise EvaluationRefused(
                    f"--data {data}: segment {column!r} has shape {list(values.shape)}; "
                    "give one value a sample"
                )
            self.segments[column] = values.astype(str)

    def feeds(self, model: OnnxModel, version: int) -> list[dict[str, Any]]:
        arrays = named(model.schema, self.arrays)
        for spec in model.schema.tensors:
            if spec.name not in arrays:
                raise EvaluationRefused(
                    f"--data {self.data}: version {version} needs the input {spec.name!r}, not in the data; "
                    f"it has {', '.join(sorted(arrays))}"
                )
            if not spec.fits(arrays[spec.name].shape):
                raise EvaluationRefused(
                    f"--data {self.data}: input {spec.name!r} of version {version} takes shape "
                    f"{spec.shown()}, the data has {list(arrays[spec.name].shape)}"
                )
        inputs = reference_arrays(model.schema, arrays)
        rows = len(self.truth)
        return [
            {name: array[start : start + self.CHUNK] for name, array in inputs.items()}
            for start in range(0, rows, self.CHUNK)
        ]


def _pair(registry: Registry, holdout: Holdout) -> tuple[int, bool]:
    """The champion to evaluate against, and whether both versions take tensors; refused when the
    two cannot be scored on the same labelled data."""
    name, candidate = holdout.name, holdout.candidate
    champion = registry.aliases(name).champion
    if champion is None:
        raise EvaluationRefused(f"{name} has no champion to evaluate version {candidate} against")
    if champion == candidate:
        raise EvaluationRefused(f"{name}:{candidate} is the champion; evaluate another version against it")
    manifests = {version: registry.manifest(name, version) for version in (champion, candidate)}
    for version, manifest in manifests.items():
        if manifest.output.kind == "embedding":
            raise EvaluationRefused(
                f"{name}:{version} answers embeddings: there is no label to score it against"
            )
    layouts = {version: m.inputs.layout == "tensor" for version, m in manifests.items()}
    if layouts[champion] != layouts[candidate]:
        tensors = next(v for v, tensor in layouts.items() if tensor)
        raise EvaluationRefused(
            f"{name}:{tensors} takes tensors and the other version a table: no data fits both"
        )
    return champion, layouts[candidate]


def _outcomes(registry: Registry, name: str, version: int, labelled: _TableData | _TensorData) -> np.ndarray:
    """Each labelled row's outcome for one version: right or wrong, or its absolute error."""
    manifest, model_bytes = registry.read_model(name, version)
    model = OnnxModel(load_session(model_bytes, 1), manifest.inputs, manifest.output)
    outputs: dict[str, list[Any]] = {}
    for feeds in labelled.feeds(model, version):
        name, answers = model.predict(feeds).answer
        outputs.setdefault(name, []).extend(answers.tolist())
    return correct(outputs, labelled.truth)


def run_evaluation(registry: Registry, holdout: Holdout) -> AuditEntry:
    """Evaluate the candidate against the champion and record the verdict; the audit entry holds it.
    Raises ``EvaluationRefused`` when the pair or the data cannot be evaluated."""
    champion, tensors = _pair(registry, holdout)
    labelled = _TensorData(holdout) if tensors else _TableData(holdout)
    versions = (champion, holdout.candidate)
    outcomes = [_outcomes(registry, holdout.name, version, labelled) for version in versions]
    data = holdout.data
    evaluation = evaluate(
        outcomes[0],
        outcomes[1],
        labelled.segments,
        champion_version=champion,
        candidate_version=holdout.candidate,
        data=f"{data.name} sha256:{hashlib.sha256(data.read_bytes()).hexdigest()}",
        alpha=holdout.alpha,
        min_rows=holdout.min_segment_rows,
    )
    return registry.record_evaluation(holdout.name, evaluation, reason=holdout.reason)
