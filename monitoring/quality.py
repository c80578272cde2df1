"""Live quality once ground truth arrives: pure functions over predictions and their truth."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import log_loss, roc_auc_score


def classification_quality(
    truth: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]
) -> dict[str, Any]:
    """Accuracy, log-loss and ROC AUC (one-vs-rest for several classes). AUC is None until every
    class has been seen in the truth: it is not defined before."""
    truth = truth.astype(str)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[t] for t in truth])
    present = np.unique(y)
    auc = None
    if present.size == len(classes) and len(classes) >= 2:
        auc = float(
            roc_auc_score(y, probabilities[:, 1])
            if len(classes) == 2
            else roc_auc_score(y, probabilities, multi_class="ovr", labels=list(range(len(classes))))
        )
    clipped = np.clip(np.nan_to_num(probabilities, nan=1 / len(classes)), 1e-15, 1)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return {
        "samples": int(truth.size),
        "accuracy": float(np.mean(labels.astype(str) == truth)),
        "log_loss": float(log_loss(y, clipped, labels=list(range(len(classes))))),
        "roc_auc": auc,
    }


def regression_quality(truth: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    errors = values.astype(np.float64) - truth.astype(np.float64)
    return {
        "samples": int(truth.size),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
    }
