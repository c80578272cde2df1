"""Decisions the monitor takes on every pass, over simulated days: the promotion gate and the canary.

Seeded simulations through the monitor's own code (``monitoring.sequential``,
``monitoring.compare.QualityContest`` and ``CanaryContest``,
``monitoring.controller.gate`` and ``judge``), side by side with the rules
they replace (a window's test read at every pass, reproduced here as
``window_gate`` and ``window_canary``). A pass every 2 s, as the monitor's
default.

**Gate.** Labelled rows arrive as a Poisson stream (1 or 20 a second).
Shadow: each row is predicted by both arms (a classifier's two arms
disagree on 10% of rows, a regressor's errors correlate 0.9). A/B: each row
goes to one arm at 50/50 with independent outcomes; the arms' rows are
matched in arrival order as ``monitoring.sequential.Matcher`` matches them
(its 1,000-row limit left out: it only drops rows). The gate is evaluated
at every pass: the counts at each pass are those ``QualityContest`` would
hold, and the first pass the e-value and ``auto_promote_min_samples`` allow
is confirmed by calling ``gate`` on that pass's evidence (and the pass before
it, which must refuse). Cases: as good, worse (a classifier one point, a
regressor's absolute error 2% larger) and better (two points; 10% smaller),
champion accuracy 0.90.

**Canary.** 2 requests a second; the canary starts at weight 0.1 and steps
+0.1 every 5 minutes up to 0.5 while ``judge`` finds it healthy. Champion
error rate 1%, violations 1% of rows, latency log-normal (median 10 ms,
sigma 0.5); a healthy canary the same, a broken one with twice the error
rate. Each record goes through ``CanaryContest.add``, and ``judge`` runs at
every pass.

    .venv/bin/python load_tests/sequential_decisions.py --runs 100 --out load_tests/results/sequential.md
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitoring.compare import CanaryContest, QualityContest, quality_test
from monitoring.controller import gate, judge
from monitoring.records import LoggedRequest
from monitoring.report import Comparison, TrafficSummary
from monitoring.sequential import log_e_value, won
from registry.aliases import RoutingPolicy

PASS_SECONDS = 2.0
ALPHA = 0.05  # MODELGATE_COMPARE_ALPHA's default
MIN_SAMPLES = 200  # auto_promote_min_samples' default
WINDOW_ROWS, WINDOW_SECONDS = 1000, 3600.0  # the monitor's window defaults
ACCURACY = 0.90
DISAGREE = 0.10  # shadow classifiers: rows only one arm gets right
CORRELATION = 0.9  # shadow regressors: their errors' correlation
CASES = {"as good": (0.0, 1.0), "worse": (-0.01, 1.02), "better": (0.02, 0.9)}  # accuracy shift, error scale
GATED = RoutingPolicy(mode="shadow", auto_promote=True)
HEALTHY_ARM: TrafficSummary = {"requests": 1000, "violation_rate": 0.0, "error_rate": 0.0,
                               "latency_p50_ms": 5.0, "latency_p99_ms": 10.0}  # fmt: skip


@dataclass(frozen=True)
class Stream:
    """Labelled rows that reached both arms, in order: when each became a contest, each arm's outcome."""

    ts: np.ndarray
    champion: np.ndarray
    challenger: np.ndarray


def labelled(
    kind: str, mode: str, case: str, rate: float, seconds: float, rng: np.random.Generator
) -> Stream:
    shift, scale = CASES[case]
    ts = np.cumsum(rng.exponential(1 / rate, int(rate * seconds * 1.01) + 100))
    ts = ts[ts < seconds]  # a Poisson stream
    n = ts.size
    if mode == "shadow":
        if kind == "classifier":  # champion-only right a, challenger-only right b, b - a = shift
            a = (DISAGREE - shift) / 2
            draw = rng.random(n)
            only_champion, only_challenger = draw < a, (draw >= a) & (draw < DISAGREE)
            both_right = (draw >= DISAGREE) & (draw < DISAGREE + ACCURACY - a)  # the rest: both wrong
            champion = only_champion | both_right
            challenger = only_challenger | both_right
            return Stream(ts, champion, challenger)
        z = rng.standard_normal((2, n))
        shared = CORRELATION * z[0] + np.sqrt(1 - CORRELATION**2) * z[1]
        return Stream(ts, np.abs(z[0]), np.abs(scale * shared))
    arm = rng.random(n) < 0.5  # True: the challenger answered
    pairs = min(int(arm.sum()), int((~arm).sum()))
    when = np.maximum(ts[~arm][:pairs], ts[arm][:pairs])  # the k-th of each arm meet at the later one
    if kind == "classifier":
        return Stream(when, rng.random(pairs) < ACCURACY, rng.random(pairs) < ACCURACY + shift)
    return Stream(when, np.abs(rng.standard_normal(pairs)), np.abs(scale * rng.standard_normal(pairs)))


def comparison_at(stream: Stream, upto: int, mode: str) -> Comparison:
    """The comparison a monitor would report after the first ``upto`` contests."""
    contest = QualityContest(1, 2, mode == "shadow", 0.0)
    contest.add(stream.champion[:upto], stream.challenger[:upto], float(stream.ts[upto - 1]) if upto else 0.0)
    arms = {"champion": HEALTHY_ARM, "shadow" if mode == "shadow" else "challenger": HEALTHY_ARM}
    return {"arms": arms, "shadow": None, "quality": None, "evidence": contest.evidence(ALPHA, 0)}


def sequential_gate(stream: Stream, mode: str, seconds: float) -> float | None:
    """When the gate promotes the challenger (seconds), or None within ``seconds``."""
    policy = GATED.model_copy(update={"mode": mode})
    by_challenger, by_champion = won(stream.champion, stream.challenger)
    passes = int(seconds / PASS_SECONDS) + 1
    index = (stream.ts // PASS_SECONDS).astype(np.int64) + 1  # the pass that first sees each contest
    counted = np.cumsum(np.bincount(index, minlength=passes + 1)[:passes])
    wins = np.cumsum(np.bincount(index, by_challenger, minlength=passes + 1)[:passes])
    losses = np.cumsum(np.bincount(index, by_champion, minlength=passes + 1)[:passes])
    ready = (log_e_value(wins, losses) >= np.log(2 / ALPHA)) & (counted >= policy.auto_promote_min_samples)
    if not ready.any():
        return None
    first = int(ready.argmax())
    upto = int(counted[first])
    assert gate(policy, comparison_at(stream, upto, mode), 1, 2) is not None
    assert gate(policy, comparison_at(stream, int(counted[first - 1]), mode), 1, 2) is None
    return first * PASS_SECONDS


def window_gate(stream: Stream, mode: str, seconds: float) -> float | None:
    """The rule before: at every pass, the quality test over the window (the last 1,000 rows of each arm,
    none older than an hour), promoting once it is significant for the challenger with 200 rows an arm."""
    ends = np.searchsorted(stream.ts, np.arange(1, int(seconds / PASS_SECONDS) + 1) * PASS_SECONDS)
    last = -1
    for i, end in enumerate(ends):
        if end == last or end < MIN_SAMPLES:
            continue
        last = end
        start = max(
            end - WINDOW_ROWS, int(np.searchsorted(stream.ts, (i + 1) * PASS_SECONDS - WINDOW_SECONDS))
        )
        if end - start < MIN_SAMPLES:
            continue
        tested = quality_test(
            stream.champion[start:end], stream.challenger[start:end], mode == "shadow", ALPHA
        )
        if tested["better"] == "challenger":
            return (i + 1) * PASS_SECONDS
    return None


def gate_run(args: tuple[str, str, str, float, float, int, bool]) -> float | None:
    kind, mode, case, rate, seconds, seed, window = args
    stream = labelled(kind, mode, case, rate, seconds, np.random.default_rng(seed))
    return (window_gate if window else sequential_gate)(stream, mode, seconds)


CANARY = RoutingPolicy(mode="canary", challenger_weight=0.1)
REQUESTS_A_SECOND = 2.0
ERROR_RATE, VIOLATION_RATE = 0.01, 0.01
ARMS = ("champion", "challenger")


def window_canary(policy: RoutingPolicy, canary: deque[tuple[bool, float, bool]],
                  champion: deque[tuple[bool, float, bool]]) -> bool:  # fmt: skip
    """The rule before: over the requests since the weight last changed (within the window: the last
    1,000 of each arm), an error rate, a violation rate or a p99 latency ratio past its limit, read at
    every pass once the canary had 50 requests."""
    if len(canary) < policy.canary_min_requests:
        return False
    failed = np.array([c[0] for c in canary])
    violating = np.array([c[2] for c in canary])
    p99 = np.percentile([c[1] for c in canary], 99)
    base = np.percentile([c[1] for c in champion], 99) if champion else None
    return bool(
        failed.mean() > policy.canary_max_error_rate
        or violating.sum() / max((~failed).sum(), 1) > policy.canary_max_violation_rate
        or (base is not None and p99 > policy.canary_max_latency_ratio * base)
    )


def canary_run(args: tuple[float, float, int, bool]) -> float | None:
    """When the canary is stepped down (seconds), or None within ``seconds``."""
    error_rate, seconds, seed, window = args
    rng = np.random.default_rng(seed)
    policy, since, seq = CANARY, 0.0, 0
    contest = CanaryContest(2, 0.0)
    recent: dict[str, deque[tuple[bool, float, bool]]] = {arm: deque(maxlen=WINDOW_ROWS) for arm in ARMS}
    for step in range(1, int(seconds / PASS_SECONDS) + 1):
        now = step * PASS_SECONDS
        for _ in range(rng.poisson(REQUESTS_A_SECOND * PASS_SECONDS)):
            arm = "challenger" if rng.random() < policy.challenger_weight else "champion"
            failed = bool(rng.random() < (error_rate if arm == "challenger" else ERROR_RATE))
            violation = bool(not failed and rng.random() < VIOLATION_RATE)
            latency = float(rng.lognormal(np.log(10.0), 0.5))
            seq += 1
            if window:
                recent[arm].append((failed, latency, violation))
                continue
            contest.add(LoggedRequest(
                seq=seq, request_id="", arm=arm, ts=now, route="predict", model="m", version=1,
                status=500 if failed else 200, latency_ms=latency, rows=1, inputs=None, outputs=None,
                flags={"value_finite": 1} if violation else {}, error=None,
            ))  # fmt: skip
        if window:
            if window_canary(policy, recent["challenger"], recent["champion"]):
                return now
            if (
                policy.challenger_weight < policy.canary_max_weight
                and now - since >= policy.canary_interval_seconds
            ):
                stepped = round(policy.challenger_weight + policy.canary_step, 6)
                policy = policy.model_copy(update={"challenger_weight": stepped})
                since, recent = now, {arm: deque(maxlen=WINDOW_ROWS) for arm in ARMS}
            continue
        decision = judge(policy, contest, since, now)
        if decision is not None and decision.weight == 0.0:
            return now
        if decision is not None:
            policy, since = policy.model_copy(update={"challenger_weight": decision.weight}), now
    return None


def summary(times: list[float | None], seconds: float) -> tuple[str, str]:
    """The share of runs decided within ``seconds``, and the median and 95th percentile time taken."""
    done = np.array([t for t in times if t is not None])
    share = f"{done.size / len(times):.1%} ({done.size}/{len(times)})"
    if not done.size:
        return share, "-"
    return share, f"{_duration(float(np.median(done)))} / {_duration(float(np.quantile(done, 0.95)))}"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def run_all(pool: multiprocessing.pool.Pool, runs: int, window_runs: int, days: float, window_days: float,
            out: Callable[[str], None]) -> None:  # fmt: skip
    week, day = days * 86400, window_days * 86400
    out(f"## Promotion gate ({runs} seeded runs a case; the window rule: {window_runs}, "
        f"over {window_days:g} day)\n")  # fmt: skip
    out("| challenger | mode | labelled rows/s | e-value gate: promoted within "
        f"{days:g} days | median / p95 time | window rule: promoted within {window_days:g} day "
        "| median / p95 time |")  # fmt: skip
    out("| --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("classifier", "regressor"):
        for case in CASES:
            for mode in ("shadow", "ab"):
                for rate in (1.0, 20.0):
                    seeds = range(runs)
                    new = pool.map(gate_run, [(kind, mode, case, rate, week, s, False) for s in seeds])
                    old = pool.map(
                        gate_run, [(kind, mode, case, rate, day, s, True) for s in range(window_runs)]
                    )
                    out(f"| {kind}, {case} | {mode} | {rate:g} | {' | '.join(summary(new, week))} | "
                        f"{' | '.join(summary(old, day))} |")  # fmt: skip
    out(f"\n## Canary ({runs} seeded runs a case, the window rule {window_runs}; {window_days:g} day each)\n")
    out("| canary | e-value checks: stepped down | median / p95 time | window rule: stepped down | "
        "median / p95 time |")  # fmt: skip
    out("| --- | --- | --- | --- | --- |")
    for name, rate in (("healthy (1% errors, as the champion)", ERROR_RATE), ("twice the errors (2%)", 0.02)):
        new = pool.map(canary_run, [(rate, day, s, False) for s in range(runs)])
        old = pool.map(canary_run, [(rate, day, s, True) for s in range(window_runs)])
        out(f"| {name} | {' | '.join(summary(new, day))} | {' | '.join(summary(old, day))} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--window-runs", type=int, default=30, help="runs of the rules before (slower)")
    parser.add_argument("--days", type=float, default=7.0, help="simulated days a gate run lasts (7)")
    parser.add_argument(
        "--window-days", type=float, default=1.0, help="the window rule's and the canary's (1)"
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines: list[str] = []

    def out(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    out("# Decisions taken at every monitor pass, over simulated days (load_tests/sequential_decisions.py)\n")
    out("Seeded runs through the monitor's own contest, e-value, gate and canary code (the module's "
        "docstring says how each is simulated), beside the rules they replaced.\n")  # fmt: skip
    started = time.monotonic()
    with multiprocessing.Pool() as pool:
        run_all(pool, args.runs, args.window_runs, args.days, args.window_days, out)
    out(f"\n{time.monotonic() - started:.0f} s on {multiprocessing.cpu_count()} cores")
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
