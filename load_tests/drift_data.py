"""The drift accuracy benchmark's data and schedule, shared by modelgate's side and the peers' side.

Plain numpy and pandas, so that `drift_peers.py` imports it in the peers' own virtual environment and
every detector judges the same rows: a 30-feature table of the shapes real tables have, windows of
clean rows, and streams whose rows change at a known point.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

REFERENCE_ROWS = 10_000
#: rows in each false-alarm window, and windows of each size
WINDOW_SIZES = (100, 200, 500, 1000)
#: the monitor's window: the last this many rows
WINDOW = 1000
#: rows between two checks of a stream, and rows after the change at most
STEP = 50
HORIZON = 3000

CATEGORIES = {
    "channel": (["web", "app", "store"], [0.5, 0.35, 0.15]),
    "region": (["north", "south", "east", "west", "centre"], [0.3, 0.25, 0.2, 0.15, 0.1]),
    "plan": ([f"plan_{i}" for i in range(10)], None),
    "merchant": ([f"m{i:02d}" for i in range(30)], None),
}


def _zipf(size: int) -> list[float]:
    weights = 1 / np.arange(1, size + 1)
    return list(weights / weights.sum())


def generate(rows: int, rng: np.random.Generator) -> pd.DataFrame:
    """Rows of the 30-feature table: Gaussians, skewed amounts, prices in cents, log-transformed counts
    (their values sit on decile edges and are not exact in float32), small counts, flags, a uniform,
    categories, and two features with missing values."""
    columns: dict[str, np.ndarray] = {}
    for i in range(8):
        columns[f"gauss_{i}"] = rng.normal(10 * i, 1 + i, rows)
    for i in range(4):
        columns[f"amount_{i}"] = rng.lognormal(2 + i / 2, 0.8, rows)
    for i in range(3):
        columns[f"price_{i}"] = np.round(rng.lognormal(3 + i, 0.5, rows), 2)
    for i in range(3):
        columns[f"log_count_{i}"] = np.log1p(rng.poisson(2 + 3 * i, rows)).astype(np.float64)
    for i in range(3):
        columns[f"count_{i}"] = rng.poisson(1 + 2 * i, rows).astype(np.float64)
    columns["flag_0"] = (rng.random(rows) < 0.1).astype(np.float64)
    columns["flag_1"] = (rng.random(rows) < 0.3).astype(np.float64)
    columns["uniform"] = rng.uniform(0, 1, rows)
    with_missing = rng.normal(50, 5, rows)
    with_missing[rng.random(rows) < 0.03] = np.nan
    columns["missing_0"] = with_missing
    skewed_missing = rng.lognormal(1, 1, rows)
    skewed_missing[rng.random(rows) < 0.05] = np.nan
    columns["missing_1"] = skewed_missing
    frame = pd.DataFrame(columns)
    for name, (values, shares) in CATEGORIES.items():
        frame[name] = rng.choice(values, size=rows, p=shares or _zipf(len(values)))
    return frame


def target(frame: pd.DataFrame, rng: np.random.Generator) -> np.ndarray:
    """A label that depends on several features, for the model the benchmark pushes."""
    score = (
        (frame["gauss_1"] - 10) / 2
        + np.log(frame["amount_0"])
        - 2
        + (frame["channel"] == "app")
        - frame["flag_1"]
        + rng.normal(0, 1, len(frame))
    )
    return np.where(score > 0, "yes", "no")


NUMERIC = [c for c in generate(1, np.random.default_rng(0)).columns if c not in CATEGORIES]


# the changes a stream undergoes: each takes the rows after the change and an rng, and says which
# feature it changes (the one a detector must name)
def _mean_shift(sd: float) -> Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]:
    def shift(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
        return frame.assign(gauss_3=frame["gauss_3"] + sd * 4.0)  # gauss_3's sd is 4

    return shift


def _category_halved(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    frame = frame.copy()
    web = np.flatnonzero(frame["channel"].to_numpy() == "web")
    moved = rng.choice(web, size=web.size // 2, replace=False)
    frame.iloc[moved, frame.columns.get_loc("channel")] = rng.choice(["app", "store"], size=moved.size)
    return frame


def _missing_rise(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[rng.random(len(frame)) < 0.05, "missing_0"] = np.nan  # 3% -> about 8%
    return frame


@dataclass(frozen=True)
class Scenario:
    name: str
    feature: str
    change: Callable[[pd.DataFrame, np.random.Generator], pd.DataFrame]


SCENARIOS = (
    Scenario("mean +0.25 sd", "gauss_3", _mean_shift(0.25)),
    Scenario("mean +0.5 sd", "gauss_3", _mean_shift(0.5)),
    Scenario("mean +1.0 sd", "gauss_3", _mean_shift(1.0)),
    Scenario("category share halved", "channel", _category_halved),
    Scenario("missing rate +5 points", "missing_0", _missing_rise),
)


def reference() -> pd.DataFrame:
    return generate(REFERENCE_ROWS, np.random.default_rng(0))


def clean_window(size: int, run: int) -> pd.DataFrame:
    return generate(size, np.random.default_rng((1, size, run)))


def stream(scenario: int, run: int) -> pd.DataFrame:
    """``WINDOW`` clean rows, then ``HORIZON`` changed ones."""
    rng = np.random.default_rng((2, scenario, run))
    before = generate(WINDOW, rng)
    after = SCENARIOS[scenario].change(generate(HORIZON, rng), rng)
    return pd.concat([before, after], ignore_index=True)


def checks() -> range:
    """Rows after the change at each check (the window is the stream's last ``WINDOW`` rows then)."""
    return range(STEP, HORIZON + 1, STEP)
