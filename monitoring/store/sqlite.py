"""The store in one SQLite file (WAL mode): the embedded default, for one machine.

One connection per thread (sqlite3 connections are not shared across
threads); several processes may write the same file, serialised by SQLite's
lock with a busy timeout, which is also what keeps ``seq`` in commit order.
``synchronous=NORMAL``: a committed batch survives a process crash; an OS
crash or power loss may lose the last batches. The monitor lease is an flock
on a file beside the database.
"""

from __future__ import annotations

import fcntl
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

import orjson

from monitoring.alerts import Alert
from monitoring.records import Delivery, EncodedRecord, Feedback, FeedbackTarget, LoggedRequest
from monitoring.store import FeedbackOutcome, Store
from monitoring.store.rows import REQUEST_COLUMNS, loaded, request_rows

#: each entry brings the schema from the version before it to its own (``PRAGMA user_version``);
#: a log written before versions were counted is at 0 with the tables of 1, hence IF NOT EXISTS
MIGRATIONS = (
    """
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
    """,
)

#: rows one INSERT carries: 13 parameters each, under SQLite's 32766 (the limit since 3.32)
INSERT_ROWS = 500
#: ids one IN list carries
IN_CHUNK = 500


class SQLiteDatabase:
    """The file, its connections (one per thread) and its schema."""

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        connection = self.connection()
        connection.execute("PRAGMA journal_mode=WAL")
        self._migrate(connection)

    def _migrate(self, connection: sqlite3.Connection) -> None:
        with _Transaction(connection):  # one process migrates; the others then find it done
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    connection.execute(statement)
                connection.execute(f"PRAGMA user_version = {number}")

    def connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def transaction(self) -> _Transaction:
        return _Transaction(self.connection())

    def select_in(self, query: str, ids: Iterable[str]) -> Iterator[tuple[Any, ...]]:
        """Rows of ``query`` whose ``{marks}`` is an IN list over ``ids``, in chunks that stay
        under SQLite's bound-parameter limit."""
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start : start + IN_CHUNK]
            yield from self.connection().execute(query.format(marks=",".join("?" * len(chunk))), chunk)

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
        self._local = threading.local()


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``): the write lock taken at the start, so
    two writers never both read and then both try to write."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind: object, *_: object) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


class SQLiteRequestLog:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def write(self, records: Sequence[EncodedRecord]) -> None:
        rows = request_rows(records)
        # many rows a statement: executemany steps (and releases the GIL) once a row
        with self.db.transaction() as connection:
            for start in range(0, len(rows), INSERT_ROWS):
                chunk = rows[start : start + INSERT_ROWS]
                values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
                connection.execute(
                    f"INSERT INTO requests ({REQUEST_COLUMNS.removeprefix('seq, ')}) VALUES {values}",
                    [value for row in chunk for value in row],
                )

    def read_after(self, seq: int, limit: int, decode: bool = True) -> list[LoggedRequest]:
        cursor = self.db.connection().execute(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [loaded(row, decode) for row in cursor]

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        query = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE ts >= ?"
        params: list[object] = [since if since is not None else float("-inf")]
        if model is not None:
            query += " AND model = ?"
            params.append(model)
        return [loaded(row) for row in self.db.connection().execute(query + " ORDER BY seq", params)]

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        rows = self.db.select_in(
            "SELECT request_id, model, version, rows FROM requests "
            "WHERE status = 200 AND arm != 'shadow' AND request_id IN ({marks})",
            request_ids,
        )
        return {
            request_id: FeedbackTarget(request_id, model, version, n)
            for request_id, model, version, n in rows
        }

    def answered(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        return self._by_arm("arm != 'shadow'", request_ids)

    def shadowed(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        return self._by_arm("arm = 'shadow'", request_ids)

    def _by_arm(self, condition: str, request_ids: Iterable[str]) -> list[LoggedRequest]:
        rows = self.db.select_in(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status = 200 AND {condition} "
            "AND request_id IN ({marks})",
            request_ids,
        )
        return [loaded(row) for row in rows]

    def seq_before(self, ts: float) -> int:
        return _seq_before(self.db, "requests", ts)

    def prune(self, before: float) -> int:
        with self.db.transaction() as connection:
            return connection.execute("DELETE FROM requests WHERE ts < ?", (before,)).rowcount


def _seq_before(db: SQLiteDatabase, table: str, ts: float) -> int:
    # one statement, one snapshot: asked in two, a batch committed in between would be skipped
    (seq,) = (
        db.connection()
        .execute(
            f"SELECT COALESCE((SELECT MIN(seq) - 1 FROM {table} WHERE ts >= ?), "
            f"(SELECT COALESCE(MAX(seq), 0) FROM {table}))",
            (ts,),
        )
        .fetchone()
    )
    return int(seq)


class SQLiteFeedbackLog:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def add(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        outcomes = []
        with self.db.transaction() as connection:
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

    def of(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        rows = self.db.select_in(
            "SELECT request_id, ground_truth, ts FROM feedback WHERE request_id IN ({marks})", request_ids
        )
        return {request_id: Feedback(request_id, orjson.loads(truth), ts) for request_id, truth, ts in rows}

    def after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        cursor = self.db.connection().execute(
            "SELECT seq, request_id, ground_truth, ts FROM feedback WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        return [(s, Feedback(rid, orjson.loads(truth), ts)) for s, rid, truth, ts in cursor]

    def seq_before(self, ts: float) -> int:
        return _seq_before(self.db, "feedback", ts)

    def prune(self, before: float) -> int:
        with self.db.transaction() as connection:
            return connection.execute("DELETE FROM feedback WHERE ts < ?", (before,)).rowcount


class SQLiteReportStore:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def save(self, model: str, ts: float, report: bytes) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "INSERT INTO monitor_reports (model, ts, report) VALUES (?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET ts = excluded.ts, report = excluded.report",
                (model, ts, report.decode()),
            )

    def latest(self, model: str) -> tuple[float, bytes] | None:
        row = (
            self.db.connection()
            .execute("SELECT ts, report FROM monitor_reports WHERE model = ?", (model,))
            .fetchone()
        )
        return None if row is None else (row[0], row[1].encode())


class SQLiteAlertStore:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def save(self, alerts: Sequence[Alert]) -> None:
        with self.db.transaction() as connection:
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

    def since(self, ts: float) -> list[Alert]:
        cursor = self.db.connection().execute(
            "SELECT fingerprint, labels, annotations, value, pending_since, firing_since, resolved_at "
            "FROM alerts WHERE resolved_at IS NULL OR resolved_at >= ? ORDER BY pending_since",
            (ts,),
        )
        return [
            Alert(
                key,
                orjson.loads(labels),
                orjson.loads(notes),
                pending_since=pending,
                value=value,
                firing_since=firing,
                resolved_at=resolved,
            )
            for key, labels, notes, value, pending, firing, resolved in cursor
        ]


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


class SQLiteOutbox:
    def __init__(self, db: SQLiteDatabase) -> None:
        self.db = db

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        with self.db.transaction() as connection:
            before = connection.total_changes
            connection.executemany(
                "INSERT INTO alert_outbox (dedupe_key, target, payload, created_at, next_attempt) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe_key, target) DO NOTHING",
                [(key, target, payload.decode(), now, now) for key, target, payload in entries],
            )
            return connection.total_changes - before

    def due(self, now: float, limit: int) -> list[Delivery]:
        cursor = self.db.connection().execute(
            "SELECT id, target, payload, attempts, created_at FROM alert_outbox WHERE delivered_at IS NULL "
            "AND given_up_at IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [
            Delivery(i, target, payload.encode(), attempts, created)
            for i, target, payload, attempts, created in cursor
        ]

    def delivered(self, delivery_id: int, now: float) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE alert_outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, delivery_id),
            )

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        with self.db.transaction() as connection:
            connection.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, "
                "given_up_at = ? WHERE id = ?",
                (next_attempt, error, now if give_up else None, delivery_id),
            )


class FileLease:
    """An exclusive flock on a file beside the database: released when the holder exits, however it
    exits, so another process takes over."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: TextIO | None = None

    def acquire(self) -> bool:
        if self._handle is not None:
            return True
        handle = open(self.path, "a")  # noqa: SIM115 - held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    def held(self) -> bool:
        if self._handle is not None:
            return True
        with open(self.path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def open_sqlite(path: Path) -> Store:
    db = SQLiteDatabase(path)
    return Store(
        requests=SQLiteRequestLog(db),
        feedback=SQLiteFeedbackLog(db),
        reports=SQLiteReportStore(db),
        alerts=SQLiteAlertStore(db),
        outbox=SQLiteOutbox(db),
        lease=FileLease(path.with_name(path.name + ".monitor.lock")),
        closer=db.close,
        location=str(path),
    )
