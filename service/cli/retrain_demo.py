"""The demo's retraining script, started by an alert's action (``monitoring/alerts-demo.yml``).

A template for your own: it reads what the trigger hands over (``MODELGATE_*``
variables, the window as Parquet; see ``monitoring.triggers``), retrains on
the original data plus the window's labelled rows, and goes through the same
commands a person would: ``modelgate registry push --evaluate`` (the new
version against the champion, on labelled window rows kept out of training,
per segment), then ``modelgate registry promote`` only when the evaluation
passes. Exit codes: 0 promoted, 3 refused by the evaluation, 2 too little
labelled data to retrain on.

Run by hand: ``MODELGATE_WINDOW=window.parquet MODELGATE_MODEL=breast-cancer
MODELGATE_REGISTRY=.modelgate/demo python -m service.cli.retrain_demo``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier

from registry.demo import breast_cancer, to_onnx
from registry.store import Registry
from service.cli import main as modelgate

#: labelled window rows (distinct) needed before retraining is worth it
MIN_LABELLED = 100
TARGET = "diagnosis"


def main() -> int:
    model = os.environ["MODELGATE_MODEL"]
    window = pd.read_parquet(os.environ["MODELGATE_WINDOW"])
    alertname = os.environ.get("MODELGATE_ALERTNAME", "a manual run")
    x_train, _, y_train, _ = breast_cancer()
    features = list(x_train.columns)
    labelled = window.dropna(subset=["ground_truth"]).drop_duplicates(subset=features)
    if len(labelled) < MIN_LABELLED:
        print(f"{len(labelled)} distinct labelled rows in the window; retraining needs {MIN_LABELLED}")
        return 2
    # half the labelled window teaches the new version what traffic looks like now; the other half,
    # which neither model has seen, judges it against the champion
    rng = np.random.default_rng(0)
    held_out = rng.random(len(labelled)) < 0.5
    fresh, holdout = labelled[~held_out], labelled[held_out]
    recent = fresh[features].assign(**{TARGET: fresh["ground_truth"]})
    train = pd.concat([x_train.assign(**{TARGET: y_train}), recent])
    estimator = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0)
    estimator.fit(train[features], train[TARGET])

    work = Path.cwd()
    (work / "model.onnx").write_bytes(to_onnx(estimator, train[features]))
    train.to_parquet(work / "reference.parquet", index=False)
    evaluation = holdout[features].assign(**{TARGET: holdout["ground_truth"]})
    large = evaluation["mean_radius"] > x_train["mean_radius"].median()
    evaluation["size"] = np.where(large, "large", "small")
    evaluation.to_parquet(work / "holdout.parquet", index=False)

    root = ["--registry", os.environ["MODELGATE_REGISTRY"]]
    before = Registry(os.environ["MODELGATE_REGISTRY"]).versions(model)
    pushed = modelgate([
        "registry", "push", str(work / "model.onnx"), "--name", model, "--reference",
        str(work / "reference.parquet"), "--target", TARGET, "--evaluate", str(work / "holdout.parquet"),
        "--segment", "size", "--description", f"retrained after {alertname} on {len(fresh)} window rows",
        *root,
    ])  # fmt: skip
    new = sorted(set(Registry(os.environ["MODELGATE_REGISTRY"]).versions(model)) - set(before))
    if not new:
        return pushed  # the push itself failed, and said why
    version = new[0]
    if pushed != 0:
        print(f"{model}:{version} not promoted: its evaluation refused it")
        return pushed
    return modelgate([
        "registry", "promote", model, str(version), "--to", "champion",
        "--reason", f"retrained after {alertname}; evaluation passed", *root,
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
