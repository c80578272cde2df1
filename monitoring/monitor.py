"""The monitor: rolling windows over the prediction log, and a drift and plausibility report per model.

One monitor per deployment: every gateway process runs a ``MonitorThread``,
and only the one holding the log's monitor lease works; the others retry, so
one takes over when the holder stops. It tails the log by ``seq``, so windows
cover every worker's traffic, and after a restart it rebuilds them from the
log (from the first record inside the time window). Reports go back into the
log store, where every process reads them for ``GET /monitoring/drift``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson
import structlog

from monitoring.drift import ALPHA, PSI_THRESHOLD, DriftStatistic, decide, drift_of
from monitoring.plausibility import rule_parts
from monitoring.prediction_log import PredictionLog
from monitoring.records import LoggedRequest
from registry.manifest import Manifest

log = structlog.get_logger("modelgate.monitor")


@dataclass(frozen=True)
class WindowSettings:
    """How much traffic a window holds and when drift is tested."""

    max_rows: int = 1000
    max_age_seconds: float = 3600.0
    #: fewer rows than this: no drift test (too little data to say anything)
    min_rows: int = 100
    alpha: float = ALPHA
    psi_threshold: float = PSI_THRESHOLD


class Window:
    """Recent answered requests of one model version, at most ``max_rows`` rows and ``max_age`` old."""

    def __init__(self, settings: WindowSettings) -> None:
        self.settings = settings
        self.requests: deque[LoggedRequest] = deque()
        self.rows = 0

    def add(self, request: LoggedRequest) -> None:
        self.requests.append(request)
        self.rows += request.rows

    def trim(self, now: float) -> None:
        oldest = now - self.settings.max_age_seconds
        while self.requests and (self.rows > self.settings.max_rows or self.requests[0].ts < oldest):
            self.rows -= self.requests.popleft().rows

    @property
    def last_seen(self) -> float:
        return self.requests[-1].ts if self.requests else 0.0

    def column(self, name: str, numeric: bool) -> np.ndarray:
        """One input feature over the window, in one concatenation."""
        dtype = np.float64 if numeric else object
        parts = [np.asarray(r.inputs[name], dtype=dtype) for r in self.requests if r.inputs]
        return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

    def outputs(self, key: str) -> np.ndarray:
        parts = [np.asarray(r.outputs[key]) for r in self.requests if r.outputs and key in r.outputs]
        return np.concatenate(parts) if parts else np.empty(0)

    def flag_totals(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for request in self.requests:
            for key, count in request.flags.items():
                totals[key] = totals.get(key, 0) + count
        return totals


def drift_statistics(manifest: Manifest, window: Window, settings: WindowSettings) -> list[DriftStatistic]:
    """Every input feature and prediction output of the window against the version's reference."""
    statistics: list[DriftStatistic | None] = []
    for spec in manifest.inputs.features:
        values = window.column(spec.name, numeric=spec.dtype != "string")
        statistics.append(drift_of(spec.name, "feature", manifest.reference.features[spec.name], values))
    predictions = manifest.reference.predictions
    if manifest.output.kind == "classification":
        labels = window.outputs("label").astype(str).astype(object)
        statistics.append(drift_of("label", "prediction", predictions["label"], labels))
        probabilities = window.outputs("probabilities")
        if probabilities.size:
            for column, cls in enumerate(manifest.output.classes):
                name = f"probability:{cls}"
                statistics.append(drift_of(name, "prediction", predictions[name], probabilities[:, column]))
    else:
        statistics.append(drift_of("value", "prediction", predictions["value"], window.outputs("value")))
    return decide([s for s in statistics if s is not None], settings.alpha, settings.psi_threshold)


def report(manifest: Manifest, window: Window, settings: WindowSettings, now: float) -> dict[str, Any]:
    """The JSON-ready report on one model version's window."""
    enough = window.rows >= settings.min_rows
    statistics = drift_statistics(manifest, window, settings) if enough else []
    plausibility = []
    for key, violations in sorted(window.flag_totals().items()):
        rule, feature = rule_parts(key)
        entry: dict[str, Any] = {
            "rule": rule,
            "feature": feature or None,
            "violations": violations,
            "rate": violations / max(window.rows, 1),
        }
        if rule == "input_missing":
            limit = manifest.plausibility.inputs[feature].max_missing_rate
            entry.update(limit=limit, breached=entry["rate"] > limit)
        plausibility.append(entry)
    return {
        "model": manifest.name,
        "version": manifest.version,
        "computed_at": now,
        "status": "ok" if enough else "insufficient_data",
        "window": {
            "rows": window.rows,
            "requests": len(window.requests),
            "max_rows": settings.max_rows,
            "max_age_seconds": settings.max_age_seconds,
            "oldest": window.requests[0].ts if window.requests else None,
            "newest": window.last_seen or None,
        },
        "thresholds": {
            "alpha": settings.alpha,
            "psi": settings.psi_threshold,
            "min_rows": settings.min_rows,
            "correction": "benjamini-hochberg",
        },
        "drifted_features": sum(s.drifted for s in statistics),
        "features": [asdict(s) for s in statistics],
        "plausibility": plausibility,
    }


class Monitor:
    """Windows per (model, version) fed from the log; a report per model on its latest version."""

    def __init__(
        self, store: PredictionLog, manifests: Callable[[str, int], Manifest], settings: WindowSettings
    ) -> None:
        self.store = store
        self.manifests = manifests
        self.settings = settings
        self.windows: dict[tuple[str, int], Window] = {}
        self.seq: int | None = None

    def ingest(self, records: list[LoggedRequest]) -> None:
        """Answered requests of the champion or a pinned version; refusals carry no inputs to test."""
        for record in records:
            if (
                record.status != 200
                or record.model is None
                or record.version is None
                or record.arm == "challenger"
            ):
                continue
            key = (record.model, record.version)
            window = self.windows.get(key)
            if window is None:
                window = self.windows[key] = Window(self.settings)
            window.add(record)

    def reports(self, now: float) -> dict[str, dict[str, Any]]:
        latest: dict[str, tuple[int, Window]] = {}
        for (model, version), window in self.windows.items():
            window.trim(now)
            if window.requests and (model not in latest or window.last_seen > latest[model][1].last_seen):
                latest[model] = (version, window)
        return {
            model: report(self.manifests(model, version), window, self.settings, now)
            for model, (version, window) in latest.items()
        }

    def step(self, now: float, batch: int = 5000) -> int:
        """Tail the log, refresh the windows, save a report per model; how many records were read."""
        if self.seq is None:
            self.seq = self.store.seq_before(now - self.settings.max_age_seconds)
        read = 0
        while True:
            records = self.store.read_after(self.seq, batch)
            if not records:
                break
            self.ingest(records)
            self.seq = records[-1].seq
            read += len(records)
            if len(records) < batch:
                break
        for model, body in self.reports(now).items():
            self.store.save_report(model, now, orjson.dumps(body))
        return read


class MonitorThread:
    """Runs ``monitor.step`` every ``interval`` seconds while this process holds the lease."""

    def __init__(self, monitor: Monitor, interval: float = 2.0) -> None:
        self.monitor = monitor
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)
        self.leader = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.leader and self.monitor.store.acquire_monitor_lease():
                self.leader = True
                log.info("monitor.leading")
            if self.leader:
                try:
                    self.monitor.step(time.time())
                except Exception as exc:  # a bad record or a locked database must not stop monitoring
                    log.error("monitor.step_failed", error=str(exc))
            self._stop.wait(self.interval)
