"""How fast do the pages draw? First contentful paint of each ``/ui`` view in Debian's Chromium, and
each view's data (its ``<main>``, one request), on the demo after it has served traffic.

    python load_tests/ui_paint.py --out load_tests/results/ui.md

A gateway (``modelgate serve``, one worker, the demo registry with its challenger in shadow) serves
``--requests`` requests of one row from ``modelgate simulate`` (ground truth included, ``mean_texture``
drifted), until the monitor has reported on them. Then each view is loaded ``--loads`` times, each
in a fresh browser context (nothing cached), and the paint read from the page's own Performance API.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench
import httpx
from playwright.sync_api import sync_playwright

from registry.aliases import RoutingPolicy
from registry.demo import DEMO_MODEL
from registry.store import Registry
from service.ui import pages

VIEWS = pages.paths(DEMO_MODEL)
#: the paint the browser reports first
PAINT = "performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? null"
#: the gateway's share: from sending the request to the answer's first byte
SERVER = "(e => e.responseStart - e.requestStart)(performance.getEntriesByType('navigation')[0])"


def traffic(url: str, requests: int) -> None:
    """``requests`` one-row requests and their ground truth, then the monitor's report on them."""
    subprocess.run(
        [sys.executable, "-m", "service", "simulate", "--url", url, "--n", str(requests),
         "--drift", "mean_texture=2", "--concurrency", "8"],
        check=True, capture_output=True, timeout=1800,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        report = httpx.get(f"{url}/monitoring/drift", params={"model": DEMO_MODEL}).json()
        if report.get("status") == "ok" and report.get("comparison"):
            return
        time.sleep(0.5)
    raise RuntimeError(f"no report after the traffic: {report}")


def paints(url: str, chromium: str, loads: int) -> dict[str, list[tuple[float, float]]]:
    """Each view's first contentful paint (ms from navigation) and the gateway's time to its first
    byte, ``loads`` cold loads each."""
    found: dict[str, list[tuple[float, float]]] = {view: [] for view in VIEWS}
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        for _ in range(loads):
            for view, path in VIEWS.items():
                context = browser.new_context(viewport={"width": 1280, "height": 1000})
                page = context.new_page()
                page.goto(url + path, wait_until="load")
                page.wait_for_function(f"({PAINT}) !== null", timeout=10_000)
                found[view].append((float(page.evaluate(PAINT)), float(page.evaluate(SERVER))))
                context.close()
        browser.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="requests served before the pages load")
    parser.add_argument("--loads", type=int, default=20, help="cold loads of each view")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--registry", help="a registry holding the demo model; default: build one")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args()
    with bench.demo_registry(args.registry) as root, tempfile.TemporaryDirectory() as tmp:
        registry = Registry(root)
        registry.set_routing(DEMO_MODEL, RoutingPolicy(mode="shadow"), reason="ui paint", actor="bench")
        load = bench.loads(1, registry.manifest(DEMO_MODEL, 1).inputs.names, Path(tmp))["records"]
        target = bench.start("gateway-on", root, Path(tmp), 1, load, Path(), None)
        try:
            traffic(target.url, args.requests)
            sizes = {
                view: len(httpx.get(target.url + path, params={"fragment": "1"}).content)
                for view, path in VIEWS.items()
            }
            found = paints(target.url, args.chromium, args.loads)
        finally:
            target.stop()
    lines = [f"# Pages: first paint and data, {datetime.date.today()}", "", f"Machine: {bench.machine()}.",
             f"The demo after {args.requests:,} one-row requests (challenger in shadow, ground truth sent, "
             f"one feature drifted); {args.loads} cold loads a view in Chromium (fresh context each).", "",
             "| view | first contentful paint, median (ms) | slowest (ms) "
             "| of which the gateway's, median (ms) | data: its <main> (bytes) |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for view in VIEWS:
        paint, server = [p for p, _ in found[view]], [s for _, s in found[view]]
        lines.append(f"| {view} | {statistics.median(paint):.0f} | {max(paint):.0f} | "
                     f"{statistics.median(server):.0f} | {sizes[view]:,} |")  # fmt: skip
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
