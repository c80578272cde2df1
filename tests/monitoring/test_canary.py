"""Canary: a healthy challenger's weight steps up on its schedule; one that breaks a limit is set
to weight 0 at once, audited, and an alert reaches on-call."""

from __future__ import annotations

import time

import numpy as np
import pytest
from starlette.testclient import TestClient

from monitoring.compare import CanaryContest
from monitoring.controller import judge
from monitoring.records import LoggedRequest
from registry.aliases import RoutingPolicy
from service.app import create_app
from service.settings import Settings

POLICY = RoutingPolicy(mode="canary", challenger_weight=0.1, canary_step=0.1, canary_interval_seconds=60,
                       canary_max_weight=0.3, canary_min_requests=20)  # fmt: skip


def record(seq, arm, failed=False, latency_ms=10.0, violations=0):
    return LoggedRequest(
        seq=seq, request_id=str(seq), arm=arm, ts=float(seq), route="predict", model="m",
        version=2 if arm == "challenger" else 1, status=500 if failed else 200, latency_ms=latency_ms,
        rows=1, inputs=None, outputs=None, flags={"value_finite": violations} if violations else {},
        error=None,
    )  # fmt: skip


def canary(requests=200, error_rate=0.0, champion_error_rate=0.0, violation_rate=0.0, slowdown=1.0, seed=0):
    """A canary's checks after ``requests`` requests of each arm, alternating; latencies log-normal."""
    rng = np.random.default_rng(seed)
    contest = CanaryContest(challenger_version=2, since=0.0)
    for i in range(requests):
        contest.add(record(2 * i, "champion", rng.random() < champion_error_rate, rng.lognormal(2.3, 0.3)))
        failed, violations = rng.random() < error_rate, int(rng.random() < violation_rate)
        contest.add(record(2 * i + 1, "challenger", failed, slowdown * rng.lognormal(2.3, 0.3), violations))
    return contest


@pytest.mark.parametrize(
    ("contest", "since", "weight", "reason"),
    [
        (canary(), 0, 0.2, "canary healthy over 200 requests: 0.1 -> 0.2"),
        (canary(), 30, None, None),  # healthy, but the interval has not passed
        (canary(requests=19, error_rate=1.0), 0, None, None),  # too little to judge
        (canary(error_rate=0.3), 30, 0.0, "canary stepped down: error rate"),
        (canary(error_rate=0.04, champion_error_rate=0.0, requests=2000), 30, 0.0,
         "canary stepped down: errors over 1x the champion's: the canary alone failed in"),
        (canary(violation_rate=0.5), 30, 0.0, "canary stepped down: plausibility violations 0."),
        (canary(slowdown=2.0), 30, 0.0, "canary stepped down: latency over 1.5x the champion's in"),
        (canary(slowdown=1.2), 0, 0.2, "canary healthy"),  # slower, within the ratio
        (canary(error_rate=0.06, requests=100), 0, 0.2, "canary healthy"),  # above 5%, not conclusively
    ],
)  # fmt: skip
def test_the_canary_steps_up_when_healthy_and_down_once_the_evidence_of_a_broken_limit_is_conclusive(
    contest, since, weight, reason
):
    decision = judge(POLICY, contest, since=since, now=60)
    assert (decision.weight if decision else None) == weight
    assert decision is None or decision.reason.startswith(reason)


def test_the_canary_stops_at_its_maximum_weight_and_ignores_other_modes():
    at_max = POLICY.model_copy(update={"challenger_weight": 0.3})
    assert judge(at_max, canary(), since=0, now=600) is None
    assert judge(POLICY.model_copy(update={"mode": "ab"}), canary(error_rate=1.0), 0, 600) is None


def test_a_canary_contest_goes_on_from_its_saved_counts():
    contest = canary(error_rate=0.1, violation_rate=0.1, slowdown=1.3)
    checks = contest.checks(0.05, 1.0, 0.05, 1.5)
    resumed = CanaryContest.resumed(contest.evidence(checks, 400.0))
    assert resumed.checks(0.05, 1.0, 0.05, 1.5) == checks and resumed.position == contest.position


def test_a_canary_contest_saved_before_positions_had_a_transaction_goes_on_after_its_seq():
    contest = canary(error_rate=0.1)
    saved = contest.evidence(contest.checks(0.05, 1.0, 0.05, 1.5), 400.0)
    del saved["position"]
    resumed = CanaryContest.resumed({**saved, "seq": 812})
    assert resumed.position == {0: (0, 812)} and resumed.requests == contest.requests


def test_a_canary_contest_saved_before_the_log_had_partitions_goes_on_after_its_position():
    contest = canary(error_rate=0.1)
    saved = contest.evidence(contest.checks(0.05, 1.0, 0.05, 1.5), 400.0)
    resumed = CanaryContest.resumed({**saved, "position": [7, 812]})  # type: ignore[typeddict-item]
    assert resumed.position == {0: (7, 812)} and resumed.requests == contest.requests


def settings(registry, rules):
    return Settings(registry=registry.root, poll_interval=0.1, monitor_interval=0.05, alert_rules=str(rules))


def send_until(client, done, rows, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        for _ in range(10):
            assert client.post("/predict", json={"inputs": rows}).status_code == 200
    assert done(), "the canary never got there"


def test_a_healthy_canary_is_stepped_up_to_its_maximum(cancer_registry, cancer_model, tmp_path):
    rules = tmp_path / "rules.yml"
    rules.write_text("rules: []\n")
    # latency is judged in its own test: here the two arms differ by model and the machine is shared
    quick = POLICY.model_copy(
        update={"canary_interval_seconds": 0.3, "canary_min_requests": 5, "canary_max_latency_ratio": 100}
    )
    cancer_registry.set_routing("cancer", quick, actor="tests")
    rows = cancer_model.frame.iloc[:1].to_dict(orient="records")
    with TestClient(create_app(settings(cancer_registry, rules))) as client:
        send_until(client, lambda: cancer_registry.aliases("cancer").routing.challenger_weight == 0.3, rows)
    steps = [(e.actor, e.routing.challenger_weight) for e in cancer_registry.history("cancer") if e.routing]
    assert steps == [("tests", 0.1), ("modelgate-canary", 0.2), ("modelgate-canary", 0.3)]


def test_a_broken_canary_is_stepped_down_and_on_call_is_told(registry, centred_model, receivers, tmp_path):
    healthy, reference = centred_model(False)
    broken, _ = centred_model(True)  # infinite at 0.5: every row a value_finite violation
    for model in (healthy, broken):
        registry.push(model, "centred", reference, actor="tests")
    registry.promote("centred", 1, "champion", actor="tests")
    registry.promote("centred", 2, "challenger", actor="tests")
    registry.set_routing(
        "centred", POLICY.model_copy(update={"challenger_weight": 0.5, "canary_min_requests": 5})
    )
    receiver = receivers()
    rules = tmp_path / "rules.yml"
    rules.write_text("rules:\n  - {name: CanaryRolledBack, kind: canary, for: 0s, severity: critical}\n"
                     f"webhooks: ['{receiver.start()}']\n")  # fmt: skip
    with TestClient(create_app(settings(registry, rules))) as client:
        send_until(client, lambda: registry.aliases("centred").routing.challenger_weight == 0.0, [{"x": 0.5}])
        deadline = time.monotonic() + 15
        while len(receiver.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        firing = client.get("/monitoring/alerts").json()["firing"]
        time.sleep(0.5)  # the gateway's poll picks the new weight up: only the champion answers now
        assert {client.post("/predict", json={"inputs": [{"x": 0.5}]}).json()["arm"] for _ in range(20)} == {
            "champion"
        }
    last = registry.history("centred")[-1]
    assert (last.actor, last.routing.challenger_weight) == ("modelgate-canary", 0.0)
    assert "plausibility violations" in last.reason
    assert [a["labels"]["alertname"] for a in firing] == ["CanaryRolledBack"]
    told = {body["commonLabels"]["alertname"]: body for body in receiver.bodies}
    assert set(told) == {"CanaryRolledBack", "CanaryWeightChanged"}  # the alert, and the action itself
    assert told["CanaryRolledBack"]["status"] == "firing" and told["CanaryRolledBack"]["version"] == "4"
    assert "plausibility violations" in told["CanaryWeightChanged"]["alerts"][0]["annotations"]["description"]
