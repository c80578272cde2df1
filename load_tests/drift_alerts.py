"""Drift alerts over time: how often clean traffic raises one, and how soon a real shift does.

Seeded simulations through the monitor's own window and drift code (``monitoring.windows.Window``: the
last hour, sampled to 1,000 rows spread evenly over it; ``monitoring.drift.drift_of`` and ``decide``,
tested at every 2-s pass, as ``monitoring.monitor`` does), for a model of 30 Gaussian features, at the
window's level (``MODELGATE_DRIFT_ALPHA``, 0.1%: what a window is called drifted at) and at the alert
level (``monitoring.windows.alert_alpha``: 7.7e-7 for a false alert at most once in 30 days at 2-s
passes). Alert rules with ``for: 0s``: the worst case (a longer ``for`` only removes alerts).

- Fresh windows: a window of a clean stream is a sample of it, whichever rows it keeps (the choice
  never reads their values), so each pass's chance of a false flag is a fresh clean window's; the share
  flagged, times the passes of 30 days, bounds the expected false alerts (the union bound).
- 10 requests/s: 20 new rows a pass into the window; clean passes are counted over simulated hours, and
  flagged ones grouped into alerts (a run of consecutive flagged passes).
- Delay: after a clean full span, one feature shifts by 0.5 sd; the time to its first flagged pass, at
  10 and 1,000 requests/s (the same, as the window holds the same hour at both).

    .venv/bin/python load_tests/drift_alerts.py --out load_tests/results/drift-alerts.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitoring.baseline import Reference, reference
from monitoring.drift import ALPHA, decide, drift_of
from monitoring.windows import Window, WindowSettings, alert_alpha
from registry.profile import numeric_profile, sample_index

FEATURES = 30
WINDOW = 1000
PASS_SECONDS = 2.0
DAYS = 30.0
ALERT_ALPHA = alert_alpha(ALPHA, PASS_SECONDS, DAYS)
SHIFT = 0.5


@dataclass(frozen=True, slots=True)
class Row:
    """One single-row request as the window holds it."""

    ts: float
    values: np.ndarray
    rows: int = 1


def passed(
    window: Window[Row], rng: np.random.Generator, rate: float, now: float, shift: float = 0.0
) -> None:
    """One pass's requests (``rate`` a second, evenly spread) into the window, tested at ``now``."""
    count = int(rate * PASS_SECONDS)
    values = rng.normal(size=(count, FEATURES))
    values[:, 0] += shift
    for i in range(count):
        window.add(Row(now - PASS_SECONDS + (i + 1) * PASS_SECONDS / count, values[i]))
    window.trim(now)


def held(window: Window[Row]) -> np.ndarray:
    return np.array([row.values for row in window.requests])


def references() -> list[Reference]:
    rng = np.random.default_rng(0)
    return [
        reference(numeric_profile(rng.normal(size=10_000), sample_index(10_000))) for _ in range(FEATURES)
    ]


def smallest_p(refs: list[Reference], window: np.ndarray) -> tuple[float, float]:
    """The window's smallest adjusted p-value among drifted-sized changes, and feature 0's."""
    statistics = []
    for i, ref in enumerate(refs):
        statistics += drift_of(f"x{i}", "feature", ref, window[:, i])
    decided = decide(statistics, alpha=1.0)  # every adjusted p-value, with the effect gate
    sized = [s["p_adjusted"] for s in decided if s["effect"] >= 0.02]
    return min(sized, default=1.0), next((s["p_adjusted"] for s in decided if s["name"] == "x0"), 1.0)


def independent(args: tuple[int, int]) -> list[float]:
    """The smallest adjusted p-value of each of ``count`` fresh clean windows."""
    seed, count = args
    rng, refs = np.random.default_rng(seed), references()
    return [smallest_p(refs, rng.normal(size=(WINDOW, FEATURES)))[0] for _ in range(count)]


def overlapping(args: tuple[int, float, float]) -> list[float]:
    """10 requests/s: the smallest adjusted p-value at every pass of ``hours`` of clean traffic, after a
    clean span."""
    seed, hours, span = args
    rng, refs = np.random.default_rng(seed), references()
    window: Window[Row] = Window(WindowSettings(max_rows=WINDOW, max_age_seconds=span))
    now = 0.0
    found = []
    for _ in range(int((span + hours * 3600) / PASS_SECONDS)):
        now += PASS_SECONDS
        passed(window, rng, 10, now)
        if now > span:
            found.append(smallest_p(refs, held(window))[0])
    return found


def delay(args: tuple[int, float, float]) -> tuple[float, float]:
    """Seconds from a 0.5 sd shift of one feature to its first pass flagged at each level."""
    seed, rate, span = args
    rng, refs = np.random.default_rng(seed), references()
    window: Window[Row] = Window(WindowSettings(max_rows=WINDOW, max_age_seconds=span))
    now = 0.0
    while now < span:
        now += PASS_SECONDS
        passed(window, rng, rate, now)
    first: dict[float, float] = {}
    shifted = now
    while len(first) < 2:
        now += PASS_SECONDS
        passed(window, rng, rate, now, SHIFT)
        p = smallest_p(refs, held(window))[1]
        for level in (ALPHA, ALERT_ALPHA):
            if p < level and level not in first:
                first[level] = now - shifted
    return first[ALPHA], first[ALERT_ALPHA]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--windows", type=int, default=2000, help="fresh clean windows")
    parser.add_argument("--hours", type=float, default=1.0, help="clean hours at 10 req/s, per core")
    parser.add_argument("--runs", type=int, default=20, help="shifts a traffic level, for the delay")
    parser.add_argument("--span", type=float, default=3600.0, help="the window's seconds")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    started = time.monotonic()
    cores = multiprocessing.cpu_count()
    with multiprocessing.Pool() as pool:
        fresh = np.concatenate(pool.map(independent, [(s, args.windows // cores) for s in range(cores)]))
        slow = pool.map(overlapping, [(100 + s, args.hours, args.span) for s in range(cores)])
        delays = {
            rate: np.array(pool.map(delay, [(200 + s, rate, args.span) for s in range(args.runs)]))
            for rate in (10, 1000)
        }
    passes_30_days = DAYS * 86_400 / PASS_SECONDS
    lines = [
        f"# Drift alerts over time ({FEATURES} Gaussian features, a window of {args.span:g} s sampled to "
        f"{WINDOW} rows, tested every {PASS_SECONDS:g} s)",
        "",
        f"Window level (alerts before): {ALPHA:g}. Alert level now: {ALERT_ALPHA:.3g} "
        f"(MODELGATE_DRIFT_FALSE_ALERT_DAYS={DAYS:g}). Alert rules with `for: 0s` (the worst case).",
        "",
        "## Clean traffic",
        "",
        "| traffic | passes simulated | flagged at the window level | false alerts in 30 days, window level "
        "| flagged at the alert level | false alerts in 30 days, alert level |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    old, new = float(np.mean(fresh < ALPHA)), float(np.mean(fresh < ALERT_ALPHA))
    bound = f"<= {passes_30_days * ALERT_ALPHA:.2g} (union bound; {passes_30_days * new:.3g} measured)"
    lines.append(f"| any (fresh clean windows) | {fresh.size} | {old:.3%} "
                 f"| {passes_30_days * old:,.0f} | {new:.3%} | {bound} |")  # fmt: skip
    flagged = {level: [np.asarray(run) < level for run in slow] for level in (ALPHA, ALERT_ALPHA)}
    simulated = sum(len(run) for run in slow)
    scale = passes_30_days / simulated

    def alerts(runs: list[np.ndarray]) -> int:  # a run of consecutive flagged passes is one alert
        return sum(int(np.sum(np.diff(np.concatenate([[0], run.astype(int)])) == 1)) for run in runs)

    lines.append(
        f"| 10 req/s (the window at each pass, {simulated * PASS_SECONDS / 3600:g} h) | {simulated} "
        f"| {np.mean(np.concatenate(flagged[ALPHA])):.3%} ({alerts(flagged[ALPHA])} alerts) "
        f"| {alerts(flagged[ALPHA]) * scale:.3g} | {np.mean(np.concatenate(flagged[ALERT_ALPHA])):.3%} "
        f"({alerts(flagged[ALERT_ALPHA])} alerts) | <= {passes_30_days * ALERT_ALPHA:.2g} (union bound) |"
    )
    lines += [
        "",
        f"## Delay to a {SHIFT:g} sd shift of one feature ({args.runs} seeded runs a traffic level)",
        "",
        "| traffic | window level: median / p95 | alert level: median / p95 | ratio of medians |",
        "| --- | --- | --- | --- |",
    ]
    for rate, found in delays.items():
        window_level, alert_level = found[:, 0], found[:, 1]
        lines.append(
            f"| {rate:,} req/s | {np.median(window_level):g} s / {np.quantile(window_level, 0.95):g} s "
            f"| {np.median(alert_level):g} s / {np.quantile(alert_level, 0.95):g} s "
            f"| {np.median(alert_level) / np.median(window_level):.2f} |"
        )
    lines.append(f"\n{time.monotonic() - started:.0f} s on {cores} cores")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
