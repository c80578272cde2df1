"""The monitor's own process: drift, plausibility rates, live quality and alerts, off the serving path.

Every gateway worker runs a ``MonitorSupervisor`` thread. While no process
holds the log's monitor lease, a supervisor starts ``python -m
service.processes.monitor``; the child takes the lease (or, beaten to it by
another worker's child, exits with ``STANDBY``) and then tails the log every
``monitor_interval`` seconds until told to stop. So there is one monitor per
deployment (per log), whatever the worker count, and another takes over
within an interval or two when its worker exits. The lease is the child's
own: a child orphaned by a killed worker keeps it until it notices (within
an interval) and exits, so two monitors never overlap.

With ``monitor_shards`` > 1 the same holds per shard of the models
(``monitoring.shards``): each shard has its lease and its one monitor. A
supervisor takes a free shard at once when it runs no monitor, and waits
an interval more for each one it runs, so that the shards spread over the
workers (and replicas) that have none before any worker runs two.

Why a process and not a thread: decoding the log and testing a window hold
the GIL for milliseconds at a time, which a worker's event loop felt as a
quarter of its throughput; as a process it takes a core's spare time instead.
Its Prometheus gauges go to the same multiprocess directory as the workers'.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from monitoring.store import MonitorLease, Store
from service.processes.children import spawn, wait_or_kill
from service.processes.runtime import tune_garbage_collector
from service.settings import Settings

if TYPE_CHECKING:
    from monitoring.controller import RoutingController
    from monitoring.metrics import GatewayMetrics
    from monitoring.monitor import Monitor
    from monitoring.notify import Alerting
    from monitoring.shards import Shard

#: the child's exit code when another process already holds the lease
STANDBY = 3
#: which shard of the models a monitor child is to look after (``monitoring.shards``)
SHARD_ENV = "MODELGATE_MONITOR_SHARD"
#: added to the monitor's niceness: a pass tests every feature over the whole window, a
#: burst of CPU that, on a small machine, would otherwise be taken from the workers
MONITOR_NICENESS = 10

log = structlog.get_logger("modelgate.monitor")


class MonitorSupervisor:
    """Keeps one monitor process alive per log (per shard of its models), from inside a gateway
    worker."""

    def __init__(self, settings: Settings, leases: Sequence[MonitorLease]) -> None:
        self.settings = settings
        #: one a shard, to see whether some process holds it
        self.leases = leases
        self.interval = settings.monitor_interval
        #: the monitors this supervisor started, by shard
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        #: when each shard was first seen without a monitor
        self._free_since: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.terminate()  # the child finishes its pass and exits
        for child in running:
            wait_or_kill(child, timeout)

    def _run(self) -> None:
        shards = len(self.leases)
        first = os.getpid() % shards  # workers look at the shards in different orders
        while not self._stop.is_set():
            for shard in [(first + i) % shards for i in range(shards)]:
                self._tend(shard)
            self._stop.wait(self.interval)

    def _tend(self, shard: int) -> None:
        child = self.children.get(shard)
        if child is not None and child.poll() is not None:
            if child.returncode not in (0, STANDBY, -signal.SIGTERM):
                log.error("monitor.exited", pid=child.pid, returncode=child.returncode, shard=shard)
            _forget_gauges(child.pid)
            del self.children[shard]
            child = None
        if child is not None or self._lease_held(shard):
            self._free_since.pop(shard, None)
            return
        now = time.monotonic()
        free_since = self._free_since.setdefault(shard, now)
        if now - free_since >= len(self.children) * self.interval:
            env = {SHARD_ENV: str(shard)} if len(self.leases) > 1 else {}
            self.children[shard] = spawn("service.processes.monitor", self.settings, env)
            self._free_since.pop(shard, None)

    def _lease_held(self, shard: int) -> bool:
        """Whether a monitor leads the shard; when the store cannot say (PostgreSQL unreachable),
        start none: it could not read the log either."""
        try:
            return self.leases[shard].held()
        except Exception as exc:
            log.error("monitor.lease_unknown", error=str(exc), shard=shard)
            return True


def _forget_gauges(pid: int) -> None:
    """Drop a finished monitor's live gauges from the multiprocess metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def main() -> int:
    from monitoring.shards import Shard
    from monitoring.store import open_store

    settings = Settings.from_env()
    shard = Shard(int(os.environ.get(SHARD_ENV, "0")), settings.monitor_shards)
    store = open_store(settings.store_location, pool_size=2)
    lease = store.lease if shard.index == 0 else store.shard_lease(shard.index)
    if not lease.acquire():
        store.close()
        return STANDBY
    # background work: when the cores are busy, the workers answering requests go first
    os.nice(MONITOR_NICENESS)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    leading = _wired(settings, store, shard)
    parent = int(os.environ.get("MODELGATE_PARENT", os.getppid()))
    log.info("monitor.leading", pid=os.getpid(), log=store.location, shard=shard.index, shards=shard.count)
    leading.metrics.monitor_leading.labels(socket.gethostname()).set(1)
    tune_garbage_collector()
    while not stop.is_set() and os.getppid() == parent:
        if not lease.acquire():  # its connection lost (PostgreSQL): another may lead now
            log.error("monitor.lease_lost", pid=os.getpid(), shard=shard.index)
            break
        try:
            leading.step(time.time())
        except Exception as exc:  # a bad record or a locked database must not stop monitoring
            log.error("monitor.step_failed", error=str(exc))
        stop.wait(settings.monitor_interval)
    lease.release()
    store.close()
    log.info("monitor.stopped", pid=os.getpid(), shard=shard.index)
    return 0


@dataclass(frozen=True)
class Leading:
    """The leading monitor's pass: the monitor tails the log and reports; the routing controller acts
    on the reports (and adds the canary's state) before they are saved; then the metrics and the
    alerts (with the retraining triggers) read them."""

    monitor: Monitor
    controller: RoutingController
    metrics: GatewayMetrics
    alerting: Alerting

    def step(self, now: float) -> None:
        self.monitor.tail(now)
        reports = self.monitor.reports(now)
        self.controller.step(reports, now)
        self.monitor.save(reports, now)
        for body in reports.values():
            self.metrics.observe_report(body)
        self.alerting.step(reports, now)


def _wired(settings: Settings, store: Store, shard: Shard) -> Leading:
    """The monitor over the store, with its metrics, alerting, retraining triggers and routing
    controller (imported here, in the process that leads: the standby never needs them)."""
    import functools

    from prometheus_client import CollectorRegistry

    from monitoring.alerts import AlertConfig
    from monitoring.controller import RoutingController
    from monitoring.logs import configure_logging
    from monitoring.metrics import GatewayMetrics
    from monitoring.monitor import Monitor
    from monitoring.notify import Alerting
    from monitoring.triggers import Triggers
    from monitoring.windows import WindowSettings, alert_alpha
    from registry.store import Registry

    configure_logging()
    registry = Registry(settings.registry)
    days = settings.drift_false_alert_days
    window = WindowSettings(
        max_rows=settings.window_rows,
        max_age_seconds=settings.window_seconds,
        min_rows=settings.drift_min_rows,
        alpha=settings.drift_alpha,
        alert_alpha=alert_alpha(settings.drift_alpha, settings.monitor_interval, days),
        min_effect=settings.drift_min_effect,
        compare_alpha=settings.compare_alpha,
        quality_segments=settings.segment_features,
    )
    manifests = functools.lru_cache(maxsize=64)(registry.manifest)
    monitor = Monitor(
        store.requests, store.feedback, store.reports, manifests, window, shard, registry.models,
        lambda model: registry.aliases(model).log_policy,
    )  # fmt: skip
    metrics = GatewayMetrics(CollectorRegistry())
    triggers = Triggers(registry, store.outbox, monitor.export_window, metrics=metrics)
    rules = AlertConfig.load(settings.alert_rules or None)
    alerting = Alerting(
        store.alerts,
        store.outbox,
        rules,
        settings.external_url,
        metrics=metrics,
        triggers=triggers,
        shard=shard,
    )
    return Leading(monitor, RoutingController(registry, monitor, alerting), metrics, alerting)


if __name__ == "__main__":
    sys.exit(main())
