"""What the gateway records about each request, and its JSON form in the prediction log."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
import orjson

from registry.aliases import Arm, LogPolicy
from registry.prediction import Prediction


class Redactor(Protocol):
    def payload(self, record: RequestRecord, policy: LogPolicy) -> tuple[bytes | None, bytes | None]:
        """The record's inputs and outputs JSON as ``policy`` lets the log keep them
        (``monitoring.redaction``)."""


class Checker(Protocol):
    def check_each(
        self, batches: list[tuple[np.ndarray | None, dict[str, np.ndarray] | None, Prediction]]
    ) -> list[dict[str, int]]: ...


#: the route of an explanation's record: one request's explanation, logged beside its prediction
EXPLAIN_ROUTE = "explain"
#: a record's (or a feedback entry's) place in the order a reader tails the log in: the transaction
#: that wrote it, then its ``seq``. Where writers append one at a time (SQLite) the transaction is 0
#: and ``seq`` alone is the order; where they append concurrently (PostgreSQL) numbers are taken in
#: one order and committed in another, and a reader follows transactions instead (see
#: ``monitoring.store.postgres``)
Position = tuple[int, int]
#: before the first record
START: Position = (0, 0)
#: where a reader of the request log stands: a position per partition of the log (absent: ``START``).
#: A log in one place is partition 0 alone; SQLite gives each log-writer process a file of its own
#: (see ``monitoring.store.sqlite``), whose records are in order among themselves only
Cursor = Mapping[int, Position]


def advanced(cursor: Cursor, records: Iterable[LoggedRequest]) -> dict[int, Position]:
    """The cursor moved past ``records``."""
    moved = dict(cursor)
    for record in records:
        moved[record.partition] = max(moved.get(record.partition, START), record.position)
    return moved


def covers(cursor: Cursor, record: LoggedRequest) -> bool:
    """Whether a reader at ``cursor`` has read ``record`` already."""
    return record.position <= cursor.get(record.partition, START)


def cursor_json(cursor: Cursor) -> list[list[int]]:
    """The cursor as JSON: ``[partition, xid, seq]`` triples (JSON keys are text)."""
    return [[partition, *position] for partition, position in sorted(cursor.items())]


def cursor_of(value: object) -> dict[int, Position]:
    """A cursor read back from ``cursor_json``; a saved ``[xid, seq]`` (before partitions) is partition
    0's."""
    if not isinstance(value, list | tuple):
        return {}
    if len(value) == 2 and all(isinstance(part, int) for part in value):
        return {0: (int(value[0]), int(value[1]))}
    return {int(partition): (int(xid), int(seq)) for partition, xid, seq in value}


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the gateway saw it. Built on the hot path, so it holds arrays, not JSON.

    ``inputs`` is the validated batch: a rows x features matrix in ``features``
    order, or one array a feature. ``error`` is set (and ``prediction`` None)
    for a refused or failed request.
    """

    request_id: str
    ts: float
    route: str
    status: int
    latency_ms: float
    model: str | None = None
    version: int | None = None
    arm: Arm = "champion"
    rows: int = 0
    features: tuple[str, ...] = ()
    matrix: np.ndarray | None = None
    columns: dict[str, np.ndarray] | None = None
    prediction: Prediction | None = None
    error: str | None = None
    flags: dict[str, Any] = field(default_factory=dict)
    #: the version's classes (classifiers), for the prediction-class metric
    classes: tuple[str, ...] = ()
    #: when set, the log writer computes ``flags`` with it: off the request path, for all the
    #: records of a version in a batch at once (see ``monitoring.sink.encode``)
    checker: Checker | None = None
    #: what the log keeps of it (``monitoring.redaction``); None: everything
    policy: LogPolicy | None = None
    #: an explanation's record (route ``explain``): each row's importance of each feature (rows x
    #: ``features``), logged as its outputs in place of a prediction
    attributions: np.ndarray | None = None

    def inputs_json(self) -> bytes | None:
        """``{"feature": [values...]}``, column-major so a consumer takes a feature in one read."""
        if self.matrix is not None:
            return matrix_json(self.matrix, self.features)
        if self.columns is not None:
            return _dumps({name: jsonable(column) for name, column in self.columns.items()})
        return None

    def outputs_json(self) -> bytes | None:
        if self.attributions is not None:
            by_feature = np.ascontiguousarray(self.attributions.T)
            return _dumps({"attributions": dict(zip(self.features, by_feature, strict=True))})
        prediction = self.prediction
        if prediction is None:
            return None
        return _dumps(
            {
                name: jsonable(array) if name == "label" else np.ascontiguousarray(array)
                for name, array in prediction.outputs.items()
            }
        )


def column_values(record: RequestRecord) -> dict[str, np.ndarray] | None:
    """The record's inputs as one array a feature (the slow path: redaction rewrites some of them)."""
    if record.matrix is not None:
        by_feature = np.ascontiguousarray(record.matrix.T)
        return dict(zip(record.features, by_feature, strict=True))
    return record.columns


def jsonable(array: np.ndarray) -> Any:
    """orjson writes numeric arrays natively; object arrays (strings) go through a list."""
    return array.tolist() if array.dtype == object else array


def matrix_json(matrix: np.ndarray, features: tuple[str, ...]) -> bytes:
    """``{"feature": [values...]}`` of a rows x features matrix, spliced from one ``orjson`` call.

    The log writer encodes every request, and a dict of one small array per
    feature cost 12 us a record in the writer's loop (as much as the rest of
    its work): the matrix's JSON, cut at the brackets between features and
    dropped into a template of the names, costs a quarter of that.
    """
    if matrix.shape[0] == 1:
        parts = _dumps(matrix[0])[1:-1].split(b",")
    else:
        parts = _dumps(np.ascontiguousarray(matrix.T))[2:-2].split(b"],[")
    return _template(features) % tuple(parts)


@functools.lru_cache(maxsize=256)
def _template(features: tuple[str, ...]) -> bytes:
    """``{"a":[%s],"b":[%s]}`` for these feature names (a ``%`` in a name escaped)."""
    return b"{" + b",".join(orjson.dumps(name).replace(b"%", b"%%") + b":[%s]" for name in features) + b"}"


def _dumps(value: Any) -> bytes:
    # NaN (a null sent for a missing value) is written as null by orjson
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(frozen=True, slots=True)
class EncodedRecord:
    """A record with its payloads as JSON, encoded once for the log store and the log line alike."""

    record: RequestRecord
    inputs: bytes | None
    outputs: bytes | None
    flags: bytes | None
    #: rows breaking each plausibility rule: the record's flags, or what its checker found
    violations: dict[str, Any]

    @classmethod
    def of(
        cls, record: RequestRecord, violations: dict[str, Any] | None = None, redactor: Redactor | None = None
    ) -> EncodedRecord:
        """``redactor``: applies the record's log policy (without one, a record with a policy keeps
        no payload: a policy is never ignored)."""
        violations = record.flags if violations is None else violations
        if record.policy is None:
            inputs, outputs = record.inputs_json(), record.outputs_json()
        elif redactor is not None:
            inputs, outputs = redactor.payload(record, record.policy)
        else:
            inputs, outputs = None, None
        return cls(
            record=record,
            inputs=inputs,
            outputs=outputs,
            flags=orjson.dumps(violations) if violations else None,
            violations=violations,
        )


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    """A request as read back from the prediction log; ``inputs``/``outputs`` are decoded JSON.

    Read with ``decode=False``, ``inputs`` and ``outputs`` are None and ``raw_inputs`` and
    ``raw_outputs`` hold them still encoded: the monitor decodes only the records its windows
    keep (of 5,000 256-row records read, about 4 stay in a 1,000-row window, and decoding the
    rest was most of its time).
    """

    seq: int
    request_id: str
    arm: Arm
    ts: float
    route: str
    model: str | None
    version: int | None
    status: int
    latency_ms: float
    rows: int
    inputs: dict[str, list[Any]] | None
    outputs: dict[str, Any] | None
    flags: dict[str, Any]
    error: str | None
    raw_inputs: str | bytes | None = None
    raw_outputs: str | bytes | None = None
    #: the transaction that wrote it, where the store orders the tail by one (see ``Position``)
    xid: int = 0
    #: the log's partition it is in (see ``Cursor``)
    partition: int = 0

    @property
    def position(self) -> Position:
        return (self.xid, self.seq)

    def decoded(self) -> LoggedRequest:
        """This record with its inputs and outputs decoded (itself, when they are)."""
        if self.raw_inputs is None and self.raw_outputs is None:
            return self
        return replace(
            self,
            inputs=self.inputs if self.raw_inputs is None else orjson.loads(self.raw_inputs),
            outputs=self.outputs if self.raw_outputs is None else orjson.loads(self.raw_outputs),
            raw_inputs=None,
            raw_outputs=None,
        )

    def encoded_outputs(self) -> str | bytes | None:
        """The outputs as JSON, whether or not they were decoded."""
        if self.raw_outputs is not None:
            return self.raw_outputs
        return orjson.dumps(self.outputs) if self.outputs else None


@dataclass(frozen=True, slots=True)
class Feedback:
    """What a request turned out to be worth: its ground truth (one value a row, in the request's row
    order) and a business reward for the whole request (revenue, a click), either or both."""

    request_id: str
    ground_truth: list[Any] | None
    ts: float
    reward: float | None = None


@dataclass(frozen=True, slots=True)
class FeedbackTarget:
    """What feedback is checked against: the logged request it names."""

    request_id: str
    model: str
    version: int
    rows: int


@dataclass(frozen=True, slots=True)
class Delivery:
    """A queued alert notification: where it goes and what it says."""

    id: int
    target: str
    payload: bytes
    attempts: int
    created_at: float
