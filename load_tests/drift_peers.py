"""The drift accuracy benchmark's peers: Evidently and alibi-detect with their defaults, on the same rows.

Runs in a virtual environment of its own (their pins differ from ours) with `evidently` and
`alibi-detect` installed; `drift_accuracy.py --peers-python` starts it and reads the JSON it prints.
Each peer gets the reference and each window as a user of it would: the table as generated, float64.

- Evidently (0.7): per column, its default test and threshold, chosen by its own rule
  (`get_stattest`: with a reference of more than 1,000 rows, Wasserstein distance normed by the
  reference's spread for a numeric column with more than 5 values, Jensen-Shannon distance
  otherwise, threshold 0.1), missing values dropped first, as its column drift does. A window has a
  false alarm when any column is called drifted.
- alibi-detect (0.13): `TabularDrift` (Kolmogorov-Smirnov per numeric feature, chi-square per
  categorical one) with its default `p_val=0.05` and Bonferroni correction: a feature is called
  drifted when its p-value is below 0.05 / 30, the rule by which its default `predict` calls a batch
  drifted. Categories are integer codes; a missing value is a sentinel below every value (the
  detector takes no NaN).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import drift_data as data

SENTINEL = -1e9


class Evidently:
    name = "Evidently"

    def __init__(self, reference: pd.DataFrame) -> None:
        from evidently.legacy.calculations.stattests.registry import get_stattest
        from evidently.legacy.core import ColumnType

        self.get_stattest = get_stattest
        self.types = {c: ColumnType.Categorical if c in data.CATEGORIES else ColumnType.Numerical
                      for c in reference.columns}  # fmt: skip
        self.reference = {c: reference[c].dropna() for c in reference.columns}

    def drifted(self, window: pd.DataFrame) -> set[str]:
        found = set()
        for column, kind in self.types.items():
            ref, cur = self.reference[column], window[column].dropna()
            test = self.get_stattest(ref, cur, kind, None)
            if test(ref, cur, kind, None).drifted:
                found.add(column)
        return found


class Alibi:
    name = "alibi-detect"

    def __init__(self, reference: pd.DataFrame) -> None:
        from alibi_detect.cd import TabularDrift

        self.columns = list(reference.columns)
        self.codes = {c: {v: i for i, v in enumerate(sorted(reference[c].unique()))} for c in data.CATEGORIES}
        matrix = self.matrix(reference)
        categorical = {i: None for i, c in enumerate(self.columns) if c in data.CATEGORIES}
        self.detector = TabularDrift(matrix, p_val=0.05, categories_per_feature=categorical)

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        columns = []
        for c in self.columns:
            if c in data.CATEGORIES:
                codes = self.codes[c]
                columns.append(frame[c].map(lambda v, codes=codes: codes.get(v, len(codes))).to_numpy(float))
            else:
                columns.append(frame[c].fillna(SENTINEL).to_numpy(float))
        return np.column_stack(columns).astype(np.float32)

    def drifted(self, window: pd.DataFrame) -> set[str]:
        result = self.detector.predict(self.matrix(window), drift_type="feature", return_p_val=True)
        p = np.asarray(result["data"]["p_val"])
        return {c for c, pi in zip(self.columns, p, strict=True) if pi < 0.05 / len(self.columns)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--delay-runs", type=int, default=50)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    reference = data.reference()
    peers = [Evidently(reference), Alibi(reference)]
    false_alarms: dict[str, dict[int, list[bool]]] = {p.name: {} for p in peers}
    for size in data.WINDOW_SIZES:
        for run in range(args.runs):
            window = data.clean_window(size, run)
            for peer in peers:
                false_alarms[peer.name].setdefault(size, []).append(bool(peer.drifted(window)))
    delays: dict[str, dict[str, list[int | None]]] = {p.name: {} for p in peers}
    for index, scenario in enumerate(data.SCENARIOS):
        for run in range(args.delay_runs):
            rows = data.stream(index, run)
            for peer in peers:
                found = None
                for after in data.checks():
                    window = rows.iloc[after : data.WINDOW + after]
                    if scenario.feature in peer.drifted(window):
                        found = after
                        break
                delays[peer.name].setdefault(scenario.name, []).append(found)
    from importlib.metadata import version

    versions = {"Evidently": version("evidently"), "alibi-detect": version("alibi-detect")}
    json.dump({"versions": versions, "false_alarms": false_alarms, "delays": delays}, sys.stdout)


if __name__ == "__main__":
    main()
