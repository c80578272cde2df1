"""How fast are predictions explained? Explained rows a second on the demo's two versions, in the
process and through a gateway's ``POST /explain``.

    python load_tests/explain_speed.py --out load_tests/results/explain.md

The demo's challenger (gradient boosting, 100 trees of depth 3, 30 features) is explained by exact
TreeSHAP, path-dependent (the margin) and interventional (the probability, 100 background rows);
the champion (logistic regression) by permutation sampling. Each is timed on requests of
``--rows`` rows from the demo's test split, in the process (the explainer alone, after one untimed
call that builds it) and over HTTP against ``modelgate serve`` (one worker, sequential requests:
the time a caller waits, JSON both ways included).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import bench
import httpx

from registry.demo import DEMO_MODEL, demo_request
from registry.store import Registry
from service.explain.versions import VersionExplainer
from service.serving.pool import load_version
from service.serving.validation import instances_to_batch

CASES = (  # version, method, space
    (2, "tree", "margin"),
    (2, "tree", "probability"),
    (2, "sampling", "probability"),
    (1, "sampling", "probability"),
)


def in_process(registry: Registry, rows: int, seconds: float) -> list[tuple[int, str, str, float]]:
    results = []
    inputs = json.loads(demo_request(rows))["inputs"]
    for version, method, space in CASES:
        served = load_version(registry, DEMO_MODEL, version, warmup_rows=16, threads=1)
        explainer = VersionExplainer(served, registry.read_model(DEMO_MODEL, version)[1])
        batch = instances_to_batch(inputs, served.manifest.inputs, rows)
        explainer.explain(batch, method, space)  # type: ignore[arg-type]
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            explainer.explain(batch, method, space)  # type: ignore[arg-type]
            done += rows
        results.append((version, method, space, done / (time.perf_counter() - started)))
    return results


def over_http(
    registry: Registry, rows: int, seconds: float, workdir: Path
) -> list[tuple[int, str, str, float]]:
    features = registry.manifest(DEMO_MODEL, 1).inputs.names
    load = bench.loads(1, features, workdir)["records"]
    target = bench.start("gateway-on", registry.root, workdir, 1, load, Path(), None)
    results = []
    try:
        inputs = json.loads(demo_request(rows))["inputs"]
        with httpx.Client(base_url=target.url, timeout=120) as client:
            for version, method, space in CASES:
                body = {"inputs": inputs, "version": version, "method": method, "space": space}
                client.post("/explain", json=body).raise_for_status()
                done, started = 0, time.perf_counter()
                while time.perf_counter() - started < seconds:
                    client.post("/explain", json=body).raise_for_status()
                    done += rows
                results.append((version, method, space, done / (time.perf_counter() - started)))
    finally:
        target.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1,100", help="rows a request, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="timed seconds a case")
    parser.add_argument("--registry", help="a registry holding the demo model; default: build one")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args()
    lines = [f"# Explanation speed, {datetime.date.today()}", "", f"Machine: {bench.machine()}.",
             "Model: the demo's versions (breast-cancer: v1 logistic regression, v2 gradient boosting, "
             "100 trees of depth 3, 30 features).", "",
             "| rows a request | version | method | space | in-process rows/s | /explain rows/s |",
             "|---:|---:|---|---|---:|---:|"]  # fmt: skip
    with bench.demo_registry(args.registry) as root, tempfile.TemporaryDirectory() as tmp:
        registry = Registry(root)
        for rows in (int(r) for r in args.rows.split(",")):
            local = in_process(registry, rows, args.seconds)
            remote = over_http(registry, rows, args.seconds, Path(tmp))
            for (version, method, space, rate), (*_, http_rate) in zip(local, remote, strict=True):
                lines.append(f"| {rows} | {version} | {method} | {space} | {rate:,.0f} | {http_rate:,.0f} |")
                print(lines[-1], file=sys.stderr)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        Path(args.out).write_text(report)


if __name__ == "__main__":
    main()
