"""Explanations in the loop: a gradient-boosting model's decisions move to other features while every
input's distribution stays exactly the reference's (each column shuffled on its own), and the
monitor flags attribution drift, not input drift; the same rows unshuffled flag nothing; and in
shadow mode the comparison shows where champion and challenger reason differently."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier
from starlette.testclient import TestClient

from registry.demo import breast_cancer, to_onnx
from registry.store import Registry
from service.app import create_app
from service.settings import Settings


@pytest.fixture(scope="module")
def boosted(tmp_path_factory: pytest.TempPathFactory):
    directory = tmp_path_factory.mktemp("boosted")
    x_train, _, y_train, _ = breast_cancer()
    model = GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0).fit(x_train, y_train)
    (directory / "boosted.onnx").write_bytes(to_onnx(model, x_train))
    x_train.to_csv(directory / "reference.csv", index=False)
    return directory, x_train


def serve(tmp_path, boosted, **settings):
    directory, _ = boosted
    registry = Registry(tmp_path / "registry")
    manifest = registry.push(directory / "boosted.onnx", "cancer", directory / "reference.csv", actor="tests")
    assert manifest.reference.attribution_method == "tree-path-dependent:margin"
    assert set(manifest.reference.attributions) == set(manifest.inputs.names)
    registry.promote("cancer", 1, "champion", actor="tests")
    return registry, Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05,
                              explain_rate=1.0, **settings)  # fmt: skip


def report_after(client, rows: int, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = client.get("/monitoring/drift", params={"model": "cancer"}).json()
        explained = report.get("attributions") or {}
        if explained.get("rows", 0) >= rows and report.get("status") == "ok":
            return report
        time.sleep(0.1)
    raise AssertionError(f"no report on {rows} explained rows: {report}")


def send(client, frame) -> None:
    for start in range(0, len(frame), 50):
        chunk = frame.iloc[start : start + 50].to_dict(orient="records")
        assert client.post("/predict", json={"inputs": chunk}).status_code == 200


@pytest.mark.parametrize("live_rows", ["reference", "held-out", "shuffled"])
def test_attribution_drift_is_flagged_when_decisions_move_with_inputs_alike(
    tmp_path, boosted, live_rows, child_metrics
):
    _, reference = boosted
    rng = np.random.default_rng(0)
    shuffled = live_rows == "shuffled"
    live = {
        "reference": reference,
        "held-out": breast_cancer()[1],  # other rows of the same population
        "shuffled": reference.apply(lambda column: rng.permutation(column.to_numpy())),
    }[live_rows]
    _, settings = serve(tmp_path, boosted)
    with TestClient(create_app(settings)) as client:
        send(client, live)
        report = report_after(client, len(live))
    metrics = child_metrics()
    explained = report["attributions"]
    assert explained["method"] == "tree-path-dependent:margin"
    inputs = [s for s in report["features"] if s["kind"] == "feature"]
    if live_rows != "held-out":  # each input's distribution is exactly the reference's
        assert len(inputs) == 30 and not any(s["drifted"] for s in inputs)
    drifted = {s["name"] for s in explained["features"] if s["drifted"]}
    if shuffled:
        assert drifted, explained["features"]
        assert explained["alerting_features"] >= 1
        alerting = [
            line
            for line in metrics.splitlines()
            if line.startswith('modelgate_attribution_features_alerting{model="cancer",version="1"}')
        ]
        assert alerting and float(alerting[0].split()[-1]) >= 1  # fmt: skip
    elif live_rows == "held-out":  # no false alarm at the alerts' level
        assert explained["alerting_features"] == 0, explained["features"]
    else:
        assert drifted == set() and explained["alerting_features"] == 0
        # the same rows as the reference: the same importances, to the float
        for name, importance in explained["mean_importance"].items():
            assert importance == pytest.approx(
                explained["reference_mean_importance"][name], rel=1e-6, abs=1e-12
            )


def test_shadow_mode_compares_where_champion_and_challenger_reason(tmp_path, boosted, cancer_model):
    registry, settings = serve(tmp_path, boosted, admin_token="secret")
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference, actor="tests")  # logistic regression
    registry.promote("cancer", 2, "challenger", actor="tests")
    from registry.aliases import RoutingPolicy

    registry.set_routing("cancer", RoutingPolicy(mode="shadow"), actor="tests")
    _, reference = boosted
    with TestClient(create_app(settings)) as client:
        send(client, reference.head(200))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            compared = client.get("/monitoring/compare", params={"model": "cancer"}).json()
            arms = (compared.get("attributions") or {}).get("arms", {})
            if (
                arms.get("champion", {}).get("rows", 0) >= 200
                and arms.get("shadow", {}).get("rows", 0) >= 200
            ):
                break
            time.sleep(0.1)
    reasoning = compared["attributions"]
    assert (reasoning["arms"]["champion"]["version"], reasoning["arms"]["shadow"]["version"]) == (1, 2)
    differences = reasoning["differences"]
    assert len(differences) == 10
    magnitudes = [abs(d["difference"]) for d in differences]
    assert magnitudes == sorted(magnitudes, reverse=True) and magnitudes[0] > 0
