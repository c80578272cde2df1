"""The seams over SQL, written once for both backends.

The schema and these statements are the same on SQLite and PostgreSQL;
what differs is behind ``Database``: connections and transactions, how a
batch of requests goes in (a multi-row INSERT, or COPY), how a list of ids
is matched (chunked IN lists, or ``= ANY``), and how a reader tails what
writers append (by ``seq`` behind SQLite's one writer at a time, or by
transaction below the oldest one in flight: ``Position``). Statements are
written with ``?`` placeholders; a backend that takes another style converts
them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

import orjson

from monitoring.alerts import Alert
from monitoring.records import (
    START,
    Cursor,
    Delivery,
    EncodedRecord,
    Feedback,
    FeedbackTarget,
    LoggedRequest,
    Position,
)
from monitoring.store import HISTORY_SECONDS, FeedbackOutcome
from monitoring.store.rows import REQUEST_COLUMNS, WRITTEN_COLUMNS, loaded, request_rows

#: the tables whose ``seq`` consumers tail
Tailed = Literal["requests", "feedback"]


class Transaction(Protocol):
    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the rows it changed."""

    def executemany(self, query: str, params: Sequence[Sequence[Any]]) -> None: ...

    def one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row the query answers, if any."""


class Database(Protocol):
    #: a row's transaction, as an integer (the first part of its ``Position``)
    xid: str

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run a query outside any transaction (a snapshot of its own); its rows."""

    def rows_in(self, query: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
        """Rows of ``query``, whose ``{ids}`` stands where the id list is matched (``column {ids}``)."""

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A write transaction: committed when the block ends, rolled back when it raises."""

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
        """The table's rows after ``position`` (``xid, seq`` and then ``columns``), in position order;
        none a reader could later find a row before. ``until``: none past it; ``models``: requests of
        these models only (a non-empty list)."""

    def top(self, table: Tailed) -> Position:
        """The position of the last row a reader may pass now (``START`` when none): every row at or
        before it is committed, and none will be later."""

    def position_before(self, table: Tailed, ts: float) -> Position:
        """The position after which every row of ``table`` is at or after ``ts``."""

    def reclaim(self) -> None:
        """Make deleted rows' bytes unrecoverable from the database's own files (SQLite: zeroed and the
        write-ahead log emptied; PostgreSQL: vacuumed). Backups and replicas are not reached."""

    def insert_requests(self, transaction: Transaction, rows: list[tuple[Any, ...]]) -> None:
        """Insert rows of ``WRITTEN_COLUMNS``."""


class SqlRequestLog:
    """The request log in one database: one partition of the log (``Cursor``), 0 unless told."""

    def __init__(self, db: Database, partition: int = 0) -> None:
        self.db = db
        self.partition = partition

    def write(self, records: Sequence[EncodedRecord]) -> None:
        rows = request_rows(records)
        with self.db.transaction() as transaction:
            self.db.insert_requests(transaction, rows)

    def read_after(self, cursor: Cursor, limit: int, decode: bool = True) -> list[LoggedRequest]:
        rows = self.db.after("requests", WRITTEN_COLUMNS, cursor.get(self.partition, START), limit)
        return [loaded(row, decode, self.partition) for row in rows]

    def read_share(
        self, cursor: Cursor, limit: int, models: Sequence[str]
    ) -> tuple[list[LoggedRequest], dict[int, Position]]:
        start = cursor.get(self.partition, START)
        top = self.db.top("requests")
        if top <= start or not models:
            return [], {self.partition: max(top, start)}
        rows = self.db.after("requests", WRITTEN_COLUMNS, start, limit, until=top, models=models)
        records = [loaded(row, False, self.partition) for row in rows]
        return records, {self.partition: records[-1].position if len(records) == limit else top}

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        query = f"SELECT {self.db.xid}, {REQUEST_COLUMNS} FROM requests WHERE ts >= ?"
        params: list[object] = [since if since is not None else float("-inf")]
        if model is not None:
            query += " AND model = ?"
            params.append(model)
        return [
            loaded(row, partition=self.partition) for row in self.db.rows(query + " ORDER BY seq", params)
        ]

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        rows = self.db.rows_in(
            "SELECT request_id, model, version, rows FROM requests "
            "WHERE status = 200 AND arm != 'shadow' AND request_id {ids}",
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
        rows = self.db.rows_in(
            f"SELECT {self.db.xid}, {REQUEST_COLUMNS} FROM requests "
            f"WHERE status = 200 AND {condition} AND request_id {{ids}}",
            request_ids,
        )
        return [
            loaded(row, partition=self.partition) for row in sorted(rows, key=lambda row: (row[0], row[1]))
        ]

    def position_before(self, ts: float) -> dict[int, Position]:
        return {self.partition: self.db.position_before("requests", ts)}

    def prune(self, before: float) -> int:
        with self.db.transaction() as transaction:
            return transaction.execute("DELETE FROM requests WHERE ts < ?", (before,))

    def erase(self, request_ids: Iterable[str]) -> int:
        return _erase(self.db, "requests", request_ids)


class SqlFeedbackLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        outcomes = []
        with self.db.transaction() as transaction:
            for item in items:
                truth = orjson.dumps(item.ground_truth).decode()
                inserted = transaction.execute(
                    "INSERT INTO feedback (request_id, ground_truth, ts, reward) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (request_id) DO NOTHING",
                    (item.request_id, truth, item.ts, item.reward),
                )
                if inserted:
                    outcomes.append(FeedbackOutcome.ACCEPTED)
                    continue
                existing = transaction.one(
                    "SELECT ground_truth, reward FROM feedback WHERE request_id = ?", (item.request_id,)
                )
                same = existing is not None and (existing[0], existing[1]) == (truth, item.reward)
                outcomes.append(FeedbackOutcome.DUPLICATE if same else FeedbackOutcome.CONFLICT)
        return outcomes

    def of(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        rows = self.db.rows_in(
            "SELECT request_id, ground_truth, ts, reward FROM feedback WHERE request_id {ids}", request_ids
        )
        return {row[0]: Feedback(row[0], orjson.loads(row[1]), row[2], row[3]) for row in rows}

    def after(self, position: Position, limit: int) -> list[tuple[Position, Feedback]]:
        rows = self.db.after("feedback", "request_id, ground_truth, ts, reward", position, limit)
        return [
            ((xid, seq), Feedback(rid, orjson.loads(truth), ts, reward))
            for xid, seq, rid, truth, ts, reward in rows
        ]

    def position_before(self, ts: float) -> Position:
        return self.db.position_before("feedback", ts)

    def prune(self, before: float) -> int:
        with self.db.transaction() as transaction:
            return transaction.execute("DELETE FROM feedback WHERE ts < ?", (before,))

    def erase(self, request_ids: Iterable[str]) -> int:
        return _erase(self.db, "feedback", request_ids)


def _erase(db: Database, table: str, request_ids: Iterable[str]) -> int:
    """Delete ``table``'s rows of these request ids in one transaction, then reclaim their bytes."""
    with db.transaction() as transaction:
        erased = sum(
            transaction.execute(f"DELETE FROM {table} WHERE request_id = ?", (rid,))
            for rid in dict.fromkeys(request_ids)
        )
    if erased:
        db.reclaim()
    return erased


class SqlReportStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, model: str, ts: float, report: bytes, point: bytes | None = None) -> None:
        with self.db.transaction() as transaction:
            transaction.execute(
                "INSERT INTO monitor_reports (model, ts, report) VALUES (?, ?, ?) "
                "ON CONFLICT (model) DO UPDATE SET ts = excluded.ts, report = excluded.report",
                (model, ts, report.decode()),
            )
            if point is None:
                return
            minute = int(ts // 60)
            transaction.execute(
                "INSERT INTO monitor_history (model, minute, point) VALUES (?, ?, ?) "
                "ON CONFLICT (model, minute) DO UPDATE SET point = excluded.point",
                (model, minute, point.decode()),
            )
            transaction.execute(
                "DELETE FROM monitor_history WHERE model = ? AND minute < ?",
                (model, minute - HISTORY_SECONDS // 60),
            )

    def history(self, model: str, since: float) -> list[bytes]:
        rows = self.db.rows(
            "SELECT point FROM monitor_history WHERE model = ? AND minute >= ? ORDER BY minute",
            (model, int(since // 60)),
        )
        return [row[0].encode() for row in rows]

    def latest(self, model: str) -> tuple[float, bytes] | None:
        rows = self.db.rows("SELECT ts, report FROM monitor_reports WHERE model = ?", (model,))
        return None if not rows else (rows[0][0], rows[0][1].encode())


class SqlAlertStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def save(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        with self.db.transaction() as transaction:
            transaction.executemany(
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
        rows = self.db.rows(
            "SELECT fingerprint, labels, annotations, value, pending_since, firing_since, resolved_at "
            "FROM alerts WHERE resolved_at IS NULL OR resolved_at >= ? ORDER BY pending_since",
            (ts,),
        )
        return [
            Alert(key, orjson.loads(labels), orjson.loads(notes), pending_since=pending, value=value,
                  firing_since=firing, resolved_at=resolved)
            for key, labels, notes, value, pending, firing, resolved in rows
        ]  # fmt: skip


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


class SqlOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        with self.db.transaction() as transaction:
            return sum(
                transaction.execute(
                    "INSERT INTO alert_outbox (dedupe_key, target, payload, created_at, next_attempt) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (dedupe_key, target) DO NOTHING",
                    (key, target, payload.decode(), now, now),
                )
                for key, target, payload in entries
            )

    def due(self, now: float, limit: int) -> list[Delivery]:
        rows = self.db.rows(
            "SELECT id, target, payload, attempts, created_at FROM alert_outbox WHERE delivered_at IS NULL "
            "AND given_up_at IS NULL AND next_attempt <= ? ORDER BY id LIMIT ?",
            (now, limit),
        )
        return [
            Delivery(i, target, payload.encode(), attempts, created)
            for i, target, payload, attempts, created in rows
        ]

    def delivered(self, delivery_id: int, now: float) -> None:
        with self.db.transaction() as transaction:
            transaction.execute(
                "UPDATE alert_outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
                (now, delivery_id),
            )

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        with self.db.transaction() as transaction:
            transaction.execute(
                "UPDATE alert_outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?, "
                "given_up_at = ? WHERE id = ?",
                (next_attempt, error, now if give_up else None, delivery_id),
            )
