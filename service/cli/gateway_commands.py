"""The commands that run things: ``demo`` (build the demo registry), ``serve`` (the gateway) and
``simulate`` (demo traffic, drift and ground truth sent to a gateway)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING

from registry.store import ENV_VAR
from service.cli.common import CommandError, registry_of
from service.settings import Settings

if TYPE_CHECKING:
    from service.cli.common import Verbs


def cmd_demo(args: argparse.Namespace) -> int:
    from registry.demo import DEMO_MODEL, build_demo

    registry = registry_of(args)
    if DEMO_MODEL in registry.models():
        aliases = registry.aliases(DEMO_MODEL)
        print(f"demo registry already at {registry.root}: {DEMO_MODEL} champion v{aliases.champion}")
        return 0
    demo = build_demo(registry)
    print(
        f"demo registry built at {registry.root}: {DEMO_MODEL} "
        f"champion v{demo.champion.version} ({demo.champion.lineage.description}), "
        f"challenger v{demo.challenger.version} ({demo.challenger.lineage.description})"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    registry = registry_of(args)
    if not registry.models():
        print(
            f"error: registry {registry.root} holds no models; build the demo with "
            f"'modelgate demo --registry {registry.root}' or push one",
            file=sys.stderr,
        )
        return 1
    from service.server import run

    os.environ[ENV_VAR] = str(registry.root.resolve())
    os.environ["MODELGATE_WORKERS"] = str(args.workers)
    try:
        settings = Settings.from_env()  # a bad setting stops here, in one line, before any worker starts
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if settings.monitoring and settings.log_url:  # and so does a PostgreSQL it cannot reach
        from monitoring.store import open_store

        try:
            open_store(settings.log_url, pool_size=1).close()  # also creates or migrates the schema
        except ConnectionError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    print(f"serving {', '.join(registry.models())} from {registry.root} on http://{args.host}:{args.port}")
    sys.stdout.flush()
    run(args.host, args.port, args.workers)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from service.cli.simulate import (
        demo_rows,
        loop_summary,
        monitor_view,
        parse_drift,
        retraining_loop,
        send,
        summary,
    )

    if args.n < 1 or args.batch < 1 or args.concurrency < 1:
        raise CommandError("--n, --batch and --concurrency must be at least 1")
    frame, truth = demo_rows()
    try:
        shifts = parse_drift(args.drift, frame.columns)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    for name, shift in shifts.items():
        frame[name] = frame[name] + shift * frame[name].std()
    started = time.time()
    try:
        httpx.get(f"{args.url}/v2/health/ready", timeout=5).raise_for_status()
        outcome = asyncio.run(
            send(args.url, args.model, frame, truth, args.n, args.batch, args.concurrency, args.seed)
        )
        report, alerts = monitor_view(args.url, args.model, args.wait, time.time())
    except httpx.HTTPError as exc:
        raise CommandError(f"gateway at {args.url}: {exc}") from None
    print("\n".join(summary(outcome, report, alerts)))
    if args.loop:
        sys.stdout.flush()
        entries = retraining_loop(registry_of(args), args.model, started, max(args.wait, 0.0))
        print("\n".join(loop_summary(entries)))
    return 1 if outcome.failed else 0


def add_commands(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    demo = verbs.add_parser("demo", parents=[common], help="build the demo registry (breast-cancer models)")
    demo.set_defaults(func=cmd_demo)

    serve = verbs.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.set_defaults(func=cmd_serve)

    simulate = verbs.add_parser(
        "simulate",
        parents=[common],
        help="send demo traffic and ground truth to a gateway, optionally drifted",
    )
    simulate.add_argument("--url", default="http://localhost:3000", help="the gateway")
    simulate.add_argument("--model", default="breast-cancer", help="a model trained on the demo data")
    simulate.add_argument("--n", type=int, default=1000, help="requests to send")
    simulate.add_argument("--batch", type=int, default=1, help="rows a request")
    simulate.add_argument("--drift", action="append", default=[], metavar="FEATURE=SHIFT",
                          help="add SHIFT standard deviations to FEATURE (repeatable)")  # fmt: skip
    simulate.add_argument("--concurrency", type=int, default=8)
    simulate.add_argument("--wait", type=float, default=0.0, help="seconds to wait for an alert to fire")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--loop", action="store_true",
                          help="then follow the retraining an alert's action starts, up to --wait seconds, "
                               "in the audit trail of the gateway's --registry")  # fmt: skip
    simulate.set_defaults(func=cmd_simulate)
