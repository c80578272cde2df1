"""The label-free accuracy estimate (CBPE): calibrated on labelled reference rows, it tracks the accuracy
that ground truth later shows, within 0.05, where the raw probabilities can be far off."""

from __future__ import annotations

import functools
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from starlette.testclient import TestClient

from monitoring.estimate import calibrated, expected_accuracy
from registry.calibration import calibrate
from registry.demo import to_onnx
from registry.errors import InvalidReferenceData
from service.app import create_app
from service.settings import Settings

#: the error the estimate is held to, against the accuracy measured with the truth
STATED_ERROR = 0.05


def digits_split() -> tuple[pd.DataFrame, ...]:
    """Bundled handwritten digits: training rows, labelled reference rows (held out from training),
    and production rows."""
    data = load_digits(as_frame=True)
    frame = data.data.rename(columns=lambda c: c.replace("pixel_", "p"))
    labels = data.target.astype(str).rename("digit")
    x_train, x_rest, y_train, y_rest = train_test_split(frame, labels, train_size=0.4, random_state=0)
    x_ref, x_prod, y_ref, y_prod = train_test_split(x_rest, y_rest, train_size=0.5, random_state=0)
    return x_train, y_train, x_ref, y_ref, x_prod, y_prod


@functools.cache
def forest_model() -> tuple[RandomForestClassifier, tuple[pd.DataFrame, ...]]:
    """A shallow random forest, and the reference and production rows: its probabilities are far from
    calibrated (a mean top probability of 0.45 where it is right 87% of the time)."""
    x_train, y_train, *rest = digits_split()
    model = RandomForestClassifier(n_estimators=30, max_depth=4, random_state=0).fit(x_train, y_train)
    return model, tuple(rest)


def shifted(frame: pd.DataFrame) -> np.ndarray:
    """Covariate shift: only rows whose most variable pixel is above its median."""
    pixel = frame.var().idxmax()
    return (frame[pixel] > frame[pixel].median()).to_numpy()


@pytest.mark.parametrize("subset", ["all", "shifted"])
def test_calibrated_estimate_tracks_true_accuracy_where_raw_probabilities_do_not(subset):
    model, (x_ref, y_ref, x_prod, y_prod) = forest_model()
    classes = tuple(model.classes_)
    calibration = calibrate(model.predict_proba(x_ref), y_ref.tolist(), classes)
    rows = shifted(x_prod) if subset == "shifted" else np.ones(len(x_prod), dtype=bool)
    probabilities, labels = model.predict_proba(x_prod[rows]), model.predict(x_prod[rows])
    truth = float(np.mean(labels == y_prod[rows].to_numpy()))

    estimate = expected_accuracy(labels, probabilities, classes, calibration)
    raw = expected_accuracy(labels, probabilities, classes, None)
    assert abs(estimate["accuracy"] - truth) <= STATED_ERROR
    assert abs(raw["accuracy"] - truth) > 0.3 and not raw["calibrated"] and estimate["calibrated"]
    assert estimate["low"] < estimate["accuracy"] < estimate["high"] and estimate["rows"] == rows.sum()


def test_an_already_calibrated_model_keeps_its_estimate():
    x_train, y_train, x_ref, y_ref, x_prod, y_prod = digits_split()
    model = LogisticRegression(max_iter=3000).fit(x_train, y_train)
    classes = tuple(model.classes_)
    calibration = calibrate(model.predict_proba(x_ref), y_ref.tolist(), classes)
    labels = model.predict(x_prod)
    estimate = expected_accuracy(labels, model.predict_proba(x_prod), classes, calibration)
    assert abs(estimate["accuracy"] - np.mean(labels == y_prod.to_numpy())) <= STATED_ERROR
    assert calibration.rows == len(y_ref) and 0.9 < calibration.accuracy <= 1


def test_calibrated_rows_sum_to_one_and_unknown_labels_are_left_out():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.5, 0.5]])
    calibration = calibrate(np.tile(probabilities, (30, 1)), ["a", "b", "a"] * 30, ("a", "b"))
    assert np.allclose(calibrated(probabilities, ("a", "b"), calibration).sum(axis=1), 1)
    estimate = expected_accuracy(np.array(["a", "zebra", "b"]), probabilities, ("a", "b"), calibration)
    assert estimate["rows"] == 2


def push_digits(registry, tmp_path, target: str | None):
    model, (x_ref, y_ref, _, _) = forest_model()
    onnx = tmp_path / "digits.onnx"
    onnx.write_bytes(to_onnx(model, x_ref))
    reference = tmp_path / "reference.parquet"
    x_ref.assign(digit=y_ref).to_parquet(reference)
    return registry.push(onnx, "digits", reference, target=target, actor="tests")


def test_push_with_labelled_reference_keeps_the_calibration(registry, tmp_path):
    manifest = push_digits(registry, tmp_path, target="digit")
    assert manifest.calibration is not None and set(manifest.calibration.curves) == set(map(str, range(10)))
    assert manifest.calibration.rows == 539 and "digit" not in manifest.inputs.names


def test_a_target_with_labels_the_model_does_not_know_is_refused(registry, tmp_path, cancer_model):
    reference = tmp_path / "mislabelled.parquet"
    frame = pd.read_csv(cancer_model.reference)
    frame.assign(diagnosis=np.where(np.arange(len(frame)) % 2, "benign", "cancerous")).to_parquet(reference)
    with pytest.raises(InvalidReferenceData, match=r"'diagnosis' holds \['cancerous'\], not among"):
        registry.push(cancer_model.onnx, "cancer", reference, target="diagnosis", actor="tests")


def test_the_report_shows_the_estimate_beside_live_quality(registry, tmp_path, child_metrics):
    """Through the gateway: predictions, then their truth; the estimate made before the truth came is
    within the stated error of the live accuracy the truth shows."""
    push_digits(registry, tmp_path, target="digit")
    registry.promote("digits", 1, "champion", actor="tests")
    _, (_, _, x_prod, y_prod) = forest_model()
    settings = Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05)
    with TestClient(create_app(settings)) as client:
        feedback = []
        for start in range(0, len(x_prod), 20):
            rows = x_prod.iloc[start : start + 20]
            answer = client.post("/predict", json={"inputs": rows.to_dict(orient="records")}).json()
            truth = y_prod.iloc[start : start + 20].tolist()
            feedback.append({"request_id": answer["request_id"], "ground_truth": truth})
        estimated = wait_for(client, lambda r: (r.get("window") or {}).get("rows") == len(x_prod))
        assert estimated["quality"] == [] and estimated["estimated_quality"]["method"] == "cbpe"
        assert client.post("/feedback", json={"feedback": feedback}).status_code == 200
        report = wait_for(
            client, lambda r: bool(r.get("quality")) and r["quality"][0]["samples"] == len(x_prod)
        )
    estimate, (live,) = report["estimated_quality"], report["quality"]
    assert estimate["version"] == 1 and estimate["rows"] == len(x_prod) and estimate["calibrated"]
    assert abs(estimate["accuracy"] - live["accuracy"]) <= STATED_ERROR
    metrics = child_metrics()
    assert 'modelgate_estimated_accuracy{bound="estimate",model="digits",version="1"}' in metrics


def wait_for(client, ready, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = client.get("/monitoring/drift", params={"model": "digits"}).json()
        if ready(report):
            return report
        time.sleep(0.05)
    raise AssertionError(f"no such report: {report}")
