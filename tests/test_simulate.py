"""modelgate simulate: drifted demo traffic and ground truth make drift show and an alert fire."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drift", "mean_texture"], "expected FEATURE=SHIFT"),
        (["--drift", "colour=2"], "no feature 'colour'"),
        (["--drift", "mean_texture=lots"], "SHIFT must be a number"),
        (["--n", "0"], "must be at least 1"),
        (["--url", "http://127.0.0.1:9"], "gateway at http://127.0.0.1:9"),
    ],
)
def test_bad_arguments_and_an_absent_gateway_are_one_clear_line(capsys, args, message):
    assert main(["simulate", *args]) == 1
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_drifted_traffic_is_detected_and_fires_an_alert(gateway_factory, cancer_registry, tmp_path):
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        "rules:\n  - {name: ModelInputDrift, kind: drift, threshold: 1, for: 1s, severity: warning,"
        " summary: drift}\n"
    )
    gateway = gateway_factory(
        cancer_registry, MODELGATE_ALERT_RULES=str(rules), MODELGATE_MONITOR_INTERVAL="0.2"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "service", "simulate", "--url", gateway.url, "--model", "cancer",
         "--n", "300", "--drift", "mean_texture=2", "--wait", "30"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "answered 300 requests, 0 failed; ground truth stored for 300" in out
    # the shift moves the model's answers too: their drift may be listed beside the feature's
    assert "of 33 features and outputs drifted" in out and "  mean_texture: PSI" in out
    assert "0 of 33" not in out
    assert "live quality of version 1 over 300 rows: accuracy" in out
    assert "alert firing: ModelInputDrift" in out
    assert "simulate: 100%" in completed.stderr  # the progress bar


@pytest.mark.slow
def test_the_loop_drift_alert_retraining_evaluation_promotion(gateway_factory, cancer_registry, tmp_path):
    """What `make serve` and `modelgate simulate --loop` show on the demo: the drift alert's action runs
    the demo's retraining script, whose version is evaluated and promoted, as the audit trail tells."""
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        "rules:\n  - {name: ModelInputDrift, kind: drift, threshold: 1, for: 5s, severity: warning,"
        " action: {command: [python, -m, service.cli.retrain_demo], min_interval: 10m, timeout: 2m}}\n"
    )
    gateway = gateway_factory(
        cancer_registry, MODELGATE_ALERT_RULES=str(rules), MODELGATE_MONITOR_INTERVAL="0.2"
    )
    completed = subprocess.run(
        [sys.executable, "-m", "service", "simulate", "--url", gateway.url, "--model", "cancer",
         "--n", "600", "--drift", "mean_radius=3", "--wait", "120", "--loop",
         "--registry", str(cancer_registry.root)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    out = completed.stdout
    assert "alert firing: ModelInputDrift" in out and "the retraining loop, from the audit trail:" in out
    assert "ModelInputDrift on version 1 started command python -m service.cli.retrain_demo" in out
    assert "version 3 pushed (retrained after ModelInputDrift on " in out
    assert "version 3 against champion 1: pass" in out
    assert "champion 1 -> 3 (retrained after ModelInputDrift; evaluation passed)" in out
    assert cancer_registry.aliases("cancer").champion == 3
