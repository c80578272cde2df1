"""Everything the gateway does besides answering: the prediction log, its writer, the monitor, alerts.

One object, so that ``MODELGATE_MONITORING=false`` leaves all of it out (no
log file, no threads, no per-request record, no plausibility check) and the
routes that need it say so instead of failing. The monitor and alerts run in
a process of their own (``service.monitor_process``); a worker only keeps one
alive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitoring.alerts import AlertConfig
from monitoring.prediction_log import SQLitePredictionLog
from monitoring.sink import EventSink
from service.feedback import FeedbackDesk
from service.monitor_process import MonitorSupervisor
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
        # the monitor process reads the rules; a broken file fails the gateway's start, here, instead
        AlertConfig.load(settings.alert_rules or None)
        self.monitor = MonitorSupervisor(settings, self.log)
        self.feedback = FeedbackDesk(self.log, pool, max_items=settings.max_feedback_items)

    def start(self, metrics: GatewayMetrics) -> None:
        self.sink.metrics = metrics
        self.sink.start()
        self.monitor.start()

    def stop(self) -> None:
        """Stop the monitor, then drain the queue: on SIGTERM everything answered reaches the log."""
        self.monitor.stop()
        self.sink.close()
        self.log.close()
