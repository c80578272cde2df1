"""What an offline evaluation found, as the audit trail keeps it (monitoring/evaluation.py computes it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Estimate(BaseModel):
    """A metric over some rows, with its 95% confidence interval."""

    model_config = ConfigDict(frozen=True)

    value: float
    low: float
    high: float


class SegmentComparison(BaseModel):
    """Champion and candidate on the same rows: overall (``segment`` None) or one segment's."""

    model_config = ConfigDict(frozen=True)

    #: ``column=value``, or None for all the rows
    segment: str | None
    rows: int
    metric: Literal["accuracy", "mae"]
    champion: Estimate
    candidate: Estimate
    test: str
    p_value: float
    #: a segment's p-value after Holm's adjustment across segments
    p_adjusted: float | None = None
    #: True or False when the difference is significant; None when it is not
    candidate_better: bool | None = None


class Evaluation(BaseModel):
    """A candidate version against the champion on labelled data, and the verdict."""

    model_config = ConfigDict(frozen=True)

    champion_version: int
    candidate_version: int
    #: the data evaluated on: its file name and SHA-256
    data: str
    alpha: float
    min_segment_rows: int
    overall: SegmentComparison
    segments: list[SegmentComparison]
    #: refuse: significantly worse overall or in a segment of at least min_segment_rows rows
    verdict: Literal["pass", "refuse"]
    #: why it was refused, one line a comparison it lost
    reasons: list[str] = []
