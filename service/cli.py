"""The ``modelgate`` command: demo, serve, and the registry verbs."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.aliases import ROUTING_MODES, RoutingPolicy
from registry.errors import ModelNotFound, RegistryError
from registry.store import ENV_VAR, Registry
from service.settings import Settings

if TYPE_CHECKING:
    import numpy as np

    from monitoring.store import Store
    from registry.onnx_model import OnnxModel


class CommandError(Exception):
    """A command-line argument or file the command cannot use; printed as one line, exit 1."""


#: where ``make serve`` builds the demo registry (the Makefile's REGISTRY)
DEMO_REGISTRY = ".modelgate/demo"


def _registry(args: argparse.Namespace) -> Registry:
    return Registry.from_env(args.registry)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


def cmd_demo(args: argparse.Namespace) -> int:
    from registry.demo import DEMO_MODEL, build_demo

    registry = _registry(args)
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
    registry = _registry(args)
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


def cmd_push(args: argparse.Namespace) -> int:
    metrics = None
    if args.metrics:
        try:
            metrics = json.loads(args.metrics)
        except json.JSONDecodeError as exc:
            raise CommandError(f"--metrics is not valid JSON: {exc}") from None
        if not isinstance(metrics, dict):
            raise CommandError('--metrics must be a JSON object, e.g. {"auc": 0.97}')
    if args.evaluate and not args.target:
        raise CommandError("--evaluate needs --target: the label column of the reference and evaluation data")
    registry = _registry(args)
    manifest = registry.push(
        args.model,
        args.name,
        args.reference,
        description=args.description,
        metrics=metrics,
        target=args.target,
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else (),
        time_column=args.time_column,
    )
    schema = manifest.inputs
    inputs = (
        ", ".join(f"{t.name} {t.dtype} {['N', *t.sample_shape]}" for t in schema.tensors)
        if schema.layout == "tensor"
        else f"{len(schema.features)} features"
    )
    kind, digest = manifest.output.kind, manifest.sha256[:12]
    print(f"pushed {manifest.name}:{manifest.version} ({kind}, {inputs}, sha256 {digest})")
    if args.evaluate and registry.aliases(args.name).champion is not None:
        return _evaluate(args, registry, manifest.version, Path(args.evaluate), "evaluated at push")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    rows: list[dict[str, Any]] = []
    for name in registry.models():
        aliases = registry.aliases(name)
        versions = registry.versions(name)
        rows.append(
            {
                "name": name,
                "versions": versions,
                "champion": aliases.champion,
                "challenger": aliases.challenger,
            }
        )
    if args.json:
        _print_json(rows)
    elif not rows:
        print(f"no models in {registry.root}")
    else:
        print(f"{'MODEL':<24} {'VERSIONS':<10} {'CHAMPION':<9} {'CHALLENGER':<10}")
        for row in rows:
            print(
                f"{row['name']:<24} {len(row['versions']):<10} "
                f"{row['champion'] or '-'!s:<9} {row['challenger'] or '-'!s:<10}"
            )
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    registry = _registry(args)
    name, _, ref = args.ref.partition(":")
    version = registry.resolve(name, ref or "latest")
    manifest = registry.manifest(name, version)
    data = manifest.model_dump(mode="json")
    if not args.full:
        data["reference"] = {
            "sample_rows": manifest.reference.sample_rows,
            "features": sorted(manifest.reference.features),
            "predictions": sorted(manifest.reference.predictions),
            "note": "use --full for bins, counts and samples",
        }
        data["plausibility"]["inputs"] = (
            f"{len(manifest.plausibility.inputs)} input rules (--full lists them)"
        )
    _print_json(data)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    registry = _registry(args)
    problems = registry.verify(args.name)
    checked = [args.name] if args.name else registry.models()
    for problem in problems:
        print(f"MISMATCH {problem.name}:{problem.version} {problem.file}: {problem.problem}")
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    count = sum(len(registry.versions(n)) for n in checked)
    print(f"ok: {count} version(s) of {len(checked)} model(s) match their hashes")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    registry = _registry(args)
    entry = registry.promote(
        args.name, registry.resolve(args.name, args.version), args.to, reason=args.reason, force=args.force
    )
    print(f"{args.name}: {args.to} {entry.from_version or '-'} -> {entry.to_version}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The candidate against the champion on labelled data, overall and per segment; the verdict is
    kept in the audit trail, where a refusal stops the candidate's promotion to champion."""
    registry = _registry(args)
    return _evaluate(args, registry, registry.resolve(args.name, args.version), Path(args.data), args.reason)


class _TableData:
    """Labelled rows for a tabular model's evaluation: a CSV or Parquet table."""

    def __init__(self, data: Path, args: argparse.Namespace) -> None:
        from registry.store import read_reference

        self.data = data
        self.frame, _ = read_reference(data)
        missing = [c for c in [args.target, *args.segment] if c not in self.frame.columns]
        if missing:
            raise CommandError(
                f"--data {data}: no column {', '.join(map(repr, missing))}; "
                f"it has {', '.join(self.frame.columns)}"
            )
        self.truth: list[Any] = self.frame[args.target].tolist()
        self.segments = {column: self.frame[column].to_numpy() for column in args.segment}

    def feeds(self, model: OnnxModel, version: int) -> list[dict[str, Any]]:
        from registry.store import reference_feeds

        try:
            return [reference_feeds(model, self.frame)]
        except KeyError as exc:
            raise CommandError(
                f"--data {self.data}: version {version} needs the feature {exc}, not in the data"
            ) from None


class _TensorData:
    """Labelled samples for a tensor model's evaluation: a ``.npz`` with one array an input, the
    ``--target`` labels and each ``--segment``, one value a sample (or a ``.npy`` of the one input, with
    neither), run through the models a chunk at a time so a large holdout of images fits in memory."""

    CHUNK = 256

    def __init__(self, data: Path, args: argparse.Namespace) -> None:
        from registry.tensors import read_tensor_reference

        self.data = data
        self.arrays, truth = read_tensor_reference(data, args.target)
        assert truth is not None
        self.truth = truth.tolist()
        self.segments: dict[str, np.ndarray] = {}
        for column in args.segment:
            if column not in self.arrays:
                raise CommandError(
                    f"--data {data}: no array {column!r} for --segment; it has {', '.join(self.arrays)}"
                )
            values = self.arrays.pop(column)
            if values.ndim != 1:
                raise CommandError(
                    f"--data {data}: segment {column!r} has shape {list(values.shape)}; "
                    "give one value a sample"
                )
            self.segments[column] = values.astype(str)

    def feeds(self, model: OnnxModel, version: int) -> list[dict[str, Any]]:
        from registry.tensors import named, reference_arrays

        arrays = named(model.schema, self.arrays)
        for spec in model.schema.tensors:
            if spec.name not in arrays:
                raise CommandError(
                    f"--data {self.data}: version {version} needs the input {spec.name!r}, not in the data; "
                    f"it has {', '.join(sorted(arrays))}"
                )
            if not spec.fits(arrays[spec.name].shape):
                raise CommandError(
                    f"--data {self.data}: input {spec.name!r} of version {version} takes shape "
                    f"{spec.shown()}, the data has {list(arrays[spec.name].shape)}"
                )
        inputs = reference_arrays(model.schema, arrays)
        rows = len(self.truth)
        return [
            {name: array[start : start + self.CHUNK] for name, array in inputs.items()}
            for start in range(0, rows, self.CHUNK)
        ]


def _evaluate(args: argparse.Namespace, registry: Registry, candidate: int, data: Path, reason: str) -> int:
    """Evaluate ``candidate`` on ``data`` (``args``: name, target, segment, alpha, min_segment_rows,
    json), record and print the verdict; the exit code: 0 pass, 3 refuse."""
    import hashlib

    from monitoring.compare import correct
    from monitoring.evaluation import evaluate
    from registry.onnx_model import OnnxModel, load_session

    champion = registry.aliases(args.name).champion
    if champion is None:
        raise CommandError(f"{args.name} has no champion to evaluate version {candidate} against")
    if champion == candidate:
        raise CommandError(f"{args.name}:{candidate} is the champion; evaluate another version against it")
    manifests = {version: registry.manifest(args.name, version) for version in (champion, candidate)}
    for version, manifest in manifests.items():
        if manifest.output.kind == "embedding":
            raise CommandError(
                f"{args.name}:{version} answers embeddings: there is no label to score it against"
            )
    layouts = {version: m.inputs.layout == "tensor" for version, m in manifests.items()}
    if layouts[champion] != layouts[candidate]:
        tensors = next(v for v, tensor in layouts.items() if tensor)
        raise CommandError(
            f"{args.name}:{tensors} takes tensors and the other version a table: no data fits both"
        )
    labelled = _TensorData(data, args) if layouts[candidate] else _TableData(data, args)
    outcomes = []
    for version in (champion, candidate):
        manifest, model_bytes = registry.read_model(args.name, version)
        model = OnnxModel(load_session(model_bytes, 1), manifest.inputs, manifest.output)
        outputs: dict[str, list[Any]] = {}
        for feeds in labelled.feeds(model, version):
            prediction = model.predict(feeds)
            if prediction.values is not None:
                outputs.setdefault("value", []).extend(prediction.values.tolist())
            else:
                assert prediction.labels is not None
                outputs.setdefault("label", []).extend(prediction.labels.tolist())
        outcomes.append(correct(outputs, labelled.truth))
    evaluation = evaluate(
        outcomes[0],
        outcomes[1],
        labelled.segments,
        champion_version=champion,
        candidate_version=candidate,
        data=f"{data.name} sha256:{hashlib.sha256(data.read_bytes()).hexdigest()}",
        alpha=args.alpha,
        min_rows=args.min_segment_rows,
    )
    entry = registry.record_evaluation(args.name, evaluation, reason=reason)
    if args.json:
        _print_json(entry.model_dump(mode="json", by_alias=True))
    else:
        for c in [evaluation.overall, *evaluation.segments]:
            p = c.p_adjusted if c.p_adjusted is not None else c.p_value
            print(
                f"{c.segment or 'overall':<24} {c.rows:>6} rows  {c.metric} champion {c.champion.value:.4f} "
                f"[{c.champion.low:.4f}, {c.champion.high:.4f}]  candidate {c.candidate.value:.4f} "
                f"[{c.candidate.low:.4f}, {c.candidate.high:.4f}]  {c.test} p={p:.3g}"
            )
        print(
            f"{args.name}:{candidate} against champion {champion}: {evaluation.verdict} (audit #{entry.seq})"
        )
        for reason in evaluation.reasons:
            print(f"  {reason}")
    return 0 if evaluation.verdict == "pass" else 3


def cmd_rollback(args: argparse.Namespace) -> int:
    entry = _registry(args).rollback(args.name, reason=args.reason)
    print(f"{args.name}: champion rolled back {entry.from_version} -> {entry.to_version}")
    return 0


def _weight(text: str) -> float:
    """A share of requests: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1")
    return value


def _duration(text: str) -> float:
    from monitoring.export import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


CANARY_OPTIONS = {
    "step": "canary_step",
    "every": "canary_interval_seconds",
    "max_weight": "canary_max_weight",
    "min_requests": "canary_min_requests",
    "max_error_rate": "canary_max_error_rate",
    "max_error_ratio": "canary_max_error_ratio",
    "max_violation_rate": "canary_max_violation_rate",
    "max_latency_ratio": "canary_max_latency_ratio",
    "canary_alpha": "canary_alpha",
    "auto_promote": "auto_promote",
    "gate_on": "auto_promote_on",
    "gate_min_samples": "auto_promote_min_samples",
    "gate_max_latency_ratio": "auto_promote_max_latency_ratio",
}


def cmd_routing_set(args: argparse.Namespace) -> int:
    canary = {field: getattr(args, option) for option, field in CANARY_OPTIONS.items()}
    policy = RoutingPolicy(
        mode=args.mode,
        challenger_weight=args.challenger_weight,
        **{field: value for field, value in canary.items() if value is not None},
    )
    _registry(args).set_routing(args.name, policy, reason=args.reason)
    print(f"{args.name}: routing {_describe(policy)}")
    return 0


def cmd_routing_show(args: argparse.Namespace) -> int:
    aliases = _registry(args).aliases(args.name)
    if args.json:
        _print_json(aliases.routing.model_dump(mode="json"))
        return 0
    active = aliases.routing.mode == "off" or aliases.challenger is not None
    print(f"{args.name}: routing {_describe(aliases.routing)}" + ("" if active else " (no challenger: off)"))
    return 0


def _describe(policy: RoutingPolicy) -> str:
    if policy.mode in ("off", "shadow"):
        return policy.mode
    return f"{policy.mode}, challenger weight {policy.challenger_weight:g}"


def cmd_history(args: argparse.Namespace) -> int:
    entries = _registry(args).history(args.name)
    if args.json:
        _print_json([e.model_dump(mode="json", by_alias=True) for e in entries])
        return 0
    for e in entries:
        if e.routing is not None:
            change = _describe(e.routing)
        elif e.evaluation is not None:
            change = f"{e.to_version} vs {e.from_version}: {e.evaluation.verdict}"
        elif e.trigger is not None:
            change = f"{e.to_version}: {e.trigger.alertname} -> {e.trigger.target}"
        else:
            change = f"{e.alias or ''} {e.from_version or '-'} -> {e.to_version}".strip()
        print(f"{e.seq:>4} {e.at:%Y-%m-%d %H:%M:%S} {e.actor:<24} {e.action:<8} {change:<22} {e.reason}")
    return 0


def _store_location(args: argparse.Namespace) -> str:
    """The store the gateway would use for this registry: ``--log`` (a path or a postgresql:// URL),
    else ``MODELGATE_LOG_URL``, else ``MODELGATE_LOG_PATH``, else the file in the registry."""
    if args.log:
        return str(args.log)
    return replace(Settings.from_env(), registry=_registry(args).root).store_location


def _open_existing_store(args: argparse.Namespace) -> Store:
    """The store, which must exist already: a SQLite file is not created by a command that reads it."""
    from monitoring.store import is_postgres, open_store

    location = _store_location(args)
    if not is_postgres(location) and not Path(location).is_file():
        raise CommandError(
            f"no prediction log at {location}; the gateway writes it once it has answered requests"
        )
    try:
        return open_store(location, pool_size=1)
    except ConnectionError as exc:
        raise CommandError(str(exc)) from None


def cmd_log_export(args: argparse.Namespace) -> int:
    import pandas as pd

    from monitoring.export import parse_since, prediction_table

    output = Path(args.output)
    if output.suffix.lower() not in (".csv", ".parquet"):
        raise CommandError(f"-o {output}: use a .csv or .parquet file name")
    try:
        since = parse_since(args.since, time.time()) if args.since else None
    except ValueError as exc:
        raise CommandError(f"--since: {exc}") from None
    registry = _registry(args)
    store = _open_existing_store(args)
    try:
        records = store.requests.fetch(args.model, since)
        feedback = store.feedback.of(r.request_id for r in records)
    finally:
        store.close()
    classes = functools.cache(lambda name, version: registry.manifest(name, version).output.classes)
    table: pd.DataFrame = prediction_table(records, feedback, classes)
    if output.suffix.lower() == ".csv":
        table.to_csv(output, index=False)
    else:
        table.to_parquet(output, index=False)
    print(f"wrote {len(table)} rows ({len(records)} requests of {args.model}) to {output}")
    return 0


def cmd_log_prune(args: argparse.Namespace) -> int:
    from monitoring.export import parse_duration

    try:
        age = parse_duration(args.older_than)
    except ValueError as exc:
        raise CommandError(f"--older-than: {exc}") from None
    store = _open_existing_store(args)
    try:
        before = time.time() - age
        requests, feedback = store.requests.prune(before), store.feedback.prune(before)
    finally:
        store.close()
    print(
        f"pruned {requests} requests and {feedback} feedback entries older than {args.older_than} "
        f"from {store.location}"
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import asyncio

    import httpx

    from service.simulate import (
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
        entries = retraining_loop(_registry(args), args.model, started, max(args.wait, 0.0))
        print("\n".join(loop_summary(entries)))
    return 1 if outcome.failed else 0


def evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The options an evaluation takes, on ``registry evaluate`` and ``registry push --evaluate``."""
    parser.add_argument("--segment", action="append", default=[],
                        help="a column whose values are judged apart (repeatable)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=0.05, help="significance of a difference (0.05)")
    parser.add_argument("--min-segment-rows", type=int, default=100,
                        help="segments with fewer rows are shown, not judged (100)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="the evaluation's audit entry as JSON")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--registry",
        help=f"registry directory (default: ${ENV_VAR}, else .modelgate/registry)",
    )
    parser = argparse.ArgumentParser(prog="modelgate", description=__doc__)
    verbs = parser.add_subparsers(dest="command", required=True)

    demo = verbs.add_parser("demo", parents=[common], help="build the demo registry (breast-cancer models)")
    demo.set_defaults(func=cmd_demo)

    serve = verbs.add_parser("serve", parents=[common], help="run the gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3000)
    serve.add_argument("--workers", type=int, default=1, help="worker processes")
    serve.set_defaults(func=cmd_serve)

    registry = verbs.add_parser("registry", help="manage the model registry")
    reg = registry.add_subparsers(dest="verb", required=True)

    push = reg.add_parser("push", parents=[common], help="add a new version of a model")
    push.add_argument("model", help="the ONNX file")
    push.add_argument("--name", required=True)
    push.add_argument("--reference", required=True, help="reference (training) data: .csv or .parquet; "
                      "tensors as .npz (an array an input) or .npy (one input)")  # fmt: skip
    push.add_argument("--target", help="a label column in the reference data (an array of a .npz), left out "
                      "of the profile; a classifier's probabilities are calibrated on it")  # fmt: skip
    push.add_argument("--classes", help="a tensor classifier's class names in probability order, "
                      "comma-separated, when its graph declares none (default 0, 1, ...)")  # fmt: skip
    push.add_argument("--time-column", help="a column of when each reference row was seen (epoch seconds "
                      "or ISO 8601), left out of the inputs: drift is then judged against the same hours "
                      "of the day (daily cycles)")  # fmt: skip
    push.add_argument("--description", default="")
    push.add_argument("--metrics", help="free-form metrics as JSON, e.g. '{\"auc\": 0.97}'")
    push.add_argument(
        "--evaluate",
        metavar="DATA",
        help="then evaluate it against the champion on these labelled rows (as registry evaluate)",
    )
    evaluation_options(push)
    push.set_defaults(func=cmd_push)

    listing = reg.add_parser("list", parents=[common], help="models, version counts and aliases")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = reg.add_parser("show", parents=[common], help="a version's manifest")
    show.add_argument(
        "ref", metavar="NAME[:VERSION]", help="VERSION: a number, champion, challenger or latest"
    )
    show.add_argument("--full", action="store_true", help="include the whole reference profile")
    show.set_defaults(func=cmd_show)

    verify = reg.add_parser("verify", parents=[common], help="re-hash every stored file")
    verify.add_argument("name", nargs="?")
    verify.set_defaults(func=cmd_verify)

    promote = reg.add_parser("promote", parents=[common], help="point an alias at a version")
    promote.add_argument("name")
    promote.add_argument("version", help="a version number (or champion, challenger, latest)")
    promote.add_argument("--to", required=True, choices=["champion", "challenger"])
    promote.add_argument("--reason", default="")
    promote.add_argument("--force", action="store_true",
                         help="promote to champion even though its evaluation refused it")  # fmt: skip
    promote.set_defaults(func=cmd_promote)

    evaluate = reg.add_parser(
        "evaluate", parents=[common], help="a version against the champion on labelled data, per segment"
    )
    evaluate.add_argument("name")
    evaluate.add_argument("version", help="a version number (or challenger, latest)")
    evaluate.add_argument("--data", required=True,
                          help="labelled rows: .csv or .parquet (.npz for a tensor model)")  # fmt: skip
    evaluate.add_argument("--target", required=True, help="the column holding the truth")
    evaluation_options(evaluate)
    evaluate.add_argument("--reason", default="")
    evaluate.set_defaults(func=cmd_evaluate)

    rollback = reg.add_parser("rollback", parents=[common], help="put the previous champion back")
    rollback.add_argument("name")
    rollback.add_argument("--reason", default="")
    rollback.set_defaults(func=cmd_rollback)

    history = reg.add_parser("history", parents=[common], help="the audit history of a model")
    history.add_argument("name")
    history.add_argument("--json", action="store_true")
    history.set_defaults(func=cmd_history)

    routing = verbs.add_parser("routing", help="how requests are shared between champion and challenger")
    route = routing.add_subparsers(dest="verb", required=True)
    route_set = route.add_parser("set", parents=[common], help="store a model's routing policy (audited)")
    route_set.add_argument("name")
    route_set.add_argument("--mode", required=True, choices=ROUTING_MODES)
    route_set.add_argument("--challenger-weight", type=_weight, default=0.0,
                           help="the challenger's share of requests, 0 to 1 (ab, canary)")  # fmt: skip
    route_set.add_argument("--reason", default="")
    canary = route_set.add_argument_group("canary", "stepping and its limits (defaults: RoutingPolicy)")
    canary.add_argument("--step", type=_weight, help="weight added per healthy interval (0.1)")
    canary.add_argument("--every", type=_duration, help="interval between steps, e.g. 5m (5m)")
    canary.add_argument("--max-weight", type=_weight, help="the weight stepping stops at (0.5)")
    canary.add_argument("--min-requests", type=int, help="challenger requests before judging (50)")
    canary.add_argument("--max-error-rate", type=_weight, help="share not answered 200 (0.05)")
    canary.add_argument("--max-error-ratio", type=float, help="error odds over the champion's (1.0)")
    canary.add_argument("--max-violation-rate", type=float, help="share of rows with a violation (0.05)")
    canary.add_argument("--max-latency-ratio", type=float, help="latency over the champion's (1.5)")
    canary.add_argument("--canary-alpha", type=_weight, help="chance a healthy canary is stepped down (0.01)")
    gate = route_set.add_argument_group("promotion gate", "promote a better challenger by itself (off)")
    gate.add_argument("--auto-promote", action="store_true", default=None,
                      help="promote once better by the sequential evidence, no worse elsewhere")  # fmt: skip
    gate.add_argument("--gate-on", choices=("quality", "reward"),
                      help="ground truth, or /feedback's reward (A/B, canary) (quality)")  # fmt: skip
    gate.add_argument("--gate-min-samples", type=int, help="labelled rows an arm first needs (200)")
    gate.add_argument("--gate-max-latency-ratio", type=float, help="challenger p99 over champion p99 (1.2)")
    route_set.set_defaults(func=cmd_routing_set)
    route_show = route.add_parser("show", parents=[common], help="a model's routing policy")
    route_show.add_argument("name")
    route_show.add_argument("--json", action="store_true")
    route_show.set_defaults(func=cmd_routing_show)

    log_common = argparse.ArgumentParser(add_help=False, parents=[common])
    log_common.add_argument(
        "--log",
        help="the prediction log: a SQLite file or a postgresql:// URL "
        "(default: $MODELGATE_LOG_URL, else $MODELGATE_LOG_PATH, else in the registry)",
    )
    logs = verbs.add_parser("log", help="the prediction log").add_subparsers(dest="verb", required=True)
    export = logs.add_parser("export", parents=[log_common], help="predictions as a CSV or Parquet table")
    export.add_argument("--model", required=True)
    export.add_argument("--since", help="a duration back (24h, 7d) or an ISO date/time")
    export.add_argument("-o", "--output", required=True, help="FILE.parquet or FILE.csv")
    export.set_defaults(func=cmd_log_export)
    prune = logs.add_parser("prune", parents=[log_common], help="delete records past retention")
    prune.add_argument("--older-than", required=True, help="a duration: 30d, 12h, 2w")
    prune.set_defaults(func=cmd_log_prune)

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RegistryError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, ModelNotFound) and _default_registry(args) and Path(DEMO_REGISTRY).is_dir():
            print(f"hint: make serve's demo registry is {DEMO_REGISTRY}: add --registry {DEMO_REGISTRY} "
                  f"(or export {ENV_VAR}={DEMO_REGISTRY})", file=sys.stderr)  # fmt: skip
        return 1


def _default_registry(args: argparse.Namespace) -> bool:
    """Whether the command read the default registry: no --registry, no MODELGATE_REGISTRY."""
    return getattr(args, "registry", None) is None and not os.environ.get(ENV_VAR)
