"""``modelgate registry`` and ``modelgate routing``: versions pushed, listed, shown, verified,
evaluated, promoted and rolled back, the audit history, and the routing policy."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from monitoring.holdout import Holdout, run_evaluation
from registry.aliases import ALIASES, FIELD_ACTIONS, ROUTING_MODES, FieldAction, LogPolicy, RoutingPolicy
from registry.store import HISTORY_FILE, Registry, broken_links
from service.cli.common import CommandError, print_json, registry_of

if TYPE_CHECKING:
    from service.cli.common import Verbs


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
    registry = registry_of(args)
    manifest = registry.push(
        args.model,
        args.name,
        args.reference,
        description=args.description,
        metrics=metrics,
        target=args.target,
        classes=tuple(c.strip() for c in args.classes.split(",") if c.strip()) if args.classes else (),
        time_column=args.time_column,
        attributions=args.attributions,
    )
    schema = manifest.inputs
    inputs = (
        ", ".join(f"{t.name} {t.dtype} {['N', *t.sample_shape]}" for t in schema.tensors)
        if schema.layout == "tensor"
        else f"{len(schema.features)} features"
    )
    kind, digest = manifest.output.kind, manifest.sha256[:12]
    print(f"pushed {manifest.name}:{manifest.version} ({kind}, {inputs}, sha256 {digest})")
    if args.hash or args.drop or args.payload_rate is not None:
        _set_log_policy(registry, args, "set at push")
    if args.evaluate and registry.aliases(args.name).champion is not None:
        return _evaluate(args, registry, manifest.version, Path(args.evaluate), "evaluated at push")
    return 0


def cmd_log_policy(args: argparse.Namespace) -> int:
    """Set the model's log policy from the flags given, or show it when none is."""
    registry = registry_of(args)
    if args.hash or args.drop or args.keep or args.payload_rate is not None:
        _set_log_policy(registry, args, args.reason)
    print_json(registry.aliases(args.name).log_policy.model_dump(mode="json"))
    return 0


def _set_log_policy(registry: Registry, args: argparse.Namespace, reason: str) -> None:
    """The policy as it stands, changed by ``--hash``, ``--drop``, ``--keep`` and ``--payload-rate``."""
    current = registry.aliases(args.name).log_policy
    fields: dict[str, FieldAction] = dict(current.fields)
    for action in FIELD_ACTIONS:
        fields.update(dict.fromkeys(getattr(args, action, None) or [], action))
    rate = current.payload_rate if args.payload_rate is None else args.payload_rate
    try:
        policy = LogPolicy(fields={k: v for k, v in fields.items() if v != "keep"}, payload_rate=rate)
    except ValidationError as exc:
        raise CommandError(f"--payload-rate: {exc.errors()[0]['msg']}") from None
    registry.set_log_policy(args.name, policy, reason=reason)


def log_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hash", action="append", metavar="FEATURE",
                        help="log this feature's values as an HMAC under MODELGATE_LOG_HASH_KEY")  # fmt: skip
    parser.add_argument(
        "--drop", action="append", metavar="FEATURE", help="leave this feature out of the log"
    )
    parser.add_argument("--payload-rate", type=float, metavar="R",
                        help="the share of requests whose inputs and outputs are logged (0-1)")  # fmt: skip


def cmd_list(args: argparse.Namespace) -> int:
    registry = registry_of(args)
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
        print_json(rows)
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
    registry = registry_of(args)
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
    print_json(data)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.audit:
        return _verify_export(Path(args.audit))
    registry = registry_of(args)
    problems = registry.verify(args.name)
    checked = [args.name] if args.name else registry.models()
    for problem in problems:
        print(f"MISMATCH {problem.name}:{problem.version} {problem.file}: {problem.problem}")
    broken = [(name, link) for name in checked for link in registry.verify_history(name)]
    for name, link in broken:
        print(f"BROKEN {name} {HISTORY_FILE} {link}")
    if problems or broken:
        print(f"{len(problems) + len(broken)} problem(s) found", file=sys.stderr)
        return 1
    count = sum(len(registry.versions(n)) for n in checked)
    entries = sum(len(registry.history_lines(n)) for n in checked)
    print(f"ok: {count} version(s) of {len(checked)} model(s) match their hashes; "
          f"{entries} audit entries chain unbroken")  # fmt: skip
    return 0


def _verify_export(path: Path) -> int:
    """An exported audit history (``registry audit --out``) checked on its own."""
    try:
        lines = [line for line in path.read_bytes().split(b"\n") if line]
    except OSError as exc:
        print(f"error: {path}: {exc.strerror}", file=sys.stderr)
        return 2
    broken = broken_links(lines)
    for link in broken:
        print(f"BROKEN {path} {link}")
    if broken:
        print(f"{len(broken)} problem(s) found", file=sys.stderr)
        return 1
    print(f"ok: {len(lines)} audit entries chain unbroken")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """The audit history as stored: JSON lines, each with its predecessor's SHA-256."""
    data = b"".join(line + b"\n" for line in registry_of(args).history_lines(args.name))
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    registry = registry_of(args)
    entry = registry.promote(
        args.name, registry.resolve(args.name, args.version), args.to, reason=args.reason, force=args.force
    )
    print(f"{args.name}: {args.to} {entry.from_version or '-'} -> {entry.to_version}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """The candidate against the champion on labelled data, overall and per segment; the verdict is
    kept in the audit trail, where a refusal stops the candidate's promotion to champion."""
    registry = registry_of(args)
    return _evaluate(args, registry, registry.resolve(args.name, args.version), Path(args.data), args.reason)


def _evaluate(args: argparse.Namespace, registry: Registry, candidate: int, data: Path, reason: str) -> int:
    """Evaluate ``candidate`` on ``data`` (``args``: name, target, segment, alpha, min_segment_rows,
    json), record and print the verdict; the exit code: 0 pass, 3 refuse."""
    holdout = Holdout(args.name, candidate, data, args.target, tuple(args.segment), args.alpha,
                      args.min_segment_rows, reason)  # fmt: skip
    entry = run_evaluation(registry, holdout)
    evaluation = entry.evaluation
    assert evaluation is not None
    if args.json:
        print_json(entry.model_dump(mode="json", by_alias=True))
        return 0 if evaluation.verdict == "pass" else 3
    for c in [evaluation.overall, *evaluation.segments]:
        p = c.p_adjusted if c.p_adjusted is not None else c.p_value
        print(
            f"{c.segment or 'overall':<24} {c.rows:>6} rows  {c.metric} champion {c.champion.value:.4f} "
            f"[{c.champion.low:.4f}, {c.champion.high:.4f}]  candidate {c.candidate.value:.4f} "
            f"[{c.candidate.low:.4f}, {c.candidate.high:.4f}]  {c.test} p={p:.3g}"
        )
    champion = entry.from_version
    print(f"{args.name}:{candidate} against champion {champion}: {evaluation.verdict} (audit #{entry.seq})")
    for line in evaluation.reasons:
        print(f"  {line}")
    return 0 if evaluation.verdict == "pass" else 3


def cmd_rollback(args: argparse.Namespace) -> int:
    entry = registry_of(args).rollback(args.name, reason=args.reason)
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
    registry_of(args).set_routing(args.name, policy, reason=args.reason)
    print(f"{args.name}: routing {_describe(policy)}")
    return 0


def cmd_routing_show(args: argparse.Namespace) -> int:
    aliases = registry_of(args).aliases(args.name)
    if args.json:
        print_json(aliases.routing.model_dump(mode="json"))
        return 0
    active = aliases.routing.mode == "off" or aliases.challenger is not None
    print(f"{args.name}: routing {_describe(aliases.routing)}" + ("" if active else " (no challenger: off)"))
    return 0


def _describe(policy: RoutingPolicy) -> str:
    if policy.mode in ("off", "shadow"):
        return policy.mode
    return f"{policy.mode}, challenger weight {policy.challenger_weight:g}"


def cmd_history(args: argparse.Namespace) -> int:
    entries = registry_of(args).history(args.name)
    if args.json:
        print_json([e.model_dump(mode="json", by_alias=True) for e in entries])
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


def evaluation_options(parser: argparse.ArgumentParser) -> None:
    """The options an evaluation takes, on ``registry evaluate`` and ``registry push --evaluate``."""
    parser.add_argument("--segment", action="append", default=[],
                        help="a column whose values are judged apart (repeatable)")  # fmt: skip
    parser.add_argument("--alpha", type=float, default=0.05, help="significance of a difference (0.05)")
    parser.add_argument("--min-segment-rows", type=int, default=100,
                        help="segments with fewer rows are shown, not judged (100)")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="the evaluation's audit entry as JSON")


def add_commands(verbs: Verbs, common: argparse.ArgumentParser) -> None:
    _add_registry(verbs, common)
    _add_routing(verbs, common)


def _add_registry(verbs: Verbs, common: argparse.ArgumentParser) -> None:
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
    push.add_argument("--no-attributions", dest="attributions", action="store_false",
                      help="leave out the reference attributions (explanations on the reference sample, "
                      "which attribution drift is tested against): the model is run on its reference "
                      "rows only")  # fmt: skip
    push.add_argument("--description", default="")
    push.add_argument("--metrics", help="free-form metrics as JSON, e.g. '{\"auc\": 0.97}'")
    push.add_argument(
        "--evaluate",
        metavar="DATA",
        help="then evaluate it against the champion on these labelled rows (as registry evaluate)",
    )
    evaluation_options(push)
    log_policy_options(push)
    push.set_defaults(func=cmd_push)

    policy = reg.add_parser(
        "log-policy", parents=[common], help="what the prediction log keeps of a model's requests"
    )
    policy.add_argument("name")
    log_policy_options(policy)
    policy.add_argument("--keep", action="append", metavar="FEATURE", help="log this feature as sent again")
    policy.add_argument("--reason", default="")
    policy.set_defaults(func=cmd_log_policy)

    listing = reg.add_parser("list", parents=[common], help="models, version counts and aliases")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)

    show = reg.add_parser("show", parents=[common], help="a version's manifest")
    show.add_argument(
        "ref", metavar="NAME[:VERSION]", help="VERSION: a number, champion, challenger or latest"
    )
    show.add_argument("--full", action="store_true", help="include the whole reference profile")
    show.set_defaults(func=cmd_show)

    verify = reg.add_parser(
        "verify", parents=[common], help="re-hash every stored file and check the audit hash chains"
    )
    verify.add_argument("name", nargs="?")
    verify.add_argument("--audit", metavar="FILE", help="check an exported audit history instead")
    verify.set_defaults(func=cmd_verify)

    promote = reg.add_parser("promote", parents=[common], help="point an alias at a version")
    promote.add_argument("name")
    promote.add_argument("version", help="a version number (or champion, challenger, latest)")
    promote.add_argument("--to", required=True, choices=ALIASES)
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

    audit = reg.add_parser(
        "audit", parents=[common], help="export a model's audit history: JSON lines in a hash chain"
    )
    audit.add_argument("name")
    audit.add_argument("--out", metavar="FILE", help="write here instead of stdout")
    audit.set_defaults(func=cmd_audit)


def _add_routing(verbs: Verbs, common: argparse.ArgumentParser) -> None:
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
