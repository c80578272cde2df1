"""Replicas: two gateway processes, one shared registry, one store (PostgreSQL, or on one machine
the SQLite file).

What a team running modelgate behind a load balancer relies on: traffic to
any replica lands in one drift window, one monitor leads and another takes
over when it dies, each alert reaches on-call once, a promotion reaches every
replica within the poll interval, and a replica stopped under load loses no
answered prediction.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from monitoring.store import open_store
from registry.demo import breast_cancer

pytestmark = pytest.mark.slow

LEADING = '"monitor.leading"'


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> float:
    """Seconds until ``predicate()`` held."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what} not reached within {timeout:g} s")


def monitor_pid(gateway) -> int | None:
    """The monitor process among the gateway's descendants, if it runs one."""
    pids, index = [gateway.process.pid], 0
    while index < len(pids):
        for task in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids.extend(int(pid) for pid in task.read_text().split())
        index += 1
    for pid in pids:
        with contextlib.suppress(OSError):
            if b"service.processes.monitor" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
    return None


class Load:
    """Single-row requests to every replica in turn from a thread; remembers each acknowledged id."""

    def __init__(self, urls: list[str], rows: list[dict]) -> None:
        self.urls = urls
        self.rows = rows
        self.acknowledged: list[str] = []
        self.failed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            i = 0
            while not self._stop.is_set():
                url = self.urls[i % len(self.urls)]
                try:
                    response = client.post(f"{url}/predict", json={"inputs": [self.rows[i % len(self.rows)]]})
                except httpx.HTTPError:
                    self.failed += 1  # a replica stopping: refused, never acknowledged
                else:
                    if response.status_code == 200:
                        self.acknowledged.append(response.json()["request_id"])
                    else:
                        self.failed += 1
                i += 1


@pytest.fixture(params=["postgres", "sqlite"])
def store_settings(request: pytest.FixtureRequest, cancer_registry) -> dict[str, str]:
    """The replicas' store: a PostgreSQL database, or the SQLite file in the registry they share."""
    if request.param == "postgres":
        return {"MODELGATE_LOG_URL": request.getfixturevalue("postgres_url")}
    return {"MODELGATE_LOG_PATH": str(cancer_registry.root / "predictions.sqlite3")}


def location(settings: dict[str, str]) -> str:
    return settings.get("MODELGATE_LOG_URL") or settings["MODELGATE_LOG_PATH"]


def test_two_replicas_share_one_window_one_monitor_and_send_each_alert_once(
    cancer_registry, tmp_path, receivers, gateway_factory, store_settings
):
    _, x_test, _, _ = breast_cancer()
    receiver = receivers()
    url = receiver.start()
    rules = tmp_path / "alerts.yml"
    rules.write_text(
        f"rules:\n  - {{name: ModelInputDrift, kind: drift, threshold: 1, for: 0s}}\nwebhooks: ['{url}']\n"
    )
    settings = {**store_settings, "MODELGATE_ALERT_RULES": str(rules), "MODELGATE_MONITOR_INTERVAL": "0.5",
                "MODELGATE_WINDOW_ROWS": "140"}  # fmt: skip
    replicas = [
        gateway_factory(cancer_registry, workers=2, **settings),
        gateway_factory(cancer_registry, **settings),
    ]
    drifted = x_test.assign(mean_texture=x_test["mean_texture"] * 1.6).iloc[:140]
    for start in range(0, 140, 10):  # half the traffic through each replica
        rows = drifted.iloc[start : start + 10].to_dict(orient="records")
        assert (
            httpx.post(f"{replicas[start // 10 % 2].url}/predict", json={"inputs": rows}).status_code == 200
        )

    def window(replica) -> dict:
        return httpx.get(f"{replica.url}/monitoring/drift").json().get("window", {})

    wait_for(lambda: window(replicas[1]).get("requests") == 14, what="one window of both replicas' traffic")
    assert window(replicas[0]) == window(replicas[1])  # either replica answers with the one report
    wait_for(lambda: len(receiver.bodies) == 1, what="the drift alert at the receiver")
    leading = [r for r in replicas if LEADING in r.output()]
    assert len(leading) == 1 and leading[0].output().count(LEADING) == 1, "exactly one monitor leads"

    # the leading monitor dies (SIGKILL: no goodbye) while both replicas answer requests, still drifted
    with Load([r.url for r in replicas], drifted.to_dict(orient="records")) as load:
        time.sleep(1.0)
        pid = monitor_pid(leading[0])
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        took = wait_for(lambda: sum(r.output().count(LEADING) for r in replicas) == 2, what="a new monitor")
        time.sleep(2.0)  # several passes of the new monitor
    print(f"a new monitor led {took:.1f} s after the old one was killed")
    # the firing alert was resumed, not announced again
    assert [b["status"] for b in receiver.bodies] == ["firing"]
    firing = httpx.get(f"{replicas[1].url}/monitoring/alerts").json()["firing"]
    assert [a["labels"]["alertname"] for a in firing] == ["ModelInputDrift"]
    assert load.acknowledged
    committed(location(store_settings), load.acknowledged)

    # then the whole replica running the monitor dies (its pod's node gone): the other one leads
    # (once a standby monitor, started while no one led and beaten to the lease, has exited)
    wait_for(lambda: sum(monitor_pid(r) is not None for r in replicas) == 1, what="one monitor process")
    (holder,) = [r for r in replicas if monitor_pid(r) is not None]
    (survivor,) = [r for r in replicas if r is not holder]
    before = survivor.output().count(LEADING)
    with Load([survivor.url], drifted.to_dict(orient="records")) as load:
        time.sleep(0.5)
        os.killpg(holder.process.pid, signal.SIGKILL)
        took = wait_for(lambda: survivor.output().count(LEADING) > before, what="the survivor's monitor")
        time.sleep(2.0)
    print(f"the surviving replica's monitor led {took:.1f} s after the other replica was killed")
    assert [b["status"] for b in receiver.bodies] == ["firing"]
    assert load.acknowledged
    committed(location(store_settings), load.acknowledged)


def test_replicas_stopped_under_load_lose_no_answered_prediction(
    cancer_registry, gateway_factory, store_settings
):
    """SIGTERM, as Kubernetes stops a pod: each replica drains what it answered into the store."""
    _, x_test, _, _ = breast_cancer()
    rows = x_test.iloc[:50].to_dict(orient="records")
    replicas = [gateway_factory(cancer_registry, workers=2, **store_settings) for _ in range(2)]
    with Load([r.url for r in replicas], rows) as load:
        time.sleep(2.0)
        replicas[0].stop()  # the load goes on against both: the stopped one refuses from now on
        time.sleep(1.0)
        replicas[1].stop()
    assert len(load.acknowledged) > 100
    assert _missing(location(store_settings), load.acknowledged) == []


def test_a_promotion_reaches_every_replica_within_the_poll_interval(
    cancer_registry, gateway_factory, postgres_url
):
    """One registry on a shared volume: the CLI promotes on one host; both replicas serve it."""
    _, x_test, _, _ = breast_cancer()
    replicas = [
        gateway_factory(cancer_registry, MODELGATE_LOG_URL=postgres_url, MODELGATE_POLL_INTERVAL="1")
        for _ in range(2)
    ]
    row = x_test.iloc[:1].to_dict(orient="records")
    subprocess.run(
        [sys.executable, "-m", "service", "registry", "promote", "cancer", "2", "--to", "champion",
         "--registry", str(cancer_registry.root)],
        check=True, capture_output=True,
    )  # fmt: skip
    for replica in replicas:
        took = wait_for(
            lambda replica=replica: (
                httpx.post(f"{replica.url}/predict", json={"inputs": row}).json()["version"] == 2
            ),
            timeout=5.0,
            what="the promoted version",
        )
        assert took < 5.0


def committed(location: str, request_ids: list[str], timeout: float = 10.0) -> None:
    """Every one of ``request_ids`` reaches the store: a replica still running commits what it answered
    within its next batch (50 ms), longer while the machine is loaded."""
    wait_for(lambda: not _missing(location, request_ids), timeout, what="every answered request in the store")


def _missing(url: str, request_ids: list[str]) -> list[str]:
    store = open_store(url, pool_size=1)
    try:
        found = {r.request_id for r in store.requests.answered(request_ids)}
    finally:
        store.close()
    return [rid for rid in request_ids if rid not in found]
