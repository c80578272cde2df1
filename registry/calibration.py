"""A classifier's calibration, fitted at push time on labelled reference data.

The label-free accuracy estimate (``monitoring.estimate``) reads each row's
chance of being right off the model's probabilities, which are seldom
calibrated: boosted trees and forests are notoriously over- or
under-confident. So each class's probability is mapped through an isotonic
regression, fitted one class against the rest on the reference rows and their
truth, and kept in the manifest as values on an even grid of probabilities.
The reference should be held-out data the model did not train on: on its
training data every model looks better calibrated than it is.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from registry.manifest import Calibration

#: points of each class's calibration map, evenly spaced over [0, 1]
GRID_POINTS = 101
#: fewer labelled reference rows than this: the maps would be noise, and the raw probabilities serve
MIN_CALIBRATION_ROWS = 50


def calibrate(probabilities: np.ndarray, truth: Sequence[str], classes: tuple[str, ...]) -> Calibration:
    """Isotonic maps from each class's predicted probability to how often that class is the truth.

    ``probabilities``: rows x classes, in ``classes`` order; ``truth``: one class a row."""
    from sklearn.isotonic import IsotonicRegression  # at push only: the monitor reads GRID_POINTS

    truth_array = np.asarray([str(t) for t in truth], dtype=object)
    grid = np.linspace(0.0, 1.0, GRID_POINTS)
    curves = {}
    for index, cls in enumerate(classes):
        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip", increasing=True)
        fitted.fit(probabilities[:, index], (truth_array == cls).astype(np.float64))
        curves[cls] = tuple(round(float(v), 6) for v in fitted.predict(grid))
    predicted = np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]
    return Calibration(
        rows=len(truth_array),
        accuracy=float(np.mean(predicted == truth_array)),
        curves=curves,
    )
