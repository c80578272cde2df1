"""Alert notifications: Alertmanager webhook payloads (version 4), an outbox, delivery with backoff.

Every change of an alert (it starts firing, it resolves) is queued in the
outbox of the log store, once per receiver, keyed by fingerprint, status and
start: queued twice, it is delivered once. Delivery is retried with
exponential backoff while a receiver is down, across restarts (the outbox is
in the store), until it succeeds or ``give_up_after_seconds`` pass. An
Alertmanager is pushed every firing alert again each minute (it expects to
hear from a source while an alert fires) and each resolution once.

A delivery is marked done once its receiver answers. A monitor that dies
between the answer and that mark leaves the delivery to the next monitor,
which sends it again: each POST carries an ``Idempotency-Key`` header, the
same on every attempt of one delivery whichever monitor makes it, so a
receiver that keeps recent keys sees each notification once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import httpx
import orjson
import structlog

from monitoring.alerts import Alert, AlertConfig, AlertEngine, conditions, fingerprint
from monitoring.report import Report
from monitoring.shards import Shard
from monitoring.store import AlertStore, Outbox

if TYPE_CHECKING:
    from monitoring.metrics import GatewayMetrics
    from monitoring.triggers import Triggers

log = structlog.get_logger("modelgate.alerts")

#: an Alertmanager is re-sent each firing alert this often
REPEAT_SECONDS = 60
#: deliveries tried in one monitor pass, so a dead receiver cannot stall monitoring
DELIVERIES_A_PASS = 20
RECENT_SECONDS = 86_400


def webhook_payload(alert: Alert, receiver: str = "modelgate", external_url: str = "") -> dict[str, Any]:
    """The Alertmanager webhook body (version 4) for one alert, grouped by all its labels."""
    body = alert.as_json(f"{external_url}/monitoring/alerts" if external_url else "")
    group = ", ".join(f'{k}="{v}"' for k, v in sorted(alert.labels.items()))
    return {
        "version": "4",
        "groupKey": f"{{}}:{{{group}}}",
        "truncatedAlerts": 0,
        "status": body["status"],
        "receiver": receiver,
        "groupLabels": alert.labels,
        "commonLabels": alert.labels,
        "commonAnnotations": alert.annotations,
        "externalURL": external_url,
        "alerts": [body],
    }


class Alerting:
    """The alert stage of the leading monitor: evaluate, remember, queue, deliver."""

    def __init__(
        self,
        alerts: AlertStore,
        outbox: Outbox,
        config: AlertConfig,
        external_url: str = "",
        *,
        metrics: GatewayMetrics | None = None,
        triggers: Triggers | None = None,
        shard: Shard | None = None,
    ) -> None:
        self.alerts = alerts
        #: whose alerts these are: every model's, unless monitors share them (``monitoring.shards``)
        self.shard = shard or Shard()
        self.outbox = outbox
        self.config = config
        self.external_url = external_url
        self.engine = AlertEngine(config.rules)
        self._loaded = False
        self.client = httpx.Client(timeout=config.timeout_seconds)
        #: to export alert states (see monitoring.metrics)
        self.metrics = metrics
        #: to start the actions rules name when their alerts fire (see monitoring.triggers)
        self.triggers = triggers

    def step(self, reports: dict[str, Report], now: float) -> list[Alert]:
        """One pass over this pass's reports; returns the alerts that fired or resolved."""
        if not self._loaded:  # resume: an alert firing before a restart is not announced again
            self.engine.active = {
                a.fingerprint: a
                for a in self.alerts.since(now)
                if a.resolved_at is None and self.shard.owns(a.labels["model"])
            }
            self._loaded = True
        held = [c for report in reports.values() for c in conditions(self.config.rules, report)]
        changed = self.engine.evaluate(held, set(reports), now)
        self.alerts.save([*self.engine.active.values(), *(a for a in changed if a.resolved_at is not None)])
        for alert in changed:
            log.warning(f"alert.{alert.status}", fingerprint=alert.fingerprint, **alert.labels)
        if self.metrics is not None:
            self.metrics.observe_alerts(list(self.engine.active.values()), changed)
        if self.triggers is not None:
            self._trigger(changed, reports, now)
        self.outbox.enqueue(self._notifications(changed, now), now)
        if self.shard.delivers:
            self.deliver(now)
        return changed

    def _trigger(self, changed: Sequence[Alert], reports: dict[str, Report], now: float) -> None:
        """Start the action of each rule whose alert began firing on this pass (on the version its
        model's report is about); a failing action is logged, not allowed to stop alerting."""
        assert self.triggers is not None
        self.triggers.poll()
        actions = {rule.name: rule.action for rule in self.config.rules if rule.action is not None}
        for alert in changed:
            action = actions.get(alert.labels["alertname"])
            report = reports.get(alert.labels["model"])
            if action is None or alert.status != "firing" or report is None:
                continue
            try:
                self.triggers.fire(alert, action, report["version"], now)
            except Exception as exc:
                log.error(
                    "retrain.trigger_failed", fingerprint=alert.fingerprint, error=str(exc), **alert.labels
                )

    def announce(self, name: str, model: str, summary: str, description: str, now: float) -> None:
        """An automatic action (a canary step, a promotion) to the webhooks, as a firing ``info``
        alert (receivers that take Alertmanager webhooks take it too); nothing resolves it."""
        labels = {"alertname": name, "model": model, "severity": "info"}
        annotations = {"summary": summary, "description": description}
        event = Alert(fingerprint(labels), labels, annotations, now, 1.0, firing_since=now)
        payload = webhook_payload(event, external_url=self.external_url)
        key = f"{event.fingerprint}:event:{now}"
        self.outbox.enqueue(
            [(key, f"webhook {url}", orjson.dumps(payload)) for url in self.config.webhooks], now
        )
        log.warning("automatic_action", **labels, description=description)

    def _notifications(self, changed: Sequence[Alert], now: float) -> list[tuple[str, str, bytes]]:
        entries: list[tuple[str, str, bytes]] = []
        for alert in changed:
            key = f"{alert.fingerprint}:{alert.status}:{alert.firing_since}"
            payload = orjson.dumps(webhook_payload(alert, external_url=self.external_url))
            entries.extend((key, f"webhook {url}", payload) for url in self.config.webhooks)
        if self.config.alertmanager_url:
            target = f"alertmanager {self.config.alertmanager_url.rstrip('/')}/api/v2/alerts"
            bucket = int(now // REPEAT_SECONDS)
            firing = [a for a in self.engine.active.values() if a.firing_since is not None]
            for alert in firing:
                entries.append(
                    (f"{alert.fingerprint}:firing:{bucket}", target, orjson.dumps([alert.as_json()]))
                )
            for alert in changed:
                if alert.resolved_at is not None:
                    key = f"{alert.fingerprint}:resolved:{alert.firing_since}"
                    entries.append((key, target, orjson.dumps([alert.as_json()])))
        return entries

    def deliver(self, now: float) -> int:
        """Send what is due; a receiver that fails is not tried again in this pass. How many were sent."""
        sent, failing = 0, set()
        for delivery in self.outbox.due(now, DELIVERIES_A_PASS):
            if delivery.target in failing:
                continue
            _, url = delivery.target.split(" ", 1)
            try:
                response = self.client.post(
                    url,
                    content=delivery.payload,
                    headers={
                        "content-type": "application/json",
                        "idempotency-key": f"modelgate-{delivery.id}",
                    },
                )
                response.raise_for_status()
            except httpx.HTTPError as exc:
                failing.add(delivery.target)
                backoff = min(2.0 ** (delivery.attempts + 1), self.config.max_backoff_seconds)
                give_up = now - delivery.created_at >= self.config.give_up_after_seconds
                error = str(exc) or type(exc).__name__
                self.outbox.retry(delivery.id, now + backoff, error, give_up, now)
                log.error(
                    "alert.delivery_failed", target=delivery.target, attempts=delivery.attempts + 1,
                    retry_in_s=backoff, gave_up=give_up, error=error,
                )  # fmt: skip
                continue
            self.outbox.delivered(delivery.id, time.time())
            sent += 1
        return sent
