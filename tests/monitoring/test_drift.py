"""Drift statistics: quiet on clean windows of any size, loud on small shifts, truthful on rounding and
missing values."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from monitoring.baseline import reference
from monitoring.drift import bin_counts, decide, drift_of, js_distance, psi
from registry.demo import breast_cancer
from registry.profile import categorical_profile, narrowed, numeric_profile, sample_index


@pytest.fixture(scope="module")
def manifest(tmp_path_factory, cancer_model):
    from registry.store import Registry

    registry = Registry(tmp_path_factory.mktemp("drift"))
    return registry.push(cancer_model.onnx, "cancer", cancer_model.reference)


def window_stats(manifest, frame):
    statistics = []
    for spec in manifest.inputs.features:
        ref = reference(manifest.reference.features[spec.name], spec.dtype)
        statistics += drift_of(spec.name, "feature", ref, frame[spec.name].to_numpy())
    return {s["name"]: s for s in decide(statistics)}


def as_logged(values: np.ndarray) -> np.ndarray:
    """Values as the monitor reads them back: narrowed to float32 by validation, written by orjson
    (the shortest float32 repr), parsed as float64."""
    encoded = orjson.dumps(values.astype(np.float32), option=orjson.OPT_SERIALIZE_NUMPY)
    return np.array(orjson.loads(encoded), dtype=np.float64)


def generated(rows: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Five features of the shapes real tables have: Gaussian, skewed, a rounded log count sitting on
    its decile edges, a small count, a category; one with missing values."""
    gaussian = rng.normal(size=rows)
    missing = rng.normal(size=rows)
    missing[rng.random(rows) < 0.03] = np.nan
    return {
        "gaussian": gaussian,
        "skewed": rng.lognormal(0, 1, size=rows),
        "log_count": np.log1p(rng.poisson(4, size=rows)).astype(np.float64),
        "count": rng.poisson(2, size=rows).astype(np.float64),
        "missing": missing,
        "colour": rng.choice(["red", "green", "blue", "grey"], p=[0.5, 0.3, 0.15, 0.05], size=rows).astype(
            object
        ),
    }


@pytest.fixture(scope="module")
def references():
    data = generated(10_000, np.random.default_rng(0))
    index = sample_index(10_000)
    refs = {
        name: reference(numeric_profile(values, index, "float32"), "float32")
        for name, values in data.items()
        if name != "colour"
    }
    refs["colour"] = reference(categorical_profile(pd.Series(data["colour"]), index))
    return refs


def judged(refs, window):
    statistics = []
    for name, values in window.items():
        statistics += drift_of(name, "feature", refs[name], as_logged(values) if name != "colour" else values)
    return decide(statistics)


def test_identical_distributions_have_zero_psi_and_js():
    counts = np.array([10.0, 20.0, 30.0])
    assert psi(counts, counts) == pytest.approx(0) and js_distance(counts, counts) == pytest.approx(0)
    assert psi(counts, counts[::-1]) > 0.1 and 0 < js_distance(counts, counts[::-1]) <= 1


def test_bins_match_the_reference_profile_at_the_models_dtype(manifest, cancer_model):
    profile = manifest.reference.features["mean_area"]
    values = narrowed(cancer_model.frame["mean_area"].to_numpy(), "float32")
    assert bin_counts(values, profile.edges).tolist() == list(profile.counts)


def test_values_not_exact_in_float32_do_not_drift_on_their_decile_edges():
    # log1p of a count: every value is a decile edge, and none is exact in float32
    rng = np.random.default_rng(3)
    values = np.log1p(rng.poisson(4, size=5000)).astype(np.float64)
    profile = numeric_profile(values, sample_index(values.size), "float32")
    # the monitor narrows what it reads back as the gateway did: the same values, the same bins
    assert bin_counts(narrowed(as_logged(values), "float32"), profile.edges).tolist() == list(profile.counts)
    fresh = np.log1p(rng.poisson(4, size=1000)).astype(np.float64)
    (statistic,) = drift_of("log_count", "feature", reference(profile, "float32"), as_logged(fresh))
    assert statistic["psi"] < 0.05 and not decide([statistic])[0]["drifted"]
    # profiled in float64 (as before), the same clean window crosses the edges: past the old PSI gate
    stale = numeric_profile(values, sample_index(values.size), "float64")
    crossed = bin_counts(as_logged(fresh), stale.edges).astype(float)
    assert psi(np.asarray(stale.counts, dtype=float), crossed) > 0.1


@pytest.mark.parametrize("rows", [100, 200, 500, 1000])
def test_clean_windows_of_any_size_raise_no_false_alarm(references, rows):
    rng = np.random.default_rng(rows)
    alarms = sum(any(s["drifted"] for s in judged(references, generated(rows, rng))) for _ in range(150))
    assert alarms == 0


@pytest.mark.parametrize("shift", [0.25, 0.5])
def test_a_small_mean_shift_of_one_feature_is_found_and_only_it(references, shift):
    rng = np.random.default_rng(7)
    window = generated(1000, rng)
    window["gaussian"] = window["gaussian"] + shift
    drifted = [(s["name"], s["test"]) for s in judged(references, window) if s["drifted"]]
    assert drifted in ([("gaussian", "mann-whitney")], [("gaussian", "ks")])


def test_a_recent_shift_is_seen_in_the_windows_most_recent_part(references):
    rng = np.random.default_rng(8)
    window = generated(1000, rng)
    window["skewed"][-250:] = window["skewed"][-250:] * 2.0
    (statistic,) = [s for s in judged(references, window) if s["drifted"]]
    assert statistic["name"] == "skewed" and statistic["rows"] == 250


def test_a_wider_spread_with_the_same_centre_is_found_by_kolmogorov_smirnov(references):
    window = generated(1000, np.random.default_rng(9))
    window["gaussian"] = window["gaussian"] * 1.6
    (statistic,) = [s for s in judged(references, window) if s["drifted"]]
    assert statistic["name"] == "gaussian" and statistic["test"] == "ks"


def test_a_missing_rate_rise_is_drift_of_that_feature(references):
    rng = np.random.default_rng(10)
    window = generated(1000, rng)
    window["missing"][rng.random(1000) < 0.05] = np.nan  # 3% -> about 8%
    drifted = [(s["name"], s["test"]) for s in judged(references, window) if s["drifted"]]
    assert drifted == [("missing", "missing")]


def test_a_feature_missing_for_its_largest_values_is_drift(references):
    window = generated(1000, np.random.default_rng(11))
    largest = window["missing"] > np.nanquantile(window["missing"], 0.9)
    window["missing"][largest] = np.nan
    drifted = {s["test"] for s in judged(references, window) if s["drifted"] and s["name"] == "missing"}
    # both its missing rate and what is left of its values
    assert len(drifted) == 2 and "missing" in drifted


def test_a_category_share_halved_is_drift(references):
    rng = np.random.default_rng(12)
    window = generated(1000, rng)
    red = np.flatnonzero(window["colour"] == "red")
    window["colour"][rng.choice(red, red.size // 2, replace=False)] = "green"
    (statistic,) = [s for s in judged(references, window) if s["drifted"]]
    assert statistic["name"] == "colour" and statistic["test"] == "categories" and statistic["effect"] > 0.2


def test_a_discrete_count_is_tested_value_by_value(references):
    assert references["count"].categories is not None and references["gaussian"].categories is None
    window = generated(1000, np.random.default_rng(13))
    window["count"] = np.where(window["count"] == 0, 1.0, window["count"])
    (statistic,) = [s for s in judged(references, window) if s["drifted"]]
    assert statistic["name"] == "count" and statistic["test"] == "categories"


def claims(rows: int, zero_share: float, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    """A claim amount: 0 on most rows, heavy-tailed (log-normal) on the others."""
    amounts = rng.lognormal(7, 1.5, size=rows) * scale
    amounts[rng.random(rows) < zero_share] = 0.0
    return amounts


@pytest.mark.parametrize("zero_share", [0.97, 0.99])
def test_a_feature_that_is_mostly_zero_stays_quiet_on_clean_windows_and_is_tested_in_two_parts(zero_share):
    """200,000 reference rows: more distinct non-zero amounts than support points. Its zero share by
    Fisher's exact test, its other values by the rank tests: clean windows of 100 to 1,000 rows are
    flagged at most at alpha's rate, a zero share falling to 95% or a tail grown 3x is found."""
    rng = np.random.default_rng(7)
    ref = reference(numeric_profile(claims(200_000, zero_share, rng), sample_index(200_000)))
    assert ref.distribution is not None and ref.distribution.atom == 0 and ref.categories is None
    assert len(ref.distribution.values) > 900  # the tail keeps its points

    def flagged(window: np.ndarray) -> list:
        return [s for s in decide(drift_of("claim", "feature", ref, window)) if s["drifted"]]

    for rows in (100, 200, 500, 1000):
        false_alarms = sum(bool(flagged(claims(rows, zero_share, rng))) for _ in range(200))
        assert false_alarms <= 2, rows  # at most 1%; alpha is 0.1%
    (fewer_zeros,) = flagged(claims(1000, 0.95 if zero_share > 0.97 else 0.92, rng))
    assert fewer_zeros["test"] == "atom" and fewer_zeros["effect"] >= 0.02
    assert flagged(claims(1000, zero_share - 0.05, rng, scale=3.0))


def test_an_old_profile_with_few_points_between_many_values_is_not_tested_value_by_value():
    """A manifest profiled when support points were spaced over every value: a claim amount 0 on 99%
    of rows kept 12 points, and each live non-zero amount fell in the "unseen value" cell."""
    rng = np.random.default_rng(3)
    values = np.sort(claims(200_000, 0.99, rng))
    points = np.unique(values[np.linspace(0, values.size - 1, 1000).round().astype(np.int64)])
    profile = numeric_profile(values, sample_index(values.size)).model_copy(update={
        "cdf_values": tuple(points), "cdf_below": tuple(np.searchsorted(values, points, "left").tolist()),
        "cdf_at": tuple(np.searchsorted(values, points, "right").tolist()),
    })  # fmt: skip
    ref = reference(profile)
    assert len(points) < 20 and ref.categories is None and ref.distribution.atom == 0
    windows = (drift_of("claim", "feature", ref, claims(200, 0.99, rng)) for _ in range(200))
    assert sum(any(s["drifted"] for s in decide(statistics)) for statistics in windows) <= 2


def test_categorical_nulls_are_missing_values_in_profile_and_window():
    frame = pd.Series(["a", "b", None, "a", "", "b"] * 50)
    profile = categorical_profile(frame, sample_index(frame.size))
    assert profile.categories == ("a", "b") and profile.other_count == 0
    assert profile.missing_rate == pytest.approx(2 / 6)
    window = np.array(["a", None, "b", ""] * 30, dtype=object)
    statistics = {s["test"]: s for s in drift_of("letter", "feature", reference(profile), window)}
    assert statistics["categories"]["window"] == 60 and statistics["categories"]["effect"] == pytest.approx(0)
    assert statistics["missing"]["effect"] == pytest.approx(0.5 - 2 / 6)


def test_held_out_data_from_the_same_source_does_not_drift(manifest):
    _, x_test, _, _ = breast_cancer()
    statistics = window_stats(manifest, x_test)
    assert len(statistics) == 30
    assert not [s["name"] for s in statistics.values() if s["drifted"]]


def test_a_shifted_feature_drifts_and_only_it(manifest):
    _, x_test, _, _ = breast_cancer()
    shifted = x_test.assign(mean_radius=x_test["mean_radius"] + 2 * x_test["mean_radius"].std())
    statistics = window_stats(manifest, shifted)
    assert [s["name"] for s in statistics.values() if s["drifted"]] == ["mean_radius"]
    radius = statistics["mean_radius"]
    assert radius["p_adjusted"] < 1e-6 and radius["psi"] > 0.5 and radius["window"] == len(x_test)
    # what the page draws: the reference's decile cells against the window's, the shift piled at the top
    histogram = radius["histogram"]
    assert len(histogram["bins"]) == len(histogram["reference"]) == len(histogram["window"]) == 10
    assert histogram["bins"][0].startswith("≤ ") and histogram["bins"][-1].startswith("> ")
    assert sum(histogram["window"]) == len(x_test) and histogram["window"][-1] > len(x_test) / 3


def test_categorical_drift_uses_fishers_test_on_reference_categories(tmp_path, columns_model):
    from registry.store import Registry

    manifest = Registry(tmp_path).push(columns_model.onnx, "columns", columns_model.reference)
    ref = reference(manifest.reference.features["color"], "string")
    (same,) = drift_of("color", "feature", ref, np.array(["red", "green", "blue"] * 100, dtype=object))
    (skewed,) = drift_of("color", "feature", ref, np.array(["red"] * 280 + ["purple"] * 20, dtype=object))
    assert same["test"] == "categories" and same["p_value"] > 0.05 and same["psi"] < 0.1
    assert skewed["p_value"] < 1e-6 and skewed["psi"] > 1
    assert skewed["histogram"]["bins"][-1] == "other" and skewed["histogram"]["window"][-1] == 20
    # an unseen category is the last cell, which the reference never filled
    (unseen,) = drift_of(
        "color", "feature", ref, np.array(["red", "green", "blue", "purple"] * 50, dtype=object)
    )
    assert (
        unseen["test"] == "categories"
        and unseen["effect"] == pytest.approx(0.25, abs=0.05)
        and unseen["p_value"] < 1e-6
    )


def test_benjamini_hochberg_adjusts_and_needs_an_effect_size(manifest):
    _, x_test, _, _ = breast_cancer()
    decided = list(window_stats(manifest, x_test).values())
    assert all(d["p_adjusted"] >= d["p_value"] for d in decided)
    tiny = decide([{**s, "p_value": 1e-9, "effect": 0.01} for s in decided[:1]])
    assert not tiny[0]["drifted"]  # significant but negligible: not called drift


def test_a_manifest_without_the_whole_reference_is_tested_on_its_sample(manifest):
    profile = manifest.reference.features["mean_area"]
    old = profile.model_copy(update={"cdf_values": (), "cdf_below": (), "cdf_at": (), "tie_factor": 1.0})
    ref = reference(old, "float32")
    assert ref.distribution is not None and ref.distribution.size == len(profile.sample)
    _, x_test, _, _ = breast_cancer()
    (statistic,) = drift_of("mean_area", "feature", ref, x_test["mean_area"].to_numpy())
    assert not decide([statistic])[0]["drifted"]


def test_an_empty_window_has_no_statistic(manifest):
    ref = reference(manifest.reference.features["mean_area"], "float32")
    (missing,) = drift_of("mean_area", "feature", ref, np.array([np.nan, np.nan]))
    assert missing["test"] == "missing"  # nothing to compare but that everything is missing
