"""The store in one SQLite file (WAL mode): the embedded default, for one machine.

One connection per thread (sqlite3 connections are not shared across
threads); several processes may write the same file, one at a time, which is
also what keeps ``seq`` in commit order. Writers take turns by an flock on a
file beside the database (``WriteTurn``) before SQLite's own lock: SQLite's
busy handler sleeps 1, 2, 5 ... up to 100 ms between tries, so with a dozen
workers' writers waiting the lock sat free while they slept, and the log
stopped at a fraction of what one writer commits alone.
``synchronous=NORMAL``: a committed batch survives a process crash; an OS
crash or power loss may lose the last batches. The monitor lease is an flock
on a file beside the database.

Taking turns still leaves one file's writers committing one at a time: with
a dozen workers the log, not the models, set the gateway's ceiling. So each
log-writer process of ``modelgate serve`` claims a request log of its own,
``<log>.parts/<n>.db`` (``PartitionedRequestLog``), and writers never wait
for each other; everything else (feedback, reports, alerts, the outbox, and
requests written by a process without a partition) stays in the main file.
Reads span every partition; the monitor tails each by its own position
(``monitoring.records.Cursor``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import queue
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from itertools import count
from pathlib import Path
from typing import Any, TextIO

from monitoring.records import Cursor, EncodedRecord, FeedbackTarget, LoggedRequest, Position
from monitoring.store import Store, lease_holder
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
    # a business reward per request (POST /feedback's "reward"); ground_truth is then JSON null
    "ALTER TABLE feedback ADD COLUMN reward REAL",
    # each report's summary, one a minute (ReportStore.history)
    """
    CREATE TABLE IF NOT EXISTS monitor_history (
        model TEXT NOT NULL,
        minute INTEGER NOT NULL,
        point TEXT NOT NULL,
        PRIMARY KEY (model, minute)
    );
    """,
)

#: rows one INSERT carries: 13 parameters each, under SQLite's 32766 (the limit since 3.32)
INSERT_ROWS = 500
#: ids one IN list carries
IN_CHUNK = 500


class SQLiteDatabase:
    """The file, its connections (one per thread) and its schema."""

    xid = "0"

    def __init__(self, path: Path, busy_timeout_ms: int = 10_000) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._turns: list[WriteTurn] = []
        self._lock = threading.Lock()
        self.connection().execute("PRAGMA journal_mode=WAL")
        with self.transaction() as transaction:  # one process migrates; the others then find it done
            (version,) = transaction.one("PRAGMA user_version") or (0,)
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    transaction.execute(statement)
                transaction.execute(f"PRAGMA user_version = {number}")

    def connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path, timeout=self.busy_timeout_ms / 1000, check_same_thread=False, isolation_level=None
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
            # a deleted row's bytes are zeroed, not left in free pages (erasure; prune pays a little)
            connection.execute("PRAGMA secure_delete=ON")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def rows(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.connection().execute(query, params).fetchall()

    def rows_in(self, query: str, ids: Iterable[str]) -> list[tuple[Any, ...]]:
        """IN lists in chunks that stay under SQLite's bound-parameter limit."""
        unique = list(dict.fromkeys(ids))
        found: list[tuple[Any, ...]] = []
        for start in range(0, len(unique), IN_CHUNK):
            chunk = unique[start : start + IN_CHUNK]
            found.extend(self.rows(query.format(ids=f"IN ({','.join('?' * len(chunk))})"), chunk))
        return found

    def transaction(self) -> _Transaction:
        turn: WriteTurn | None = getattr(self._local, "turn", None)
        if turn is None:
            turn = WriteTurn(self.path.with_name(self.path.name + ".write.lock"), self.busy_timeout_ms / 1000)
            self._local.turn = turn
            with self._lock:
                self._turns.append(turn)
        return _Transaction(self.connection(), turn)

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
        """By ``seq`` alone: ``BEGIN IMMEDIATE`` takes the file's write lock, so numbers are taken and
        committed one writer at a time."""
        where, params = "seq > ?", list[object]([position[1]])
        if until is not None:
            where += " AND seq <= ?"
            params.append(until[1])
        if models is not None:
            # unary + keeps the planner on seq's order: by the model index it sorted every match
            where += f" AND +model IN ({','.join('?' * len(models))})"
            params.extend(models)
        return self.rows(
            f"SELECT {self.xid}, seq, {columns} FROM {table} WHERE {where} ORDER BY seq LIMIT ?",
            (*params, limit),
        )

    def top(self, table: Tailed) -> Position:
        ((seq,),) = self.rows(f"SELECT COALESCE(MAX(seq), 0) FROM {table}")
        return (0, int(seq))

    def reclaim(self) -> None:
        """Deleted rows are zeroed in the pages (``secure_delete``); their old images in the write-ahead
        log go once it is checkpointed into the file and emptied, which waits for readers."""
        for _ in range(50):
            ((busy, _, _),) = self.rows("PRAGMA wal_checkpoint(TRUNCATE)")
            if not busy:
                return
            time.sleep(0.1)
        raise OSError(f"{self.path}: the write-ahead log could not be emptied: a reader held it for 5 s")

    def position_before(self, table: Tailed, ts: float) -> Position:
        # one statement, one snapshot: asked in two, a batch committed in between would be skipped
        ((seq,),) = self.rows(
            f"SELECT COALESCE((SELECT MIN(seq) - 1 FROM {table} WHERE ts >= ?), "
            f"(SELECT COALESCE(MAX(seq), 0) FROM {table}))",
            (ts,),
        )
        return (0, int(seq))

    def insert_requests(self, transaction: Transaction, rows: list[tuple[Any, ...]]) -> None:
        # many rows a statement: executemany steps (and releases the GIL) once a row
        for start in range(0, len(rows), INSERT_ROWS):
            chunk = rows[start : start + INSERT_ROWS]
            values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?)"] * len(chunk))
            transaction.execute(
                f"INSERT INTO requests ({WRITTEN_COLUMNS}) VALUES {values}",
                [value for row in chunk for value in row],
            )

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
            for turn in self._turns:
                turn.close()
            self._turns.clear()
        self._local = threading.local()


class WriteTurn:
    """One thread's place in the queue of the file's writers: an exclusive flock on a file beside the
    database, taken before ``BEGIN IMMEDIATE`` and released after its commit.

    The kernel wakes the next writer the moment the file is free (SQLite's own wait sleeps 1, 2, 5
    ... 100 ms between tries). A blocking flock has no timeout, so when the turn is taken a helper
    thread waits for it, and the writer waits for the helper at most ``timeout`` (SQLite's busy
    timeout): a stopped or hung holder makes the write fail, and the log writer retry or count it,
    rather than hang a graceful stop. The kernel releases a turn when its holder exits, however it
    exits.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.handle = self._open()
        self._asks: queue.SimpleQueue[_Ask | None] | None = None

    def _open(self) -> TextIO:
        # held; each thread its own, as an flock belongs to an open file
        return open(self.path, "a")

    def take(self) -> None:
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        if self._asks is None:
            self._asks = queue.SimpleQueue()
            threading.Thread(
                target=_wait_turns, args=(self._asks,), name="sqlite-write-turn", daemon=True
            ).start()
        ask = _Ask(self.handle)
        self._asks.put(ask)
        if ask.settle(self.timeout):
            return
        self.handle = self._open()  # the abandoned one is the helper's to release and close
        raise sqlite3.OperationalError(f"database is locked: no turn to write within {self.timeout:g} s")

    def give(self) -> None:
        fcntl.flock(self.handle, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._asks is not None:
            self._asks.put(None)
        self.handle.close()


class _Ask:
    """A writer's wait for its turn, handed to the helper thread: taken in time, or abandoned."""

    def __init__(self, handle: TextIO) -> None:
        self.handle = handle
        self.taken = threading.Event()
        self.abandoned = False
        self.lock = threading.Lock()

    def settle(self, timeout: float) -> bool:
        """Whether the turn was taken within ``timeout``; if not, it is abandoned to the helper."""
        self.taken.wait(timeout)
        with self.lock:
            self.abandoned = not self.taken.is_set()
        return not self.abandoned

    def granted(self) -> None:
        """Called by the helper holding the turn: keep it for the writer, or give it up (and the handle)."""
        with self.lock:
            if not self.abandoned:
                self.taken.set()
                return
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _wait_turns(asks: queue.SimpleQueue[_Ask | None]) -> None:
    while (ask := asks.get()) is not None:
        if ask.abandoned:
            ask.handle.close()
            continue
        fcntl.flock(ask.handle, fcntl.LOCK_EX)
        ask.granted()


class _Transaction:
    """The writers' turn (``WriteTurn``), then ``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK``):
    the write lock taken at the start, so two writers never both read and then both try to write."""

    def __init__(self, connection: sqlite3.Connection, turn: WriteTurn) -> None:
        self.connection = connection
        self.turn = turn

    def __enter__(self) -> _Transaction:
        self.turn.take()
        try:
            self.connection.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.turn.give()
            raise
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        try:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.turn.give()

    def execute(self, query: str, params: Sequence[Any] = ()) -> int:
        return self.connection.execute(query, params).rowcount

    def executemany(self, query: str, params: Sequence[Sequence[Any]]) -> None:
        self.connection.executemany(query, params)

    def one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self.connection.execute(query, params).fetchone()
        return row


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
        handle.truncate(0)  # who holds it, for the status route (the lock is what counts)
        handle.write(f"{lease_holder()} since {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
        handle.flush()
        self._handle = handle
        return True

    def holder(self) -> str | None:
        if not self.held():
            return None
        with contextlib.suppress(OSError):
            return self.path.read_text().strip() or None
        return None

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


class PartitionedRequestLog:
    """The request log on one machine: the main file (partition 0) and a file per log-writer process
    (partitions 1, 2, ...: ``<log>.parts/<n>.db``).

    A writer given ``own=True`` claims the lowest-numbered partition no live process holds (an flock
    on ``<n>.owner``, released when it exits, however it exits) and appends there alone; otherwise it
    appends to the main file. Partitions outlive their writers: a writer started again takes one
    back, so there are as many files as writers ever ran at once. Reads look for partitions created
    since the last read, so a record is found as soon as it is committed, whoever wrote it.
    """

    def __init__(self, main: SQLiteDatabase, own: bool = False) -> None:
        self.directory = parts_directory(main.path)
        self._parts: dict[int, SqlRequestLog] = {0: SqlRequestLog(main)}
        self._databases: list[SQLiteDatabase] = []
        self._lock = threading.Lock()
        self._claim: FileLease | None = None
        self.writer = self._claimed() if own else self._parts[0]

    def _claimed(self) -> SqlRequestLog:
        """The lowest-numbered partition whose owner lease (a ``FileLease``) is free, now held."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for number in count(1):
            claim = FileLease(self.directory / f"{number}.owner")
            if claim.acquire():
                self._claim = claim
                return self._partition(number)
        raise AssertionError("unreachable")

    def _partition(self, number: int) -> SqlRequestLog:
        with self._lock:
            part = self._parts.get(number)
            if part is None:
                database = SQLiteDatabase(self.directory / f"{number}.db")
                self._databases.append(database)
                part = self._parts[number] = SqlRequestLog(database, number)
            return part

    def partitions(self) -> list[SqlRequestLog]:
        """Every partition, those created since the last look included, in number order."""
        for number, _ in partition_files(self.directory):
            if number not in self._parts:
                self._partition(number)
        with self._lock:
            return [self._parts[number] for number in sorted(self._parts)]

    def write(self, records: Sequence[EncodedRecord]) -> None:
        self.writer.write(records)

    def read_after(self, cursor: Cursor, limit: int, decode: bool = True) -> list[LoggedRequest]:
        read: list[LoggedRequest] = []
        for part in self.partitions():
            if len(read) >= limit:
                break
            read.extend(part.read_after(cursor, limit - len(read), decode))
        return read

    def read_share(
        self, cursor: Cursor, limit: int, models: Sequence[str]
    ) -> tuple[list[LoggedRequest], dict[int, Position]]:
        read: list[LoggedRequest] = []
        moved = dict(cursor)
        for part in self.partitions():
            if len(read) >= limit:
                break
            records, reached = part.read_share(cursor, limit - len(read), models)
            read.extend(records)
            moved.update(reached)
        return read, moved

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        records = [record for part in self.partitions() for record in part.fetch(model, since)]
        return sorted(records, key=lambda record: record.ts)

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        ids = list(request_ids)
        return {k: v for part in self.partitions() for k, v in part.targets(ids).items()}

    def answered(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        ids = list(request_ids)
        return [record for part in self.partitions() for record in part.answered(ids)]

    def shadowed(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        ids = list(request_ids)
        return [record for part in self.partitions() for record in part.shadowed(ids)]

    def position_before(self, ts: float) -> dict[int, Position]:
        return {k: v for part in self.partitions() for k, v in part.position_before(ts).items()}

    def prune(self, before: float) -> int:
        return sum(part.prune(before) for part in self.partitions())

    def erase(self, request_ids: Iterable[str]) -> int:
        ids = list(request_ids)
        return sum(part.erase(ids) for part in self.partitions())

    def close(self) -> None:
        with self._lock:
            for database in self._databases:
                database.close()
        if self._claim is not None:
            self._claim.release()
            self._claim = None


def monitor_lease(path: Path, shard: int) -> FileLease:
    """The lease of the log's monitor, or of one shard of its models (``monitoring.shards``)."""
    return FileLease(
        path.with_name(path.name + (".monitor.lock" if shard == 0 else f".monitor-{shard}.lock"))
    )


def parts_directory(path: Path) -> Path:
    """Where the partitions of the SQLite log at ``path`` are: ``<log>.parts``."""
    return path.with_name(path.name + ".parts")


def partition_files(directory: Path) -> list[tuple[int, Path]]:
    """The partitions' files in ``directory`` (``<log>.parts``), by number."""
    if not directory.is_dir():
        return []
    found = [(int(path.stem), path) for path in directory.glob("*.db") if path.stem.isdigit()]
    return sorted(found)


def request_files(path: Path) -> list[Path]:
    """Every file of the SQLite log at ``path`` that holds requests: itself, then its partitions'."""
    return [path, *(file for _, file in partition_files(parts_directory(path)))]


def open_sqlite(path: Path, own_partition: bool = False) -> Store:
    """The store in the SQLite file at ``path``; ``own_partition``: this process appends requests to a
    partition of its own (``PartitionedRequestLog``)."""
    db = SQLiteDatabase(path)
    requests = PartitionedRequestLog(db, own_partition)

    def close() -> None:
        requests.close()
        db.close()

    return Store(
        requests=requests,
        feedback=SqlFeedbackLog(db),
        reports=SqlReportStore(db),
        alerts=SqlAlertStore(db),
        outbox=SqlOutbox(db),
        lease=monitor_lease(path, 0),
        shard_lease=functools.partial(monitor_lease, path),
        closer=close,
        location=str(path),
    )
