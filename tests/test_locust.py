"""The Locust scenarios run headless against a real gateway on the demo registry and write their reports."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from registry.demo import DEMO_MODEL, build_demo
from registry.store import Registry

LOCUSTFILE = Path(__file__).resolve().parent.parent / "load_tests" / "locustfile.py"
TOKEN = "locust-admin-token"


def locust(url: str, out: Path, routing: str, *scenarios: str) -> dict[str, dict[str, str]]:
    """One headless run; its statistics by (type, name), after checking it exited cleanly."""
    completed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "6", "-r", "6",
         "-t", "4s", "--host", url, "--csv", str(out), "--html", f"{out}.html", "--only-summary",
         "--routing", routing, "--admin-token", TOKEN, *scenarios],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert Path(f"{out}.html").stat().st_size > 0
    with open(f"{out}_stats.csv", newline="") as handle:
        return {f"{row['Type']} {row['Name']}".strip(): row for row in csv.DictReader(handle)}


@pytest.mark.slow
def test_every_scenario_runs_headless_and_writes_csv_and_html(gateway_factory, tmp_path):
    registry = Registry(tmp_path / "registry")
    build_demo(registry)
    gateway = gateway_factory(registry, MODELGATE_ADMIN_TOKEN=TOKEN)

    stats = locust(gateway.url, tmp_path / "ab", "ab", "SingleRow", "Batch32", "Batch256", "Mixed",
                   "Feedback", "AB")  # fmt: skip
    routes = ["POST /predict", "POST /predict [32 rows]", "POST /predict [256 rows]",
              f"POST /v2/models/{DEMO_MODEL}/infer", "POST /feedback", "POST /predict [keyed]"]  # fmt: skip
    for name in routes:
        assert int(stats.get(name, {}).get("Request Count", 0)) > 0, (name, sorted(stats))
    assert {"ARM champion", "ARM challenger"} <= set(stats)  # both arms served keyed users
    assert int(stats["Aggregated"]["Failure Count"]) == 0  # and no key changed arm

    stats = locust(gateway.url, tmp_path / "shadow", "shadow", "Shadow")
    assert int(stats["POST /predict"]["Request Count"]) > 0
    assert int(stats["Aggregated"]["Failure Count"]) == 0  # the champion answered every one
    assert registry.aliases(DEMO_MODEL).routing.mode == "off"  # each run put the routing back
