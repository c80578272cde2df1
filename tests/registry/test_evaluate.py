"""``modelgate registry evaluate``: real models on labelled rows, the verdict in the audit trail, and a
refused candidate kept from becoming champion."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.tree import DecisionTreeClassifier

from registry.demo import breast_cancer, to_onnx
from service.cli import main


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def holdout(tmp_path):
    """Every labelled row of the bundled data, with a segment column: tumours above or below the median
    radius."""
    x_train, x_test, y_train, y_test = breast_cancer()
    frame = pd.concat([x_train, x_test]).assign(diagnosis=pd.concat([y_train, y_test]))
    frame["size"] = np.where(frame["mean_radius"] > frame["mean_radius"].median(), "large", "small")
    path = tmp_path / "holdout.parquet"
    frame.to_parquet(path)
    return path


def test_a_candidate_as_good_as_the_champion_passes(capsys, cancer_registry, cancer_model, holdout):
    cancer_registry.push(cancer_model.onnx, "cancer", cancer_model.reference)  # v3: v1 again
    root = ["--registry", str(cancer_registry.root)]
    code, out, _ = run(capsys, "registry", "evaluate", "cancer", "3", "--data", str(holdout), "--target",
                       "diagnosis", "--segment", "size", *root)  # fmt: skip
    assert code == 0 and "cancer:3 against champion 1: pass" in out
    assert "overall" in out and "size=large" in out and "size=small" in out and "mcnemar-exact p=1" in out
    (entry,) = [e for e in cancer_registry.history("cancer") if e.action == "evaluate"]
    assert (entry.from_version, entry.to_version, entry.evaluation.verdict) == (1, 3, "pass")
    assert (
        entry.evaluation.data.startswith("holdout.parquet sha256:") and entry.evaluation.overall.rows == 569
    )
    assert run(capsys, "registry", "promote", "cancer", "3", "--to", "champion", *root)[0] == 0


def test_a_worse_candidate_is_refused_and_kept_from_champion(
    capsys, cancer_registry, cancer_model, holdout, tmp_path
):
    x_train, _, y_train, _ = breast_cancer()
    labels = y_train.sample(frac=1, random_state=0).to_numpy()
    shuffled = DecisionTreeClassifier(max_depth=3, random_state=0).fit(x_train, labels)
    onnx = tmp_path / "shuffled.onnx"
    onnx.write_bytes(to_onnx(shuffled, x_train))
    cancer_registry.push(onnx, "cancer", cancer_model.reference)  # v3, trained on shuffled labels
    root = ["--registry", str(cancer_registry.root)]
    code, out, _ = run(capsys, "registry", "evaluate", "cancer", "3", "--data", str(holdout), "--target",
                       "diagnosis", "--segment", "size", "--json", *root)  # fmt: skip
    evaluation = json.loads(out)["evaluation"]
    assert code == 3 and evaluation["verdict"] == "refuse"
    assert evaluation["reasons"][0].startswith("worse overall: accuracy")
    assert {s["segment"] for s in evaluation["segments"]} == {"size=large", "size=small"}
    assert evaluation["overall"]["champion"]["low"] > evaluation["overall"]["candidate"]["high"]

    code, _, err = run(capsys, "registry", "promote", "cancer", "3", "--to", "champion", *root)
    assert code == 1 and "cancer:3 was refused by its evaluation against champion 1" in err
    assert "worse overall: accuracy" in err and "--force" in err
    assert (
        run(capsys, "registry", "promote", "cancer", "3", "--to", "challenger", *root)[0] == 0
    )  # still testable
    code, _, _ = run(capsys, "registry", "promote", "cancer", "3", "--to", "champion", "--force", "--reason",
                     "accepted by the risk team", *root)  # fmt: skip
    assert code == 0 and cancer_registry.aliases("cancer").champion == 3
    history = run(capsys, "registry", "history", "cancer", *root)[1]
    assert "evaluate 3 vs 1: refuse" in history and "accepted by the risk team" in history


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cancer", "1"], "cancer:1 is the champion"),
        (["cancer", "2", "--target", "outcome"], "no column 'outcome'"),
        (["cancer", "2", "--segment", "region"], "no column 'region'"),
    ],
)
def test_bad_evaluations_are_one_clear_line(capsys, cancer_registry, holdout, args, message):
    target = [] if "--target" in args else ["--target", "diagnosis"]
    code, _, err = run(capsys, "registry", "evaluate", *args, *target, "--data", str(holdout), "--registry",
                       str(cancer_registry.root))  # fmt: skip
    assert code == 1 and message in err
    assert not [e for e in cancer_registry.history("cancer") if e.action == "evaluate"]


def test_push_can_evaluate_the_new_version_at_once(capsys, cancer_registry, cancer_model, holdout, tmp_path):
    x_train, _, y_train, _ = breast_cancer()
    labelled = tmp_path / "train.csv"  # training data with its label column, as teams keep it
    x_train.assign(diagnosis=y_train).to_csv(labelled, index=False)
    root = ["--registry", str(cancer_registry.root)]
    code, out, _ = run(capsys, "registry", "push", str(cancer_model.onnx), "--name", "cancer", "--reference",
                       str(labelled), "--target", "diagnosis", "--evaluate", str(holdout), "--segment",
                       "size", *root)  # fmt: skip
    assert code == 0 and "pushed cancer:3" in out and "cancer:3 against champion 1: pass" in out
    (entry,) = [e for e in cancer_registry.history("cancer") if e.action == "evaluate"]
    assert entry.reason == "evaluated at push" and entry.evaluation.segments[0].segment == "size=large"
    code, _, err = run(capsys, "registry", "push", str(cancer_model.onnx), "--name", "cancer", "--reference",
                       str(cancer_model.reference), "--evaluate", str(holdout), *root)  # fmt: skip
    assert code == 1 and "--evaluate needs --target" in err


def test_a_candidate_better_overall_but_worse_for_one_segment_is_refused(capsys, registry, holdout, tmp_path):
    """Two real trees, each taught wrong labels in one region: the champion all small tumours, the
    candidate only the large ones of above-median texture. The candidate wins on average and loses,
    significantly, on large tumours."""
    x_train, _, y_train, _ = breast_cancer()
    median_radius, median_texture = x_train["mean_radius"].median(), x_train["mean_texture"].median()
    small = (x_train["mean_radius"] <= median_radius).to_numpy()
    large_rough = ~small & (x_train["mean_texture"] > median_texture).to_numpy()
    flipped = y_train.map({"malignant": "benign", "benign": "malignant"}).to_numpy()
    reference = tmp_path / "reference.csv"
    x_train.to_csv(reference, index=False)
    for name, wrong in (("champion", small), ("candidate", large_rough)):
        tree = DecisionTreeClassifier(max_depth=6, random_state=0).fit(
            x_train, np.where(wrong, flipped, y_train)
        )
        (tmp_path / f"{name}.onnx").write_bytes(to_onnx(tree, x_train))
        registry.push(tmp_path / f"{name}.onnx", "tumours", reference)
    registry.promote("tumours", 1, "champion")
    frame = pd.read_parquet(holdout)
    frame["size"] = np.where(frame["mean_radius"] > median_radius, "large", "small")
    frame.to_parquet(holdout)
    code, out, _ = run(capsys, "registry", "evaluate", "tumours", "2", "--data", str(holdout), "--target",
                       "diagnosis", "--segment", "size", "--json", "--registry",
                       str(registry.root))  # fmt: skip
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["overall"]["candidate_better"] is True  # better on average ...
    segments = {s["segment"]: s for s in evaluation["segments"]}
    assert segments["size=small"]["candidate_better"] is True
    assert segments["size=large"]["candidate_better"] is False  # ... and worse on large tumours
    assert code == 3 and evaluation["verdict"] == "refuse"
    assert [r.split(":")[0] for r in evaluation["reasons"]] == ["worse segment size=large"]


@pytest.fixture
def digits_registry(registry, digits_rivals):
    """The faint-wrong digits model as champion, the heavy-wrong one pushed as version 2."""
    for model in digits_rivals:
        registry.push(model.onnx, "digits", model.reference, target="digit", actor="tests")
    registry.promote("digits", 1, "champion", actor="tests")
    return registry


def test_a_tensor_candidate_better_overall_but_worse_on_heavy_strokes_is_refused(
    capsys, digits_registry, digits_rivals, tmp_path
):
    """Evaluation reads tensors too: a .npz of held-out images with their digits and a segment array."""
    test = digits_rivals[0]
    holdout = tmp_path / "holdout.npz"
    strokes = test.test["pixels"].reshape(len(test.labels), -1).mean(axis=1)
    segment = np.where(strokes > np.median(strokes), "heavy", "faint")
    np.savez(holdout, pixels=test.test["pixels"], digit=test.labels, strokes=segment)
    code, out, _ = run(capsys, "registry", "evaluate", "digits", "2", "--data", str(holdout), "--target",
                       "digit", "--segment", "strokes", "--json", "--registry",
                       str(digits_registry.root))  # fmt: skip
    evaluation = json.loads(out)["evaluation"]
    assert evaluation["overall"]["rows"] == len(test.labels)
    assert evaluation["overall"]["candidate_better"] is True
    segments = {s["segment"]: s for s in evaluation["segments"]}
    assert segments["strokes=faint"]["candidate_better"] is True
    assert segments["strokes=heavy"]["candidate_better"] is False
    assert code == 3 and [r.split(":")[0] for r in evaluation["reasons"]] == ["worse segment strokes=heavy"]
    code, _, err = run(capsys, "registry", "promote", "digits", "2", "--to", "champion", "--registry",
                       str(digits_registry.root))  # fmt: skip
    assert code == 1 and "refused" in err


@pytest.mark.parametrize(
    ("key", "flat", "args", "message"),
    [
        ("image", False, [], "version 1 needs the input 'pixels', not in the data; it has image"),
        ("pixels", False, ["--segment", "writer"], "no array 'writer' for --segment; it has pixels"),
        ("pixels", True, [], "input 'pixels' of version 1 takes shape ['N', 1, 8, 8], the data has [450"),
    ],
)
def test_tensor_data_that_does_not_fit_is_one_clear_line(
    capsys, digits_registry, digits_rivals, tmp_path, key, flat, args, message
):
    pixels = digits_rivals[0].test["pixels"]
    inputs = {key: pixels.reshape(len(pixels), -1) if flat else pixels}
    holdout = tmp_path / "holdout.npz"
    np.savez(holdout, digit=digits_rivals[0].labels, **inputs)
    code, _, err = run(capsys, "registry", "evaluate", "digits", "2", "--data", str(holdout), "--target",
                       "digit", *args, "--registry", str(digits_registry.root))  # fmt: skip
    assert code == 1 and message in err


def test_an_embedding_model_has_no_label_to_be_evaluated_on(capsys, registry, embedder_tensor_model):
    for _ in range(2):
        registry.push(embedder_tensor_model.onnx, "embedder", embedder_tensor_model.reference, actor="tests")
    registry.promote("embedder", 1, "champion", actor="tests")
    code, _, err = run(capsys, "registry", "evaluate", "embedder", "2", "--data", "any.npz", "--target",
                       "topic", "--registry", str(registry.root))  # fmt: skip
    assert code == 1 and "embedder:1 answers embeddings: there is no label to score it against" in err
