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
from collections.abc import Sequence
from typing import Any

import numpy as np
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from monitoring.plausibility import Flag
from monitoring.records import EXPLAIN_ROUTE, EncodedRecord
from monitoring.report import QUALITY_METRICS, Comparison, Measured, Report, metric_value

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: the model and version labels of a request naming no model the gateway serves
_UNKNOWN = ("unknown", "")
#: At most this many classes get their own label value; the rest count as "other".
MAX_CLASS_LABELS = 50


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}

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
        self.batch_rows = Histogram(
            "modelgate_batch_rows",
            "Rows in each session run that merged concurrent requests (adaptive batching).",
            ("model",),
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
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
        self.explain_shed = counter(
            "explain_shed_total", "Explanations in the loop shed: a queue was full.", ("model",)
        )
        self.shadow_shed = counter(
            "shadow_shed_total", "Shadow predictions shed: the shadow or the log queue was full.", ("model",)
        )
        self.log_queue_depth = gauge("log_queue_depth", "Records waiting for the log writer.", (), "livesum")
        self.log_written = counter(
            "log_records_written_total", "Records committed to the prediction log.", ()
        )
        self.log_dropped = counter(
            "log_records_dropped_total", "Records discarded: queue full, drop policy.", ()
        )
        self.triggers = counter(
            "retrain_triggers_total",
            "Alert actions (retraining triggers) by outcome: triggered, rate_limited, already_running, "
            "failed_to_start, and for commands succeeded, failed or timed_out.",
            ("model", "alertname", "outcome"),
        )
        self.log_blocked = counter("log_blocked_total", "Requests that waited for room in a full queue.", ())
        self.log_write_errors = counter("log_write_errors_total", "Failed (retried) writes to the log.", ())
        self.monitor_leading = gauge(
            "monitor_leading",
            "Monitor processes holding a lease in the replica (host): 1 where one monitor leads the "
            "deployment, its share of the shards where monitors share the models.",
            ("host",),
            "livesum",
        )
        self.log_shed = counter(
            "log_shed_total", "Requests refused with 503: the log queue stayed full (block policy).", ()
        )
        self.log_lost = counter(
            "log_records_lost_total",
            "Records of answered requests the log could not take: refused by the store while the "
            "gateway stopped, or left in a writer that did not finish in time.",
            (),
        )

        monitor = ("model", "version")
        #: ``statistic``: ``distribution`` or ``missing`` (the missing rate), one series each whichever
        #: test decided in a pass (the report names that test)
        drift = (*monitor, "feature", "kind", "statistic")
        self.drift_effect = gauge(
            "drift_effect", "Size of the change the deciding test measured (0-1), last window.", drift,
            "livemostrecent",
        )  # fmt: skip
        self.drift_p_value = gauge(
            "drift_p_value", "Benjamini-Hochberg adjusted p-value, last window.", drift, "livemostrecent"
        )
        self.drift_psi = gauge(
            "drift_psi", "Population stability index, last window.", drift, "livemostrecent"
        )
        self.drift_js = gauge(
            "drift_js_distance", "Jensen-Shannon distance, last window.", drift, "livemostrecent"
        )
        self.alerting = gauge(
            "drift_features_alerting",
            "Features and outputs drifted at the level drift alerts use (false alerts at most once in "
            "MODELGATE_DRIFT_FALSE_ALERT_DAYS).",
            monitor,
            "livemostrecent",
        )
        self.drifted = gauge(
            "drift_features_drifted", "Features and outputs called drifted.", monitor, "livemostrecent"
        )
        self.window_rows = gauge(
            "monitor_window_rows", "Rows in the monitor's window.", monitor, "livemostrecent"
        )
        self.attribution_importance = gauge(
            "attribution_importance",
            "A feature's mean importance (|attribution|, explanations in the loop) in the window.",
            (*monitor, "feature"),
            "livemostrecent",
        )
        self.attribution_alerting = gauge(
            "attribution_features_alerting",
            "Features whose importance drifted at the level drift alerts use (attribution drift).",
            monitor,
            "livemostrecent",
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
        self.agreement = gauge(
            "compare_agreement",
            "Shadow mode: share of rows both arms labelled alike.",
            ("model",),
            "livemostrecent",
        )
        self.mean_abs_diff = gauge(
            "compare_mean_abs_diff",
            "Shadow mode: mean absolute difference of probabilities (or values) between the arms.",
            ("model",),
            "livemostrecent",
        )
        self.arm_quality = gauge(
            "compare_quality",
            "Each arm's quality on the labelled window (accuracy, or MAE for regressors).",
            ("model", "arm", "metric"),
            "livemostrecent",
        )
        self.compare_p_value = gauge(
            "compare_p_value",
            "p-value of the test that the arms' quality differs.",
            ("model", "metric"),
            "livemostrecent",
        )
        self.compare_e_value = gauge(
            "compare_e_value",
            "Evidence that an arm is better on live quality since the two versions met (the gate "
            "promotes at 2 / MODELGATE_COMPARE_ALPHA).",
            ("model", "arm"),
            "livemostrecent",
        )
        self.segment_quality = gauge(
            "segment_quality",
            "Live quality per segment of a chosen input feature (MODELGATE_QUALITY_SEGMENTS).",
            (*monitor, "feature", "segment", "metric"),
            "livemostrecent",
        )
        self.segment_samples = gauge(
            "segment_quality_samples",
            "Rows with ground truth in the quality window, per segment.",
            (*monitor, "feature", "segment"),
            "livemostrecent",
        )
        self.estimated_accuracy = gauge(
            "estimated_accuracy",
            "Label-free accuracy estimate over the drift window (CBPE): the estimate, and its 95% "
            "interval's low and high bounds.",
            (*monitor, "bound"),
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

    def observe_records(self, items: Sequence[EncodedRecord]) -> None:
        """A batch of requests, as the log writer commits them (off the request path).

        Counts are summed over the batch first and each labelled child moved
        once: in multiprocess mode every increment is a locked write to a
        memory-mapped file, and one a request per metric cost more than the
        rest of the writer's work on that request.
        """
        latencies: dict[tuple[str, str, str, str, int], list[float]] = {}
        rows: collections.Counter[tuple[str, str, str]] = collections.Counter()
        classes: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
        violations: collections.Counter[tuple[str, str, str, str, str]] = collections.Counter()
        for item in items:
            r = item.record
            if r.route == EXPLAIN_ROUTE:  # an explanation of a request counted already
                continue
            model, version = (r.model, str(r.version)) if r.model and r.version is not None else _UNKNOWN
            latencies.setdefault((model, version, r.arm, r.route, r.status), []).append(r.latency_ms)
            prediction = r.prediction
            if prediction is None:
                continue
            rows[model, version, r.arm] += prediction.rows
            if prediction.labels is not None:
                known = r.classes[:MAX_CLASS_LABELS]
                for label, count in _counted(prediction.labels).items():
                    classes[model, version, r.arm, label if label in known else "other"] += count
            for key, count in item.violations.items():
                violations[(model, version, r.arm, *Flag.parse(key))] += count
        for (model, version, arm, route, status), measured in latencies.items():
            self._child(self.requests, model, version, arm, route, str(status)).inc(len(measured))
            observe_many(self._child(self.latency, model, version, arm, route), np.array(measured) / 1000)
        for metric, counts in ((self.rows, rows), (self.classes, classes), (self.violations, violations)):
            for labels, count in counts.items():
                self._child(metric, *labels).inc(count)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, looked up once per label set (it costs more than ``inc()``)."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_report(self, report: Report) -> None:
        """Set the monitor's gauges from one model's report (see ``monitoring.assessment.report``)."""
        model, version = report["model"], str(report["version"])
        self.window_rows.labels(model, version).set(report["window"]["rows"])
        self.drifted.labels(model, version).set(report["drifted_features"])
        self.alerting.labels(model, version).set(report.get("alerting_features", report["drifted_features"]))
        for feature in report["features"]:
            statistic = "missing" if feature["test"] == "missing" else "distribution"
            labels = (model, version, feature["name"], feature["kind"], statistic)
            self.drift_effect.labels(*labels).set(feature["effect"])
            self.drift_p_value.labels(*labels).set(feature["p_adjusted"])
            self.drift_psi.labels(*labels).set(feature["psi"])
            self.drift_js.labels(*labels).set(feature["js_distance"])
        explained = report.get("attributions")
        if explained:
            for name, importance in explained["mean_importance"].items():
                self.attribution_importance.labels(model, version, name).set(importance)
            self.attribution_alerting.labels(model, version).set(explained["alerting_features"])
        estimated = report["estimated_quality"]
        if estimated and estimated["rows"]:
            for bound, value in (("estimate", estimated["accuracy"]), ("low", estimated["low"]),
                                 ("high", estimated["high"])):  # fmt: skip
                self.estimated_accuracy.labels(model, version, bound).set(value)
        for entry in report["plausibility"]:
            self.violation_rate.labels(model, version, entry["rule"], entry["feature"] or "").set(
                entry["rate"]
            )
        if report["comparison"]:
            self._observe_comparison(model, report["comparison"])
        for measured in report["quality"]:
            quality_version = str(measured["version"])
            self.quality_samples.labels(model, quality_version).set(measured["samples"])
            self._quality(self.quality, measured, model, quality_version)
            for part in measured["segments"]:
                where = (model, quality_version, part["feature"], part["segment"])
                self.segment_samples.labels(*where).set(part["samples"])
                self._quality(self.segment_quality, part, *where)

    def _observe_comparison(self, model: str, comparison: Comparison) -> None:
        """The champion-against-challenger gauges of one model's report."""
        shadow = comparison["shadow"]
        if shadow and shadow["agreement"] is not None:
            self.agreement.labels(model).set(shadow["agreement"])
        if shadow and shadow["mean_abs_diff"] is not None:
            self.mean_abs_diff.labels(model).set(shadow["mean_abs_diff"])
        evidence = comparison["evidence"]
        if evidence:
            for arm in ("champion", "challenger"):
                self.compare_e_value.labels(model, arm).set(evidence["e_value"][arm])
        tested = comparison["quality"]
        if tested and tested["p_value"] is not None:
            self.compare_p_value.labels(model, tested["metric"]).set(tested["p_value"])
            arms = {"champion": tested["champion"], "challenger": tested["challenger"]}
            for arm, measured_arm in arms.items():
                if measured_arm is not None:
                    self.arm_quality.labels(model, arm, tested["metric"]).set(measured_arm)

    @staticmethod
    def _quality(gauge: Gauge, measured: Measured, *labels: str) -> None:
        """Each quality metric measured, on ``gauge`` under ``labels`` and the metric's name."""
        for metric in QUALITY_METRICS:
            value = metric_value(measured, metric)
            if value is not None:
                gauge.labels(*labels, metric).set(value)


def _counted(labels: np.ndarray) -> collections.Counter[str]:
    """Predicted rows per class label (as text, the metric's label value)."""
    if labels.size <= 64:
        return collections.Counter(str(label) for label in labels.tolist())
    values, counts = np.unique(labels.astype(str), return_counts=True)
    return collections.Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))


def observe_many(histogram: Histogram, values: np.ndarray) -> None:
    """``histogram.observe(value)`` for every value, with one write a bucket.

    prometheus-client has no bulk observe; this does what ``observe`` does
    (add to the sum, count the value in the first bucket whose upper bound
    is at or above it) through the same value objects, a bucket at a time.
    tests/monitoring/test_metrics.py checks it against ``observe``.
    """
    first_bucket = np.searchsorted(histogram._upper_bounds, values, side="left")
    counts = np.bincount(first_bucket, minlength=len(histogram._buckets))
    histogram._sum.inc(float(values.sum()))
    for bucket, count in zip(histogram._buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
