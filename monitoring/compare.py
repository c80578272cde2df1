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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from scipy import stats

from monitoring.records import LoggedRequest
from monitoring.report import PairsSummary, QualityTest


@dataclass(frozen=True, slots=True)
class Pair:
    """One request both arms predicted (shadow mode), reduced to what comparing needs."""

    ts: float
    rows: int
    #: rows with the same label (None for regressors)
    agreed: int | None
    #: summed over rows: the mean absolute difference of the class probabilities, or of the values
    abs_diff: float


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
        agreed = int(np.sum(_text(a["label"]) == _text(b["label"])))
        pa = np.asarray(a["probabilities"], dtype=np.float64)
        pb = np.asarray(b["probabilities"], dtype=np.float64)
        diff = float(np.abs(pa - pb).mean(axis=1).sum()) if pa.shape == pb.shape else float("nan")
        return Pair(ts, champion.rows, agreed, diff)
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
    return {
        "requests": len(pairs),
        "rows": rows,
        "agreement": sum(agreed) / rows if agreed and rows else None,
        "mean_abs_diff": sum(p.abs_diff for p in pairs) / rows if rows else None,
    }


def _text(labels: Any) -> np.ndarray:
    return np.asarray(labels, dtype=object).astype(str)


def correct(outputs: dict[str, Any], truth: Sequence[Any]) -> np.ndarray:
    """Per row: right (classifiers, as booleans) or the absolute error (regressors)."""
    if "label" in outputs:
        return _text(outputs["label"]) == _text(truth)
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
