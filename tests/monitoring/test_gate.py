"""The promotion gate: off by default; on, it promotes a challenger that is significantly better and
no worse on errors, plausibility and latency, writes it to the audit history and tells on-call."""

from __future__ import annotations

import time

import numpy as np
from starlette.testclient import TestClient

from monitoring.controller import gate
from registry.aliases import RoutingPolicy
from service.app import create_app
from service.settings import Settings

GATED = RoutingPolicy(mode="shadow", auto_promote=True, auto_promote_min_samples=100)


def arm(error_rate=0.0, violation_rate=0.0, p99=10.0):
    return {
        "requests": 300,
        "error_rate": error_rate,
        "violation_rate": violation_rate,
        "latency_p99_ms": p99,
    }


def comparison(better="challenger", samples=300, versions=(1, 2), **challenger):
    evidence = {"champion_version": versions[0], "challenger_version": versions[1], "metric": "accuracy",
                "paired": True, "since": 0.0, "samples": {"champion": samples, "challenger": samples},
                "contests": {"champion": 10, "challenger": 40},
                "e_value": {"champion": 0.01, "challenger": 55.0},
                "threshold": 40.0, "alpha": 0.05, "better": better, "guarantee": "",
                "feedback_position": (0, 7)}  # fmt: skip
    return {"arms": {"champion": arm(), "shadow": arm(**challenger)}, "quality": None, "evidence": evidence}


def test_the_gate_promotes_only_a_challenger_the_evidence_names_better_and_no_worse_elsewhere():
    reason = gate(GATED, comparison(), 1, 2)
    assert reason is not None and "the challenger won 40 of the 50 labelled rows where the arms" in reason
    assert "e-value 55 >= 40" in reason
    off = GATED.model_copy(update={"auto_promote": False})
    assert gate(off, comparison(), 1, 2) is None  # off by default
    assert gate(GATED, comparison(better=None), 1, 2) is None  # the evidence is not conclusive
    assert gate(GATED, comparison(samples=99), 1, 2) is None  # too few labelled rows
    assert gate(GATED, comparison(versions=(1, 3)), 1, 2) is None  # evidence about another challenger
    assert gate(GATED, comparison(error_rate=0.02), 1, 2) is None
    assert gate(GATED, comparison(violation_rate=0.05), 1, 2) is None
    assert gate(GATED, comparison(p99=12.5), 1, 2) is None  # over 1.2x the champion's p99
    assert gate(GATED, comparison(error_rate=0.005, p99=11.9), 1, 2) is not None  # within the slack


def test_a_better_shadow_challenger_is_promoted_by_itself(registry, centred_model, receivers, tmp_path):
    wrong, reference = centred_model(True)  # 1 / (x - 0.5): far from the truth, x - 0.5
    right, _ = centred_model(False)
    for model in (wrong, right):
        registry.push(model, "centred", reference, actor="tests")
    registry.promote("centred", 1, "champion", actor="tests")
    registry.promote("centred", 2, "challenger", actor="tests")
    # over 40 rows a p99 is the slowest row, and the challenger's first (cold) prediction can take
    # ms: the latency rule is the unit test's above, this one is about the promotion itself
    relaxed = {"auto_promote_min_samples": 30, "auto_promote_max_latency_ratio": 1000.0}
    registry.set_routing("centred", GATED.model_copy(update=relaxed), actor="tests")
    receiver = receivers()
    rules = tmp_path / "rules.yml"
    rules.write_text(f"rules: []\nwebhooks: ['{receiver.start()}']\n")
    settings = Settings(
        registry=registry.root, poll_interval=0.1, monitor_interval=0.05, alert_rules=str(rules)
    )
    xs = [*np.linspace(0.0, 0.4, 20), *np.linspace(0.6, 1.0, 20)]
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json={"inputs": [{"x": x}]}).json() for x in xs]
        assert {a["version"] for a in answers} == {1}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # feedback pairs with shadow predictions the monitor has seen
            arms = client.get("/monitoring/compare", params={"model": "centred"}).json().get("arms", {})
            if arms.get("shadow", {}).get("requests") == len(xs):
                break
            time.sleep(0.1)
        truth = [
            {"request_id": a["request_id"], "ground_truth": [x - 0.5]}
            for a, x in zip(answers, xs, strict=True)
        ]
        assert client.post("/feedback", json={"feedback": truth}).status_code == 200
        deadline = time.monotonic() + 15
        while registry.aliases("centred").champion != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.1)
    promoted = registry.history("centred")[-1]
    assert (promoted.action, promoted.actor, promoted.to_version) == ("promote", "modelgate-gate", 2)
    assert "absolute error" in promoted.reason and "e-value" in promoted.reason
    (told,) = [b for b in receiver.bodies if b["commonLabels"]["alertname"] == "ModelPromoted"]
    assert told["version"] == "4" and told["commonLabels"]["model"] == "centred"


def test_the_gate_does_not_promote_a_challenger_its_offline_evaluation_refused(cancer_registry):
    """Both verdicts required: a challenger better online but refused offline stays challenger."""
    from monitoring.controller import RoutingController
    from monitoring.evaluation import evaluate

    cancer_registry.set_routing("cancer", GATED, actor="tests")
    worse = np.array([True] * 150 + [False] * 50)
    refused = evaluate(np.ones(200, dtype=bool), worse, {}, champion_version=1, candidate_version=2, data="x")
    controller = RoutingController(cancer_registry, traffic=None)  # type: ignore[arg-type]
    cancer_registry.record_evaluation("cancer", refused, actor="tests")
    controller.step({"cancer": {"comparison": comparison()}}, now=time.time())
    assert cancer_registry.aliases("cancer").champion == 1  # the online gate alone would have promoted v2
    passed = evaluate(worse, np.ones(200, dtype=bool), {}, champion_version=1, candidate_version=2, data="x")
    cancer_registry.record_evaluation("cancer", passed, actor="tests")  # evaluated again: it passes now
    controller.step({"cancer": {"comparison": comparison()}}, now=time.time())
    assert cancer_registry.aliases("cancer").champion == 2


def test_the_gate_can_promote_on_the_business_reward_of_an_ab_split(cancer_registry, cancer_model):
    """Rewards sent to /feedback (1 for each request the challenger answered, 0 for the champion's):
    the A/B arms' requests matched in arrival order, each pair a contest the challenger wins."""
    policy = RoutingPolicy(mode="ab", challenger_weight=0.5, auto_promote=True, auto_promote_on="reward",
                           auto_promote_min_samples=10, auto_promote_max_latency_ratio=1000.0)  # fmt: skip
    cancer_registry.set_routing("cancer", policy, actor="tests")
    settings = Settings(registry=cancer_registry.root, poll_interval=0.1, monitor_interval=0.05)
    rows = cancer_model.frame.iloc[:1].to_dict(orient="records")
    with TestClient(create_app(settings)) as client:
        answers = [client.post("/predict", json={"inputs": rows}).json() for _ in range(60)]
        rewards = [{"request_id": a["request_id"], "reward": int(a["arm"] == "challenger")} for a in answers]
        assert client.post("/feedback", json={"feedback": rewards}).status_code == 200
        deadline = time.monotonic() + 15
        while cancer_registry.aliases("cancer").champion != 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        compared = client.get("/monitoring/compare", params={"model": "cancer"}).json()
    promoted = cancer_registry.history("cancer")[-1]
    assert (promoted.action, promoted.actor, promoted.to_version) == ("promote", "modelgate-gate", 2)
    assert "on reward, the challenger won" in promoted.reason and "rewarded requests" in promoted.reason
    assert compared["reward"]["metric"] == "reward" and compared["reward"]["contests"]["champion"] == 0
