"""Erasing a person's records from the monitoring store: every record (answered, refused or mirrored
to a shadow challenger) of the requests that carried a subject's value, or of given request ids, and
their feedback, in SQLite (every partition) or PostgreSQL.

A subject is found by reading the log: a record matches when its inputs hold the value for the
field, as sent (a number matched as a number, ``"42"`` and ``42`` alike) or as a log policy hashed
it (``monitoring.redaction``: the HMAC of each form the value could have been sent in). A dropped
field was never written, so it finds nothing. The whole request is erased, every row of it.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from monitoring.records import Cursor, LoggedRequest, advanced
from monitoring.redaction import Redactor, value_json
from monitoring.store import Store

#: records read from the log at a time while looking for a subject
READ_CHUNK = 5000


@dataclass(frozen=True)
class Erased:
    """How many records and feedback entries were erased, per model (None: a request no model
    answered, refused before one was chosen)."""

    records: Counter[str | None]
    feedback: Counter[str | None]


def subject_forms(value: str, redactor: Redactor | None) -> set[object]:
    """Every way ``value`` may stand in the log: as text, as a number, and hashed from each form it
    may have been sent in (a string; an int64, float32 or float64 feature's number)."""
    sent: list[object] = [value]
    with contextlib.suppress(ValueError):
        sent.append(int(value))
    with contextlib.suppress(ValueError):
        number = float(value)
        if np.isfinite(number):
            sent += [np.float32(number), np.float64(number)]
    forms: set[object] = {value, *(float(v) if isinstance(v, np.floating) else v for v in sent)}
    if redactor is not None and redactor.key:
        forms |= {redactor.hashed(value_json(v)) for v in sent}
    return forms


def _scan(store: Store) -> Iterator[LoggedRequest]:
    cursor: Cursor = {}
    while batch := store.requests.read_after(cursor, READ_CHUNK):
        yield from batch
        cursor = advanced(cursor, batch)


def requests_of(
    store: Store, *, field: str | None = None, value: str | None = None, request_ids: Iterable[str] = (),
    redactor: Redactor | None = None, model: str | None = None,
) -> set[str]:  # fmt: skip
    """The ids of the requests with a record that holds ``value`` for ``field``, or whose id is among
    ``request_ids``; of ``model`` only, when given."""
    wanted = set(request_ids)
    forms = subject_forms(value, redactor) if field is not None and value is not None else set()
    return {
        record.request_id
        for record in _scan(store)
        if (model is None or record.model == model)
        and (record.request_id in wanted or (field is not None and _holds(record, field, forms)))
    }


def _holds(record: LoggedRequest, field: str, forms: set[object]) -> bool:
    values = (record.inputs or {}).get(field)
    if not values:
        return False
    return any(v in forms for v in values if v is not None)


def erase(store: Store, request_ids: set[str]) -> Erased:
    """Delete every record and the feedback of these requests; what went, per model."""
    records: Counter[str | None] = Counter()
    models: dict[str, str | None] = {}
    for record in _scan(store):
        if record.request_id in request_ids:
            records[record.model] += 1
            models[record.request_id] = record.model
    feedback = Counter(models.get(rid) for rid in store.feedback.of(request_ids))
    store.requests.erase(request_ids)
    store.feedback.erase(request_ids)
    return Erased(records, feedback)
