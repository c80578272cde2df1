"""The pages in a real browser: Debian's headless Chromium, driven by Playwright, on a real gateway
process that served the demo's traffic with one feature drifted (``modelgate simulate --drift``).

Each view loads with no console error and no request outside the gateway, passes axe-core's
accessibility rules with no serious or critical violation, and is saved as a screenshot (into
``MODELGATE_SCREENSHOTS`` when set, as ``make screenshots`` does for the README; else the test's
temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from registry.aliases import RoutingPolicy
from registry.demo import DEMO_MODEL, breast_cancer, build_demo
from registry.store import Registry
from service.cli import main
from service.ui import pages

playwright = pytest.importorskip("playwright.sync_api")
axe_playwright = pytest.importorskip("axe_playwright_python.sync_playwright")

DRIFTED = "worst_radius"
VIEWS = pages.paths(DEMO_MODEL)


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("MODELGATE_SCREENSHOTS")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def drifted_gateway(gateway_factory, tmp_path):
    """The demo behind a gateway: challenger in shadow, evaluated on held-out rows, then 600 requests
    of 5 rows with ``DRIFTED`` shifted by 3 standard deviations, and their ground truth."""
    registry = Registry(tmp_path / "registry")
    build_demo(registry)
    registry.set_routing(DEMO_MODEL, RoutingPolicy(mode="shadow"), reason="ui test", actor="tests")
    _, x_test, _, y_test = breast_cancer()
    held_out = tmp_path / "held_out.csv"
    x_test.assign(diagnosis=y_test.to_numpy()).to_csv(held_out, index=False)
    evaluated = main(["registry", "evaluate", DEMO_MODEL, "challenger", "--registry", str(registry.root),
                      "--data", str(held_out), "--target", "diagnosis"])  # fmt: skip
    assert evaluated in (0, 3)  # pass or refuse: either is a verdict the history shows
    gateway = gateway_factory(registry, MODELGATE_MONITOR_INTERVAL="0.5")
    completed = subprocess.run(
        [sys.executable, "-m", "service", "simulate", "--url", gateway.url, "--n", "600", "--batch", "5",
         "--drift", f"{DRIFTED}=3"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # the monitor's report on the drifted window, with the shadow
        report = httpx.get(f"{gateway.url}/monitoring/drift", params={"model": DEMO_MODEL}).json()
        flagged = {s["name"] for s in report.get("features", []) if s["drifted"]}
        if DRIFTED in flagged and report.get("comparison"):
            return gateway
        time.sleep(0.5)
    raise AssertionError(f"no report flagging {DRIFTED}: {report}")


@pytest.mark.slow
def test_every_view_renders_in_chromium_accessible_and_self_contained(tool, drifted_gateway, screenshots):
    chromium = tool("chromium")
    base = drifted_gateway.url
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        errors: list[str] = []
        outside: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("request", lambda r: None if r.url.startswith((base, "data:")) else outside.append(r.url))
        axe = axe_playwright.Axe()
        for view, path in VIEWS.items():
            answer = page.goto(base + path)
            assert answer is not None and answer.status == 200, view
            assert page.locator("h1").first.is_visible()
            serious = [
                f"{v['id']}: {v['help']} ({len(v['nodes'])} nodes)"
                for v in axe.run(page).response["violations"]
                if v["impact"] in ("serious", "critical")
            ]
            assert serious == [], f"{view}: {serious}"
            page.screenshot(path=str(screenshots / f"{view}.png"), full_page=view not in ("drift", "card"))
        assert errors == [] and outside == []

        # the drifted feature is flagged first, its chart drawn; the view refreshes itself in place
        page.goto(base + VIEWS["drift"])
        first = page.locator("table.drift tbody tr").first
        assert first.get_attribute("data-feature") == DRIFTED and "flagged" in first.inner_text()
        assert first.locator("svg[role=img] rect").count() >= 4
        page.wait_for_function("document.getElementById('refreshed').textContent.startsWith('updated')",
                               timeout=15_000)  # fmt: skip
        assert page.locator(f'tr[data-feature="{DRIFTED}"].flagged').count() == 1
        assert "minutes with something flagged" in page.locator("svg.strip").get_attribute("aria-label")

        # quality over time (the kept minutes) and the gate's evidence, drawn
        page.goto(base + VIEWS["quality"])
        assert page.locator("svg.series polyline").count() >= 2 and "e-value" in page.inner_text("main")

        # the cards: what the model is, its reference data's hash; the challenger's evaluation verdict
        page.goto(base + VIEWS["card"])
        card = page.locator("article.card").inner_text()
        assert "Model card: breast-cancer v1" in card and "champion" in card
        assert "SHA-256" in card and "30 inputs" in card
        page.goto(f"{base}/models/{DEMO_MODEL}/versions/challenger/card")
        evaluation = page.locator("article.card").inner_text()
        assert "Against champion v1 on held_out.csv" in evaluation

        # without JavaScript the drift view is whole as served
        static = browser.new_page(java_script_enabled=False)
        static.goto(base + VIEWS["drift"])
        assert static.locator(f'tr[data-feature="{DRIFTED}"].flagged').count() == 1
        browser.close()

    # each view's data is one request (its <main>, what a refresh fetches) of at most 200 KB
    for view, path in VIEWS.items():
        fragment = httpx.get(f"{base}{path}", params={"fragment": "1"})
        assert fragment.status_code == 200 and "<html" not in fragment.text
        assert len(fragment.content) <= 200_000, (view, len(fragment.content))
