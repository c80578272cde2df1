"""Admin routes: refused without a configured token, without a token and with a wrong one; with the
right one, promote, roll back and routing are registry writes in the audit history."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from registry.aliases import RoutingPolicy
from service.app import create_app
from service.settings import Settings

TOKEN = "s3cret-token"
ROUTES = [
    ("PUT", "/admin/models/cancer/routing", {"mode": "ab", "challenger_weight": 0.2}),
    ("POST", "/admin/models/cancer/promote", {}),
    ("POST", "/admin/models/cancer/rollback", {}),
]


def client_for(registry, token=""):
    settings = Settings(registry=registry.root, poll_interval=3600, monitoring=False, admin_token=token)
    return TestClient(create_app(settings))


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_admin_routes_are_disabled_without_a_configured_token(cancer_registry, method, path, body):
    with client_for(cancer_registry) as client:
        answer = client.request(method, path, json=body, headers={"Authorization": "Bearer anything"})
    assert answer.status_code == 403 and "MODELGATE_ADMIN_TOKEN" in answer.json()["error"]
    assert [e.action for e in cancer_registry.history("cancer")] == ["push", "push", "promote", "promote"]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": TOKEN}, 401), ({"Authorization": "Bearer wrong"}, 403),
     ({"Authorization": f"Basic {TOKEN}"}, 401)],
)  # fmt: skip
def test_a_missing_or_wrong_token_is_refused_and_changes_nothing(cancer_registry, method, path, body,
                                                                  headers, status):  # fmt: skip
    with client_for(cancer_registry, TOKEN) as client:
        answer = client.request(method, path, json=body, headers=headers)
    assert answer.status_code == status and answer.json()["error"]
    assert len(cancer_registry.history("cancer")) == 4


def test_promote_routing_and_rollback_with_the_token_are_audited(cancer_registry):
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "alice"}
    with client_for(cancer_registry, TOKEN) as client:
        canary = {"mode": "canary", "challenger_weight": 0.05, "reason": "try v2"}
        routed = client.put("/admin/models/cancer/routing", headers=auth, json=canary)
        assert routed.status_code == 200 and routed.json()["action"] == "route"
        assert cancer_registry.aliases("cancer").routing == RoutingPolicy(
            mode="canary", challenger_weight=0.05
        )

        promoted = client.post("/admin/models/cancer/promote", headers=auth, json={"reason": "v2 wins"})
        assert promoted.status_code == 200
        assert (promoted.json()["from"], promoted.json()["to"]) == (1, 2)
        assert cancer_registry.aliases("cancer").champion == 2

        rolled = client.post("/admin/models/cancer/rollback", headers=auth, json={"reason": "oops"})
        assert rolled.status_code == 200 and cancer_registry.aliases("cancer").champion == 1
    last = cancer_registry.history("cancer")[-3:]
    assert [(e.action, e.actor, e.reason) for e in last] == [
        ("route", "alice", "try v2"), ("promote", "alice", "v2 wins"), ("rollback", "alice", "oops"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("PUT", "/admin/models/cancer/routing", {"mode": "split"}, 422, "mode"),
        (
            "PUT",
            "/admin/models/cancer/routing",
            {"mode": "ab", "challenger_weight": 2},
            422,
            "challenger_weight",
        ),
        ("POST", "/admin/models/cancer/promote", {"version": "best"}, 400, "version"),
        ("POST", "/admin/models/cancer/promote", {"to": "king"}, 400, "to"),
        ("POST", "/admin/models/cancer/promote", {"version": 9}, 404, None),
        ("POST", "/admin/models/dog/rollback", {}, 404, None),
        ("POST", "/admin/models/cancer/rollback", {}, 409, None),
    ],
)
def test_bad_admin_requests_say_what_is_wrong(cancer_registry, method, path, body, status, field):
    with client_for(cancer_registry, TOKEN) as client:
        answer = client.request(method, path, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == status, answer.json()
    assert answer.json()["error"] and answer.json().get("field") == field


def test_prediction_routes_take_their_own_token_when_one_is_set(cancer_registry, cancer_model):
    rows = cancer_model.frame.iloc[:1].to_dict(orient="records")
    tensor = {"name": "X", "shape": [1, 30], "datatype": "FP32", "data": list(rows[0].values())}
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, monitoring=False,
                        predict_token="app-token", admin_token=TOKEN)  # fmt: skip
    calls = [("/predict", {"inputs": rows}), ("/v2/models/cancer/infer", {"inputs": [tensor]})]
    with TestClient(create_app(settings)) as client:
        for path, body in calls:
            assert client.post(path, json=body).status_code == 401
            assert (
                client.post(path, json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 403
            )
            assert (
                client.post(path, json=body, headers={"Authorization": "Bearer app-token"}).status_code == 200
            )
        assert client.post("/feedback", json={"request_id": "x", "ground_truth": [1]}).status_code == 401
        assert client.get("/v2/health/ready").status_code == 200  # probes stay open
        # and the app token opens no admin route
        refused = client.post(
            "/admin/models/cancer/rollback", json={}, headers={"Authorization": "Bearer app-token"}
        )
        assert refused.status_code == 403
