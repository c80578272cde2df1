"""The store in PostgreSQL (psycopg 3 and its pool): one database for every replica of a deployment.

What makes replicas safe here, where SQLite's single file lock did it for free:

- ``seq`` in commit order. Two writers' transactions may take sequence
  values in one order and commit in the other; a monitor tailing by ``seq``
  would then skip the later-committed, lower numbers for good. Each write
  to ``requests`` (and ``feedback``) therefore takes a transaction-level
  advisory lock first, so the numbers are taken and committed one writer at
  a time, and a lock is released only once its commit is visible. A write
  is one COPY of a batch (~50 ms of a worker's records), so the lock is
  held for a few milliseconds at a time.
- The monitor lease is a session-level advisory lock on a connection of its
  own: PostgreSQL releases it when that connection ends, so when the
  monitor's process or host dies another replica's monitor takes it over
  within its supervisor's poll (``monitor_interval``) once the server sees
  the connection gone (at once for a dead process; for a vanished host,
  after the TCP keepalives set below, about 20 s).
- The schema is created and migrated by whichever replica starts first:
  versioned migrations in ``modelgate_schema``, applied under an advisory lock.

- Payloads (a 256-row request's inputs are ~77 KB of JSON) are compressed
  with lz4 rather than PostgreSQL's default pglz: 3.4x the rows/s into the
  log in load_tests/log_writer.py's 256-row runs. lz4 needs PostgreSQL 14
  or newer, built with it (every major distribution's package is).

One database (or schema, through the URL's ``options=-csearch_path=...``)
per deployment: the advisory lock keys are fixed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from monitoring.alerts import Alert
from monitoring.records import Delivery, EncodedRecord, Feedback, FeedbackTarget, LoggedRequest
from monitoring.store import FeedbackOutcome, Store, redacted
from monitoring.store.rows import REQUEST_COLUMNS, loaded, request_rows

#: advisory lock keys: (LOCK_SPACE, one of the others)
LOCK_SPACE = 0x6D67  # "mg"
MIGRATION_LOCK, LEASE_LOCK, REQUESTS_LOCK, FEEDBACK_LOCK = 1, 2, 3, 4

#: each entry brings the schema from the version before it to its own
MIGRATIONS = (
    """
    CREATE TABLE requests (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id TEXT NOT NULL,
        arm TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL,
        route TEXT NOT NULL,
        model TEXT,
        version INTEGER,
        status INTEGER NOT NULL,
        latency_ms DOUBLE PRECISION NOT NULL,
        rows INTEGER NOT NULL,
        inputs TEXT COMPRESSION lz4,
        outputs TEXT COMPRESSION lz4,
        flags TEXT,
        error TEXT
    );
    CREATE INDEX requests_request_id ON requests (request_id);
    CREATE INDEX requests_model_ts ON requests (model, ts);
    CREATE INDEX requests_ts ON requests (ts);
    CREATE TABLE feedback (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        ground_truth TEXT NOT NULL,
        ts DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX feedback_ts ON feedback (ts);
    CREATE TABLE alerts (
        fingerprint TEXT PRIMARY KEY,
        labels TEXT NOT NULL,
        annotations TEXT NOT NULL,
        value DOUBLE PRECISION NOT NULL,
        pending_since DOUBLE PRECISION NOT NULL,
        firing_since DOUBLE PRECISION,
        resolved_at DOUBLE PRECISION
    );
    CREATE TABLE alert_outbox (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        dedupe_key TEXT NOT NULL,
        target TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt DOUBLE PRECISION NOT NULL,
        delivered_at DOUBLE PRECISION,
        given_up_at DOUBLE PRECISION,
        last_error TEXT,
        UNIQUE (dedupe_key, target)
    );
    CREATE INDEX alert_outbox_due ON alert_outbox (next_attempt) WHERE delivered_at IS NULL
        AND given_up_at IS NULL;
    CREATE TABLE monitor_reports (
        model TEXT PRIMARY KEY,
        ts DOUBLE PRECISION NOT NULL,
        report TEXT NOT NULL
    );
    """,
)

#: libpq's TCP keepalives: a vanished peer (a host gone, not just a process) is noticed after
#: about 10 + 5 * 2 s
KEEPALIVES = "keepalives=1 keepalives_idle=10 keepalives_interval=2 keepalives_count=5"


def with_keepalives(url: str) -> str:
    """``url`` with libpq's keepalive parameters, unless it sets its own."""
    if "keepalives" in url:
        return url
    return url + ("&" if "?" in url else "?") + KEEPALIVES.replace(" ", "&")


class PostgresDatabase:
    """A connection pool (autocommit: each method says where its transaction is) and the schema."""

    def __init__(self, url: str, pool_size: int, connect_timeout: float = 10.0) -> None:
        self.url = url
        self.pool = ConnectionPool(
            with_keepalives(url),
            min_size=1,
            max_size=max(1, pool_size),
            kwargs={"autocommit": True},
            open=False,
            name="modelgate-store",
        )
        self.pool.open()
        try:
            self.pool.wait(timeout=connect_timeout)
        except PoolTimeout:
            self.pool.close()
            raise ConnectionError(
                f"cannot connect to PostgreSQL at {redacted(url)} within {connect_timeout:g} s"
            ) from None
        self.migrate()

    def migrate(self) -> None:
        with self.pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, MIGRATION_LOCK))
            connection.execute(
                "CREATE TABLE IF NOT EXISTS modelgate_schema (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            row = connection.execute("SELECT COALESCE(MAX(version), 0) FROM modelgate_schema").fetchone()
            version = int(row[0]) if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                connection.execute(script.encode())
                connection.execute("INSERT INTO modelgate_schema (version) VALUES (%s)", (number,))

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as connection:
            return connection.execute(query.encode(), params).fetchall()

    def close(self) -> None:
        self.pool.close()


class PostgresRequestLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def write(self, records: Sequence[EncodedRecord]) -> None:
        rows = request_rows(records)
        with self.db.pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, REQUESTS_LOCK))
            with connection.cursor() as cursor:
                columns = REQUEST_COLUMNS.removeprefix("seq, ")
                with cursor.copy(f"COPY requests ({columns}) FROM STDIN".encode()) as copy:
                    for row in rows:
                        copy.write_row(row)

    def read_after(self, seq: int, limit: int, decode: bool = True) -> list[LoggedRequest]:
        rows = self.db.rows(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE seq > %s ORDER BY seq LIMIT %s", (seq, limit)
        )
        return [loaded(row, decode) for row in rows]

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        query = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE ts >= %s"
        params: list[object] = [since if since is not None else float("-inf")]
        if model is not None:
            query += " AND model = %s"
            params.append(model)
        return [loaded(row) for row in self.db.rows(query + " ORDER BY seq", params)]

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        rows = self.db.rows(
            "SELECT request_id, model, version, rows FROM requests "
            "WHERE status = 200 AND arm != 'shadow' AND request_id = ANY(%s)",
            (list(request_ids),),
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
        rows = self.db.rows(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status = 200 AND {condition} "
            "AND request_id = ANY(%s) ORDER BY seq",
            (list(dict.fromkeys(request_ids)),),
        )
        return [loaded(row) for row in rows]

    def seq_before(self, ts: float) -> int:
        return _seq_before(self.db, "requests", ts)

    def prune(self, before: float) -> int:
        with self.db.pool.connection() as connection:
            return connection.execute("DELETE FROM requests WHERE ts < %s", (before,)).rowcount


def _seq_before(db: PostgresDatabase, table: str, ts: float) -> int:
    # one statement, one snapshot: asked in two, a batch committed in between would be skipped
    (row,) = db.rows(
        f"SELECT COALESCE((SELECT MIN(seq) - 1 FROM {table} WHERE ts >= %s), "
        f"(SELECT COALESCE(MAX(seq), 0) FROM {table}))",
        (ts,),
    )
    return int(row[0])


class PostgresFeedbackLog:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def add(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        outcomes = []
        with self.db.pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, FEEDBACK_LOCK))
            for item in items:
                truth = orjson.dumps(item.ground_truth).decode()
                inserted = connection.execute(
                    "INSERT INTO feedback (request_id, ground_truth, ts) VALUES (%s, %s, %s) "
                    "ON CONFLICT (request_id) DO NOTHING",
                    (item.request_id, truth, item.ts),
                ).rowcount
                if inserted:
                    outcomes.append(FeedbackOutcome.ACCEPTED)
                    continue
                row = connection.execute(
                    "SELECT ground_truth FROM feedback WHERE request_id = %s", (item.request_id,)
                ).fetchone()
                same = row is not None and orjson.loads(row[0]) == item.ground_truth
                outcomes.append(FeedbackOutcome.DUPLICATE if same else FeedbackOutcome.CONFLICT)
        return outcomes

    def of(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        rows = self.db.rows(
            "SELECT request_id, ground_truth, ts FROM feedback WHERE request_id = ANY(%s)",
            (list(dict.fromkeys(request_ids)),),
        )
        return {request_id: Feedback(request_id, orjson.loads(truth), ts) for request_id, truth, ts in rows}

    def after(self, seq: int, limit: int) -> list[tuple[int, Feedback]]:
        rows = self.db.rows(
            "SELECT seq, request_id, ground_truth, ts FROM feedback WHERE seq > %s ORDER BY seq LIMIT %s",
            (seq, limit),
        )
        return [(s, Feedback(rid, orjson.loads(truth), ts)) for s, rid, truth, ts in rows]

    def seq_before(self, ts: float) -> int:
        return _seq_before(self.db, "feedback", ts)

    def prune(self, before: float) -> int:
        with self.db.pool.connection() as connection:
            return connection.execute("DELETE FROM feedback WHERE ts < %s", (before,)).rowcount


class PostgresReportStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def save(self, model: str, ts: float, report: bytes) -> None:
        with self.db.pool.connection() as connection:
            connection.execute(
                "INSERT INTO monitor_reports (model, ts, report) VALUES (%s, %s, %s) "
                "ON CONFLICT (model) DO UPDATE SET ts = excluded.ts, report = excluded.report",
                (model, ts, report.decode()),
            )

    def latest(self, model: str) -> tuple[float, bytes] | None:
        rows = self.db.rows("SELECT ts, report FROM monitor_reports WHERE model = %s", (model,))
        return None if not rows else (rows[0][0], rows[0][1].encode())


class PostgresAlertStore:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def save(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        with self.db.pool.connection() as connection, connection.transaction(), connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO alerts (fingerprint, labels, annotations, value, pending_since, firing_since, "
                "resolved_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (fingerprint) DO UPDATE SET "
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
        rows = self.db.rows(
            "SELECT fingerprint, labels, annotations, value, pending_since, firing_since, resolved_at "
            "FROM alerts WHERE resolved_at IS NULL OR resolved_at >= %s ORDER BY pending_since",
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
            for key, labels, notes, value, pending, firing, resolved in rows
        ]


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


class PostgresOutbox:
    def __init__(self, db: PostgresDatabase) -> None:
        self.db = db

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        added = 0
        with self.db.pool.connection() as connection, connection.transaction():
            for key, target, payload in entries:
                added += connection.execute(
                    "INSERT INTO alert_outbox (dedupe_key, target, payload, created_at, next_attempt) "
                    "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (dedupe_key, target) DO NOTHING",
                    (key, target, payload.decode(), now, now),
                ).rowcount
        return added

    def due(self, now: float, limit: int) -> list[Delivery]:
        rows = self.db.rows(
            "SELECT id, target, payload, attempts, created_at FROM alert_outbox WHERE delivered_at IS NULL "
            "AND given_up_at IS NULL AND next_attempt <= %s ORDER BY id LIMIT %s",
            (now, limit),
        )
        return [
            Delivery(i, target, payload.encode(), attempts, created)
            for i, target, payload, attempts, created in rows
        ]

    def delivered(self, delivery_id: int, now: float) -> None:
        with self.db.pool.connection() as connection:
            connection.execute(
                "UPDATE alert_outbox SET delivered_at = %s, attempts = attempts + 1 WHERE id = %s",
                (now, delivery_id),
            )

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        with self.db.pool.connection() as connection:
            connection.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt = %s, last_error = %s, "
                "given_up_at = %s WHERE id = %s",
                (next_attempt, error, now if give_up else None, delivery_id),
            )


class AdvisoryLease:
    """The monitor lease: a session-level advisory lock on a connection outside the pool, so that
    it lives exactly as long as that connection."""

    def __init__(self, url: str, db: PostgresDatabase) -> None:
        self.url = url
        self.db = db
        self._connection: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        """True while this process holds the lease; False when another does, or when the
        connection that held it was lost (its lock went with it: the caller must stop)."""
        if self._connection is not None:
            try:
                row = self._connection.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND locktype = 'advisory' AND classid = %s AND objid = %s AND granted)",
                    (LOCK_SPACE, LEASE_LOCK),
                ).fetchone()
            except psycopg.Error:
                row = None
            if row is not None and row[0]:
                return True
            self.release()
            return False
        connection = psycopg.connect(with_keepalives(self.url), autocommit=True)
        row = connection.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, LEASE_LOCK)).fetchone()
        if row is None or not row[0]:
            connection.close()
            return False
        self._connection = connection
        return True

    def held(self) -> bool:
        (row,) = self.db.rows(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = %s AND objid = %s AND granted)",
            (LOCK_SPACE, LEASE_LOCK),
        )
        return bool(row[0])

    def release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            finally:
                self._connection = None


def open_postgres(url: str, *, pool_size: int = 4) -> Store:
    db = PostgresDatabase(url, pool_size)
    return Store(
        requests=PostgresRequestLog(db),
        feedback=PostgresFeedbackLog(db),
        reports=PostgresReportStore(db),
        alerts=PostgresAlertStore(db),
        outbox=PostgresOutbox(db),
        lease=AdvisoryLease(url, db),
        closer=db.close,
        location=redacted(url),
    )
