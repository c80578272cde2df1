"""Label-free performance estimate of a classifier: confidence-based, calibrated on reference data.

Ground truth often comes days after a prediction, or never for most rows.
Until it does, a classifier's own probabilities say how often it should be
right: if, among rows where the model gives its predicted class a calibrated
probability of 0.8, four in five are indeed that class, then the expected
accuracy of any window is the mean calibrated probability of the predicted
class. This is NannyML's confidence-based performance estimation (CBPE),
done online.

Raw probabilities are seldom calibrated (boosted trees and forests are
notoriously over- or under-confident), so each class's probability is mapped
through an isotonic regression fitted, one class against the rest, on
labelled reference data at push time (``registry.calibration``).

What the estimate cannot see: a change in how the truth depends on the
inputs (concept drift). It tracks accuracy under covariate shift, where the
inputs move but what a given input means does not, which is the common case
the drift monitor also flags; once feedback arrives, live quality measures
the rest, and the two side by side show when they part.
"""

from __future__ import annotations

import numpy as np

from monitoring.report import ExpectedAccuracy
from registry.calibration import GRID_POINTS
from registry.manifest import Calibration


def calibrated(
    probabilities: np.ndarray, classes: tuple[str, ...], calibration: Calibration | None
) -> np.ndarray:
    """Each row's probabilities through its class's map, renormalised to sum to 1 (a row whose maps
    all give 0 keeps its raw probabilities). Without a calibration, the raw probabilities."""
    probabilities = np.nan_to_num(np.asarray(probabilities, dtype=np.float64), nan=0.0)
    if calibration is None:
        return probabilities
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    mapped = np.column_stack(
        [np.interp(probabilities[:, i], grid, calibration.curves[cls]) for i, cls in enumerate(classes)]
    )
    sums = mapped.sum(axis=1, keepdims=True)
    return np.where(sums > 0, mapped / np.where(sums > 0, sums, 1.0), probabilities)


def expected_accuracy(
    labels: np.ndarray,
    probabilities: np.ndarray,
    classes: tuple[str, ...],
    calibration: Calibration | None,
) -> ExpectedAccuracy:
    """The accuracy a window should have, and a 95% interval for the accuracy it will show.

    Each row is right with its calibrated probability ``p`` of the class it was given, so the
    window's accuracy is a mean of independent Bernoulli(``p``) outcomes: its expectation is
    ``mean(p)`` and its variance ``sum(p (1 - p)) / n**2``. The interval covers that sampling
    spread only; an ill-fitting calibration adds error it cannot show.
    """
    scores = calibrated(probabilities, classes, calibration)
    index = {cls: i for i, cls in enumerate(classes)}
    columns = np.array([index.get(str(label), -1) for label in labels])
    known = columns >= 0
    p = scores[np.flatnonzero(known), columns[known]]
    rows = int(p.size)
    accuracy = float(p.mean()) if rows else float("nan")
    spread = 1.96 * float(np.sqrt(np.sum(p * (1 - p)))) / rows if rows else float("nan")
    return {
        "rows": rows,
        "accuracy": accuracy,
        "low": max(0.0, accuracy - spread),
        "high": min(1.0, accuracy + spread),
        "calibrated": calibration is not None,
    }
