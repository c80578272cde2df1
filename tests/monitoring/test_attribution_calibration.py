"""Attribution drift keeps the drift budget: a seeded simulation through the monitor's own tests
(``drift_of`` on each feature's importance, ``decide`` across them, as ``assessment.attributions``
runs them) on windows of fresh rows from the training population, for a tree ensemble (exact
TreeSHAP) and a model explained by sampling, flags none of them; the same windows with the
model leaning harder on its most important feature (its values spread twice as wide) are flagged.
The shift of decisions with inputs alike is tests/service/test_attribution_drift.py's."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from monitoring.baseline import reference
from monitoring.drift import ALPHA, MIN_EFFECT, decide, drift_of
from registry.demo import to_onnx
from registry.explain.explainers import loop_explainer, predictor
from registry.reference import sample_columns
from registry.store import Registry
from service.serving.pool import load_version

FEATURES = [f"f{i}" for i in range(10)]
WINDOWS = 100


def pushed(tmp_path, estimator, train: pd.DataFrame, labels: np.ndarray):
    """Push the trained model: its attribution method, its reference attributions, and the loop's
    importances of any rows (requests of 10 rows, a seed each, as the loop explains them)."""
    estimator.fit(train, labels)
    (tmp_path / "model.onnx").write_bytes(to_onnx(estimator, train))
    train.to_csv(tmp_path / "reference.csv", index=False)
    registry = Registry(tmp_path / "registry")
    manifest = registry.push(tmp_path / "model.onnx", "synthetic", tmp_path / "reference.csv")
    registry.promote("synthetic", 1, "champion")
    served = load_version(registry, "synthetic", 1, warmup_rows=16, threads=1)
    columns = sample_columns(manifest.inputs, manifest.reference, manifest.reference.sample_rows)
    explainer = loop_explainer(
        registry.read_model("synthetic", 1)[1], manifest.inputs, manifest.output, columns,
        predictor(served.model),
    )  # fmt: skip

    def importances(rows: pd.DataFrame) -> np.ndarray:
        return np.vstack([
            explainer.importance({f: rows[f].iloc[k : k + 10].to_numpy() for f in FEATURES}, 10, seed=k)
            for k in range(0, len(rows), 10)
        ])  # fmt: skip

    refs = {f: reference(manifest.reference.attributions[f]) for f in FEATURES}
    return manifest.reference.attribution_method, refs, importances


def flagged(refs, found: np.ndarray, rng: np.random.Generator, rows: int) -> int:
    """Of ``WINDOWS`` windows of ``rows`` rows drawn from ``found``, how many flag any feature."""
    count = 0
    for _ in range(WINDOWS):
        window = found[rng.choice(len(found), rows, replace=False)]
        statistics = []
        for j, name in enumerate(FEATURES):
            statistics += drift_of(name, "attribution", refs[name], window[:, j])
        count += any(s["drifted"] for s in decide(statistics, ALPHA, MIN_EFFECT))
    return count


@pytest.mark.parametrize(
    ("estimator", "method"),
    [
        (
            GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0),
            "tree-path-dependent:margin",
        ),
        (LogisticRegression(max_iter=1000), "sampling:probability"),
    ],
    ids=["trees", "sampling"],
)
def test_clean_windows_of_fresh_rows_raise_no_attribution_drift(tmp_path, estimator, method):
    x, y = make_classification(n_samples=7000, n_features=10, n_informative=5, random_state=0)
    frame = pd.DataFrame(x.astype(np.float32), columns=FEATURES)
    train, fresh = frame.iloc[:4000], frame.iloc[4000:]
    found_method, refs, importances = pushed(tmp_path, estimator, train, y[:4000])
    assert found_method == method
    clean = importances(fresh)
    # the model leaning harder on its most important feature: its values spread twice as wide
    top = FEATURES[int(np.argmax(clean.mean(axis=0)))]
    column = fresh[top]
    moved = importances(fresh.assign(**{top: column.mean() + 2 * (column - column.mean())}))
    rng = np.random.default_rng(0)
    for rows in (100, 300, 1000):
        # at the window's level (0.001, Benjamini-Hochberg over the features): at most ~0.1 of 100
        # windows expected; alerts use a far stricter level still
        assert flagged(refs, clean, rng, rows) <= 1, rows
    assert flagged(refs, moved, rng, 1000) >= WINDOWS * 0.95
