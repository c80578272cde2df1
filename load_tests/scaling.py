"""Does monitoring scale with the machine? The gateway with monitoring off and on, over worker counts.

    python load_tests/scaling.py --workers 1,2,4,8,14 --rows 1,64 --out load_tests/results/scaling.md

For each worker count and request size, ``modelgate serve --workers N`` is started twice on the demo
model, ``MODELGATE_MONITORING=false`` and ``true`` (the SQLite log), and wrk loads them in turn
(``--rounds`` alternating rounds, ``--threads`` threads and ``--connections`` connections on the same
host) as fast as answered; the table gives requests/s of each (medians), monitoring's cost as the
ratio on/off paired by round, p99 latency, and each one's scaling over the smallest worker count. The
monitored gateway's log is counted after a graceful stop and must hold every answered request.
Uses ``bench.py``'s targets and wrk runner. wrk shares the machine: on a few cores it takes a core
the gateway would use, so the sweep says something past 2 workers only on a machine with cores to
spare (the load generator's CPU is reported).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import tempfile
import time
from pathlib import Path

import bench
import challengers

from registry.store import Registry


def cell(
    registry: Path, workers: int, rows: int, args: argparse.Namespace
) -> dict[str, list[bench.Measurement]]:
    """One worker count and request size: each target's measured rounds."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        features = challengers.champion(Registry(registry))[0].inputs.names
        load = bench.loads(rows, features, workdir)["records"]
        script = workdir / "post.lua"
        script.write_text(bench.WRK_SCRIPT)
        targets: list[bench.Target] = []
        try:
            for name in ("gateway-off", "gateway-on"):
                targets.append(bench.start(name, registry, workdir, workers, load, Path(), None))
            for target in targets:
                bench.wrk(target, script, args.warmup, args.connections, threads=args.threads)
            for round_ in range(args.rounds):
                for target in targets if round_ % 2 == 0 else targets[::-1]:
                    time.sleep(args.rest)
                    measured = bench.wrk(
                        target, script, args.duration, args.connections, threads=args.threads
                    )
                    target.rounds.append(measured)
                    print(f"{workers} workers, {rows} rows, {target.name}: {measured.rate:.0f} requests/s",
                          file=sys.stderr)  # fmt: skip
        finally:
            for target in targets:
                target.stop()
        report: list[str] = []
        failures = bench.accounted(targets, report)
        if failures:
            raise SystemExit("\n".join(failures + report))
        return {target.name: target.rounds for target in targets}


def lines(
    results: dict[tuple[int, int], dict[str, list[bench.Measurement]]], args: argparse.Namespace
) -> list[str]:
    rows_list = sorted({rows for _, rows in results})
    out = [
        f"# Monitoring over worker counts, {datetime.date.today().isoformat()}",
        "",
        f"Machine: {bench.machine()}.",
        f"The demo model, `modelgate serve --workers N`, SQLite log; "
        f"wrk -t{args.threads} -c{args.connections} on the same host, "
        f"{args.rounds} alternating rounds of {args.duration} s; medians.",
        "",
        "| workers | rows a request | off: requests/s | on: requests/s | on/off (rounds) | off p99 ms "
        "| on p99 ms | off scaling | on scaling | wrk CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in rows_list:
        first = min(workers for workers, r in results if r == rows)
        base = {name: statistics.median(m.rate for m in runs) for name, runs in results[first, rows].items()}
        for workers in sorted(w for w, r in results if r == rows):
            measured = results[workers, rows]
            off, on = measured["gateway-off"], measured["gateway-on"]
            rate = {name: statistics.median(m.rate for m in runs) for name, runs in measured.items()}
            ratios = [b.rate / a.rate for a, b in zip(off, on, strict=True)]
            wrk_cpu = max(m.wrk_cpu_s / m.seconds for runs in measured.values() for m in runs)
            out.append(
                f"| {workers} | {rows} | {rate['gateway-off']:,.0f} | {rate['gateway-on']:,.0f} "
                f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f}) "
                f"| {statistics.median(m.p99_us for m in off) / 1000:.2f} "
                f"| {statistics.median(m.p99_us for m in on) / 1000:.2f} "
                f"| {rate['gateway-off'] / base['gateway-off']:.2f}x "
                f"| {rate['gateway-on'] / base['gateway-on']:.2f}x "
                f"| {100 * wrk_cpu:.0f}% |"
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--rows", default="1,64", help="rows a request, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds a measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rest", type=float, default=2)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--registry", help="a registry holding the demo model; default: build one")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {}
    with bench.demo_registry(args.registry) as registry:
        for rows in (int(r) for r in args.rows.split(",")):
            for workers in (int(w) for w in args.workers.split(",")):
                results[workers, rows] = cell(registry, workers, rows, args)
    text = "\n".join(lines(results, args)) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
