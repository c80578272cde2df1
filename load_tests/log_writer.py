"""How fast the log writer commits into each store, against the gateway's peak request rate.

    python load_tests/log_writer.py --records 50000 --peak 4300 [--postgres-url URL] --out FILE.md
    python load_tests/log_writer.py --sweep 1,2,4,8,16,32,64 [--batch 200] [--postgres-url URL] --out FILE.md
    python load_tests/log_writer.py --sweep 1,2,4,8,16 --store sqlite [--batch 10] --out FILE.md

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

``--sweep`` measures the append path alone, as the writers grow: PostgreSQL's
(the fleet's one log), or with ``--store sqlite`` one machine's log both ways
side by side: one file its workers' writers take turns at, and a file a
writer (``modelgate serve``'s default, ``MODELGATE_LOG_PARTITIONS``). For each
count of concurrent writers (each a process with its own connection, as each
worker of each replica has), every writer appends ``--records-per-writer``
single-row requests in batches of ``--batch`` (200: a worker's 50 ms at its
peak; 10: a worker at a tenth of it, where commits, not rows, are what the
fleet's writers queue for), encoded before the clock starts, so what is timed
is the store's transaction (insert, commit), not the writer's checks and
JSON; the table gives records/s (and for PostgreSQL commits/s, one
transaction a batch), and records/s over the first count's.
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
from monitoring.sink import LogWriter, encode
from monitoring.store import open_store
from registry.demo import build_demo
from registry.store import Registry

#: requests a batch by rows a request: what a worker's sink hands over every 50 ms at its peak
#: (~4,000 single-row, ~1,000 256-row requests/s)
BATCH = {1: 200, 256: 50}


def writer(
    location: str,
    registry: str,
    first: int,
    count: int,
    rows: int,
    ready: object,
    start: object,
    times: object,
    append_only: bool = False,
    per_batch: int | None = None,
    own_partition: bool = False,
) -> None:
    """One writer process: ``count`` requests of ``rows`` rows, ids from ``first``, in batches; puts
    (when it started writing, when it had committed the last batch) on ``times``. ``append_only``:
    the batches are encoded before the clock starts, and only the store's append is timed.
    ``per_batch``: requests a batch (else ``BATCH``'s). ``own_partition``: SQLite, a file of its own
    (as each of ``modelgate serve``'s log writers)."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the request lines, as a gateway's go to its stdout
    configure_logging()
    traffic = DemoTraffic(Registry(registry))
    per_batch = per_batch or BATCH[rows]
    batches = [traffic.records(i, min(per_batch, first + count - i), rows)
               for i in range(first, first + count, per_batch)]  # fmt: skip
    store = open_store(location, pool_size=1, own_partition=own_partition)
    log_writer = LogWriter(store.requests)
    encoded = [encode(batch) for batch in batches] if append_only else []
    ready.put(os.getpid())  # type: ignore[attr-defined]
    start.wait()  # type: ignore[attr-defined]
    began = time.time()
    if append_only:
        for records in encoded:
            store.requests.write(records)
    else:
        for batch in batches:
            log_writer.write(batch, final=False)
    times.put((began, time.time()))  # type: ignore[attr-defined]
    store.close()


def measure(
    location: str,
    registry: str,
    records: int,
    rows: int,
    writers: int,
    append_only: bool = False,
    per_batch: int | None = None,
    own_partition: bool = False,
) -> float:
    """Seconds from the first writer's start to the last one's last commit, ``writers`` processes
    committing ``records`` requests between them (each builds its batches before the start, which
    waits for them all)."""
    context = multiprocessing.get_context("spawn")
    ready, start, times = context.Queue(), context.Event(), context.Queue()
    share = records // writers
    processes = [
        context.Process(
            target=writer,
            args=(
                location,
                registry,
                w * share,
                share,
                rows,
                ready,
                start,
                times,
                append_only,
                per_batch,
                own_partition,
            ),
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=600)
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
    parser.add_argument("--sweep", help="writer counts, comma-separated: the append path as writers grow")
    parser.add_argument("--store", choices=("postgres", "sqlite"), default="postgres", help="with --sweep")
    parser.add_argument("--records-per-writer", type=int, default=2_000, help="with --sweep")
    parser.add_argument("--batch", type=int, default=BATCH[1], help="with --sweep: requests a transaction")
    parser.add_argument("--out", help="also write the result (markdown) here")
    args = parser.parse_args()
    if args.sweep:
        counts = [int(n) for n in args.sweep.split(",")]
        url = args.postgres_url if args.store == "postgres" else None
        return sweep(counts, args.records_per_writer, args.batch, args.store, url, args.out)
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


def sweep(
    counts: list[int], per_writer: int, batch: int, store: str, url: str | None, out: str | None
) -> int:
    """Commits/s and records/s into one log (PostgreSQL), or one machine's SQLite log two ways (one
    file the writers take turns at, and a file a writer), for each count of concurrent writers."""
    name = "PostgreSQL log" if store == "postgres" else "SQLite log"
    layouts = [False] if store == "postgres" else [False, True]
    header = (
        f"| writers | commits/s | records/s | records/s vs {counts[0]} writer(s) |\n|---:|---:|---:|---:|"
        if store == "postgres" else
        f"| writers | one file: records/s | vs {counts[0]} writer(s) | a file a writer: records/s "
        f"| vs {counts[0]} writer(s) | a file a writer / one file |\n|---:|---:|---:|---:|---:|---:|"
    )  # fmt: skip
    lines = [f"# Writers into one {name}, {datetime.date.today().isoformat()}", "",
             f"Machine: {machine()}.", "",
             f"Each writer: a process with its own connection appending {per_writer:,} single-row "
             f"demo-champion requests, {batch} a transaction, encoded before the clock starts: "
             "the store's append alone (`RequestLog.write`), as the fleet's writers contend for it.", "",
             header]  # fmt: skip
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="modelgate-writers-"))
        server = stack.enter_context(postgres(url)) if store == "postgres" else None
        registry = Path(tmp) / "registry"
        build_demo(Registry(registry))
        first: dict[bool, float] = {}
        for writers in counts:
            records = per_writer * writers
            rates: dict[bool, float] = {}
            for own in layouts:
                if server:
                    location = server
                    _truncate(location)
                else:
                    location = str(Path(tmp) / f"log-{writers}-{'parts' if own else 'one'}.sqlite3")
                took = measure(location, str(registry), records, 1, writers, append_only=True,
                               per_batch=batch, own_partition=own)  # fmt: skip
                rates[own] = records / took
                first.setdefault(own, rates[own])
            commits = writers * -(-per_writer // batch)
            if store == "postgres":
                rate = rates[False]
                ratio = rate / first[False]
                row = f"| {writers} | {commits * rate / records:,.0f} | {rate:,.0f} | {ratio:.2f}x |"
            else:
                row = (f"| {writers} | {rates[False]:,.0f} | {rates[False] / first[False]:.2f}x | "
                       f"{rates[True]:,.0f} | {rates[True] / first[True]:.2f}x | "
                       f"{rates[True] / rates[False]:.2f}x |")  # fmt: skip
            lines.append(row)
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return 0


def _truncate(url: str) -> None:
    """An empty request log for the next run (the schema made by the first open)."""
    import psycopg

    open_store(url, pool_size=1).close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("TRUNCATE requests")


if __name__ == "__main__":
    raise SystemExit(main())
