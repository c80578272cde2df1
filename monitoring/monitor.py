"""The monitor: rolling windows over the prediction log, and a drift and plausibility report per model.

One monitor per deployment, in a process of its own (``service.processes.monitor``)
that holds the log's monitor lease; or, where monitors share the models
(``monitoring.shards``), one per shard, each reading only its models. It
tails the log by position, so windows cover every worker's traffic, and
after a restart it rebuilds them from the log (from the first record inside
the time window). Reports go back into the
log store, where every process reads them for ``GET /monitoring/drift``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import orjson
import structlog

from monitoring.assessment import attributions, importances, quality, references, report
from monitoring.baseline import Reference
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
    saved_position,
)
from monitoring.export import prediction_table
from monitoring.history import point_of
from monitoring.records import (
    EXPLAIN_ROUTE,
    START,
    Cursor,
    Feedback,
    LoggedRequest,
    Position,
    advanced,
    covers,
)
from monitoring.report import (
    AttributionReport,
    CanaryEvidence,
    Comparison,
    QualityEvidence,
    Report,
)
from monitoring.sequential import Matcher
from monitoring.shards import Shard
from monitoring.store import FeedbackLog, ReportStore, RequestLog
from monitoring.windows import Labelled, Traffic, Window, WindowSettings, traffic_summary
from registry.aliases import Arm, LogPolicy
from registry.manifest import Manifest

if TYPE_CHECKING:
    import pandas as pd

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
        shard: Shard | None = None,
        models: Callable[[], Iterable[str]] | None = None,
        policies: Callable[[str], LogPolicy] | None = None,
    ) -> None:
        self.requests = requests
        #: what the log keeps of each model's requests (the registry's log policy)
        self.policies = policies
        #: the models this monitor looks after: every one, unless monitors share them ...
        self.shard = shard or Shard()
        #: ... and then it reads only its share of the log: those among the registry's models
        self.models = models
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
        self.arm_traffic: dict[tuple[str, Arm], Window[Traffic]] = {}
        #: ... shadow mode: one arm's prediction waiting for the other's, by request id ...
        self.unpaired: dict[Arm, OrderedDict[str, Predicted]] = {
            "champion": OrderedDict(),
            "shadow": OrderedDict(),
        }
        self.unpaired_rows: dict[Arm, int] = {"champion": 0, "shadow": 0}
        self.pairs: dict[str, Window[Pair]] = {}
        #: ... and with ground truth: outcomes per (model, answering arm), and paired ones (shadow)
        self.outcomes: dict[tuple[str, Arm], Window[Outcome]] = {}
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
        #: explanations in the loop (records of route ``explain``): per version, and per arm
        self.explained: dict[tuple[str, int], Window[LoggedRequest]] = {}
        self.explained_arms: dict[tuple[str, Arm], Window[LoggedRequest]] = {}
        #: ... and per model, the record and feedback positions a saved report's evidence had counted to
        self.resumed: dict[str, tuple[Cursor, Position]] = {}
        #: what each version's quantities are tested against, built once per version
        self.references: dict[tuple[str, int], dict[str, Reference]] = {}
        self.position: Cursor | None = None
        self.feedback_position: Position | None = None
        #: records a read, adapted to their size (see ROWS_A_READ); small until the first read
        self.read_limit = 16

    def ingest(self, records: list[LoggedRequest]) -> None:
        """Every answering request of a served model into its traffic window; its answered ones into
        their version's window (refusals carry no inputs to test). Shadow predictions answered no one."""
        owns = self.shard.owns
        for record in records:
            if record.model is None or not owns(record.model):
                continue
            if record.route == EXPLAIN_ROUTE:  # an explanation, not a request
                if record.version is not None:
                    self._window(self.explained, (record.model, record.version)).add(record)
                    self._window(self.explained_arms, (record.model, record.arm)).add(record)
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

    def _resume(self, model: str) -> tuple[Cursor, Position]:
        """Once a process, a model's evidence as its last saved report left it; the record cursor and
        feedback position it had counted to (a restarted monitor reads the last hour of the log again)."""
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
            dict(self.canaries[model].position) if canary is not None else {},
            max(
                saved_position(e, "feedback_position", "feedback_seq") if e else START
                for e in (quality, reward)
            ),
        )
        return resumed

    def _canary(self, record: LoggedRequest) -> None:
        """A champion or challenger record into its model's canary checks, which start with the first
        challenger record (of each challenger version)."""
        assert record.model is not None
        if covers(self._resume(record.model)[0], record):
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
            contest = self.canaries[model] = CanaryContest(
                contest.challenger_version, since, contest.position
            )
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
        other_arm: Arm = "champion" if record.arm == "shadow" else "shadow"
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

    def label(self, feedback: list[tuple[Position, Feedback]]) -> None:
        """Join ground truth (with its feedback's position) to the requests it names, into each version's
        labelled window."""
        ids = [item.request_id for _, item in feedback]
        requests = {r.request_id: r for r in self.requests.answered(ids)}
        shadows = {r.request_id: r for r in self.requests.shadowed(ids)}
        for position, item in feedback:
            request = requests.get(item.request_id)
            if request is None or request.model is None or request.version is None or not request.outputs:
                continue
            if not self.shard.owns(request.model):
                continue
            counted = position > self._resume(request.model)[1]  # else a saved contest has it already
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
        compared: Comparison = {"arms": arms, "shadow": shadow, "quality": quality, "evidence": evidence,
                                "reward": reward}  # fmt: skip
        reasoning = self.arm_attributions(model, now)
        if reasoning is not None:
            compared["attributions"] = reasoning
        return compared

    def _evidence(self, contests: dict[tuple[int, int], QualityContest] | None) -> QualityEvidence | None:
        """The evidence of the two versions compared last."""
        if not contests:
            return None
        latest = max(contests.values(), key=lambda contest: contest.last)
        return latest.evidence(self.settings.compare_alpha, self.feedback_position or START)

    def _attributions(self, model: str, version: int, now: float) -> dict[str, AttributionReport | None]:
        """The version's explanations in the loop, when there are any (a report's ``attributions``)."""
        window = self.explained.get((model, version))
        if window is None:
            return {}
        return {"attributions": attributions(self.manifests(model, version), window, self.settings, now)}

    def arm_attributions(self, model: str, now: float) -> dict[str, Any] | None:
        """Each arm's mean importance of each feature, and the features where they differ most (the
        champion against the other arm): where two versions reason differently."""
        arms: dict[str, Any] = {}
        for (name, arm), window in self.explained_arms.items():
            window.trim(now)
            if name != model or not window.requests:
                continue
            records = [r.decoded() for r in window.requests]
            features = self.manifests(model, records[-1].version or 0).inputs.names
            arms[arm] = {
                "version": records[-1].version,
                "rows": window.rows,
                "mean_importance": {f: float(v.mean()) if (v := importances(records, f)).size else 0.0
                                    for f in features},
            }  # fmt: skip
        other = next((arms[a] for a in ("challenger", "shadow") if a in arms), None)
        if "champion" not in arms or other is None:
            return None
        champion = arms["champion"]["mean_importance"]
        shared = set(champion) & set(other["mean_importance"])
        differences = sorted(
            ({"feature": f, "champion": champion[f], "other": other["mean_importance"][f],
              "difference": other["mean_importance"][f] - champion[f]} for f in shared),
            key=lambda d: -abs(d["difference"]),
        )  # fmt: skip
        return {"arms": arms, "differences": differences[:10]}

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
            window.replace(LoggedRequest.decoded)
        # a version's report grown into the model's (the canary's state, optional, comes later)
        reports: dict[str, Report] = {
            model: cast(Report, {
                **report(self.manifests(model, version), window, self.settings, now,
                         self._references(model, version),
                         self.policies(model) if self.policies is not None else None),
                "traffic": traffic_summary(self.traffic[model], now),
                "comparison": self.comparison(model, now),
                "quality": [],
                "monitor": {"shard": self.shard.index, "shards": self.shard.count},
                **self._attributions(model, version, now),
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

    def tail(self, now: float, batch: int = 5000) -> int:
        """Read what the log gained since the last pass into the windows (records, then feedback);
        how many records were read. ``batch``: records a read at most (fewer when they are large, see
        ``ROWS_A_READ``)."""
        if self.position is None:
            self.position = self.requests.position_before(now - self.settings.max_age_seconds)
        read = 0
        listed = self.models if self.shard.count > 1 else None
        while True:
            limit = min(batch, self.read_limit)
            if listed is None:
                records = self.requests.read_after(self.position, limit, decode=False)
                self.position = advanced(self.position, records)
            else:  # listed at each read: a model's first records come after the registry has it
                share = [model for model in listed() if self.shard.owns(model)]
                records, self.position = self.requests.read_share(self.position, limit, share)
            if not records:
                break
            self.ingest(records)
            read += len(records)
            rows = sum(r.rows for r in records)
            self.read_limit = max(1, len(records) * ROWS_A_READ // max(rows, 1))
            if len(records) < limit:
                break
        if self.feedback_position is None:
            self.feedback_position = self.feedback.position_before(now - self.settings.max_age_seconds)
        while feedback := self.feedback.after(self.feedback_position, batch):
            self.label(feedback)
            self.feedback_position = feedback[-1][0]
            if len(feedback) < batch:
                break
        return read

    def save(self, reports: dict[str, Report], now: float) -> None:
        """Keep each model's report where every replica reads it (``GET /monitoring/drift``)."""
        for model, body in reports.items():
            self.saved_reports.save(model, now, orjson.dumps(body), orjson.dumps(point_of(body)))

    def step(self, now: float, batch: int = 5000) -> int:
        """One pass with nothing acting on its reports: tail the log, report, save; how many records
        were read. The leading monitor process runs these stages with the routing controller, the
        metrics and the alerts between them (``service.processes.monitor.Leading``)."""
        read = self.tail(now, batch)
        self.save(self.reports(now), now)
        return read
