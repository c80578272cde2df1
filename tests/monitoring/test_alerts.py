"""Alerts: rules from YAML, pending -> firing -> resolved, Alertmanager v4 webhooks via an outbox."""

from __future__ import annotations

import time

import pytest
from starlette.testclient import TestClient

from monitoring.alerts import KINDS, AlertConfig, AlertEngine, AlertRule, conditions, fingerprint
from monitoring.notify import webhook_payload
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings

DRIFT = AlertRule(name="Drift", kind="drift", threshold=1, for_seconds=60)


def report(drifted=0, rate=0.0, errors=0.0, p99=10.0, accuracy=None, p_adjusted=1e-9):
    return {
        "model": "m", "version": 1, "drifted_features": drifted,
        "thresholds": {"alpha": 0.001, "alert_alpha": 7.7e-7},
        "features": [{"name": "x", "drifted": drifted > 0, "p_adjusted": p_adjusted}],
        "plausibility": [{"rule": "input_range", "feature": "x", "rate": rate, "violations": 1}],
        "traffic": {"requests": 100, "error_rate": errors, "latency_p99_ms": p99},
        "quality": [] if accuracy is None else [
            {"version": 1, "samples": 500, "accuracy": accuracy, "segments": []}
        ],
    }  # fmt: skip


def test_a_drift_alert_needs_the_alert_level_a_drifted_window_is_not_enough():
    """Each pass tests the window again: the alert level spends the false-alert budget over time."""
    assert conditions((DRIFT,), report(drifted=1, p_adjusted=1e-6)) == []  # drifted at 0.1%, not at 7.7e-7
    assert [c.labels["alertname"] for c in conditions((DRIFT,), report(drifted=1))] == ["Drift"]


def test_the_alert_level_spends_the_budget_over_the_passes():
    from monitoring.windows import alert_alpha

    assert alert_alpha(0.001, 2.0, 30.0) == 2.0 / (30 * 86_400)  # 7.7e-7: one expected in 30 days
    assert alert_alpha(0.001, 3600.0, 1.0) == 0.001  # never looser than a window's alpha


def test_the_shipped_rules_load_and_bad_rules_are_refused(tmp_path):
    config = AlertConfig.load()
    assert {r.kind for r in config.rules} == set(KINDS)
    bad = tmp_path / "rules.yml"
    bad.write_text("rules:\n  - {name: X, kind: quality, threshold: 1}\n")
    with pytest.raises(ValueError, match="needs metric"):
        AlertConfig.load(bad)
    bad.write_text("rules:\n  - {name: X, kind: vibes, threshold: 1}\n")
    with pytest.raises(ValueError, match="kind must be one of"):
        AlertConfig.load(bad)
    bad.write_text("rules:\n  - {name: X, kind: drift, threshold: 1, for: soon}\n")
    with pytest.raises(ValueError, match="for: 'soon' is not a duration"):
        AlertConfig.load(bad)


def test_each_kind_of_rule_holds_on_its_condition():
    rules = (
        DRIFT,
        AlertRule(name="Odd", kind="plausibility", threshold=0.05),
        AlertRule(name="Errors", kind="error_rate", threshold=0.05, min_samples=50),
        AlertRule(name="Slow", kind="latency_p99", threshold=500),
        AlertRule(name="Worse", kind="quality", threshold=0.8, metric="accuracy", min_samples=100),
    )
    assert conditions(rules, report()) == []
    held = conditions(rules, report(drifted=2, rate=0.5, errors=0.2, p99=900, accuracy=0.5))
    assert [c.labels["alertname"] for c in held] == ["Drift", "Odd", "Errors", "Slow", "Worse"]
    assert held[1].labels == {"alertname": "Odd", "model": "m", "severity": "warning", "rule": "input_range",
                              "feature": "x"}  # fmt: skip
    assert "drifted in v1: x" in held[0].annotations["description"]


def test_an_alert_fires_after_its_for_duration_and_resolves_once():
    engine = AlertEngine((DRIFT,))
    held = conditions((DRIFT,), report(drifted=1))
    assert engine.evaluate(held, {"m"}, now=0) == []  # pending
    assert engine.evaluate(held, {"m"}, now=30) == []
    (fired,) = engine.evaluate(held, {"m"}, now=60)
    assert fired.status == "firing" and fired.firing_since == 60
    assert engine.evaluate(held, {"m"}, now=90) == []  # still firing: nothing new to say
    (resolved,) = engine.evaluate([], {"m"}, now=120)
    assert resolved.status == "resolved" and resolved.resolved_at == 120 and not engine.active


def test_a_pending_alert_that_clears_is_never_announced():
    engine = AlertEngine((DRIFT,))
    engine.evaluate(conditions((DRIFT,), report(drifted=1)), {"m"}, now=0)
    assert engine.evaluate([], {"m"}, now=30) == [] and not engine.active


def test_webhook_payload_is_alertmanager_version_4():
    engine = AlertEngine((AlertRule(name="Drift", kind="drift", threshold=1, for_seconds=0),))
    (alert,) = engine.evaluate(conditions(engine.rules, report(drifted=1)), {"m"}, now=1_700_000_000)
    payload = webhook_payload(alert, external_url="http://gw:3000")
    assert payload["version"] == "4" and payload["status"] == "firing" and payload["truncatedAlerts"] == 0
    assert payload["groupKey"] == '{}:{alertname="Drift", model="m", severity="warning"}'
    (body,) = payload["alerts"]
    assert body["fingerprint"] == fingerprint(alert.labels) and body["endsAt"] == "0001-01-01T00:00:00Z"
    assert body["startsAt"] == "2023-11-14T22:13:20Z" and body["labels"]["model"] == "m"


def gateway(registry, tmp_path, url, window_seconds=3600.0):
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        "rules:\n  - {name: ModelInputDrift, kind: drift, threshold: 1, for: 0s}\n"
        f"webhooks: ['{url}']\n"
        "delivery: {timeout_seconds: 1, max_backoff_seconds: 0.2}\n"
    )
    settings = Settings(registry=registry.root, poll_interval=3600, monitor_interval=0.05, window_rows=140,
                        window_seconds=window_seconds, alert_rules=str(rules))  # fmt: skip
    return create_app(settings)


def send(client, frame):
    for start in range(0, len(frame), 10):
        client.post("/predict", json={"inputs": frame.iloc[start : start + 10].to_dict(orient="records")})


def wait_for(predicate, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def test_drift_fires_once_and_resolves_once_at_the_receiver(cancer_registry, tmp_path, receivers):
    _, x_test, _, _ = breast_cancer()
    receiver = receivers()
    url = receiver.start()
    with TestClient(gateway(cancer_registry, tmp_path, url, window_seconds=4)) as client:
        send(client, x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140])
        wait_for(lambda: len(receiver.bodies) == 1)
        firing = client.get("/monitoring/alerts").json()["firing"]
        assert [a["labels"]["alertname"] for a in firing] == ["ModelInputDrift"]
        time.sleep(2)
        send(client, x_test.iloc[:140])  # the shifted rows leave the window's 4 s, clean ones come
        wait_for(lambda: len(receiver.bodies) == 2)
        time.sleep(0.5)  # more monitor passes: nothing more is sent
        assert (
            client.get("/monitoring/alerts").json()["resolved"][0]["labels"]["alertname"] == "ModelInputDrift"
        )
    assert [b["status"] for b in receiver.bodies] == ["firing", "resolved"]
    assert receiver.bodies[0]["alerts"][0]["fingerprint"] == receiver.bodies[1]["alerts"][0]["fingerprint"]
    assert len(set(receiver.keys)) == 2 and all(key and key.startswith("modelgate-") for key in receiver.keys)
    assert receiver.bodies[0]["version"] == "4"


def test_a_notification_survives_a_receiver_outage(cancer_registry, tmp_path, receivers):
    _, x_test, _, _ = breast_cancer()
    receiver, probe = receivers(), receivers()
    url = probe.start()  # reserve a port, then close it: the receiver is down
    port = probe.port
    probe.stop()
    with TestClient(gateway(cancer_registry, tmp_path, url)) as client:
        send(client, x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140])
        wait_for(lambda: client.get("/monitoring/alerts").json()["firing"])
        time.sleep(0.5)  # a few failed attempts
        receiver.start(port)  # the receiver comes back
        wait_for(lambda: len(receiver.bodies) == 1)
        time.sleep(0.5)
    assert [b["status"] for b in receiver.bodies] == ["firing"]


def test_every_attempt_of_a_delivery_carries_the_same_idempotency_key(cancer_registry, tmp_path, receivers):
    """What lets a receiver drop the one resend a monitor dying mid-delivery can cause."""
    _, x_test, _, _ = breast_cancer()
    receiver = receivers(failures=2)
    url = receiver.start()
    with TestClient(gateway(cancer_registry, tmp_path, url)) as client:
        send(client, x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140])
        wait_for(lambda: len(receiver.bodies) == 3)  # two refused, then taken
        time.sleep(0.5)
    assert len(receiver.bodies) == 3 and receiver.bodies[0] == receiver.bodies[2]
    assert len(set(receiver.keys)) == 1 and receiver.keys[0] is not None


def test_a_monitor_sharing_the_models_resumes_and_keeps_only_its_own_alerts(tmp_path):
    """Two monitors share one alert store: one that took over another shard's alerts would save its
    stale copies over the owner's state, and bring back an alert the owner resolved."""
    from monitoring.alerts import Alert
    from monitoring.notify import Alerting
    from monitoring.shards import Shard
    from monitoring.store.sqlite import open_sqlite

    store = open_sqlite(tmp_path / "log.sqlite3")
    held = [
        {"alertname": "Drift", "model": model, "severity": "warning"} for model in ("cancer", "breast-cancer")
    ]
    store.alerts.save([Alert(fingerprint(each), each, {}, 0.0, 1.0, firing_since=0.0) for each in held])
    config = AlertConfig(rules=(DRIFT,))
    cancer = Alerting(store.alerts, store.outbox, config, shard=Shard(1, 2))  # "cancer" is shard 1's
    assert cancer.step({}, now=10.0) == []
    assert [a.labels["model"] for a in cancer.engine.active.values()] == ["cancer"]
    other = Alerting(store.alerts, store.outbox, config, shard=Shard(0, 2))
    (resolved,) = other.step({"breast-cancer": report()}, now=20.0)  # no drift in its report: resolved
    assert resolved.labels["model"] == "breast-cancer" and resolved.status == "resolved"
    cancer.step({}, now=30.0)
    assert [a.labels["model"] for a in store.alerts.since(25.0) if a.resolved_at is None] == ["cancer"]
    store.close()
