"""Every Prometheus metric of the gateway, declared together, built once per process at start-up.

BentoML runs prometheus-client in multiprocess mode and sets
``PROMETHEUS_MULTIPROC_DIR`` in each worker only after importing the service
module: metrics must be built in the app's start-up, never at import, or they
stay single-process and never reach ``/metrics``. Gauges say how workers
combine: queue depth sums over live workers; the monitor's gauges are set by
the one leading monitor, so the most recent live value is the value.

Label values are bounded: ``model`` and ``version`` are what the gateway
serves (``unknown`` for a request naming none of them), ``feature`` and
``rule`` come from the model's schema and the fixed rule names, ``class``
from the model's classes, ``status`` from the HTTP codes the gateway answers.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from monitoring.plausibility import rule_parts
from monitoring.records import EncodedRecord

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: At most this many classes get their own label value; the rest count as "other".
MAX_CLASS_LABELS = 50


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._children: dict[tuple[str, str, str, str, int], tuple[Any, Any, Any]] = {}
        self._class_children: dict[tuple[str, str, str, str], Any] = {}

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(f"modelgate_{name}", doc, labels, registry=registry)

        def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str) -> Gauge:
            return Gauge(
                f"modelgate_{name}",
                doc,
                labels,
                registry=registry,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )

        request = ("model", "version", "arm", "route")
        self.requests = counter(
            "requests_total", "Prediction requests by answer status.", (*request, "status")
        )
        self.latency = Histogram(
            "modelgate_request_latency_seconds",
            "Time from request to answer, inside the gateway.",
            request,
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rows = counter("rows_predicted_total", "Rows predicted.", ("model", "version", "arm"))
        self.classes = counter(
            "predictions_total",
            "Predicted rows by class (classifiers).",
            ("model", "version", "arm", "class"),
        )
        self.violations = counter(
            "plausibility_violations_total",
            "Rows breaking a plausibility rule; feature is empty for output rules.",
            ("model", "version", "arm", "rule", "feature"),
        )
        self.log_queue_depth = gauge("log_queue_depth", "Records waiting for the log writer.", (), "livesum")
        self.log_written = counter(
            "log_records_written_total", "Records committed to the prediction log.", ()
        )
        self.log_dropped = counter(
            "log_records_dropped_total", "Records discarded: queue full, drop policy.", ()
        )
        self.log_blocked = counter("log_blocked_total", "Requests that waited for room in a full queue.", ())
        self.log_write_errors = counter("log_write_errors_total", "Failed (retried) writes to the log.", ())

        monitor = ("model", "version")
        drift = (*monitor, "feature", "kind", "test")
        self.drift_statistic = gauge(
            "drift_statistic", "KS or chi-square statistic, last window.", drift, "livemostrecent"
        )
        self.drift_p_value = gauge(
            "drift_p_value", "Benjamini-Hochberg adjusted p-value, last window.", drift, "livemostrecent"
        )
        self.drift_psi = gauge(
            "drift_psi", "Population stability index, last window.", drift, "livemostrecent"
        )
        self.drift_js = gauge(
            "drift_js_distance", "Jensen-Shannon distance, last window.", drift, "livemostrecent"
        )
        self.drifted = gauge(
            "drift_features_drifted", "Features and outputs called drifted.", monitor, "livemostrecent"
        )
        self.window_rows = gauge(
            "monitor_window_rows", "Rows in the monitor's window.", monitor, "livemostrecent"
        )
        self.violation_rate = gauge(
            "plausibility_violation_rate",
            "Share of the window's rows breaking a rule.",
            (*monitor, "rule", "feature"),
            "livemostrecent",
        )
        self.quality = gauge(
            "quality",
            "Live quality from feedback (accuracy, log_loss, roc_auc, mae, rmse).",
            (*monitor, "metric"),
            "livemostrecent",
        )
        self.alerts_firing = gauge(
            "alert_firing",
            "1 while an alert fires, 0 once resolved.",
            ("alertname", "model", "severity"),
            "livemostrecent",
        )
        self.quality_samples = gauge(
            "quality_samples", "Rows with ground truth in the quality window.", monitor, "livemostrecent"
        )

    def observe_alerts(self, active: list[Any], changed: list[Any]) -> None:
        """1 for each firing alert, 0 once it resolves (pending alerts are not yet alerts)."""
        for alert in [*active, *changed]:
            labels = alert.labels
            state = 1.0 if alert.firing_since is not None and alert.resolved_at is None else 0.0
            if alert.firing_since is not None:
                self.alerts_firing.labels(labels["alertname"], labels["model"], labels["severity"]).set(state)

    def observe_record(self, item: EncodedRecord) -> None:
        """One request, as the log writer commits it (a batch at a time, off the request path)."""
        r = item.record
        model, version = (r.model, str(r.version)) if r.model and r.version is not None else ("unknown", "")
        arm, route, status, prediction = r.arm, r.route, r.status, r.prediction
        # labelled children are looked up once per label set: .labels() costs more than .inc()
        request_key = (model, version, arm, route, status)
        children = self._children.get(request_key)
        if children is None:
            children = self._children[request_key] = (
                self.requests.labels(model, version, arm, route, str(status)),
                self.latency.labels(model, version, arm, route),
                self.rows.labels(model, version, arm),
            )
        requests, latency_seconds, rows = children
        requests.inc()
        latency_seconds.observe(r.latency_ms / 1000)
        if prediction is None:
            return
        rows.inc(prediction.rows)
        if prediction.labels is not None:
            if prediction.rows <= 64:
                counted = collections.Counter(str(label) for label in prediction.labels.tolist())
            else:
                values, counts = np.unique(prediction.labels.astype(str), return_counts=True)
                counted = collections.Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))
            known = r.classes[:MAX_CLASS_LABELS]
            for value, count in counted.items():
                class_key = (model, version, arm, value if value in known else "other")
                child = self._class_children.get(class_key)
                if child is None:
                    child = self._class_children[class_key] = self.classes.labels(*class_key)
                child.inc(count)
        for key, count in item.violations.items():
            rule, feature = rule_parts(key)
            self.violations.labels(model, version, arm, rule, feature).inc(count)

    def observe_report(self, report: dict[str, Any]) -> None:
        """Set the monitor's gauges from one model's report (see ``monitoring.monitor.report``)."""
        model, version = report["model"], str(report["version"])
        self.window_rows.labels(model, version).set(report["window"]["rows"])
        self.drifted.labels(model, version).set(report["drifted_features"])
        for feature in report["features"]:
            labels = (model, version, feature["name"], feature["kind"], feature["test"])
            self.drift_statistic.labels(*labels).set(feature["statistic"])
            self.drift_p_value.labels(*labels).set(feature["p_adjusted"])
            self.drift_psi.labels(*labels).set(feature["psi"])
            self.drift_js.labels(*labels).set(feature["js_distance"])
        for entry in report["plausibility"]:
            self.violation_rate.labels(model, version, entry["rule"], entry["feature"] or "").set(
                entry["rate"]
            )
        for measured in report.get("quality", []):
            quality_version = str(measured["version"])
            self.quality_samples.labels(model, quality_version).set(measured["samples"])
            for metric in ("accuracy", "log_loss", "roc_auc", "mae", "rmse"):
                if measured.get(metric) is not None:
                    self.quality.labels(model, quality_version, metric).set(measured[metric])
