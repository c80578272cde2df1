"""With a real Prometheus and Alertmanager: the shipped rules load, every dashboard panel has data,
and the gateway's alerts reach on-call through Alertmanager."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from registry.aliases import RoutingPolicy
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "monitoring/prometheus/alerts.yml"
DASHBOARD = ROOT / "monitoring/grafana/dashboards/modelgate.json"
DRIFT_NOW = "rules:\n  - {name: ModelInputDrift, kind: drift, threshold: 1, for: 0s}\n"


def test_promtool_accepts_the_shipped_alerting_rules(tool):
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout


def demo_traffic(url: str) -> None:
    """Drifted and implausible rows, refusals, and ground truth: something for every panel."""
    _, x_test, _, y_test = breast_cancer()
    shifted = x_test.assign(mean_texture=x_test["mean_texture"] * 1.6)
    shifted.loc[shifted.index[:10], "worst_area"] = 1e6
    with httpx.Client(base_url=url, timeout=30) as client:
        feedback = []
        for start in range(0, len(shifted), 10):
            rows = shifted.iloc[start : start + 10].to_dict(orient="records")
            answer = client.post("/predict", json={"inputs": rows}).json()
            truth = list(y_test.iloc[start : start + 10])
            feedback.append({"request_id": answer["request_id"], "ground_truth": truth})
        assert client.post("/feedback", json={"feedback": feedback}).status_code == 200
        for _ in range(3):
            assert client.post("/predict", json={"inputs": [{"mean_radius": "x"}]}).status_code == 422


def test_every_dashboard_panel_has_data_from_a_real_prometheus(
    gateway_factory, cancer_registry, spawn, tool, tmp_path
):
    rules = tmp_path / "gateway-alerts.yml"
    rules.write_text(DRIFT_NOW)
    cancer_registry.set_routing("cancer", RoutingPolicy(mode="shadow"))  # the comparison panels
    gateway = gateway_factory(cancer_registry, workers=2, MODELGATE_MONITOR_INTERVAL="0.2",
                              MODELGATE_WINDOW_ROWS="140", MODELGATE_ALERT_RULES=str(rules),
                              MODELGATE_QUALITY_SEGMENTS="mean_radius")  # fmt: skip
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "modelgate", "static_configs": [
            {"targets": [gateway.url.removeprefix("http://")]}]}],
    }))  # fmt: skip
    prometheus = spawn(
        [tool("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         "--web.listen-address=127.0.0.1:{port}"],
        ready_path="/-/ready",
    )  # fmt: skip
    demo_traffic(gateway.url)

    queries = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel["targets"]]
    empty = queries
    deadline = time.monotonic() + 90
    while empty and time.monotonic() < deadline:
        time.sleep(1)
        empty = [
            q for q in empty
            if not httpx.get(f"{prometheus.url}/api/v1/query", params={"query": q}).json()["data"]["result"]
        ]  # fmt: skip
    assert empty == [], f"panels without data: {empty}"
    groups = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
    assert [g["name"] for g in groups] == ["modelgate"] and len(groups[0]["rules"]) == 7


def test_gateway_alerts_reach_on_call_through_a_real_alertmanager(
    cancer_registry, spawn, tool, receivers, tmp_path
):
    receiver = receivers()
    hook = receiver.start()
    config = tmp_path / "alertmanager.yml"
    config.write_text(json.dumps({
        "route": {"receiver": "on-call", "group_by": ["alertname", "model"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [{"name": "on-call", "webhook_configs": [{"url": hook, "send_resolved": True}]}],
    }))  # fmt: skip
    alertmanager = spawn(
        [tool("prometheus-alertmanager"), f"--config.file={config}", f"--storage.path={tmp_path / 'am'}",
         "--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        ready_path="/-/ready",
    )  # fmt: skip
    rules = tmp_path / "gateway-alerts.yml"
    rules.write_text(DRIFT_NOW + f"alertmanager_url: {alertmanager.url}\n")
    settings = Settings(
        registry=cancer_registry.root, poll_interval=3600, monitor_interval=0.1, window_rows=140,
        alert_rules=str(rules),
    )  # fmt: skip
    _, x_test, _, _ = breast_cancer()
    with TestClient(create_app(settings)) as client:
        shifted = x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140]
        for start in range(0, 140, 10):
            client.post(
                "/predict", json={"inputs": shifted.iloc[start : start + 10].to_dict(orient="records")}
            )
        deadline = time.monotonic() + 30
        while not receiver.bodies and time.monotonic() < deadline:
            time.sleep(0.2)
    (notification, *_) = receiver.bodies
    assert notification["version"] == "4" and notification["status"] == "firing"
    assert notification["commonLabels"]["alertname"] == "ModelInputDrift"
    assert notification["commonLabels"]["model"] == "cancer"
