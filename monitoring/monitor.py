"""The monitor: rolling windows over the prediction log, and a drift and plausibility report per model.

One monitor per deployment, in a process of its own (``service.monitor_process``)
that holds the log's monitor lease. It tails the log by ``seq``, so windows
cover every worker's traffic, and after a restart it rebuilds them from the
log (from the first record inside the time window). Reports go back into the
log store, where every process reads them for ``GET /monitoring/drift``.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

import numpy as np
import orjson
import pandas as pd
import structlog

from monitoring.compare import (
    CanaryContest,
    Metric,
    Outcome,
    Pair,
    PairedOutcome,
    Predicted,
    QualityContest,
    correct,
    pair,
    pairs_summary,
    quality_test,
)
from monitoring.drift import (
    ALPHA,
    MIN_EFFECT,
    MIN_ROWS,
    DriftStatistic,
    Reference,
    decide,
    drift_of,
    reference,
)
from monitoring.estimate import expected_accuracy
from monitoring.export import prediction_table
from monitoring.mmd import embedding_drift
from monitoring.plausibility import rule_parts
from monitoring.quality import classification_quality, regression_quality, segment_of
from monitoring.records import Feedback, LoggedRequest
from monitoring.report import (
    CanaryEvidence,
    Comparison,
    DriftEntry,
    EstimatedQuality,
    PlausibilityEntry,
    Quality,
    QualityEvidence,
    Report,
    SegmentQuality,
    TrafficSummary,
    VersionReport,
)
from monitoring.sequential import Matcher
from monitoring.store import FeedbackLog, ReportStore, RequestLog
from registry.manifest import EmbeddingProfile, HourDistribution, Manifest

log = structlog.get_logger("modelgate.monitor")

#: rows of one arm's predictions kept waiting for the other arm's record of the same request (the
#: champion's always: a shadow record can be logged before or after its champion's, and most
#: champion requests are never mirrored when the shadow sheds load); rows, not requests, so
#: 256-row batches are held to the same memory as single rows
UNPAIRED_MAX_ROWS = 20_000
#: records decoded a read at most, in rows: a read of 5,000 records of 256 rows each held over a
#: GB of decoded inputs at once
ROWS_A_READ = 20_000
#: version pairs whose quality contest a model keeps (the newest by its last contest)
CONTESTS_KEPT = 4


@dataclass(frozen=True)
class WindowSettings:
    """How much traffic a window holds and when drift is tested."""

    max_rows: int = 1000
    max_age_seconds: float = 3600.0
    #: fewer rows than this: no drift test (too little data to say anything)
    min_rows: int = MIN_ROWS
    #: the chance a clean window is called drifted, at most (see monitoring.drift) ...
    alpha: float = ALPHA
    #: ... and the stricter level a drifted quantity alerts at (see ``alert_alpha``)
    alert_alpha: float = ALPHA
    #: the smallest change called drift
    min_effect: float = MIN_EFFECT
    #: significance of champion against challenger quality
    compare_alpha: float = 0.05
    #: input features whose values live quality is also measured per (see monitoring.quality)
    quality_segments: tuple[str, ...] = ()


def alert_alpha(alpha: float, pass_seconds: float, false_alert_days: float) -> float:
    """The level each pass's drift test alerts at, so that on clean traffic alerts are expected at most
    once in ``false_alert_days``, whatever the traffic.

    Every pass tests the window again; by the union bound the expected number of passes with a false
    alarm over a period is at most the sum of their levels, whatever the dependence between the
    overlapping windows. Spending ``pass_seconds / (false_alert_days * 86400)`` a pass keeps that sum
    at one over the period (7.7e-7 at the 2 s default and 30 days). Busy models lose nothing (at
    1,000 requests/s a shift of 0.5 sd gives p-values far below it); ``alpha`` stays the level a window
    is *called* drifted at, in the report.
    """
    return min(alpha, pass_seconds / (false_alert_days * 86_400.0))


class Timed(Protocol):
    @property
    def ts(self) -> float: ...

    @property
    def rows(self) -> int: ...


T = TypeVar("T", bound=Timed)


@dataclass(frozen=True)
class Labelled:
    """An answered request with the ground truth given for it (at ``ts``, when the truth came)."""

    ts: float
    rows: int
    request: LoggedRequest
    truth: list[Any]


class Window(Generic[T]):
    """Recent entries of one model version, at most ``max_rows`` rows and ``max_age`` old."""

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self.requests: deque[T] = deque()
        self.rows = 0

    def add(self, entry: T) -> None:
        """Add ``entry``, dropping the oldest past ``max_rows`` at once: a pass that catches up on a
        backlog (the log grows faster than one pass reads it) held every record it read until the
        report trimmed them, 3.4 GB of 256-row records in one minute of binary requests."""
        self.requests.append(entry)
        self.rows += entry.rows
        while self.rows > self.settings.max_rows and self.requests:
            self.rows -= self.requests.popleft().rows

    def trim(self, now: float) -> None:
        oldest = now - self.settings.max_age_seconds
        while self.requests and (self.rows > self.settings.max_rows or self.requests[0].ts < oldest):
            self.rows -= self.requests.popleft().rows

    @property
    def last_seen(self) -> float:
        return self.requests[-1].ts if self.requests else 0.0


def column(requests: Iterable[LoggedRequest], name: str, numeric: bool) -> np.ndarray:
    """One input feature over the requests, in one conversion (a null is NaN for a number)."""
    values = list(itertools.chain.from_iterable(r.inputs[name] for r in requests if r.inputs))
    return np.array(values, dtype=np.float64 if numeric else object)


def outputs(requests: Iterable[LoggedRequest], key: str) -> np.ndarray:
    parts = [np.asarray(r.outputs[key]) for r in requests if r.outputs and key in r.outputs]
    return np.concatenate(parts) if parts else np.empty(0)


def flag_totals(requests: Iterable[LoggedRequest]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for request in requests:
        for key, count in request.flags.items():
            totals[key] = totals.get(key, 0) + count
    return totals


@dataclass(frozen=True, slots=True)
class Traffic:
    """A request as the traffic window keeps it: a window of requests, not rows."""

    ts: float
    status: int
    latency_ms: float
    rows: int = 1
    #: rows it predicted, and the plausibility violations found in them
    predicted: int = 0
    violations: int = 0


def traffic_summary(window: Window[Traffic], now: float, since: float = 0.0) -> TrafficSummary:
    """Requests (at or after ``since``), the share not answered 200, the median and 99th percentile
    latency, and plausibility violations per predicted row."""
    window.trim(now)
    entries = [r for r in window.requests if r.ts >= since] if since else window.requests
    statuses = np.array([r.status for r in entries])
    latencies = np.array([r.latency_ms for r in entries])
    predicted = sum(r.predicted for r in entries)
    return {
        "requests": int(statuses.size),
        "violation_rate": sum(r.violations for r in entries) / predicted if predicted else 0.0,
        "error_rate": float(np.mean(statuses != 200)) if statuses.size else 0.0,
        "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
        "latency_p99_ms": float(np.percentile(latencies, 99)) if latencies.size else None,
    }


def quality(manifest: Manifest, window: Window[Labelled], segments: tuple[str, ...] = ()) -> Quality:
    """Live quality of one version over the labelled window: overall, and per segment of each of
    ``segments`` (input features) the version has."""
    requests = [entry.request for entry in window.requests]
    truth = np.concatenate([np.asarray(entry.truth, dtype=object) for entry in window.requests])
    classification = manifest.output.kind == "classification"
    if classification:
        labels, probabilities = outputs(requests, "label"), outputs(requests, "probabilities")
        classes = manifest.output.classes
        measured = classification_quality(truth, labels, probabilities, classes)
    else:
        values = outputs(requests, "value")
        measured = regression_quality(truth, values)
    by_segment: list[SegmentQuality] = []
    for feature in segments:
        if feature not in manifest.reference.features:
            continue
        names = segment_of(manifest.reference.features[feature], column(requests, feature, numeric=False))
        for name in dict.fromkeys(names):  # in order of first appearance
            rows = names == name
            part = (
                classification_quality(truth[rows], labels[rows], probabilities[rows], classes)
                if classification
                else regression_quality(truth[rows], values[rows])
            )
            by_segment.append({"feature": feature, "segment": str(name), **part})
    return {**measured, "segments": sorted(by_segment, key=lambda s: (s["feature"], s["segment"]))}


def estimated_quality(manifest: Manifest, window: Window[LoggedRequest]) -> EstimatedQuality | None:
    """A classifier's accuracy on the window as its calibrated probabilities predict it, before any
    ground truth (see ``monitoring.estimate``); None for a regressor or an empty window."""
    if manifest.output.kind != "classification":
        return None
    probabilities = outputs(window.requests, "probabilities")
    if not probabilities.size:
        return None
    labels = outputs(window.requests, "label").astype(str)
    measured = expected_accuracy(labels, probabilities, manifest.output.classes, manifest.calibration)
    return {"version": manifest.version, "method": "cbpe", **measured}


def references(manifest: Manifest) -> dict[str, Reference]:
    """What each input feature (at the dtype its model receives) and prediction output is tested
    against, with its hours of the day where the reference had a time column; built once per version."""
    by_hour = manifest.reference.by_hour

    def hours(name: str) -> dict[str, HourDistribution]:
        return {hour: slices[name] for hour, slices in by_hour.items() if name in slices}

    found = {
        spec.name: reference(manifest.reference.features[spec.name], spec.dtype, hours(spec.name))
        for spec in manifest.inputs.features
    }
    return found | {
        name: reference(profile, by_hour=hours(name))
        for name, profile in manifest.reference.predictions.items()
        if not isinstance(profile, EmbeddingProfile)  # tested as a whole, see monitoring.mmd
    }


def row_times(requests: list[LoggedRequest]) -> np.ndarray:
    """When each row of the requests was sent."""
    return np.repeat(np.array([r.ts for r in requests], dtype=np.float64), [r.rows for r in requests])


def drift_statistics(
    manifest: Manifest,
    window: Window[LoggedRequest],
    settings: WindowSettings,
    refs: dict[str, Reference],
) -> list[DriftStatistic]:
    """Every input feature and prediction output of the window against the version's reference
    (``refs``: its :func:`references`)."""
    statistics: list[DriftStatistic] = []
    seasonal = bool(manifest.reference.by_hour)  # each row's time, to compare it with the same hours
    with_inputs = [r for r in window.requests if r.inputs]
    times = row_times(with_inputs) if seasonal else None
    for spec in manifest.inputs.features:
        values = column(window.requests, spec.name, numeric=spec.dtype != "string")
        statistics += drift_of(spec.name, "feature", refs[spec.name], values, settings.min_rows, times)
    if manifest.output.kind == "classification":
        labels = outputs(window.requests, "label").astype(str).astype(object)
        statistics += drift_of("label", "prediction", refs["label"], labels, settings.min_rows)
        probabilities = outputs(window.requests, "probabilities")
        if probabilities.size:
            answered = [r for r in window.requests if r.outputs and "probabilities" in r.outputs]
            times = row_times(answered) if seasonal else None
            for index, cls in enumerate(manifest.output.classes):
                name = f"probability:{cls}"
                values = probabilities[:, index]
                statistics += drift_of(name, "prediction", refs[name], values, settings.min_rows, times)
    elif manifest.output.kind == "embedding":
        vectors = outputs(window.requests, "embedding").astype(np.float64)
        profile = manifest.reference.predictions["embedding"]
        assert isinstance(profile, EmbeddingProfile)
        if vectors.size:
            found = embedding_drift(
                "embedding", "prediction", np.array(profile.sample), vectors, settings.min_rows
            )
            statistics += [found] if found is not None else []
            norms = np.linalg.norm(vectors, axis=1)
            statistics += drift_of(
                "embedding_norm", "prediction", refs["embedding_norm"], norms, settings.min_rows
            )
    else:
        values = outputs(window.requests, "value")
        answered = [r for r in window.requests if r.outputs and "value" in r.outputs]
        times = row_times(answered) if seasonal else None
        statistics += drift_of("value", "prediction", refs["value"], values, settings.min_rows, times)
    return decide(statistics, settings.alpha, settings.min_effect)


def too_few(window: Window[LoggedRequest], settings: WindowSettings) -> str:
    """Why a window is not tested, and what to do about it."""
    return (
        f"{window.rows} rows in the window (the last {settings.max_age_seconds:g} s, at most "
        f"{settings.max_rows} rows); drift is tested from {settings.min_rows} rows. With little traffic, "
        "a longer MODELGATE_WINDOW_SECONDS gathers enough rows"
    )


def report(
    manifest: Manifest,
    window: Window[LoggedRequest],
    settings: WindowSettings,
    now: float,
    refs: dict[str, Reference],
) -> VersionReport:
    """The JSON-ready report on one model version's window."""
    enough = window.rows >= settings.min_rows
    statistics = drift_statistics(manifest, window, settings, refs) if enough else []
    plausibility: list[PlausibilityEntry] = []
    for key, violations in sorted(flag_totals(window.requests).items()):
        rule, feature = rule_parts(key)
        entry: PlausibilityEntry = {
            "rule": rule,
            "feature": feature or None,
            "violations": violations,
            "rate": violations / max(window.rows, 1),
        }
        if rule == "input_missing":
            limit = manifest.plausibility.inputs[feature].max_missing_rate
            entry.update({"limit": limit, "breached": entry["rate"] > limit})
        plausibility.append(entry)
    return {
        "model": manifest.name,
        "version": manifest.version,
        "computed_at": now,
        "status": "ok" if enough else "insufficient_data",
        "reason": None if enough else too_few(window, settings),
        "window": {
            "rows": window.rows,
            "requests": len(window.requests),
            "max_rows": settings.max_rows,
            "max_age_seconds": settings.max_age_seconds,
            "oldest": window.requests[0].ts if window.requests else None,
            "newest": window.last_seen or None,
        },
        "alerting_features": sum(s.drifted and s.p_adjusted < settings.alert_alpha for s in statistics),
        "thresholds": {
            "alpha": settings.alpha,
            "alert_alpha": settings.alert_alpha,
            "min_effect": settings.min_effect,
            "min_rows": settings.min_rows,
            "correction": "benjamini-hochberg",
        },
        "estimated_quality": estimated_quality(manifest, window),
        "drifted_features": sum(s.drifted for s in statistics),
        "features": [cast(DriftEntry, asdict(s)) for s in statistics],  # DriftEntry mirrors its fields
        "plausibility": plausibility,
    }


Contests = dict[str, dict[tuple[int, int], QualityContest]]


def _contest(contests: Contests, model: str, champion: int, challenger: int, paired: bool, ts: float,
             metric: Metric = "accuracy") -> QualityContest:  # fmt: skip
    """The contest of two versions, from its first labelled row (or as a saved report left it); the
    oldest of a model's past the last ``CONTESTS_KEPT`` forgotten."""
    kept = contests.setdefault(model, {})
    contest = kept.get((champion, challenger))
    if contest is None:
        contest = kept[(champion, challenger)] = QualityContest(champion, challenger, paired, ts, metric)
        while len(kept) > CONTESTS_KEPT:
            del kept[min(kept, key=lambda key: kept[key].last)]
    return contest


class Monitor:
    """Windows per (model, version) fed from the log; a report per model on its latest version."""

    def __init__(
        self,
        requests: RequestLog,
        feedback: FeedbackLog,
        reports: ReportStore,
        manifests: Callable[[str, int], Manifest],
        settings: WindowSettings,
    ) -> None:
        self.requests = requests
        self.feedback = feedback
        self.saved_reports = reports
        self.manifests = manifests
        self.settings = settings
        self.windows: dict[tuple[str, int], Window[LoggedRequest]] = {}
        #: every request of each model, answered or not: error rate and latency
        self.traffic: dict[str, Window[Traffic]] = {}
        self.labelled: dict[tuple[str, int], Window[Labelled]] = {}
        #: the version the champion arm answered with last, per model: the one reported on
        self.champions: dict[str, int] = {}
        #: champion against challenger, per model: each arm's traffic (answered or mirrored) ...
        self.arm_traffic: dict[tuple[str, str], Window[Traffic]] = {}
        #: ... shadow mode: one arm's prediction waiting for the other's, by request id ...
        self.unpaired: dict[str, OrderedDict[str, Predicted]] = {
            "champion": OrderedDict(),
            "shadow": OrderedDict(),
        }
        self.unpaired_rows = {"champion": 0, "shadow": 0}
        self.pairs: dict[str, Window[Pair]] = {}
        #: ... and with ground truth: outcomes per (model, answering arm), and paired ones (shadow)
        self.outcomes: dict[tuple[str, str], Window[Outcome]] = {}
        self.paired_outcomes: dict[str, Window[PairedOutcome]] = {}
        #: ... and the evidence the decisions take, never forgotten as windows forget (see
        #: monitoring.sequential): quality contests per model and (champion, challenger) versions, with
        #: A/B's labelled rows (version, outcome) waiting for the other arm's ...
        self.contests: Contests = {}
        self.matched: dict[str, Matcher[tuple[int, Any]]] = {}
        #: ... the same on business rewards (A/B and canary: only the answering arm has one) ...
        self.rewards: Contests = {}
        self.rewarded: dict[str, Matcher[tuple[int, Any]]] = {}
        #: ... the canary's checks per model ...
        self.canaries: dict[str, CanaryContest] = {}
        #: ... and per model, the record and feedback ``seq`` a saved report's evidence had counted to
        self.resumed: dict[str, tuple[int, int]] = {}
        #: what each version's quantities are tested against, built once per version
        self.references: dict[tuple[str, int], dict[str, Reference]] = {}
        self.seq: int | None = None
        self.feedback_seq: int | None = None
        #: records a read, adapted to their size (see ROWS_A_READ); small until the first read
        self.read_limit = 16
        #: called with each model's report after every pass (the metrics' gauges)
        self.on_report: Callable[[Report], None] | None = None
        #: called with every pass's reports before they are saved, to act on them and add to them
        #: (the canary controller)
        self.controller: Callable[[dict[str, Report], float], None] | None = None
        #: called with every pass's reports (the alert stage)
        self.on_reports: Callable[[dict[str, Report], float], object] | None = None

    def ingest(self, records: list[LoggedRequest]) -> None:
        """Every answering request of a served model into its traffic window; its answered ones into
        their version's window (refusals carry no inputs to test). Shadow predictions answered no one."""
        for record in records:
            if record.model is None:
                continue
            if record.arm != "pinned":
                predicted = record.rows if record.status == 200 else 0
                self._window(self.arm_traffic, (record.model, record.arm)).add(
                    Traffic(
                        record.ts, record.status, record.latency_ms, 1, predicted, sum(record.flags.values())
                    )
                )
            if record.arm in ("champion", "challenger"):
                self._canary(record)
            if record.arm in self.unpaired and record.status == 200:
                self._pair(record)
            if record.arm == "shadow":
                continue
            if record.arm == "champion" and record.version is not None:
                self.champions[record.model] = record.version
            self._window(self.traffic, record.model).add(Traffic(record.ts, record.status, record.latency_ms))
            if record.status != 200 or record.version is None:
                continue
            self._window(self.windows, (record.model, record.version)).add(record)

    def _resume(self, model: str) -> tuple[int, int]:
        """Once a process, a model's evidence as its last saved report left it; the record and feedback
        ``seq`` it had counted to (a restarted monitor reads the last hour of the log again)."""
        resumed = self.resumed.get(model)
        if resumed is not None:
            return resumed
        saved = self.saved_reports.latest(model)
        body = orjson.loads(saved[1]) if saved is not None else {}
        quality = (body.get("comparison") or {}).get("evidence")
        reward = (body.get("comparison") or {}).get("reward")
        canary: CanaryEvidence | None = (body.get("canary") or {}).get("evidence")
        for saved_contest, contests in ((quality, self.contests), (reward, self.rewards)):
            if saved_contest is not None:
                contest = QualityContest.resumed(saved_contest)
                contests[model] = {(contest.champion_version, contest.challenger_version): contest}
        if canary is not None:
            self.canaries[model] = CanaryContest.resumed(canary)
        resumed = self.resumed[model] = (
            canary["seq"] if canary else -1,
            max(evidence["feedback_seq"] if evidence else -1 for evidence in (quality, reward)),
        )
        return resumed

    def _canary(self, record: LoggedRequest) -> None:
        """A champion or challenger record into its model's canary checks, which start with the first
        challenger record (of each challenger version)."""
        assert record.model is not None
        if record.seq <= self._resume(record.model)[0]:
            return
        contest = self.canaries.get(record.model)
        if record.arm == "challenger" and (contest is None or contest.challenger_version != record.version):
            contest = self.canaries[record.model] = CanaryContest(record.version, record.ts)
        if contest is not None and record.ts >= contest.since:
            contest.add(record)

    def canary(self, model: str, since: float) -> CanaryContest | None:
        """The model's canary checks counted from ``since`` (when its routing was last set by anyone
        but the canary): a later ``since`` than they started from starts them anew."""
        self._resume(model)
        contest = self.canaries.get(model)
        if contest is not None and contest.since < since:
            contest = self.canaries[model] = CanaryContest(contest.challenger_version, since, contest.seq)
        return contest

    def _references(self, model: str, version: int) -> dict[str, Reference]:
        refs = self.references.get((model, version))
        if refs is None:
            refs = self.references[(model, version)] = references(self.manifests(model, version))
        return refs

    def _window(self, windows: dict[Any, Window[Any]], key: Any) -> Window[Any]:
        window = windows.get(key)
        if window is None:
            window = windows[key] = Window(self.settings)
        return window

    def _pair(self, record: LoggedRequest) -> None:
        """Shadow mode: a champion prediction meets the challenger's of the same request, in
        whichever order they were logged."""
        model = record.model
        assert model is not None
        predicted = Predicted.of(record)
        if predicted is None:
            return
        other_arm = "champion" if record.arm == "shadow" else "shadow"
        other = self.unpaired[other_arm].pop(record.request_id, None)
        if other is None:
            waiting = self.unpaired[record.arm]
            waiting[record.request_id] = predicted
            self.unpaired_rows[record.arm] += predicted.rows
            while self.unpaired_rows[record.arm] > UNPAIRED_MAX_ROWS and len(waiting) > 1:
                self.unpaired_rows[record.arm] -= waiting.popitem(last=False)[1].rows
            return
        self.unpaired_rows[other_arm] -= other.rows
        champion, shadow = (other, predicted) if record.arm == "shadow" else (predicted, other)
        paired = pair(champion, shadow)
        if paired is not None:
            self._window(self.pairs, model).add(paired)

    def label(self, feedback: list[tuple[int, Feedback]]) -> None:
        """Join ground truth (with its feedback ``seq``) to the requests it names, into each version's
        labelled window."""
        ids = [item.request_id for _, item in feedback]
        requests = {r.request_id: r for r in self.requests.answered(ids)}
        shadows = {r.request_id: r for r in self.requests.shadowed(ids)}
        for seq, item in feedback:
            request = requests.get(item.request_id)
            if request is None or request.model is None or request.version is None or not request.outputs:
                continue
            counted = seq > self._resume(request.model)[1]  # else a saved contest has it already
            if item.reward is not None and counted and request.arm in ("champion", "challenger"):
                self._match(self.rewards, self.rewarded, request, np.array([item.reward]), item.ts)
            if item.ground_truth is None:
                continue
            self._compare_outcomes(request, shadows.get(item.request_id), item, counted)
            labelled = Labelled(ts=item.ts, rows=request.rows, request=request, truth=item.ground_truth)
            self._window(self.labelled, (request.model, request.version)).add(labelled)

    def _compare_outcomes(
        self, request: LoggedRequest, shadow: LoggedRequest | None, item: Feedback, counted: bool
    ) -> None:
        model = request.model
        assert model is not None and request.version is not None and request.outputs
        assert item.ground_truth is not None
        answered = correct(request.outputs, item.ground_truth)
        if request.arm in ("champion", "challenger"):
            self._window(self.outcomes, (model, request.arm)).add(Outcome(item.ts, request.rows, answered))
        if (
            shadow is not None
            and shadow.outputs
            and shadow.version is not None
            and shadow.rows == request.rows
            and request.arm == "champion"
        ):
            mirrored = correct(shadow.outputs, item.ground_truth)
            both = PairedOutcome(item.ts, request.rows, answered, mirrored)
            self._window(self.paired_outcomes, model).add(both)
            if counted:
                contest = _contest(self.contests, model, request.version, shadow.version, True, item.ts)
                contest.add(answered, mirrored, item.ts)
        elif request.arm in ("champion", "challenger") and counted:
            self._match(self.contests, self.matched, request, answered, item.ts)

    def _match(
        self,
        contests: Contests,
        matchers: dict[str, Matcher[tuple[int, Any]]],
        request: LoggedRequest,
        outcomes: np.ndarray,
        ts: float,
    ) -> None:
        """An A/B or canary arm's outcomes (or reward) of one request, matched with the other arm's in
        arrival order, each match a contest of its two versions."""
        assert request.model is not None and request.version is not None
        matcher = matchers.setdefault(request.model, Matcher())
        by_versions: dict[tuple[int, int], list[tuple[Any, Any]]] = {}
        for champion, challenger in matcher.add(request.arm, [(request.version, v) for v in outcomes]):
            by_versions.setdefault((champion[0], challenger[0]), []).append((champion[1], challenger[1]))
        metric: Metric = "reward" if contests is self.rewards else "accuracy"
        for (champion_version, challenger_version), pairs in by_versions.items():
            matched = np.array(pairs)
            versions = (champion_version, challenger_version)
            contest = _contest(contests, request.model, *versions, False, ts, metric)
            contest.add(matched[:, 0], matched[:, 1], ts)

    def arm_summary(self, model: str, arm: str, since: float, now: float) -> TrafficSummary | None:
        """One arm's traffic since a time (the canary judges a weight on what came after it was set)."""
        window = self.arm_traffic.get((model, arm))
        return traffic_summary(window, now, since) if window is not None else None

    def comparison(self, model: str, now: float) -> Comparison | None:
        """Champion against challenger over the windows; None while the challenger has no traffic."""
        self._resume(model)  # before this pass's report replaces the one the evidence was saved in
        arms = {
            arm: traffic_summary(w, now) for (m, arm), w in sorted(self.arm_traffic.items()) if m == model
        }
        arms = {arm: summary for arm, summary in arms.items() if summary["requests"]}
        if not set(arms) - {"champion"}:
            return None
        pairs = self.pairs.get(model)
        if pairs is not None:
            pairs.trim(now)
        shadow = pairs_summary(list(pairs.requests)) if pairs is not None and pairs.requests else None
        paired = self.paired_outcomes.get(model)
        if paired is not None:
            paired.trim(now)
        if paired is not None and paired.requests:
            outcomes = {
                "champion": np.concatenate([o.champion for o in paired.requests]),
                "challenger": np.concatenate([o.challenger for o in paired.requests]),
            }
        else:
            outcomes = {}
            for arm in ("champion", "challenger"):
                window = self.outcomes.get((model, arm))
                if window is not None:
                    window.trim(now)
                if window is not None and window.requests:
                    outcomes[arm] = np.concatenate([o.values for o in window.requests])
        quality = None
        if len(outcomes) == 2:
            is_paired = bool(paired and paired.requests)
            quality = quality_test(
                outcomes["champion"], outcomes["challenger"], is_paired, self.settings.compare_alpha
            )
        evidence, reward = (self._evidence(contests.get(model)) for contests in (self.contests, self.rewards))
        if quality is not None:  # which arm is better: the evidence's word, valid at every look
            better = evidence["better"] if evidence is not None else None
            quality.update({"better": better, "significant": better is not None})
        return {"arms": arms, "shadow": shadow, "quality": quality, "evidence": evidence, "reward": reward}

    def _evidence(self, contests: dict[tuple[int, int], QualityContest] | None) -> QualityEvidence | None:
        """The evidence of the two versions compared last."""
        if not contests:
            return None
        latest = max(contests.values(), key=lambda contest: contest.last)
        return latest.evidence(self.settings.compare_alpha, self.feedback_seq or 0)

    def reports(self, now: float) -> dict[str, Report]:
        # per model, the window of the version the champion arm answered with last; else the one seen last
        ranked: dict[str, tuple[tuple[bool, float], int, Window[LoggedRequest]]] = {}
        for (model, version), window in self.windows.items():
            window.trim(now)
            rank = (version == self.champions.get(model), window.last_seen)
            if window.requests and (model not in ranked or rank > ranked[model][0]):
                ranked[model] = (rank, version, window)
        latest = {model: (version, window) for model, (_, version, window) in ranked.items()}
        for _, window in latest.values():  # inputs are decoded once a record is reported on
            window.requests = deque(r.decoded() for r in window.requests)
        # a version's report grown into the model's (the canary's state, optional, comes later)
        reports: dict[str, Report] = {
            model: cast(Report, {
                **report(self.manifests(model, version), window, self.settings, now,
                         self._references(model, version)),
                "traffic": traffic_summary(self.traffic[model], now),
                "comparison": self.comparison(model, now),
                "quality": [],
            })
            for model, (version, window) in latest.items()
        }  # fmt: skip
        for (model, version), labelled in sorted(self.labelled.items()):
            labelled.trim(now)
            if labelled.requests and model in reports:
                measured = quality(self.manifests(model, version), labelled, self.settings.quality_segments)
                reports[model]["quality"].append({"version": version, **measured})
        return reports

    def export_window(self, model: str, version: int) -> pd.DataFrame:
        """The version's window as a table (``monitoring.export.prediction_table``): one row a predicted
        row, with its ground truth where the labelled window has it."""
        window = self.windows.get((model, version))
        records = [r.decoded() for r in window.requests] if window is not None else []
        labelled = self.labelled.get((model, version))
        truth = {
            entry.request.request_id: Feedback(entry.request.request_id, entry.truth, entry.ts)
            for entry in (labelled.requests if labelled is not None else ())
        }
        return prediction_table(records, truth, lambda m, v: self.manifests(m, v).output.classes)

    def step(self, now: float, batch: int = 5000) -> int:
        """Tail the log, refresh the windows, save a report per model; how many records were read.
        ``batch``: records a read at most (fewer when they are large, see ``ROWS_A_READ``)."""
        if self.seq is None:
            self.seq = self.requests.seq_before(now - self.settings.max_age_seconds)
        read = 0
        while True:
            limit = min(batch, self.read_limit)
            records = self.requests.read_after(self.seq, limit, decode=False)
            if not records:
                break
            self.ingest(records)
            self.seq = records[-1].seq
            read += len(records)
            rows = sum(r.rows for r in records)
            self.read_limit = max(1, len(records) * ROWS_A_READ // max(rows, 1))
            if len(records) < limit:
                break
        if self.feedback_seq is None:
            self.feedback_seq = self.feedback.seq_before(now - self.settings.max_age_seconds)
        while feedback := self.feedback.after(self.feedback_seq, batch):
            self.label(feedback)
            self.feedback_seq = feedback[-1][0]
            if len(feedback) < batch:
                break
        reports = self.reports(now)
        if self.controller is not None:
            self.controller(reports, now)
        for model, body in reports.items():
            self.saved_reports.save(model, now, orjson.dumps(body))
            if self.on_report is not None:
                self.on_report(body)
        if self.on_reports is not None:
            self.on_reports(reports, now)
        return read
