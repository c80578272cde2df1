"""Everything the gateway does besides answering: the prediction log, its writer, the monitor, alerts.

One object, so that ``MODELGATE_MONITORING=false`` leaves all of it out (no
log file, no threads, no per-request record, no plausibility check) and the
routes that need it say so instead of failing.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from monitoring.alerts import AlertConfig
from monitoring.monitor import Monitor, MonitorThread, WindowSettings
from monitoring.notify import Alerting
from monitoring.prediction_log import SQLitePredictionLog
from monitoring.sink import EventSink
from service.feedback import FeedbackDesk
from service.pool import ModelPool
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics


class Observability:
    def __init__(self, settings: Settings, pool: ModelPool) -> None:
        self.log = SQLitePredictionLog(settings.prediction_log)
        self.sink = EventSink(
            self.log,
            capacity=settings.log_queue_size,
            overflow="drop" if settings.log_overflow == "drop" else "block",
            payload_rows=settings.log_payload_rows,
        )
        self.monitor = MonitorThread(
            Monitor(
                self.log,
                functools.lru_cache(maxsize=64)(pool.registry.manifest),
                WindowSettings(
                    max_rows=settings.window_rows,
                    max_age_seconds=settings.window_seconds,
                    min_rows=settings.drift_min_rows,
                    alpha=settings.drift_alpha,
                    psi_threshold=settings.drift_psi,
                ),
            ),
            interval=settings.monitor_interval,
        )
        rules = AlertConfig.load(settings.alert_rules or None)
        self.alerting = Alerting(self.log, rules, settings.external_url)
        self.monitor.monitor.on_reports = self.alerting.step
        self.feedback = FeedbackDesk(self.log, pool, max_items=settings.max_feedback_items)

    def start(self, metrics: GatewayMetrics) -> None:
        self.sink.metrics = metrics
        self.monitor.monitor.on_report = metrics.observe_report
        self.alerting.metrics = metrics
        self.sink.start()
        self.monitor.start()

    def stop(self) -> None:
        """Stop the monitor, then drain the queue: on SIGTERM everything answered reaches the log."""
        self.monitor.stop()
        self.sink.close()
        self.log.close()
