"""The prediction-log writer's own process, one beside each gateway worker.

A worker's ``EventSink`` hands each batch of records to its ``LogShipper``,
which pickles the batch into this process's stdin; here a ``LogWriter``
encodes, checks, counts, commits and logs it, as the worker would have.
Why a process: in the worker that work held the GIL for about a tenth of a
core at a thousand requests a second, time the event loop answering
requests then waited for; pickling a batch costs a fraction of it, and the
pipe write releases the GIL.

What is guaranteed: the pipe keeps what was handed over even when the
worker dies; a writer that dies is started again by the next hand-off,
which is resent whole; what a dead writer had read and not committed is
lost (the crash case: normally one batch, 50 ms). The writer ignores
SIGTERM and SIGINT, which reach the whole process group on a stop or a
Ctrl-C: it stops when its stdin ends, after the worker drained its queue
into it, so a graceful shutdown loses nothing the store takes. SIGUSR1
(the worker stopping) and a parent that is gone (a killed worker) end its
retries: what the store still refuses then (a full disk) is counted lost
and logged, and the writer exits with its input instead of retrying alone.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import structlog

from monitoring.records import Checker, RequestRecord
from monitoring.sink import SHUTDOWN_ATTEMPTS, OnCommit
from registry.prediction import Prediction
from service.processes.children import spawn, wait_or_kill
from service.processes.runtime import tune_garbage_collector
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics

#: each message: its length, then a pickled Shipment
HEADER = struct.Struct("<Q")
#: the environment variable naming the pipe on which a writer says it is ready
READY_FD = "MODELGATE_LOG_WRITER_READY_FD"
#: ... and the pipe on which it says which shipments it committed (durable acknowledgement)
ACK_FD = "MODELGATE_LOG_WRITER_ACK_FD"
#: each acknowledgement: the shipment's number, and whether all its records were committed
ACK = struct.Struct("<Q?")

log = structlog.get_logger("modelgate.log_writer")

#: record fields shipped as they are, one list a field
PLAIN = ("request_id", "ts", "route", "status", "latency_ms", "model", "version", "arm", "rows",
         "features", "columns", "error", "flags", "classes", "policy", "attributions")  # fmt: skip
#: array fields (the inputs matrix, the prediction's), concatenated over a batch when they stack
STACKED = ("matrix", "labels", "probabilities", "values", "embeddings")
#: the prediction's arrays among them, by field name
PREDICTED = STACKED[1:]


@dataclass(frozen=True)
class Shipment:
    """A batch of records as the writer process receives it: one list a plain field; each array
    field concatenated over the batch with each record's row count (-1: none), or, when the
    arrays do not stack, one array a record; whether each record is to be checked for
    plausibility (its checker is not picklable: the writer builds its own).

    Why columns: pickling a single-row record's three small arrays took ~11 us in the worker;
    the batch's few concatenated arrays take ~2 us a record.
    """

    final: bool
    #: its number, acknowledged on the ack pipe once committed; 0: no acknowledgement wanted
    seq: int
    plain: dict[str, list[Any]]
    stacked: dict[str, tuple[np.ndarray | None, list[Any]]]
    checked: list[bool]


def _arrays(record: RequestRecord) -> tuple[np.ndarray | None, ...]:
    p = record.prediction
    return (record.matrix, *(None if p is None else getattr(p, name) for name in PREDICTED))


def ship(batch: list[RequestRecord], final: bool, seq: int = 0) -> Shipment:
    stacked: dict[str, tuple[np.ndarray | None, list[Any]]] = {}
    for name, items in zip(STACKED, zip(*map(_arrays, batch), strict=True), strict=True):
        present = [a for a in items if a is not None]
        if present and len({(a.dtype, a.shape[1:]) for a in present}) == 1:
            stacked[name] = (np.concatenate(present), [-1 if a is None else len(a) for a in items])
        else:
            stacked[name] = (None, list(items))
    plain = {name: [getattr(r, name) for r in batch] for name in PLAIN}
    return Shipment(final, seq, plain, stacked, [r.checker is not None for r in batch])


def _unstacked(array: np.ndarray | None, items: list[Any]) -> list[Any]:
    if array is None:
        return items
    parts, start = [], 0
    for count in items:
        parts.append(None if count < 0 else array[start : start + count])
        start += max(count, 0)
    return parts


def unship(shipment: Shipment, checkers: Checkers) -> list[RequestRecord]:
    arrays = [_unstacked(*shipment.stacked[name]) for name in STACKED]
    records = []
    for index, (matrix, *predicted) in enumerate(zip(*arrays, strict=True)):
        fields = {name: column[index] for name, column in shipment.plain.items()}
        model, version = fields["model"], fields["version"]
        answered = any(array is not None for array in predicted)
        prediction = Prediction(**dict(zip(PREDICTED, predicted, strict=True))) if answered else None
        checked = shipment.checked[index] and model and version is not None
        checker = checkers.get(model, version) if checked else None
        records.append(RequestRecord(**fields, matrix=matrix, prediction=prediction, checker=checker))
    return records


class LogShipper:
    """The worker's side: hands batches to its writer process, starting it (again) when needed."""

    def __init__(self, settings: Settings, retry_seconds: float = 0.5) -> None:
        self.settings = settings
        self.retry_seconds = retry_seconds
        self.child: subprocess.Popen[bytes] | None = None
        #: set before the first write to count what is lost (see monitoring.metrics)
        self.metrics: GatewayMetrics | None = None
        # durable acknowledgement: every writer this shipper starts reports its commits on one pipe
        self._acks: dict[int, OnCommit] = {}
        self._seq = 0
        self._ack_pipe: tuple[int, int] | None = None
        if settings.log_ack == "committed":
            self._ack_pipe = os.pipe()
            threading.Thread(target=self._read_acks, name="log-acks", daemon=True).start()

    def start(self, timeout: float = 60.0) -> None:
        """Start the writer and wait until it can write: the gateway is not ready before its log is
        (feedback that follows a first request at once must find that request's record)."""
        ready, signal_ready = os.pipe()
        try:
            self.child = self._spawn(signal_ready)
            os.close(signal_ready)
            signal_ready = -1
            answered, _, _ = select.select([ready], [], [], timeout)
            if not answered or os.read(ready, 1) != b"1":
                raise RuntimeError(
                    f"the prediction-log writer (pid {self.child.pid}) did not start within {timeout:g} s "
                    f"(exit code {self.child.poll()}); see its log lines above"
                )
        finally:
            os.close(ready)
            if signal_ready >= 0:
                os.close(signal_ready)

    def _spawn(self, ready_fd: int | None = None) -> subprocess.Popen[bytes]:
        env, fds = {}, []
        if ready_fd is not None:
            env[READY_FD], fds = str(ready_fd), [ready_fd]
        if self._ack_pipe is not None:
            env[ACK_FD] = str(self._ack_pipe[1])
            fds.append(self._ack_pipe[1])
        return spawn(
            "service.processes.log_writer", self.settings, env, stdin=subprocess.PIPE, pass_fds=tuple(fds)
        )

    def _read_acks(self) -> None:
        assert self._ack_pipe is not None
        source = self._ack_pipe[0]
        while len(message := os.read(source, ACK.size)) == ACK.size:  # writes this small are whole
            seq, ok = ACK.unpack(message)
            settle = self._acks.pop(seq, None)
            if settle is not None:
                settle(ok)

    def write(self, batch: list[RequestRecord], final: bool, on_commit: OnCommit | None = None) -> None:
        seq = 0
        if on_commit is not None and self._ack_pipe is not None:
            self._seq += 1
            seq = self._seq
            self._acks[seq] = on_commit
        elif on_commit is not None:  # no acknowledgement channel: handed over is all it will learn
            on_commit(False)
        message = pickle.dumps(ship(batch, final, seq), protocol=pickle.HIGHEST_PROTOCOL)
        data = HEADER.pack(len(message)) + message
        attempts = 0
        while True:
            child = self.child
            if child is None:  # (again): it buffers what comes while it starts
                # what the writer that died had read and not acknowledged will never be
                for pending in [s for s in self._acks if s != seq]:
                    self._acks.pop(pending)(False)
                child = self.child = self._spawn()
            assert child.stdin is not None
            try:
                child.stdin.write(data)  # waits while the pipe is full: the queue backs up meanwhile
                child.stdin.flush()
                return
            except OSError as exc:  # BrokenPipeError: the writer is gone
                attempts += 1
                log.error("log.writer_lost", pid=child.pid, returncode=child.poll(), error=str(exc))
                self._end(child, timeout=1.0)
                self.child = None
                if final and attempts >= SHUTDOWN_ATTEMPTS:
                    if self.metrics is not None:
                        self.metrics.log_lost.inc(len(batch))
                    log.error("log.records_lost", records=len(batch), reason="no log writer would start")
                    return
                time.sleep(self.retry_seconds)

    def drain(self) -> None:
        """The worker is stopping: the writer stops retrying what the store refuses."""
        child = self.child
        if child is not None and child.poll() is None:
            with contextlib.suppress(OSError):
                child.send_signal(signal.SIGUSR1)

    def close(self, timeout: float = 30.0) -> None:
        """End the writer's input; it commits what it has and exits."""
        if self.child is not None:
            self._end(self.child, timeout)
            self.child = None

    @staticmethod
    def _end(child: subprocess.Popen[bytes], timeout: float) -> None:
        assert child.stdin is not None
        with contextlib.suppress(OSError):  # already gone: what its pipe held is lost either way
            child.stdin.close()
        wait_or_kill(child, timeout)


class Checkers:
    """Each version's plausibility rules, read from the registry the first time a record needs them."""

    def __init__(self, registry_root: str) -> None:
        from registry.store import Registry

        self.registry = Registry(registry_root)
        self._known: dict[tuple[str, int], Checker | None] = {}

    def get(self, model: str, version: int) -> Checker | None:
        key = (model, version)
        if key not in self._known:
            from monitoring.plausibility import PlausibilityChecker

            try:
                manifest = self.registry.manifest(model, version)
                self._known[key] = PlausibilityChecker(
                    manifest.inputs, manifest.plausibility, manifest.output.classes
                )
            except Exception as exc:  # logged unchecked rather than not logged
                log.error("log.rules_unavailable", model=model, version=version, error=str(exc))
                self._known[key] = None
        return self._known[key]


def main() -> int:
    # a stop or Ctrl-C signals the whole group: keep writing until the worker ends our input
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from prometheus_client import CollectorRegistry

    from monitoring.logs import configure_logging
    from monitoring.metrics import GatewayMetrics
    from monitoring.redaction import Redactor
    from monitoring.sink import LogWriter
    from monitoring.store import open_store

    settings = Settings.from_env()
    configure_logging()
    store = open_store(settings.store_location, pool_size=1, own_partition=settings.log_partitions)
    parent = int(os.environ.get("MODELGATE_PARENT", os.getppid()))
    writer = LogWriter(
        store.requests,
        payload_rows=settings.log_payload_rows,
        metrics=GatewayMetrics(CollectorRegistry()),
        orphaned=lambda: os.getppid() != parent,
        redactor=Redactor(settings.log_hash_key),
    )
    signal.signal(signal.SIGUSR1, lambda *_: writer.drain())
    checkers = Checkers(str(settings.registry))
    tune_garbage_collector()
    ack_fd = os.environ.pop(ACK_FD, None)
    ready_fd = os.environ.pop(READY_FD, None)
    if ready_fd is not None:
        os.write(int(ready_fd), b"1")
        os.close(int(ready_fd))
    source = sys.stdin.buffer
    while len(header := source.read(HEADER.size)) == HEADER.size:
        (size,) = HEADER.unpack(header)
        message = source.read(size)
        if len(message) < size:
            log.error("log.truncated_message", expected=size, received=len(message))
            break
        shipment: Shipment = pickle.loads(message)
        lost_before, committed = writer.lost, False
        try:
            writer.write(unship(shipment, checkers), shipment.final)
            committed = writer.lost == lost_before
        except Exception:  # a record this writer cannot handle must not stop the log
            log.exception("log.batch_failed", records=len(shipment.checked))
        if shipment.seq and ack_fd is not None:
            os.write(int(ack_fd), ACK.pack(shipment.seq, committed))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
