"""Drift of a window of traffic against a version's reference profile: pure functions over arrays.

Per numeric feature (and numeric prediction output): PSI and Jensen-Shannon
distance on the reference's decile bins, and a two-sample Kolmogorov-Smirnov
test against the reference sample. Per categorical feature (and the predicted
label): PSI and Jensen-Shannon on the reference categories plus "other", and a
chi-square goodness-of-fit test against the reference proportions.

**Calling drift, and false alarms.** A model has many features; testing each
at 5% would raise a false alarm on most windows of a wide model. The p-values
of one model's features and outputs are adjusted together with
Benjamini-Hochberg (false discovery rate ``alpha``, default 5%): among the
features called drifted, at most 5% are expected to be false alarms. And
because with large windows a test finds any difference, however small,
"significant", a feature is called drifted only when its adjusted p-value is
below ``alpha`` *and* its PSI is at least ``psi_threshold`` (default 0.1, the
usual line between "no shift" and "moderate shift"): significant and large
enough to matter.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial.distance import jensenshannon

from registry.manifest import CategoricalProfile, NumericProfile, Profile

#: Floor for bin proportions in PSI, so an empty bin does not make it infinite.
EPSILON = 1e-4
ALPHA = 0.05
PSI_THRESHOLD = 0.1


@dataclass(frozen=True)
class DriftStatistic:
    """The drift of one feature (or prediction output) over one window."""

    name: str
    kind: Literal["feature", "prediction"]
    test: Literal["ks", "chi2"]
    window: int
    psi: float
    js_distance: float
    statistic: float
    p_value: float
    p_adjusted: float = 1.0
    drifted: bool = False


def bin_counts(values: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    """Counts in the reference's bins: (-inf, e0], (e0, e1], ..., (e_last, inf)."""
    return np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)


def category_counts(values: np.ndarray, categories: tuple[str, ...]) -> np.ndarray:
    """Counts per reference category, and a last entry for every other value."""
    codes = pd.Index(categories).get_indexer(values).astype(np.int64)
    codes[codes < 0] = len(categories)  # not a reference category (or missing): "other"
    return np.bincount(codes, minlength=len(categories) + 1)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = EPSILON) -> float:
    """Population stability index of two count vectors over the same bins."""
    p = np.maximum(reference / max(reference.sum(), 1), epsilon)
    q = np.maximum(current / max(current.sum(), 1), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) of two count vectors over the same bins."""
    if reference.sum() == 0 or current.sum() == 0:
        return 0.0
    return float(jensenshannon(reference, current, base=2))


def numeric_drift(name: str, kind: Literal["feature", "prediction"], profile: NumericProfile,
                  values: np.ndarray) -> DriftStatistic | None:  # fmt: skip
    """None when the window or the reference has no values to compare."""
    present = values[~np.isnan(values)]
    sample = np.array([v for v in profile.sample if v is not None], dtype=np.float64)
    if present.size == 0 or sample.size == 0:
        return None
    reference = np.asarray(profile.counts, dtype=np.float64)
    current = bin_counts(present, profile.edges).astype(np.float64)
    return _statistic(name, kind, "ks", reference, current, stats.ks_2samp(sample, present))


def categorical_drift(name: str, kind: Literal["feature", "prediction"], profile: CategoricalProfile,
                      values: np.ndarray) -> DriftStatistic | None:  # fmt: skip
    if values.size == 0 or profile.count == 0:
        return None
    reference = np.append(np.asarray(profile.counts, dtype=np.float64), profile.other_count)
    current = category_counts(values, profile.categories).astype(np.float64)
    expected = np.maximum(reference / reference.sum(), EPSILON)
    expected = expected / expected.sum() * current.sum()
    return _statistic(name, kind, "chi2", reference, current, stats.chisquare(current, f_exp=expected))


def _statistic(name: str, kind: Literal["feature", "prediction"], test: Literal["ks", "chi2"],
               reference: np.ndarray, current: np.ndarray, result: Any) -> DriftStatistic:  # fmt: skip
    """PSI and Jensen-Shannon on the bin counts, beside the test's statistic and p-value."""
    return DriftStatistic(
        name=name, kind=kind, test=test, window=int(current.sum()), psi=psi(reference, current),
        js_distance=js_distance(reference, current), statistic=float(result.statistic),
        p_value=float(result.pvalue),
    )  # fmt: skip


def drift_of(name: str, kind: Literal["feature", "prediction"], profile: Profile,
             values: np.ndarray) -> DriftStatistic | None:  # fmt: skip
    if isinstance(profile, NumericProfile):
        return numeric_drift(name, kind, profile, np.asarray(values, dtype=np.float64))
    return categorical_drift(name, kind, profile, np.asarray(values, dtype=object))


def decide(statistics: list[DriftStatistic], alpha: float = ALPHA,
           psi_threshold: float = PSI_THRESHOLD) -> list[DriftStatistic]:  # fmt: skip
    """Benjamini-Hochberg over one model's statistics, then drifted = significant and large enough."""
    if not statistics:
        return []
    adjusted = stats.false_discovery_control([s.p_value for s in statistics], method="bh")
    return [
        replace(s, p_adjusted=float(p), drifted=bool(p < alpha and s.psi >= psi_threshold))
        for s, p in zip(statistics, adjusted, strict=True)
    ]
