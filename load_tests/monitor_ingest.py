"""How fast the monitor catches up with a pre-filled prediction log, against the gateway's peak rate.

    python load_tests/monitor_ingest.py --records 100000 --peak 1400
    python load_tests/monitor_ingest.py --records 100000 --models 8 --shards 1,2,4

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

``--models M --shards 1,2,...``: the records are spread over M models (the
demo champion under M names), and for each count N, N monitor processes
each take a shard of them (``MODELGATE_MONITOR_SHARDS``, ``monitoring.shards``)
and catch up at once; records/s is all records over the time from their
common start to the last one's end, beside one monitor's.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench import machine
from prometheus_client import CollectorRegistry

from monitoring.metrics import GatewayMetrics
from monitoring.monitor import Monitor
from monitoring.records import RequestRecord
from monitoring.shards import Shard
from monitoring.sink import encode
from monitoring.store import RequestLog
from monitoring.store.sqlite import open_sqlite
from monitoring.windows import WindowSettings
from registry.demo import DEMO_MODEL, breast_cancer, build_demo
from registry.store import Registry
from service.serving.pool import load_version
from service.serving.validation import Batch

#: records encoded and written a batch, as the log writer commits them
WRITE_BATCH = 1000


class DemoTraffic:
    """Records of the demo champion's requests as a worker builds them: held-out rows, real predictions,
    the version's plausibility checker attached (the log writer checks them)."""

    def __init__(self, registry: Registry) -> None:
        self.served = load_version(
            registry, DEMO_MODEL, registry.resolve(DEMO_MODEL), warmup_rows=16, threads=1
        )
        _, x_test, _, _ = breast_cancer()
        self.rows = x_test[list(self.served.feature_names)].to_numpy(dtype="float32")

    def records(self, start: int, count: int, rows: int = 1, ts: float | None = None) -> list[RequestRecord]:
        """``count`` requests of ``rows`` rows each, ids from ``start``."""
        served, now = self.served, time.time() if ts is None else ts
        made = []
        for i in range(start, start + count):
            matrix = np.resize(np.roll(self.rows, -i, axis=0), (rows, self.rows.shape[1]))
            made.append(RequestRecord(
                request_id=f"r{i}", ts=now, route="predict", status=200, latency_ms=1.0, model=DEMO_MODEL,
                version=served.version, rows=rows, features=served.feature_names, matrix=matrix,
                prediction=served.predict(Batch(rows=rows, matrix=matrix)),
                classes=served.manifest.output.classes, checker=served.checker,
            ))  # fmt: skip
        return made


def fill(registry: Registry, log: RequestLog, records: int, models: int = 1) -> float:
    """Write ``records`` single-row champion requests, spread over the last ten minutes (and, with
    ``models`` > 1, over that many names, ``model_name``); seconds taken."""
    traffic = DemoTraffic(registry)
    started = time.perf_counter()
    now = time.time()
    for start in range(0, records, WRITE_BATCH):
        count = min(WRITE_BATCH, records - start)
        batch = traffic.records(start, count, ts=now - 600 + 600 * start / records)
        if models > 1:
            batch = [dataclasses.replace(r, model=model_name(i % models)) for i, r in enumerate(batch)]
        log.write(encode(batch))
    return time.perf_counter() - started


def model_name(index: int) -> str:
    return f"{DEMO_MODEL}-{index}"


def catch_up(
    log_path: str,
    registry_root: str,
    names: list[str],
    shard: tuple[int, int],
    ready: object,
    start: object,
    times: object,
) -> None:
    """One monitor process of a shard, reading its share of the models ``names`` as the monitor
    process does (``RequestLog.read_share``): wait for the start, read the whole log, report, save."""
    store = open_sqlite(Path(log_path))
    registry = Registry(registry_root)
    manifests = functools.lru_cache(maxsize=None)(
        lambda _model, version: registry.manifest(DEMO_MODEL, version)
    )
    monitor = Monitor(
        store.requests, store.feedback, store.reports, manifests, WindowSettings(), Shard(*shard),
        models=lambda: names,
    )  # fmt: skip
    ready.put(os.getpid())  # type: ignore[attr-defined]
    start.wait()  # type: ignore[attr-defined]
    began, now = time.time(), time.time()
    read = monitor.tail(now)
    monitor.save(monitor.reports(now), now)
    times.put((began, time.time(), read))  # type: ignore[attr-defined]
    store.close()


def shared(log_path: str, registry_root: str, names: list[str], shards: int) -> float:
    """Seconds for ``shards`` monitor processes, one a shard, to catch up with the log together."""
    context = multiprocessing.get_context("spawn")
    ready, start, times = context.Queue(), context.Event(), context.Queue()
    processes = [
        context.Process(
            target=catch_up, args=(log_path, registry_root, names, (i, shards), ready, start, times)
        )
        for i in range(shards)
    ]
    for process in processes:
        process.start()
    for _ in processes:  # each has imported and opened the log
        ready.get(timeout=600)
    start.set()
    spans = [times.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
    return max(end for _, end, _ in spans) - min(began for began, _, _ in spans)


def sweep(records: int, models: int, counts: list[int], out: str | None) -> int:
    lines = [
        f"# Monitors sharing the models, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {machine()}.",
        "",
        f"A SQLite log of {records:,} single-row records over {models} models (the demo champion "
        "under as many names), read from a cold start by N monitor processes, one a shard "
        "(`monitoring.shards`), started together: all records over the time to the last one's end.",
        "",
        "| monitors (shards) | seconds | records/s | vs 1 |",
        "|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory(prefix="modelgate-shards-") as tmp:
        registry = Registry(Path(tmp) / "registry")
        build_demo(registry)
        log_path = Path(tmp) / "predictions.sqlite3"
        store = open_sqlite(log_path)
        fill(registry, store.requests, records, models)
        store.close()
        first = None
        for count in counts:
            names = [model_name(i) for i in range(models)] if models > 1 else [DEMO_MODEL]
            took = shared(str(log_path), str(registry.root), names, count)
            first = first or records / took
            lines.append(f"| {count} | {took:.2f} | {records / took:,.0f} | {records / took / first:.2f}x |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--peak", type=float, help="the gateway's peak requests/s, for the ratio")
    parser.add_argument("--out", help="also write the result (markdown) here")
    parser.add_argument("--models", type=int, default=1, help="with --shards: models the records spread over")
    parser.add_argument("--shards", help="monitor counts, comma-separated: monitors sharing the models")
    args = parser.parse_args()
    if args.shards:
        return sweep(args.records, args.models, [int(n) for n in args.shards.split(",")], args.out)
    with tempfile.TemporaryDirectory(prefix="modelgate-ingest-") as tmp:
        registry = Registry(Path(tmp) / "registry")
        build_demo(registry)
        store = open_sqlite(Path(tmp) / "predictions.sqlite3")
        filled = fill(registry, store.requests, args.records)
        monitor = Monitor(store.requests, store.feedback, store.reports, registry.manifest, WindowSettings())
        metrics = GatewayMetrics(CollectorRegistry())
        started = time.perf_counter()
        now = time.time()
        read = monitor.tail(now)
        reports = monitor.reports(now)
        monitor.save(reports, now)
        for body in reports.values():
            metrics.observe_report(body)
        took = time.perf_counter() - started
        store.close()
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
