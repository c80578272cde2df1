"""The decision benchmarks' parts, small: the gate's simulation agrees with ``gate`` at the pass it
promotes, a better challenger is promoted and an equal one not within an hour, a broken canary is
stepped down, and a drift shift is found within a 300-s window's span at 10 and at 1,000 requests/s,
the alert level after the window's."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the benchmarks are scripts, not a package

from load_tests import drift_alerts, sequential_decisions


def test_the_gate_simulation_promotes_a_better_challenger_and_not_an_equal_one_within_an_hour():
    run = sequential_decisions.gate_run  # it checks gate() at the pass it promotes and the one before
    better = run(("classifier", "shadow", "better", 20.0, 3600.0, 0, False))
    assert better is not None and better < 1800
    assert run(("classifier", "ab", "as good", 20.0, 3600.0, 0, False)) is None
    assert run(("regressor", "shadow", "better", 20.0, 3600.0, 1, False)) is not None


def test_the_canary_simulation_steps_a_broken_canary_down():
    assert sequential_decisions.canary_run((0.5, 600.0, 0, False)) is not None
    assert sequential_decisions.canary_run((0.5, 600.0, 0, True)) is not None  # the rule before, too


def test_a_shift_alerts_within_the_window_span_at_low_and_high_traffic():
    for rate in (10.0, 1000.0):
        window_level, alert_level = drift_alerts.delay((0, rate, 300.0))
        assert 0 < window_level <= alert_level < 300
