"""Live quality once ground truth arrives: pure functions over predictions and their truth.

Quality is also measured per segment: per value of a chosen input feature
(``MODELGATE_QUALITY_SEGMENTS``), because an average can hide a group of users
for whom the model is much worse. A segment's values are bounded by the
reference profile, so the metrics' label sets stay small: a categorical
feature's ten most frequent reference categories (the rest is ``other``), a
numeric feature's reference quintiles, named by their bounds.
"""

from __future__ import annotations

import itertools

import numpy as np

from monitoring.report import Measured
from registry.manifest import CategoricalProfile, Profile

#: categories of a categorical segment feature measured apart; rarer ones are "other"
MAX_SEGMENT_CATEGORIES = 10
#: a numeric segment feature is cut at these reference quantiles (its deciles' 2nd, 4th, 6th, 8th)
QUINTILE_EDGES = (1, 3, 5, 7)
MISSING = "missing"
OTHER = "other"


def segment_of(profile: Profile, values: np.ndarray) -> np.ndarray:
    """Each row's segment name: its category (or ``other``), or the reference quintile its number
    falls in, as ``(low, high]``; ``missing`` for a null."""
    if isinstance(profile, CategoricalProfile):
        known = set(profile.categories[:MAX_SEGMENT_CATEGORIES])
        return np.array(
            [MISSING if v is None or v == "" else (str(v) if str(v) in known else OTHER) for v in values],
            dtype=object,
        )
    numbers = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    edges = profile.edges
    cuts = sorted({edges[i] for i in QUINTILE_EDGES if i < len(edges)} if len(edges) > 4 else set(edges))
    bounds = [-np.inf, *cuts, np.inf]
    intervals = [f"({_bound(low)}, {_bound(high)}]" for low, high in itertools.pairwise(bounds)]
    names = np.array([*intervals[:-1], intervals[-1].replace("]", ")"), MISSING], dtype=object)
    index = np.searchsorted(np.asarray(cuts, dtype=np.float64), numbers, side="left")
    return names[np.where(np.isnan(numbers), len(names) - 1, index)]


def _bound(value: float) -> str:
    return "-inf" if value == -np.inf else "+inf" if value == np.inf else f"{value:.4g}"


def classification_quality(
    truth: np.ndarray, labels: np.ndarray, probabilities: np.ndarray, classes: tuple[str, ...]
) -> Measured:
    """Accuracy, log-loss and ROC AUC (one-vs-rest for several classes). AUC is None until every
    class has been seen in the truth: it is not defined before."""
    # imported here: scikit-learn is the largest import of the monitor process, needed once labelled
    from sklearn.metrics import log_loss, roc_auc_score

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


def regression_quality(truth: np.ndarray, values: np.ndarray) -> Measured:
    errors = values.astype(np.float64) - truth.astype(np.float64)
    return {
        "samples": int(truth.size),
        "mae": float(np.mean(np.abs(errors))),
        "rmse": float(np.sqrt(np.mean(errors**2))),
    }
