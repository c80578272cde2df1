"""Reference profiles and default plausibility rules, computed from reference data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from registry.manifest import (
    MISSING_STRING,
    NUMPY_DTYPE,
    CategoricalProfile,
    EmbeddingProfile,
    FeatureDType,
    HourDistribution,
    InputRule,
    InputSchema,
    NumericProfile,
    OutputRule,
    OutputSpec,
    PlausibilityRules,
    PredictionProfile,
    Profile,
    ReferenceProfile,
)
from registry.prediction import Prediction

if TYPE_CHECKING:
    import pandas as pd

#: Quantile bins per numeric feature: ten deciles are the usual PSI binning and
#: keep each bin populated on small references.
BINS = 10
#: Rows kept for warming sessions up (and, in manifests older than ``cdf_values``, for the tests).
SAMPLE_ROWS = 1000
#: Support points of a numeric reference's distribution function: the drift tests read the
#: reference's CDF off them to within 1/1000, and a feature with fewer distinct values keeps all.
CDF_POINTS = 1000
#: Reference vectors kept for an embedding model's multivariate drift test.
EMBEDDING_SAMPLE = 200
#: Categorical profiles keep this many most frequent categories, the rest is "other".
MAX_CATEGORIES = 50
#: Input ranges are widened by this share of the reference range before a value is implausible.
RANGE_MARGIN = 0.1
#: An hour of the day, or of one day of the week, is profiled apart once the reference has this many
#: rows in it ...
HOUR_MIN_ROWS = 100
#: ... with this many support points (24 hours of every numeric quantity stay a few MB at most)
HOUR_POINTS = 200


def narrowed(values: np.ndarray, dtype: FeatureDType) -> np.ndarray:
    """``values`` as the model receives them, back in float64: a float32 input is rounded to float32.

    The gateway narrows a float32 feature before it is predicted and logged, so the reference is
    profiled at that precision too: a value sitting on a decile edge in float64 would otherwise land
    on the edge's other side once live, and a clean window would look drifted.
    """
    values = np.asarray(values, dtype=np.float64)
    if dtype == "float32":
        with np.errstate(over="ignore"):
            return values.astype(np.float32).astype(np.float64)
    return values


def support(
    present: np.ndarray, points: int = CDF_POINTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Support points of the values' distribution function, the values below and at or below each,
    and the tie factor ``1 - sum(p**3)`` over the distinct values' shares.

    Every distinct value when there are at most ``points``; else every value holding at least half a
    step's share (a tie that large is an atom the distribution function jumps at, and must be one of
    its points), and evenly spaced order statistics of the other values, their minimum and maximum
    among them. Spaced over the others, not over all: a claim amount that is 0 on 99% of rows kept
    10 points of its tail when they were spaced over all, and its tail is what drifts.
    """
    ordered = np.sort(np.asarray(present, dtype=np.float64))
    distinct, counts = np.unique(ordered, return_counts=True)
    tie_factor = 1.0 - float(np.sum((counts / max(ordered.size, 1)) ** 3)) if ordered.size else 1.0
    if distinct.size > points:
        atoms = distinct[counts >= ordered.size / (2 * points)]
        rest = ordered[~np.isin(ordered, atoms)]
        spaced = rest[np.linspace(0, rest.size - 1, points).round().astype(np.int64)] if rest.size else rest
        distinct = np.union1d(spaced, atoms)
    below = np.searchsorted(ordered, distinct, side="left")
    at = np.searchsorted(ordered, distinct, side="right")
    return distinct, below, at, tie_factor


def numeric_profile(
    values: np.ndarray, sample_index: np.ndarray, dtype: FeatureDType = "float64", bins: int = BINS
) -> NumericProfile:
    values = narrowed(values, dtype)
    missing = np.isnan(values)
    present = values[~missing]
    lo = hi = mean = std = None
    edges = np.array([])
    counts = np.array([0])
    if present.size:
        edges = np.unique(narrowed(np.quantile(present, np.linspace(0, 1, bins + 1)[1:-1]), dtype))
        counts = np.bincount(np.searchsorted(edges, present, side="left"), minlength=edges.size + 1)
        lo, hi = float(present.min()), float(present.max())
        mean, std = float(present.mean()), float(present.std())
    points, below, at, tie_factor = support(present)
    return NumericProfile(
        count=int(values.size),
        missing_rate=float(missing.mean()) if values.size else 0.0,
        min=lo,
        max=hi,
        mean=mean,
        std=std,
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        sample=tuple(None if np.isnan(v) else float(v) for v in values[sample_index]),
        cdf_values=tuple(float(v) for v in points),
        cdf_below=tuple(int(c) for c in below),
        cdf_at=tuple(int(c) for c in at),
        tie_factor=tie_factor,
    )


def is_missing(values: pd.Series) -> pd.Series:
    """Null, or the string a null is sent to the model as."""
    return values.isna() | (values.astype(str) == MISSING_STRING)


def missing_of(values: np.ndarray) -> np.ndarray:
    """``is_missing`` over an array of JSON values (None, a number, a string), without pandas: the
    monitor tests windows of logged inputs with it, and pandas would double its memory."""
    return np.fromiter(
        (value is None or value != value or value == MISSING_STRING for value in values),
        dtype=bool,
        count=len(values),
    )


def categorical_profile(values: pd.Series, sample_index: np.ndarray) -> CategoricalProfile:
    import pandas as pd

    missing = is_missing(values)
    counts = values[~missing].astype(str).value_counts()
    top = counts.iloc[:MAX_CATEGORIES]
    return CategoricalProfile(
        count=int(values.size),
        missing_rate=float(missing.mean()) if values.size else 0.0,
        categories=tuple(str(c) for c in top.index),
        counts=tuple(int(c) for c in top.to_numpy()),
        other_count=int(counts.iloc[MAX_CATEGORIES:].sum()),
        sample=tuple(MISSING_STRING if pd.isna(v) else str(v) for v in values.iloc[sample_index]),
    )


def sample_index(rows: int, size: int = SAMPLE_ROWS, seed: int = 0) -> np.ndarray:
    """The same bounded, seeded row sample for every feature, so sample rows stay whole rows."""
    if rows <= size:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def hourly(
    quantities: dict[str, np.ndarray], weekdays: np.ndarray, hours: np.ndarray
) -> dict[str, dict[str, HourDistribution]]:
    """Each quantity's distribution function per hour of the day ("H", 0-23) and per hour of each day
    of the week ("D-H", Monday 0), for those with ``HOUR_MIN_ROWS`` rows."""
    slots = [(str(hour), hours == hour) for hour in range(24)]
    for day in range(7):
        slots += [(f"{day}-{hour}", (weekdays == day) & (hours == hour)) for hour in range(24)]
    found: dict[str, dict[str, HourDistribution]] = {}
    for slot, rows in slots:
        if rows.sum() < HOUR_MIN_ROWS:
            continue
        slices = {}
        for name, values in quantities.items():
            present = values[rows][~np.isnan(values[rows])]
            if present.size:
                points, below, at, _ = support(present, HOUR_POINTS)
                slices[name] = HourDistribution(
                    count=int(present.size),
                    cdf_values=tuple(float(v) for v in points),
                    cdf_below=tuple(int(c) for c in below),
                    cdf_at=tuple(int(c) for c in at),
                )
        found[slot] = slices
    return found


def clock_of(times: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTC day of the week (Monday 0) and hour of the day of each timestamp (epoch seconds, or
    text pandas reads as a time)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(times):
        stamps = pd.to_datetime(times, unit="s", utc=True)
    else:
        stamps = pd.to_datetime(times, utc=True, format="mixed")
    return stamps.dt.day_of_week.to_numpy(), stamps.dt.hour.to_numpy()


def reference_profile(
    frame: pd.DataFrame,
    schema: InputSchema,
    output: OutputSpec,
    prediction: Prediction,
    times: pd.Series | None = None,
) -> ReferenceProfile:
    import pandas as pd

    index = sample_index(len(frame))
    features: dict[str, Profile] = {}
    for spec in schema.features:
        column = frame[spec.name]
        if spec.dtype == "string":
            features[spec.name] = categorical_profile(column, index)
        else:
            features[spec.name] = numeric_profile(column.to_numpy(dtype=np.float64), index, spec.dtype)
    predictions: dict[str, PredictionProfile] = {}
    if output.kind == "embedding":
        assert prediction.embeddings is not None
        predictions.update(embedding_profiles(prediction.embeddings))
    elif output.kind == "classification":
        assert prediction.labels is not None and prediction.probabilities is not None
        predictions["label"] = categorical_profile(pd.Series(prediction.labels.astype(str)), index)
        for column, cls in enumerate(output.classes):
            predictions[f"probability:{cls}"] = numeric_profile(prediction.probabilities[:, column], index)
    else:
        assert prediction.values is not None
        predictions["value"] = numeric_profile(prediction.values, index)
    if times is None:
        return ReferenceProfile(features=features, predictions=predictions, sample_rows=int(index.size))
    numeric = {
        spec.name: narrowed(frame[spec.name].to_numpy(dtype=np.float64), spec.dtype)
        for spec in schema.features
        if spec.dtype != "string"
    }
    if output.kind == "classification":
        assert prediction.probabilities is not None
        numeric |= {f"probability:{c}": prediction.probabilities[:, i] for i, c in enumerate(output.classes)}
    elif output.kind == "regression":
        assert prediction.values is not None
        numeric["value"] = np.asarray(prediction.values, dtype=np.float64).ravel()
    return ReferenceProfile(
        features=features,
        predictions=predictions,
        sample_rows=int(index.size),
        time_column=str(times.name),
        by_hour=hourly(numeric, *clock_of(times)),
    )


def embedding_profiles(embeddings: np.ndarray) -> dict[str, PredictionProfile]:
    """A bounded sample of the reference vectors (for the MMD test) and the profile of their lengths
    (a univariate view of the same drift, with PSI and the usual tests)."""
    vectors = np.asarray(embeddings, dtype=np.float64)
    index = sample_index(len(vectors), EMBEDDING_SAMPLE)
    sample = tuple(tuple(round(float(v), 6) for v in row) for row in vectors[index])
    norms = np.linalg.norm(vectors, axis=1)
    return {
        "embedding": EmbeddingProfile(count=len(vectors), dim=vectors.shape[1], sample=sample),
        "embedding_norm": numeric_profile(norms, sample_index(len(norms))),
    }


def default_rules(profile: ReferenceProfile, output: OutputSpec) -> PlausibilityRules:
    """Inputs stay near the reference range or domain; outputs obey their kind's invariants."""
    inputs: dict[str, InputRule] = {}
    for name, feature in profile.features.items():
        max_missing = min(1.0, max(0.05, 2 * feature.missing_rate))
        if isinstance(feature, CategoricalProfile):
            inputs[name] = InputRule(domain=feature.categories, max_missing_rate=max_missing)
        else:
            inputs[name] = InputRule(
                min=feature.min, max=feature.max, margin=RANGE_MARGIN, max_missing_rate=max_missing
            )
    if output.kind == "classification":
        return PlausibilityRules(inputs=inputs, output=OutputRule(classes=output.classes))
    if output.kind == "embedding":  # finite values; their distribution is the drift test's
        return PlausibilityRules(inputs=inputs, output=OutputRule())
    value = profile.predictions["value"]
    assert isinstance(value, NumericProfile)
    if value.min is None or value.max is None:  # the model answered NaN for every reference row
        return PlausibilityRules(inputs=inputs, output=OutputRule())
    spread = (value.max - value.min) or abs(value.max) or 1.0
    return PlausibilityRules(
        inputs=inputs,
        output=OutputRule(value_min=value.min - spread, value_max=value.max + spread),
    )


def sample_columns(schema: InputSchema, reference: ReferenceProfile, rows: int) -> dict[str, np.ndarray]:
    """The first ``rows`` whole rows of the reference sample, one column a feature at the dtype the
    model receives (a tabular schema)."""
    columns: dict[str, np.ndarray] = {}
    for spec in schema.features:
        profile = reference.features[spec.name]
        if isinstance(profile, CategoricalProfile):
            columns[spec.name] = np.array(profile.sample[:rows], dtype=object)
        else:
            columns[spec.name] = np.array(profile.sample[:rows], dtype=NUMPY_DTYPE[spec.dtype])
    return columns
