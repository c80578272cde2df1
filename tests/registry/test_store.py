"""The registry's promises: immutable, hashed, atomic versions; aliases and audit; clean refusals."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from registry import (
    AliasError,
    IntegrityError,
    InvalidModel,
    InvalidModelName,
    InvalidReferenceData,
    ModelNotFound,
    SchemaMismatch,
    VersionNotFound,
)
from registry.manifest import CategoricalProfile, NumericProfile
from registry.store import sha256_of


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes: a registry's whole state."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_push_adds_numbered_versions_with_a_complete_manifest(registry, cancer_model):
    first = registry.push(
        cancer_model.onnx,
        "cancer",
        cancer_model.reference,
        description="baseline",
        metrics={"auc": 0.99},
        actor="alice",
    )
    second = registry.push(cancer_model.onnx, "cancer", cancer_model.reference, actor="alice")

    assert (first.version, second.version) == (1, 2)
    assert registry.versions("cancer") == [1, 2]
    assert first.sha256 == sha256_of(cancer_model.onnx.read_bytes())
    assert first.size_bytes == cancer_model.onnx.stat().st_size
    assert first.inputs.layout == "matrix"
    assert first.inputs.names == tuple(cancer_model.frame.columns)
    assert {f.dtype for f in first.inputs.features} == {"float32"}
    assert first.output.kind == "classification"
    assert first.output.classes == ("benign", "malignant")
    assert first.lineage.reference_rows == len(cancer_model.frame)
    assert first.lineage.reference_sha256 == sha256_of(cancer_model.reference.read_bytes())
    assert first.lineage.metrics == {"auc": 0.99}
    assert first.created_by == "alice"


def test_reference_profile_describes_features_and_predictions(registry, cancer_model):
    manifest = registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    radius = manifest.reference.features["mean_radius"]
    column = cancer_model.frame["mean_radius"]

    assert isinstance(radius, NumericProfile)
    # at the dtype the model receives: float32
    assert radius.min == np.float32(column.min()) and radius.max == np.float32(column.max())
    assert sum(radius.counts) == len(column)
    # the whole reference's distribution function: every distinct value of these 426 rows
    assert radius.cdf_values[0] == radius.min and radius.cdf_values[-1] == radius.max
    assert radius.cdf_at[-1] == len(column) and len(radius.cdf_values) == column.nunique()
    assert len(radius.counts) == len(radius.edges) + 1 and len(radius.edges) == 9
    assert radius.missing_rate == 0.0
    assert len(radius.sample) == manifest.reference.sample_rows == len(column)
    label = manifest.reference.predictions["label"]
    assert isinstance(label, CategoricalProfile)
    assert set(label.categories) == {"benign", "malignant"} and sum(label.counts) == len(column)
    assert set(manifest.reference.predictions) == {"label", "probability:benign", "probability:malignant"}


def test_default_plausibility_rules_follow_the_reference(
    registry, cancer_model, diabetes_model, columns_model
):
    cancer = registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    rule = cancer.plausibility.inputs["mean_area"]
    assert (rule.min, rule.max) == (
        cancer_model.frame["mean_area"].min(),
        cancer_model.frame["mean_area"].max(),
    )
    assert cancer.plausibility.output.classes == ("benign", "malignant")

    diabetes = registry.push(diabetes_model.onnx, "diabetes", diabetes_model.reference)
    value = diabetes.reference.predictions["value"]
    assert diabetes.output.kind == "regression"
    assert (
        diabetes.plausibility.output.value_min
        < value.min
        < value.max
        < diabetes.plausibility.output.value_max
    )

    columns = registry.push(columns_model.onnx, "columns", columns_model.reference)
    assert set(columns.plausibility.inputs["color"].domain) == {"red", "green", "blue"}
    assert columns.plausibility.inputs["size"].max_missing_rate >= 0.04 * 2


def test_per_feature_inputs_and_zipmap_outputs_are_understood(registry, columns_model, iris_zipmap_model):
    columns = registry.push(columns_model.onnx, "columns", columns_model.reference)
    assert columns.inputs.layout == "columns"
    assert {(f.name, f.dtype, f.allow_missing) for f in columns.inputs.features} == {
        ("color", "string", False),
        ("size", "float32", True),
    }
    iris = registry.push(iris_zipmap_model.onnx, "iris", iris_zipmap_model.reference)
    assert iris.output.probabilities_as_map
    assert iris.output.classes == ("0", "1", "2")


def test_versions_are_read_only_and_verified(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    version_dir = registry.root / "models/cancer/versions/1"
    for path in version_dir.iterdir():
        assert not path.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert registry.verify() == []


def test_verify_reports_a_tampered_model_and_loading_refuses_it(registry, cancer_model, cancer_model_v2):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    model_file = registry.root / "models/cancer/versions/1/model.onnx"
    model_file.chmod(0o644)
    model_file.write_bytes(cancer_model_v2.onnx.read_bytes())

    problems = registry.verify()
    assert [(p.name, p.version, p.file) for p in problems] == [("cancer", 1, "model.onnx")]
    assert "expected" in problems[0].problem
    with pytest.raises(IntegrityError, match="sha256"):
        registry.read_model("cancer", 1)


def test_verify_reports_missing_and_unlisted_files(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    version_dir = registry.root / "models/cancer/versions/1"
    (version_dir / "manifest.json").unlink()
    (version_dir / "stray.bin").write_bytes(b"x")
    problems = {(p.file, p.problem) for p in registry.verify("cancer")}
    assert ("manifest.json", "missing") in problems
    assert ("stray.bin", "file not in SHA256SUMS") in problems


def test_a_crash_mid_push_leaves_no_version(registry, cancer_model, monkeypatch):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    before = tree(registry.root)
    real_rename = os.rename

    def crash(src, dst):
        raise OSError("disk vanished")

    monkeypatch.setattr(os, "rename", crash)
    with pytest.raises(OSError, match="disk vanished"):
        registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    monkeypatch.setattr(os, "rename", real_rename)

    assert tree(registry.root) == before
    assert registry.versions("cancer") == [1]
    assert registry.push(cancer_model.onnx, "cancer", cancer_model.reference).version == 2


def test_leftovers_of_a_killed_push_are_ignored_and_cleaned(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    leftover = registry.root / "models/cancer/.staging/dead"
    leftover.mkdir(parents=True)
    (leftover / "model.onnx").write_bytes(b"half")
    assert registry.versions("cancer") == [1]
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    assert not leftover.exists()


def test_promote_and_rollback_walk_the_champion_stack(registry, cancer_model):
    for _ in range(3):
        registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 1, "champion", reason="first", actor="alice")
    registry.promote("cancer", 2, "champion", reason="better", actor="bob")
    registry.promote("cancer", 3, "challenger", reason="try", actor="bob")
    assert (registry.aliases("cancer").champion, registry.aliases("cancer").challenger) == (2, 3)

    entry = registry.rollback("cancer", reason="regression in prod", actor="carol")
    assert (entry.from_version, entry.to_version, entry.actor) == (2, 1, "carol")
    assert registry.aliases("cancer").champion == 1
    with pytest.raises(AliasError, match="no previous champion"):
        registry.rollback("cancer")

    registry.promote("cancer", 3, "champion", actor="dave")
    aliases = registry.aliases("cancer")
    assert (aliases.champion, aliases.challenger) == (3, None)  # the challenger became champion


def test_history_records_who_when_from_to_and_why(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference, description="v1", actor="alice")
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference, actor="alice")
    registry.promote("cancer", 1, "champion", reason="launch", actor="alice")
    registry.promote("cancer", 2, "champion", reason="retrained", actor="bob")
    registry.rollback("cancer", reason="bad canary", actor="carol")

    history = registry.history("cancer")
    assert [(e.seq, e.action, e.alias, e.from_version, e.to_version, e.actor, e.reason) for e in history] == [
        (1, "push", None, None, 1, "alice", "v1"),
        (2, "push", None, None, 2, "alice", ""),
        (3, "promote", "champion", None, 1, "alice", "launch"),
        (4, "promote", "champion", 1, 2, "bob", "retrained"),
        (5, "rollback", "champion", 2, 1, "carol", "bad canary"),
    ]
    assert all(a.at <= b.at for a, b in itertools.pairwise(history))


def test_a_torn_history_line_is_dropped_not_fatal(registry, cancer_model):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 1, "champion")
    history = registry.root / "models/cancer/history.jsonl"
    with open(history, "ab") as handle:
        handle.write(b'{"seq": 3, "action": "prom')  # a crash mid-append
    assert registry.aliases("cancer").champion == 1
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    registry.promote("cancer", 2, "champion")
    assert [e.seq for e in registry.history("cancer")] == [1, 2, 3, 4]
    assert registry.aliases("cancer").champion == 2


def test_resolve_understands_numbers_aliases_and_latest(cancer_registry):
    assert cancer_registry.resolve("cancer", "champion") == 1
    assert cancer_registry.resolve("cancer", "challenger") == 2
    assert cancer_registry.resolve("cancer", "latest") == 2
    assert cancer_registry.resolve("cancer", "2") == 2
    with pytest.raises(VersionNotFound, match="no version 7"):
        cancer_registry.resolve("cancer", 7)
    with pytest.raises(VersionNotFound, match="use a number"):
        cancer_registry.resolve("cancer", "newest")
    with pytest.raises(ModelNotFound, match="'dog' not found"):
        cancer_registry.resolve("dog")


@pytest.mark.parametrize("name", ["../evil", "a/b", "", "x" * 65, ".hidden", "with space", "semi;colon"])
def test_names_with_path_or_odd_characters_are_refused(registry, cancer_model, name):
    with pytest.raises(InvalidModelName, match="invalid model name"):
        registry.push(cancer_model.onnx, name, cancer_model.reference)
    assert tree(registry.root) == {}


def test_refusals_leave_the_registry_unchanged(registry, cancer_model, diabetes_model, tmp_path):
    registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    before = tree(registry.root)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"this is not a protobuf")
    wrong_columns = tmp_path / "wrong.csv"
    cancer_model.frame.iloc[:, :29].to_csv(wrong_columns, index=False)
    text_column = tmp_path / "text.csv"
    cancer_model.frame.assign(mean_radius="big").to_csv(text_column, index=False)
    empty = tmp_path / "empty.csv"
    cancer_model.frame.iloc[:0].to_csv(empty, index=False)
    odd_format = tmp_path / "data.xlsx"
    odd_format.write_bytes(b"x")

    cases = [
        (InvalidModel, "does not load in ONNX Runtime", garbage, cancer_model.reference),
        (InvalidModel, "does not exist", tmp_path / "missing.onnx", cancer_model.reference),
        (InvalidReferenceData, "does not exist", cancer_model.onnx, tmp_path / "missing.csv"),
        (SchemaMismatch, "takes 30 features, the reference data has 29", cancer_model.onnx, wrong_columns),
        (SchemaMismatch, "'mean_radius' has dtype", cancer_model.onnx, text_column),
        (SchemaMismatch, "takes 30 features", cancer_model.onnx, diabetes_model.reference),
        (InvalidReferenceData, "no rows", cancer_model.onnx, empty),
        (InvalidReferenceData, "unknown format", cancer_model.onnx, odd_format),
    ]
    for error, message, model, reference in cases:
        with pytest.raises(error, match=message):
            registry.push(model, "cancer", reference)
        assert tree(registry.root) == before, f"{error.__name__} changed the registry"


def test_a_new_model_refused_leaves_no_trace(registry, cancer_model, tmp_path):
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00\x01")
    with pytest.raises(InvalidModel):
        registry.push(garbage, "fresh", cancer_model.reference)
    assert registry.models() == [] and tree(registry.root) == {}


def test_per_feature_model_refuses_missing_and_extra_columns(registry, columns_model, tmp_path):
    extra = tmp_path / "extra.csv"
    columns_model.frame.assign(weight=1.0).drop(columns=["size"]).to_csv(extra, index=False)
    with pytest.raises(
        SchemaMismatch, match=r"missing from the reference: \['size'\]; not model inputs: \['weight'\]"
    ):
        registry.push(columns_model.onnx, "columns", extra)


def test_target_column_is_left_out_and_parquet_is_read(registry, cancer_model, tmp_path):
    with_target = tmp_path / "train.parquet"
    cancer_model.frame.assign(diagnosis="benign").to_parquet(with_target)
    manifest = registry.push(cancer_model.onnx, "cancer", with_target, target="diagnosis")
    assert "diagnosis" not in manifest.inputs.names
    with pytest.raises(InvalidReferenceData, match="target column 'label'"):
        registry.push(cancer_model.onnx, "cancer", with_target, target="label")


def test_promote_refuses_unknown_versions_and_aliases(cancer_registry):
    before = cancer_registry.history("cancer")
    with pytest.raises(VersionNotFound):
        cancer_registry.promote("cancer", 9, "champion")
    with pytest.raises(AliasError, match="unknown alias"):
        cancer_registry.promote("cancer", 1, "production")  # type: ignore[arg-type]
    with pytest.raises(ModelNotFound):
        cancer_registry.promote("dog", 1, "champion")
    assert cancer_registry.history("cancer") == before
    assert not (cancer_registry.root / "models/dog").exists()


def test_manifest_round_trips_through_disk(registry, cancer_model):
    pushed = registry.push(cancer_model.onnx, "cancer", cancer_model.reference)
    assert registry.manifest("cancer", 1) == pushed


def test_reference_missing_values_are_profiled(registry, columns_model):
    manifest = registry.push(columns_model.onnx, "columns", columns_model.reference)
    size = manifest.reference.features["size"]
    assert isinstance(size, NumericProfile)
    expected = pd.read_csv(columns_model.reference)["size"].isna().mean()
    assert size.missing_rate == pytest.approx(expected)
    assert None in size.sample
    assert registry.manifest("columns", 1) == manifest  # missing values survive the JSON round trip
