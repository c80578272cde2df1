"""A model's log policy (``registry.aliases.LogPolicy``) applied to what the log keeps of a request.

The log writer process applies it while encoding a record, after checking plausibility and counting
metrics on the values as sent, and before anything is written: the store's row, the stdout line
and everything read back from the log (the monitor, ``log export``, ``POST /explain`` by request id)
only ever see the redacted form. A ``drop``ped feature is left out of the inputs; a ``hash``ed one
holds the HMAC-SHA256 (hex, 128 bits) of each value's JSON text under ``MODELGATE_LOG_HASH_KEY``
(a missing value stays null); without a key a hashed feature is dropped instead, never kept. Whether
a request keeps its inputs and outputs at all (``payload_rate``) is decided by its request id, so
every process decides alike.
"""

from __future__ import annotations

import hashlib
import hmac
import zlib
from typing import Any

import numpy as np
import orjson
import structlog

from monitoring.records import RequestRecord, column_values, jsonable
from registry.aliases import LogPolicy

log = structlog.get_logger("modelgate.redaction")

#: hex digits of a hashed value kept (128 bits)
HASH_HEX = 32


def payload_kept(request_id: str, rate: float) -> bool:
    """Whether a request keeps its inputs and outputs under ``payload_rate`` ``rate``."""
    return rate >= 1.0 or zlib.crc32(request_id.encode()) < rate * 2**32


def value_json(value: Any) -> bytes:
    """A value's JSON text as the log would write it: what a hash is taken of."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


class Redactor:
    """Applies each record's log policy with the gateway's hash key (empty: hashed fields dropped)."""

    def __init__(self, key: str) -> None:
        self.key = key.encode()
        self._warned: set[str] = set()

    def hashed(self, text: bytes) -> str:
        return hmac.new(self.key, text, hashlib.sha256).hexdigest()[:HASH_HEX]

    def payload(self, record: RequestRecord, policy: LogPolicy) -> tuple[bytes | None, bytes | None]:
        """The record's inputs and outputs JSON as the policy lets the log keep them."""
        if not payload_kept(record.request_id, policy.payload_rate):
            return None, None
        outputs = record.outputs_json()
        if not policy.fields:
            return record.inputs_json(), outputs
        columns = column_values(record)
        if columns is None:
            return None, outputs
        hashed = policy.governed("hash")
        if hashed and not self.key and record.model not in self._warned:
            self._warned.add(str(record.model))
            log.warning("log.hash_key_missing", model=record.model, dropped=sorted(hashed),
                        hint="set MODELGATE_LOG_HASH_KEY; until then these features are dropped")  # fmt: skip
        kept: dict[str, Any] = {}
        for name, values in columns.items():
            action = policy.fields.get(name, "keep")
            if action == "keep":
                kept[name] = jsonable(values)
            elif action == "hash" and self.key:
                kept[name] = [None if _missing(v) else self.hashed(value_json(v)) for v in values]
        return orjson.dumps(kept, option=orjson.OPT_SERIALIZE_NUMPY), outputs


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and np.isnan(value))
