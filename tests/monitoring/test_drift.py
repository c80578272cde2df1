"""Drift statistics: quiet on reference-like data, loud on a shifted feature, FDR-controlled."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from monitoring.drift import bin_counts, category_counts, decide, drift_of, js_distance, psi
from registry.demo import breast_cancer


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, cancer_model):
    from registry.store import Registry

    registry = Registry(tmp_path_factory.mktemp("drift"))
    return registry.push(cancer_model.onnx, "cancer", cancer_model.reference)


def window_stats(manifest, frame):
    statistics = [
        drift_of(name, "feature", profile, frame[name].to_numpy())
        for name, profile in manifest.reference.features.items()
    ]
    return {s.name: s for s in decide([s for s in statistics if s is not None])}


def test_identical_distributions_have_zero_psi_and_js():
    counts = np.array([10.0, 20.0, 30.0])
    assert psi(counts, counts) == pytest.approx(0) and js_distance(counts, counts) == pytest.approx(0)
    assert psi(counts, counts[::-1]) > 0.1 and 0 < js_distance(counts, counts[::-1]) <= 1


def test_bins_match_the_reference_profile(manifest, cancer_model):
    profile = manifest.reference.features["mean_area"]
    counts = bin_counts(cancer_model.frame["mean_area"].to_numpy(), profile.edges)
    assert counts.tolist() == list(profile.counts)


def test_held_out_data_from_the_same_source_does_not_drift(manifest):
    _, x_test, _, _ = breast_cancer()
    statistics = window_stats(manifest, x_test)
    assert len(statistics) == 30
    assert not [s.name for s in statistics.values() if s.drifted]


def test_a_shifted_feature_drifts_and_only_it(manifest):
    _, x_test, _, _ = breast_cancer()
    shifted = x_test.assign(mean_radius=x_test["mean_radius"] + 2 * x_test["mean_radius"].std())
    statistics = window_stats(manifest, shifted)
    assert [s.name for s in statistics.values() if s.drifted] == ["mean_radius"]
    radius = statistics["mean_radius"]
    assert (
        radius.test == "ks"
        and radius.p_adjusted < 0.001
        and radius.psi > 0.5
        and radius.window == len(x_test)
    )


def test_categorical_drift_uses_chi_square_on_reference_categories(tmp_path, columns_model):
    from registry.store import Registry

    manifest = Registry(tmp_path).push(columns_model.onnx, "columns", columns_model.reference)
    profile = manifest.reference.features["color"]
    same = drift_of("color", "feature", profile, np.array(["red", "green", "blue"] * 100, dtype=object))
    skewed = drift_of("color", "feature", profile, np.array(["red"] * 280 + ["purple"] * 20, dtype=object))
    assert same.test == "chi2" and same.p_value > 0.05 and same.psi < 0.1
    assert skewed.p_value < 1e-6 and skewed.psi > 1
    counts = category_counts(np.array(["red", "purple", "red"], dtype=object), ("red", "blue"))
    assert counts.tolist() == [2, 0, 1]


def test_benjamini_hochberg_adjusts_and_needs_an_effect_size(manifest):
    _, x_test, _, _ = breast_cancer()
    stats = [drift_of(n, "feature", p, x_test[n].to_numpy()) for n, p in manifest.reference.features.items()]
    decided = decide(stats)
    assert all(d.p_adjusted >= d.p_value for d in decided)
    tiny = decide([replace(s, p_value=1e-9, psi=0.01) for s in stats[:1]])
    assert not tiny[0].drifted  # significant but negligible: not called drift


def test_an_empty_window_has_no_statistic(manifest):
    profile = manifest.reference.features["mean_area"]
    assert drift_of("mean_area", "feature", profile, np.array([np.nan, np.nan])) is None
