"""Retraining triggers: an alert's action starts retraining (a webhook or a command), rate-limited and
audited, and the loop closes: drift -> alert -> retraining -> evaluation -> promotion."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from starlette.testclient import TestClient

from monitoring.alerts import AlertConfig
from monitoring.triggers import prune
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings

pytestmark = pytest.mark.slow


def drifted_rows() -> tuple[pd.DataFrame, pd.Series]:
    """Every bundled row, with mean_radius three standard deviations up, and its true diagnosis."""
    x_train, x_test, y_train, y_test = breast_cancer()
    frame, truth = pd.concat([x_train, x_test]), pd.concat([y_train, y_test])
    return frame.assign(mean_radius=frame["mean_radius"] + 3 * frame["mean_radius"].std()), truth


#: fires once 300 labelled rows show an accuracy under 0.9 (the champion's is 0.83 on drifted rows)
QUALITY_DROP = (
    "{name: QualityDrop, kind: quality, metric: accuracy, threshold: 0.9, min_samples: 300, for: 0s"
)
DRIFT = "{name: ModelInputDrift, kind: drift, threshold: 1, for: 0s"


def gateway(registry, tmp_path, rule: str, action: str, **settings):
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        f"rules:\n  - {rule}, action: {action}}}\n"
        "delivery: {timeout_seconds: 2, max_backoff_seconds: 0.2}\n"
    )
    settings = {"poll_interval": 0.2, "monitor_interval": 0.05, **settings}
    return create_app(Settings(registry=registry.root, alert_rules=str(rules), **settings))


def send_with_truth(client, frame, truth, batch=10):
    """Predictions, each followed by its ground truth."""
    for start in range(0, len(frame), batch):
        rows = frame.iloc[start : start + batch].to_dict(orient="records")
        answer = client.post("/predict", json={"inputs": rows})
        assert answer.status_code == 200
        item = {
            "request_id": answer.json()["request_id"],
            "ground_truth": list(truth.iloc[start : start + batch]),
        }
        assert client.post("/feedback", json={"feedback": [item]}).status_code == 200


def wait_for(predicate, timeout=60.0, what="the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_loop_closes_through_a_webhook(cancer_registry, tmp_path, receivers):
    """The receiver stands for a CI pipeline: it runs the demo's retraining script on what the webhook
    carried, which pushes a version, evaluates it against the champion and promotes it."""
    receiver = receivers()
    url = receiver.start()
    frame, truth = drifted_rows()
    action = f"{{webhook: '{url}', min_interval: 1h}}"
    with TestClient(gateway(cancer_registry, tmp_path, QUALITY_DROP, action)) as client:
        send_with_truth(client, frame, truth)
        (trigger,) = wait_for(lambda: receiver.bodies, what="the trigger at the receiver")
        assert receiver.keys[0].startswith("modelgate-")
        assert trigger["kind"] == "modelgate.retrain" and trigger["shape_version"] == 1
        assert (trigger["model"], trigger["version"]) == ("cancer", 1)
        assert trigger["alert"]["labels"]["alertname"] == "QualityDrop"
        assert trigger["alert"]["status"] == "firing"
        assert trigger["alert"]["annotations"]["description"].startswith("accuracy 0.8")
        window = trigger["window"]  # the monitor's window, one record a predicted row
        assert window["rows"] == len(window["records"]) >= window["labelled_rows"] >= 300
        assert {"mean_radius", "prediction", "probability_malignant", "ground_truth"} <= set(
            window["columns"]
        )

        # the pipeline: the window as a file, the demo's script on it
        window_file = tmp_path / "window.parquet"
        pd.DataFrame.from_records(window["records"]).to_parquet(window_file)
        env = {**os.environ, "MODELGATE_MODEL": trigger["model"], "MODELGATE_WINDOW": str(window_file),
               "MODELGATE_REGISTRY": trigger["registry"], "MODELGATE_ALERTNAME": "QualityDrop"}  # fmt: skip
        work = tmp_path / "work"
        work.mkdir()
        retrain = subprocess.run([sys.executable, "-m", "service.cli.retrain_demo"], env=env, cwd=work,
                                 capture_output=True, text=True, timeout=120)  # fmt: skip
        assert retrain.returncode == 0, retrain.stdout + retrain.stderr
        assert "cancer:3 against champion 1: pass" in retrain.stdout

        # the gateway picks the new champion up and answers with it
        def answering_version():
            return client.post("/predict", json={"inputs": frame.iloc[:1].to_dict(orient="records")}).json()[
                "version"
            ]

        wait_for(lambda: answering_version() == 3, timeout=15, what="version 3 to answer")
    actions = [(e.action, e.to_version) for e in cancer_registry.history("cancer")][-4:]
    assert actions == [("retrain", 1), ("push", 3), ("evaluate", 3), ("promote", 3)]
    retrain_entry = cancer_registry.history("cancer")[-4]
    assert retrain_entry.actor == "modelgate-trigger" and retrain_entry.trigger.target == f"webhook {url}"
    assert retrain_entry.trigger.window_rows == window["rows"] and trigger["audit_seq"] == retrain_entry.seq


def test_a_command_gets_the_trigger_and_is_rate_limited(cancer_registry, tmp_path, child_metrics):
    """The command sees the model, version, alert and window; the alert resolving and firing again within
    min_interval starts nothing more, and the audit trail holds the one trigger."""
    seen = tmp_path / "seen.txt"
    script = (
        "import os, pandas; w = pandas.read_parquet(os.environ['MODELGATE_WINDOW']); e = os.environ; "
        f"open({str(seen)!r}, 'a').write(' '.join([e['MODELGATE_MODEL'], e['MODELGATE_VERSION'], "
        "e['MODELGATE_ALERTNAME'], str(len(w) > 0)]) + '\\n')"
    )
    action = f"{{command: [python, -c, {script!r}], min_interval: 1h, timeout: 1m}}"
    frame, truth = drifted_rows()
    clean_x, _, clean_y, _ = breast_cancer()
    with TestClient(
        gateway(cancer_registry, tmp_path, DRIFT, action, window_rows=200, window_seconds=4)
    ) as client:
        send_with_truth(client, frame.iloc[:200], truth.iloc[:200])
        wait_for(lambda: seen.exists() and seen.read_text(), what="the command to run")
        # the drifted rows leave the window's 4 s: the alert resolves ...
        send_with_truth(client, clean_x.iloc[:200], clean_y.iloc[:200])
        wait_for(lambda: client.get("/monitoring/alerts").json()["resolved"], what="the alert to resolve")
        send_with_truth(client, frame.iloc[200:400], truth.iloc[200:400])  # ... and fires again
        wait_for(lambda: client.get("/monitoring/alerts").json()["firing"], what="the alert to fire again")
        time.sleep(1.0)
    assert seen.read_text().splitlines() == ["cancer 1 ModelInputDrift True"]
    retrains = [e for e in cancer_registry.history("cancer") if e.action == "retrain"]
    assert len(retrains) == 1 and retrains[0].trigger.target.startswith("command python -c")
    metrics = child_metrics()
    for outcome in ("triggered", "succeeded", "rate_limited"):
        labels = f'alertname="ModelInputDrift",model="cancer",outcome="{outcome}"'
        assert f"modelgate_retrain_triggers_total{{{labels}}} 1.0" in metrics


def test_an_action_is_checked_when_the_rules_load(tmp_path):
    rules = tmp_path / "rules.yml"
    for action, error in [
        ("{webhook: 'http://x', command: [a]}", "give one of webhook"),
        ("{min_interval: 1h}", "give one of webhook"),
        ("{webhook: 'ftp://x'}", "not an http"),
        ("{command: []}", "command is empty"),
        ("{command: [a], every: 1h}", r"unknown fields \['every'\]"),
        ("{command: [a], min_interval: soon}", "min_interval: 'soon' is not a duration"),
    ]:
        rules.write_text(f"rules:\n  - {{name: X, kind: drift, threshold: 1, action: {action}}}\n")
        with pytest.raises(ValueError, match=error):
            AlertConfig.load(rules)
    rules.write_text(
        "rules:\n  - {name: X, kind: drift, threshold: 1, action: {command: 'retrain.sh --fast'}}\n"
    )
    (rule,) = AlertConfig.load(rules).rules
    assert rule.action.command == ("retrain.sh", "--fast") and rule.action.min_interval_seconds == 3600


def test_old_trigger_directories_are_removed_but_not_a_running_one(tmp_path):
    """Each command's directory holds a window export: only the newest are kept, and never one whose
    command still runs."""
    for index in range(6):
        directory = tmp_path / f"cancer-{index}"
        directory.mkdir()
        (directory / "window.parquet").write_bytes(b"x")
        os.utime(directory, (1_000 + index, 1_000 + index))
    prune(tmp_path, keep=3, busy={tmp_path / "cancer-0"})
    assert sorted(d.name for d in tmp_path.iterdir()) == ["cancer-0", "cancer-3", "cancer-4", "cancer-5"]
