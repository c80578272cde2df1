"""The store's contract, run against each backend: SQLite (a file) and PostgreSQL (a real server).

Every seam behaves the same on both: the request log keeps every request and
reads it back in commit order, feedback is taken once, reports and alert
states are replaced, the outbox queues a delivery once, and one process at a
time holds the monitor lease.
"""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from monitoring.alerts import Alert
from monitoring.records import START, Cursor, EncodedRecord, Feedback, Position, RequestRecord, advanced
from monitoring.store import FeedbackOutcome, Store, is_postgres, open_store
from monitoring.store.rows import request_rows
from monitoring.store.sql import SqlRequestLog
from monitoring.store.sqlite import SQLiteDatabase
from registry.prediction import Prediction


@pytest.fixture(params=["sqlite", "postgres"])
def location(request: pytest.FixtureRequest, tmp_path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "log" / "predictions.sqlite3")
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(location):
    opened = open_store(location)
    yield opened
    opened.close()


def record(request_id="r1", ts=100.0, model="cancer", status=200, arm="champion", rows=2, **extra):
    defaults = dict(
        features=("a", "b"),
        matrix=np.array([[1.5, np.nan], [3.0, 4.0]], dtype=np.float32)[:rows],
        prediction=Prediction(
            labels=np.array(["yes", "no"], dtype=object)[:rows],
            probabilities=np.array([[0.2, 0.8], [0.9, 0.1]])[:rows],
        ),
    )
    if status != 200:
        defaults = dict(error="inputs[0].a: missing")
    return RequestRecord(request_id=request_id, ts=ts, route="predict", status=status, latency_ms=1.25,
                         model=model, version=1, arm=arm, rows=rows, **{**defaults, **extra})  # fmt: skip


def write(store: Store, *records: RequestRecord) -> None:
    store.requests.write([EncodedRecord.of(r) for r in records])


def test_records_read_back_in_order_with_inputs_outputs_and_errors(store):
    write(store, record("r1"), record("r2", status=422))
    first, second = store.requests.read_after({}, 10)
    assert first.position < second.position
    assert first.inputs["a"] == [1.5, 3.0] and first.inputs["b"][0] is None and first.inputs["b"][1] == 4.0
    assert first.outputs == {"label": ["yes", "no"], "probabilities": [[0.2, 0.8], [0.9, 0.1]]}
    assert (first.ts, first.latency_ms, first.rows, first.version) == (100.0, 1.25, 2, 1)
    assert (second.status, second.error, second.inputs) == (422, "inputs[0].a: missing", None)
    assert store.requests.read_after({0: first.position}, 10) == [second]


def test_records_can_be_read_with_their_payloads_still_encoded(store):
    write(store, record("r1"))
    (raw,) = store.requests.read_after({}, 1, decode=False)
    assert raw.inputs is None and raw.outputs is None
    assert raw.decoded() == store.requests.read_after({}, 1)[0]


def test_per_feature_columns_with_strings_round_trip(store):
    columns = {
        "color": np.array(["red", "blue"], dtype=object),
        "size": np.array([1.0, math.nan], np.float32),
    }
    write(store, record(features=("color", "size"), matrix=None, columns=columns))
    (logged,) = store.requests.read_after({}, 1)
    assert logged.inputs == {"color": ["red", "blue"], "size": [1.0, None]}


def test_regression_outputs_and_flags_round_trip(store):
    write(store, record(prediction=Prediction(values=np.array([151.5, 80.25])), flags={"value_range": 1}))
    (logged,) = store.requests.read_after({}, 1)
    assert logged.outputs == {"value": [151.5, 80.25]} and logged.flags == {"value_range": 1}


def test_fetch_filters_by_model_and_time(store):
    write(store, record("old", ts=10), record("new", ts=20), record("other", ts=30, model="iris"))
    assert [r.request_id for r in store.requests.fetch("cancer", None)] == ["old", "new"]
    assert [r.request_id for r in store.requests.fetch("cancer", 15)] == ["new"]
    assert [r.request_id for r in store.requests.fetch(None, 15)] == ["new", "other"]


def test_feedback_targets_are_answered_requests_only(store):
    write(store, record("ok"), record("refused", status=422), record("shadow", arm="shadow"))
    targets = store.requests.targets(["ok", "refused", "shadow", "unknown"])
    assert list(targets) == ["ok"] and targets["ok"].rows == 2 and targets["ok"].version == 1


def test_answered_and_shadowed_predictions_of_a_request(store):
    write(store, record("r1"), record("r1", arm="shadow"), record("r2", status=422))
    assert [(r.request_id, r.arm) for r in store.requests.answered(["r1", "r2", "r1"])] == [
        ("r1", "champion")
    ]
    assert [(r.request_id, r.arm) for r in store.requests.shadowed(["r1", "r2"])] == [("r1", "shadow")]


def test_feedback_is_idempotent_and_conflicts_are_refused(store):
    write(store, record("r1"), record("r2"))
    outcomes = store.feedback.add([Feedback("r1", ["yes", "no"], 200.0), Feedback("r2", ["no", "no"], 200.0)])
    assert outcomes == [FeedbackOutcome.ACCEPTED, FeedbackOutcome.ACCEPTED]
    again = store.feedback.add([Feedback("r1", ["yes", "no"], 201.0), Feedback("r2", ["yes", "yes"], 201.0)])
    assert again == [FeedbackOutcome.DUPLICATE, FeedbackOutcome.CONFLICT]
    assert store.feedback.of(["r1", "r2", "x"])["r2"].ground_truth == ["no", "no"]
    tail = store.feedback.after(START, 10)
    assert [f.request_id for _, f in tail] == ["r1", "r2"] and tail[0][0] < tail[1][0]
    assert store.feedback.after(tail[0][0], 10) == tail[1:]


def test_feedback_keeps_a_reward_with_or_without_ground_truth(store):
    write(store, record("r1"), record("r2"))
    store.feedback.add([Feedback("r1", None, 200.0, reward=12.5), Feedback("r2", ["yes", "no"], 200.0, 1.0)])
    kept = store.feedback.of(["r1", "r2"])
    assert (kept["r1"].ground_truth, kept["r1"].reward, kept["r2"].reward) == (None, 12.5, 1.0)
    assert [f.reward for _, f in store.feedback.after(START, 10)] == [12.5, 1.0]
    assert store.feedback.add([Feedback("r1", None, 201.0, reward=3.0)]) == [FeedbackOutcome.CONFLICT]


def test_prune_deletes_what_is_older(store):
    write(store, record("old", ts=10), record("new", ts=20))
    store.feedback.add([Feedback("old", ["yes", "no"], 11.0), Feedback("new", ["yes", "no"], 21.0)])
    assert (store.requests.prune(before=15), store.feedback.prune(before=15)) == (1, 1)
    assert [r.request_id for r in store.requests.read_after({}, 10)] == ["new"]
    assert list(store.feedback.of(["old", "new"])) == ["new"]


def test_where_a_monitor_starts(store):
    assert store.requests.position_before(0) == {0: START}  # an empty log: from the start
    for request_id, ts in (("a", 10), ("b", 20), ("c", 30)):  # a transaction each
        write(store, record(request_id, ts=ts))
    _, b, c = store.requests.read_after({}, 10)
    start = store.requests.position_before(15)  # the first record at or after 15 is b
    assert start[0] < b.position and [r.request_id for r in store.requests.read_after(start, 10)] == [
        "b",
        "c",
    ]
    assert store.requests.position_before(99) == {0: c.position}  # nothing that recent: after the last
    assert store.feedback.position_before(15) == START


def test_a_monitor_reads_its_share_of_the_models_and_moves_past_the_rest(store):
    """A monitor looking after some models (``monitoring.shards``) gets only their records, and its
    cursor moves past the others' too, so it never scans them again, even while its own are quiet."""
    write(store, record("a1", model="a"), record("b1", model="b"), record("a2", model="a"))
    write(store, record("b2", model="b"))
    records, cursor = store.requests.read_share({}, 10, ["a"])
    assert [r.request_id for r in records] == ["a1", "a2"] and records[0].inputs is None  # left encoded
    assert cursor == advanced({}, store.requests.read_after({}, 10))  # past b2 as well
    write(store, record("b3", model="b"))
    quiet, later = store.requests.read_share(cursor, 10, ["a"])
    assert quiet == [] and later == advanced(cursor, store.requests.read_after(cursor, 10))
    (first,), at_limit = store.requests.read_share({}, 1, ["a", "b"])
    assert first.request_id == "a1" and at_limit == advanced({}, [first])  # a full read stops at its last
    assert store.requests.read_share(later, 10, []) == ([], later)


@pytest.mark.parametrize(("writers", "partitioned"), [(3, False), (32, False), (8, True)])
def test_a_reader_tailing_concurrent_writers_misses_nothing(location, writers, partitioned):
    """Writers in several processes' stead (one store each) commit batches while a monitor tails by
    position: it must end with every record, each once, in ascending position within each partition.
    On PostgreSQL nothing orders the writers' commits: sequence numbers taken in one order and
    committed in the other would be skipped by a reader that had passed them, were it not reading by
    transaction below the oldest one in flight. Partitioned (``own_partition``), each SQLite writer
    appends to a file of its own, created while the reader tails."""
    stores = [open_store(location, own_partition=partitioned) for _ in range(writers)]
    stores.append(open_store(location))
    writers_done = threading.Event()
    batches = 600 // (8 * writers)

    def writer(index: int, store: Store) -> None:
        for batch in range(batches):
            write(store, *(record(f"w{index}-{batch}-{i}", rows=1) for i in range(8)))

    seen: list[tuple[int, Position, str]] = []

    def tail(store: Store) -> None:
        cursor: Cursor = {}
        while True:
            finished = writers_done.is_set()  # read before the last pass: nothing is left after it
            read = store.requests.read_after(cursor, 50, decode=False)
            seen.extend((r.partition, r.position, r.request_id) for r in read)
            cursor = advanced(cursor, read)
            if finished and len(read) < 50:
                return
            time.sleep(0.001)

    threads = [threading.Thread(target=writer, args=(i, s)) for i, s in enumerate(stores[:writers])]
    reader = threading.Thread(target=tail, args=(stores[writers],))
    reader.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writers_done.set()
    reader.join()
    for store in stores:
        store.close()
    written = writers * batches * 8
    assert len(seen) == written and len({rid for *_, rid in seen}) == written
    partitions = {partition for partition, *_ in seen}
    assert len(partitions) == (writers if partitioned and not is_postgres(location) else 1)
    for partition in partitions:
        positions = [position for p, position, _ in seen if p == partition]
        assert positions == sorted(positions)


def test_sqlite_writers_with_partitions_of_their_own_are_read_as_one_log(tmp_path):
    """Each writer process (a store opened with ``own_partition``) appends to a file of its own, the
    lowest-numbered no live writer holds; everything that reads the log (feedback's checks, the
    monitor, exports, retention) sees every partition, one created after the reader opened included,
    and the monitor's cursor keeps a position per partition."""
    path = tmp_path / "predictions.sqlite3"
    reader = open_store(path)
    first, second = open_store(path, own_partition=True), open_store(path, own_partition=True)
    try:
        write(reader, record("main", ts=5))
        write(first, record("one", ts=10))
        write(second, record("two", ts=20), record("shadow", ts=21, arm="shadow"))
        assert sorted(p.name for p in (tmp_path / "predictions.sqlite3.parts").glob("*.db")) == [
            "1.db",
            "2.db",
        ]
        assert set(reader.requests.targets(["main", "one", "two", "shadow"])) == {"main", "one", "two"}
        assert [r.request_id for r in reader.requests.answered(["one", "two"])] == ["one", "two"]
        assert [r.request_id for r in reader.requests.shadowed(["shadow"])] == ["shadow"]
        assert [r.request_id for r in reader.requests.fetch("cancer", 8)] == ["one", "two", "shadow"]
        records = reader.requests.read_after({}, 10)
        assert [(r.partition, r.request_id) for r in records] == [
            (0, "main"),
            (1, "one"),
            (2, "two"),
            (2, "shadow"),
        ]
        cursor = advanced({}, records)
        shared, reached = reader.requests.read_share({}, 10, ["cancer"])
        assert [r.request_id for r in shared] == [r.request_id for r in records] and reached == cursor
        assert reader.requests.read_share({}, 10, ["iris"]) == ([], cursor)
        assert reader.requests.position_before(15) == {0: cursor[0], 1: cursor[1], 2: (0, 0)}
        write(first, record("later", ts=30))
        assert [r.request_id for r in reader.requests.read_after(cursor, 10)] == ["later"]
        second.close()  # its partition is free again: the next writer takes it, no third file
        third = open_store(path, own_partition=True)
        write(third, record("again", ts=40))
        assert [(r.partition, r.request_id) for r in reader.requests.read_after(cursor, 10)][-1] == (
            2,
            "again",
        )
        assert reader.requests.prune(before=25) == 4 and len(reader.requests.read_after({}, 10)) == 2
        third.close()
    finally:
        for store in (reader, first, second):
            store.close()


def test_a_reader_waits_for_a_record_still_being_committed(postgres_url):
    """A batch takes its numbers first and commits last: the reader reads neither it nor anything
    committed after it until it is in, then both, so its position never passes the slow one."""
    store, other = open_store(postgres_url), open_store(postgres_url)
    db = store.requests.db
    try:
        with db.transaction() as transaction:
            db.insert_requests(transaction, request_rows([EncodedRecord.of(record("slow"))]))
            write(other, record("quick"))  # a higher seq, committed first
            assert store.requests.read_after({}, 10) == []
        slow, quick = store.requests.read_after({}, 10)
        assert (slow.request_id, quick.request_id) == ("slow", "quick") and slow.seq < quick.seq
        assert store.requests.position_before(0)[0] < slow.position
    finally:
        store.close()
        other.close()


def test_a_sqlite_writer_waits_its_turn_within_the_timeout_and_a_killed_holder_frees_it(tmp_path):
    """SQLite's writers queue for an flock beside the file: a holder that stops (SIGSTOP, a hung disk)
    makes a write fail after the busy timeout, as SQLite's own lock did, so the log writer retries
    or counts it rather than hanging; one that is killed mid-transaction frees the turn at once."""
    path = tmp_path / "predictions.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from monitoring.store.sqlite import SQLiteDatabase; db = SQLiteDatabase(Path(sys.argv[1])); "
         "t = db.transaction().__enter__(); print('holding', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    log = SqlRequestLog(SQLiteDatabase(path, busy_timeout_ms=300))
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"holding"
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            log.write([EncodedRecord.of(record("waited"))])
        assert 0.3 <= time.monotonic() - started < 3
        holder.kill()
        holder.wait()
        log.write([EncodedRecord.of(record("written"))])
        assert [r.request_id for r in log.read_after({}, 10)] == ["written"]
    finally:
        holder.kill()
        log.db.close()


def test_a_report_replaces_the_one_before(store):
    assert store.reports.latest("cancer") is None
    store.reports.save("cancer", 1.0, b'{"window": 1}')
    store.reports.save("cancer", 2.0, b'{"window": 2}')
    store.reports.save("iris", 3.0, b"{}")
    assert store.reports.latest("cancer") == (2.0, b'{"window": 2}')


def test_report_summaries_are_kept_one_a_minute_for_six_hours(store):
    hour = 3600.0
    assert store.reports.history("cancer", 0.0) == []
    store.reports.save("cancer", 10.0, b"{}", b'{"at": 10}')
    store.reports.save("cancer", 50.0, b"{}", b'{"at": 50}')  # the same minute: replaces it
    store.reports.save("cancer", 70.0, b"{}", b'{"at": 70}')
    store.reports.save("cancer", 80.0, b"{}")  # a report without a summary keeps the history as it was
    store.reports.save("iris", 70.0, b"{}", b'{"at": "iris"}')
    assert store.reports.history("cancer", 0.0) == [b'{"at": 50}', b'{"at": 70}']
    assert store.reports.history("cancer", 65.0) == [b'{"at": 70}']
    store.reports.save("cancer", 6 * hour + 65.0, b"{}", b'{"at": "later"}')  # forgets the first minute
    assert store.reports.history("cancer", 0.0) == [b'{"at": 70}', b'{"at": "later"}']
    assert store.reports.history("iris", 0.0) == [b'{"at": "iris"}']


def test_alert_states_are_replaced_and_resolved_ones_kept_a_while(store):
    labels = {"alertname": "DriftDetected", "model": "cancer", "severity": "warning"}
    pending = Alert("f1", labels, {"summary": "drift"}, pending_since=10.0, value=0.4)
    resolved = Alert("f2", labels, {}, pending_since=5.0, value=1.0, firing_since=6.0, resolved_at=8.0)
    store.alerts.save([pending, resolved])
    firing = Alert("f1", labels, {"summary": "drift"}, pending_since=10.0, value=0.5, firing_since=12.0)
    store.alerts.save([firing])
    assert store.alerts.since(9.0) == [firing]  # f2 resolved before 9
    assert store.alerts.since(7.0) == [resolved, firing]  # by pending_since


def test_the_outbox_queues_a_delivery_once_until_delivered_or_given_up(store):
    entries = [("k1", "webhook http://a", b'{"n": 1}'), ("k1", "webhook http://b", b'{"n": 1}')]
    assert store.outbox.enqueue(entries, now=100.0) == 2
    assert store.outbox.enqueue([*entries, ("k2", "webhook http://a", b"{}")], now=101.0) == 1
    first, second, third = store.outbox.due(now=101.0, limit=10)
    assert (first.target, first.payload, first.attempts, first.created_at) == (
        "webhook http://a",
        b'{"n": 1}',
        0,
        100.0,
    )
    store.outbox.delivered(first.id, now=102.0)
    store.outbox.retry(second.id, next_attempt=110.0, error="503", give_up=False, now=102.0)
    store.outbox.retry(third.id, next_attempt=110.0, error="503", give_up=True, now=102.0)
    assert store.outbox.due(now=105.0, limit=10) == []
    (again,) = store.outbox.due(now=110.0, limit=10)
    assert (again.id, again.attempts) == (second.id, 1)
    assert store.outbox.due(now=110.0, limit=0) == []


def test_one_process_holds_the_monitor_lease_at_a_time(location):
    first, second = open_store(location), open_store(location)
    try:
        assert not second.lease.held() and second.lease.holder() is None
        assert first.lease.acquire() and first.lease.acquire()  # still held: asking again is fine
        assert second.lease.held() and not second.lease.acquire()
        # anyone can read who holds it: this host and process, since when
        holder = second.lease.holder()
        assert holder is not None and holder.startswith(f"{socket.gethostname()} pid {os.getpid()} since 20")
        first.lease.release()
        assert second.lease.acquire() and not first.lease.acquire()
    finally:
        first.close()
        second.close()


def test_a_lease_holder_that_is_killed_frees_the_lease(location):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from monitoring.store import open_store; "
         "s = open_store(sys.argv[1]); assert s.lease.acquire(); print('held', flush=True); time.sleep(60)",
         location],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    store = open_store(location)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        assert store.lease.held() and not store.lease.acquire()
        holder.kill()
        holder.wait()
        deadline = time.monotonic() + 10
        while not store.lease.acquire() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.lease.acquire()
    finally:
        holder.kill()
        store.close()


def test_opening_a_store_again_keeps_what_it_holds(location):
    first = open_store(location)
    write(first, record("r1"))
    first.close()
    again = open_store(location)  # the schema is there: nothing is created or migrated twice
    try:
        assert [r.request_id for r in again.requests.read_after({}, 10)] == ["r1"]
    finally:
        again.close()


def test_a_postgres_log_written_before_positions_is_read_after_the_upgrade(postgres_url):
    """Rows of a log whose writers took the old append lock have no transaction: migrated, they are
    at transaction 0, before everything written since, and a monitor reads them all once."""
    import psycopg

    from monitoring.store.postgres import MIGRATIONS

    with psycopg.connect(postgres_url, autocommit=True) as connection:
        connection.execute(
            b"CREATE TABLE modelgate_schema (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)"
        )
        for number, script in enumerate(MIGRATIONS[:2], start=1):
            connection.execute(script.encode())
            connection.execute(b"INSERT INTO modelgate_schema (version) VALUES (%s)", (number,))
        connection.execute(
            b"INSERT INTO requests (request_id, arm, ts, route, status, latency_ms, rows) "
            b"VALUES ('old', 'champion', 10, 'predict', 200, 1.0, 1)"
        )
    store = open_store(postgres_url)
    try:
        write(store, record("new", ts=20))
        old, new = store.requests.read_after({}, 10)
        assert (old.request_id, old.xid, new.request_id) == ("old", 0, "new") and new.xid > 0
        assert store.requests.read_after({0: old.position}, 10) == [new]
        assert store.requests.position_before(15) == {0: (new.xid, new.seq - 1)}
    finally:
        store.close()


def test_a_subject_is_erased_with_its_feedback_and_nothing_else(store, location):
    from monitoring.erasure import erase, requests_of
    from monitoring.redaction import Redactor
    from registry.aliases import LogPolicy

    subject = {"customer": np.array(["C-1042", "C-7"], dtype=object), "amount": np.array([12.5, 3.0])}
    other = {"customer": np.array(["C-7", "C-9"], dtype=object), "amount": np.array([8.25, 1.0])}
    hashing = LogPolicy(fields={"customer": "hash"})
    redactor = Redactor("key")
    encoded = [
        EncodedRecord.of(record("plain", features=("customer", "amount"), matrix=None, columns=subject)),
        EncodedRecord.of(record("plain", arm="shadow", features=("customer", "amount"), matrix=None,
                                columns=other)),  # its request's shadow record goes with it
        EncodedRecord.of(record("hashed", features=("customer", "amount"), matrix=None, columns=subject,
                                policy=hashing), redactor=redactor),
        EncodedRecord.of(record("kept", features=("customer", "amount"), matrix=None, columns=other)),
    ]  # fmt: skip
    store.requests.write(encoded)
    store.feedback.add([Feedback("plain", ["yes", "no"], 101.0), Feedback("kept", ["no", "no"], 102.0)])

    found = requests_of(store, field="customer", value="C-1042", redactor=redactor)
    assert found == {"plain", "hashed"}
    assert requests_of(store, field="customer", value="C-1042", redactor=Redactor("")) == {"plain"}
    assert requests_of(store, field="amount", value="12.5") == {"plain", "hashed"}  # a number as a number
    erased = erase(store, found)
    assert (sum(erased.records.values()), sum(erased.feedback.values())) == (3, 1)
    assert [r.request_id for r in store.requests.read_after({}, 10)] == ["kept"]
    assert list(store.feedback.of(["plain", "kept"])) == ["kept"]
    if not is_postgres(location):  # the bytes are gone from every file of the log, not only the rows
        files = b"".join(p.read_bytes() for p in sorted(Path(location).parent.rglob("*")) if p.is_file())
        assert b"C-1042" not in files and b"plain" not in files and b"kept" in files
