"""Monitors that share the models (``MODELGATE_MONITOR_SHARDS``): each model is one monitor's, each
notification is sent once, and a shard whose monitor dies is taken over."""

from __future__ import annotations

import os
import signal
import time

import pytest
from starlette.testclient import TestClient

from monitoring.shards import Shard
from registry.demo import breast_cancer
from service.app import create_app
from service.settings import Settings

#: the same model under two names, which fall in different shards of two
MODELS = ("cancer", "breast-cancer")


def test_every_model_belongs_to_one_shard_the_same_in_every_process():
    names = [f"model-{i}" for i in range(300)]
    shards = [Shard(index, 3) for index in range(3)]
    owners = [[shard.index for shard in shards if shard.owns(name)] for name in names]
    assert all(len(owner) == 1 for owner in owners)
    assert sorted({owner[0] for owner in owners}) == [0, 1, 2]  # spread over all of them
    assert [Shard(1, 2).owns(m) for m in MODELS] == [True, False]  # crc32, not a per-process hash
    assert Shard().owns("anything") and Shard().delivers and not Shard(1, 2).delivers
    with pytest.raises(ValueError, match=r"not one of 0\.\.1"):
        Shard(2, 2)


def wait_for(predicate, what, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.05)
    raise AssertionError(f"not reached: {what}")


def test_two_monitors_share_the_models_alert_once_each_and_a_dead_one_is_replaced(
    cancer_registry, cancer_model, tmp_path, receivers
):
    cancer_registry.push(cancer_model.onnx, "breast-cancer", cancer_model.reference, actor="tests")
    cancer_registry.promote("breast-cancer", 1, "champion", actor="tests")
    receiver = receivers()
    url = receiver.start()
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        f"rules:\n  - {{name: ModelInputDrift, kind: drift, threshold: 1, for: 0s}}\nwebhooks: ['{url}']\n"
    )
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, monitor_interval=0.1,
                        window_rows=140, alert_rules=str(rules), monitor_shards=2)  # fmt: skip
    _, x_test, _, _ = breast_cancer()
    drifted = x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140]
    with TestClient(create_app(settings)) as client:
        for model in MODELS:
            for start in range(0, 140, 10):
                rows = drifted.iloc[start : start + 10].to_dict(orient="records")
                assert client.post("/predict", json={"model": model, "inputs": rows}).status_code == 200

        def windows() -> bool:
            reports = [client.get("/monitoring/drift", params={"model": m}).json() for m in MODELS]
            return all(r.get("window", {}).get("requests") == 14 for r in reports)

        wait_for(windows, "both models' reports over their 14 requests")
        for _ in range(10):  # each model's reports are always its own shard's monitor's
            time.sleep(0.05)
            reported = [client.get("/monitoring/drift", params={"model": m}).json() for m in MODELS]
            assert [r["monitor"] for r in reported] == [{"shard": 1, "shards": 2}, {"shard": 0, "shards": 2}]
        shards = client.get("/monitoring/status").json()["monitor"]["shards"]
        assert [s["shard"] for s in shards] == [0, 1] and all(s["this_replica"] for s in shards)
        pids = [int(s["holder"].split(" pid ")[1].split()[0]) for s in shards]
        assert len(set(pids)) == 2  # two monitor processes, one a shard
        wait_for(lambda: len(receiver.bodies) == 2, "a drift alert for each model")
        time.sleep(1.0)  # passes of both monitors: each alert was sent once, by shard 0's monitor
        assert sorted(b["alerts"][0]["labels"]["model"] for b in receiver.bodies) == sorted(MODELS)

        os.kill(pids[1], signal.SIGKILL)  # shard 1's monitor dies: another takes its lease

        def new_holder() -> int | None:
            holder = client.get("/monitoring/status").json()["monitor"]["shards"][1]["holder"]
            pid = int(holder.split(" pid ")[1].split()[0]) if holder else None
            return pid if pid not in (None, pids[1]) else None

        wait_for(new_holder, "a new monitor for shard 1")
        time.sleep(1.0)  # it resumed the firing alert rather than announcing it again
        assert len(receiver.bodies) == 2
        assert {a["labels"]["model"] for a in client.get("/monitoring/alerts").json()["firing"]} == set(
            MODELS
        )
