"""Per-feature attributions of a served version's predictions: Shapley values, exact for tree
ensembles, estimated by sampling for every other tabular model.

- **Tree ensembles** (``registry.explain.trees`` reads them from the ONNX graph): shap's exact
  TreeSHAP, in one of two spaces the answer names. ``margin``: path-dependent TreeSHAP of the
  ensemble's raw score (log-odds for a binary gradient-boosting model), each feature left out
  following the reference sample's share of rows down the branches it would take; needs no
  background and is the faster. ``probability``: interventional TreeSHAP of each class's
  probability with the version's reference sample as background (a logistic ensemble's
  attributions are shap's: exact on the margin, rescaled per background row to the probability).
- **Every other tabular model**: the interventional Shapley values of each class's probability
  (or the value) with the same background, estimated by permutation sampling: each background row
  is paired with ``permutations`` random orders of the features, half of them the others
  reversed (antithetic pairs), and a feature's attribution is its mean marginal contribution. Every
  sample's contributions add up to f(x) - f(z), and every background row is used equally often, so
  the attributions plus the base value are the model's output exactly; ``error`` is each
  attribution's standard error over the pairs.

Tensor models and embeddings have no per-feature scalar output to attribute; ``explainer`` says so.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from registry.explain.trees import Trees, read_trees, with_covers
from registry.manifest import NUMPY_DTYPE, InputSchema, OutputSpec
from registry.onnx_model import OnnxModel

Space = Literal["margin", "probability", "value"]
#: the background rows (from the version's reference sample) of interventional explanations
BACKGROUND_ROWS = 100
#: random feature orders per background row, in antithetic pairs, of the sampling explainer
PERMUTATIONS = 8
#: what the sampling explainer asks of the model in one call, in rows
SAMPLING_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class Explanation:
    """Attributions of ``rows`` rows: ``attributions[row, output, feature]``, with ``base[output]``
    the mean output over the background, such that base + the attributions' sum = ``output``."""

    method: str
    space: Space
    #: what each output column is: the version's classes, or ("value",)
    outputs: tuple[str, ...]
    features: tuple[str, ...]
    attributions: np.ndarray
    base: np.ndarray
    output: np.ndarray
    #: each attribution's standard error (sampling); None where exact
    error: np.ndarray | None = None
    #: background rows from the reference sample (0: none, path-dependent covers aside)
    background_rows: int = 0


class Unexplainable(Exception):
    """The version cannot be explained as asked; the message says why, ``field`` what was asked."""

    def __init__(self, message: str, field: str = "model") -> None:
        super().__init__(message)
        self.field = field


#: the model's output in the explained space for rows given as columns: rows x outputs
Predict = Callable[[dict[str, np.ndarray]], np.ndarray]


class TreeShap:
    """Exact TreeSHAP over the version's tree ensemble (see the module doc)."""

    def __init__(self, trees: Trees, reference: np.ndarray, features: tuple[str, ...],
                 classes: tuple[str, ...]) -> None:  # fmt: skip
        self.trees = with_covers(trees, reference)
        self.reference = reference
        self.features = features
        self.classes = classes

    @property
    def spaces(self) -> tuple[Space, ...]:
        """What it explains, the first by default: a regressor's value; a classifier's probability
        where the trees' sum is one (no post-transform), else its margin, and the probability too
        where the margin is one log-odds (a binary logistic ensemble)."""
        if not self.classes:
            return ("value",)
        if self.trees.post_transform == "NONE":
            return ("probability",)
        if self.trees.single_score and self.trees.post_transform == "LOGISTIC":
            return ("margin", "probability")
        return ("margin",)

    @functools.cached_property
    def _path_dependent(self) -> Any:
        import shap

        return shap.TreeExplainer(self.trees.shap_model(), feature_perturbation="tree_path_dependent")

    @functools.cached_property
    def _interventional(self) -> Any:
        import shap

        logistic = self.trees.post_transform == "LOGISTIC"
        model = self.trees.shap_model("log_odds" if logistic else "raw_value")
        background = self.reference[:BACKGROUND_ROWS].astype(np.float64)
        return shap.TreeExplainer(model, data=background, feature_perturbation="interventional",
                                  model_output="probability" if logistic else "raw")  # fmt: skip

    def explain(self, matrix: np.ndarray, space: Space) -> Explanation:
        x = np.asarray(matrix, dtype=np.float32).astype(np.float64)
        # the trees' own sum is the margin, the value, or (no post-transform) the probability
        interventional = space == "probability" and self.trees.post_transform != "NONE"
        explainer = self._interventional if interventional else self._path_dependent
        values = np.asarray(explainer.shap_values(x, check_additivity=False), dtype=np.float64)
        values = values.reshape(len(x), len(self.features), -1).transpose(0, 2, 1)  # rows x scores x features
        base = np.atleast_1d(np.asarray(explainer.expected_value, dtype=np.float64)).reshape(-1)
        if self.trees.single_score:  # the first class's score is the second's complement
            values = np.concatenate([-values, values], axis=1)
            base = (
                np.array([1 - base[0], base[0]]) if space == "probability" else np.array([-base[0], base[0]])
            )
        method = "tree-interventional" if interventional else "tree-path-dependent"
        return Explanation(method, space, self.classes or ("value",), self.features, values, base,
                           base + values.sum(axis=2), background_rows=len(explainer.data)
                           if interventional else 0)  # fmt: skip


class SamplingShap:
    """Interventional Shapley values estimated by antithetic permutation sampling (module doc)."""

    def __init__(self, predict: Predict, background: dict[str, np.ndarray], features: tuple[str, ...],
                 outputs: tuple[str, ...], space: Space, permutations: int = PERMUTATIONS,
                 seed: int = 0) -> None:  # fmt: skip
        self.predict = predict
        self.background = background
        self.features = features
        self.outputs = outputs
        self.space = space
        self.permutations = max(2, permutations - permutations % 2)
        self.seed = seed
        self.base = predict(background).mean(axis=0)

    @property
    def spaces(self) -> tuple[Space, ...]:
        return (self.space,)

    def explain(self, columns: dict[str, np.ndarray], rows: int, seed: int | None = None) -> Explanation:
        """``seed``: of the random orders (the explainer's own when None: the same rows, the same
        estimate)."""
        features, count = self.features, len(self.features)
        background_rows = len(next(iter(self.background.values())))
        samples = background_rows * self.permutations
        rng = np.random.default_rng(self.seed if seed is None else seed)
        values = np.zeros((rows, len(self.outputs), count))
        errors = np.zeros_like(values)
        output = np.zeros((rows, len(self.outputs)))
        for row in range(rows):
            half = np.argsort(rng.random((samples // 2, count)), axis=1)
            orders = np.concatenate([half, half[:, ::-1]])  # sample i and i + samples/2: reversed
            # hybrid k of a sample takes its order's first k features from x, the rest from z
            rank = np.empty_like(orders)
            rank[np.arange(samples)[:, None], orders] = np.arange(count)
            steps = np.arange(count + 1)
            from_x = rank[:, None, :] < steps[None, :, None]  # samples x (count + 1) x features
            z = np.tile(np.arange(background_rows), self.permutations)  # each row equally often
            hybrid = {
                name: np.where(from_x[:, :, j].reshape(-1), columns[name][row],
                               np.repeat(self.background[name][z], count + 1))
                for j, name in enumerate(features)
            }  # fmt: skip
            predicted = self._predict(hybrid).reshape(samples, count + 1, -1)
            steps_gain = np.diff(predicted, axis=1)  # samples x count x outputs: the k-th feature added
            gains = np.zeros((samples, count, predicted.shape[2]))
            gains[np.arange(samples)[:, None], orders] = steps_gain
            pairs = (gains[: samples // 2] + gains[samples // 2 :]) / 2
            values[row] = pairs.mean(axis=0).T
            errors[row] = (pairs.std(axis=0, ddof=1) / np.sqrt(len(pairs))).T
            output[row] = predicted[0, -1]
        return Explanation("sampling", self.space, self.outputs, features, values, self.base, output,
                           errors, background_rows)  # fmt: skip

    def _predict(self, rows: dict[str, np.ndarray]) -> np.ndarray:
        total = len(next(iter(rows.values())))
        parts = [
            self.predict({name: column[start : start + SAMPLING_CHUNK_ROWS] for name, column in rows.items()})
            for start in range(0, total, SAMPLING_CHUNK_ROWS)
        ]
        return np.concatenate(parts)


#: random feature orders per background row when requests are explained in the loop, and the
#: reference alike: a small budget, the same for both, so that their distributions compare
LOOP_PERMUTATIONS = 2
#: reference-sample rows a sampling explainer explains for the reference's attribution profile
REFERENCE_SAMPLED_ROWS = 200


class LoopExplainer:
    """What explains requests in the loop and the version's reference alike: exact TreeSHAP in its
    default space, else sampling on ``LOOP_PERMUTATIONS``; a row's importance of a feature is its
    mean |attribution| over the outputs."""

    def __init__(self, explainer: TreeShap | SamplingShap) -> None:
        self.explainer = explainer
        self.space = explainer.spaces[0]
        kind = "sampling" if isinstance(explainer, SamplingShap) else "tree-path-dependent"
        self.method = f"{kind}:{self.space}"

    @property
    def features(self) -> tuple[str, ...]:
        return self.explainer.features

    def importance(self, columns: dict[str, np.ndarray], rows: int, seed: int | None = None) -> np.ndarray:
        """rows x features; ``seed``: the sampling's (one per request: their errors independent, as
        the reference rows' are)."""
        if isinstance(self.explainer, TreeShap):
            matrix = np.column_stack([columns[name] for name in self.features])
            explanation = self.explainer.explain(matrix, self.space)
        else:
            explanation = self.explainer.explain(columns, rows, seed)
        importance: np.ndarray = np.abs(explanation.attributions).mean(axis=1)
        return importance


def loop_explainer(
    model_bytes: bytes, schema: InputSchema, output: OutputSpec, reference: dict[str, np.ndarray],
    predict: Predict,
) -> LoopExplainer:  # fmt: skip
    """The version's loop explainer over its reference sample (``reference``: one column a feature)."""
    features, classes = schema.names, output.classes
    trees = read_trees(model_bytes, schema, output)
    if not isinstance(trees, str):
        matrix = np.column_stack([reference[name] for name in features]).astype(np.float32)
        return LoopExplainer(TreeShap(trees, matrix, features, classes))
    background = {name: column[:BACKGROUND_ROWS] for name, column in reference.items()}
    space: Space = "probability" if classes else "value"
    return LoopExplainer(SamplingShap(predict, background, features, classes or ("value",), space,
                                      permutations=LOOP_PERMUTATIONS))  # fmt: skip


def predictor(model: OnnxModel) -> Predict:
    """The model's output in the explained space (each class's probability, or the value) for rows
    given as one column a feature."""
    schema = model.schema

    def predict(columns: dict[str, np.ndarray]) -> np.ndarray:
        if schema.layout == "matrix":
            assert schema.tensor_dtype is not None
            matrix = np.column_stack([columns[name] for name in schema.names])
            feeds = model.feeds(None, matrix.astype(NUMPY_DTYPE[schema.tensor_dtype]))
        else:
            feeds = model.feeds(columns, None)
        prediction = model.predict(feeds)
        if prediction.probabilities is not None:
            return np.asarray(prediction.probabilities, dtype=np.float64)
        assert prediction.values is not None
        return np.asarray(prediction.values, dtype=np.float64).reshape(-1, 1)

    return predict
