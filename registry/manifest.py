"""The manifest stored beside every model version: what the version is and what normal looks like."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

FeatureDType = Literal["float32", "float64", "int64", "string"]
#: the numpy dtype a feature of each dtype is held in
NUMPY_DTYPE: dict[FeatureDType, Any] = {
    "float32": np.float32,
    "float64": np.float64,
    "int64": np.int64,
    "string": object,
}

#: What a string input's model receives for a null, at push time and at serving time alike: an ONNX
#: string tensor has no null. Monitoring counts it as a missing value, not as a category.
MISSING_STRING = ""
OutputKind = Literal["classification", "regression", "embedding"]
InputLayout = Literal["matrix", "columns", "tensor"]
#: element types of a tensor input (``layout="tensor"``)
TensorDType = Literal["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureSpec(Frozen):
    """One input feature, as a client names it in a record."""

    name: str
    dtype: FeatureDType
    #: True when the reference data had missing values for this feature, so the
    #: model was profiled on them and a null is passed on as NaN.
    allow_missing: bool = False


class TensorSpec(Frozen):
    """One input of a tensor model: an image batch ``[N, 3, H, W]``, token ids ``[N, L]``, ...

    ``shape`` is the graph's, the batch dimension first (None where the graph leaves a dimension
    free); ``sample_shape`` one reference sample's. ``channels``: set when the samples are
    summarised per channel (axis 1), see ``registry.tensors``.
    """

    name: str
    dtype: TensorDType
    shape: tuple[int | None, ...]
    sample_shape: tuple[int, ...]
    channels: int | None = None

    def fits(self, shape: Sequence[int]) -> bool:
        """Whether an array of ``shape`` fits this input: its rank, and every fixed dimension after the
        batch's."""
        return len(shape) == len(self.shape) and all(
            d is None or d == given for d, given in zip(self.shape[1:], shape[1:], strict=True)
        )

    def shown(self) -> list[int | str]:
        """The shape as errors show it: ``['N', 3, 'any', 'any']``."""
        return ["N", *(d if d is not None else "any" for d in self.shape[1:])]


class InputSchema(Frozen):
    """How client features map onto the ONNX graph's inputs.

    ``matrix``: one 2-D tensor input named ``tensor_name`` whose columns are
    ``features`` in order (the usual skl2onnx export). ``columns``: one input
    per feature, each named like the feature, shape ``[N, 1]`` or ``[N]``.
    ``tensor``: inputs of any rank (``tensors``), sent whole over the Open
    Inference Protocol; ``features`` are then the per-sample summaries the
    gateway computes, logs and monitors (``registry.tensors``).
    """

    layout: InputLayout
    features: tuple[FeatureSpec, ...]
    tensor_name: str | None = None
    tensor_dtype: FeatureDType | None = None
    tensors: tuple[TensorSpec, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


class OutputSpec(Frozen):
    """What the model answers. ``classes`` is set for classifiers, in probability-column order."""

    kind: OutputKind
    classes: tuple[str, ...] = ()
    label_output: str | None = None
    probability_output: str | None = None
    value_output: str | None = None
    #: skl2onnx's default ZipMap gives probabilities as a list of dicts.
    probabilities_as_map: bool = False
    #: an ``embedding`` model's vector length (its output, ``value_output``, is ``[N, dim]``)
    embedding_dim: int | None = None


class Lineage(Frozen):
    """Where the version came from."""

    reference_sha256: str
    reference_rows: int
    reference_file: str
    description: str = ""
    metrics: dict[str, float | int | str] = {}


class NumericProfile(Frozen):
    """Reference distribution of one numeric quantity, at the dtype the model receives.

    ``edges`` are interior quantile cut points; ``counts`` has one more entry
    than ``edges``: (-inf, e0], (e0, e1], ..., (e_last, +inf).

    ``cdf_values`` are up to 1,000 support points of the whole reference (every
    distinct value when there are fewer, always the minimum and maximum);
    ``cdf_below[i]`` / ``cdf_at[i]`` count the present reference values below /
    at or below ``cdf_values[i]``. The drift tests compare a window with this
    distribution function rather than with ``sample``. ``tie_factor`` is
    ``1 - sum(p**3)`` over the distinct values' shares (1 without ties), the
    rank test's variance correction. Manifests written before these fields
    have them empty; the tests then fall back on ``sample``.
    """

    kind: Literal["numeric"] = "numeric"
    count: int
    missing_rate: float
    #: None when every value is missing
    min: float | None
    max: float | None
    mean: float | None
    std: float | None
    edges: tuple[float, ...]
    counts: tuple[int, ...]
    #: None marks a missing value (JSON has no NaN)
    sample: tuple[float | None, ...]
    cdf_values: tuple[float, ...] = ()
    cdf_below: tuple[int, ...] = ()
    cdf_at: tuple[int, ...] = ()
    tie_factor: float = 1.0


class CategoricalProfile(Frozen):
    """Reference distribution of one categorical quantity (the most frequent categories).

    A null (or :data:`MISSING_STRING`) is missing: counted in ``missing_rate``,
    in neither ``counts`` nor ``other_count``.
    """

    kind: Literal["categorical"] = "categorical"
    count: int
    missing_rate: float
    categories: tuple[str, ...]
    counts: tuple[int, ...]
    #: rows whose category is not among ``categories`` (the long tail)
    other_count: int
    sample: tuple[str, ...]


class EmbeddingProfile(Frozen):
    """An embedding model's output vectors on the reference: a bounded sample of them, which the
    multivariate drift test (MMD, ``monitoring.mmd``) compares a window's vectors with."""

    kind: Literal["embedding"] = "embedding"
    count: int
    dim: int
    sample: tuple[tuple[float, ...], ...]


Profile = Annotated[NumericProfile | CategoricalProfile, Field(discriminator="kind")]
PredictionProfile = Annotated[
    NumericProfile | CategoricalProfile | EmbeddingProfile, Field(discriminator="kind")
]


class HourDistribution(Frozen):
    """One numeric quantity's distribution function over the reference rows of one hour of the day
    (``support``'s points, at most ``registry.profile.HOUR_POINTS``)."""

    count: int
    cdf_values: tuple[float, ...]
    cdf_below: tuple[int, ...]
    cdf_at: tuple[int, ...]


class ReferenceProfile(Frozen):
    """Profiles of every input feature and of the model's predictions on the reference data.

    Prediction keys: ``label`` and ``probability:<class>`` for classifiers,
    ``value`` for regressors, ``embedding`` and ``embedding_norm`` for embedding
    models. ``sample_rows`` rows are index-aligned across all feature samples,
    so they also serve as whole rows (for warming a session up).
    """

    features: dict[str, Profile]
    predictions: dict[str, PredictionProfile]
    sample_rows: int
    #: the reference's time column (``push --time-column``), when it had one, and then each numeric
    #: feature's and output's distribution per hour of the day (UTC, "0" to "23") and per hour of each
    #: day of the week ("0-0", Monday 00:00, to "6-23"), for those with
    #: ``registry.profile.HOUR_MIN_ROWS`` rows: a window is compared with the hours it was sent at
    time_column: str | None = None
    by_hour: dict[str, dict[str, HourDistribution]] = {}
    #: each input feature's importance (a row's mean |attribution| over the outputs) on the reference
    #: sample, as ``attribution_method`` explains it (``registry.explain.explainers.LoopExplainer``):
    #: what explanations in the loop are tested against (attribution drift). Empty for tensor and
    #: embedding models, and in manifests written before it
    attributions: dict[str, NumericProfile] = {}
    attribution_method: str | None = None


class InputRule(Frozen):
    """Plausible input: inside the reference range widened by ``margin`` x range."""

    min: float | None = None
    max: float | None = None
    margin: float = 0.1
    max_missing_rate: float = 0.05
    domain: tuple[str, ...] | None = None


class OutputRule(Frozen):
    """Plausible output for the version's kind."""

    probability_sum_tolerance: float = 1e-3
    classes: tuple[str, ...] = ()
    value_min: float | None = None
    value_max: float | None = None


class PlausibilityRules(Frozen):
    inputs: dict[str, InputRule]
    output: OutputRule
    #: ``flag`` counts violations; ``reject`` answers 4xx. Per-rule policies override.
    default_policy: Literal["flag", "reject"] = "flag"


class Calibration(Frozen):
    """How a classifier's probabilities match the truth on labelled reference data, for the
    label-free accuracy estimate (see ``monitoring.estimate``).

    ``curves[cls]`` is the isotonic map of the probability of ``cls`` to the share of rows that are
    ``cls``, at evenly spaced probabilities from 0 to 1.
    """

    rows: int
    #: the model's accuracy on those rows
    accuracy: float
    curves: dict[str, tuple[float, ...]]


class Manifest(Frozen):
    """Everything known about one immutable model version."""

    name: str
    version: int
    created_at: datetime
    created_by: str
    model_file: str
    sha256: str
    size_bytes: int
    opset: int
    producer: str
    inputs: InputSchema
    output: OutputSpec
    lineage: Lineage
    reference: ReferenceProfile
    plausibility: PlausibilityRules
    #: set for classifiers pushed with labelled reference data (``--target``)
    calibration: Calibration | None = None
