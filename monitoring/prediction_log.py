"""The durable prediction log: every request, its predictions and its ground truth.

``PredictionLog`` is the seam; ``SQLitePredictionLog`` (WAL mode) is the
embedded default. The schema is plain SQL that PostgreSQL takes too (JSON
columns as text, times as epoch seconds, a monotonically increasing ``seq``
that consumers tail), and nothing SQLite-specific crosses the interface.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import orjson

from monitoring.alerts import Alert
from monitoring.records import Delivery, EncodedRecord, Feedback, FeedbackTarget, LoggedRequest

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    arm TEXT NOT NULL,
    ts REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    version INTEGER,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    rows INTEGER NOT NULL,
    inputs TEXT,
    outputs TEXT,
    flags TEXT,
    error TEXT
);
CREATE INDEX IF NOT EXISTS requests_request_id ON requests (request_id);
CREATE INDEX IF NOT EXISTS requests_model_ts ON requests (model, ts);
CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts);
CREATE TABLE IF NOT EXISTS feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL UNIQUE,
    ground_truth TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_ts ON feedback (ts);
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    value REAL NOT NULL,
    pending_since REAL NOT NULL,
    firing_since REAL,
    resolved_at REAL
);
CREATE TABLE IF NOT EXISTS alert_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key TEXT NOT NULL,
    target TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    delivered_at REAL,
    given_up_at REAL,
    last_error TEXT,
    UNIQUE (dedupe_key, target)
);
CREATE TABLE IF NOT EXISTS monitor_reports (
    model TEXT PRIMARY KEY,
    ts REAL NOT NULL,
    report TEXT NOT NULL
);
"""

_COLUMNS = (
    "seq, request_id, arm, ts, route, model, version, status, latency_ms, rows, inputs, outputs, flags, error"
)


class FeedbackOutcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the same ground truth again: nothing changes
    CONFLICT = "conflict"  # different ground truth for a request that has some


class PredictionLog(Protocol):
    """Where request records go and where the monitor and analysts read them back."""

    def write(self, records: Sequence[EncodedRecord]) -> None:
        """Commit a batch of records in one transaction."""

    def read_after(self, seq: int, limit: int, decode: bool = True) -> list[LoggedRequest]:
        """Records with ``seq`` greater than the one given, oldest first (``decode=False``: their
        inputs and outputs left encoded, see ``LoggedRequest``)."""

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        """Records of ``model`` (every model when None) at or after ``since`` (epoch seconds)."""

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        """The answered (status 200) requests among ``request_ids`` that feedback may name."""

    def add_feedback(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        """Store ground truth; idempotent for the same value, refused for a different one."""

    def feedback(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        """Ground truth given for any of ``request_ids``."""

    def feedback_after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        """Feedback with ``seq`` greater than the one given, oldest first."""

    def prune(self, before: float) -> tuple[int, int]:
        """Delete requests and feedback older than ``before``; (requests, feedback) deleted."""

    def seq_before(self, ts: float, table: Literal["requests", "feedback"] = "requests") -> int:
        """The ``seq`` after which every entry of ``table`` is at or after ``ts``: where a monitor starts."""

    def answered(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        """The answered (status 200, not shadow) records of these request ids."""

    def shadowed(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        """The challenger's shadow predictions (status 200) of these request ids."""

    def save_report(self, model: str, ts: float, report: bytes) -> None:
        """Store the monitor's latest report on ``model`` (JSON), replacing the previous one."""

    def report(self, model: str) -> tuple[float, bytes] | None:
        """The latest report on ``model`` and when it was computed."""

    def acquire_monitor_lease(self) -> bool:
        """Try, without waiting, to become the one monitor of this log; held until ``close``."""

    def monitor_lease_held(self) -> bool:
        """Whether some process holds the monitor lease now."""

    def save_alerts(self, alerts: Sequence[Alert]) -> None:
        """Store each alert's state (pending, firing or resolved), replacing what was there."""

    def alerts(self, since: float) -> list[Alert]:
        """Alerts pending or firing, and those resolved at or after ``since``."""

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        """Queue (dedupe key, target, payload) deliveries; one already queued is skipped. How many new."""

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Deliveries not yet delivered or given up, whose next attempt is due."""

    def delivered(self, delivery_id: int, now: float) -> None: ...

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        """Count a failed attempt; schedule the next one, or give up."""

    def close(self) -> None: ...


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


#: rows one INSERT carries: 13 parameters each, under SQLite's 32766 (the limit since 3.32)
INSERT_ROWS = 500


def _loaded(row: tuple[Any, ...], decode: bool = True) -> LoggedRequest:
    (
        seq,
        request_id,
        arm,
        ts,
        route,
        model,
        version,
        status,
        latency_ms,
        rows,
        inputs,
        outputs,
        flags,
        error,
    ) = row
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
    )


class SQLitePredictionLog:
    """The prediction log in one SQLite file, WAL mode: readers never wait for the writer.

    One connection per thread (sqlite3 connections are not shared across
    threads); several processes may write the same file, serialised by SQLite's
    lock with a busy timeout. ``synchronous=NORMAL``: a committed batch survives
    a process crash; an OS crash or power loss may lose the last batches.
    """

    def __init__(self, path: str | Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._lease: TextIO | None = None
        connection = self._connection()
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def write(self, records: Sequence[EncodedRecord]) -> None:
        rows = [
            (
                r.request_id, r.arm, r.ts, r.route, r.model, r.version, r.status, r.latency_ms, r.rows,
                e.inputs, e.outputs, e.flags, r.error,
            )
            for e in records
            for r in (e.record,)
        ]  # fmt: skip
        # many rows a statement: executemany steps (and releases the GIL) once a row
        connection = self._connection()
        with connection:
            for start in range(0, len(rows), INSERT_ROWS):
                chunk = rows[start : start + INSERT_ROWS]
                values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
                connection.execute(
                    f"INSERT INTO requests ({_COLUMNS.removeprefix('seq, ')}) VALUES {values}",
                    [value for row in chunk for value in row],
                )

    def read_after(self, seq: int, limit: int, decode: bool = True) -> list[LoggedRequest]:
        cursor = self._connection().execute(
            f"SELECT {_COLUMNS} FROM requests WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [_loaded(row, decode) for row in cursor]

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        query = f"SELECT {_COLUMNS} FROM requests WHERE ts >= ?"
        params: list[object] = [since if since is not None else float("-inf")]
        if model is not None:
            query += " AND model = ?"
            params.append(model)
        return [_loaded(row) for row in self._connection().execute(query + " ORDER BY seq", params)]

    def _select_in(self, query: str, ids: Iterable[str]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` whose ``{marks}`` is an IN list over ``ids``, in chunks that stay
        under SQLite's bound-parameter limit."""
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            yield from self._connection().execute(query.format(marks=",".join("?" * len(chunk))), chunk)

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        rows = self._select_in(
            "SELECT request_id, model, version, rows FROM requests "
            "WHERE status = 200 AND arm != 'shadow' AND request_id IN ({marks})",
            request_ids,
        )
        return {
            request_id: FeedbackTarget(request_id, model, version, n)
            for request_id, model, version, n in rows
        }

    def add_feedback(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        outcomes = []
        connection = self._connection()
        with connection:
            for item in items:
                truth = orjson.dumps(item.ground_truth).decode()
                inserted = connection.execute(
                    "INSERT INTO feedback (request_id, ground_truth, ts) VALUES (?, ?, ?) "
                    "ON CONFLICT (request_id) DO NOTHING",
                    (item.request_id, truth, item.ts),
                ).rowcount
                if inserted:
                    outcomes.append(FeedbackOutcome.ACCEPTED)
                    continue
                (existing,) = connection.execute(
                    "SELECT ground_truth FROM feedback WHERE request_id = ?", (item.request_id,)
                ).fetchone()
                outcomes.append(FeedbackOutcome.DUPLICATE if existing == truth else FeedbackOutcome.CONFLICT)
        return outcomes

    def feedback(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        rows = self._select_in(
            "SELECT request_id, ground_truth, ts FROM feedback WHERE request_id IN ({marks})", request_ids
        )
        return {request_id: Feedback(request_id, orjson.loads(truth), ts) for request_id, truth, ts in rows}

    def feedback_after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        cursor = self._connection().execute(
            "SELECT seq, request_id, ground_truth, ts FROM feedback WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(s, Feedback(rid, orjson.loads(truth), ts)) for s, rid, truth, ts in cursor]

    def prune(self, before: float) -> tuple[int, int]:
        connection = self._connection()
        with connection:
            requests = connection.execute("DELETE FROM requests WHERE ts < ?", (before,)).rowcount
            feedback = connection.execute("DELETE FROM feedback WHERE ts < ?", (before,)).rowcount
        return requests, feedback

    def seq_before(self, ts: float, table: Literal["requests", "feedback"] = "requests") -> int:
        if table not in ("requests", "feedback"):
            raise ValueError(f"no table {table!r}")
        # one statement, one snapshot: asked in two, a batch committed in between would be skipped
        (seq,) = (
            self._connection()
            .execute(
                f"SELECT COALESCE((SELECT MIN(seq) - 1 FROM {table} WHERE ts >= ?), "
                f"(SELECT COALESCE(MAX(seq), 0) FROM {table}))",
                (ts,),
            )
            .fetchone()
        )
        return int(seq)

    def answered(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        rows = self._select_in(
            f"SELECT {_COLUMNS} FROM requests WHERE status = 200 AND arm != 'shadow' "
            "AND request_id IN ({marks})",
            request_ids,
        )
        return [_loaded(row) for row in rows]

    def shadowed(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        rows = self._select_in(
            f"SELECT {_COLUMNS} FROM requests WHERE status = 200 AND arm = 'shadow' "
            "AND request_id IN ({marks})",
            request_ids,
        )
        return [_loaded(row) for row in rows]

    def save_report(self, model: str, ts: float, report: bytes) -> None:
        connection = self._connection()
        with connection:
            connection.execute(
                "INSERT INTO monitor_reports (model, ts, report) VALUES (?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET ts = excluded.ts, report = excluded.report",
                (model, ts, report.decode()),
            )

    def report(self, model: str) -> tuple[float, bytes] | None:
        row = (
            self._connection()
            .execute("SELECT ts, report FROM monitor_reports WHERE model = ?", (model,))
            .fetchone()
        )
        return None if row is None else (row[0], row[1].encode())

    def acquire_monitor_lease(self) -> bool:
        """An exclusive flock on a file beside the database: released when the holder exits,
        however it exits, so another process takes over."""
        if self._lease is not None:
            return True
        handle = open(self._lease_path(), "a")  # noqa: SIM115 - held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._lease = handle
        return True

    def monitor_lease_held(self) -> bool:
        if self._lease is not None:
            return True
        with open(self._lease_path(), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def _lease_path(self) -> Path:
        return self.path.with_name(self.path.name + ".monitor.lock")

    def save_alerts(self, alerts: Sequence[Alert]) -> None:
        connection = self._connection()
        with connection:
            connection.executemany(
                "INSERT INTO alerts (fingerprint, labels, annotations, value, pending_since, firing_since, "
                "resolved_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (fingerprint) DO UPDATE SET "
                "labels = excluded.labels, annotations = excluded.annotations, value = excluded.value, "
                "pending_since = excluded.pending_since, firing_since = excluded.firing_since, "
                "resolved_at = excluded.resolved_at",
                [
                    (
                        a.fingerprint, _text(a.labels), _text(a.annotations), a.value, a.pending_since,
                        a.firing_since, a.resolved_at,
                    )
                    for a in alerts
                ],
            )  # fmt: skip

    def alerts(self, since: float) -> list[Alert]:
        cursor = self._connection().execute(
            "SELECT fingerprint, labels, annotations, value, pending_since, firing_since, resolved_at "
            "FROM alerts WHERE resolved_at IS NULL OR resolved_at >= ? ORDER BY pending_since",
            (since,),
        )
        return [
            Alert(key, orjson.loads(labels), orjson.loads(notes), value, pending, firing, resolved)
            for key, labels, notes, value, pending, firing, resolved in cursor
        ]

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        connection = self._connection()
        with connection:
            before = connection.total_changes
            connection.executemany(
                "INSERT INTO alert_outbox (dedupe_key, target, payload, created_at, next_attempt) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe_key, target) DO NOTHING",
                [(key, target, payload.decode(), now, now) for key, target, payload in entries],
            )
            return connection.total_changes - before

    def due(self, now: float, limit: int) -> list[Delivery]:
        cursor = self._connection().execute(
            "SELECT id, target, payload, attempts, created_at FROM alert_outbox WHERE delivered_at IS NULL "
            "AND given_up_at IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [
            Delivery(i, target, payload.encode(), attempts, created)
            for i, target, payload, attempts, created in cursor
        ]

    def delivered(self, delivery_id: int, now: float) -> None:
        connection = self._connection()
        with connection:
            connection.execute(
                "UPDATE alert_outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, delivery_id),
            )

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        connection = self._connection()
        with connection:
            connection.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, "
                "given_up_at = ? WHERE id = ?",
                (next_attempt, error, now if give_up else None, delivery_id),
            )

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()
