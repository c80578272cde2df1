"""Evaluation before promotion: intervals, paired tests, and a segment's veto."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.evaluation import estimate, evaluate, holm


def outcomes(rights: int, rows: int, seed: int) -> np.ndarray:
    """``rows`` booleans, ``rights`` of them True, in a random order."""
    values = np.zeros(rows, dtype=bool)
    values[:rights] = True
    return np.random.default_rng(seed).permutation(values)


def test_better_overall_but_worse_for_one_segment_is_refused_and_the_segment_named():
    # group a: 800 rows, champion 85% right, candidate 95%; group b: 200 rows, 90% against 70%
    champion = np.concatenate([outcomes(680, 800, 1), outcomes(180, 200, 2)])
    candidate = np.concatenate([outcomes(760, 800, 3), outcomes(140, 200, 4)])
    group = np.array(["a"] * 800 + ["b"] * 200)
    found = evaluate(champion, candidate, {"group": group}, champion_version=1, candidate_version=2, data="x")
    assert found.overall.candidate_better is True  # 90.0% against 86.0%
    assert found.overall.candidate.value == pytest.approx(
        0.90
    ) and found.overall.champion.value == pytest.approx(0.86)
    a, b = found.segments
    assert (a.segment, a.candidate_better) == ("group=a", True)
    assert (b.segment, b.rows, b.candidate_better) == ("group=b", 200, False)
    assert found.verdict == "refuse" and len(found.reasons) == 1
    assert found.reasons[0].startswith(
        "worse segment group=b: accuracy 0.7 against the champion's 0.9 over 200"
    )


def test_a_segment_too_small_to_judge_does_not_veto():
    champion = np.concatenate([outcomes(680, 800, 1), outcomes(45, 50, 2)])
    candidate = np.concatenate([outcomes(760, 800, 3), outcomes(20, 50, 4)])  # far worse, but 50 rows
    group = np.array(["a"] * 800 + ["b"] * 50)
    found = evaluate(champion, candidate, {"group": group}, champion_version=1, candidate_version=2, data="x")
    assert [s.segment for s in found.segments] == ["group=a"] and found.verdict == "pass"
    versions = {"champion_version": 1, "candidate_version": 2, "data": "x"}
    judged = evaluate(champion, candidate, {"group": group}, **versions, min_rows=50)
    assert judged.verdict == "refuse" and "segment group=b" in judged.reasons[0]


def test_no_significant_difference_passes_and_identical_models_have_p_one():
    same = outcomes(900, 1000, 1)
    found = evaluate(same, same.copy(), {}, champion_version=1, candidate_version=2, data="x")
    assert found.verdict == "pass" and found.overall.p_value == 1.0 and found.overall.candidate_better is None


def test_accuracy_intervals_are_wilson_intervals_inside_zero_and_one():
    interval = estimate(outcomes(10, 10, 1))
    assert interval.value == 1.0 and interval.high == 1.0 and 0.6 < interval.low < 0.75  # Wilson: 0.722
    middle = estimate(outcomes(500, 1000, 1))
    assert middle.low == pytest.approx(0.469, abs=0.001) and middle.high == pytest.approx(0.531, abs=0.001)


def test_regressors_are_judged_on_mean_absolute_error():
    rng = np.random.default_rng(7)
    champion = np.abs(rng.normal(0, 1.0, 400))
    candidate = champion * 1.5  # every error half again as large
    found = evaluate(champion, candidate, {}, champion_version=1, candidate_version=2, data="x")
    assert found.overall.metric == "mae" and found.overall.test == "wilcoxon"
    assert found.overall.candidate.low < found.overall.candidate.value < found.overall.candidate.high
    assert found.overall.candidate_better is False and found.verdict == "refuse"
    assert found.reasons[0].startswith("worse overall: mae ")


def test_holm_adjusts_the_smallest_p_value_most():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]
