"""How fast the monitor catches up with a pre-filled prediction log, against the gateway's peak rate.

    python load_tests/monitor_ingest.py --records 100000 --peak 1400

Fills a fresh SQLite prediction log with ``--records`` single-row requests
of the demo champion (held-out rows, real predictions, plausibility checked,
encoded as the log writer does), then times the monitor process's own
pipeline over it from a cold start: ``Monitor.step`` (read the log in
batches, window every record, drift and plausibility reports per model,
each saved to the log) with the metrics' ``observe_report`` attached, as the
monitor process runs it. Prints records/s and its ratio to ``--peak`` (the
highest requests/s the gateway answered in ``bench.py``). Alerting and the
canary controller are left out: they read the reports, once a pass, not
the records.
"""

from __future__ import annotations

import argparse
import datetime
import tempfile
import time
from pathlib import Path

from bench import machine
from prometheus_client import CollectorRegistry

from monitoring.metrics import GatewayMetrics
from monitoring.monitor import Monitor, WindowSettings
from monitoring.prediction_log import SQLitePredictionLog
from monitoring.records import RequestRecord
from monitoring.sink import encode
from registry.demo import DEMO_MODEL, breast_cancer, build_demo
from registry.store import Registry
from service.pool import load_version
from service.validation import Batch

#: records encoded and written a batch, as the log writer commits them
WRITE_BATCH = 1000


def fill(registry: Registry, log: SQLitePredictionLog, records: int) -> float:
    """Write ``records`` single-row champion requests, spread over the last ten minutes; seconds taken."""
    served = load_version(registry, DEMO_MODEL, registry.resolve(DEMO_MODEL), warmup_rows=16, threads=1)
    _, x_test, _, _ = breast_cancer()
    rows = x_test[list(served.feature_names)].to_numpy(dtype="float32")
    predictions = [served.predict(Batch(rows=1, matrix=row.reshape(1, -1))) for row in rows]
    started = time.perf_counter()
    now = time.time()
    for start in range(0, records, WRITE_BATCH):
        batch = []
        for i in range(start, min(start + WRITE_BATCH, records)):
            j = i % len(rows)
            batch.append(RequestRecord(
                request_id=f"r{i}", ts=now - 600 + 600 * i / records, route="predict", status=200,
                latency_ms=1.0, model=DEMO_MODEL, version=served.version, rows=1,
                features=served.feature_names, matrix=rows[j].reshape(1, -1), prediction=predictions[j],
                classes=served.manifest.output.classes, checker=served.checker,
            ))  # fmt: skip
        log.write(encode(batch))
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--peak", type=float, help="the gateway's peak requests/s, for the ratio")
    parser.add_argument("--out", help="also write the result (markdown) here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelgate-ingest-") as tmp:
        registry = Registry(Path(tmp) / "registry")
        build_demo(registry)
        log = SQLitePredictionLog(Path(tmp) / "predictions.sqlite3")
        filled = fill(registry, log, args.records)
        monitor = Monitor(log, registry.manifest, WindowSettings())
        monitor.on_report = GatewayMetrics(CollectorRegistry()).observe_report
        started = time.perf_counter()
        read = monitor.step(time.time())
        took = time.perf_counter() - started
        log.close()
    rate = read / took
    lines = [
        f"# Monitor ingestion, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}.",
        "",
        f"- filled a SQLite prediction log with {args.records} single-row demo-champion records "
        f"in {filled:.1f} s",
        f"- the monitor read them in {took:.2f} s from a cold start: **{rate:,.0f} records/s**",
    ]
    if args.peak:
        lines.append(f"- {rate / args.peak:.1f}x the gateway's peak of {args.peak:,.0f} requests/s")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0 if read == args.records else 1


if __name__ == "__main__":
    raise SystemExit(main())
