"""How fast the log writer commits into each store, against the gateway's peak request rate.

    python load_tests/log_writer.py --records 50000 --peak 4300 [--postgres-url URL] --out FILE.md

Each writer process does what a gateway's log writer does with a batch
(``LogWriter.write``: plausibility checks, the request metrics, one JSON
line a request to stdout, here /dev/null, and the commit), over batches of
demo-champion records as a worker hands them over at its peak (200 single-row
requests every 50 ms). Measured per store: SQLite (a file) and PostgreSQL
(``--postgres-url``, else a throwaway server from the Debian package with its
default durability: fsync on), with one writer and with ``--writers``
concurrent ones (a deployment's workers across replicas, all committing to one
log), single-row and 256-row requests. Prints records/s and rows/s, and the
ratio of single-row records/s to ``--peak``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import machine
from monitor_ingest import DemoTraffic
from postgres_server import local_postgres

from monitoring.logs import configure_logging
from monitoring.sink import LogWriter
from monitoring.store import open_store
from registry.demo import build_demo
from registry.store import Registry

#: requests a batch by rows a request: what a worker's sink hands over every 50 ms at its peak
#: (~4,000 single-row, ~1,000 256-row requests/s)
BATCH = {1: 200, 256: 50}


def writer(
    location: str, registry: str, first: int, count: int, rows: int, start: object, times: object
) -> None:
    """One writer process: ``count`` requests of ``rows`` rows, ids from ``first``, in batches; puts
    (when it started writing, when it had committed the last batch) on ``times``."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the request lines, as a gateway's go to its stdout
    configure_logging()
    traffic = DemoTraffic(Registry(registry))
    per_batch = BATCH[rows]
    batches = [traffic.records(i, min(per_batch, first + count - i), rows)
               for i in range(first, first + count, per_batch)]  # fmt: skip
    store = open_store(location, pool_size=1)
    log_writer = LogWriter(store.requests)
    start.wait()  # type: ignore[attr-defined]
    began = time.time()
    for batch in batches:
        log_writer.write(batch, final=False)
    times.put((began, time.time()))  # type: ignore[attr-defined]
    store.close()


def measure(location: str, registry: str, records: int, rows: int, writers: int) -> float:
    """Seconds from the first writer's start to the last one's last commit, ``writers`` processes
    committing ``records`` requests between them (each builds its batches before the start)."""
    context = multiprocessing.get_context("spawn")
    start, times = context.Event(), context.Queue()
    share = records // writers
    processes = [
        context.Process(target=writer, args=(location, registry, w * share, share, rows, start, times))
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    time.sleep(max(3.0, 0.0002 * records))
    start.set()
    spans = [times.get(timeout=600) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"a writer exited with {process.exitcode}")
    return max(end for _, end in spans) - min(began for began, _ in spans)


@contextlib.contextmanager
def postgres(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    with local_postgres() as server:
        yield server.url()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=50_000, help="single-row requests a run")
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers in the second run")
    parser.add_argument("--peak", type=float, help="the gateway's peak requests/s, for the ratio")
    parser.add_argument("--postgres-url", help="an empty database to write into (else a throwaway server)")
    parser.add_argument("--out", help="also write the result (markdown) here")
    args = parser.parse_args()
    lines = [f"# Log writer throughput, {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}.", "",
             f"Batches of {BATCH[1]} single-row or {BATCH[256]} 256-row demo-champion requests through "
             "`LogWriter.write` (checks, metrics, log lines to /dev/null, commit).", "",
             "| store | writers | request rows | requests/s | rows/s | single-row requests/s vs peak |",
             "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="modelgate-writer-") as tmp, postgres(args.postgres_url) as url:
        registry = Path(tmp) / "registry"
        build_demo(Registry(registry))
        runs = [(1, 1, args.records), (args.writers, 1, args.records), (1, 256, args.records // 100)]
        for name in ("sqlite", "postgres"):
            for writers, rows, records in runs:
                if name == "postgres":
                    location = url
                    _truncate(url)
                else:
                    location = str(Path(tmp) / f"log-{writers}-{rows}.sqlite3")
                took = measure(location, str(registry), records, rows, writers)
                rate = records / took
                ratio = f"{rate / args.peak:.1f}x" if args.peak and rows == 1 else ""
                lines.append(f"| {name} | {writers} | {rows} | {rate:,.0f} | {rate * rows:,.0f} | {ratio} |")
                print(lines[-1], flush=True)
    if args.peak:
        lines += ["", f"Peak: {args.peak:,.0f} requests/s (the monitored gateway's, from bench.py)."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


def _truncate(url: str) -> None:
    """An empty request log for the next run (the schema made by the first open)."""
    import psycopg

    open_store(url, pool_size=1).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("TRUNCATE requests")


if __name__ == "__main__":
    raise SystemExit(main())
