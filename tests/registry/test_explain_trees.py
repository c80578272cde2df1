"""Tree ensembles read from ONNX graphs explain as shap explains the scikit-learn models they came
from: the same attributions within 1e-6, path-dependent (the margin) and interventional (the
probability, with the same background), and they add up to what ONNX Runtime answers."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import shap
from skl2onnx import to_onnx as skl_to_onnx
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry.demo import breast_cancer, to_onnx
from registry.explain.explainers import BACKGROUND_ROWS, TreeShap
from registry.explain.trees import Trees, read_trees, with_covers
from registry.manifest import FeatureSpec, InputSchema, OutputSpec

TOLERANCE = 1e-6


def schema_of(frame: pd.DataFrame, model_bytes: bytes) -> InputSchema:
    name = onnx.load_from_string(model_bytes).graph.input[0].name
    features = tuple(FeatureSpec(name=str(c), dtype="float32") for c in frame.columns)
    return InputSchema(layout="matrix", features=features, tensor_name=name, tensor_dtype="float32")


def explainer_of(model, frame: pd.DataFrame, classes: tuple[str, ...]) -> tuple[TreeShap, bytes]:
    data = to_onnx(model, frame)
    kind = "classification" if classes else "regression"
    trees = read_trees(data, schema_of(frame, data), OutputSpec(kind=kind, classes=classes))
    assert isinstance(trees, Trees), trees
    reference = frame.to_numpy(np.float32)
    return TreeShap(trees, reference, tuple(frame.columns), classes), data


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    x_train, x_test, y_train, _ = breast_cancer()
    return x_train, x_test, y_train


@pytest.fixture(scope="module")
def boosted(cancer):
    """The demo's challenger: gradient boosting, 100 trees of depth 3, a logistic margin."""
    x_train, _, y_train = cancer
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x_train, y_train)
    explainer, data = explainer_of(model, x_train, tuple(model.classes_))
    return model, explainer, data


def test_path_dependent_margin_equals_shap_on_the_scikit_learn_model(cancer, boosted):
    _, x_test, _ = cancer
    model, explainer, _ = boosted
    rows = x_test.to_numpy(np.float32)
    ours = explainer.explain(rows, "margin")
    reference = shap.TreeExplainer(model)  # path-dependent, the training rows' covers
    theirs = reference.shap_values(rows, check_additivity=False)
    assert ours.method == "tree-path-dependent" and ours.space == "margin"
    assert np.abs(ours.attributions[:, 1] - theirs).max() < TOLERANCE
    assert np.abs(ours.attributions[:, 0] + theirs).max() < TOLERANCE  # the first class: the negation
    assert ours.base[1] == pytest.approx(float(np.squeeze(reference.expected_value)), abs=TOLERANCE)
    additive = ours.base[None, :] + ours.attributions.sum(axis=2)
    assert np.abs(additive - ours.output).max() < TOLERANCE


def test_interventional_probability_equals_shap_and_adds_up_to_onnx_runtimes_answer(cancer, boosted):
    x_train, x_test, _ = cancer
    model, explainer, data = boosted
    rows = x_test.to_numpy(np.float32)
    ours = explainer.explain(rows, "probability")
    background = x_train.to_numpy(np.float32)[:BACKGROUND_ROWS].astype(np.float64)
    reference = shap.TreeExplainer(
        model, data=background, feature_perturbation="interventional", model_output="probability"
    )
    theirs = reference.shap_values(rows, check_additivity=False)
    assert ours.method == "tree-interventional" and ours.background_rows == BACKGROUND_ROWS
    assert np.abs(ours.attributions[:, 1] - theirs).max() < TOLERANCE
    session = ort.InferenceSession(data)
    probabilities = session.run(None, {session.get_inputs()[0].name: rows})[1]
    explained = ours.base[None, :] + ours.attributions.sum(axis=2)
    assert np.abs(explained - probabilities).max() < TOLERANCE  # both classes, as ONNX Runtime answers


def test_a_random_forest_is_explained_in_probability_without_a_background(cancer):
    x_train, x_test, y_train = cancer
    model = RandomForestClassifier(n_estimators=20, max_depth=6, bootstrap=False, random_state=0)
    model.fit(x_train, y_train)
    explainer, data = explainer_of(model, x_train, tuple(model.classes_))
    assert explainer.spaces == ("probability",)  # the trees' sum is the probability itself
    rows = x_test.to_numpy(np.float32)
    ours = explainer.explain(rows, "probability")
    theirs = np.asarray(shap.TreeExplainer(model).shap_values(rows, check_additivity=False))
    assert ours.method == "tree-path-dependent"
    assert np.abs(ours.attributions.transpose(0, 2, 1) - theirs).max() < TOLERANCE
    session = ort.InferenceSession(data)
    probabilities = session.run(None, {session.get_inputs()[0].name: rows})[1]
    assert np.abs(ours.output - probabilities).max() < 1e-5  # ONNX Runtime sums in float32


def test_a_regressor_and_a_multiclass_model_match_shap():
    diabetes = load_diabetes(as_frame=True)
    frame = diabetes.data.astype(np.float32)
    regressor = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0)
    regressor.fit(frame, diabetes.target)
    explainer, _ = explainer_of(regressor, frame, ())
    rows = frame.to_numpy(np.float32)[:50]
    ours = explainer.explain(rows, "value")
    theirs = shap.TreeExplainer(regressor).shap_values(rows, check_additivity=False)
    assert ours.outputs == ("value",)
    assert np.abs(ours.attributions[:, 0] - theirs).max() < TOLERANCE
    assert np.abs(ours.output[:, 0] - regressor.predict(rows)).max() < 1e-4  # float32 thresholds

    iris = load_iris(as_frame=True)
    frame = iris.data.astype(np.float32)
    classes = ("setosa", "versicolor", "virginica")
    labels = np.array(classes)[iris.target]
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0, bootstrap=False)
    forest.fit(frame, labels)
    data = skl_to_onnx(forest, frame.to_numpy(np.float32)[:1], options={id(forest): {"zipmap": False}},
                       target_opset={"": 17, "ai.onnx.ml": 3}).SerializeToString()  # fmt: skip
    trees = read_trees(data, schema_of(frame, data), OutputSpec(kind="classification", classes=classes))
    assert isinstance(trees, Trees)
    ours = TreeShap(trees, frame.to_numpy(np.float32), tuple(frame.columns), classes).explain(
        frame.to_numpy(np.float32), "probability"
    )
    theirs = np.asarray(shap.TreeExplainer(forest).shap_values(frame.to_numpy(np.float32)))
    assert np.abs(ours.attributions.transpose(0, 2, 1) - theirs).max() < TOLERANCE


def test_trees_behind_preprocessing_are_not_read_as_the_models_features(cancer):
    x_train, _, y_train = cancer
    pipeline = make_pipeline(StandardScaler(), GradientBoostingClassifier(n_estimators=5, random_state=0))
    data = to_onnx(pipeline.fit(x_train, y_train), x_train)
    why = read_trees(data, schema_of(x_train, data), OutputSpec(kind="classification", classes=("a", "b")))
    assert isinstance(why, str) and "not the model's features" in why


def test_a_node_no_reference_row_reaches_keeps_the_explanation_finite_and_additive(cancer, boosted):
    x_train, x_test, _ = cancer
    _, explainer, _ = boosted
    few = x_train.to_numpy(np.float32)[:5]  # most nodes: reached by none of these
    sparse = TreeShap(explainer.trees, few, explainer.features, explainer.classes)
    covers = np.concatenate([tree["node_sample_weight"] for tree in sparse.trees.trees])
    assert (covers > 0).all()
    ours = sparse.explain(x_test.to_numpy(np.float32), "margin")
    assert np.isfinite(ours.attributions).all()
    additive = ours.base[None, :] + ours.attributions.sum(axis=2)
    assert np.abs(additive - explainer.explain(x_test.to_numpy(np.float32), "margin").output).max() < 1e-5


def test_covers_count_the_reference_rows_down_each_branch(cancer, boosted):
    x_train, _, _ = cancer
    model, explainer, _ = boosted
    covered = with_covers(explainer.trees, x_train.to_numpy(np.float32))
    # the training rows are the reference: the counts are scikit-learn's own
    assert [t["node_sample_weight"][0] for t in covered.trees] == [len(x_train)] * len(covered.trees)
    sklearn_tree = model.estimators_[0, 0].tree_
    assert sorted(covered.trees[0]["node_sample_weight"]) == sorted(sklearn_tree.weighted_n_node_samples)
