"""The shape of a monitor report: what ``GET /monitoring/drift`` answers and the report store keeps,
and what the metrics, the alert rules, the routing controller and the triggers read.

A report is JSON on the wire and in the store, read back by other replicas
and by ``modelgate simulate``, so its parts are ``TypedDict``s: plain dicts
at run time, with every key and its type declared once here and checked by
mypy wherever a report is built or read.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

from registry.aliases import Arm

#: what a drift statistic is about, and the test that judged it (``monitoring.drift``)
Kind = Literal["feature", "prediction", "attribution"]
Test = Literal["mann-whitney", "ks", "categories", "atom", "missing", "mmd"]


class Histogram(TypedDict):
    """A quantity's reference and window counts side by side, in the cells its drift statistic's PSI
    and Jensen-Shannon distance are computed on: a numeric quantity's reference deciles, a categorical
    one's categories (then "other"), or present and missing (the missing-rate test)."""

    bins: list[str]
    reference: list[float]
    window: list[float]


class DriftStatistic(TypedDict):
    """The drift of one feature (or prediction output) over one window, as the report carries it.

    ``test`` is the test that found the smallest p-value, over ``rows`` (the
    window's most recent rows it looked at; ``window`` is all the window's
    values it had), ``effect`` the size of the change it measured and
    ``p_value`` that smallest p-value, adjusted for the tests and parts tried;
    ``p_adjusted`` and ``drifted`` are set by :func:`decide`, across a model's statistics.
    """

    name: str
    kind: Kind
    test: Test
    window: int
    rows: int
    effect: float
    #: NaN for a multivariate test (an embedding's MMD), null in JSON
    psi: float
    js_distance: float
    p_value: float
    p_adjusted: float
    drifted: bool
    #: what the page draws (``GET /ui``); absent from a multivariate test's
    histogram: NotRequired[Histogram]


class TrafficSummary(TypedDict):
    """Requests over a window (``monitoring.windows.traffic_summary``).

    A busy window holds a sample of its span's requests: ``requests`` counts those held, and the rates
    and percentiles estimate the span's.
    """

    requests: int
    #: plausibility violations a predicted row
    violation_rate: float
    #: the share of requests not answered 200
    error_rate: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class Disagreement(TypedDict):
    """Rows the champion labelled ``champion`` and the other arm ``other``."""

    champion: str
    other: str
    rows: int


class PairsSummary(TypedDict):
    """Champion and shadow answers to the same requests (``monitoring.compare.pairs_summary``)."""

    requests: int
    rows: int
    #: the share of rows whose labels agree (classifiers)
    agreement: float | None
    #: the mean absolute difference of their values (regressors)
    mean_abs_diff: float | None
    #: where they disagree (classifiers): the commonest pairs of labels, most rows first
    disagreements: NotRequired[list[Disagreement]]


class ArmSamples(TypedDict):
    champion: int
    challenger: int


class QualityTest(TypedDict):
    """Whether the challenger's live quality differs from the champion's
    (``monitoring.compare.quality_test``)."""

    metric: Literal["accuracy", "mae"]
    paired: bool
    samples: ArmSamples
    champion: float | None
    challenger: float | None
    test: str | None
    p_value: float | None
    significant: bool
    better: Literal["champion", "challenger"] | None


class ArmEvidence(TypedDict):
    champion: float
    challenger: float


class ArmContests(TypedDict):
    champion: int
    challenger: int


class QualityEvidence(TypedDict):
    """Which arm is better on live quality, by evidence accumulated since the two versions met and
    valid however often it is read (``monitoring.compare.QualityContest``, ``monitoring.sequential``).

    ``contests`` are the labelled rows one arm won (right where the other was wrong, or a smaller
    absolute error); ``e_value`` each arm's evidence that it wins more than half of them; an arm is
    ``better`` once its e-value reaches ``threshold`` (``2 / alpha``): the chance that an arm no better
    than the other is ever named, however long the two run, is at most ``alpha / 2``."""

    champion_version: int
    challenger_version: int
    #: a reward contest is won by the request of the two with the higher reward (A/B and canary)
    metric: Literal["accuracy", "absolute_error", "reward"]
    paired: bool
    since: float
    samples: ArmSamples
    contests: ArmContests
    e_value: ArmEvidence
    threshold: float
    alpha: float
    better: Literal["champion", "challenger"] | None
    #: what ``better`` promises, in words
    guarantee: str
    #: the feedback consumed when it was reported (``monitoring.records.Position``): a restarted
    #: monitor resumes after it
    feedback_position: tuple[int, int]


class Comparison(TypedDict):
    """Champion against challenger (or shadow): traffic per arm, answers side by side, quality over the
    window (a description: its test is one look), and the sequential evidence the decisions use."""

    arms: dict[Arm, TrafficSummary]
    shadow: PairsSummary | None
    quality: QualityTest | None
    evidence: QualityEvidence | None
    #: the same on the business reward ``POST /feedback`` carries (A/B and canary)
    reward: QualityEvidence | None
    #: each arm's mean importance per feature from explanations in the loop, and where the champion
    #: and the other arm differ most (``Monitor.arm_attributions``)
    attributions: NotRequired[dict[str, Any]]


class Measured(TypedDict):
    """Live quality over labelled rows: a classifier's accuracy, log-loss and ROC AUC (None until
    every class has been seen), or a regressor's MAE and RMSE (``monitoring.quality``)."""

    samples: int
    accuracy: NotRequired[float]
    log_loss: NotRequired[float]
    roc_auc: NotRequired[float | None]
    mae: NotRequired[float]
    rmse: NotRequired[float]


class SegmentQuality(Measured):
    """Live quality of the rows whose ``feature`` falls in ``segment``."""

    feature: str
    segment: str


class Quality(Measured):
    segments: list[SegmentQuality]


class VersionQuality(Quality):
    """One version's live quality, overall and per segment."""

    version: int


QualityMetric = Literal["accuracy", "log_loss", "roc_auc", "mae", "rmse"]
QUALITY_METRICS: tuple[QualityMetric, ...] = ("accuracy", "log_loss", "roc_auc", "mae", "rmse")


def metric_value(measured: Measured, metric: str) -> float | None:
    """One quality metric by name (a rule's or a gauge's), None where it is not measured."""
    value = measured.get(metric)
    return float(value) if isinstance(value, int | float) else None


class ExpectedAccuracy(TypedDict):
    """The accuracy a window's predictions should show, and its 95% interval
    (``monitoring.estimate.expected_accuracy``)."""

    rows: int
    accuracy: float
    low: float
    high: float
    #: whether the probabilities were calibrated on labelled reference rows first
    calibrated: bool


class EstimatedQuality(ExpectedAccuracy):
    version: int
    method: Literal["cbpe"]


class PlausibilityEntry(TypedDict):
    """Rows of the window breaking one plausibility rule (on one feature, for input rules)."""

    rule: str
    feature: str | None
    violations: int
    rate: float
    #: input_missing only: the reference's missing share allowed, and whether it is exceeded
    limit: NotRequired[float]
    breached: NotRequired[bool]


class WindowInfo(TypedDict):
    #: rows the window holds: all of its span's, or a sample of them (``monitoring.windows.Window``)
    rows: int
    #: rows its span had, sampled or not
    seen_rows: int
    requests: int
    max_rows: int
    max_age_seconds: float
    #: epoch seconds of the oldest and newest request in the window
    oldest: float | None
    newest: float | None


class Thresholds(TypedDict):
    alpha: float
    #: the level a drifted quantity alerts at (``monitoring.windows.alert_alpha``)
    alert_alpha: NotRequired[float]
    min_effect: float
    min_rows: int
    correction: str


class CanaryCheck(TypedDict):
    """One of the canary's step-down tests: its e-value against the hypothesis that the canary is
    healthy on it, and the counts it was computed from."""

    e_value: float
    #: the null hypothesis's limit on the share of contests ``against`` the canary
    limit: float
    #: contests the canary lost (failed requests, violating rows, matched requests it was slower in)
    against: int
    #: and those it won
    in_favour: int


class CanaryTally(TypedDict):
    """The counts a canary's checks are computed from, as saved for a restarted monitor to go on."""

    requests: ArmSamples
    failed: ArmSamples
    rows: int
    violating_rows: int
    failed_alone: ArmSamples
    #: matched pairs per bin of log2(canary latency / champion latency), the empty bins left out
    latency: dict[str, int]


class CanaryEvidence(TypedDict):
    """What the canary's step-down decides on, accumulated since the routing was last set by someone
    other than the canary itself (``monitoring.compare.CanaryContest``)."""

    challenger_version: int | None
    since: float
    checks: dict[str, CanaryCheck]
    threshold: float
    tally: CanaryTally
    #: the last log record counted, ``[partition, xid, seq]`` a partition of the log
    #: (``monitoring.records.Cursor``): a restarted monitor resumes after them
    position: list[list[int]]


class CanaryState(TypedDict):
    """A canary's weight and why it last changed (``monitoring.controller``)."""

    weight: float
    max_weight: float
    stepped_down: bool
    reason: str
    since: float
    evidence: NotRequired[CanaryEvidence | None]


class VersionReport(TypedDict):
    """Drift and plausibility of one version's window (``monitoring.assessment.report``)."""

    model: str
    version: int
    computed_at: float
    status: Literal["ok", "insufficient_data"]
    reason: str | None
    window: WindowInfo
    thresholds: Thresholds
    estimated_quality: EstimatedQuality | None
    drifted_features: int
    #: drifted ones that also pass ``thresholds.alert_alpha``: what the drift alert rules count
    alerting_features: NotRequired[int]
    features: list[DriftStatistic]
    plausibility: list[PlausibilityEntry]
    #: input features the log policy hashes or drops, by what it does: not tested for drift
    not_logged: NotRequired[dict[str, str]]


class MonitorShard(TypedDict):
    shard: int
    shards: int


class AttributionReport(TypedDict):
    """Explanations in the loop of the reported version (``monitoring.assessment.attributions``):
    each feature's mean importance (a row's mean |attribution| over the outputs) in the window and on
    the reference, and the importances' drift against the reference's (attribution drift: a model
    leaning on other features than it did, though its inputs may look alike)."""

    method: str | None
    rows: int
    mean_importance: dict[str, float]
    reference_mean_importance: dict[str, float]
    features: list[DriftStatistic]
    drifted_features: int
    alerting_features: int


class Report(VersionReport):
    """A model's report: its latest version's window, the model's traffic, the champion/challenger
    comparison, live quality per version, and the canary's state while one runs."""

    traffic: TrafficSummary
    comparison: Comparison | None
    quality: list[VersionQuality]
    #: which monitor computed it: its shard of the models, of how many (``monitoring.shards``)
    monitor: MonitorShard
    canary: NotRequired[CanaryState | None]
    #: while requests are explained in the loop (MODELGATE_EXPLAIN_RATE)
    attributions: NotRequired[AttributionReport | None]


class VersionPoint(TypedDict):
    """One version's live quality in a history point: its primary metric overall and per segment."""

    version: int
    samples: int
    metric: Literal["accuracy", "mae"]
    value: float | None
    segments: dict[str, float | None]


class EvidencePoint(TypedDict):
    champion: float
    challenger: float
    threshold: float


class HistoryPoint(TypedDict):
    """A report in brief (``monitoring.history.point_of``): one a minute is kept, for the pages'
    strips and charts over time (``ReportStore.history``)."""

    ts: float
    version: int
    status: str
    drifted: int
    alerting: int | None
    requests: int
    error_rate: float
    #: the label-free accuracy estimate and its interval: [accuracy, low, high]
    estimated: list[float] | None
    quality: list[VersionPoint]
    evidence: EvidencePoint | None
