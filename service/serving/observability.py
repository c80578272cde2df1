"""Everything the gateway does besides answering: the prediction log, its writer, the monitor, alerts.

One object, so that ``MODELGATE_MONITORING=false`` leaves all of it out (no
log file, no threads, no per-request record, no plausibility check) and the
routes that need it say so instead of failing. The log writing runs in a
process beside each worker (``service.processes.log_writer``), the monitor and alerts
in one process per deployment (``service.processes.monitor``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from monitoring.alerts import AlertConfig
from monitoring.sink import EventSink
from monitoring.store import open_store
from service.processes.log_writer import LogShipper
from service.processes.monitor import MonitorSupervisor
from service.serving.feedback import FeedbackDesk
from service.serving.pool import ModelPool
from service.serving.shadow import ShadowRunner
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics


class Observability:
    def __init__(self, settings: Settings, pool: ModelPool) -> None:
        self.store = open_store(settings.store_location)
        self.shipper = LogShipper(settings)
        self.sink = EventSink(
            self.shipper,
            capacity=settings.log_queue_size,
            overflow="drop" if settings.log_overflow == "drop" else "block",
            block_seconds=settings.log_block_seconds,
        )
        self.shadow = ShadowRunner(
            self.sink,
            settings.shadow_queue_size,
            settings.shadow_budget,
            settings.shadow_timeout,
            background=pool.single_threaded,
            max_rate=settings.shadow_max_rate,
        )
        # the monitor process reads the rules; a broken file fails the gateway's start, here, instead
        AlertConfig.load(settings.alert_rules or None)
        self.monitor = MonitorSupervisor(
            settings,
            [self.store.lease, *(self.store.shard_lease(n) for n in range(1, settings.monitor_shards))],
        )
        self.feedback = FeedbackDesk(
            self.store.requests, self.store.feedback, pool, max_items=settings.max_feedback_items
        )

    def start(self, metrics: GatewayMetrics) -> None:
        self.shipper.start()
        self.shipper.metrics = metrics
        self.sink.metrics = metrics
        self.shadow.metrics = metrics
        self.sink.start()
        self.shadow.start()
        self.monitor.start()

    def stop(self) -> None:
        """Stop shadowing and the monitor, then drain the queue: on SIGTERM everything answered
        reaches the log."""
        self.shadow.stop()
        self.monitor.stop()
        self.sink.close()
        self.store.close()
