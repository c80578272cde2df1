"""Champion against challenger: agreement and distance of paired predictions, each arm's traffic and
quality, and a test saying whether the difference in quality is real."""

from __future__ import annotations

import time

import numpy as np
import orjson
import pytest
from starlette.testclient import TestClient

from monitoring.compare import Predicted, pair, pairs_summary, quality_test
from registry.aliases import RoutingPolicy
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings


def test_paired_predictions_agree_on_labels_and_differ_by_their_probabilities():
    champion = Predicted(
        1.0, 2, orjson.dumps({"label": ["a", "b"], "probabilities": [[0.9, 0.1], [0.2, 0.8]]})
    )
    challenger = Predicted(
        2.0, 2, orjson.dumps({"label": ["a", "a"], "probabilities": [[0.7, 0.3], [0.6, 0.4]]})
    )
    paired = pair(champion, challenger)
    assert paired is not None and paired.agreed == 1 and paired.ts == 2.0
    assert paired.abs_diff == pytest.approx(0.2 + 0.4) and paired.swaps == (("b", "a", 1),)
    # where they disagree, over requests: the commonest pairs of labels first
    other = pair(
        champion, Predicted(2.0, 2, orjson.dumps({"label": ["b", "a"], "probabilities": [[0, 1]] * 2}))
    )
    assert other is not None and sorted(other.swaps) == [("a", "b", 1), ("b", "a", 1)]
    summary = pairs_summary([paired, paired, other])
    assert summary["agreement"] == pytest.approx(2 / 6)
    assert summary["disagreements"] == [{"champion": "b", "other": "a", "rows": 3},
                                        {"champion": "a", "other": "b", "rows": 1}]  # fmt: skip
    values = pair(
        Predicted(1.0, 2, orjson.dumps({"value": [1.0, 5.0]})),
        Predicted(1.0, 2, orjson.dumps({"value": [2.0, 2.0]})),
    )
    assert values is not None and values.agreed is None and values.abs_diff == pytest.approx(4.0)
    assert (
        pair(champion, Predicted(1.0, 1, orjson.dumps({"label": ["a"], "probabilities": [[1, 0]]}))) is None
    )


def test_mcnemar_counts_only_the_rows_one_arm_got_right():
    rng = np.random.default_rng(0)
    both = rng.random(400) < 0.8
    champion = both.copy()
    challenger = both.copy()
    challenger[np.flatnonzero(~both)[:40]] = True  # rows only the challenger gets right
    better = quality_test(champion, challenger, paired=True, alpha=0.05)
    assert (better["test"], better["better"], better["significant"]) == ("mcnemar-exact", "challenger", True)
    same = quality_test(champion, champion.copy(), paired=True, alpha=0.05)
    assert (same["p_value"], same["significant"], same["better"]) == (1.0, False, None)


def test_unpaired_arms_use_fisher_for_accuracy_and_mann_whitney_for_errors():
    good, poor = np.array([True] * 95 + [False] * 5), np.array([True] * 70 + [False] * 30)
    tested = quality_test(good, poor, paired=False, alpha=0.05)
    assert (tested["test"], tested["better"], tested["champion"]) == ("fisher-exact", "champion", 0.95)
    small, large = np.linspace(0, 1, 200), np.linspace(0.5, 1.5, 200)
    errors = quality_test(large, small, paired=False, alpha=0.05)
    assert (errors["metric"], errors["test"], errors["better"]) == ("mae", "mann-whitney-u", "challenger")
    paired = quality_test(large, small, paired=True, alpha=0.05)
    assert (paired["test"], paired["better"]) == ("wilcoxon", "challenger")


def compared(client, timeout=30.0, **wanted):
    """The comparison once the monitor's report has the wanted sample sizes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get("/monitoring/compare", params={"model": "cancer"}).json()
        quality = body.get("quality") or {}
        if all(quality.get("samples", {}).get(arm) == n for arm, n in wanted.items()):
            return body
        time.sleep(0.05)
    raise AssertionError(f"no comparison with {wanted}: {body}")


def traffic_with_truth(client, rows=40, mirrored=False):
    """Held-out rows, one a request, each with its ground truth (after the monitor saw the shadow
    predictions, when ``mirrored``: feedback pairs with the ones in the log)."""
    _, x_test, _, y_test = breast_cancer()
    answers = [
        client.post("/predict", json={"inputs": x_test.iloc[i : i + 1].to_dict(orient="records")}).json()
        for i in range(rows)
    ]
    deadline = time.monotonic() + 15
    while mirrored and time.monotonic() < deadline:
        if client.get("/monitoring/compare").json().get("arms", {}).get("shadow", {}).get("requests") == rows:
            break
        time.sleep(0.05)
    truth = [{"request_id": a["request_id"], "ground_truth": [y_test.iloc[i]]} for i, a in enumerate(answers)]
    assert client.post("/feedback", json={"feedback": truth}).status_code == 200
    return answers


def settings(registry):
    # no shadow budget or rate cap: every request is mirrored, so the counts below are exact
    return Settings(
        registry=registry.root,
        poll_interval=3600,
        monitor_interval=0.05,
        shadow_budget=1.0,
        shadow_max_rate=0,
    )


def test_shadow_mode_compares_the_arms_on_the_same_requests(cancer_registry, child_metrics):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="shadow"))
    with TestClient(create_app(settings(cancer_registry))) as client:
        assert client.get("/monitoring/compare").json()["status"] == "no_challenger_traffic"
        traffic_with_truth(client, mirrored=True)
        body = compared(client, champion=40, challenger=40)
        exported = child_metrics()
    for gauge in ("agreement", "mean_abs_diff", "p_value", "quality", "e_value"):
        gauge = f"compare_{gauge}"
        assert f"modelgate_{gauge}{{" in exported
    shadow_requests = [line for line in exported.splitlines() if line.startswith("modelgate_requests_total")
                       and 'arm="shadow"' in line]  # fmt: skip
    assert shadow_requests and float(shadow_requests[0].rsplit(" ", 1)[1]) == 40
    assert set(body["arms"]) == {"champion", "shadow"} and body["arms"]["shadow"]["requests"] == 40
    assert body["arms"]["shadow"]["error_rate"] == 0.0 and body["arms"]["shadow"]["latency_p99_ms"] > 0
    assert body["shadow"]["requests"] == 40 and 0.8 <= body["shadow"]["agreement"] <= 1.0
    assert 0.0 <= body["shadow"]["mean_abs_diff"] < 0.5
    disagreeing = sum(d["rows"] for d in body["shadow"]["disagreements"])
    assert disagreeing == round((1 - body["shadow"]["agreement"]) * body["shadow"]["rows"])
    assert body["quality"]["paired"] and body["quality"]["test"] == "mcnemar-exact"
    assert body["quality"]["metric"] == "accuracy" and 0.8 <= body["quality"]["champion"] <= 1.0
    evidence = body["evidence"]  # what the gate decides on: every labelled row both arms predicted
    assert (evidence["champion_version"], evidence["challenger_version"], evidence["paired"]) == (1, 2, True)
    assert evidence["samples"] == {"champion": 40, "challenger": 40} and evidence["threshold"] == 40.0
    assert body["quality"]["better"] == evidence["better"]
    assert "ever named with a chance of at most 0.025" in evidence["guarantee"]


def test_an_ab_split_compares_each_arm_on_its_own_requests(cancer_registry):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=0.5))
    with TestClient(create_app(settings(cancer_registry))) as client:
        answers = traffic_with_truth(client)
        arms = [a["arm"] for a in answers]
        body = compared(client, champion=arms.count("champion"), challenger=arms.count("challenger"))
    assert set(body["arms"]) == {"champion", "challenger"} and body["shadow"] is None
    assert body["arms"]["challenger"]["requests"] == arms.count("challenger")
    assert not body["quality"]["paired"] and body["quality"]["test"] == "fisher-exact"
    matched = min(arms.count("champion"), arms.count("challenger"))  # rows matched across the arms
    assert not body["evidence"]["paired"] and body["evidence"]["samples"]["challenger"] == matched
