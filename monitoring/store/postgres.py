"""The store in PostgreSQL (psycopg 3 and its pool): one database for every replica of a deployment.

What makes replicas safe here, where SQLite's single file lock did it for free:

- Tailing without a lock. Writers' transactions take ``seq`` values in one
  order and may commit in the other, so a reader that had passed a number
  would skip a lower one committed after it. Nothing on the write path
  orders them (no lock is held across a commit, so the whole fleet's writers
  commit side by side): each row carries the transaction that wrote it
  (``xid``, ``pg_current_xact_id()``), and a reader follows ``(xid, seq)``,
  reading only rows of transactions below the oldest one still in flight
  (``pg_snapshot_xmin`` of its own snapshot). Every such transaction has
  ended, and every transaction that has not yet committed has an xid at or
  above that horizon: so no row ever appears before a position already read.
  What it costs: a transaction that writes and stays open holds the horizon
  (and the monitor) back while it lasts, whichever database of the server it
  writes in; the log's writers commit within milliseconds.
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

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from monitoring.records import START, Position
from monitoring.store import Store, lease_holder, redacted
from monitoring.store.rows import WRITTEN_COLUMNS
from monitoring.store.sql import (
    SqlAlertStore,
    SqlFeedbackLog,
    SqlOutbox,
    SqlReportStore,
    SqlRequestLog,
    Tailed,
    Transaction,
)

#: advisory lock keys: (LOCK_SPACE, one of the others)
LOCK_SPACE = 0x6D67  # "mg"
MIGRATION_LOCK, LEASE_LOCK = 1, 2
#: shard n > 0 of the monitors' work (``monitoring.shards``) leases the key SHARD_LEASES + n
SHARD_LEASES = 1000

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
    # a business reward per request (POST /feedback's "reward"); ground_truth is then JSON null
    "ALTER TABLE feedback ADD COLUMN reward DOUBLE PRECISION",
    # each row's transaction, which readers tail by (rows written before it are at 0, before all)
    """
    ALTER TABLE requests ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
    ALTER TABLE requests ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
    CREATE INDEX requests_position ON requests (xid, seq);
    ALTER TABLE feedback ADD COLUMN xid xid8 NOT NULL DEFAULT '0';
    ALTER TABLE feedback ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
    CREATE INDEX feedback_position ON feedback (xid, seq);
    """,
    # each report's summary, one a minute (ReportStore.history)
    """
    CREATE TABLE monitor_history (
        model TEXT NOT NULL,
        minute BIGINT NOT NULL,
        point TEXT NOT NULL,
        PRIMARY KEY (model, minute)
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


#: the oldest transaction still in flight, as of the statement's snapshot: below it, every row
#: there will ever be is there
HORIZON = "pg_snapshot_xmin(pg_current_snapshot())"


def _format(query: str) -> bytes:
    """A ``?``-placeholder statement (sql.py's) in psycopg's ``%s`` style."""
    return query.replace("%", "%%").replace("?", "%s").encode()


class PostgresDatabase:
    """A connection pool (autocommit: each method says where its transaction is) and the schema."""

    xid = "xid::text::bigint"

    def __init__(self, url: str, pool_size: int, connect_timeout: float = 10.0) -> None:
        self.url = url
        try:  # once by hand first: a refused connection is said at once, not after the pool's retries
            psycopg.connect(with_keepalives(url), connect_timeout=max(1, int(connect_timeout))).close()
        except psycopg.OperationalError as exc:
            reason = (
                "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
                or type(exc).__name__
            )
            raise ConnectionError(f"cannot connect to PostgreSQL at {redacted(url)}: {reason}") from None
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
        with self.transaction() as transaction:
            transaction.execute("SELECT pg_advisory_xact_lock(?, ?)", (LOCK_SPACE, MIGRATION_LOCK))
            transaction.execute(
                "CREATE TABLE IF NOT EXISTS modelgate_schema (version INTEGER PRIMARY KEY, "
                "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
            )
            (version,) = transaction.one("SELECT COALESCE(MAX(version), 0) FROM modelgate_schema") or (0,)
            for number, script in enumerate(MIGRATIONS[int(version) :], start=int(version) + 1):
                transaction.connection.execute(script.encode())
                transaction.execute("INSERT INTO modelgate_schema (version) VALUES (?)", (number,))

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as connection:
            return connection.execute(_format(query), params).fetchall()

    def rows_in(self, query: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
        return self.rows(query.format(ids="= ANY(?)"), (list(dict.fromkeys(ids)),))

    @contextlib.contextmanager
    def transaction(self) -> Iterator[_Transaction]:
        with self.pool.connection() as connection, connection.transaction():
            yield _Transaction(connection)

    def after(
        self,
        table: Tailed,
        columns: str,
        position: Position,
        limit: int,
        *,
        until: Position | None = None,
        models: Sequence[str] | None = None,
    ) -> list[tuple[Any, ...]]:
        """By ``(xid, seq)``, below the horizon (see the module's docstring)."""
        where, params = f"(xid, seq) > (?::text::xid8, ?) AND xid < {HORIZON}", list[object](position)
        if until is not None:
            where += " AND (xid, seq) <= (?::text::xid8, ?)"
            params.extend(until)
        if models is not None:
            where += " AND model = ANY(?)"
            params.append(list(models))
        return self.rows(
            f"SELECT {self.xid}, seq, {columns} FROM {table} WHERE {where} ORDER BY xid, seq LIMIT ?",
            (*params, limit),
        )

    def top(self, table: Tailed) -> Position:
        rows = self.rows(
            f"SELECT {self.xid}, seq FROM {table} WHERE xid < {HORIZON} ORDER BY xid DESC, seq DESC LIMIT 1"
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else START

    def reclaim(self) -> None:
        """Vacuum the tables rows are erased from: the dead rows' space is marked free, their bytes
        overwritten as pages are reused (not at once: a ``VACUUM FULL`` rewrites the table, holding
        off every writer meanwhile, and is left to the operator)."""
        with self.pool.connection() as connection:
            connection.autocommit = True
            try:
                connection.execute("VACUUM requests, feedback")
            finally:
                connection.autocommit = False

    def position_before(self, table: Tailed, ts: float) -> Position:
        # one statement, one snapshot: the first row at or after ts below the horizon, else the last
        # row below it (a row above it comes later, whatever its ts)
        rows = self.rows(
            f"WITH horizon AS (SELECT {HORIZON} AS xmin) "
            f"(SELECT 0 AS last, {self.xid}, seq - 1 FROM {table}, horizon WHERE xid < horizon.xmin "
            "AND ts >= ? ORDER BY xid, seq LIMIT 1) UNION ALL "
            f"(SELECT 1, {self.xid}, seq FROM {table}, horizon WHERE xid < horizon.xmin "
            "ORDER BY xid DESC, seq DESC LIMIT 1) ORDER BY last LIMIT 1",
            (ts,),
        )
        return (int(rows[0][1]), int(rows[0][2])) if rows else START

    def insert_requests(self, transaction: Transaction, rows: list[tuple[Any, ...]]) -> None:
        assert isinstance(transaction, _Transaction)  # COPY is a psycopg connection's own
        with (
            transaction.connection.cursor() as cursor,
            cursor.copy(f"COPY requests ({WRITTEN_COLUMNS}) FROM STDIN".encode()) as copy,
        ):
            for row in rows:
                copy.write_row(row)

    def close(self) -> None:
        self.pool.close()


class _Transaction:
    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self.connection = connection

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        return self.connection.execute(_format(query), params).rowcount

    def executemany(self, query: str, params: Sequence[Sequence[Any]]) -> None:
        with self.connection.cursor() as cursor:
            cursor.executemany(_format(query), params)

    def one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        return self.connection.execute(_format(query), params).fetchone()


class AdvisoryLease:
    """The monitor lease: a session-level advisory lock on a connection outside the pool, so that
    it lives exactly as long as that connection."""

    def __init__(self, url: str, db: PostgresDatabase, shard: int = 0) -> None:
        self.url = url
        self.db = db
        self.key = LEASE_LOCK if shard == 0 else SHARD_LEASES + shard
        self._connection: psycopg.Connection[Any] | None = None

    def acquire(self) -> bool:
        """True while this process holds the lease; False when another does, or when the
        connection that held it was lost (its lock went with it: the caller must stop)."""
        if self._connection is not None:
            try:
                row = self._connection.execute(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND locktype = 'advisory' AND classid = %s AND objid = %s AND granted)",
                    (LOCK_SPACE, self.key),
                ).fetchone()
            except psycopg.Error:
                row = None
            if row is not None and row[0]:
                return True
            self.release()
            return False
        # named after its holder, which the status route reads back (63 bytes at most)
        name = f"modelgate monitor {lease_holder()}"[:63]
        connection = psycopg.connect(with_keepalives(self.url), autocommit=True, application_name=name)
        row = connection.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_SPACE, self.key)).fetchone()
        if row is None or not row[0]:
            connection.close()
            return False
        self._connection = connection
        return True

    def holder(self) -> str | None:
        rows = self.db.rows(
            "SELECT a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.classid = ? AND l.objid = ? AND l.granted",
            (LOCK_SPACE, self.key),
        )
        if not rows:
            return None
        name, since = rows[0]
        holder = str(name).removeprefix("modelgate monitor ") or "a process without a name"
        return f"{holder} since {since.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}" if since is not None else holder

    def held(self) -> bool:
        (row,) = self.db.rows(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' "
            "AND classid = ? AND objid = ? AND granted)",
            (LOCK_SPACE, self.key),
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
        requests=SqlRequestLog(db),
        feedback=SqlFeedbackLog(db),
        reports=SqlReportStore(db),
        alerts=SqlAlertStore(db),
        outbox=SqlOutbox(db),
        lease=AdvisoryLease(url, db),
        shard_lease=lambda shard: AdvisoryLease(url, db, shard),
        closer=db.close,
        location=redacted(url),
    )
