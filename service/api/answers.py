"""Answer bodies: the friendly ``/predict`` records, and the plain values other servers answer."""

from __future__ import annotations

from typing import Any

from registry.prediction import Prediction
from service.serving.pool import ServedVersion


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
    return list(prediction.answer[1].tolist())
