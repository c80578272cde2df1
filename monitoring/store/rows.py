"""A request record as a row, and a row as a ``LoggedRequest``: the same for every backend.

Payloads are JSON text (inputs column-major, ``{"feature": [values]}``), so
that an analyst reads them with the database's own JSON functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from monitoring.records import EncodedRecord, LoggedRequest

#: the columns a write gives a request row, in the order of ``request_rows``
WRITTEN_COLUMNS = (
    "request_id, arm, ts, route, model, version, status, latency_ms, rows, inputs, outputs, flags, error"
)
#: the requests table's columns: its ``seq``, then what was written
REQUEST_COLUMNS = f"seq, {WRITTEN_COLUMNS}"


def request_rows(records: Sequence[EncodedRecord]) -> list[tuple[Any, ...]]:
    """Each record as the values of ``WRITTEN_COLUMNS``."""
    return [
        (
            r.request_id, r.arm, r.ts, r.route, r.model, r.version, r.status, r.latency_ms, r.rows,
            _text(e.inputs), _text(e.outputs), _text(e.flags), r.error,
        )
        for e in records
        for r in (e.record,)
    ]  # fmt: skip


def _text(payload: bytes | None) -> str | None:
    return None if payload is None else payload.decode()


def loaded(row: tuple[Any, ...], decode: bool = True, partition: int = 0) -> LoggedRequest:
    """A row of the writing transaction (``Database.xid``) and ``REQUEST_COLUMNS`` as a record (of the
    log's ``partition``); ``decode=False`` leaves inputs and outputs encoded."""
    (xid, seq, request_id, arm, ts, route, model, version, status, latency_ms, rows, inputs, outputs, flags,
     error) = row  # fmt: skip
    return LoggedRequest(
        seq=seq,
        request_id=request_id,
        arm=arm,
        ts=ts,
        route=route,
        model=model,
        version=version,
        status=status,
        latency_ms=latency_ms,
        rows=rows,
        inputs=orjson.loads(inputs) if inputs and decode else None,
        outputs=orjson.loads(outputs) if outputs and decode else None,
        flags=orjson.loads(flags) if flags else {},
        error=error,
        raw_inputs=inputs if inputs and not decode else None,
        raw_outputs=outputs if outputs and not decode else None,
        xid=xid,
        partition=partition,
    )
