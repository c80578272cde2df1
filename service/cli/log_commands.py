"""``modelgate log``: the prediction log exported as a table, pruned past retention, or a person's
records erased."""

from __future__ import annotations

import argparse
import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from service.cli.common import CommandError, registry_of
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.store import Store
    from service.cli.common import Verbs


def _store_location(args: argparse.Namespace) -> str:
    """The store the gateway would use for this registry: ``--log`` (a path or a postgresql:// URL),
    else ``MODELGATE_LOG_URL``, else ``MODELGATE_LOG_PATH``, else the file in the registry."""
    if args.log:
        return str(args.log)
    return replace(Settings.from_env(), registry=registry_of(args).root).store_location


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
    registry = registry_of(args)
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


def cmd_log_erase(args: argparse.Namespace) -> int:
    """A person's records and feedback out of the store, audited in each model's trail by counts."""
    from monitoring.erasure import erase, requests_of
    from monitoring.redaction import Redactor
    from registry.aliases import Erasure

    field = value = None
    if args.subject:
        field, sep, value = args.subject.partition("=")
        if not sep or not field:
            raise CommandError("--subject: expected FIELD=VALUE, e.g. --subject customer_id=C-1042")
    registry = registry_of(args)
    redactor = Redactor(Settings.from_env().log_hash_key)
    store = _open_existing_store(args)
    try:
        found = requests_of(store, field=field, value=value, request_ids=args.request_id or (),
                            redactor=redactor, model=args.model)  # fmt: skip
        erased = erase(store, found)
    finally:
        store.close()
    by = f"subject {field}" if field is not None else "request_id"
    for model in sorted(set(erased.records) | set(erased.feedback), key=str):
        if model is not None and model in registry.models():
            counts = Erasure(by=by, records=erased.records[model], feedback=erased.feedback[model])
            registry.record_erasure(model, counts)
    records, feedback = sum(erased.records.values()), sum(erased.feedback.values())
    print(f"erased {records} record(s) and {feedback} feedback of {len(found)} request(s) by {by}")
    return 0


def add_commands(verbs: Verbs, common: argparse.ArgumentParser) -> None:
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
    erase_parser = logs.add_parser(
        "erase", parents=[log_common], help="erase a person's records and feedback (audited, by counts)"
    )
    which = erase_parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--subject", metavar="FIELD=VALUE",
                       help="every request whose inputs hold VALUE for FIELD (sent or hashed)")  # fmt: skip
    which.add_argument("--request-id", action="append", metavar="ID", help="these requests (repeatable)")
    erase_parser.add_argument("--model", help="only this model's requests")
    erase_parser.set_defaults(func=cmd_log_erase)
    prune = logs.add_parser("prune", parents=[log_common], help="delete records past retention")
    prune.add_argument("--older-than", required=True, help="a duration: 30d, 12h, 2w")
    prune.set_defaults(func=cmd_log_prune)
