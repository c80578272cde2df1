"""A/B and canary splits: the observed share is the configured weight within binomial error, a
routing key always lands on the same arm, a pinned version bypasses the split, and a new policy in
the registry takes effect without a restart."""

from __future__ import annotations

import math

import pytest
from starlette.testclient import TestClient

from registry.aliases import RoutingPolicy
from service.app import create_app
from service.serving.routing import key_point, to_challenger
from service.settings import Settings


@pytest.fixture
def rows(cancer_model):
    return cancer_model.frame.iloc[:1].to_dict(orient="records")


def client_for(registry, monitoring=False):
    return TestClient(create_app(Settings(registry=registry.root, poll_interval=3600, monitoring=monitoring)))


def arms(client, rows, n, **extra):
    answers = [client.post("/predict", json={"inputs": rows, **extra}) for _ in range(n)]
    assert all(a.status_code == 200 for a in answers)
    return [a.json()["arm"] for a in answers]


def test_an_ab_split_sends_the_challenger_its_weight_within_binomial_error(cancer_registry, rows):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=0.2))
    n = 3000
    with client_for(cancer_registry) as client:
        served = arms(client, rows, n)
    share = served.count("challenger") / n
    assert abs(share - 0.2) < 4 * math.sqrt(0.2 * 0.8 / n)  # 4 standard errors: 1 false failure in 15,000
    assert set(served) == {"champion", "challenger"}


def test_the_same_routing_key_always_lands_on_the_same_arm(cancer_registry, rows):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=0.5))
    with client_for(cancer_registry) as client:
        by_key = {}
        for user in range(40):
            header = {"X-Routing-Key": f"user-{user}"}
            answers = [client.post("/predict", json={"inputs": rows}, headers=header) for _ in range(5)]
            assert len({a.headers["x-modelgate-arm"] for a in answers}) == 1
            by_key[user] = answers[0].json()["arm"]
            body_arm = client.post("/predict", json={"inputs": rows, "routing_key": f"user-{user}"}).json()[
                "arm"
            ]
            assert body_arm == by_key[user]  # the body field and the header are one key
    assert set(by_key.values()) == {"champion", "challenger"}  # and keys spread over both arms


def test_the_challenger_answers_with_its_own_version(cancer_registry, rows):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=1.0))
    with client_for(cancer_registry) as client:
        answer = client.post("/predict", json={"inputs": rows}).json()
        tensor = {"name": "X", "shape": [1, 30], "datatype": "FP32", "data": list(rows[0].values())}
        v2 = client.post("/v2/models/cancer/infer", json={"inputs": [tensor]})
    assert (answer["arm"], answer["version"]) == ("challenger", 2)
    assert v2.status_code == 200, v2.json()
    assert (v2.json()["model_version"], v2.json()["parameters"]["arm"]) == ("2", "challenger")


@pytest.mark.parametrize("policy", [RoutingPolicy(mode="off", challenger_weight=0.9),
                                    RoutingPolicy(mode="shadow", challenger_weight=0.9)])  # fmt: skip
def test_only_split_modes_let_the_challenger_answer(cancer_registry, rows, policy):
    cancer_registry.set_routing("cancer", policy)
    with client_for(cancer_registry) as client:
        assert set(arms(client, rows, 50)) == {"champion"}


def test_a_pinned_version_bypasses_the_split(cancer_registry, rows):
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=1.0))
    with client_for(cancer_registry) as client:
        answer = client.post("/predict", json={"inputs": rows, "version": 1}).json()
    assert (answer["arm"], answer["version"]) == ("pinned", 1)


def test_a_new_policy_takes_effect_without_a_restart(cancer_registry, rows):
    with client_for(cancer_registry) as client:
        assert set(arms(client, rows, 20)) == {"champion"}
        cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=1.0))
        client.app.state.context.pool.refresh()  # what the poller does every poll_interval
        assert set(arms(client, rows, 20)) == {"challenger"}


def test_a_bad_routing_key_is_refused_with_its_field(cancer_registry, rows):
    with client_for(cancer_registry) as client:
        answer = client.post("/predict", json={"inputs": rows, "routing_key": 7})
    assert answer.status_code == 400 and answer.json()["field"] == "routing_key"


def test_raising_the_weight_only_moves_keys_to_the_challenger():
    keys = [f"k{i}" for i in range(2000)]
    at = {w: {k for k in keys if to_challenger(RoutingPolicy(mode="canary", challenger_weight=w), "m", k)}
          for w in (0.05, 0.1, 0.5)}  # fmt: skip
    assert at[0.05] <= at[0.1] <= at[0.5]
    assert all(0.0 <= key_point("m", k) < 1.0 for k in keys)
    assert abs(len(at[0.1]) / len(keys) - 0.1) < 4 * math.sqrt(0.1 * 0.9 / len(keys))


def test_the_prediction_log_records_which_arm_answered(cancer_registry, rows):
    from monitoring.store.sqlite import open_sqlite

    cancer_registry.set_routing("cancer", RoutingPolicy(mode="ab", challenger_weight=0.5))
    with client_for(cancer_registry, monitoring=True) as client:
        answers = {a["request_id"]: (a["arm"], a["version"]) for a in
                   (client.post("/predict", json={"inputs": rows}).json() for _ in range(30))}  # fmt: skip
    log = open_sqlite(cancer_registry.root / "predictions.sqlite3")
    logged = {r.request_id: (r.arm, r.version) for r in log.requests.read_after({}, 100)}
    log.close()
    assert logged == answers
