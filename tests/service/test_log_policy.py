"""A model's log policy in a real gateway: a dropped feature's value appears nowhere (the registry
directory, the log store's files, stdout, an export), a hashed one only as its HMAC, plausibility is
still checked on the values as sent, and the payload rate keeps the requests its ids choose."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from monitoring.redaction import HASH_HEX, payload_kept
from monitoring.store import open_store
from registry.aliases import LogPolicy
from service.cli import main

KEY = "test-hash-key"
#: values exact in float32, so each is written as this text wherever a value is
DROPPED, HASHED = 23.4375, 31.8125
#: far outside the reference's range (plausibility flags it)
FAR = 512.75
#: what a refused request sent for the dropped feature
SECRET = "secret-radius-value"


def rows(frame, count: int, radius: float = DROPPED) -> list[dict[str, float]]:
    records = frame.head(count).to_dict(orient="records")
    return [{**r, "mean_radius": radius, "mean_texture": HASHED} for r in records]


def everything_under(*roots: Path) -> bytes:
    return b"".join(p.read_bytes() for root in roots for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.slow
def test_a_dropped_value_is_nowhere_and_a_hashed_one_only_as_its_hmac(
    cancer_registry, cancer_model, gateway_factory, tmp_path, capsys
):
    root = str(cancer_registry.root)
    assert main(["registry", "log-policy", "cancer", "--drop", "mean_radius", "--hash", "mean_texture",
                 "--reason", "personal data", "--registry", root]) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)  # the policy as it now stands
    assert shown == {"fields": {"mean_radius": "drop", "mean_texture": "hash"}, "payload_rate": 1.0}
    log_path = tmp_path / "log" / "predictions.sqlite3"
    log_path.parent.mkdir()
    gateway = gateway_factory(cancer_registry, MODELGATE_LOG_HASH_KEY=KEY, MODELGATE_LOG_PATH=str(log_path),
                              MODELGATE_MONITOR_INTERVAL="0.2", MODELGATE_DRIFT_MIN_ROWS="20")  # fmt: skip
    frame = cancer_model.frame
    answered = httpx.post(f"{gateway.url}/predict", json={"inputs": rows(frame, 30)}).json()
    far = httpx.post(f"{gateway.url}/predict", json={"inputs": rows(frame, 1, radius=FAR)})
    assert far.status_code == 200  # plausibility flags it; the default policy is to flag
    refused = httpx.post(
        f"{gateway.url}/predict", json={"inputs": [{**rows(frame, 1)[0], "mean_radius": SECRET}]}
    )
    assert refused.status_code == 422 and SECRET in refused.text  # the caller is told what was wrong
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the monitor's report, once it has read the requests
        report = httpx.get(f"{gateway.url}/monitoring/drift", params={"model": "cancer"}).json()
        if report.get("window", {}).get("rows", 0) >= 31:
            break
        time.sleep(0.2)
    assert report["not_logged"] == {"mean_radius": "drop", "mean_texture": "hash"}
    assert {f["name"] for f in report["features"]}.isdisjoint({"mean_radius", "mean_texture"})
    assert "mean_area" in {f["name"] for f in report["features"]}, report["reason"]
    export = tmp_path / "export.csv"
    assert main(["log", "export", "--model", "cancer", "-o", str(export), "--log", str(log_path),
                 "--registry", root]) == 0  # fmt: skip
    gateway.stop()

    store = open_store(str(log_path))
    records = {r.request_id: r for r in store.requests.read_after({}, 1000)}
    store.close()
    logged = records[answered["request_id"]]
    assert logged.inputs is not None and "mean_radius" not in logged.inputs
    digest = hmac.new(KEY.encode(), str(HASHED).encode(), hashlib.sha256).hexdigest()[:HASH_HEX]
    assert logged.inputs["mean_texture"] == [digest] * 30
    kept = np.array(logged.inputs["mean_area"], dtype=np.float32)
    assert (kept == frame["mean_area"].head(30).to_numpy(np.float32)).all()
    flagged = records[far.json()["request_id"]]
    assert any("mean_radius" in flag for flag in flagged.flags)  # checked on the value as sent

    stdout = gateway.output().encode()
    places = {"the registry and the log": everything_under(cancer_registry.root, log_path.parent),
              "stdout": stdout, "the export": export.read_bytes()}  # fmt: skip
    for where, data in places.items():
        for value in (str(DROPPED), str(HASHED), str(FAR), SECRET):
            assert value.encode() not in data, f"{value} in {where}"
    assert digest.encode() in stdout


def test_the_payload_rate_keeps_the_requests_their_ids_choose(cancer_registry, cancer_model, tmp_path):
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    cancer_registry.set_log_policy("cancer", LogPolicy(payload_rate=0.5), actor="tests")
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, log_path=tmp_path / "log.sqlite3")
    with TestClient(create_app(settings)) as client:
        ids = [client.post("/predict", json={"inputs": rows(cancer_model.frame, 1)}).json()["request_id"]
               for _ in range(40)]  # fmt: skip
    store = open_store(str(tmp_path / "log.sqlite3"))
    records = {r.request_id: r for r in store.requests.read_after({}, 1000)}
    store.close()
    kept = {rid for rid in ids if records[rid].inputs is not None}
    assert kept == {rid for rid in ids if payload_kept(rid, 0.5)}
    assert 8 <= len(kept) <= 32  # about half
    assert all((records[rid].outputs is None) == (rid not in kept) for rid in ids)


def test_a_policy_names_only_features_and_is_audited(cancer_registry, cancer_model, capsys):
    root = str(cancer_registry.root)
    code = main(["registry", "log-policy", "cancer", "--drop", "ssn", "--registry", root])
    assert code == 1 and "'ssn' is not an input feature of 'cancer'" in capsys.readouterr().err
    code = main(["registry", "log-policy", "cancer", "--payload-rate", "1.5", "--registry", root])
    assert code == 1 and "--payload-rate" in capsys.readouterr().err
    assert main(["registry", "log-policy", "cancer", "--hash", "mean_area", "--registry", root]) == 0
    assert main(["registry", "log-policy", "cancer", "--keep", "mean_area", "--drop", "mean_radius",
                 "--registry", root]) == 0  # fmt: skip
    assert cancer_registry.aliases("cancer").log_policy == LogPolicy(fields={"mean_radius": "drop"})
    entries = [e.log_policy for e in cancer_registry.history("cancer") if e.action == "govern"]
    assert [p.fields for p in entries if p] == [{"mean_area": "hash"}, {"mean_radius": "drop"}]
    push = ["registry", "push", str(cancer_model.onnx), "--name", "cancer", "--reference",
            str(cancer_model.reference), "--registry", root]  # fmt: skip
    assert main([*push, "--hash", "mean_area", "--payload-rate", "0.5"]) == 0
    expected = LogPolicy(fields={"mean_radius": "drop", "mean_area": "hash"}, payload_rate=0.5)
    assert cancer_registry.aliases("cancer").log_policy == expected


def test_log_erase_removes_a_subjects_requests_and_feedback_and_audits_the_counts(
    cancer_registry, cancer_model, tmp_path, monkeypatch, capsys
):
    from starlette.testclient import TestClient

    from service.app import create_app
    from service.settings import Settings

    monkeypatch.setenv("MODELGATE_LOG_HASH_KEY", KEY)
    root = str(cancer_registry.root)
    assert main(["registry", "log-policy", "cancer", "--hash", "mean_texture", "--registry", root]) == 0
    log_path = tmp_path / "log" / "predictions.sqlite3"
    settings = Settings(registry=cancer_registry.root, poll_interval=3600, log_path=log_path,
                        log_hash_key=KEY, explain_rate=1.0)  # fmt: skip
    frame = cancer_model.frame
    with TestClient(create_app(settings)) as client:
        theirs = [
            client.post("/predict", json={"inputs": rows(frame, 2)}).json()["request_id"] for _ in range(3)
        ]
        others = [client.post("/predict", json={"inputs": frame.head(2).to_dict(orient="records")}).json()
                  ["request_id"] for _ in range(2)]  # fmt: skip
        for rid in (theirs[0], others[0]):
            assert (
                client.post("/feedback", json={"request_id": rid, "ground_truth": ["benign"] * 2}).status_code
                == 200
            )
        # explanations are made off the request path, and dropped when the gateway stops: wait for all 5
        deadline, logged = time.monotonic() + 30, open_store(str(log_path)).requests
        while sum(r.route == "explain" for r in logged.read_after({}, 100)) < 5:
            assert time.monotonic() < deadline, "explanations not logged"
            time.sleep(0.05)
    digest = hmac.new(KEY.encode(), str(HASHED).encode(), hashlib.sha256).hexdigest()[:HASH_HEX].encode()
    assert digest in everything_under(log_path.parent)
    capsys.readouterr()

    code = main(
        ["log", "erase", "--subject", f"mean_texture={HASHED}", "--log", str(log_path), "--registry", root]
    )
    assert code == 0
    assert (
        "erased 6 record(s) and 1 feedback of 3 request(s) by subject mean_texture" in capsys.readouterr().out
    )
    store = open_store(str(log_path))
    left = [(r.request_id, r.route) for r in store.requests.read_after({}, 100)]  # each with its explanation
    assert sorted(left) == sorted((rid, route) for rid in others for route in ("predict", "explain"))
    assert list(store.feedback.of(theirs + others)) == [others[0]]
    store.close()
    assert digest not in everything_under(log_path.parent)
    (entry,) = [e for e in cancer_registry.history("cancer") if e.action == "erase"]
    assert entry.erasure is not None and (entry.erasure.records, entry.erasure.feedback) == (6, 1)
    assert str(HASHED) not in entry.model_dump_json() and digest.decode() not in entry.model_dump_json()
    assert main(["registry", "verify", "--registry", root]) == 0  # the erasure is in the hash chain

    code = main(["log", "erase", "--request-id", others[1], "--log", str(log_path), "--registry", root])
    assert (
        code == 0
        and "erased 2 record(s) and 0 feedback of 1 request(s) by request_id" in capsys.readouterr().out
    )
