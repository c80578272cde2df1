"""The demo registry: scikit-learn's bundled breast-cancer data, a champion and a challenger."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from skl2onnx import to_onnx as skl_to_onnx
from sklearn.datasets import load_breast_cancer
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from registry.manifest import Manifest
from registry.store import Registry

DEMO_MODEL = "breast-cancer"


def to_onnx(estimator: Any, sample: pd.DataFrame) -> bytes:
    """A fitted scikit-learn estimator as ONNX: one float32 [N, F] input, plain probability tensor."""
    options = {id(estimator): {"zipmap": False}} if hasattr(estimator, "predict_proba") else None
    proto = skl_to_onnx(
        estimator,
        sample.to_numpy(dtype="float32")[:1],
        options=options,
        target_opset={"": 17, "ai.onnx.ml": 3},
    )
    serialized: bytes = proto.SerializeToString()
    return serialized


def snake_case(name: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_")


def breast_cancer() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Train/test split of the bundled data, features in snake_case, labels as strings."""
    data = load_breast_cancer(as_frame=True)
    features = data.data.rename(columns=snake_case)
    labels = data.target.map(dict(enumerate(data.target_names))).rename("diagnosis")
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return x_train, x_test, y_train, y_test


@dataclass(frozen=True)
class DemoModels:
    champion: Manifest
    challenger: Manifest


def build_demo(registry: Registry, actor: str = "modelgate-demo") -> DemoModels:
    """Train, export, push and promote the two demo models; returns their manifests."""
    x_train, x_test, y_train, y_test = breast_cancer()
    candidates = {
        "logistic regression": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
        "gradient boosting": GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0),
    }
    manifests = []
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.csv"
        x_train.to_csv(reference, index=False)
        for description, estimator in candidates.items():
            estimator.fit(x_train, y_train)
            path = Path(tmp) / f"{snake_case(description)}.onnx"
            path.write_bytes(to_onnx(estimator, x_train))
            accuracy = float(estimator.score(x_test, y_test))
            manifests.append(
                registry.push(
                    path,
                    DEMO_MODEL,
                    reference,
                    description=f"{description} on scikit-learn's breast-cancer data",
                    metrics={"test_accuracy": round(accuracy, 4), "test_rows": len(x_test)},
                    actor=actor,
                )
            )
    champion, challenger = manifests
    registry.promote(DEMO_MODEL, champion.version, "champion", reason="demo baseline", actor=actor)
    registry.promote(DEMO_MODEL, challenger.version, "challenger", reason="demo candidate", actor=actor)
    return DemoModels(champion=champion, challenger=challenger)


def demo_request(rows: int = 1) -> str:
    """A ready /predict body of ``rows`` held-out records (from the first, wrapping round), for the
    README, smoke tests and benchmarks."""
    _, x_test, _, _ = breast_cancer()
    records = x_test.iloc[[i % len(x_test) for i in range(rows)]].to_dict(orient="records")
    return json.dumps({"model": DEMO_MODEL, "inputs": records})
