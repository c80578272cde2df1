"""What each view of ``/ui`` shows, from what the gateway already keeps: the monitor's latest report
on a model (the report store), the alerts store, the registry's manifests and audit history.

Views are rendered on the server (Jinja2, autoescaped): a page reads without JavaScript. Each view
is one HTML document; ``fragment`` renders only its ``<main>``, which the page's script fetches to
refresh it in place, so a view's data is always one request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from monitoring.report import QUALITY_METRICS
from registry.aliases import AuditEntry
from registry.manifest import CategoricalProfile, Manifest, NumericProfile
from service.ui import charts

#: how often an open view fetches its ``<main>`` again (seconds)
REFRESH_SECONDS = 5
#: the views of a model, in the order the page links them
VIEWS = (
    ("drift", "Drift"),
    ("quality", "Quality"),
    ("compare", "Champion vs challenger"),
    ("history", "History"),
)


def paths(model: str) -> dict[str, str]:
    """Every view's path for one model, by name: the models list, the model's views, its champion's
    card."""
    views = {key: f"/ui/models/{model}{'' if key == 'drift' else '/' + key}" for key, _ in VIEWS}
    return {"models": "/ui", **views, "card": f"/models/{model}/versions/champion/card"}


def _when(ts: float | datetime | None) -> str:
    if ts is None:
        return "-"
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _number(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | str):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if value and not 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits}g}"
    return f"{value:,.{digits}f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _markdown_cell(value: Any) -> str:
    """Text that stays inside one Markdown table cell or list line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


ENV = Environment(
    loader=PackageLoader("service.ui"),
    autoescape=select_autoescape(["html"], default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals.update(
    histogram=charts.histogram,
    interval=charts.interval,
    evidence=charts.evidence,
    strip=charts.strip,
    views=VIEWS,
    quality_metrics=QUALITY_METRICS,
)
ENV.filters.update(when=_when, num=_number, pct=_share, md=_markdown_cell)


def render(template: str, *, fragment: bool = False, **context: Any) -> str:
    """A view's whole page, or with ``fragment`` only its ``<main>`` (what a refresh fetches)."""
    return ENV.get_template(template).render(fragment=fragment, refresh=REFRESH_SECONDS, **context)


@dataclass(frozen=True)
class ModelRow:
    """One line of the models list."""

    name: str
    champion: int | None
    challenger: int | None
    routing: str
    weight: float
    requests: int | None
    error_rate: float | None
    drifted: int | None
    firing: list[str]
    errors: list[str]


def firing_by_model(alerts: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Alert names firing now, by the model they are about."""
    found: dict[str, list[str]] = {}
    for alert in alerts:
        labels = alert.get("labels", {})
        found.setdefault(labels.get("model", ""), []).append(labels.get("alertname", "alert"))
    return found


def drift_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The report's statistics, flagged first, then by evidence (adjusted p-value), then effect."""
    rows = [*report.get("features", [])]
    explained = report.get("attributions") or {}
    rows += explained.get("features", [])
    return sorted(rows, key=lambda s: (not s["drifted"], s["p_adjusted"], -s["effect"]))


def version_entries(history: list[AuditEntry], version: int) -> list[AuditEntry]:
    """The audit entries about one version: pushed, evaluated, promoted to or from, alerted on."""
    return [e for e in history if version in (e.to_version, e.from_version)]


def latest_evaluation(history: list[AuditEntry], version: int) -> AuditEntry | None:
    found = [e for e in history if e.action == "evaluate" and e.to_version == version and e.evaluation]
    return found[-1] if found else None


def feature_lines(manifest: Manifest) -> list[dict[str, str]]:
    """Each input with its reference profile in words."""
    lines = []
    for spec in manifest.inputs.features:
        profile = manifest.reference.features.get(spec.name)
        if isinstance(profile, NumericProfile):
            summary = (
                f"mean {_number(profile.mean)}, sd {_number(profile.std)}, "
                f"range {_number(profile.min)} to {_number(profile.max)}"
            )
        elif isinstance(profile, CategoricalProfile):
            top = ", ".join(profile.categories[:5]) + (", ..." if len(profile.categories) > 5 else "")
            summary = f"{len(profile.categories)} categories ({top})"
        else:
            summary = "-"
        missing = _share(profile.missing_rate) if profile is not None else "-"
        lines.append({"name": spec.name, "dtype": spec.dtype, "profile": summary, "missing": missing})
    return lines


def card_context(
    manifest: Manifest,
    history: list[AuditEntry],
    report: dict[str, Any] | None,
    aliases: dict[str, int | None],
) -> dict[str, Any]:
    """What a version's model card says (HTML and Markdown alike)."""
    version = manifest.version
    quality = next((q for q in (report or {}).get("quality", []) if q.get("version") == version), None)
    drift = report if report is not None and report.get("version") == version else None
    roles = [alias for alias, v in aliases.items() if v == version]
    return {
        "m": manifest,
        "roles": roles,
        "features": feature_lines(manifest),
        "evaluation": latest_evaluation(history, version),
        "quality": quality,
        "drift": drift,
        "drifted": [s for s in drift_rows(drift) if s["drifted"]] if drift else [],
        "audit": version_entries(history, version),
    }


@dataclass(frozen=True)
class TimeChart:
    """A chart over time and its legend (names in the chart's colours): one version's quality
    (``metric``), or the gate's evidence (``version`` None)."""

    version: int | None
    metric: str
    chart: Markup
    legend: list[tuple[str, str]]


def quality_charts(points: list[dict[str, Any]], start: float, end: float) -> list[TimeChart]:
    """Per version: its live metric overall and per segment, and where it was the reported version,
    the label-free accuracy estimate with its 95% interval as a band."""
    charts_: list[TimeChart] = []
    versions = sorted({q["version"] for p in points for q in p["quality"]})
    for version in versions:
        lines: dict[str, list[tuple[float, float]]] = {}
        metric = "accuracy"
        for point in points:
            for q in point["quality"]:
                if q["version"] != version:
                    continue
                metric = q["metric"]
                if q["value"] is not None:
                    lines.setdefault(f"v{version} {metric}, all rows", []).append((point["ts"], q["value"]))
                for segment, value in q["segments"].items():
                    if value is not None:
                        lines.setdefault(f"{segment}", []).append((point["ts"], value))
        estimated = [(p["ts"], *p["estimated"]) for p in points if p["version"] == version and p["estimated"]]
        drawn = [(name, line, i > 0) for i, (name, line) in enumerate(lines.items())]
        if estimated and metric == "accuracy":
            drawn.append(
                (f"v{version} expected accuracy (label-free)", [(ts, a) for ts, a, _, _ in estimated], True)
            )
        band = [(ts, low, high) for ts, _, low, high in estimated] if metric == "accuracy" else []
        label = f"Version {version}: live {metric} over time"
        chart = charts.series(drawn, start, end, label, band=band)
        legend = [(charts.PALETTE[i % len(charts.PALETTE)], name) for i, (name, _, _) in enumerate(drawn)]
        charts_.append(TimeChart(version, metric, chart, legend))
    return charts_


def evidence_chart(points: list[dict[str, Any]], start: float, end: float) -> TimeChart | None:
    """The gate's evidence over time: each arm's e-value (log10) and the threshold an arm must reach."""
    kept = [p for p in points if p["evidence"]]
    if not kept:
        return None

    def logged(arm: str) -> list[tuple[float, float]]:
        return [(p["ts"], math.log10(max(p["evidence"][arm], 1e-12))) for p in kept]

    drawn = [
        ("champion, log10 e-value", logged("champion"), False),
        ("challenger, log10 e-value", logged("challenger"), False),
        ("threshold", logged("threshold"), True),
    ]
    chart = charts.series(drawn, start, end, "Evidence toward promotion over time (log10 e-values)")
    legend = [(charts.PALETTE[i], name) for i, (name, _, _) in enumerate(drawn)]
    return TimeChart(None, "evidence", chart, legend)
