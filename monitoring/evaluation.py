"""Evaluation before promotion: a candidate version against the champion on the same labelled rows.

Pure functions over per-row outcomes (``compare.correct``: right or wrong
for classifiers, the absolute error for regressors), overall and per segment
(each value of each segment column). Each model's metric comes with a 95%
confidence interval: Wilson's for an accuracy (a proportion, right even near
0 or 1 and on small segments), Student's t for a mean absolute error. The
difference is tested on the pairs, since both models answered the same rows:
McNemar's exact test on the rows only one got right, Wilcoxon's signed-rank
test on the absolute errors (``compare.quality_test``).

Why segments can veto: a candidate that is better on average can be worse
for one group of users, and the average hides it. A segment with at least
``min_rows`` rows whose difference is significantly against the candidate
refuses it. With many segments some would look worse by chance, so their
p-values are adjusted with Holm's method before they are compared with
``alpha``: the chance that a candidate no worse anywhere is refused stays
at most ``alpha``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import stats

from monitoring.compare import quality_test
from registry.evaluation import Estimate, Evaluation, SegmentComparison

CONFIDENCE = 0.95


def estimate(outcomes: np.ndarray) -> Estimate:
    """The metric over these rows (accuracy or MAE) with its 95% confidence interval."""
    n = int(outcomes.size)
    if outcomes.dtype == bool:
        interval = stats.binomtest(int(outcomes.sum()), n).proportion_ci(CONFIDENCE, method="wilson")
        return Estimate(value=float(outcomes.mean()), low=float(interval.low), high=float(interval.high))
    mean = float(outcomes.mean())
    if n < 2 or float(outcomes.std(ddof=1)) == 0.0:
        return Estimate(value=mean, low=mean, high=mean)
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * outcomes.std(ddof=1) / np.sqrt(n))
    return Estimate(value=mean, low=mean - half, high=mean + half)


def compare(
    segment: str | None, champion: np.ndarray, candidate: np.ndarray, alpha: float
) -> SegmentComparison:
    """Both models on the same rows: each metric with its interval, and the paired test."""
    tested = quality_test(champion, candidate, paired=True, alpha=alpha)
    assert tested["test"] is not None and tested["p_value"] is not None  # every segment has rows
    return SegmentComparison(
        segment=segment,
        rows=int(champion.size),
        metric=tested["metric"],
        champion=estimate(champion),
        candidate=estimate(candidate),
        test=tested["test"],
        p_value=tested["p_value"],
        candidate_better=bool(tested["better"] == "challenger") if tested["significant"] else None,
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given."""
    order = np.argsort(p_values)
    adjusted = np.empty(len(p_values))
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def evaluate(
    champion: np.ndarray,
    candidate: np.ndarray,
    segments: Mapping[str, np.ndarray],
    *,
    champion_version: int,
    candidate_version: int,
    data: str,
    alpha: float = 0.05,
    min_rows: int = 100,
) -> Evaluation:
    """``champion`` and ``candidate``: per-row outcomes on the same rows; ``segments``: a column of
    values per segment feature, one a row. The verdict refuses the candidate when it is significantly
    worse overall, or in any segment of at least ``min_rows`` rows after Holm's adjustment."""
    overall = compare(None, champion, candidate, alpha)
    by_segment: list[SegmentComparison] = []
    for column, values in segments.items():
        labels = np.asarray(values).astype(str)
        for value in sorted(set(labels.tolist())):
            rows = labels == value
            if rows.sum() >= min_rows:
                by_segment.append(compare(f"{column}={value}", champion[rows], candidate[rows], alpha))
    adjusted = holm([c.p_value for c in by_segment]) if by_segment else []
    by_segment = [
        c.model_copy(update={"p_adjusted": p, "candidate_better": c.candidate_better if p < alpha else None})
        for c, p in zip(by_segment, adjusted, strict=True)
    ]
    worse = [c for c in [overall, *by_segment] if c.candidate_better is False]
    reasons = [_worse(c) for c in worse]
    return Evaluation(
        champion_version=champion_version,
        candidate_version=candidate_version,
        data=data,
        alpha=alpha,
        min_segment_rows=min_rows,
        overall=overall,
        segments=by_segment,
        verdict="refuse" if worse else "pass",
        reasons=reasons,
    )


def _worse(comparison: SegmentComparison) -> str:
    where = f"segment {comparison.segment}" if comparison.segment else "overall"
    p = comparison.p_adjusted if comparison.p_adjusted is not None else comparison.p_value
    return (
        f"worse {where}: {comparison.metric} {comparison.candidate.value:.4g} against the champion's "
        f"{comparison.champion.value:.4g} over {comparison.rows} rows (p={p:.2g})"
    )
