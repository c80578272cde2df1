"""Champion against challenger: how often they agree, how far apart they are, and which is better.

Pure functions over logged requests. In shadow mode both arms predicted the
same requests, so their predictions pair up row by row: the agreement rate
(same label) and the mean absolute difference of the probabilities (or of
the values); with ground truth, the difference in quality is tested on the
pairs (McNemar's exact test on the rows only one arm got right; Wilcoxon's
signed-rank test on the absolute errors of regressors). Under an A/B or
canary split each arm answered different requests: the arms' quality is
tested as two independent samples (Fisher's exact test on right/wrong
counts; Mann-Whitney U on the absolute errors).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson
from scipy import stats

from monitoring.records import START, LoggedRequest, Position, cursor_json, cursor_of
from monitoring.report import (
    ArmSamples,
    CanaryCheck,
    CanaryEvidence,
    Disagreement,
    PairsSummary,
    QualityEvidence,
    QualityTest,
)
from monitoring.sequential import Matcher, contests, e_value

#: pairs of labels a comparison lists where the arms disagree
MAX_DISAGREEMENTS = 10


@dataclass(frozen=True, slots=True)
class Pair:
    """One request both arms predicted (shadow mode), reduced to what comparing needs."""

    ts: float
    rows: int
    #: rows with the same label (None for regressors)
    agreed: int | None
    #: summed over rows: the mean absolute difference of the class probabilities, or of the values
    abs_diff: float
    #: the rows whose labels differ, counted by (champion's label, other arm's label)
    swaps: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Predicted:
    """What pairing keeps of one arm's record while it waits for the other arm's: its outputs
    still encoded, decoded only when the other arm's arrive.

    Why encoded: every champion record waits (the monitor cannot tell whether a shadow
    prediction will follow), decoding them cost ~7 us a record, and thousands may wait:
    JSON text is the smallest form they have here.
    """

    ts: float
    rows: int
    outputs: str | bytes

    @classmethod
    def of(cls, record: LoggedRequest) -> Predicted | None:
        outputs = record.encoded_outputs()
        return None if outputs is None else cls(record.ts, record.rows, outputs)


def pair(champion: Predicted, shadow: Predicted) -> Pair | None:
    """The two predictions of one request side by side; None when they cannot be compared."""
    a, b = orjson.loads(champion.outputs), orjson.loads(shadow.outputs)
    if champion.rows != shadow.rows:
        return None
    ts = max(champion.ts, shadow.ts)
    if "label" in a and "label" in b:
        la, lb = _text(a["label"]), _text(b["label"])
        same = la == lb
        pa = np.asarray(a["probabilities"], dtype=np.float64)
        pb = np.asarray(b["probabilities"], dtype=np.float64)
        diff = float(np.abs(pa - pb).mean(axis=1).sum()) if pa.shape == pb.shape else float("nan")
        swapped = Counter(zip(la[~same].tolist(), lb[~same].tolist(), strict=True))
        swaps = tuple((x, y, n) for (x, y), n in swapped.items())
        return Pair(ts, champion.rows, int(same.sum()), diff, swaps)
    for key in ("value", "embedding"):  # an embedding's difference: a row's mean over its coordinates
        if key in a and key in b:
            va, vb = np.asarray(a[key], dtype=np.float64), np.asarray(b[key], dtype=np.float64)
            if va.shape != vb.shape:
                return None
            return Pair(
                ts, champion.rows, None, float(np.abs(va - vb).reshape(champion.rows, -1).mean(axis=1).sum())
            )
    return None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Per row of one labelled request: right or wrong (classifiers) or the absolute error."""

    ts: float
    rows: int
    values: np.ndarray


@dataclass(frozen=True, slots=True)
class PairedOutcome:
    """Both arms' outcomes on the same labelled request (shadow mode)."""

    ts: float
    rows: int
    champion: np.ndarray
    challenger: np.ndarray


def pairs_summary(pairs: Sequence[Pair]) -> PairsSummary:
    rows = sum(p.rows for p in pairs)
    agreed = [p.agreed for p in pairs if p.agreed is not None]
    swapped: Counter[tuple[str, str]] = Counter()
    for p in pairs:
        for champion, other, count in p.swaps:
            swapped[champion, other] += count
    return {
        "requests": len(pairs),
        "rows": rows,
        "agreement": sum(agreed) / rows if agreed and rows else None,
        "mean_abs_diff": sum(p.abs_diff for p in pairs) / rows if rows else None,
        "disagreements": [
            Disagreement(champion=champion, other=other, rows=count)
            for (champion, other), count in swapped.most_common(MAX_DISAGREEMENTS)
        ],
    }


def _text(labels: Any) -> np.ndarray:
    return np.asarray(labels, dtype=object).astype(str)


def correct(outputs: dict[str, Any], truth: Sequence[Any]) -> np.ndarray:
    """Per row: right (classifiers, as booleans) or the absolute error (regressors)."""
    if "label" in outputs:
        right: np.ndarray = _text(outputs["label"]) == _text(truth)
        return right
    values = np.asarray(outputs["value"], dtype=np.float64).ravel()
    return np.abs(values - np.asarray(truth, dtype=np.float64))


def quality_test(champion: np.ndarray, challenger: np.ndarray, paired: bool, alpha: float) -> QualityTest:
    """Whether the challenger's quality differs from the champion's, and which is better.

    ``champion`` and ``challenger`` are per-row outcomes from ``correct``:
    booleans (accuracy) or absolute errors (MAE); row ``i`` of each is the
    same row when ``paired``.
    """
    classifier = champion.dtype == bool
    result: QualityTest = {
        "metric": "accuracy" if classifier else "mae",
        "paired": paired,
        "samples": {"champion": int(champion.size), "challenger": int(challenger.size)},
        "champion": float(champion.mean()) if champion.size else None,
        "challenger": float(challenger.mean()) if challenger.size else None,
        "test": None,
        "p_value": None,
        "significant": False,
        "better": None,
    }
    if not champion.size or not challenger.size:
        return result
    if classifier and paired:
        only_challenger = int(np.sum(~champion & challenger))
        only_champion = int(np.sum(champion & ~challenger))
        discordant = only_challenger + only_champion
        test, p = "mcnemar-exact", stats.binomtest(only_challenger, discordant).pvalue if discordant else 1.0
    elif classifier:
        table = [[int(arm.sum()), int((~arm).sum())] for arm in (champion, challenger)]
        test, p = "fisher-exact", stats.fisher_exact(table).pvalue
    elif paired:
        differences = champion - challenger
        test = "wilcoxon"
        p = stats.wilcoxon(differences).pvalue if np.any(differences != 0) else 1.0
    else:
        test, p = "mann-whitney-u", stats.mannwhitneyu(champion, challenger).pvalue
    champion_mean, challenger_mean = float(champion.mean()), float(challenger.mean())
    higher_is_better = classifier
    challenger_ahead = (challenger_mean > champion_mean) == higher_is_better
    significant = bool(p < alpha) and challenger_mean != champion_mean
    result.update(
        {
            "test": test,
            "p_value": float(p),
            "significant": significant,
            "better": ("challenger" if challenger_ahead else "champion") if significant else None,
        }
    )
    return result


Metric = Literal["accuracy", "absolute_error", "reward"]


@dataclass
class QualityContest:
    """Live quality of one champion version against one challenger version, as contests won by each
    (``monitoring.sequential``), from the first labelled row both were seen on: never forgotten as
    a window forgets, so the evidence of days adds up, and the decision on it stays valid at every
    look. Shadow rows are contests as they are; A/B rows are matched across the arms first."""

    champion_version: int
    challenger_version: int
    paired: bool
    since: float
    metric: Metric = "accuracy"
    samples: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    won: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    last: float = 0.0

    def add(self, champion: np.ndarray, challenger: np.ndarray, ts: float) -> None:
        """Row-aligned outcomes of the two arms: ``correct``'s, or rewards (the higher wins)."""
        if self.metric != "reward":
            self.metric = "accuracy" if champion.dtype == bool else "absolute_error"
        else:
            champion, challenger = -champion, -challenger  # as errors: the smaller wins
        by_challenger, by_champion = contests(champion, challenger)
        self.won["challenger"] += by_challenger
        self.won["champion"] += by_champion
        self.samples["champion"] += champion.size
        self.samples["challenger"] += challenger.size
        self.last = max(self.last, ts)

    def evidence(self, alpha: float, feedback_position: Position) -> QualityEvidence:
        threshold = 2.0 / alpha  # either arm may be named: alpha / 2 each
        evidence = {
            "challenger": e_value(self.won["challenger"], self.won["champion"]),
            "champion": e_value(self.won["champion"], self.won["challenger"]),
        }
        better = next((arm for arm, e in evidence.items() if e >= threshold), None)
        return {
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "metric": self.metric,
            "paired": self.paired,
            "since": self.since,
            "samples": {"champion": self.samples["champion"], "challenger": self.samples["challenger"]},
            "contests": {"champion": self.won["champion"], "challenger": self.won["challenger"]},
            "e_value": {"champion": evidence["champion"], "challenger": evidence["challenger"]},
            "threshold": threshold,
            "alpha": alpha,
            "better": "champion" if better == "champion" else "challenger" if better else None,
            "guarantee": (
                f"an arm is named better once its e-value reaches {threshold:g}: one that is not better "
                f"is ever named with a chance of at most {alpha / 2:.3g}, however long the two run and "
                "however often this is read"
            ),
            "feedback_position": feedback_position,
        }

    @classmethod
    def resumed(cls, saved: QualityEvidence) -> QualityContest:
        """The contest a report saved, to go on from where a previous monitor left it."""
        return cls(
            saved["champion_version"],
            saved["challenger_version"],
            saved["paired"],
            saved["since"],
            saved["metric"],
            _counts(saved["samples"]),
            _counts(saved["contests"]),
            saved["since"],
        )


#: matched latencies are kept as counts of log2(challenger / champion) in bins this wide, from -LATENCY_SPAN
LATENCY_BIN = 0.05
LATENCY_SPAN = 6.0


@dataclass(frozen=True, slots=True)
class Served:
    """What the canary's checks keep of one answered or refused request of an arm."""

    failed: bool
    latency_ms: float


@dataclass
class CanaryContest:
    """A canary's health, accumulated since its routing was set: each arm's requests and failures,
    the canary's rows with a plausibility violation, and requests of the two arms matched in arrival
    order (``Matcher``), for the error and latency contests. See ``monitoring.controller.judge``."""

    challenger_version: int | None
    since: float
    #: the last log record counted in each partition of the log
    position: dict[int, Position] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    failed: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    rows: int = 0
    violating_rows: int = 0
    #: matched pairs in which only the canary failed, and only the champion
    failed_alone: dict[str, int] = field(default_factory=lambda: {"champion": 0, "challenger": 0})
    latency: np.ndarray = field(default_factory=lambda: np.zeros(int(2 * LATENCY_SPAN / LATENCY_BIN) + 1))
    matcher: Matcher[Served] = field(default_factory=Matcher)

    def add(self, record: LoggedRequest) -> None:
        """One champion or challenger record (at or after ``since``)."""
        arm = record.arm
        failed = record.status != 200
        if record.position > self.position.get(record.partition, START):
            self.position[record.partition] = record.position
        self.requests[arm] += 1
        self.failed[arm] += failed
        if arm == "challenger" and not failed:
            self.rows += record.rows
            self.violating_rows += min(record.rows, sum(record.flags.values()))
        for champion, challenger in self.matcher.add(arm, [Served(failed, record.latency_ms)]):
            if champion.failed != challenger.failed:
                self.failed_alone["challenger" if challenger.failed else "champion"] += 1
            ratio = math.log2(max(challenger.latency_ms, 1e-3) / max(champion.latency_ms, 1e-3))
            index = min(max(int((ratio + LATENCY_SPAN) // LATENCY_BIN), 0), self.latency.size - 1)
            self.latency[index] += 1

    def slower(self, ratio: float) -> tuple[int, int]:
        """Matched pairs in which the canary took more than ``ratio`` times the champion's time, and the
        others; a bin counts as slower only when all of it is (so the count errs towards health)."""
        first = int(np.ceil((np.log2(ratio) + LATENCY_SPAN) / LATENCY_BIN - 1e-9))
        slower = int(self.latency[max(first, 0) :].sum())
        return slower, int(self.latency.sum()) - slower

    def checks(self, max_error_rate: float, max_error_ratio: float, max_violation_rate: float,
               max_latency_ratio: float) -> dict[str, CanaryCheck]:  # fmt: skip
        """Each step-down test's evidence that the canary is unhealthy on it (``monitoring.sequential``):
        its error rate above the limit, its odds of failing a request above ``max_error_ratio`` times
        the champion's, its share of rows with a violation above the limit, and its requests slower
        than ``max_latency_ratio`` times the champion's in more than half the matched pairs."""
        counts = {
            "error_rate": (self.failed["challenger"], self.requests["challenger"] - self.failed["challenger"],
                           max_error_rate),
            "error_ratio": (self.failed_alone["challenger"], self.failed_alone["champion"],
                            max_error_ratio / (1.0 + max_error_ratio)),
            "latency_ratio": (*self.slower(max_latency_ratio), 0.5),
        }  # fmt: skip
        if max_violation_rate < 1.0:  # a share of rows: above 1 it cannot be exceeded
            clean = self.rows - self.violating_rows
            counts["violation_rate"] = (self.violating_rows, clean, max_violation_rate)
        return {
            name: {"e_value": e_value(against, favour, limit) if 0.0 < limit < 1.0 else 0.0, "limit": limit,
                   "against": against, "in_favour": favour}
            for name, (against, favour, limit) in counts.items()
        }  # fmt: skip

    def evidence(self, checks: dict[str, CanaryCheck], threshold: float) -> CanaryEvidence:
        return {
            "challenger_version": self.challenger_version,
            "since": self.since,
            "checks": checks,
            "threshold": threshold,
            "tally": {
                "requests": _arms(self.requests),
                "failed": _arms(self.failed),
                "rows": self.rows,
                "violating_rows": self.violating_rows,
                "failed_alone": _arms(self.failed_alone),
                "latency": {str(i): int(self.latency[i]) for i in np.flatnonzero(self.latency)},
            },
            "position": cursor_json(self.position),
        }

    @classmethod
    def resumed(cls, saved: CanaryEvidence) -> CanaryContest:
        """The contest a report saved (its unmatched requests are not kept: they are left out)."""
        tally = saved["tally"]
        resumed = cls(saved["challenger_version"], saved["since"], saved_cursor(saved),
                      _counts(tally["requests"]),
                      _counts(tally["failed"]), tally["rows"], tally["violating_rows"],
                      _counts(tally["failed_alone"]))  # fmt: skip
        for index, count in tally["latency"].items():
            resumed.latency[int(index)] = count
        return resumed


def saved_cursor(saved: Mapping[str, object]) -> dict[int, Position]:
    """The log records a saved canary's evidence had counted to; a report saved when positions were a
    ``seq`` alone holds it at ``seq``, in partition 0 with transaction 0."""
    if "position" in saved:
        return cursor_of(saved["position"])
    seq = saved.get("seq")
    return {0: (0, seq)} if isinstance(seq, int) else {}


def saved_position(saved: Mapping[str, object], key: str, seq_key: str) -> Position:
    """The log position a saved report's evidence had counted to (``START`` when none); a report saved
    when positions were a ``seq`` alone holds it at ``seq_key``, of rows whose transaction is 0."""
    value = saved.get(key)
    if isinstance(value, list | tuple):
        xid, seq = value
        return (int(xid), int(seq))
    seq = saved.get(seq_key)
    return (0, seq) if isinstance(seq, int) else START


def _counts(arms: ArmSamples) -> dict[str, int]:
    return {"champion": arms["champion"], "challenger": arms["challenger"]}


def _arms(counts: dict[str, int]) -> ArmSamples:
    return {"champion": counts["champion"], "challenger": counts["challenger"]}
