"""Alert rules over the monitor's reports, and the state of each alert: pending, firing, resolved.

Rules live in one YAML file (``monitoring/alerts.yml`` is the default, with
every field explained); each has a kind, a threshold and a ``for`` duration:
a condition must hold that long before its alert fires, and an alert
resolves as soon as its condition clears. Each alert is identified by its
labels (``alertname``, ``model``, ``severity`` and, where it belongs,
``feature`` or ``rule``); its fingerprint is a hash of them, so the same
problem is one alert however often it is seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from monitoring.report import Measured, Report, metric_value

Kind = Literal["drift", "plausibility", "error_rate", "latency_p99", "quality", "canary"]
KINDS: tuple[Kind, ...] = ("drift", "plausibility", "error_rate", "latency_p99", "quality", "canary")
#: quality metrics where lower is better; for the others an alert fires below the threshold
LOWER_IS_BETTER = frozenset({"log_loss", "mae", "rmse"})
DEFAULT_RULES = Path(__file__).with_name("alerts.yml")


@dataclass(frozen=True)
class Action:
    """What an alert starts when it fires: retraining, typically (see ``monitoring.triggers``).

    ``webhook``: a URL posted the trigger's JSON (the model, the version, the alert and the window's
    export), through the outbox like any notification. ``command``: a program run with those as
    environment variables and the window as a Parquet file. At most one trigger a model and rule
    every ``min_interval_seconds``; a command running longer than ``timeout_seconds`` is stopped.
    """

    webhook: str | None = None
    command: tuple[str, ...] = ()
    min_interval_seconds: float = 3600.0
    timeout_seconds: float = 3600.0

    @property
    def target(self) -> str:
        return f"webhook {self.webhook}" if self.webhook else f"command {' '.join(self.command)}"


@dataclass(frozen=True)
class AlertRule:
    name: str
    kind: Kind
    threshold: float
    for_seconds: float = 300.0
    severity: str = "warning"
    #: quality: which metric (accuracy, roc_auc, log_loss, mae, rmse)
    metric: str | None = None
    #: error_rate and quality: no alert on fewer requests or labelled rows than this
    min_samples: int = 0
    summary: str = ""
    #: quality: judge each segment of this input feature apart (MODELGATE_QUALITY_SEGMENTS must
    #: name it), one alert per segment, instead of the version's overall quality
    segment: str | None = None
    action: Action | None = None


@dataclass(frozen=True)
class AlertConfig:
    rules: tuple[AlertRule, ...]
    #: Alertmanager-format (version 4) webhook receivers
    webhooks: tuple[str, ...] = ()
    #: an Alertmanager to push alerts to (its /api/v2/alerts), instead of or beside webhooks
    alertmanager_url: str | None = None
    timeout_seconds: float = 5.0
    #: deliveries are retried with exponential backoff up to this delay, for up to ``give_up_after``
    max_backoff_seconds: float = 300.0
    give_up_after_seconds: float = 86_400.0

    @classmethod
    def load(cls, path: str | Path | None = None) -> AlertConfig:
        """The YAML file at ``path`` (the shipped defaults when None), checked field by field."""
        source = Path(path) if path else DEFAULT_RULES
        try:
            data = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"alert rules {source}: {exc}") from None
        rules = []
        for index, raw in enumerate(data.get("rules", [])):
            where = f"{source}: rules[{index}]"
            if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
                raise ValueError(f"{where}: kind must be one of {', '.join(KINDS)}")
            unknown = set(raw) - {
                "name",
                "kind",
                "threshold",
                "for",
                "severity",
                "metric",
                "min_samples",
                "summary",
                "segment",
                "action",
            }
            if unknown:
                raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
            if "name" not in raw or ("threshold" not in raw and raw["kind"] != "canary"):
                raise ValueError(f"{where}: name and threshold are required")
            if raw["kind"] == "quality" and raw.get("metric") not in (
                "accuracy",
                "roc_auc",
                *LOWER_IS_BETTER,
            ):
                raise ValueError(
                    f"{where}: a quality rule needs metric: accuracy, roc_auc, log_loss, mae or rmse"
                )
            rules.append(
                AlertRule(
                    name=str(raw["name"]),
                    kind=raw["kind"],
                    threshold=float(raw.get("threshold", 0)),
                    for_seconds=_seconds(raw.get("for", "5m"), f"{where}: for"),
                    severity=str(raw.get("severity", "warning")),
                    metric=raw.get("metric"),
                    min_samples=int(raw.get("min_samples", 0)),
                    summary=str(raw.get("summary", "")),
                    segment=str(raw["segment"]) if raw.get("segment") else None,
                    action=_action(raw["action"], f"{where}: action") if raw.get("action") else None,
                )
            )
        delivery = data.get("delivery", {}) or {}
        return cls(
            rules=tuple(rules),
            webhooks=tuple(data.get("webhooks", []) or []),
            alertmanager_url=data.get("alertmanager_url"),
            timeout_seconds=float(delivery.get("timeout_seconds", 5.0)),
            max_backoff_seconds=float(delivery.get("max_backoff_seconds", 300.0)),
            give_up_after_seconds=float(delivery.get("give_up_after_seconds", 86_400.0)),
        )


def _action(raw: Any, where: str) -> Action:
    """An action from its YAML: exactly one of ``webhook`` (a URL) or ``command`` (a list of
    arguments, or one string split as a shell would), and how often and how long it may run."""
    import shlex

    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping with webhook or command")
    unknown = set(raw) - {"webhook", "command", "min_interval", "timeout"}
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
    if ("webhook" in raw) == ("command" in raw):
        raise ValueError(f"{where}: give one of webhook (a URL) or command (a program and its arguments)")
    command = raw.get("command") or ()
    command = tuple(shlex.split(command) if isinstance(command, str) else map(str, command))
    webhook = raw.get("webhook")
    if "command" in raw and not command:
        raise ValueError(f"{where}: command is empty")
    if webhook is not None and not str(webhook).startswith(("http://", "https://")):
        raise ValueError(f"{where}: webhook {webhook!r} is not an http(s) URL")
    return Action(
        webhook=str(webhook) if webhook is not None else None,
        command=command,
        min_interval_seconds=_seconds(raw.get("min_interval", "1h"), f"{where}: min_interval"),
        timeout_seconds=_seconds(raw.get("timeout", "1h"), f"{where}: timeout"),
    )


def _seconds(value: Any, where: str) -> float:
    from monitoring.export import parse_duration

    if isinstance(value, int | float):
        return float(value)
    try:
        return parse_duration(str(value))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Condition:
    """A rule that holds now, for one model (and feature or rule), with what was measured."""

    labels: dict[str, str]
    annotations: dict[str, str]
    value: float

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.labels)


def fingerprint(labels: dict[str, str]) -> str:
    text = "\x00".join(f"{k}={v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: one way a rule holds on a report: the value, the words, and labels besides the rule's
Held = tuple[float, str, dict[str, str]]


def conditions(rules: tuple[AlertRule, ...], report: Report) -> list[Condition]:
    """Every rule that holds on one model's report (see ``monitoring.monitor``)."""
    found: list[Condition] = []
    model = report["model"]
    for rule in rules:
        for value, detail, extra in CHECKS[rule.kind](rule, report):
            labels = {"alertname": rule.name, "model": model, "severity": rule.severity, **extra}
            summary = rule.summary or f"{rule.name} on {model}"
            found.append(Condition(labels, {"summary": summary, "description": detail}, value))
    return found


def _drift(rule: AlertRule, report: Report) -> list[Held]:
    # at the level whose false alerts the budget bounds (monitor.alert_alpha)
    level = report["thresholds"].get("alert_alpha", report["thresholds"]["alpha"])
    drifted = [f["name"] for f in report["features"] if f["drifted"] and f["p_adjusted"] < level]
    if len(drifted) < rule.threshold:
        return []
    return [(len(drifted), f"drifted in v{report['version']}: {', '.join(drifted)}", {})]


def _plausibility(rule: AlertRule, report: Report) -> list[Held]:
    held: list[Held] = []
    for entry in report["plausibility"]:
        if entry["rate"] > rule.threshold or entry.get("breached"):
            where = f"{entry['rule']}" + (f" on {entry['feature']}" if entry["feature"] else "")
            held.append((entry["rate"], f"{entry['rate']:.1%} of rows break {where}",
                         {"rule": entry["rule"], "feature": entry["feature"] or ""}))  # fmt: skip
    return held


def _error_rate(rule: AlertRule, report: Report) -> list[Held]:
    traffic = report["traffic"]
    if traffic["requests"] < max(rule.min_samples, 1) or traffic["error_rate"] <= rule.threshold:
        return []
    return [(traffic["error_rate"], f"{traffic['error_rate']:.1%} of requests not answered 200", {})]


def _latency_p99(rule: AlertRule, report: Report) -> list[Held]:
    p99 = report["traffic"]["latency_p99_ms"]
    if p99 is None or p99 <= rule.threshold:
        return []
    return [(p99, f"p99 latency {p99:.0f} ms", {})]


def _canary(rule: AlertRule, report: Report) -> list[Held]:
    canary = report.get("canary")
    if not canary or not canary["stepped_down"]:
        return []
    return [(canary["weight"], canary["reason"], {})]


def _quality(rule: AlertRule, report: Report) -> list[Held]:
    assert rule.metric is not None
    held: list[Held] = []
    lower = rule.metric in LOWER_IS_BETTER
    for measured in report["quality"]:
        version = measured["version"]
        parts: list[tuple[Measured, str, dict[str, str]]]
        if rule.segment is None:
            parts = [(measured, f"v{version}", {})]
        else:
            parts = [
                (part, f"v{version}, {rule.segment} {part['segment']}",
                 {"feature": rule.segment, "segment": part["segment"]})
                for part in measured["segments"] if part["feature"] == rule.segment
            ]  # fmt: skip
        for part, where, extra in parts:
            value = metric_value(part, rule.metric)
            if value is None or part["samples"] < rule.min_samples:
                continue
            if value > rule.threshold if lower else value < rule.threshold:
                detail = f"{rule.metric} {value:.3f} over {part['samples']} labelled rows ({where})"
                held.append((value, detail, extra))
    return held


#: how each kind of rule reads a report
CHECKS: dict[Kind, Callable[[AlertRule, Report], list[Held]]] = {
    "drift": _drift,
    "plausibility": _plausibility,
    "error_rate": _error_rate,
    "latency_p99": _latency_p99,
    "quality": _quality,
    "canary": _canary,
}


@dataclass
class Alert:
    """One alert's life: pending since a time, firing from a time, resolved at a time."""

    fingerprint: str
    labels: dict[str, str]
    annotations: dict[str, str]
    pending_since: float
    value: float
    firing_since: float | None = None
    resolved_at: float | None = None

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "firing" if self.firing_since is not None else "pending"

    def as_json(self, generator_url: str = "") -> dict[str, Any]:
        """The alert as Alertmanager describes it (a webhook's, a trigger's and the route's)."""
        return {
            "status": "resolved" if self.resolved_at is not None else "firing",
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": _iso(self.firing_since),
            "endsAt": _iso(self.resolved_at),
            "generatorURL": generator_url,
            "fingerprint": self.fingerprint,
        }


#: Alertmanager's "no end yet"
NEVER = "0001-01-01T00:00:00Z"


def _iso(ts: float | None) -> str:
    if ts is None:
        return NEVER
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@dataclass
class AlertEngine:
    """Turns the conditions seen on each pass into alerts and the notifications to send."""

    rules: tuple[AlertRule, ...]
    active: dict[str, Alert] = field(default_factory=dict)

    def evaluate(self, held: list[Condition], models: set[str], now: float) -> list[Alert]:
        """Alerts that start firing or resolve on this pass. ``models``: those this pass looked at;
        an alert of another model is left as it is."""
        wait = {rule.name: rule.for_seconds for rule in self.rules}
        changed = []
        seen = set()
        for condition in held:
            key = condition.fingerprint
            seen.add(key)
            alert = self.active.get(key)
            if alert is None:
                alert = self.active[key] = Alert(
                    key, condition.labels, condition.annotations, now, condition.value
                )
            alert.annotations, alert.value = condition.annotations, condition.value
            if alert.firing_since is None and now - alert.pending_since >= wait.get(
                alert.labels["alertname"], 0
            ):
                alert.firing_since = now
                changed.append(alert)
        for key, alert in list(self.active.items()):
            if key not in seen and alert.labels["model"] in models:
                del self.active[key]
                if alert.firing_since is not None:  # a pending alert that clears was never announced
                    alert.resolved_at = now
                    changed.append(alert)
        return changed
