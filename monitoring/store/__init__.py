"""Where the monitor's state lives: six narrow seams, each with a SQLite and a PostgreSQL implementation.

A part of the gateway is handed only the seams it uses: the log writer a
``RequestLog``; the feedback route a ``RequestLog`` (to check what feedback
names) and a ``FeedbackLog``; the monitor both logs and the ``ReportStore``;
the alert stage an ``AlertStore`` and an ``Outbox``; the monitor's
supervisor a ``MonitorLease`` (one per shard where monitors share the
models). ``open_store`` opens all six on one backend, chosen by the
location given: a file path (SQLite, the embedded default, one machine) or
a ``postgresql://`` URL (any number of replicas). The contract both
backends keep is tests/monitoring/test_store_contract.py, run against each.

What the seams promise, whatever the backend:

- ``seq`` (requests and feedback) grows in commit order within a partition
  of the log: a reader that has seen ``seq`` n never later finds a committed
  entry of that partition below n, so a monitor tails by remembering one
  position per partition (``monitoring.records.Cursor``; PostgreSQL's log
  is one partition, SQLite's one per log-writer process).
- One process at a time holds the monitor lease; it is released when its
  holder exits, however it exits.
- An outbox entry is queued once per (dedupe key, target), whoever queues it.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from monitoring.alerts import Alert
from monitoring.records import (
    Cursor,
    Delivery,
    EncodedRecord,
    Feedback,
    FeedbackTarget,
    LoggedRequest,
    Position,
)

#: what ``MODELGATE_LOG_URL`` starts with to put the state in PostgreSQL
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class FeedbackOutcome(Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"  # the same ground truth again: nothing changes
    CONFLICT = "conflict"  # different ground truth for a request that has some


class RequestLog(Protocol):
    """Every request the gateway answered, refused or mirrored, read back in an order in which no
    record can appear before one already read (``Position``)."""

    def write(self, records: Sequence[EncodedRecord]) -> None:
        """Commit a batch of records in one transaction."""

    def read_after(self, cursor: Cursor, limit: int, decode: bool = True) -> list[LoggedRequest]:
        """Records after ``cursor``, each partition's in position order (``decode=False``: their
        inputs and outputs left encoded, see ``LoggedRequest``). A record still being committed is not
        among them, nor is any after it in its partition: they come in a later read."""

    def read_share(
        self, cursor: Cursor, limit: int, models: Sequence[str]
    ) -> tuple[list[LoggedRequest], dict[int, Position]]:
        """Records of ``models`` after ``cursor`` (as ``read_after``, their payloads left encoded), and
        the cursor past them and past the other models' records read over: a monitor looking after
        some models (``monitoring.shards``) neither decodes nor reads again the rest."""

    def fetch(self, model: str | None, since: float | None) -> list[LoggedRequest]:
        """Records of ``model`` (every model when None) at or after ``since`` (epoch seconds)."""

    def targets(self, request_ids: Iterable[str]) -> dict[str, FeedbackTarget]:
        """The answered (status 200, not shadow) requests among ``request_ids`` that feedback may name."""

    def answered(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        """The answered (status 200, not shadow) records of these request ids."""

    def shadowed(self, request_ids: Iterable[str]) -> list[LoggedRequest]:
        """The challenger's shadow predictions (status 200) of these request ids."""

    def position_before(self, ts: float) -> dict[int, Position]:
        """The cursor after which every record is at or after ``ts``: where a monitor starts."""

    def prune(self, before: float) -> int:
        """Delete records older than ``before``; how many."""

    def erase(self, request_ids: Iterable[str]) -> int:
        """Delete every record (any arm) of these request ids, its bytes made unrecoverable from the
        store's files; how many."""


class FeedbackLog(Protocol):
    """Ground truth, one entry per request, read back in position order as requests are."""

    def add(self, items: Sequence[Feedback]) -> list[FeedbackOutcome]:
        """Store ground truth; idempotent for the same value, refused for a different one."""

    def of(self, request_ids: Iterable[str]) -> dict[str, Feedback]:
        """Ground truth given for any of ``request_ids``."""

    def after(self, position: Position, limit: int) -> list[tuple[Position, Feedback]]:
        """Feedback after ``position``, in position order (as ``RequestLog.read_after``)."""

    def position_before(self, ts: float) -> Position:
        """The position after which all feedback is at or after ``ts``."""

    def prune(self, before: float) -> int:
        """Delete feedback older than ``before``; how many."""

    def erase(self, request_ids: Iterable[str]) -> int:
        """Delete the feedback of these request ids (as ``RequestLog.erase``); how many."""


#: how far back the reports' summaries are kept (``ReportStore.history``): the pages' time axis
HISTORY_SECONDS = 6 * 3600


class ReportStore(Protocol):
    """The monitor's latest report per model, which every replica's routes answer with, and a short
    history of each report's summary, one a minute (what the pages draw over time)."""

    def save(self, model: str, ts: float, report: bytes, point: bytes | None = None) -> None:
        """Store the report on ``model`` (JSON), replacing the previous one; with ``point`` (JSON, the
        report's summary), also keep it as the minute's, replacing one of the same minute and
        forgetting those older than ``HISTORY_SECONDS``."""

    def latest(self, model: str) -> tuple[float, bytes] | None:
        """The latest report on ``model`` and when it was computed."""

    def history(self, model: str, since: float) -> list[bytes]:
        """The summaries of ``model`` kept since ``since``, oldest first."""


class AlertStore(Protocol):
    """Each alert's state, so that a monitor taking over resumes rather than announces again."""

    def save(self, alerts: Sequence[Alert]) -> None:
        """Store each alert's state (pending, firing or resolved), replacing what was there."""

    def since(self, ts: float) -> list[Alert]:
        """Alerts pending or firing, and those resolved at or after ``ts``."""


class Outbox(Protocol):
    """Notifications to deliver, kept until delivered or given up."""

    def enqueue(self, entries: Sequence[tuple[str, str, bytes]], now: float) -> int:
        """Queue (dedupe key, target, payload) deliveries; one already queued is skipped. How many new."""

    def due(self, now: float, limit: int) -> list[Delivery]:
        """Deliveries not yet delivered or given up, whose next attempt is due."""

    def delivered(self, delivery_id: int, now: float) -> None: ...

    def retry(self, delivery_id: int, next_attempt: float, error: str, give_up: bool, now: float) -> None:
        """Count a failed attempt; schedule the next one, or give up."""


class MonitorLease(Protocol):
    """Who the one monitor of a deployment (or of a shard of its models) is."""

    def acquire(self) -> bool:
        """Try, without waiting, to become the monitor; held until ``release`` or this process exits."""

    def held(self) -> bool:
        """Whether some process holds the lease now."""

    def holder(self) -> str | None:
        """Who holds it: the holder's ``lease_holder()`` words (host and pid), or None."""

    def release(self) -> None: ...


def lease_holder() -> str:
    """How a lease holder names itself: which replica (host) and process holds it."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class Store:
    """The six seams on one backend, and how to close what they share (connections)."""

    requests: RequestLog
    feedback: FeedbackLog
    reports: ReportStore
    alerts: AlertStore
    outbox: Outbox
    #: the lease of the monitor of every model, or of shard 0 where monitors share the models
    lease: MonitorLease
    #: the lease of a monitor shard (``monitoring.shards``), a new one each call; 0's is ``lease``'s
    shard_lease: Callable[[int], MonitorLease]
    closer: Callable[[], None]
    #: where it is, for log lines and messages (a URL without its password, or a path)
    location: str

    def close(self) -> None:
        self.lease.release()
        self.closer()


def is_postgres(location: str | Path) -> bool:
    return str(location).startswith(POSTGRES_SCHEMES)


def redacted(url: str) -> str:
    """The URL without its password, for messages and log lines."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def open_store(location: str | Path, *, pool_size: int = 4, own_partition: bool = False) -> Store:
    """The store at ``location``: a ``postgresql://`` URL, or the path of a SQLite file.

    ``pool_size``: PostgreSQL connections at most (threads of one process share them).
    ``own_partition``: this process appends requests to a SQLite log file of its own, which no other
    writer waits for (``monitoring.store.sqlite.PartitionedRequestLog``); PostgreSQL's writers do not
    wait for each other anyway, and ignore it.
    """
    if is_postgres(location):
        from monitoring.store.postgres import open_postgres

        return open_postgres(str(location), pool_size=pool_size)
    from monitoring.store.sqlite import open_sqlite

    return open_sqlite(Path(location), own_partition)
