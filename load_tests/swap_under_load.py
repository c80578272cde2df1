"""Promote and roll back a model while a gateway is under load; count failed requests.

    python load_tests/swap_under_load.py --url http://127.0.0.1:3000 \
        --registry .modelgate/demo --model breast-cancer --to 2 --requests 3000 --swaps 6

Sends ``--requests`` /predict requests (``--concurrency`` at a time, rows taken
from the version's reference sample) while another process runs ``modelgate
registry promote MODEL TO --to champion`` and ``rollback`` in turn, ``--swaps``
times (with ``--admin-token``, the gateway's admin API instead). Prints one
JSON object: requests, failures (status or exception, first five kept),
requests/s, and how many answers each version gave. Exits 1 when any request
failed. Loopback only, bounded in count.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import subprocess
import sys
import time
from typing import Any

import httpx

from registry.store import Registry


def sample_records(registry: Registry, model: str, rows: int) -> list[dict[str, Any]]:
    """Rows of the champion's reference sample, as /predict records."""
    manifest = registry.manifest(model, registry.resolve(model))
    records: list[dict[str, Any]] = [{} for _ in range(min(rows, manifest.reference.sample_rows))]
    for name, profile in manifest.reference.features.items():
        for record, value in zip(records, profile.sample, strict=False):
            record[name] = value
    return records


def modelgate(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "service", *args], check=True, capture_output=True, timeout=60)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    registry = Registry(args.registry)
    body = {"model": args.model, "inputs": sample_records(registry, args.model, args.rows)}
    statuses: collections.Counter[str] = collections.Counter()
    versions: collections.Counter[str] = collections.Counter()
    failures: list[str] = []
    tickets = iter(range(args.requests))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for _ in tickets:
            try:
                response = await client.post("/predict", json=body)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                versions[str(response.json()["version"])] += 1
            else:
                failures.append(f"{response.status_code} {response.text[:200]}")

    async def swap(client: httpx.AsyncClient, promote: bool) -> None:
        if args.admin_token:  # through the gateway's admin API
            path = f"/admin/models/{args.model}/{'promote' if promote else 'rollback'}"
            answer = await client.post(
                path,
                json={"version": args.to, "reason": "swap_under_load"}
                if promote
                else {"reason": "swap_under_load"},
                headers={"Authorization": f"Bearer {args.admin_token}"},
            )
            answer.raise_for_status()
            return
        verb = (
            ("promote", args.model, str(args.to), "--to", "champion") if promote else ("rollback", args.model)
        )
        await asyncio.to_thread(modelgate, "registry", *verb, "--registry", args.registry,
                                "--reason", "swap_under_load")  # fmt: skip

    async def swap_loop(client: httpx.AsyncClient) -> int:
        for step in range(args.swaps):
            await asyncio.sleep(args.swap_every)
            await swap(client, promote=step % 2 == 0)
        return args.swaps

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=args.url, timeout=30) as client:
        swapper = asyncio.create_task(swap_loop(client))
        await asyncio.gather(*(client_loop(client) for _ in range(args.concurrency)))
        swaps = await swapper
    elapsed = time.perf_counter() - started
    return {
        "requests": args.requests,
        "failed": len(failures),
        "first_failures": failures[:5],
        "statuses": dict(statuses),
        "versions": dict(versions),
        "swaps": swaps,
        "seconds": round(elapsed, 2),
        "requests_per_second": round(args.requests / elapsed, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", default="http://127.0.0.1:3000")
    parser.add_argument("--registry", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--to", type=int, required=True, help="the version promoted to champion and back")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rows", type=int, default=4, help="rows a request")
    parser.add_argument("--swaps", type=int, default=6, help="promotions plus rollbacks")
    parser.add_argument("--swap-every", type=float, default=0.4, help="seconds between swaps")
    parser.add_argument("--admin-token", help="swap through the gateway's admin API (else the CLI)")
    args = parser.parse_args()
    report = asyncio.run(run(args))
    print(json.dumps(report))
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
